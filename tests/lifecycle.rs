//! The process as operators drive it: `-t`, graceful SIGTERM, unix-socket listeners,
//! `client_connections`, `preconnect` with several `server_connections`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use common::*;

fn keyway_test_conf(yaml: &str) -> (bool, String) {
    let dir = TempDir::new("conf");
    let path = dir.path().join("nutcracker.yml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(keyway_bin())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

#[test]
fn test_conf_accepts_a_good_file_and_names_pool_and_key_of_a_bad_one() {
    let good =
        "alpha:\n  listen: 127.0.0.1:22121\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1\n";
    let (ok, text) = keyway_test_conf(good);
    assert!(ok, "{text}");
    assert!(text.contains("syntax is ok"), "{text}");

    let bad =
        "alpha:\n  listen: 127.0.0.1:22121\n  hash: fnv9\n  servers:\n   - 127.0.0.1:6379:1\n";
    let (ok, text) = keyway_test_conf(bad);
    assert!(!ok, "{text}");
    assert!(
        text.contains("pool 'alpha'") && text.contains("key 'hash'"),
        "{text}"
    );
}

#[test]
fn sigterm_answers_in_flight_requests_then_exits_zero() {
    let mut setup = Setup::new(1, &[]);
    let mut client = setup.client();
    assert_eq!(client.cmd(&["SET", "k", "v"]), Reply::ok());
    // Hold the request in flight at the backend while the proxy is told to stop.
    setup.shards[0].pause();
    client.send(&["GET", "k"]);
    std::thread::sleep(Duration::from_millis(200));
    signal(setup.proxy.pid(), "TERM");
    std::thread::sleep(Duration::from_millis(200));
    setup.shards[0].resume();
    assert_eq!(client.read_reply(), Reply::bulk("v"));
    let status = setup.proxy.wait_exit(Duration::from_secs(20));
    assert!(
        matches!(status, Some(s) if s.success()),
        "exit status {status:?}"
    );
}

#[test]
fn unix_socket_listener_serves_clients_with_the_configured_mode() {
    let shard = RedisServer::start();
    let dir = TempDir::new("sock");
    let sock = dir.path().join("keyway.sock");
    let yaml = format!(
        "alpha:\n  listen: {} 0600\n  redis: true\n  servers:\n   - {}\n",
        sock.display(),
        server_line(&shard, 1, None)
    );
    let conf = dir.path().join("nutcracker.yml");
    std::fs::write(&conf, yaml).unwrap();
    let mut child = Command::new(keyway_bin())
        .arg("-c")
        .arg(&conf)
        .args(["--threads", "1", "-v", "4"])
        .spawn()
        .unwrap();
    let connected = wait_until(Duration::from_secs(10), || {
        UnixStream::connect(&sock).is_ok()
    });
    let result = std::panic::catch_unwind(|| {
        assert!(connected, "no unix listener at {}", sock.display());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut stream = UnixStream::connect(&sock).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream
            .write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nu\r\n$1\r\n1\r\n*2\r\n$3\r\nGET\r\n$1\r\nu\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < b"+OK\r\n$1\r\n1\r\n".len() {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "closed early: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"+OK\r\n$1\r\n1\r\n");
    });
    signal(child.id(), "TERM");
    let _ = child.wait();
    result.unwrap();
}

#[test]
fn client_connections_limit_closes_clients_past_it() {
    let setup = Setup::new(1, &[("client_connections", "2")]);
    // The start-up probe's connection may still hold a place for a moment.
    let admit = || {
        let mut admitted = None;
        wait_until(Duration::from_secs(5), || {
            let mut c = setup.client();
            c.send(&["PING"]);
            admitted = c.try_read_reply().is_ok().then_some(c);
            admitted.is_some()
        });
        admitted.expect("a client within the limit is served")
    };
    let first = admit();
    let mut second = admit();
    let mut third = setup.client();
    third.send(&["PING"]);
    assert!(
        third.try_read_reply().is_err(),
        "a third client must be closed"
    );
    drop(first);
    // Its place frees up once the proxy notices the close.
    let admitted = wait_until(Duration::from_secs(5), || {
        let mut c = setup.client();
        c.send(&["PING"]);
        c.try_read_reply().is_ok()
    });
    assert!(admitted, "a new client should be admitted after one left");
    assert_eq!(second.cmd(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn preconnect_opens_every_server_connection_at_start() {
    let setup = Setup::new(2, &[("preconnect", "true"), ("server_connections", "3")]);
    // Three connections per backend for the whole process (nutcracker's meaning, whatever the
    // worker threads), all open before any request. CLIENT LIST also lists the asking client.
    for shard in &setup.shards {
        let count = || {
            let clients = shard.client().cmd(&["CLIENT", "LIST"]);
            let text = String::from_utf8_lossy(&clients.to_bytes()).into_owned();
            text.matches("cmd=").count() - 1
        };
        let opened = wait_until(Duration::from_secs(10), || count() >= 3);
        assert!(
            opened,
            "backend {} should see 3 proxy connections",
            shard.port()
        );
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            count(),
            3,
            "backend {}: no more than server_connections",
            shard.port()
        );
    }
    let mut client = setup.client();
    for i in 0..50 {
        let key = format!("k{i}");
        assert_eq!(client.cmd(&["SET", key.as_str(), "v"]), Reply::ok());
        assert_eq!(client.cmd(&["GET", key.as_str()]), Reply::bulk("v"));
    }
}
