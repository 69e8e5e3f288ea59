//! redis-py applications, unchanged, through Keyway: `tests/clients/redis_py_apps.py` drives
//! redis-py's `Lock`, transactions, `scan_iter`, `blpop` and `pubsub()` against a pool of 3 real
//! redis-servers, in RESP2 and in RESP3, and checks every reply itself. Each test runs one part
//! of the script, so that each names the Keyway feature it needs. `scripts/test.sh` installs
//! redis-py 5 (`pip install 'redis>=5,<6'`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// Runs the `part` of `redis_py_apps.py` through a 3-shard pool (ketama, `hash_tag: "{}"`),
/// once per protocol; fails with the script's output unless every run passed.
fn run_part(part: &str) -> Setup {
    let python = python_with_redis();
    let setup = Setup::new(3, &[("distribution", "ketama"), ("hash_tag", "\"{}\"")]);
    let port = setup.proxy.addr().rsplit(':').next().unwrap().to_string();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/redis_py_apps.py");
    for protocol in ["2", "3"] {
        let out = Command::new(&python)
            .arg(&script)
            .args(["127.0.0.1", &port, protocol, part])
            .env("KEEP_KEYS", "1")
            .output()
            .expect("run python3");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("apps OK"),
            "redis_py_apps.py {part} (protocol {protocol}) failed:\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    setup
}

#[test]
fn redis_py_lock_acquires_extends_and_releases_through_its_scripts() {
    run_part("lock");
}

#[test]
fn redis_py_transaction_pipeline_and_watch_conflict() {
    run_part("transaction");
}

#[test]
fn redis_py_scan_iter_returns_all_1000_keys_of_three_shards() {
    let setup = run_part("scan");
    // Kept by the script (KEEP_KEYS): 1,000 per protocol, on every shard.
    setup.assert_keys_on_every_shard(b":pyscan:", 2000);
}

#[test]
fn redis_py_blpop_is_woken_by_a_push_from_another_connection() {
    run_part("blpop");
}

#[test]
fn redis_py_pubsub_receives_confirmations_and_messages_in_order() {
    run_part("pubsub");
}
