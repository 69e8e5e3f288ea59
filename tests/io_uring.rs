//! `--io uring`: client sockets through one io_uring per worker. The whole data-path suite runs
//! a second time with `KEYWAY_IO=uring` (scripts/test.sh); this file holds what is particular
//! to the ring: that it is really used, replies larger than one send, many clients at once,
//! and clients that vanish with operations in flight.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;

fn start(redis: &RedisServer) -> Proxy {
    let mut errors = Vec::new();
    for _ in 0..3 {
        let yaml = pool_yaml(free_port(), &[server_line(redis, 1, Some("s0"))], &[]);
        let args: Vec<String> = [
            "-s",
            &free_port().to_string(),
            "-a",
            "127.0.0.1",
            "--admin",
            "off",
            "--threads",
            "2",
            "--io",
            "uring",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match Proxy::try_start_keyway_with(TempDir::new("uring"), &yaml, &args) {
            Ok(proxy) => return proxy,
            Err(error) => errors.push(error),
        }
    }
    panic!("keyway --io uring failed to start:\n{}", errors.join("\n"));
}

#[test]
fn the_ring_serves_large_replies_pipelines_and_vanishing_clients() {
    let redis = RedisServer::start();
    let mut proxy = start(&redis);
    // Where the kernel refuses io_uring (seccomp, kernel.io_uring_disabled) Keyway says so
    // and serves through epoll: then the rest checks the fallback instead of the ring.
    let log = proxy.stderr();
    let ring = log.contains("client I/O through io_uring");
    let fallback = log.contains("io_uring is unavailable");
    assert!(
        ring != fallback,
        "neither the ring nor a fallback is logged:\n{log}"
    );
    if fallback {
        eprintln!("io_uring is refused on this machine: checking the epoll fallback\n{log}");
    }
    let mut client = proxy.client();
    client.set_read_timeout(Duration::from_secs(60));
    // 4 MiB: many times one send's 256 KiB, so the reply goes out in several sends and
    // partial ones.
    let big: String = (0..4 * 1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    assert_eq!(client.cmd(&["SET", "big", &big]), Reply::ok());
    for _ in 0..3 {
        assert_eq!(client.cmd(&["GET", "big"]), Reply::bulk(&big));
    }
    // A deep pipeline: every reply, in order.
    let requests: Vec<Vec<u8>> = (0..2000)
        .map(|i| encode(&["SET", &format!("k{i}"), &format!("v{i}")]))
        .chain((0..2000).map(|i| encode(&["GET", &format!("k{i}")])))
        .collect();
    let replies = client.pipeline(&requests);
    for (i, reply) in replies.iter().enumerate().skip(2000) {
        assert_eq!(*reply, Reply::bulk(format!("v{}", i - 2000)), "reply {i}");
    }
    // Clients that send and vanish: with a receive or a send in flight, mid-reply.
    for i in 0..50 {
        let mut gone = TcpStream::connect(proxy.addr()).unwrap();
        let request = if i % 2 == 0 {
            encode(&["GET", "big"])
        } else {
            encode(&["PING"])
        };
        gone.write_all(&request).unwrap();
        drop(gone);
    }
    // Many clients at once, each its own requests, all answered.
    let threads: Vec<_> = (0..20)
        .map(|t| {
            let addr = proxy.addr().to_string();
            std::thread::spawn(move || {
                let mut c = Client::connect(&addr);
                for i in 0..200 {
                    let key = format!("t{t}:{i}");
                    assert_eq!(c.cmd(&["SET", &key, &key]), Reply::ok());
                    assert_eq!(c.cmd(&["GET", &key]), Reply::bulk(&key));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(client.cmd(&["GET", "k1999"]), Reply::bulk("v1999"));
    proxy.assert_alive();
}
