//! The binary as operators run it with nutcracker's habits: several instances on one host,
//! `-d` (also combined as `-dc FILE`), pid files, and the signals nutcracker's operators send.
//!
//! This file is the only test binary that starts Keyway without `--admin`, so the default admin
//! port 22223 is contended only here (and by whatever else runs on the host, which the
//! assertions tolerate).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::*;

/// The default admin port, taken only when free.
const DEFAULT_ADMIN_PORT: u16 = 22223;

/// A pool on a free port in front of `redis`.
fn yaml(port: u16, redis: &RedisServer) -> String {
    pool_yaml(port, &[server_line(redis, 1, Some("s0"))], &[])
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Starts keyway with `-c` and `extra`, retrying on fresh ports if another process took one.
fn start(redis: &RedisServer, extra: impl Fn(u16) -> Vec<String>) -> Proxy {
    let mut errors = Vec::new();
    for _ in 0..3 {
        let stats = free_port();
        match Proxy::try_start_keyway_with(
            TempDir::new("operator"),
            &yaml(free_port(), redis),
            &extra(stats),
        ) {
            Ok(proxy) => return proxy,
            Err(e) => errors.push(e),
        }
    }
    panic!("keyway failed to start 3 times:\n{}", errors.join("\n"));
}

fn assert_serves(proxy: &Proxy, key: &str) {
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", key, "v"]), Reply::ok(), "{}", proxy.stderr());
    assert_eq!(c.cmd(&["GET", key]), Reply::bulk("v"));
}

#[test]
fn two_instances_with_nutcracker_flags_share_a_host() {
    let redis = RedisServer::start();
    // nutcracker's flags only: -c (by the harness), -s, -a, -v. No --admin.
    let nutcracker_flags =
        |stats: u16| args(&["-s", &stats.to_string(), "-a", "127.0.0.1", "-v", "5"]);
    let mut first = start(&redis, nutcracker_flags);
    let mut second = start(&redis, nutcracker_flags);
    assert_serves(&first, "first");
    assert_serves(&second, "second");
    first.assert_alive();
    second.assert_alive();
    let with_admin = [&first, &second]
        .iter()
        .filter(|p| listening_ports(p.pid()).contains(&DEFAULT_ADMIN_PORT))
        .count();
    assert!(
        with_admin <= 1,
        "both cannot hold port {DEFAULT_ADMIN_PORT}"
    );
    // The one that could not take the default port said so, and carries on.
    for proxy in [&first, &second] {
        if !listening_ports(proxy.pid()).contains(&DEFAULT_ADMIN_PORT) {
            assert!(
                proxy.stderr().contains("running without it"),
                "no warning about the admin port:\n{}",
                proxy.stderr()
            );
        }
    }
}

#[test]
fn explicit_admin_on_a_taken_port_fails_clearly() {
    let redis = RedisServer::start();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = TempDir::new("admin-taken");
    let conf = dir.path().join("nutcracker.yml");
    std::fs::write(&conf, yaml(free_port(), &redis)).unwrap();
    let (status, output) = run_to_exit(
        Command::new(keyway_bin())
            .arg("-c")
            .arg(&conf)
            .args(["-s", &free_port().to_string(), "-a", "127.0.0.1"])
            .args(["--admin", &format!("127.0.0.1:{port}")]),
        &dir,
    );
    assert!(
        !status.success(),
        "started on a taken admin port:\n{output}"
    );
    assert!(
        output.contains(&format!(
            "cannot listen on 127.0.0.1:{port} for the admin server"
        )),
        "unclear error:\n{output}"
    );
}

#[test]
fn admin_off_serves_no_admin() {
    let redis = RedisServer::start();
    let proxy = start(&redis, |stats| {
        args(&[
            "-s",
            &stats.to_string(),
            "-a",
            "127.0.0.1",
            "--admin",
            "off",
        ])
    });
    assert_serves(&proxy, "k");
    let listen: u16 = proxy.addr().rsplit(':').next().unwrap().parse().unwrap();
    let stats = proxy
        .stderr()
        .lines()
        .find(|l| l.contains("stats server"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.trim().parse::<u16>().ok())
        .expect("the stats server's address is logged");
    let mut expected = vec![listen, stats];
    expected.sort_unstable();
    assert_eq!(listening_ports(proxy.pid()), expected, "{}", proxy.stderr());
}

/// The pid in `path`, once the file holds one.
fn read_pid(path: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn is_running(pid: u32) -> bool {
    // A zombie still has /proc/PID; a reaped daemon (re-parented to init) has none.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

/// Kills a daemon by the pid it wrote, on drop, so a failing test leaves nothing behind.
struct DaemonGuard(u32);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if is_running(self.0) {
            signal(self.0, "KILL");
        }
    }
}

/// `keyway <daemon_flags> <conf>`: the parent must exit 0 once the daemon listens, and the
/// daemon must be a single serving process (not the parent, in its own session) that wrote
/// its own pid and removes the file on SIGTERM.
fn daemon_starts_once(daemon_flags: &[&str]) {
    let redis = RedisServer::start();
    let dir = TempDir::new("daemon");
    let conf = dir.path().join("nutcracker.yml");
    let listen = free_port();
    std::fs::write(&conf, yaml(listen, &redis)).unwrap();
    let pid_file = dir.path().join("keyway.pid");
    let mut cmd = Command::new(keyway_bin());
    cmd.args(daemon_flags)
        .arg(&conf)
        .arg("-p")
        .arg(&pid_file)
        .args([
            "-s",
            &free_port().to_string(),
            "-a",
            "127.0.0.1",
            "--admin",
            "off",
            "-o",
        ]);
    cmd.arg(dir.path().join("keyway.log"));
    let (status, output) = run_to_exit(&mut cmd, &dir);
    let pid = read_pid(&pid_file);
    let _guard = pid.map(DaemonGuard);
    assert!(
        status.success(),
        "{daemon_flags:?}: parent failed:\n{output}"
    );
    // The parent returned only once the daemon listened: no waiting needed.
    let pid = pid.expect("the daemon wrote its pid file before the parent exited");
    assert!(
        is_running(pid),
        "pid {pid} from the pid file is not running"
    );
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
    // stat fields after the name: state ppid pgrp session ...; setsid makes it a session leader.
    assert_eq!(
        fields[3],
        pid.to_string(),
        "daemon is not in its own session: {stat}"
    );
    let mut client = Client::connect(&format!("127.0.0.1:{listen}"));
    assert_eq!(client.cmd(&["PING"]), Reply::Simple("PONG".into()));
    drop(client);
    // Exactly one keyway serves: no child daemonized again (the -dc bug respawned forever).
    let keyways: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&*conf.to_string_lossy()))
                .unwrap_or(false)
        })
        .collect();
    assert_eq!(
        keyways,
        vec![pid],
        "processes started on {}",
        conf.display()
    );
    signal(pid, "TERM");
    assert!(
        wait_until(Duration::from_secs(20), || !is_running(pid)),
        "daemon ignored SIGTERM"
    );
    assert!(!pid_file.exists(), "pid file left behind after SIGTERM");
}

#[test]
fn combined_dc_starts_exactly_one_daemon() {
    daemon_starts_once(&["-dc"]);
}

#[test]
fn separate_d_and_c_start_exactly_one_daemon() {
    daemon_starts_once(&["-d", "-c"]);
}

#[test]
fn daemon_parent_reports_a_bad_config_and_fails() {
    let dir = TempDir::new("daemon-bad");
    let conf = dir.path().join("nutcracker.yml");
    std::fs::write(&conf, "alpha:\n  listen: 127.0.0.1:1\n  hash: nope\n").unwrap();
    let (status, output) = run_to_exit(Command::new(keyway_bin()).arg("-dc").arg(&conf), &dir);
    assert!(!status.success(), "a bad config started:\n{output}");
    assert!(
        output.contains("hash"),
        "the error is not reported:\n{output}"
    );
}

#[test]
fn daemon_parent_reports_a_bind_error_and_fails() {
    // Bind errors happen in the daemon, after the parent validated the config: the parent must
    // still report them.
    let redis = RedisServer::start();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = TempDir::new("daemon-bind");
    let conf = dir.path().join("nutcracker.yml");
    std::fs::write(&conf, yaml(port, &redis)).unwrap();
    let (status, output) = run_to_exit(
        Command::new(keyway_bin()).arg("-dc").arg(&conf).args([
            "-s",
            &free_port().to_string(),
            "--admin",
            "off",
        ]),
        &dir,
    );
    assert!(!status.success(), "started on a taken port:\n{output}");
    assert!(
        output.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "the daemon's error is not reported:\n{output}"
    );
}

/// keyway with `-o DIR/keyway.log -p DIR/keyway.pid` and `extra`, no admin server.
fn start_logging(redis: &RedisServer, extra: &[&str]) -> Proxy {
    let extra: Vec<String> = args(extra);
    let dir = TempDir::new("signals");
    let log = dir.path().join("keyway.log");
    let pid = dir.path().join("keyway.pid");
    let mut flags = args(&["-s", &free_port().to_string(), "-a", "127.0.0.1"]);
    flags.extend(args(&["--admin", "off", "-o"]));
    flags.push(log.display().to_string());
    flags.push("-p".into());
    flags.push(pid.display().to_string());
    flags.extend(extra);
    Proxy::try_start_keyway_with(dir, &yaml(free_port(), redis), &flags)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn log_of(proxy: &Proxy) -> String {
    std::fs::read_to_string(proxy.dir().join("keyway.log")).unwrap_or_default()
}

#[test]
fn usr1_and_usr2_leave_the_proxy_serving() {
    let redis = RedisServer::start();
    let mut proxy = start_logging(&redis, &["-v", "7"]);
    signal(proxy.pid(), "USR1");
    signal(proxy.pid(), "USR2");
    assert!(
        wait_until(Duration::from_secs(20), || {
            let log = log_of(&proxy);
            log.contains("SIGUSR1 ignored") && log.contains("SIGUSR2 ignored")
        }),
        "signals not seen:\n{}",
        log_of(&proxy)
    );
    proxy.assert_alive();
    assert_serves(&proxy, "after-usr");
    assert!(proxy.dir().join("keyway.pid").exists());
}

#[test]
fn sighup_reopens_a_log_file_that_was_rotated_away() {
    let redis = RedisServer::start();
    let mut proxy = start_logging(&redis, &["-v", "5"]);
    let log = proxy.dir().join("keyway.log");
    let rotated = proxy.dir().join("keyway.log.1");
    assert!(wait_until(Duration::from_secs(20), || log_of(&proxy)
        .contains("keyway started")));
    std::fs::rename(&log, &rotated).unwrap();
    signal(proxy.pid(), "HUP");
    // The reload after the reopen logs its report: it must land in a new file at the path.
    assert!(
        wait_until(Duration::from_secs(20), || log_of(&proxy)
            .contains("SIGHUP")),
        "no new log file with the SIGHUP line; rotated file:\n{}",
        std::fs::read_to_string(&rotated).unwrap_or_default()
    );
    assert!(!log_of(&proxy).contains("keyway started"), "not a new file");
    proxy.assert_alive();
    assert_serves(&proxy, "after-hup");
}

#[test]
fn sigttin_raises_and_sigttou_lowers_the_log_level() {
    let redis = RedisServer::start();
    let mut proxy = start_logging(&redis, &["-v", "5"]);
    assert!(wait_until(Duration::from_secs(20), || log_of(&proxy)
        .contains("keyway started")));
    assert_serves(&proxy, "at-info");
    // Level 5 is info: nothing at debug so far (SIGUSR1's line is debug).
    assert!(!log_of(&proxy).contains("DEBUG"), "{}", log_of(&proxy));
    signal(proxy.pid(), "TTIN");
    assert!(wait_until(Duration::from_secs(20), || log_of(&proxy)
        .contains("log level to 6")));
    signal(proxy.pid(), "USR1");
    assert!(
        wait_until(Duration::from_secs(20), || log_of(&proxy)
            .contains("SIGUSR1 ignored")),
        "level 6 logs no debug line:\n{}",
        log_of(&proxy)
    );
    signal(proxy.pid(), "TTOU");
    assert!(wait_until(Duration::from_secs(20), || log_of(&proxy)
        .contains("log level to 5")));
    proxy.assert_alive();
}

#[test]
fn sigterm_removes_the_pid_file() {
    let redis = RedisServer::start();
    let mut proxy = start_logging(&redis, &[]);
    let pid_file = proxy.dir().join("keyway.pid");
    assert_eq!(read_pid(&pid_file), Some(proxy.pid()));
    signal(proxy.pid(), "TERM");
    let status = proxy
        .wait_exit(Duration::from_secs(20))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(!pid_file.exists(), "pid file left behind");
}
