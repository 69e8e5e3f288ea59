//! The admin API's guard, through the binary as an operator runs it: `--admin-token FILE`
//! (every endpoint but `/healthz` wants the bearer token, the secret never logged) and the
//! refusal to serve it open on a non-loopback address.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::*;

const TOKEN: &str = "kw-test-token-7f3a9c21d4e8b605";

fn yaml(redis: &RedisServer) -> String {
    pool_yaml(free_port(), &[server_line(redis, 1, Some("s0"))], &[])
}

/// Runs keyway with `args` to its exit (bounded); whether it succeeded, and its output.
fn exit_of(dir: &TempDir, args: &[&str]) -> (bool, String) {
    let (status, output) = run_to_exit(Command::new(keyway_bin()).args(args), dir);
    (status.success(), output)
}

#[test]
fn the_token_guards_metrics_pools_and_reload_but_not_healthz() {
    let redis = RedisServer::start();
    let dir = TempDir::new("admin-token");
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let admin = free_port();
    let args: Vec<String> = [
        "-s",
        &free_port().to_string(),
        "-a",
        "127.0.0.1",
        "--admin",
        &format!("127.0.0.1:{admin}"),
        "--admin-token",
        token_file.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let proxy = Proxy::try_start_keyway_with(dir, &yaml(&redis), &args).unwrap();
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    for (method, path) in [("GET", "/metrics"), ("GET", "/pools"), ("POST", "/reload")] {
        assert_eq!(
            http(admin, method, path).0,
            401,
            "{method} {path} without a token"
        );
        let wrong = "Authorization: Bearer kw-test-token-7f3a9c21d4e8b606\r\n";
        assert_eq!(
            http_with(admin, method, path, wrong).0,
            401,
            "{path}, wrong token"
        );
        assert_eq!(
            http_with(admin, method, path, &bearer).0,
            200,
            "{path}, the token"
        );
    }
    let (status, metrics) = http_with(admin, "GET", "/metrics", &bearer);
    assert_eq!(status, 200);
    assert!(metrics.contains("keyway_requests_total"), "{metrics}");
    assert_eq!(http(admin, "GET", "/healthz"), (200, "ok".to_string()));
    let mut client = proxy.client();
    assert_eq!(client.cmd(&["SET", "k", "v"]), Reply::ok());
    let log = proxy.stderr();
    assert!(
        log.contains("admin: request without a valid token refused"),
        "{log}"
    );
    assert!(log.contains("admin: reload requested"), "{log}");
    assert!(!log.contains(TOKEN), "the token reached the log:\n{log}");
}

#[test]
fn a_non_loopback_admin_without_a_token_is_refused_at_start() {
    let redis = RedisServer::start();
    let dir = TempDir::new("admin-exposed");
    let conf = dir.path().join("nutcracker.yml");
    std::fs::write(&conf, yaml(&redis)).unwrap();
    let conf = conf.to_str().unwrap();
    let stats = free_port().to_string();
    let admin = format!("0.0.0.0:{}", free_port());
    let (ok, output) = exit_of(
        &dir,
        &[
            "-c",
            conf,
            "-s",
            &stats,
            "-a",
            "127.0.0.1",
            "--admin",
            &admin,
        ],
    );
    assert!(!ok, "started with an open admin on {admin}:\n{output}");
    assert!(
        output.contains(&format!(
            "refusing to serve the admin API on {admin}, which is not a loopback address"
        )) && output.contains("--admin-token FILE"),
        "unclear refusal:\n{output}"
    );
    let missing = dir.path().join("no-such.token");
    let (ok, output) = exit_of(
        &dir,
        &[
            "-c",
            conf,
            "-s",
            &stats,
            "-a",
            "127.0.0.1",
            "--admin-token",
            missing.to_str().unwrap(),
        ],
    );
    assert!(!ok, "started with a missing token file:\n{output}");
    assert!(
        output.contains(&format!("admin token file {}", missing.display())),
        "the missing file is not named:\n{output}"
    );
}
