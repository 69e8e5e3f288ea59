//! Backend failures: a killed backend's keys get error replies (promptly) while other shards keep
//! working; auto_eject_hosts remaps and later restores them; a frozen backend gives timeout
//! errors and recovers without stale replies; a client vanishing mid-pipeline harms no one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Generous bound on any one reply while a backend is down (pool timeout is 500 ms).
const REPLY_BOUND: Duration = Duration::from_secs(5);

fn timed_cmd(c: &mut Client, args: &[&[u8]]) -> Reply {
    let start = Instant::now();
    let r = c.cmd(args);
    let took = start.elapsed();
    assert!(
        took < REPLY_BOUND,
        "{} took {took:?} (bound {REPLY_BOUND:?})",
        show(args[0])
    );
    r
}

/// The first shard index other than `not`, and keys on the shard `victim` and elsewhere.
fn victim_and_survivors(by_shard: &[Vec<Vec<u8>>]) -> (usize, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let victim = (0..by_shard.len())
        .max_by_key(|&i| by_shard[i].len())
        .unwrap();
    let on_victim = by_shard[victim].iter().take(10).cloned().collect();
    let elsewhere = by_shard
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .flat_map(|(_, keys)| keys.iter().take(5).cloned())
        .collect();
    (victim, on_victim, elsewhere)
}

#[test]
fn killed_backend_gives_error_replies_for_its_keys_while_other_shards_keep_working() {
    let mut setup = Setup::new(4, &[("timeout", "500")]);
    let by_shard = setup.keys_by_shard("kill", 200);
    let (victim, on_victim, elsewhere) = victim_and_survivors(&by_shard);
    let mut c = setup.client();
    setup.shards[victim].kill();
    for round in 0..3 {
        for k in &on_victim {
            let r = timed_cmd(&mut c, &[b"GET", k]);
            assert!(
                r.is_error(),
                "round {round}: GET {} on the dead backend -> {r:?}",
                show(k)
            );
        }
        for k in &elsewhere {
            assert_eq!(
                timed_cmd(&mut c, &[b"GET", k]),
                Reply::bulk("1"),
                "round {round}: GET {}",
                show(k)
            );
        }
    }
    // once it is back (empty), its keys work again
    setup.shards[victim].restart();
    let k = on_victim[0].clone();
    let back = wait_until(Duration::from_secs(15), || {
        c.cmd(&[b"SET".as_slice(), &k, b"again"]) == Reply::ok()
    });
    assert!(back, "keys of the restarted backend work again");
    assert_eq!(c.cmd(&[b"GET".as_slice(), &k]), Reply::bulk("again"));
    assert_eq!(
        setup.shards[victim].client().cmd(&[b"GET".as_slice(), &k]),
        Reply::bulk("again")
    );
    setup.proxy.assert_alive();
}

#[test]
fn mget_touching_a_dead_backend_gets_one_error_reply_and_the_connection_stays_open() {
    let mut setup = Setup::new(4, &[("timeout", "500")]);
    let by_shard = setup.keys_by_shard("killmget", 200);
    let (victim, on_victim, elsewhere) = victim_and_survivors(&by_shard);
    let mut c = setup.client();
    setup.shards[victim].kill();
    let mut mget: Vec<&[u8]> = vec![b"MGET", &elsewhere[0], &on_victim[0], &elsewhere[1]];
    let r = timed_cmd(&mut c, &mget);
    assert!(r.is_error(), "MGET touching the dead backend -> {r:?}");
    mget.remove(2);
    assert_eq!(
        timed_cmd(&mut c, &mget),
        Reply::Array(Some(vec![Reply::bulk("1"), Reply::bulk("1")]))
    );
    assert_eq!(timed_cmd(&mut c, &[b"PING"]), Reply::Simple("PONG".into()));
    setup.proxy.assert_alive();
}

#[test]
fn auto_eject_remaps_keys_of_a_dead_backend_and_restores_them_after_retry_timeout() {
    let mut setup = Setup::new(
        4,
        &[
            ("timeout", "500"),
            ("auto_eject_hosts", "true"),
            ("server_failure_limit", "2"),
            ("server_retry_timeout", "2000"),
        ],
    );
    let by_shard = setup.keys_by_shard("eject", 200);
    let (victim, on_victim, elsewhere) = victim_and_survivors(&by_shard);
    let mut c = setup.client();
    setup.shards[victim].kill();

    // after server_failure_limit failures the backend is ejected: its keys remap and work
    let k = on_victim[0].clone();
    let remapped = wait_until(Duration::from_secs(15), || {
        timed_cmd(&mut c, &[b"SET", &k, b"remapped"]) == Reply::ok()
    });
    assert!(remapped, "keys of the dead backend remap after ejection");
    assert_eq!(c.cmd(&[b"GET".as_slice(), &k]), Reply::bulk("remapped"));
    let holders = setup
        .shards
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            *i != victim && s.client().cmd(&[b"GET".as_slice(), &k]) == Reply::bulk("remapped")
        })
        .count();
    assert_eq!(
        holders, 1,
        "the remapped key sits on exactly one live backend"
    );
    for e in &elsewhere {
        assert_eq!(
            c.cmd(&[b"GET".as_slice(), e]),
            Reply::bulk("1"),
            "other shards unaffected"
        );
    }

    // restarted and past server_retry_timeout: the backend rejoins and its keys route back
    setup.shards[victim].restart();
    let restored = wait_until(Duration::from_secs(20), || {
        let r = timed_cmd(&mut c, &[b"SET", &k, b"home again"]);
        r == Reply::ok()
            && setup.shards[victim].client().cmd(&[b"GET".as_slice(), &k])
                == Reply::bulk("home again")
    });
    assert!(
        restored,
        "after the retry timeout the key routes to its restarted backend again"
    );
    for k in &on_victim {
        assert_eq!(c.cmd(&[b"SET".as_slice(), k, b"back"]), Reply::ok());
        assert_eq!(
            setup.shards[victim].client().cmd(&[b"GET".as_slice(), k]),
            Reply::bulk("back")
        );
    }
    setup.proxy.assert_alive();
}

#[test]
fn frozen_backend_gives_timeout_errors_then_recovers_after_sigcont() {
    let mut setup = Setup::new(4, &[("timeout", "500")]);
    let by_shard = setup.keys_by_shard("frozen", 200);
    let (victim, on_victim, elsewhere) = victim_and_survivors(&by_shard);
    let mut c = setup.client();
    setup.shards[victim].pause();
    for k in on_victim.iter().take(3) {
        c.send(&[b"GET".as_slice(), k]);
        let start = Instant::now();
        let raw = c.read_reply_raw();
        assert!(
            start.elapsed() < REPLY_BOUND,
            "timeout reply took {:?}",
            start.elapsed()
        );
        assert_eq!(
            show(&raw),
            "-ERR Connection timed out\\r\\n",
            "GET {} on a frozen backend",
            show(k)
        );
        for e in elsewhere.iter().take(4) {
            assert_eq!(
                timed_cmd(&mut c, &[b"GET", e]),
                Reply::bulk("1"),
                "other shards keep working"
            );
        }
    }
    setup.shards[victim].resume();
    let k = on_victim[0].clone();
    let recovered = wait_until(Duration::from_secs(15), || {
        c.cmd(&[b"SET".as_slice(), &k, b"thawed"]) == Reply::ok()
    });
    assert!(recovered, "requests succeed again after SIGCONT");
    // late replies to the timed-out requests must never be paired with new requests
    for i in 0..100 {
        let key = &on_victim[i % on_victim.len()];
        let value = format!("after thaw {i}");
        assert_eq!(
            c.cmd(&[b"SET".as_slice(), key, value.as_bytes()]),
            Reply::ok(),
            "SET {i}"
        );
        assert_eq!(
            c.cmd(&[b"GET".as_slice(), key]),
            Reply::bulk(&value),
            "GET {i}"
        );
    }
    setup.proxy.assert_alive();
}

#[test]
fn client_vanishing_mid_pipeline_harms_no_one() {
    let mut setup = Setup::new(4, &[]);
    let addr = setup.proxy.addr().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let mut healthy = setup.client();
    let healthy_thread = thread::spawn(move || {
        let mut n = 0;
        while !flag.load(Ordering::Relaxed) || n < 20 {
            let key = format!("steady:{}", n % 20);
            let value = format!("v{n}");
            assert_eq!(healthy.cmd(&["SET", &key, &value]), Reply::ok());
            assert_eq!(healthy.cmd(&["GET", &key]), Reply::bulk(&value));
            n += 1;
        }
    });
    let mut pipeline = Vec::new();
    for i in 0..1000 {
        let key = format!("vanish:{}", i % 100);
        pipeline.extend_from_slice(&encode(&["SET", &key, "x"]));
        pipeline.extend_from_slice(&encode(&["GET", &key]));
    }
    for _ in 0..20 {
        let mut c = Client::connect(&addr);
        c.send_raw(&pipeline);
        c.close();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(
        healthy_thread.join().is_ok(),
        "a concurrent client saw a wrong reply"
    );
    setup.proxy.assert_alive();
    let mut fresh = setup.client();
    for i in 0..100 {
        let key = format!("vanish:{i}");
        assert_eq!(
            fresh.cmd(&["SET", &key, &format!("fresh {i}")]),
            Reply::ok()
        );
        assert_eq!(fresh.cmd(&["GET", &key]), Reply::bulk(format!("fresh {i}")));
    }
}

#[test]
fn a_backend_closing_idle_connections_is_transparent() {
    // Redis closes idle clients after its `timeout`; CLIENT KILL does the same at once. A
    // request arriving as the proxy learns of the close goes to a fresh connection.
    let setup = Setup::new(1, &[]);
    let mut c = setup.client();
    assert_eq!(c.cmd(&["SET", "idle", "still here"]), Reply::ok());
    let mut backend = setup.shards[0].client();
    for round in 0..20 {
        let killed = backend.cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
        assert!(
            matches!(killed, Reply::Int(n) if n >= 1),
            "round {round}: {killed:?}"
        );
        assert_eq!(
            c.cmd(&["GET", "idle"]),
            Reply::bulk("still here"),
            "round {round}"
        );
    }
}
