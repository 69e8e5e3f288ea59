//! Processes a test started: signals and memory by PID, log tails, and the guard that kills
//! a backend process by PID on drop.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;

/// Sends a signal by PID with the `kill` program (no libc, no unsafe).
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run `kill` (package procps)");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// Resident memory of a process in KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

pub(crate) fn tail(path: &Path, max: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

/// A backend process a test started (redis-server, memcached, redis-sentinel): killed by PID
/// and reaped on drop.
#[derive(Default)]
pub(crate) struct Daemon(Option<Child>);

impl Daemon {
    /// Runs `cmd` with stdout and stderr appended to `log` and waits until `ready`; false (and
    /// nothing left running) if the process exits first or never gets ready.
    pub(crate) fn start(
        &mut self,
        cmd: &mut Command,
        log: &Path,
        ready: impl Fn() -> bool,
    ) -> bool {
        let file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", log.display()));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("clone log fd")))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let up = wait_until(START_TIMEOUT, || {
            matches!(child.try_wait(), Ok(Some(_))) || ready()
        });
        if up && matches!(child.try_wait(), Ok(None)) {
            self.0 = Some(child);
            true
        } else {
            let _ = child.kill();
            let _ = child.wait();
            false
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.0.as_ref().expect("process is running").id()
    }

    /// Freezes the process (SIGSTOP): connections are accepted by the kernel, nothing answers.
    /// Returns once every thread is stopped: `kill` only queues the signal, and a thread busy
    /// on another core could otherwise still answer a request sent right after.
    pub(crate) fn pause(&self) {
        signal(self.pid(), "STOP");
        let stopped = wait_until(Duration::from_secs(5), || self.threads_stopped(true));
        assert!(stopped, "pid {} did not stop on SIGSTOP", self.pid());
    }

    /// Thaws the process (SIGCONT) and returns once no thread is stopped.
    pub(crate) fn resume(&self) {
        signal(self.pid(), "CONT");
        let running = wait_until(Duration::from_secs(5), || self.threads_stopped(false));
        assert!(running, "pid {} did not continue on SIGCONT", self.pid());
    }

    /// Whether every thread's state in /proc/PID/task/*/stat is `T` (stopped), or, with
    /// `stopped` false, whether none is.
    fn threads_stopped(&self, stopped: bool) -> bool {
        let Ok(tasks) = fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return false;
        };
        tasks.flatten().all(|task| {
            let stat = fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // the state follows the command name, which is in parentheses and may hold spaces
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            (state == Some('T')) == stopped
        })
    }

    /// SIGKILL and reap: the port is closed afterwards.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The TCP ports process `pid` listens on (IPv4 and IPv6), from its socket fds matched against
/// `/proc/PID/net/tcp{,6}`: what it really bound, whatever it logs.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: HashSet<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for row in text.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT, st 0A is LISTEN, the inode is column 9.
            if cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]) {
                if let Some(port) = cols[1].rsplit(':').next() {
                    ports.extend(u16::from_str_radix(port, 16).ok());
                }
            }
        }
    }
    ports.sort_unstable();
    ports
}

/// Runs `cmd` to its exit (bounded: a hang fails the test); its status and combined output.
pub fn run_to_exit(cmd: &mut Command, dir: &TempDir) -> (std::process::ExitStatus, String) {
    let log = dir.path().join("run.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let mut status = None;
    wait_until(std::time::Duration::from_secs(30), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} did not exit within 30 s");
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}
