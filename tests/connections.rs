//! Backend connections are keyed by backend: a reload that changes one backend reconnects
//! that backend only; the others keep their connections (the same `CLIENT LIST` ids).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::live::{connection_ids, Live};
use common::*;

fn pool(port: u16, servers: &[&RedisServer]) -> String {
    let mut y = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 2000\n  preconnect: true\n  servers:\n"
    );
    for (i, s) in servers.iter().enumerate() {
        y.push_str(&format!("   - 127.0.0.1:{}:1 s{i}\n", s.port()));
    }
    y
}

/// Sends a few SETs through the proxy, so that every backend's connections are in use.
fn traffic(port: u16) {
    let mut client = Client::connect(&format!("127.0.0.1:{port}"));
    for i in 0..60 {
        assert_eq!(client.cmd(&["SET", &format!("k{i}"), "v"]), Reply::ok());
    }
}

#[test]
fn a_reload_that_moves_one_backend_keeps_the_other_backends_connections() {
    let servers = start_redis_servers(4);
    let port = free_port();
    let live = Live::start(
        &pool(port, &[&servers[0], &servers[1], &servers[2]]),
        port,
        2,
    );
    traffic(port);
    // preconnect: every worker connects to every backend.
    let connected = wait_until(Duration::from_secs(10), || {
        servers[..3].iter().all(|s| connection_ids(s).len() >= 2)
    });
    assert!(connected, "every backend has the proxy's connections");
    let before: Vec<_> = servers[..2].iter().map(connection_ids).collect();

    let (status, body) = live.reload(&pool(port, &[&servers[0], &servers[1], &servers[3]]));
    assert_eq!(status, 200, "{body}");
    traffic(port);
    let moved = wait_until(Duration::from_secs(10), || {
        connection_ids(&servers[3]).len() >= 2 && connection_ids(&servers[2]).is_empty()
    });
    assert!(moved, "the new backend is connected, the old one let go");
    let after: Vec<_> = servers[..2].iter().map(connection_ids).collect();
    assert_eq!(before, after, "unchanged backends keep their connections");
}
