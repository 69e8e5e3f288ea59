//! A real etcd v3 server (Debian `etcd-server`) on free loopback ports, its data in a temp
//! dir; stopped by PID on drop, and restartable on the same ports and data. `etcdctl`
//! (Debian `etcd-client`) writes and reads keys behind Keyway's back.

use std::process::Command;

use super::*;

/// A single-member etcd cluster.
pub struct Etcd {
    daemon: Daemon,
    client_port: u16,
    peer_port: u16,
    dir: TempDir,
}

impl Etcd {
    /// Starts etcd; ready once `etcdctl endpoint health` says so.
    pub fn start() -> Etcd {
        let mut etcd = Etcd {
            daemon: Daemon::default(),
            client_port: free_port(),
            peer_port: free_port(),
            dir: TempDir::new("etcd"),
        };
        etcd.restart();
        etcd
    }

    /// Starts the stopped server again, same ports and data (a no-op while it runs).
    pub fn restart(&mut self) {
        if self.daemon.is_running() {
            return;
        }
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(find_binary("etcd", "etcd-server"));
        cmd.arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("test={peer}"));
        let log = self.dir.path().join("etcd.log");
        let endpoint = self.endpoint();
        let up = self.daemon.start(&mut cmd, &log, || {
            etcdctl(&endpoint, &["endpoint", "health"]).is_ok()
        });
        assert!(up, "etcd did not start:\n{}", tail(&log, 4096));
    }

    /// Kills the server (SIGKILL, by PID): clients see it gone at once.
    pub fn stop(&mut self) {
        self.daemon.kill();
    }

    /// `127.0.0.1:PORT`, its client address.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `etcd://127.0.0.1:PORT/PREFIX`, for `--config-store`.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}/{prefix}", self.endpoint())
    }

    /// Writes `value` at `key` (bypassing Keyway).
    pub fn put(&self, key: &str, value: &str) {
        etcdctl(&self.endpoint(), &["put", key, value]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Adds user `root` with `password` and turns authentication on: from then on every client
    /// must log in.
    pub fn enable_auth(&self, password: &str) {
        let endpoint = self.endpoint();
        etcdctl(&endpoint, &["user", "add", &format!("root:{password}")])
            .unwrap_or_else(|e| panic!("{e}"));
        etcdctl(&endpoint, &["auth", "enable"]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// The value at `key`, if any.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = etcdctl(&self.endpoint(), &["get", "--print-value-only", key])
            .unwrap_or_else(|e| panic!("{e}"));
        let value = out.strip_suffix('\n').unwrap_or(&out);
        (!value.is_empty()).then(|| value.to_string())
    }
}

/// Runs `etcdctl --endpoints ENDPOINT ARGS...` (API v3); its stdout, or why it failed.
fn etcdctl(endpoint: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(find_binary("etcdctl", "etcd-client"))
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .arg("--command-timeout=2s")
        .args(args)
        .output()
        .map_err(|e| format!("run etcdctl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
