//! TLS on both sides against real processes: `redis-cli --tls` and redis-py `ssl=True` through
//! a TLS listener, pools whose backends are `redis-server --tls-port`, mutual TLS each way, a
//! backend whose certificate does not verify, a certificate rotated by reload, and the config
//! checks on the files. Certificates are made per test by the `openssl` CLI (`Certs`).

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use keyway::config::Config;

fn tls_pool(port: u16, servers: &[String], extra: &str) -> String {
    let servers: String = servers.iter().map(|s| format!("   - {s}\n")).collect();
    format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 2000\n{extra}  servers:\n{servers}"
    )
}

fn listener_tls(certs: &Certs, client_ca: bool) -> String {
    let mut text = format!(
        "  tls:\n    cert: {}\n    key: {}\n",
        certs.file("server.pem"),
        certs.file("server.key")
    );
    if client_ca {
        text.push_str(&format!("    client_ca: {}\n", certs.file("ca.pem")));
    }
    text
}

#[test]
fn redis_cli_and_redis_py_speak_through_a_tls_listener() {
    let certs = Certs::generate();
    let backend = RedisServer::start();
    let servers = [server_line(&backend, 1, None)];
    let proxy = Proxy::start_tls_on_free_port(|port| {
        tls_pool(port, &servers, &listener_tls(&certs, false))
    });
    let port = proxy.addr().rsplit(':').next().unwrap().to_string();
    let ca = certs.file("ca.pem");
    let cli = |args: &[&str]| {
        let mut all = vec!["-h", "127.0.0.1", "-p", &port, "--tls", "--cacert", &ca];
        all.extend_from_slice(args);
        run_redis_cli(&all)
    };
    assert_eq!(cli(&["SET", "tls:cli", "v1"]).trim(), "OK");
    assert_eq!(cli(&["GET", "tls:cli"]).trim(), "v1");
    assert!(backend.keys().contains(b"tls:cli".as_slice()));

    let script = r#"
import sys, redis
r = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), ssl=True,
                ssl_ca_certs=sys.argv[4], ssl_cert_reqs="required")
r.set("tls:py", "v2")
print(r.get("tls:py").decode(), r.connection_pool.get_connection("PING").__class__.__name__)
"#;
    let out = Command::new(python_with_redis())
        .args(["-c", script, "127.0.0.1", &port, "2", &ca])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "v2 SSLConnection");

    // A plaintext client gets no reply: the listener speaks TLS only.
    let mut plain = TcpStream::connect(proxy.addr()).unwrap();
    plain.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    std::io::Write::write_all(&mut plain, b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(!reply.starts_with(b"+PONG"), "{reply:?}");
}

#[test]
fn a_tls_backend_pool_verifies_its_backends_and_serves() {
    let certs = Certs::generate();
    let backends = [
        TlsRedis::start(&certs, false),
        TlsRedis::start(&certs, false),
    ];
    let servers: Vec<String> = backends
        .iter()
        .map(|b| format!("{}:1", b.tls_addr()))
        .collect();
    // md5 spreads keys that differ in their last bytes (fnv1a_64, the default, keeps only
    // its low 32 bits, which barely move between `k1` and `k2`).
    let server_tls = format!(
        "  hash: md5\n  server_tls:\n    ca: {}\n",
        certs.file("ca.pem")
    );
    let proxy = Proxy::start_on_free_port(ProxyKind::Keyway, |port| {
        tls_pool(port, &servers, &server_tls)
    });
    let mut client = proxy.client();
    for i in 0..20 {
        let key = format!("k{i}");
        assert_eq!(client.cmd(&["SET", &key, "v"]), Reply::ok());
    }
    // Every key reached a backend, over its TLS port, and both shards hold some.
    let held: Vec<usize> = backends.iter().map(|b| b.server.keys().len()).collect();
    assert_eq!(held.iter().sum::<usize>(), 20, "{held:?}");
    assert!(held.iter().all(|&n| n > 0), "{held:?}");
    // A pipelined burst and a large value round-trip over TLS.
    let big = "x".repeat(300_000);
    assert_eq!(client.cmd(&["SET", "big", &big]), Reply::ok());
    assert_eq!(client.cmd(&["GET", "big"]), Reply::bulk(&big));
    // A blocking pop and a transaction go over dedicated TLS connections; pub/sub over a link.
    assert_eq!(client.cmd(&["RPUSH", "list", "a"]).int(), 1);
    assert_eq!(
        client.cmd(&["BLPOP", "list", "1"]),
        Reply::Array(Some(vec![Reply::bulk("list"), Reply::bulk("a")]))
    );
    assert_eq!(client.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(client.cmd(&["INCR", "n"]), Reply::Simple("QUEUED".into()));
    assert_eq!(
        client.cmd(&["EXEC"]),
        Reply::Array(Some(vec![Reply::Int(1)]))
    );
    let mut subscriber = proxy.client();
    let confirmed = subscriber.cmd(&["SUBSCRIBE", "news"]);
    assert_eq!(confirmed.items()[2], Reply::Int(1), "{confirmed:?}");
    assert_eq!(client.cmd(&["PUBLISH", "news", "hello"]).int(), 1);
    let message = subscriber.read_reply();
    assert_eq!(message.items()[2], Reply::bulk("hello"), "{message:?}");
}

#[test]
fn server_name_replaces_the_host_verified() {
    let certs = Certs::generate();
    let backend = TlsRedis::start(&certs, false);
    let servers = [format!("{}:1", backend.tls_addr())];
    let with_name = |name: &str| {
        format!(
            "  server_tls:\n    ca: {}\n    server_name: {name}\n",
            certs.file("ca.pem")
        )
    };
    let good = Proxy::start_on_free_port(ProxyKind::Keyway, |port| {
        tls_pool(port, &servers, &with_name("redis.test"))
    });
    assert_eq!(good.client().cmd(&["SET", "k", "v"]), Reply::ok());
    let wrong = Proxy::start_on_free_port(ProxyKind::Keyway, |port| {
        tls_pool(port, &servers, &with_name("elsewhere.test"))
    });
    let refused = wrong.client().cmd(&["GET", "k"]);
    assert_eq!(
        refused.error_text(),
        "ERR TLS handshake with backend failed"
    );
    let logged = wait_until(READ_TIMEOUT, || {
        wrong
            .stderr()
            .contains("certificate not valid for name \"elsewhere.test\"")
    });
    assert!(logged, "{}", wrong.stderr());
}

#[test]
fn mutual_tls_on_both_sides() {
    let certs = Certs::generate();
    let backend = TlsRedis::start(&certs, true);
    let servers = [format!("{}:1", backend.tls_addr())];
    let both = format!(
        "{}  server_tls:\n    ca: {}\n    cert: {}\n    key: {}\n",
        listener_tls(&certs, true),
        certs.file("ca.pem"),
        certs.file("client.pem"),
        certs.file("client.key")
    );
    let proxy = Proxy::start_tls_on_free_port(|port| tls_pool(port, &servers, &both));
    let ca = certs.path("ca.pem");
    let identity = (certs.path("client.pem"), certs.path("client.key"));
    let mut client = TlsClient::connect(
        proxy.addr(),
        &ca,
        "localhost",
        Some((&identity.0, &identity.1)),
    )
    .unwrap();
    assert_eq!(client.cmd(&["SET", "mtls", "v"]), Reply::ok());
    assert_eq!(client.cmd(&["GET", "mtls"]), Reply::bulk("v"));
    assert!(backend.server.keys().contains(b"mtls".as_slice()));

    // Without a client certificate the listener refuses the handshake (TLS 1.3 tells the
    // client with its first read).
    let refused = TlsClient::connect(proxy.addr(), &ca, "localhost", None)
        .and_then(|mut c| c.try_cmd(&["PING"]));
    assert!(refused.is_err(), "{refused:?}");

    // And the backend, which requires one too, refuses a pool that presents none.
    let without = format!("  server_tls:\n    ca: {}\n", certs.file("ca.pem"));
    let bare =
        Proxy::start_on_free_port(ProxyKind::Keyway, |port| tls_pool(port, &servers, &without));
    let reply = bare.client().cmd(&["GET", "mtls"]);
    assert!(reply.is_error(), "{reply:?}");
}

#[test]
fn a_backend_from_another_ca_is_refused_with_a_clear_log_line() {
    let certs = Certs::generate();
    let backend = TlsRedis::start(&certs, false);
    let servers = [format!("{}:1", backend.tls_addr())];
    let wrong_ca = format!("  server_tls:\n    ca: {}\n", certs.file("other-ca.pem"));
    let proxy = Proxy::start_on_free_port(ProxyKind::Keyway, |port| {
        tls_pool(port, &servers, &wrong_ca)
    });
    // The client is told the kind of failure; the log says which backend and why.
    let reply = proxy.client().cmd(&["GET", "k"]);
    assert_eq!(reply.error_text(), "ERR TLS handshake with backend failed");
    let logged = wait_until(READ_TIMEOUT, || {
        let log = proxy.stderr();
        log.lines().any(|line| {
            line.contains("TLS handshake with backend failed")
                && line.contains(&backend.tls_addr())
                && line.contains("UnknownIssuer")
        })
    });
    assert!(logged, "{}", proxy.stderr());
    // Counted as a failure to reach the backend.
    assert!(proxy.metric("keyway_backend_errors_total", "pool=\"alpha\"") >= 1.0);
    assert!(proxy.metric("keyway_errors_total", "kind=\"refused\"") >= 1.0);
    assert!(!backend.server.keys().contains(b"k".as_slice()));
}

#[test]
fn a_reload_rotates_the_certificate_while_open_clients_carry_on() {
    let certs = Certs::generate();
    let backend = RedisServer::start();
    let servers = [server_line(&backend, 1, None)];
    let yaml_of = |port| tls_pool(port, &servers, &listener_tls(&certs, false));
    let proxy = Proxy::start_tls_on_free_port(yaml_of);
    let ca = certs.path("ca.pem");
    let first_cert = certs.der("server.pem");
    let mut open = TlsClient::connect(proxy.addr(), &ca, "127.0.0.1", None).unwrap();
    assert_eq!(open.served_cert(), first_cert);
    assert_eq!(open.cmd(&["SET", "k", "before"]), Reply::ok());

    certs.issue("server", "server rotated", 7);
    let rotated = certs.der("server.pem");
    assert_ne!(rotated, first_cert);
    let (status, body) = http(proxy.admin_port(), "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("tls"),
        "the reload names the changed key: {body}"
    );

    // The open connection carries on, on its own session; a new one gets the new certificate.
    assert_eq!(open.cmd(&["GET", "k"]), Reply::bulk("before"));
    let mut fresh = TlsClient::connect(proxy.addr(), &ca, "127.0.0.1", None).unwrap();
    assert_eq!(fresh.served_cert(), rotated);
    assert_eq!(fresh.cmd(&["GET", "k"]), Reply::bulk("before"));
    assert_eq!(open.cmd(&["SET", "k", "after"]), Reply::ok());
    assert_eq!(fresh.cmd(&["GET", "k"]), Reply::bulk("after"));

    // A rotation to a key that is not the certificate's is refused; the old one stays.
    std::fs::copy(certs.path("client.key"), certs.path("server.key")).unwrap();
    let (status, body) = http(proxy.admin_port(), "POST", "/reload");
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("pool 'alpha'") && body.contains("server.key"),
        "{body}"
    );
    let again = TlsClient::connect(proxy.addr(), &ca, "127.0.0.1", None).unwrap();
    assert_eq!(again.served_cert(), rotated);
}

#[test]
fn a_client_that_never_handshakes_is_closed_and_holds_its_place_meanwhile() {
    let certs = Certs::generate();
    let backend = RedisServer::start();
    let servers = [server_line(&backend, 1, None)];
    let extra = format!("  client_connections: 1\n{}", listener_tls(&certs, false));
    let proxy = Proxy::start_tls_on_free_port(|port| tls_pool(port, &servers, &extra));
    // The harness's readiness probe was a client too: wait until its place is free.
    let ca = certs.path("ca.pem");
    assert!(wait_until(READ_TIMEOUT, || {
        TlsClient::connect(proxy.addr(), &ca, "127.0.0.1", None)
            .and_then(|mut c| c.try_cmd(&["PING"]))
            .is_ok()
    }));
    // A silent client holds the only place: another is closed at once. (An earlier client's
    // place may still be freeing: then the silent one was the one closed, and it tries again,
    // once the clients before it are gone.)
    let open = || proxy.metric("keyway_client_connections", "pool=\"alpha\"");
    let mut silent = None;
    for _ in 0..10 {
        assert!(
            wait_until(READ_TIMEOUT, || open() == 0.0),
            "earlier clients stay open"
        );
        let candidate = TcpStream::connect(proxy.addr()).unwrap();
        #[allow(
            clippy::disallowed_methods,
            reason = "the proxy must take the silent client first"
        )]
        std::thread::sleep(Duration::from_millis(200));
        let other = TlsClient::connect(proxy.addr(), &ca, "127.0.0.1", None)
            .and_then(|mut c| c.try_cmd(&["PING"]));
        if other.is_err() {
            silent = Some(candidate);
            break;
        }
    }
    let mut silent = silent.expect("a client that never handshakes holds its place");
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // Then the proxy gives up on it (HANDSHAKE_TIMEOUT, 10 s), closes it and counts it.
    let failures = || {
        proxy.metric(
            "keyway_client_tls_handshake_failures_total",
            "pool=\"alpha\"",
        )
    };
    let before = failures();
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = silent.read_to_end(&mut rest);
    assert!(read.is_ok(), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(25));
    assert!(wait_until(READ_TIMEOUT, || failures() == before + 1.0));
    assert!(wait_until(READ_TIMEOUT, || {
        TlsClient::connect(proxy.addr(), &ca, "127.0.0.1", None)
            .and_then(|mut c| c.try_cmd(&["PING"]))
            .is_ok()
    }));
}

#[test]
fn bad_files_are_refused_at_validation_naming_pool_and_file() {
    let certs = Certs::generate();
    let yaml = |tls: &str| {
        format!("alpha:\n  listen: 127.0.0.1:22121\n  redis: true\n{tls}  servers:\n   - 127.0.0.1:6379:1\n")
    };
    let problem = |tls: &str| match Config::parse(&yaml(tls)) {
        Ok(_) => panic!("accepted:\n{tls}"),
        Err(error) => error.to_string(),
    };
    let missing =
        problem("  tls:\n    cert: /nonexistent/server.pem\n    key: /nonexistent/server.key\n");
    assert!(
        missing.contains("pool 'alpha'")
            && missing.contains("'tls'")
            && missing.contains("cannot read '/nonexistent/server.pem'"),
        "{missing}"
    );
    let mismatched = problem(&format!(
        "  tls:\n    cert: {}\n    key: {}\n",
        certs.file("server.pem"),
        certs.file("client.key")
    ));
    assert!(
        mismatched.contains("is not the key of the certificate")
            && mismatched.contains("client.key"),
        "{mismatched}"
    );
    let not_pem = problem(&format!(
        "  tls:\n    cert: {}\n    key: {}\n",
        certs.file("server.ext"),
        certs.file("server.key")
    ));
    assert!(
        not_pem.contains("holds no PEM certificate") && not_pem.contains("server.ext"),
        "{not_pem}"
    );
    let no_key = problem(&format!("  tls:\n    cert: {}\n", certs.file("server.pem")));
    assert!(no_key.contains("'key' is missing"), "{no_key}");
    let bad_ca = problem("  server_tls:\n    ca: /nonexistent/ca.pem\n");
    assert!(
        bad_ca.contains("'server_tls'") && bad_ca.contains("cannot read '/nonexistent/ca.pem'"),
        "{bad_ca}"
    );
    let half = problem(&format!(
        "  server_tls:\n    cert: {}\n",
        certs.file("client.pem")
    ));
    assert!(half.contains("cert is set without its key"), "{half}");
    let unknown = problem("  tls:\n    certificate: x\n");
    assert!(
        unknown.contains("unknown setting 'certificate'"),
        "{unknown}"
    );
    // A good pair passes.
    assert!(Config::parse(&yaml(&listener_tls(&certs, true))).is_ok());

    // `keyway -t` says the same and exits non-zero.
    let dir = TempDir::new("tls-t");
    let conf = dir.path().join("nutcracker.yml");
    std::fs::write(
        &conf,
        yaml("  tls:\n    cert: /nonexistent/server.pem\n    key: /nonexistent/server.key\n"),
    )
    .unwrap();
    let out = Command::new(keyway_bin())
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("pool 'alpha'") && text.contains("/nonexistent/server.pem"),
        "{text}"
    );
}

#[test]
fn a_sentinel_pool_asks_its_sentinels_and_reaches_the_master_over_tls() {
    let certs = Certs::generate();
    let master = TlsRedis::start(&certs, false);
    // The Sentinel serves TLS on its own port and talks TLS to the master it monitors, so the
    // address it hands out is the master's TLS port.
    let sentinel_tls = free_port();
    let lines = [
        format!("tls-port {sentinel_tls}"),
        format!("tls-cert-file {}", certs.file("server.pem")),
        format!("tls-key-file {}", certs.file("server.key")),
        format!("tls-ca-cert-file {}", certs.file("ca.pem")),
        "tls-auth-clients no".to_string(),
        "tls-replication yes".to_string(),
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let sentinel = SentinelServer::start_with(&[("shard-1", master.tls_port)], &lines);
    assert_eq!(
        sentinel.master_addr("shard-1").as_deref(),
        Some(master.tls_addr().as_str())
    );
    let yaml = |port: u16| {
        format!(
            "ha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 2000\n  sentinels:\n   - 127.0.0.1:{sentinel_tls}\n  server_tls:\n    ca: {}\n  servers:\n   - shard-1:1\n",
            certs.file("ca.pem")
        )
    };
    let proxy = Proxy::start_on_free_port(ProxyKind::Keyway, yaml);
    let mut client = proxy.client();
    assert_eq!(client.cmd(&["SET", "via-sentinel", "v"]), Reply::ok());
    assert_eq!(client.cmd(&["GET", "via-sentinel"]), Reply::bulk("v"));
    assert!(master.server.keys().contains(b"via-sentinel".as_slice()));
    drop(sentinel);
}

#[test]
fn a_cluster_pool_learns_the_layout_and_routes_over_tls() {
    let certs = Certs::generate();
    let cluster = RedisCluster::start_tls(3, 0, &certs);
    let seeds: String = cluster
        .tls_ports
        .iter()
        .map(|p| format!("   - 127.0.0.1:{p}\n"))
        .collect();
    let ca = certs.file("ca.pem");
    let proxy = Proxy::start_on_free_port(ProxyKind::Keyway, |port| {
        format!(
            "cl:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 2000\n  server_tls:\n    ca: {ca}\n  cluster:\n{seeds}"
        )
    });
    let mut client = proxy.client();
    for i in 0..30 {
        let key = format!("ck{i}");
        assert_eq!(client.cmd(&["SET", &key, "v"]), Reply::ok(), "{key}");
    }
    for i in 0..30 {
        assert_eq!(client.cmd(&["GET", &format!("ck{i}")]), Reply::bulk("v"));
    }
    // Every key is on its slot's node, and all three nodes hold some.
    let held: Vec<usize> = cluster.nodes.iter().map(|n| n.keys().len()).collect();
    assert_eq!(held.iter().sum::<usize>(), 30, "{held:?}");
    assert!(held.iter().all(|&n| n > 0), "{held:?}");
}
