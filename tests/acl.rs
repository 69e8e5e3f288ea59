//! ACL users (`users:`) against a real redis-server, differentially: each user is created on a
//! reference redis-server with the same `ACL SETUSER` rules, and every (user, command) pair is
//! sent to it directly and through Keyway; the reply class (allowed, or the exact `-NOPERM`,
//! `-NOAUTH`, `-WRONGPASS` text) must be the same. Plus transactions, the default user,
//! `HELLO AUTH`, `AUTH` throttling and its metric, redis-py and redis-cli.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::*;

const PASSWORD: &str = "pw";
/// sha256("pw").
const PW_SHA256: &str = "30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4";

/// The users of the differential table: name, rules (Redis's syntax), password to `AUTH` with.
fn users() -> Vec<(String, String, &'static str)> {
    let rules = [
        (
            "app",
            "on >pw ~app:* &app:* +@read +@write -@dangerous",
            PASSWORD,
        ),
        ("rw", "on >pw %R~r:* %W~w:* +@all", PASSWORD),
        (
            "most",
            "on >pw allkeys allchannels +@all -flushall -client|kill -@pubsub",
            PASSWORD,
        ),
        ("news", "on >pw ~* &news.* +@all", PASSWORD),
        (
            "few",
            "on >pw ~* resetchannels +get +set +client|id +publish +acl|whoami",
            PASSWORD,
        ),
        ("slow", "on >pw ~* +@slow", PASSWORD),
        ("open", "on nopass ~k* ~app:* +@all -get", "anything"),
        ("hashed", &format!("on #{PW_SHA256} ~* +@read"), PASSWORD),
        ("disabled", "off >pw ~* +@all", PASSWORD),
        (
            "reset",
            "on >pw ~a* ~b* resetkeys ~app:* +@all nocommands +get +mget +set",
            PASSWORD,
        ),
        ("nokeyspace", "on >pw ~* &* +@all -@keyspace +del", PASSWORD),
        (
            "types",
            "on >pw allkeys allchannels +@hash +@string +@connection",
            PASSWORD,
        ),
        ("removed", "on >pw >other <pw ~* +@all", "other"),
        ("again", "on >pw ~* +@all reset on >pw +get ~x*", PASSWORD),
        ("scripts", "on >pw ~app:* +@scripting +@read", PASSWORD),
        (
            "blocking",
            "on >pw ~app:* +@list -@blocking +blpop",
            PASSWORD,
        ),
    ];
    rules
        .iter()
        .map(|(name, rules, password)| (name.to_string(), rules.to_string(), *password))
        .collect()
}

/// The requests tried as every user.
const REQUESTS: &[&str] = &[
    "GET app:1",
    "GET other",
    "SET app:1 v",
    "SET r:1 v",
    "SET w:1 v",
    "SET w:1 v GET",
    "GET r:1",
    "GET w:1",
    "EXISTS w:1",
    "MGET app:1 app:2",
    "MGET app:1 other",
    "MSET app:1 a app:2 b",
    "DEL app:1 other",
    "DEL app:9",
    "SUNIONSTORE w:d r:a",
    "LMOVE app:l app:m LEFT RIGHT",
    "LPUSH app:l x",
    "BLPOP app:e 0.01",
    "KEYS app:*",
    "SCAN 0",
    "DBSIZE",
    "PING",
    "ECHO x",
    "CLIENT ID",
    "CLIENT GETNAME",
    "CLIENT KILL 1.2.3.4:1",
    "INFO",
    "PUBLISH app:x m",
    "PUBLISH news.a m",
    "PUBLISH other m",
    "SUBSCRIBE news.a",
    "SUBSCRIBE news.a other",
    "PSUBSCRIBE news.*",
    "PSUBSCRIBE news.a",
    "EVAL return 1 1 app:1",
    "EVAL return 1 1 other",
    "HSET app:h f v",
    "HGET app:h f",
    "XADD app:s * f v",
    "EXPIRE app:1 100",
    "TTL k1",
    "COMMAND COUNT",
    "ACL WHOAMI",
    "ACL CAT",
    "SELECT 0",
    "WATCH app:1",
    "FLUSHALL",
    "OBJECT ENCODING app:1",
    "XINFO STREAM app:s",
];

/// What a reply tells about permissions: the text of an authorization error, else allowed.
fn class(reply: &Reply) -> String {
    match reply {
        Reply::Error(e)
            if ["NOPERM", "NOAUTH", "WRONGPASS", "EXECABORT"]
                .iter()
                .any(|p| e.starts_with(p)) =>
        {
            e.clone()
        }
        _ => "allowed".into(),
    }
}

/// A reference redis-server with the table's users, and Keyway over another one with the same
/// users in `users:` (plus `default_line`, also applied to the reference).
struct Pair {
    reference: RedisServer,
    proxy: Proxy,
    _backend: RedisServer,
}

impl Pair {
    fn new(default_line: Option<&str>, extra: &[(&str, &str)]) -> Pair {
        let reference = RedisServer::start();
        let mut admin = reference.client();
        let mut lines: Vec<String> = Vec::new();
        for (name, rules, _) in users() {
            let mut args = vec!["ACL".to_string(), "SETUSER".into(), name.clone()];
            args.extend(rules.split_whitespace().map(String::from));
            assert_eq!(admin.cmd(&args), Reply::ok(), "ACL SETUSER {name} {rules}");
            lines.push(format!("{name} {rules}"));
        }
        if let Some(line) = default_line {
            lines.push(format!("default {line}"));
        }
        let backend = RedisServer::start();
        let users = lines
            .iter()
            .map(|l| format!("\n   - \"{l}\""))
            .collect::<String>();
        let mut options: Vec<(&str, &str)> = vec![("users", &users), ("timeout", "5000")];
        options.extend_from_slice(extra);
        let servers = [server_line(&backend, 1, None)];
        let proxy = Proxy::start_on_free_port(ProxyKind::under_test(), |port| {
            pool_yaml(port, &servers, &options)
        });
        // Last: the reference's default user may lose its rights here.
        if let Some(line) = default_line {
            let mut args = vec!["ACL", "SETUSER", "default", "reset"];
            args.extend(line.split_whitespace());
            assert_eq!(admin.cmd(&args), Reply::ok());
        }
        Pair {
            reference,
            proxy,
            _backend: backend,
        }
    }

    /// Both connections, each authenticated as `user` when given.
    fn connect(&self, user: Option<(&str, &str)>) -> [(Client, Reply); 2] {
        [self.reference.client(), self.proxy.client()].map(|mut c| {
            let auth = match user {
                Some((name, password)) => c.cmd(&["AUTH", name, password]),
                None => Reply::ok(),
            };
            (c, auth)
        })
    }
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

#[test]
fn every_rule_kind_allows_and_denies_as_redis_does() {
    let pair = Pair::new(Some("on nopass allkeys allchannels allcommands"), &[]);
    let mut compared = 0;
    let mut denied = 0;
    let mut differences = Vec::new();
    for (name, rules, password) in users() {
        for request in REQUESTS {
            let [(mut direct, direct_auth), (mut proxied, proxied_auth)] =
                pair.connect(Some((&name, password)));
            let expected_auth = class(&direct_auth);
            if expected_auth != class(&proxied_auth) {
                differences.push(format!(
                    "{name} ({rules}): AUTH: redis {direct_auth:?}, keyway {proxied_auth:?}"
                ));
                continue;
            }
            let theirs = class(&direct.cmd(&words(request)));
            let ours = class(&proxied.cmd(&words(request)));
            if theirs != ours {
                differences.push(format!(
                    "{name} ({rules}): {request}: redis {theirs:?}, keyway {ours:?}"
                ));
            }
            if theirs != "allowed" {
                denied += 1;
            }
            compared += 1;
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {compared} differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
    // The table must exercise both outcomes broadly.
    assert!(
        compared > 600 && denied > 200,
        "{compared} compared, {denied} denied"
    );
}

#[test]
fn a_command_denied_inside_multi_aborts_exec_as_redis_does() {
    let pair = Pair::new(None, &[]);
    for (name, _, password) in users().iter().filter(|(n, ..)| n == "app" || n == "rw") {
        let [(mut direct, _), (mut proxied, _)] = pair.connect(Some((name, password)));
        for request in [
            "MULTI",
            "SET app:1 v",
            "GET other",
            "SET w:1 v",
            "EXEC",
            "EXEC",
        ] {
            let theirs = direct.cmd(&words(request));
            let ours = proxied.cmd(&words(request));
            assert_eq!(class(&theirs), class(&ours), "{name}: {request}");
            if theirs.is_error() {
                assert_eq!(theirs, ours, "{name}: {request}");
            }
        }
    }
}

#[test]
fn without_a_default_line_clients_must_authenticate() {
    // The reference: `default off`, which is what Keyway makes of a missing line.
    let pair = Pair::new(None, &[]);
    let mut admin = pair.reference.client();
    let _ = admin.cmd(&["ACL", "SETUSER", "default", "reset"]);
    let [(mut direct, _), (mut proxied, _)] = pair.connect(None);
    for request in [
        "PING",
        "GET app:1",
        "HELLO 3",
        "AUTH default x",
        "AUTH pw",
        "HELLO 2 AUTH app wrong",
        "HELLO 3 AUTH disabled pw",
        "ACL WHOAMI",
    ] {
        let theirs = direct.cmd(&words(request));
        let ours = proxied.cmd(&words(request));
        assert_eq!(theirs, ours, "{request}");
    }
    assert_eq!(
        proxied.cmd(&["GET", "x"]).error_text(),
        "NOAUTH Authentication required."
    );
    assert_eq!(proxied.cmd(&["AUTH", "few", "pw"]), Reply::ok());
    assert_eq!(proxied.cmd(&["ACL", "WHOAMI"]), Reply::bulk("few"));
    assert_eq!(proxied.cmd(&["SET", "app:1", "v"]), Reply::ok());
    // HELLO AUTH logs in and switches protocol at once.
    let mut hello = pair.proxy.client();
    let reply = hello.cmd(&["HELLO", "2", "AUTH", "few", "pw"]);
    assert_eq!(reply.items()[0], Reply::bulk("server"));
    assert_eq!(hello.cmd(&["ACL", "WHOAMI"]), Reply::bulk("few"));
    let mut resp3 = pair.proxy.client();
    resp3.send(&["HELLO", "3", "AUTH", "app", "pw"]);
    let raw = resp3.read_reply_raw();
    assert!(raw.starts_with(b"%7\r\n"), "{}", show(&raw));
    // RESET: back to the unauthenticated default user.
    assert_eq!(proxied.cmd(&["RESET"]), Reply::Simple("RESET".into()));
    assert!(proxied
        .cmd(&["GET", "x"])
        .error_text()
        .starts_with("NOAUTH"));
}

#[test]
fn redis_auth_stays_the_default_password_beside_users() {
    // With redis_auth and no default line, `AUTH <redis_auth>` is the default user with
    // every right, as without users; the backends are authenticated with it.
    let backend = RedisServer::start_with(&["--requirepass", "backendpw"]);
    let servers = [server_line(&backend, 1, None)];
    let options = [
        ("redis_auth", "backendpw"),
        ("users", "\n   - \"app on >pw ~app:* +get +set\""),
    ];
    let proxy = Proxy::start_on_free_port(ProxyKind::under_test(), |port| {
        pool_yaml(port, &servers, &options)
    });
    let mut c = proxy.client();
    assert!(c.cmd(&["GET", "x"]).error_text().starts_with("NOAUTH"));
    assert_eq!(c.cmd(&["AUTH", "backendpw"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "any", "1"]), Reply::ok());
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]), Reply::bulk("default"));
    let mut app = proxy.client();
    assert_eq!(app.cmd(&["AUTH", "app", "pw"]), Reply::ok());
    assert_eq!(app.cmd(&["SET", "app:1", "v"]), Reply::ok());
    assert_eq!(app.cmd(&["GET", "app:1"]), Reply::bulk("v"));
    assert_eq!(
        app.cmd(&["GET", "any"]).error_text(),
        "NOPERM this user has no permissions to access one of the keys used as arguments"
    );
    assert_eq!(
        app.cmd(&["DEL", "app:1"]).error_text(),
        "NOPERM this user has no permissions to run the 'del' command"
    );
}

#[test]
fn failed_auths_are_counted_by_user_and_the_fifth_closes_the_connection() {
    let pair = Pair::new(Some("off"), &[]);
    let mut c = pair.proxy.client();
    for _ in 0..2 {
        assert!(c
            .cmd(&["AUTH", "app", "wrong"])
            .error_text()
            .starts_with("WRONGPASS"));
    }
    for guess in ["admin", "root"] {
        assert!(c.cmd(&["AUTH", guess, "x"]).is_error());
    }
    // Still open after four; the fifth failure is answered, then the connection closes.
    assert_eq!(c.cmd(&["AUTH", "app", "pw"]), Reply::ok());
    assert!(c.cmd(&["AUTH", "app", "wrong"]).is_error());
    assert!(
        c.try_read_reply().is_err(),
        "the connection stays open after the fifth failed AUTH"
    );
    let count = |user: &str| {
        pair.proxy
            .metric("keyway_auth_failures_total", &format!("user=\"{user}\""))
    };
    assert_eq!(count("app"), 3.0);
    assert_eq!(count("unknown user"), 2.0);
    assert!(
        !pair.proxy.stderr().contains("wrong"),
        "a password was logged"
    );
}

#[test]
fn redis_py_and_redis_cli_log_in_with_user_and_password() {
    let pair = Pair::new(Some("off"), &[]);
    let script = r#"
import sys, redis
r = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), protocol=int(sys.argv[3]),
                username="app", password="pw")
r.set("app:py", "1")
print(r.get("app:py").decode())
try:
    r.get("other")
except redis.exceptions.NoPermissionError as e:
    print("denied:", e)
try:
    redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), username="app", password="bad").ping()
except redis.exceptions.AuthenticationError as e:
    print("refused:", e)
"#;
    for protocol in ["2", "3"] {
        let out = pair.proxy.run_redis_py(script, protocol);
        assert_eq!(
            out,
            "1\ndenied: this user has no permissions to access one of the keys used as arguments\n\
             refused: invalid username-password pair or user is disabled.\n",
            "protocol {protocol}"
        );
    }
    let port = pair.proxy.addr().rsplit(':').next().unwrap().to_string();
    let cli = |args: &[&str]| {
        let out = Command::new(redis_cli_bin())
            .args(["-h", "127.0.0.1", "-p", &port, "--no-auth-warning"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        cli(&["--user", "app", "--pass", "pw", "set", "app:cli", "x"]),
        "OK"
    );
    assert_eq!(
        cli(&["--user", "app", "--pass", "pw", "get", "app:cli"]),
        "x"
    );
    assert_eq!(
        cli(&["--user", "app", "--pass", "pw", "get", "other"]),
        "NOPERM this user has no permissions to access one of the keys used as arguments"
    );
    assert_eq!(cli(&["ping"]), "NOAUTH Authentication required.");
}

#[test]
fn a_bad_rule_stops_the_start_naming_pool_line_and_rule_but_not_the_password() {
    let backend = RedisServer::start();
    let servers = [server_line(&backend, 1, None)];
    let options = [(
        "users",
        "\n   - \"app on >topsecret ~* +@all\"\n   - \"ops on <topsecret2 +nosuchcommand\"",
    )];
    let dir = TempDir::new("acl-bad");
    let path = dir.path().join("bad.yml");
    std::fs::write(&path, pool_yaml(free_port(), &servers, &options)).unwrap();
    let out = Command::new(keyway_bin())
        .args(["-t", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("pool 'alpha': key 'users': user line 2 ('ops'): rule '<(redacted)'"),
        "{text}"
    );
    assert!(!text.contains("topsecret"), "{text}");
}

#[test]
fn a_reload_applies_new_rules_to_open_connections_and_closes_removed_users() {
    let backend = RedisServer::start();
    let servers = [server_line(&backend, 1, None)];
    let port = free_port();
    let yaml = |users: &str| pool_yaml(port, &servers, &[("users", users)]);
    let live = common::live::Live::start(&yaml("\n   - \"app on >pw ~app:* +get +set\""), port, 2);
    let mut app = Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(app.cmd(&["AUTH", "app", "pw"]), Reply::ok());
    assert_eq!(app.cmd(&["SET", "app:1", "v"]), Reply::ok());
    assert!(app
        .cmd(&["GET", "other"])
        .error_text()
        .starts_with("NOPERM"));

    let (status, body) = live.reload(&yaml("\n   - \"app on >pw ~* +get +set\""));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("users"),
        "the reload names the changed key: {body}"
    );
    assert_eq!(app.cmd(&["GET", "other"]), Reply::nil());

    let (status, body) = live.reload(&yaml("\n   - \"ops on >pw ~* +@all\""));
    assert_eq!(status, 200, "{body}");
    assert!(app
        .cmd(&["GET", "app:1"])
        .error_text()
        .contains("removed by a reload"));
    assert!(app.try_read_reply().is_err(), "the connection stays open");
    let mut again = Client::connect(&format!("127.0.0.1:{port}"));
    assert!(again
        .cmd(&["AUTH", "app", "pw"])
        .error_text()
        .starts_with("WRONGPASS"));

    // A bad rule changes nothing, and says which.
    let (status, body) = live.reload(&yaml("\n   - \"ops on >pw ~* +nosuch\""));
    assert_ne!(status, 200);
    assert!(
        body.contains("user line 1 ('ops'): rule '+nosuch'"),
        "{body}"
    );
    assert_eq!(again.cmd(&["AUTH", "ops", "pw"]), Reply::ok());
}

#[test]
fn a_reload_that_opens_the_default_user_lets_waiting_clients_in() {
    let backend = RedisServer::start();
    let servers = [server_line(&backend, 1, None)];
    let port = free_port();
    let yaml = |users: &str| pool_yaml(port, &servers, &[("users", users)]);
    let live = common::live::Live::start(&yaml("\n   - \"default off\""), port, 1);
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    assert!(c.cmd(&["PING"]).error_text().starts_with("NOAUTH"));
    let (status, body) = live.reload(&yaml("\n   - \"default on nopass ~* +@all\""));
    assert_eq!(status, 200, "{body}");
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]), Reply::bulk("default"));
}
