//! `redis-server` processes on free loopback ports.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::thread;

use super::*;

/// A `redis-server` on a free loopback port, killed by PID on drop.
pub struct RedisServer {
    daemon: Daemon,
    port: u16,
    extra: Vec<String>,
    dir: TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts with extra `redis-server` options, e.g. `&["--requirepass", "secret"]`.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let mut last_log = String::new();
        for _ in 0..3 {
            let mut server = RedisServer {
                daemon: Daemon::default(),
                port: free_port(),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                dir: TempDir::new("redis"),
            };
            if server.spawn() {
                return server;
            }
            // most likely the port was taken between free_port() and bind: try another
            last_log = tail(&server.log_path(), 2000);
        }
        panic!("redis-server did not start after 3 attempts; log:\n{last_log}");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Spawns on `self.port` and waits for PING; false if the process exits or never answers.
    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new(redis_server_bin());
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--daemonize", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(self.dir.path())
        .args(&self.extra);
        let addr = self.addr();
        let log = self.log_path();
        self.daemon.start(&mut cmd, &log, || answers_ping(&addr))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Whether it runs (not killed).
    pub fn is_running(&self) -> bool {
        self.daemon.is_running()
    }

    /// A direct connection to this backend.
    pub fn client(&self) -> Client {
        Client::connect(&self.addr())
    }

    /// Freezes the process (SIGSTOP): connections are accepted by the kernel, nothing answers.
    pub fn pause(&self) {
        self.daemon.pause();
    }

    pub fn resume(&self) {
        self.daemon.resume();
    }

    /// SIGKILL and reap: the port is closed afterwards.
    pub fn kill(&mut self) {
        self.daemon.kill();
    }

    /// Starts a new (empty) redis-server on the same port after `kill`.
    pub fn restart(&mut self) {
        self.kill();
        let ok = wait_until(START_TIMEOUT, || self.spawn());
        assert!(
            ok,
            "redis-server did not restart on port {}; log:\n{}",
            self.port,
            tail(&self.log_path(), 2000)
        );
    }

    /// Every key of db `db` (KEYS *): fine for test-sized data sets.
    pub fn keys_in_db(&self, db: u32) -> HashSet<Vec<u8>> {
        let mut c = self.client();
        if db != 0 {
            assert_eq!(c.cmd(&["SELECT", &db.to_string()]), Reply::ok());
        }
        match c.cmd(&["KEYS", "*"]) {
            Reply::Array(Some(items)) => items
                .into_iter()
                .map(|r| match r {
                    Reply::Bulk(Some(k)) => k,
                    other => panic!("KEYS item {other:?}"),
                })
                .collect(),
            other => panic!("KEYS * -> {other:?}"),
        }
    }

    pub fn keys(&self) -> HashSet<Vec<u8>> {
        self.keys_in_db(0)
    }

    pub fn flushall(&self) {
        assert_eq!(self.client().cmd(&["FLUSHALL"]), Reply::ok());
    }
}

/// Starts `n` redis-servers concurrently.
pub fn start_redis_servers(n: usize) -> Vec<RedisServer> {
    let handles: Vec<_> = (0..n).map(|_| thread::spawn(RedisServer::start)).collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("redis-server start thread"))
        .collect()
}
