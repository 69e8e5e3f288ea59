//! Many clients at once: 10,000 concurrent connections all served within `client_connections`,
//! one more refused, every file descriptor released once they leave; half-closed clients still
//! get their replies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::io::{ErrorKind, Read};
use std::net::Shutdown;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Clients the big test opens, unless the file-descriptor limit is lower.
const CLIENTS: usize = 10_000;
/// Descriptors each process keeps for everything but the clients.
const SPARE_FDS: u64 = 256;

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (processes it starts next, the
/// proxy among them, inherit it); returns the limit.
fn raise_nofile_limit() -> u64 {
    let limits = fs::read_to_string("/proc/self/limits").unwrap();
    let hard: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|h| h.parse().ok())
        .unwrap_or(1024);
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={hard}:{hard}"),
        ])
        .status()
        .expect("prlimit (util-linux) raises the descriptor limit");
    assert!(status.success(), "prlimit failed");
    hard
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// The pool's open client connections, as the proxy counts them.
fn open_clients(proxy: &Proxy) -> Option<u64> {
    let (_, body) = http(proxy.admin_port(), "GET", "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix("keyway_client_connections{pool=\"alpha\"} "))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until the proxy holds no client and no more descriptors than `before`.
fn assert_released(proxy: &Proxy, before: usize) {
    let mut now = 0;
    let released = wait_until(Duration::from_secs(120), || {
        now = open_fds(proxy.pid());
        now <= before && open_clients(proxy) == Some(0)
    });
    assert!(
        released,
        "descriptors leaked: {now} open, {before} before the clients came"
    );
}

/// A proxy whose backend connections (both workers') are up and whose start-up probe left.
fn warmed(options: &[(&str, &str)]) -> (Setup, usize) {
    let setup = Setup::new(1, options);
    assert_eq!(
        setup.shards[0].client().cmd(&["SET", "k", "v"]),
        Reply::ok()
    );
    for _ in 0..4 {
        assert_eq!(setup.client().cmd(&["GET", "k"]), Reply::bulk("v"));
    }
    assert!(
        wait_until(Duration::from_secs(30), || open_clients(&setup.proxy)
            == Some(0)),
        "warm-up clients still counted"
    );
    // The admin connection that just answered may still hold a descriptor for a moment: take the
    // baseline once the count holds still.
    let (mut fds, mut same) = (open_fds(setup.proxy.pid()), 0);
    let settled = wait_until(Duration::from_secs(10), || {
        let now = open_fds(setup.proxy.pid());
        same = if now == fds { same + 1 } else { 0 };
        fds = now;
        same >= 10
    });
    assert!(settled, "the proxy's descriptor count never settled");
    (setup, fds)
}

fn serve_all(clients: &mut [Client]) {
    for (i, client) in clients.iter_mut().enumerate() {
        if i % 2 == 0 {
            client.send(&["PING"]);
        } else {
            client.send(&["GET", "k"]);
        }
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let reply = client
            .try_read_reply()
            .unwrap_or_else(|e| panic!("client {i} got no reply: {e:?}"));
        if i % 2 == 0 {
            assert_eq!(reply, Reply::Simple("PONG".into()), "client {i}");
        } else {
            assert_eq!(reply, Reply::bulk("v"), "client {i}");
        }
    }
}

#[test]
fn ten_thousand_clients_are_served_one_more_is_refused_and_no_fd_leaks() {
    let hard = raise_nofile_limit();
    let count = CLIENTS.min(hard.saturating_sub(SPARE_FDS) as usize);
    eprintln!("RLIMIT_NOFILE hard limit {hard}: {count} clients");
    let limit = count.to_string();
    let (setup, fds_before) = warmed(&[("client_connections", &limit), ("backlog", "1024")]);
    let rss_before = setup.proxy.rss_kib();

    let mut clients: Vec<Client> = (0..count).map(|_| setup.client()).collect();
    serve_all(&mut clients);
    let rss_during = setup.proxy.rss_kib();
    let fds_during = open_fds(setup.proxy.pid());
    eprintln!(
        "{count} clients: RSS {rss_before} -> {rss_during} KiB, {:.2} KiB per connection; fds {fds_before} -> {fds_during}",
        rss_during.saturating_sub(rss_before) as f64 / count as f64
    );
    assert!(
        fds_during >= fds_before + count,
        "every client holds a descriptor"
    );
    assert_eq!(open_clients(&setup.proxy), Some(count as u64));

    // One past client_connections is closed without being served, and the log says why.
    let mut refused = setup.client();
    refused.send(&["PING"]);
    assert!(
        refused.try_read_reply().is_err(),
        "client {} past client_connections: {count} was served",
        count + 1
    );
    assert!(
        wait_until(Duration::from_secs(10), || setup
            .proxy
            .stderr()
            .contains("client_connections reached")),
        "no log line about the refused client"
    );
    drop(refused);
    // The others stay served.
    serve_all(&mut clients);

    drop(clients);
    assert_released(&setup.proxy, fds_before);
}

#[test]
fn half_closed_clients_get_their_replies_then_their_fds_are_released() {
    let (setup, fds_before) = warmed(&[]);
    let big = vec![b'b'; 1024 * 1024];
    assert_eq!(
        setup.shards[0]
            .client()
            .cmd(&[b"SET".as_slice(), b"big", &big]),
        Reply::ok()
    );
    let mut clients: Vec<Client> = (0..50).map(|_| setup.client()).collect();
    for client in &mut clients {
        let requests = [
            encode(&["GET", "big"]),
            encode(&["PING"]),
            encode(&["GET", "k"]),
        ]
        .concat();
        client.send_raw(&requests);
        // Nothing more to say: the client shuts its write side and waits for the replies.
        client.stream().shutdown(Shutdown::Write).unwrap();
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.read_reply(), Reply::bulk(&big), "client {i}");
        assert_eq!(
            client.read_reply(),
            Reply::Simple("PONG".into()),
            "client {i}"
        );
        assert_eq!(client.read_reply(), Reply::bulk("v"), "client {i}");
        // Then the proxy closes its side too.
        let mut rest = [0u8; 16];
        match client.stream().read(&mut rest) {
            Ok(0) => {}
            Ok(n) => panic!("client {i}: {n} bytes after the last reply"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("client {i}: the proxy did not close: {e}"),
        }
    }
    assert_released(&setup.proxy, fds_before);
    drop(clients);
}
