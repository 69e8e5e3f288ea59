//! Per-client output bounds in bytes (`client_output_limit`, `client_output_hard_limit`): a
//! client that does not read its replies stops being read past the soft limit and is closed
//! past the hard one, so the proxy's memory stays bounded however large the replies.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1024 * 1024;

/// The pool's `keyway_client_output_limit_closed_total`, 0 while it has no series.
fn closed_for_output(proxy: &Proxy) -> u64 {
    let (_, body) = http(proxy.admin_port(), "GET", "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix("keyway_client_output_limit_closed_total{pool=\"alpha\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Samples the proxy's RSS every few milliseconds until stopped; returns the largest seen.
struct RssPeak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RssPeak {
    fn start(pid: u32) -> RssPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = thread::spawn({
            let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
            move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(5));
                }
            }
        });
        RssPeak {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

fn limits_setup(soft: usize, hard: usize) -> Setup {
    let (soft, hard) = (soft.to_string(), hard.to_string());
    Setup::new(
        1,
        &[
            ("client_output_limit", soft.as_str()),
            ("client_output_hard_limit", hard.as_str()),
            // Requests of other clients sharing the backend connection queue behind the
            // stuck client's 2000 MiB of replies: a hang bound, generous on a loaded machine.
            ("timeout", "120000"),
        ],
    )
}

#[test]
fn a_client_that_never_reads_is_closed_past_the_hard_limit_and_memory_stays_bounded() {
    let setup = limits_setup(8 * MIB, 32 * MIB);
    let value = vec![b'x'; MIB];
    assert_eq!(
        setup.shards[0]
            .client()
            .cmd(&[b"SET".as_slice(), b"big", &value]),
        Reply::ok()
    );
    // Others: spread over both workers, so one shares the stuck client's backend connection.
    let mut others: Vec<Client> = (0..4).map(|_| setup.client()).collect();
    for other in &mut others {
        other.set_read_timeout(Duration::from_secs(120));
        assert_eq!(other.cmd(&["GET", "big"]), Reply::bulk(&value));
    }
    let baseline = setup.proxy.rss_kib();
    let peak = RssPeak::start(setup.proxy.pid());

    let mut stuck = TcpStream::connect(setup.proxy.addr()).unwrap();
    let gets: Vec<u8> = (0..2000).flat_map(|_| encode(&["GET", "big"])).collect();
    stuck.write_all(&gets).unwrap();

    // Meanwhile the others are served, until the stuck client is closed and counted.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rounds = 0;
    while closed_for_output(&setup.proxy) == 0 {
        assert!(
            Instant::now() < deadline,
            "the stuck client was never closed"
        );
        for other in &mut others {
            assert_eq!(other.cmd(&["PING"]), Reply::Simple("PONG".into()));
        }
        rounds += 1;
        thread::sleep(Duration::from_millis(20));
    }
    assert!(rounds > 0 || closed_for_output(&setup.proxy) == 1);
    // Every other client's next reply comes after the stuck client's last one on the shared
    // connection: once they are in, all 2000 replies went through the proxy.
    for other in &mut others {
        assert_eq!(other.cmd(&["GET", "big"]), Reply::bulk(&value));
    }
    let peak = peak.finish();
    let grown_mib = peak.saturating_sub(baseline) / 1024;
    eprintln!("RSS baseline {baseline} KiB, peak {peak} KiB: grew {grown_mib} MiB for 2000 MiB of replies");
    // The margin covers the allocations those 32 MiB of replies were read into (a reply keeps
    // the backend read buffer it was split from) and the four clients' own 1 MiB replies.
    assert!(
        grown_mib < 32 + 64,
        "RSS grew {grown_mib} MiB with a 32 MiB hard limit"
    );
    assert_eq!(closed_for_output(&setup.proxy), 1);

    // The stuck client sees its connection end (after whatever the socket had taken).
    stuck
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut taken = 0usize;
    loop {
        match stuck.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => taken += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the closed client's socket did not end: {e} after {taken} bytes"),
        }
    }
    assert!(
        taken < 2000 * MIB,
        "it got every reply: it was never closed"
    );
    for other in &mut others {
        assert_eq!(other.cmd(&["PING"]), Reply::Simple("PONG".into()));
    }
}

#[test]
fn a_client_past_the_soft_limit_is_paused_then_answered_in_order() {
    let setup = limits_setup(4 * MIB, 512 * MIB);
    for i in 0..40 {
        let value = vec![b'a' + (i % 26) as u8; MIB];
        let key = format!("soft:{i}");
        assert_eq!(
            setup.shards[0]
                .client()
                .cmd(&[b"SET".as_slice(), key.as_bytes(), &value]),
            Reply::ok()
        );
    }
    let mut client = setup.client();
    client.set_read_timeout(Duration::from_secs(60));
    let gets: Vec<u8> = (0..40)
        .flat_map(|i| encode(&["GET", &format!("soft:{i}")]))
        .collect();
    client.send_raw(&gets);
    // Then far more than the sockets' buffers hold: past the soft limit the proxy stops
    // reading, so this writer gets stuck until the client reads.
    let echo = vec![b'e'; 64 * 1024];
    let echoes: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| {
            let mut arg = i.to_be_bytes().to_vec();
            arg.extend_from_slice(&echo);
            encode(&[b"ECHO".as_slice(), &arg])
        })
        .collect();
    let all: Vec<u8> = echoes.concat();
    let total = all.len();
    let mut writer = client.stream().try_clone().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let sender = thread::spawn({
        let written = Arc::clone(&written);
        move || {
            for chunk in all.chunks(64 * 1024) {
                writer.write_all(chunk).unwrap();
                written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
    });
    // Stuck: the writer stops advancing well short of the whole.
    let mut last = u64::MAX;
    let stalled = wait_until(Duration::from_secs(60), || {
        let now = written.load(Ordering::Relaxed);
        let still = now == last;
        last = now;
        thread::sleep(Duration::from_millis(300));
        still
    });
    let stuck_at = written.load(Ordering::Relaxed) as usize;
    assert!(stalled, "the writer never stalled");
    assert!(
        stuck_at < total,
        "the proxy read all {total} bytes from a client holding 40 MiB of replies"
    );
    // Then it drains: every reply, in order, and the client stays connected.
    for i in 0..40 {
        let expected = vec![b'a' + (i % 26) as u8; MIB];
        assert_eq!(client.read_reply(), Reply::bulk(&expected), "GET {i}");
    }
    for i in 0..1024u32 {
        match client.read_reply() {
            Reply::Bulk(Some(b)) => {
                assert_eq!(b[..4], i.to_be_bytes(), "ECHO {i} out of order");
                assert_eq!(b.len(), 4 + echo.len());
            }
            other => panic!("ECHO {i}: {other:?}"),
        }
    }
    sender.join().unwrap();
    assert_eq!(client.cmd(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(closed_for_output(&setup.proxy), 0);
}
