//! `redis-sentinel` processes monitoring test masters.

use std::fs::{self};
use std::net::TcpStream;
use std::process::Command;

use super::*;

/// A `redis-sentinel` on a free loopback port monitoring some masters (quorum 2, down after 1 s,
/// failover timeout 5 s), killed by PID on drop. Its config file lives in its own temp dir, which
/// Sentinel rewrites as it learns replicas, other Sentinels and failovers.
pub struct SentinelServer {
    daemon: Daemon,
    port: u16,
    dir: TempDir,
}

impl SentinelServer {
    /// Starts a Sentinel monitoring each `(master name, port on 127.0.0.1)`.
    pub fn start(masters: &[(&str, u16)]) -> SentinelServer {
        SentinelServer::start_with(masters, &[])
    }

    /// Starts with extra config lines, e.g. `&["requirepass secret"]`.
    pub fn start_with(masters: &[(&str, u16)], extra: &[&str]) -> SentinelServer {
        let bin = redis_sentinel_bin();
        let mut last_log = String::new();
        for _ in 0..3 {
            let mut sentinel = SentinelServer {
                daemon: Daemon::default(),
                port: free_port(),
                dir: TempDir::new("sentinel"),
            };
            let mut conf = format!(
                "port {}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {}\n",
                sentinel.port,
                sentinel.dir.path().display()
            );
            for (name, port) in masters {
                conf.push_str(&format!(
                    "sentinel monitor {name} 127.0.0.1 {port} 2\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 5000\n\
                     sentinel parallel-syncs {name} 1\n"
                ));
            }
            for line in extra {
                conf.push_str(line);
                conf.push('\n');
            }
            let conf_path = sentinel.dir.path().join("sentinel.conf");
            fs::write(&conf_path, conf).expect("write sentinel.conf");
            let log_path = sentinel.dir.path().join("sentinel.log");
            let addr = sentinel.addr();
            // With `requirepass`, PING answers -NOAUTH: being connectable is enough then.
            let ready = || TcpStream::connect(&addr).is_ok();
            if sentinel
                .daemon
                .start(Command::new(&bin).arg(&conf_path), &log_path, ready)
            {
                return sentinel;
            }
            last_log = tail(&log_path, 2000);
        }
        panic!("redis-sentinel did not start after 3 attempts; log:\n{last_log}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.addr())
    }

    /// `SENTINEL get-master-addr-by-name`: where this Sentinel thinks `master` is.
    pub fn master_addr(&self, master: &str) -> Option<String> {
        match self
            .client()
            .cmd(&["SENTINEL", "get-master-addr-by-name", master])
        {
            Reply::Array(Some(items)) => match &items[..] {
                [Reply::Bulk(Some(ip)), Reply::Bulk(Some(port))] => Some(format!(
                    "{}:{}",
                    String::from_utf8_lossy(ip),
                    String::from_utf8_lossy(port)
                )),
                other => panic!("get-master-addr-by-name {master}: {other:?}"),
            },
            _ => None,
        }
    }

    /// How many replicas and other Sentinels this Sentinel knows for `master`.
    pub fn known(&self, master: &str) -> (usize, usize) {
        let mut c = self.client();
        let count = |reply: Reply| match reply {
            Reply::Array(Some(items)) => items.len(),
            _ => 0,
        };
        (
            count(c.cmd(&["SENTINEL", "replicas", master])),
            count(c.cmd(&["SENTINEL", "sentinels", master])),
        )
    }

    pub fn log(&self) -> String {
        tail(&self.dir.path().join("sentinel.log"), 4000)
    }
}
