//! Backend connections are keyed by backend: a reload that changes one backend reconnects
//! that backend only; the others keep their connections (the same `CLIENT LIST` ids). And
//! `server_connections` is the whole process's number per backend, whatever `--threads` is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::live::{connection_ids, Live};
use common::*;

fn pool(port: u16, servers: &[&RedisServer]) -> String {
    let mut y = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 2000\n  preconnect: true\n  server_connections: 2\n  servers:\n"
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
    // preconnect: both workers connect to every backend, one connection each.
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

/// 20 clients pipelining SETs and GETs of their own keys at once; every reply checked.
fn pipelining_clients(port: u16) {
    let clients: Vec<_> = (0..20)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = Client::connect(&format!("127.0.0.1:{port}"));
                for round in 0..10 {
                    let mut requests = Vec::new();
                    for i in 0..50 {
                        let key = format!("c{c}:k{i}");
                        requests.push(encode(&["SET", &key, &format!("{round}")]));
                        requests.push(encode(&["GET", &key]));
                    }
                    let replies = client.pipeline(&requests);
                    for pair in replies.chunks(2) {
                        assert_eq!(pair[0], Reply::ok());
                        assert_eq!(pair[1], Reply::bulk(format!("{round}")));
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
}

#[test]
fn server_connections_is_the_whole_process_number_whatever_the_threads() {
    for (connections, threads) in [(1, 2), (2, 2), (2, 3), (3, 2)] {
        let servers = start_redis_servers(3);
        let port = free_port();
        let yaml = format!(
            "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 5000\n  \
             server_connections: {connections}\n  servers:\n{}",
            servers
                .iter()
                .enumerate()
                .map(|(i, s)| format!("   - 127.0.0.1:{}:1 s{i}\n", s.port()))
                .collect::<String>()
        );
        let live = Live::start(&yaml, port, threads);
        pipelining_clients(port);
        for server in &servers {
            let ids = connection_ids(server);
            assert!(
                !ids.is_empty() && ids.len() <= connections,
                "server_connections: {connections} with --threads {threads}: backend {} has \
                 {} proxy connections",
                server.port(),
                ids.len()
            );
        }
        drop(live);
    }
}

#[test]
fn a_reload_changing_server_connections_changes_the_backends_connections_to_match() {
    let servers = start_redis_servers(2);
    let port = free_port();
    let yaml = |connections: usize| {
        format!(
            "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 5000\n  \
             preconnect: true\n  server_connections: {connections}\n  servers:\n{}",
            servers
                .iter()
                .enumerate()
                .map(|(i, s)| format!("   - 127.0.0.1:{}:1 s{i}\n", s.port()))
                .collect::<String>()
        )
    };
    let live = Live::start(&yaml(2), port, 2);
    pipelining_clients(port);
    // 2 → 1 (a worker stops serving the pool) → 3 (both serve it again, one with two).
    for connections in [2, 1, 3] {
        if connections != 2 {
            let (status, body) = live.reload(&yaml(connections));
            assert_eq!(status, 200, "{body}");
            pipelining_clients(port);
        }
        let matched = wait_until(Duration::from_secs(10), || {
            servers
                .iter()
                .all(|s| connection_ids(s).len() == connections)
        });
        let counts: Vec<usize> = servers.iter().map(|s| connection_ids(s).len()).collect();
        assert!(
            matched,
            "server_connections: {connections} after reload: backends have {counts:?} proxy \
             connections"
        );
    }
}
