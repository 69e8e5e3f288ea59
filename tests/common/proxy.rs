//! The proxy under test (keyway or nutcracker, same YAML), config text helpers, and the usual
//! fixtures: backends plus a proxy in front of them.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    Keyway,
    Nutcracker,
}

impl ProxyKind {
    /// The proxy the suites test: Keyway, or nutcracker with `KEYWAY_ITEST_PROXY=nutcracker`.
    pub fn under_test() -> ProxyKind {
        match std::env::var("KEYWAY_ITEST_PROXY").as_deref() {
            Ok("nutcracker") => ProxyKind::Nutcracker,
            _ => ProxyKind::Keyway,
        }
    }
}

/// Log verbosity passed as `-v`: quiet by default, `KEYWAY_ITEST_VERBOSE=N` to debug.
fn verbosity() -> String {
    std::env::var("KEYWAY_ITEST_VERBOSE").unwrap_or_else(|_| "4".to_string())
}

/// A running proxy process; SIGTERM then SIGKILL on drop. Its stderr is printed if the test fails.
pub struct Proxy {
    child: Option<Child>,
    kind: ProxyKind,
    listen: String,
    stats_port: u16,
    admin_port: u16,
    dir: TempDir,
}

impl Proxy {
    /// Writes `yaml` to a temp dir and starts `kind` on it; ready once the first pool's `listen`
    /// address answers a PING. Prefer [`Proxy::start_on_free_port`], which survives port races.
    pub fn start(kind: ProxyKind, yaml: &str) -> Proxy {
        Proxy::try_start(kind, yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `kind` on `yaml_of(listen_port)`, retrying on another port if the process exits
    /// at start (another process may have taken the port between `free_port` and bind).
    pub fn start_on_free_port(kind: ProxyKind, yaml_of: impl Fn(u16) -> String) -> Proxy {
        Proxy::start_probed_on_free_port(kind, yaml_of, answers_ping)
    }

    /// [`Proxy::start_on_free_port`] for a first pool with `tls`: ready once it accepts TCP.
    pub fn start_tls_on_free_port(yaml_of: impl Fn(u16) -> String) -> Proxy {
        Proxy::start_probed_on_free_port(ProxyKind::Keyway, yaml_of, accepts_tcp)
    }

    /// [`Proxy::start_on_free_port`] with `probe` telling when the listen address is ready.
    fn start_probed_on_free_port(
        kind: ProxyKind,
        yaml_of: impl Fn(u16) -> String,
        probe: fn(&str) -> bool,
    ) -> Proxy {
        let mut errors = Vec::new();
        for _ in 0..3 {
            match Proxy::try_start_probed(kind, &yaml_of(free_port()), probe) {
                Ok(p) => return p,
                Err(e) => errors.push(e),
            }
        }
        panic!("{kind:?} failed to start 3 times:\n{}", errors.join("\n"));
    }

    pub fn try_start(kind: ProxyKind, yaml: &str) -> Result<Proxy, String> {
        Proxy::try_start_probed(kind, yaml, answers_ping)
    }

    /// Starts `kind` on `yaml`; ready once `probe` succeeds on the first pool's address.
    fn try_start_probed(
        kind: ProxyKind,
        yaml: &str,
        probe: fn(&str) -> bool,
    ) -> Result<Proxy, String> {
        let stats_port = free_port();
        let admin_port = free_port();
        let args: Vec<String> = match kind {
            ProxyKind::Keyway => vec![
                "-s".into(),
                stats_port.to_string(),
                "-v".into(),
                verbosity(),
                "--threads".into(),
                "2".into(),
                "--admin".into(),
                format!("127.0.0.1:{admin_port}"),
            ],
            ProxyKind::Nutcracker => vec![
                "-s".into(),
                stats_port.to_string(),
                "-a".into(),
                "127.0.0.1".into(),
                "-v".into(),
                verbosity(),
            ],
        };
        Proxy::spawn(
            kind,
            TempDir::new("proxy"),
            yaml,
            &args,
            probe,
            stats_port,
            admin_port,
        )
    }

    /// Starts keyway on `yaml` (written to `dir`/nutcracker.yml) with `-c` and exactly `args`:
    /// no stats or admin flags of the harness, as an operator would type them. Ready once the
    /// first pool answers a PING. [`Proxy::stats_port`] and [`Proxy::admin_port`] are 0.
    pub fn try_start_keyway_with(
        dir: TempDir,
        yaml: &str,
        args: &[String],
    ) -> Result<Proxy, String> {
        Proxy::spawn(ProxyKind::Keyway, dir, yaml, args, answers_ping, 0, 0)
    }

    fn spawn(
        kind: ProxyKind,
        dir: TempDir,
        yaml: &str,
        args: &[String],
        probe: fn(&str) -> bool,
        stats_port: u16,
        admin_port: u16,
    ) -> Result<Proxy, String> {
        let conf = dir.path().join("nutcracker.yml");
        fs::write(&conf, yaml).expect("write config");
        let listen = yaml
            .lines()
            .find_map(|l| l.trim().strip_prefix("listen:"))
            .map(|l| l.trim().trim_matches('"').to_string())
            .expect("the YAML has a `listen:` line");
        let mut all = vec!["-c".to_string(), conf.display().to_string()];
        all.extend_from_slice(args);
        let described = format!("config:\n{yaml}");
        Proxy::launch(
            kind, dir, listen, &all, probe, stats_port, admin_port, &described,
        )
    }

    /// Starts keyway with exactly `args` and no config file of the harness (an instance that
    /// reads its config from `--config-store`); ready once `listen` answers a PING.
    pub fn try_start_keyway_at(
        dir: TempDir,
        listen: &str,
        args: &[String],
    ) -> Result<Proxy, String> {
        Proxy::launch(
            ProxyKind::Keyway,
            dir,
            listen.to_string(),
            args,
            answers_ping,
            0,
            0,
            "",
        )
    }

    #[allow(clippy::too_many_arguments)] // one private constructor behind the public ones
    fn launch(
        kind: ProxyKind,
        dir: TempDir,
        listen: String,
        args: &[String],
        probe: fn(&str) -> bool,
        stats_port: u16,
        admin_port: u16,
        described: &str,
    ) -> Result<Proxy, String> {
        let stderr = File::create(dir.path().join("stderr.log")).expect("stderr log file");
        let mut cmd = match kind {
            ProxyKind::Keyway => Command::new(keyway_bin()),
            ProxyKind::Nutcracker => Command::new(nutcracker_bin()),
        };
        cmd.args(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(stderr.try_clone().expect("clone fd")))
            .stderr(Stdio::from(stderr));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {kind:?}: {e}"));
        let mut proxy = Proxy {
            child: Some(child),
            kind,
            listen,
            stats_port,
            admin_port,
            dir,
        };
        let addr = proxy.listen.clone();
        let ready = wait_until(START_TIMEOUT, || !proxy.is_alive() || probe(&addr));
        if ready && proxy.is_alive() {
            Ok(proxy)
        } else {
            Err(format!(
                "{kind:?} {args:?} did not become ready on {addr} within {START_TIMEOUT:?}; {described}\noutput:\n{}",
                proxy.stderr()
            ))
        }
    }

    /// The proxy's temp dir: its config (`nutcracker.yml`) and output (`stderr.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn kind(&self) -> ProxyKind {
        self.kind
    }

    /// The first pool's listen address.
    pub fn addr(&self) -> &str {
        &self.listen
    }

    pub fn stats_port(&self) -> u16 {
        self.stats_port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("proxy running").id()
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.listen)
    }

    pub fn is_alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// Runs the redis-py `script` (`python3 -c`, given host, port and protocol as arguments)
    /// against the proxy; fails the test with its output unless it succeeds. Its stdout.
    pub fn run_redis_py(&self, script: &str, protocol: &str) -> String {
        let port = self
            .addr()
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string();
        let out = Command::new(python_with_redis())
            .args(["-c", script, "127.0.0.1", &port, protocol])
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "redis-py script (protocol {protocol}) failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Dedicated connections leased now, over every backend
    /// (`keyway_backend_dedicated_connections`).
    pub fn leased(&self) -> i64 {
        self.metric("keyway_backend_dedicated_connections", "") as i64
    }

    /// The sum of the samples of metric `name` (a histogram's `name_sum`, say) whose labels
    /// contain `labels`, from `/metrics`.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        let (status, body) = http(self.admin_port(), "GET", "/metrics");
        assert_eq!(status, 200);
        body.lines()
            .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(labels))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Everything the proxy wrote to stdout/stderr so far.
    pub fn stderr(&self) -> String {
        tail(&self.dir.path().join("stderr.log"), 16 * 1024)
    }

    /// Waits up to `limit` for the process to exit; its exit status, or `None` if still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let mut status = None;
        wait_until(limit, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// Asserts the process has not exited.
    pub fn assert_alive(&mut self) {
        assert!(
            self.is_alive(),
            "{:?} exited; stderr:\n{}",
            self.kind,
            self.stderr()
        );
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "---- {:?} on {} output ----\n{}\n---- end ----",
                self.kind,
                self.listen,
                self.stderr()
            );
        }
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status();
                let exited = wait_until(Duration::from_secs(5), || {
                    !matches!(child.try_wait(), Ok(None))
                });
                if !exited {
                    let _ = child.kill();
                }
            }
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Config text
// ---------------------------------------------------------------------------------------------

/// A `servers:` line: `127.0.0.1:PORT:WEIGHT [name]`.
pub fn server_line(server: &RedisServer, weight: u32, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("127.0.0.1:{}:{weight} {n}", server.port()),
        None => format!("127.0.0.1:{}:{weight}", server.port()),
    }
}

/// One Redis pool named `alpha` listening on `listen_port`, with `options` as `key: value` lines
/// (values verbatim, so quote them yourself: `("hash_tag", "\"{}\"")`).
pub fn pool_yaml(listen_port: u16, servers: &[String], options: &[(&str, &str)]) -> String {
    let mut y = format!("alpha:\n  listen: 127.0.0.1:{listen_port}\n  redis: true\n");
    for (k, v) in options {
        y.push_str(&format!("  {k}: {v}\n"));
    }
    y.push_str("  servers:\n");
    for s in servers {
        y.push_str(&format!("   - {s}\n"));
    }
    y
}

/// Backends plus the proxy under test in front of them: the usual fixture.
pub struct Setup {
    pub proxy: Proxy,
    pub shards: Vec<RedisServer>,
}

impl Setup {
    /// `n` backends named s0..s{n-1}, weight 1, `timeout: 5000`, plus `options`.
    pub fn new(n: usize, options: &[(&str, &str)]) -> Setup {
        Setup::with_kind(ProxyKind::under_test(), n, options)
    }

    pub fn with_kind(kind: ProxyKind, n: usize, options: &[(&str, &str)]) -> Setup {
        let shards = start_redis_servers(n);
        let lines: Vec<String> = shards
            .iter()
            .enumerate()
            .map(|(i, s)| server_line(s, 1, Some(&format!("s{i}"))))
            .collect();
        let mut opts: Vec<(&str, &str)> = vec![];
        if !options.iter().any(|(k, _)| *k == "timeout") {
            opts.push(("timeout", "5000"));
        }
        opts.extend_from_slice(options);
        let proxy = Proxy::start_on_free_port(kind, |port| pool_yaml(port, &lines, &opts));
        Setup { proxy, shards }
    }

    pub fn client(&self) -> Client {
        self.proxy.client()
    }

    /// Indexes of the backends holding `key` (checked directly on each backend).
    pub fn shards_holding(&self, key: &[u8]) -> Vec<usize> {
        self.shards
            .iter()
            .enumerate()
            .filter(|(_, s)| s.client().cmd(&[b"EXISTS".as_slice(), key]) == Reply::Int(1))
            .map(|(i, _)| i)
            .collect()
    }

    /// The single backend holding `key`; fails if it is on none or several.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        let holding = self.shards_holding(key);
        assert_eq!(
            holding.len(),
            1,
            "key {:?} should be on exactly one backend, is on {holding:?}",
            show(key)
        );
        holding[0]
    }

    /// Asserts that the backends hold `total` keys containing `marker`, some on every one.
    pub fn assert_keys_on_every_shard(&self, marker: &[u8], total: usize) {
        let per_shard: Vec<usize> = self
            .shards
            .iter()
            .map(|s| {
                s.keys()
                    .iter()
                    .filter(|k| k.windows(marker.len()).any(|w| w == marker))
                    .count()
            })
            .collect();
        assert_eq!(
            per_shard.iter().sum::<usize>(),
            total,
            "keys per shard: {per_shard:?}"
        );
        assert!(
            per_shard.iter().all(|n| *n > 0),
            "keys per shard: {per_shard:?}"
        );
    }

    /// Writes `count` fresh keys `{prefix}:N` through the proxy and groups them by backend.
    pub fn keys_by_shard(&self, prefix: &str, count: usize) -> Vec<Vec<Vec<u8>>> {
        let mut c = self.client();
        let keys: Vec<Vec<u8>> = (0..count)
            .map(|i| format!("{prefix}:{i}").into_bytes())
            .collect();
        let cmds: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| encode(&[b"SET".as_slice(), k, b"1"]))
            .collect();
        for r in c.pipeline(&cmds) {
            assert_eq!(r, Reply::ok());
        }
        let mut by_shard = vec![Vec::new(); self.shards.len()];
        for (i, s) in self.shards.iter().enumerate() {
            let held = s.keys();
            by_shard[i] = keys.iter().filter(|k| held.contains(*k)).cloned().collect();
        }
        assert_eq!(
            by_shard.iter().map(Vec::len).sum::<usize>(),
            count,
            "every key lands on one backend"
        );
        by_shard
    }
}

/// One memcached pool named `alpha` listening on `listen_port` (no `redis:` line: memcached
/// is nutcracker's default), with `options` as `key: value` lines.
pub fn memcache_pool_yaml(
    listen_port: u16,
    servers: &[String],
    options: &[(&str, &str)],
) -> String {
    let mut y = format!("alpha:\n  listen: 127.0.0.1:{listen_port}\n");
    for (k, v) in options {
        y.push_str(&format!("  {k}: {v}\n"));
    }
    y.push_str("  servers:\n");
    for s in servers {
        y.push_str(&format!("   - {s}\n"));
    }
    y
}

impl Proxy {
    /// [`Proxy::start_on_free_port`] for a config whose first pool is a memcached pool: ready
    /// once its `listen` address answers `version`.
    pub fn start_memcache_on_free_port(kind: ProxyKind, yaml_of: impl Fn(u16) -> String) -> Proxy {
        Proxy::start_probed_on_free_port(kind, yaml_of, answers_version)
    }

    /// [`Proxy::try_start`] for a memcached pool (the readiness probe is `version`).
    pub fn try_start_memcache(kind: ProxyKind, yaml: &str) -> Result<Proxy, String> {
        Proxy::try_start_probed(kind, yaml, answers_version)
    }

    /// A memcached-protocol connection to the first pool.
    pub fn mc_client(&self) -> McClient {
        McClient::connect(&self.listen)
    }
}

/// memcached backends plus the proxy under test in front of them.
pub struct McSetup {
    pub proxy: Proxy,
    pub shards: Vec<MemcachedServer>,
}

impl McSetup {
    /// `n` memcached backends named s0..s{n-1}, weight 1, `timeout: 5000`, plus `options`.
    pub fn new(n: usize, options: &[(&str, &str)]) -> McSetup {
        let shards = start_memcached_servers(n);
        let lines: Vec<String> = shards
            .iter()
            .enumerate()
            .map(|(i, s)| s.server_line(1, Some(&format!("s{i}"))))
            .collect();
        let mut opts: Vec<(&str, &str)> = vec![];
        if !options.iter().any(|(k, _)| *k == "timeout") {
            opts.push(("timeout", "5000"));
        }
        opts.extend_from_slice(options);
        let proxy = Proxy::start_memcache_on_free_port(ProxyKind::under_test(), |port| {
            memcache_pool_yaml(port, &lines, &opts)
        });
        McSetup { proxy, shards }
    }

    pub fn client(&self) -> McClient {
        self.proxy.mc_client()
    }

    /// Indexes of the backends holding `key` (checked directly on each backend).
    pub fn shards_holding(&self, key: &[u8]) -> Vec<usize> {
        self.shards
            .iter()
            .enumerate()
            .filter(|(_, s)| s.get(key).is_some())
            .map(|(i, _)| i)
            .collect()
    }

    /// The single backend holding `key`; fails if it is on none or several.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        let holding = self.shards_holding(key);
        assert_eq!(
            holding.len(),
            1,
            "key {:?} should be on exactly one backend, is on {holding:?}",
            show(key)
        );
        holding[0]
    }
}
