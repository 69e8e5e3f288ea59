//! Real Node.js client libraries, unchanged, through Keyway: each script in `tests/clients/`
//! drives one library against a pool of real redis-servers and checks every reply itself.
//! `scripts/test.sh` installs the libraries (versions pinned in `tests/clients/package-lock.json`)
//! into `target/client-libs`; `KEYWAY_CLIENT_LIBS` points elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// Where the libraries are installed (`node_modules`), failing with how to install them.
fn node_modules() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("KEYWAY_CLIENT_LIBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/client-libs"))
        .join("node_modules");
    assert!(
        dir.join("ioredis").is_dir() && dir.join("redis").is_dir() && dir.join("bullmq").is_dir(),
        "client libraries missing in {}: run scripts/test.sh, or `cp tests/clients/package*.json \
         target/client-libs/ && npm ci --prefix target/client-libs`",
        dir.display()
    );
    dir
}

/// Runs `tests/clients/<script>` against `proxy`; fails with its output unless it printed
/// `<what> OK` and exited 0.
fn run_script(proxy: &Proxy, script: &str, what: &str) {
    run_script_with(proxy, script, what, &[]);
}

/// As `run_script`, with `PARTS` set for scripts that check several features (only those run).
fn run_script_parts(proxy: &Proxy, script: &str, what: &str, parts: &str) {
    run_script_with(proxy, script, what, &[("PARTS", parts)]);
}

/// As `run_script`, with `envs` in the script's environment.
fn run_script_with(proxy: &Proxy, script: &str, what: &str, envs: &[(&str, &str)]) {
    let node = find_binary("node", "nodejs");
    let port = proxy.addr().rsplit(':').next().unwrap().to_string();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let mut command = Command::new(node);
    command
        .arg(&path)
        .args(["127.0.0.1", &port])
        .env("NODE_PATH", node_modules());
    command.envs(envs.iter().copied());
    let out = command.output().expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("{what} OK")),
        "{script} failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ioredis_connects_and_serves_strings_multi_key_commands_and_pipelines() {
    let setup = Setup::new(3, &[]);
    run_script(&setup.proxy, "ioredis_basics.js", "ioredis basics");
}

#[test]
fn ioredis_connects_through_a_tls_listener() {
    let certs = Certs::generate();
    let backend = RedisServer::start();
    let tls = format!(
        "  tls:\n    cert: {}\n    key: {}\n",
        certs.file("server.pem"),
        certs.file("server.key")
    );
    let line = server_line(&backend, 1, None);
    let proxy = Proxy::start_tls_on_free_port(|port| {
        format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n{tls}  servers:\n   - {line}\n")
    });
    let ca = certs.file("ca.pem");
    run_script_with(&proxy, "ioredis_tls.js", "ioredis tls", &[("CA", &ca)]);
}

#[test]
fn node_redis_connects_and_serves_strings_and_multi_key_commands() {
    let setup = Setup::new(3, &[]);
    run_script(&setup.proxy, "node_redis_basics.js", "node-redis basics");
}

/// The pool the application tests use: 3 shards, ketama, `hash_tag: "{}"` (BullMQ's and the
/// transactions' keys share a tag, so they live on one shard).
fn tagged_pool() -> Setup {
    Setup::new(3, &[("distribution", "ketama"), ("hash_tag", "\"{}\"")])
}

#[test]
fn bullmq_processes_500_delayed_and_prioritised_jobs_exactly_once_with_a_hash_tagged_prefix() {
    let setup = tagged_pool();
    run_script(&setup.proxy, "bullmq_jobs.js", "bullmq jobs");
}

#[test]
fn node_redis_subscriber_on_a_duplicate_receives_every_message_once_in_order() {
    let setup = tagged_pool();
    run_script_parts(
        &setup.proxy,
        "node_redis_apps.js",
        "node-redis apps",
        "pubsub",
    );
}

#[test]
fn node_redis_scan_iterator_returns_all_1000_keys_of_three_shards() {
    let setup = tagged_pool();
    let envs = [("PARTS", "scan"), ("KEEP_KEYS", "1")];
    run_script_with(&setup.proxy, "node_redis_apps.js", "node-redis apps", &envs);
    setup.assert_keys_on_every_shard(b":nrscan:", 1000);
}

#[test]
fn node_redis_multi_exec_and_a_watch_conflict() {
    let setup = tagged_pool();
    run_script_parts(
        &setup.proxy,
        "node_redis_apps.js",
        "node-redis apps",
        "transactions",
    );
}

/// `calls` and `failed_calls` of `command` in a backend's `INFO commandstats`.
fn command_calls(server: &RedisServer, command: &str) -> (u64, u64) {
    let Reply::Bulk(Some(text)) = server.client().cmd(&["INFO", "commandstats"]) else {
        panic!("INFO commandstats is no bulk string");
    };
    let text = String::from_utf8(text).unwrap();
    let Some(line) = text
        .lines()
        .find(|l| l.starts_with(&format!("cmdstat_{command}:")))
    else {
        return (0, 0);
    };
    let field = |name: &str| -> u64 {
        line.split([':', ','])
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .map_or(0, |v| v.parse().unwrap())
    };
    (field("calls"), field("failed_calls"))
}

#[test]
fn ioredis_scripts_fall_back_to_eval_on_every_shard_that_never_saw_them() {
    let setup = tagged_pool();
    run_script_parts(&setup.proxy, "ioredis_apps.js", "ioredis apps", "scripts");
    // ioredis sends EVAL once per connection and EVALSHA after; each shard but the first
    // answered NOSCRIPT to an EVALSHA and then got the EVAL ioredis resent.
    let evals: Vec<(u64, u64)> = setup
        .shards
        .iter()
        .map(|s| command_calls(s, "eval"))
        .collect();
    let noscripts: u64 = setup
        .shards
        .iter()
        .map(|s| command_calls(s, "evalsha").1)
        .sum();
    assert!(
        evals.iter().all(|(calls, _)| *calls > 0),
        "EVAL calls per shard: {evals:?} (every shard runs the script)"
    );
    assert!(
        noscripts >= 2,
        "NOSCRIPT answers over the shards: {noscripts} (expected one per shard not first)"
    );
}

#[test]
fn ioredis_subscriber_receives_every_message_once_in_order() {
    let setup = tagged_pool();
    run_script_parts(&setup.proxy, "ioredis_apps.js", "ioredis apps", "pubsub");
}

#[test]
fn ioredis_scan_stream_returns_all_1000_keys_of_three_shards() {
    let setup = tagged_pool();
    let envs = [("PARTS", "scan"), ("KEEP_KEYS", "1")];
    run_script_with(&setup.proxy, "ioredis_apps.js", "ioredis apps", &envs);
    setup.assert_keys_on_every_shard(b":ioscan:", 1000);
}
