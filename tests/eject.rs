//! auto_eject_hosts as fast as nutcracker: a killed backend costs about `server_failure_limit`
//! errors (at most one more per worker thread, while the new shard map reaches every worker),
//! then its keys answer from another backend; restarted, it rejoins after
//! `server_retry_timeout`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Worker threads the harness runs Keyway with.
const THREADS: usize = 2;
const FAILURE_LIMIT: usize = 2;

#[test]
fn a_killed_backend_costs_at_most_failure_limit_plus_threads_errors_then_rejoins() {
    let mut setup = Setup::new(
        3,
        &[
            ("timeout", "500"),
            ("auto_eject_hosts", "true"),
            ("server_failure_limit", "2"),
            ("server_retry_timeout", "3000"),
        ],
    );
    let by_shard = setup.keys_by_shard("eject", 300);
    let victim = (0..by_shard.len())
        .max_by_key(|&i| by_shard[i].len())
        .unwrap();
    let keys: Vec<Vec<u8>> = by_shard[victim].iter().take(20).cloned().collect();
    let mut c = setup.client();
    setup.shards[victim].kill();

    // As fast as one client can: SETs for the dead backend's keys until one is answered.
    let mut errors = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answered = None;
    'sending: while Instant::now() < deadline && errors.len() < 10_000 {
        for key in &keys {
            match c.cmd(&[b"SET".as_slice(), key, b"remapped"]) {
                reply if reply == Reply::ok() => {
                    answered = Some(key.clone());
                    break 'sending;
                }
                reply => errors.push(reply),
            }
        }
    }
    eprintln!(
        "{} errors before the dead backend's keys remapped",
        errors.len()
    );
    let key = answered.expect("the dead backend's keys answer from another backend");
    assert!(
        !errors.is_empty() && errors.len() <= FAILURE_LIMIT + THREADS,
        "{} errors before the remap (at most {}): {:?}",
        errors.len(),
        FAILURE_LIMIT + THREADS,
        &errors[..errors.len().min(5)]
    );
    assert_eq!(c.cmd(&[b"GET".as_slice(), &key]), Reply::bulk("remapped"));
    let holders = setup
        .shards
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            *i != victim && s.client().cmd(&[b"GET".as_slice(), &key]) == Reply::bulk("remapped")
        })
        .count();
    assert_eq!(holders, 1, "the remapped key sits on one live backend");

    // Restarted: past server_retry_timeout it is readmitted and its keys route home.
    setup.shards[victim].restart();
    let home = wait_until(Duration::from_secs(30), || {
        let _ = c.cmd(&[b"SET".as_slice(), &key, b"home"]);
        setup.shards[victim]
            .client()
            .cmd(&[b"GET".as_slice(), &key])
            == Reply::bulk("home")
    });
    assert!(
        home,
        "the restarted backend rejoins after server_retry_timeout"
    );
    setup.proxy.assert_alive();
}
