//! A hostile or broken backend costs only the requests it holds: each fault (garbage, a reply
//! in 1-byte writes, a reply cut by a reset, extra replies, a 600 MiB header, silence, a
//! trickle) gives the affected request an error reply within the pool's `timeout` (or, for the
//! split reply, the right reply), the connection is recycled so the next request works, and
//! a real redis-server in the same pool and another client keep answering meanwhile. Memory
//! stays bounded: a reply over `max_reply_bytes` is refused from its header.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::fake_backend::{bulk, FakeBackend, Step};
use common::*;

/// Generous bound on any one reply (the pool's timeout is 500 ms): a hang bound, not a timing.
const REPLY_BOUND: Duration = Duration::from_secs(8);

/// A pool of the fake and a real redis-server behind the proxy under test, and a key on each.
struct Hostile {
    fake: FakeBackend,
    /// Kept running for the fixture's life.
    _redis: RedisServer,
    proxy: Proxy,
    fake_key: Vec<u8>,
    real_key: Vec<u8>,
}

fn hostile(options: &[(&str, &str)]) -> Hostile {
    let fake = FakeBackend::start();
    let redis = RedisServer::start();
    let servers = vec![
        fake.server_line("fake"),
        server_line(&redis, 1, Some("real")),
    ];
    let mut opts = vec![];
    if !options.iter().any(|(key, _)| *key == "timeout") {
        opts.push(("timeout", "500"));
    }
    opts.extend_from_slice(options);
    let proxy = Proxy::start_on_free_port(ProxyKind::under_test(), |port| {
        pool_yaml(port, &servers, &opts)
    });
    // The fake answers a GET with its key, the empty redis with nil: that tells where a key lives.
    let mut c = proxy.client();
    let (mut fake_key, mut real_key) = (None, None);
    for i in 0..500 {
        let key = format!("key:{i}").into_bytes();
        let reply = c.cmd(&[b"GET".as_slice(), &key]);
        if reply == Reply::bulk(&key) {
            fake_key.get_or_insert(key);
        } else if reply == Reply::nil() {
            real_key.get_or_insert(key);
        } else {
            panic!("GET {} -> {reply:?}", show(&key));
        }
        if fake_key.is_some() && real_key.is_some() {
            break;
        }
    }
    let (fake_key, real_key) = (fake_key.expect("a fake key"), real_key.expect("a real key"));
    assert_eq!(c.cmd(&[b"SET".as_slice(), &real_key, b"real"]), Reply::ok());
    Hostile {
        fake,
        _redis: redis,
        proxy,
        fake_key,
        real_key,
    }
}

/// What the request hit by the fault must get.
enum Expect {
    /// An error reply whose text contains this.
    Error(&'static str),
    /// An error reply that is not a timeout: the fault was seen at once.
    ErrorBeforeTimeout,
    /// Exactly this reply.
    Reply(Reply),
}

fn timed_cmd(c: &mut Client, args: &[&[u8]]) -> Reply {
    let start = Instant::now();
    let reply = c.cmd(args);
    let took = start.elapsed();
    assert!(
        took < REPLY_BOUND,
        "{} took {took:?} (bound {REPLY_BOUND:?})",
        show(args[0])
    );
    reply
}

/// A client reading the real backend's key over and over until stopped: every reply must be
/// right. Returns how many it read.
fn bystander(h: &Hostile, stop: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    let mut c = h.proxy.client();
    let key = h.real_key.clone();
    thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) || n == 0 {
            assert_eq!(
                c.cmd(&[b"GET".as_slice(), &key]),
                Reply::bulk("real"),
                "the bystander's read of the real backend"
            );
            n += 1;
        }
        n
    })
}

/// Plays the script `fault` makes (from the fake's key) for the next request to the fake, and
/// checks everything the module promises.
fn survives(fault: impl FnOnce(&[u8]) -> (Vec<Step>, Expect)) -> Hostile {
    survives_with(&[], fault)
}

fn survives_with(
    options: &[(&str, &str)],
    fault: impl FnOnce(&[u8]) -> (Vec<Step>, Expect),
) -> Hostile {
    let mut h = hostile(options);
    let fake_key = h.fake_key.clone();
    let real_key = h.real_key.clone();
    let (steps, expect) = fault(&fake_key);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = bystander(&h, Arc::clone(&stop));
    let mut c = h.proxy.client();
    h.fake.next(steps);
    let reply = timed_cmd(&mut c, &[b"GET", &fake_key]);
    match expect {
        Expect::Error(text) => assert!(
            reply.is_error() && reply.error_text().contains(text),
            "the faulty reply -> {reply:?}, wanted an error with {text:?}"
        ),
        Expect::ErrorBeforeTimeout => assert!(
            reply.is_error() && !reply.error_text().contains("timed out"),
            "the faulty reply -> {reply:?}, wanted an error other than a timeout"
        ),
        Expect::Reply(want) => assert_eq!(reply, want, "the reply to the faulty exchange"),
    }
    assert_eq!(h.fake.pending_scripts(), 0, "the fault was played");
    // The other backend, on the same client connection, right after.
    assert_eq!(timed_cmd(&mut c, &[b"GET", &real_key]), Reply::bulk("real"));
    // The fake behaves again: the connection was recycled, the next request works (no stale
    // byte of the fault is paired with it).
    for _ in 0..3 {
        assert_eq!(
            timed_cmd(&mut c, &[b"GET", &fake_key]),
            Reply::bulk(&fake_key),
            "the fake's key after the fault"
        );
    }
    stop.store(true, Ordering::SeqCst);
    let reads = watcher
        .join()
        .expect("the bystander saw only right replies");
    assert!(reads > 0);
    h.proxy.assert_alive();
    h
}

#[test]
fn garbage_from_a_backend_fails_only_its_request() {
    survives(|_| {
        (
            vec![Step::Write(b"?this is not RESP\r\n".to_vec())],
            Expect::ErrorBeforeTimeout,
        )
    });
}

#[test]
fn a_reply_split_into_one_byte_writes_arrives_whole() {
    survives(|key| {
        // An array of two bulk strings, one byte per write.
        let mut reply = b"*2\r\n".to_vec();
        reply.extend(bulk(key));
        reply.extend(bulk(b"second element"));
        let steps = vec![Step::Trickle {
            bytes: reply,
            chunk: 1,
            pause: Duration::from_millis(2),
        }];
        let want = Reply::Array(Some(vec![Reply::bulk(key), Reply::bulk("second element")]));
        (steps, Expect::Reply(want))
    });
}

#[test]
fn a_reply_cut_by_a_reset_fails_only_its_request() {
    survives(|_| {
        (
            vec![
                Step::Write(b"$20\r\nonly half".to_vec()),
                Step::Sleep(Duration::from_millis(50)),
                Step::Reset,
            ],
            Expect::ErrorBeforeTimeout,
        )
    });
}

#[test]
fn more_replies_than_requests_recycle_the_connection() {
    // The first reply is right; the extra ones must never reach a later request.
    survives(|key| {
        let mut replies = bulk(key);
        replies.extend_from_slice(b"+EXTRA\r\n:42\r\n");
        (vec![Step::Write(replies)], Expect::Reply(Reply::bulk(key)))
    });
}

#[test]
fn a_600_mib_bulk_header_is_refused_at_once_without_buffering() {
    // Default max_reply_bytes (512 MiB, as Redis's proto-max-bulk-len): the header alone is
    // over it. A proxy that buffered instead would hold what trickles in until the timeout
    // and answer a timeout.
    let h = survives(|_| {
        let steps = vec![
            Step::Write(b"$629145600\r\n".to_vec()),
            Step::Trickle {
                bytes: vec![b'x'; 32 * 1024 * 1024],
                chunk: 256 * 1024,
                pause: Duration::from_millis(5),
            },
        ];
        (steps, Expect::ErrorBeforeTimeout)
    });
    let rss = h.proxy.rss_kib();
    println!("proxy RSS after the 600 MiB header: {rss} KiB");
    assert!(rss < 128 * 1024, "proxy RSS is {rss} KiB");
}

#[test]
fn a_reply_over_max_reply_bytes_is_refused_while_it_trickles_in() {
    // A header within Redis's bound but over the pool's: refused from the header, long before
    // the timeout, while the fake trickles data that would otherwise be buffered.
    survives_with(
        &[("max_reply_bytes", "1048576"), ("timeout", "3000")],
        |_| {
            let steps = vec![
                Step::Write(b"$4194304\r\n".to_vec()),
                Step::Trickle {
                    bytes: vec![b'x'; 4 * 1024 * 1024],
                    chunk: 64 * 1024,
                    pause: Duration::from_millis(20),
                },
            ];
            (steps, Expect::ErrorBeforeTimeout)
        },
    );
}

#[test]
fn a_backend_that_accepts_and_never_answers_times_out() {
    survives(|_| (vec![Step::Silence], Expect::Error("timed out")));
}

#[test]
fn a_backend_trickling_one_byte_per_second_times_out() {
    survives(|key| {
        let steps = vec![Step::Trickle {
            bytes: bulk(key),
            chunk: 1,
            pause: Duration::from_secs(1),
        }];
        (steps, Expect::Error("timed out"))
    });
}

#[test]
fn a_real_reply_over_max_reply_bytes_is_refused_and_smaller_ones_pass() {
    let setup = Setup::new(1, &[("timeout", "3000"), ("max_reply_bytes", "1048576")]);
    let mut direct = setup.shards[0].client();
    let big = vec![b'b'; 2 * 1024 * 1024];
    let fits = vec![b'f'; 512 * 1024];
    assert_eq!(direct.cmd(&[b"SET".as_slice(), b"big", &big]), Reply::ok());
    assert_eq!(
        direct.cmd(&[b"SET".as_slice(), b"fits", &fits]),
        Reply::ok()
    );
    let mut c = setup.client();
    let reply = timed_cmd(&mut c, &[b"GET", b"big"]);
    assert!(
        reply.is_error() && !reply.error_text().contains("timed out"),
        "GET of a 2 MiB value with max_reply_bytes 1 MiB -> {reply:?}"
    );
    assert_eq!(timed_cmd(&mut c, &[b"GET", b"fits"]), Reply::bulk(&fits));
    let reply = timed_cmd(&mut c, &[b"GET", b"big"]);
    assert!(reply.is_error(), "again -> {reply:?}");
    assert_eq!(timed_cmd(&mut c, &[b"GET", b"fits"]), Reply::bulk(&fits));
}
