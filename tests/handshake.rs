//! What clients send when they connect: redis-cli, redis-py's handshake, HELLO, PING/ECHO/SELECT,
//! INFO, COMMAND, CLIENT SETNAME/GETNAME, AUTH against a password-protected pool, and redis_db.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use common::*;

fn pong() -> Reply {
    Reply::Simple("PONG".into())
}

fn redis_cli(proxy: &Proxy, args: &[&str]) -> String {
    let port = proxy.addr().rsplit(':').next().unwrap().to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", &port];
    all.extend_from_slice(args);
    run_redis_cli(&all)
}

#[test]
fn redis_cli_ping_set_and_get_work() {
    let setup = Setup::new(4, &[]);
    assert_eq!(redis_cli(&setup.proxy, &["ping"]), "PONG\n");
    assert_eq!(
        redis_cli(&setup.proxy, &["set", "cli:key", "hello world"]),
        "OK\n"
    );
    assert_eq!(
        redis_cli(&setup.proxy, &["get", "cli:key"]),
        "hello world\n"
    );
    assert_eq!(
        redis_cli(&setup.proxy, &["--no-raw", "get", "cli:key"]),
        "\"hello world\"\n"
    );
    assert_eq!(
        redis_cli(&setup.proxy, &["--no-raw", "get", "cli:missing"]),
        "(nil)\n"
    );
    assert_eq!(
        redis_cli(&setup.proxy, &["--no-raw", "incr", "cli:n"]),
        "(integer) 1\n"
    );
}

#[test]
fn redis_py_handshake_connects_cleanly() {
    let setup = Setup::new(4, &[]);
    let mut c = setup.client();
    // redis-py 5 sends these right after connecting and ignores error replies to them
    for arg in [
        ["CLIENT", "SETINFO", "LIB-NAME", "redis-py"],
        ["CLIENT", "SETINFO", "LIB-VER", "5.0.0"],
    ] {
        let r = c.cmd(&arg);
        assert!(r == Reply::ok() || r.is_error(), "{arg:?} -> {r:?}");
    }
    assert_eq!(c.cmd(&["PING"]), pong());
    assert_eq!(c.cmd(&["SET", "py:k", "v"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "py:k"]), Reply::bulk("v"));
}

#[test]
fn client_setinfo_is_answered_ok() {
    let setup = Setup::new(4, &[]);
    let mut c = setup.client();
    c.send(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]);
    assert_eq!(show(&c.read_reply_raw()), "+OK\\r\\n");
    c.send(&["CLIENT", "SETINFO", "LIB-VER", "5.0.0"]);
    assert_eq!(show(&c.read_reply_raw()), "+OK\\r\\n");
}

#[test]
fn hello_3_switches_the_client_to_resp3_replies_from_the_backends() {
    use std::io::{Read, Write};
    let setup = Setup::new(4, &[]);
    let mut stream = std::net::TcpStream::connect(setup.proxy.addr()).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
        .write_all(
            &[
                encode(&["HELLO", "3"]),
                encode(&["HSET", "r3:h", "f", "v"]),
                encode(&["HGETALL", "r3:h"]),
                encode(&["GET", "r3:missing"]),
            ]
            .concat(),
        )
        .unwrap();
    // HGETALL's map and GET's RESP3 null prove the backend connection speaks RESP3 too.
    let tail: &[u8] = b":1\r\n%1\r\n$1\r\nf\r\n$1\r\nv\r\n_\r\n";
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(tail) {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", show(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"%7\r\n$6\r\nserver\r\n"), "{}", show(&got));
    assert!(
        got.windows(15).any(|w| w == b"$5\r\nproto\r\n:3\r\n"),
        "{}",
        show(&got)
    );
}

#[test]
fn hello_2_returns_a_map_like_array_with_proto_2() {
    let setup = Setup::new(4, &[]);
    let mut c = setup.client();
    let r = c.cmd(&["HELLO", "2"]);
    let items = r.items();
    assert!(
        items.len() >= 4 && items.len().is_multiple_of(2),
        "field/value pairs: {r:?}"
    );
    let field = |name: &str| {
        items
            .chunks(2)
            .find(|pair| pair[0] == Reply::bulk(name))
            .map(|pair| pair[1].clone())
            .unwrap_or_else(|| panic!("HELLO 2 has no {name:?} field: {r:?}"))
    };
    assert_eq!(field("proto"), Reply::Int(2));
    assert!(matches!(field("server"), Reply::Bulk(Some(_))), "{r:?}");
    assert_eq!(c.cmd(&["PING"]), pong());
}

#[test]
fn ping_echo_and_select_0_are_answered() {
    let setup = Setup::new(4, &[]);
    let mut c = setup.client();
    c.send(&["PING"]);
    assert_eq!(show(&c.read_reply_raw()), "+PONG\\r\\n");
    c.send(&["ping", "hello"]);
    assert_eq!(show(&c.read_reply_raw()), "$5\\r\\nhello\\r\\n");
    c.send(&["ECHO", "bin\r\nary"]);
    assert_eq!(show(&c.read_reply_raw()), show(b"$8\r\nbin\r\nary\r\n"));
    c.send(&["SELECT", "0"]);
    assert_eq!(show(&c.read_reply_raw()), "+OK\\r\\n");
    let r = c.cmd(&["SELECT", "1"]);
    assert!(
        r.is_error(),
        "SELECT 1 must fail: the proxy presents db 0 only; got {r:?}"
    );
    assert_eq!(c.cmd(&["PING"]), pong());
}

#[test]
fn info_returns_a_bulk_string_and_command_count_an_integer() {
    let setup = Setup::new(4, &[]);
    let mut c = setup.client();
    match c.cmd(&["INFO"]) {
        Reply::Bulk(Some(text)) => {
            let text = String::from_utf8_lossy(&text);
            assert!(
                text.contains("\r\n") && text.contains(':'),
                "INFO in Redis's `field:value` format: {text}"
            );
        }
        other => panic!("INFO -> {other:?}, want a bulk string (ioredis ready check)"),
    }
    assert!(matches!(c.cmd(&["INFO", "server"]), Reply::Bulk(Some(_))));
    let count = c.cmd(&["COMMAND", "COUNT"]).int();
    assert!(count > 10, "COMMAND COUNT = {count}");
    assert_eq!(c.cmd(&["PING"]), pong());
}

#[test]
fn client_setname_and_getname_round_trip() {
    let setup = Setup::new(4, &[]);
    let mut c = setup.client();
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Reply::nil());
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "my-app"]), Reply::ok());
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Reply::bulk("my-app"));
    // per connection: another client has no name
    assert_eq!(setup.client().cmd(&["CLIENT", "GETNAME"]), Reply::nil());
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "renamed"]), Reply::ok());
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Reply::bulk("renamed"));
}

#[test]
fn quit_replies_ok_and_closes() {
    let setup = Setup::new(4, &[]);
    let mut c = setup.client();
    assert_eq!(c.cmd(&["SET", "quit:k", "v"]), Reply::ok());
    assert_eq!(c.cmd(&["QUIT"]), Reply::ok());
    assert!(
        matches!(c.try_read_reply(), Err(ReadError::Closed)),
        "closed after QUIT"
    );
}

fn auth_setup() -> (Vec<RedisServer>, Proxy) {
    let shards: Vec<RedisServer> = (0..4)
        .map(|_| RedisServer::start_with(&["--requirepass", "secret"]))
        .collect();
    let lines: Vec<String> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| server_line(s, 1, Some(&format!("s{i}"))))
        .collect();
    let proxy = Proxy::start_on_free_port(ProxyKind::under_test(), |port| {
        pool_yaml(
            port,
            &lines,
            &[("redis_auth", "secret"), ("timeout", "5000")],
        )
    });
    (shards, proxy)
}

#[test]
fn pool_with_redis_auth_requires_auth_before_commands() {
    let (_shards, proxy) = auth_setup();
    let mut c = proxy.client();
    c.send(&["GET", "auth:k"]);
    assert_eq!(
        show(&c.read_reply_raw()),
        "-NOAUTH Authentication required.\\r\\n"
    );
    c.send(&["SET", "auth:k", "v"]);
    assert_eq!(
        show(&c.read_reply_raw()),
        "-NOAUTH Authentication required.\\r\\n"
    );
}

#[test]
fn pool_with_redis_auth_rejects_a_wrong_password_and_accepts_the_right_one() {
    let (shards, proxy) = auth_setup();
    let mut c = proxy.client();
    let wrong = c.cmd(&["AUTH", "not-the-secret"]);
    assert!(wrong.is_error(), "wrong password -> {wrong:?}");
    let still = c.cmd(&["GET", "auth:k"]);
    assert!(
        still.error_text().starts_with("NOAUTH"),
        "still unauthenticated: {still:?}"
    );
    assert_eq!(c.cmd(&["AUTH", "secret"]), Reply::ok());
    for i in 0..100 {
        let key = format!("auth:{i}:{}", i * 7919);
        assert_eq!(c.cmd(&["SET", &key, "v"]), Reply::ok());
        assert_eq!(c.cmd(&["GET", &key]), Reply::bulk("v"));
    }
    // the proxy authenticated to every backend it used: the keys are there
    let sizes: Vec<i64> = shards
        .iter()
        .map(|s| {
            let mut d = s.client();
            assert_eq!(d.cmd(&["AUTH", "secret"]), Reply::ok());
            d.cmd(&["DBSIZE"]).int()
        })
        .collect();
    assert_eq!(
        sizes.iter().sum::<i64>(),
        100,
        "keys per backend: {sizes:?}"
    );
    assert!(
        sizes.iter().filter(|n| **n > 0).count() >= 2,
        "100 keys spread over the backends: {sizes:?}"
    );
}

#[test]
fn redis_db_selects_the_backend_database() {
    let setup = Setup::new(2, &[("redis_db", "3")]);
    let mut c = setup.client();
    for i in 0..20 {
        assert_eq!(c.cmd(&["SET", &format!("db3:{i}"), "v"]), Reply::ok());
    }
    assert_eq!(c.cmd(&["GET", "db3:0"]), Reply::bulk("v"));
    let in_db3: usize = setup.shards.iter().map(|s| s.keys_in_db(3).len()).sum();
    let in_db0: usize = setup.shards.iter().map(|s| s.keys_in_db(0).len()).sum();
    assert_eq!(
        (in_db3, in_db0),
        (20, 0),
        "keys land in db 3 of the backends, none in db 0"
    );
}

const REDIS_PY_SCRIPT: &str = r#"
import sys
import redis
host, port, protocol = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = redis.Redis(host=host, port=port, socket_timeout=10, client_name=None, protocol=protocol)
assert r.ping() is True
r.delete("py:n", "py:h", "py:z")  # the script runs once per protocol on the same backends
assert r.set("py:key", "value") is True
assert r.get("py:key") == b"value"
assert r.incr("py:n") == 1
r.mset({"py:a": "1", "py:b": "2", "py:c": "3"})
assert r.mget(["py:a", "py:b", "py:missing", "py:c"]) == [b"1", b"2", None, b"3"]
assert r.delete("py:a", "py:b", "py:missing") == 2
p = r.pipeline(transaction=False)
for i in range(100):
    p.set("py:p%d" % i, i)
    p.get("py:p%d" % i)
out = p.execute()
assert out == [x for i in range(100) for x in (True, str(i).encode())], out
r.hset("py:h", mapping={"f": "v"})
assert r.hgetall("py:h") == {b"f": b"v"}
r.zadd("py:z", {"a": 1.5})
# redis-py gives pairs as tuples in RESP2 and as lists in RESP3; the score is a float in both.
assert [tuple(p) for p in r.zrange("py:z", 0, -1, withscores=True)] == [(b"a", 1.5)]
print("redis-py %s protocol %d OK" % (redis.__version__, protocol))
"#;

#[test]
fn redis_py_client_works_through_the_proxy_in_resp2_and_resp3() {
    let setup = Setup::new(4, &[]);
    for protocol in ["2", "3"] {
        let stdout = setup.proxy.run_redis_py(REDIS_PY_SCRIPT, protocol);
        assert!(stdout.contains(&format!("protocol {protocol} OK")));
    }
}
