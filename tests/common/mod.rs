//! Integration-test harness: real `redis-server`, `nutcracker` and `keyway` processes on free
//! loopback ports, stopped by PID when their guard drops (even when a test panics), and a tiny
//! blocking RESP client that can talk to the proxy and to a backend alike.
//!
//! The proxy under test is `keyway` unless `KEYWAY_ITEST_PROXY=nutcracker` is set, which runs
//! every suite against the program Keyway replaces (tests of Keyway-only behaviour then fail).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub mod live;

/// How long a client waits for any one reply before the test fails: a hang bound, not a timing.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a process may take to accept connections after being started.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The built `keyway` binary.
pub fn keyway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keyway"))
}

/// Finds `name` on `PATH` or in the sbin directories Debian installs daemons into; fails the test
/// naming the Debian package to install when it is missing (never skips).
pub fn find_binary(name: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/sbin",
        "/usr/local/sbin",
        "/sbin",
        "/usr/bin",
        "/usr/local/bin",
    ] {
        dirs.push(PathBuf::from(d));
    }
    for d in dirs {
        let candidate = d.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("`{name}` not found on PATH or in /usr/sbin: install the Debian package `{package}` (apt-get install {package})");
}

pub fn redis_server_bin() -> PathBuf {
    find_binary("redis-server", "redis-server")
}

/// Runs `redis-cli` with `args`; fails the test (showing its output) unless it succeeds.
/// Its standard output.
pub fn run_redis_cli(args: &[&str]) -> String {
    let out = Command::new(redis_cli_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run redis-cli {args:?}: {e}"));
    assert!(
        out.status.success(),
        "redis-cli {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn redis_cli_bin() -> PathBuf {
    find_binary("redis-cli", "redis-tools")
}

pub fn nutcracker_bin() -> PathBuf {
    find_binary("nutcracker", "nutcracker")
}

// ---------------------------------------------------------------------------------------------
// Ports, temp dirs, polling
// ---------------------------------------------------------------------------------------------

fn handed_out_ports() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A loopback port nothing listens on right now, never handed out twice in this test binary.
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        if handed_out_ports().lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// A directory unique to one test process, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "keyway-itest-{prefix}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

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

/// True when something at `addr` answers a PING with any reply (+PONG, or -NOAUTH...).
fn answers_ping(addr: &str) -> bool {
    let Ok(stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut client = Client::from_stream(stream);
    if client.try_send_raw(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    client.try_read_reply().is_ok()
}

fn tail(path: &Path, max: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

// ---------------------------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------------------------

/// A backend process a test started (redis-server, memcached, redis-sentinel): killed by PID
/// and reaped on drop.
#[derive(Default)]
struct Daemon(Option<Child>);

impl Daemon {
    /// Runs `cmd` with stdout and stderr appended to `log` and waits until `ready`; false (and
    /// nothing left running) if the process exits first or never gets ready.
    fn start(&mut self, cmd: &mut Command, log: &Path, ready: impl Fn() -> bool) -> bool {
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

    fn is_running(&self) -> bool {
        self.0.is_some()
    }

    fn pid(&self) -> u32 {
        self.0.as_ref().expect("process is running").id()
    }

    /// Freezes the process (SIGSTOP): connections are accepted by the kernel, nothing answers.
    fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// SIGKILL and reap: the port is closed afterwards.
    fn kill(&mut self) {
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

// ---------------------------------------------------------------------------------------------
// Redis Cluster
// ---------------------------------------------------------------------------------------------

/// One node as `CLUSTER NODES` describes it.
#[derive(Clone, Debug)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    /// The master's id, for a replica.
    pub master_id: Option<String>,
    pub slots: Vec<(u16, u16)>,
}

/// A real Redis Cluster on loopback: `masters` masters with `replicas` replicas each, made by
/// `redis-cli --cluster create`, node timeout 1 s; every node killed by PID on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        let count = masters * (1 + replicas);
        let handles: Vec<_> = (0..count)
            .map(|_| {
                thread::spawn(|| {
                    RedisServer::start_with(&[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        // A replica may take over however long its link was down: tests
                        // kill masters right after the cluster forms.
                        "--cluster-replica-validity-factor",
                        "0",
                    ])
                })
            })
            .collect();
        let nodes: Vec<RedisServer> = handles
            .into_iter()
            .map(|h| h.join().expect("cluster node start thread"))
            .collect();
        let addrs: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
        let replicas = replicas.to_string();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
        run_redis_cli(&args);
        let cluster = RedisCluster { nodes };
        cluster.wait_converged(masters, count);
        // Until gossip settles, the view may still list a fresh replica as a slot-less master.
        let settled = wait_until(Duration::from_secs(30), || {
            cluster.view().iter().filter(|n| n.master).count() == masters
        });
        assert!(settled, "roles never settled: {:?}", cluster.view());
        cluster
    }

    /// Waits until every live node says the cluster is ok, knows `count` nodes, and sees
    /// `masters` masters serving slots, with every replica attached and in sync.
    pub fn wait_converged(&self, masters: usize, count: usize) {
        let ok = wait_until(Duration::from_secs(60), || {
            self.live().all(|node| {
                let info = node_info(node.port(), &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{count}"))
                    && info.contains(&format!("cluster_size:{masters}"))
            }) && self
                .view()
                .iter()
                .filter(|n| !n.master && !n.failed)
                .all(|n| {
                    n.master_id.is_some()
                        && node_info(n.port, &["INFO", "replication"])
                            .contains("master_link_status:up")
                })
        });
        assert!(ok, "the cluster did not converge: {:?}", self.view());
    }

    fn live(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    /// `CLUSTER NODES` as seen by the first live node.
    pub fn view(&self) -> Vec<ClusterNode> {
        let node = self.live().next().expect("a live node");
        parse_cluster_nodes(&node_info(node.port(), &["CLUSTER", "NODES"]))
    }

    /// The node listening on `port`.
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .expect("a node on that port")
    }

    /// The index in `nodes` of the node on `port`.
    pub fn index(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .expect("a node on that port")
    }

    /// The master serving `slot`, as the first live node sees it.
    pub fn master_of_slot(&self, slot: u16) -> ClusterNode {
        self.view()
            .into_iter()
            .find(|n| n.master && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// `CLUSTER KEYSLOT key` on a live node.
    pub fn keyslot(&self, key: &str) -> u16 {
        let node = self.live().next().expect("a live node");
        match node.client().cmd(&["CLUSTER", "KEYSLOT", key]) {
            Reply::Int(n) => n as u16,
            other => panic!("CLUSTER KEYSLOT -> {other:?}"),
        }
    }

    /// The `cluster:` lines of a pool config: every node as a seed.
    pub fn seeds_yaml(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("   - {}\n", n.addr()))
            .collect()
    }

    /// Empties every live master.
    pub fn flushall(&self) {
        for node in self.view().iter().filter(|n| n.master && !n.failed) {
            if let Some(server) = self
                .nodes
                .iter()
                .find(|s| s.port() == node.port && s.is_running())
            {
                server.flushall();
            }
        }
    }

    /// Kills the node on `port` (SIGKILL, by PID).
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port() == port) {
            node.kill();
        }
    }
}

/// One command's reply on a direct connection, as text (bulk or simple string).
pub fn node_info(port: u16, args: &[&str]) -> String {
    match Client::connect(&format!("127.0.0.1:{port}")).cmd(args) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        Reply::Simple(s) => s,
        other => panic!("{args:?} -> {other:?}"),
    }
}

/// Parses `CLUSTER NODES` output.
pub fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let addr = fields.get(1)?.split('@').next()?;
            let port = addr.rsplit(':').next()?.parse().ok()?;
            let flags = fields.get(2)?;
            let slots = fields
                .iter()
                .skip(8)
                .filter(|f| !f.starts_with('['))
                .filter_map(|f| match f.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => f.parse().ok().map(|s| (s, s)),
                })
                .collect();
            Some(ClusterNode {
                id: fields.first()?.to_string(),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                master_id: fields.get(3).filter(|m| **m != "-").map(|m| m.to_string()),
                slots,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Proxies: keyway or nutcracker, same YAML
// ---------------------------------------------------------------------------------------------

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
        let dir = TempDir::new("proxy");
        let conf = dir.path().join("nutcracker.yml");
        fs::write(&conf, yaml).expect("write config");
        let listen = yaml
            .lines()
            .find_map(|l| l.trim().strip_prefix("listen:"))
            .map(|l| l.trim().trim_matches('"').to_string())
            .expect("the YAML has a `listen:` line");
        let stats_port = free_port();
        let admin_port = free_port();
        let stderr = File::create(dir.path().join("stderr.log")).expect("stderr log file");
        let mut cmd = match kind {
            ProxyKind::Keyway => {
                let mut c = Command::new(keyway_bin());
                c.arg("-c").arg(&conf);
                c.args([
                    "-s",
                    &stats_port.to_string(),
                    "-v",
                    &verbosity(),
                    "--threads",
                    "2",
                ]);
                c.args(["--admin", &format!("127.0.0.1:{admin_port}")]);
                c
            }
            ProxyKind::Nutcracker => {
                let mut c = Command::new(nutcracker_bin());
                c.arg("-c").arg(&conf);
                c.args([
                    "-s",
                    &stats_port.to_string(),
                    "-a",
                    "127.0.0.1",
                    "-v",
                    &verbosity(),
                ]);
                c
            }
        };
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
                "{kind:?} did not become ready on {addr} within {START_TIMEOUT:?}; config:\n{yaml}\noutput:\n{}",
                proxy.stderr()
            ))
        }
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

// ---------------------------------------------------------------------------------------------
// RESP client
// ---------------------------------------------------------------------------------------------

/// A RESP2 reply.
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    pub fn bulk(b: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(Some(b.as_ref().to_vec()))
    }

    pub fn nil() -> Reply {
        Reply::Bulk(None)
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The error text (without `-`), or panics.
    pub fn error_text(&self) -> &str {
        match self {
            Reply::Error(e) => e,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    pub fn int(&self) -> i64 {
        match self {
            Reply::Int(i) => *i,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }

    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) => items,
            other => panic!("expected an array reply, got {other:?}"),
        }
    }

    /// The wire form of this reply.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }

    fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            Reply::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
            Reply::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(b)) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(Some(items)) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for i in items {
                    i.write_to(out);
                }
            }
        }
    }

    /// Same reply with arrays sorted recursively: for replies whose order Redis leaves undefined.
    pub fn sorted(&self) -> Reply {
        match self {
            Reply::Array(Some(items)) => {
                let mut items: Vec<Reply> = items.iter().map(Reply::sorted).collect();
                items.sort_by_key(Reply::to_bytes);
                Reply::Array(Some(items))
            }
            other => other.clone(),
        }
    }
}

/// Printable form of binary data.
pub fn show(b: &[u8]) -> String {
    if b.len() > 200 {
        return format!("{}...({} bytes)", show(&b[..200]), b.len());
    }
    b.escape_ascii().to_string()
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Simple(s) => write!(f, "+{s}"),
            Reply::Error(s) => write!(f, "-{s}"),
            Reply::Int(i) => write!(f, ":{i}"),
            Reply::Bulk(None) => write!(f, "(nil)"),
            Reply::Bulk(Some(b)) => write!(f, "\"{}\"", show(b)),
            Reply::Array(None) => write!(f, "(nil array)"),
            Reply::Array(Some(items)) => f.debug_list().entries(items).finish(),
        }
    }
}

/// A multibulk request.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Why a reply could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed (EOF or reset): an acceptable answer to garbage.
    Closed,
    /// No complete reply within the read timeout: a hang.
    Timeout,
    /// Bytes that are not RESP.
    Protocol(String),
    Io(io::Error),
}

fn parse_line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = &buf[from..];
    let nl = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..nl], from + nl + 2))
}

fn parse_int(line: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad integer {:?}", show(line)))
}

/// Parses one reply at `from`: Ok(None) if incomplete, else the reply and the end offset.
pub fn parse_reply(buf: &[u8], from: usize) -> Result<Option<(Reply, usize)>, String> {
    if from >= buf.len() {
        return Ok(None);
    }
    let Some((line, next)) = parse_line(buf, from + 1) else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    match buf[from] {
        b'+' => Ok(Some((Reply::Simple(text()), next))),
        b'-' => Ok(Some((Reply::Error(text()), next))),
        b':' => Ok(Some((Reply::Int(parse_int(line)?), next))),
        b'$' => {
            let len = parse_int(line)?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), next)));
            }
            let end = next + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err("bulk string not followed by CRLF".into());
            }
            Ok(Some((Reply::Bulk(Some(buf[next..end].to_vec())), end + 2)))
        }
        b'*' => {
            let len = parse_int(line)?;
            if len < 0 {
                return Ok(Some((Reply::Array(None), next)));
            }
            let mut items = Vec::with_capacity(len.min(1024) as usize);
            let mut pos = next;
            for _ in 0..len {
                match parse_reply(buf, pos)? {
                    Some((r, p)) => {
                        items.push(r);
                        pos = p;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), pos)))
        }
        other => Err(format!("unexpected reply type byte {:?}", show(&[other]))),
    }
}

/// A blocking RESP client with a 10 s read timeout; panics (failing the test) on hangs.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    last_raw: Option<Vec<u8>>,
}

impl Client {
    pub fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("set_write_timeout");
        let _ = stream.set_nodelay(true);
        Client {
            stream,
            buf: Vec::new(),
            pos: 0,
            last_raw: None,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream
            .set_read_timeout(Some(t))
            .expect("set_read_timeout");
    }

    /// Sends one command and reads its reply.
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        self.send(args);
        match self.try_read_reply() {
            Ok(r) => r,
            Err(e) => {
                let shown: Vec<String> = args.iter().map(|a| show(a.as_ref())).collect();
                panic!("no reply to {shown:?}: {e:?}")
            }
        }
    }

    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        self.send_raw(&encode(args));
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes)
            .unwrap_or_else(|e| panic!("write {} bytes: {e}", bytes.len()));
    }

    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    pub fn read_reply(&mut self) -> Reply {
        self.try_read_reply()
            .unwrap_or_else(|e| panic!("reading a reply: {e:?}"))
    }

    /// The exact bytes of the next reply.
    pub fn read_reply_raw(&mut self) -> Vec<u8> {
        let _ = self.read_reply();
        self.last_raw
            .take()
            .expect("read_reply stores the raw bytes")
    }

    pub fn try_read_reply(&mut self) -> Result<Reply, ReadError> {
        loop {
            match parse_reply(&self.buf, self.pos) {
                Ok(Some((reply, end))) => {
                    self.last_raw = Some(self.buf[self.pos..end].to_vec());
                    self.pos = end;
                    if self.pos == self.buf.len() {
                        self.buf.clear();
                        self.pos = 0;
                    }
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(ReadError::Protocol(e)),
            }
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ReadError::Timeout)
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return Err(ReadError::Closed)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// Sends all `requests` in one write from a helper thread while reading their replies here,
    /// so that neither side's socket buffer can deadlock a big pipeline.
    pub fn pipeline(&mut self, requests: &[Vec<u8>]) -> Vec<Reply> {
        let all: Vec<u8> = requests.concat();
        let mut writer = self.stream.try_clone().expect("clone stream");
        let handle = thread::spawn(move || writer.write_all(&all).and_then(|_| writer.flush()));
        let mut replies = Vec::with_capacity(requests.len());
        for i in 0..requests.len() {
            match self.try_read_reply() {
                Ok(r) => replies.push(r),
                Err(e) => panic!("pipeline: reply {i} of {} missing: {e:?}", requests.len()),
            }
        }
        handle
            .join()
            .expect("writer thread")
            .expect("pipeline write");
        replies
    }

    /// Half-closes and drops the connection.
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

// ---------------------------------------------------------------------------------------------
// memcached
// ---------------------------------------------------------------------------------------------

pub fn memcached_bin() -> PathBuf {
    find_binary("memcached", "memcached")
}

/// True when the process is root: memcached then refuses to start without `-u`.
fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// True when something at `addr` answers `version\r\n` with a complete line (memcached, or a
/// memcached pool of either proxy).
fn answers_version(addr: &str) -> bool {
    let Ok(stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut client = McClient::from_stream(stream);
    if client.try_send(b"version\r\n").is_err() {
        return false;
    }
    client.try_read_reply().is_ok()
}

/// A `memcached` on a loopback address, killed by PID on drop.
pub struct MemcachedServer {
    daemon: Daemon,
    host: String,
    port: u16,
    extra: Vec<String>,
    dir: TempDir,
}

impl MemcachedServer {
    /// On 127.0.0.1 and a free port.
    pub fn start() -> MemcachedServer {
        MemcachedServer::start_with(&[])
    }

    /// With extra `memcached` options, e.g. `&["-I", "2m"]`.
    pub fn start_with(extra: &[&str]) -> MemcachedServer {
        let mut last_log = String::new();
        for _ in 0..3 {
            match MemcachedServer::try_start_at("127.0.0.1", free_port(), extra) {
                Ok(server) => return server,
                // most likely the port was taken between free_port() and bind: try another
                Err(log) => last_log = log,
            }
        }
        panic!("memcached did not start after 3 attempts; output:\n{last_log}");
    }

    /// On exactly `host:port` (bound to that address only, not 0.0.0.0); the output on failure.
    pub fn try_start_at(host: &str, port: u16, extra: &[&str]) -> Result<MemcachedServer, String> {
        let mut server = MemcachedServer {
            daemon: Daemon::default(),
            host: host.to_string(),
            port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir: TempDir::new("memcached"),
        };
        if server.spawn() {
            Ok(server)
        } else {
            Err(tail(&server.log_path(), 2000))
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("memcached.log")
    }

    /// Spawns on `host:port` and waits for `version`; false if it exits or never answers.
    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new(memcached_bin());
        cmd.args(["-p", &self.port.to_string(), "-l", &self.host, "-U", "0"]);
        if running_as_root() {
            cmd.args(["-u", "nobody"]);
        }
        cmd.args(&self.extra);
        let addr = self.addr();
        let log = self.log_path();
        self.daemon.start(&mut cmd, &log, || answers_version(&addr))
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// A direct connection to this backend.
    pub fn client(&self) -> McClient {
        McClient::connect(&self.addr())
    }

    /// A `servers:` line: `host:port:weight [name]`.
    pub fn server_line(&self, weight: u32, name: Option<&str>) -> String {
        match name {
            Some(n) => format!("{}:{weight} {n}", self.addr()),
            None => format!("{}:{weight}", self.addr()),
        }
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

    /// Starts a new (empty) memcached on the same address after `kill`.
    pub fn restart(&mut self) {
        self.kill();
        let ok = wait_until(START_TIMEOUT, || self.spawn());
        assert!(
            ok,
            "memcached did not restart on {}; output:\n{}",
            self.addr(),
            tail(&self.log_path(), 2000)
        );
    }

    /// The value of `key`, read directly from this backend.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let reply = self
            .client()
            .request(&[b"get ".as_slice(), key, b"\r\n"].concat());
        let values = parse_values(&reply);
        assert!(values.len() <= 1, "get {} -> {}", show(key), show(&reply));
        values.into_iter().next().map(|(_, value)| value)
    }

    /// Which of `keys` this backend holds (multi-key `get`s of 100 keys, pipelined).
    pub fn holding(&self, keys: &[Vec<u8>]) -> HashSet<Vec<u8>> {
        self.values(keys).into_iter().map(|(key, _)| key).collect()
    }

    /// The `(key, value)` pairs of `keys` this backend holds, in `keys` order.
    pub fn values(&self, keys: &[Vec<u8>]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let requests: Vec<Vec<u8>> = keys
            .chunks(100)
            .map(|chunk| {
                let mut line = b"get".to_vec();
                for k in chunk {
                    line.push(b' ');
                    line.extend_from_slice(k);
                }
                line.extend_from_slice(b"\r\n");
                line
            })
            .collect();
        let replies = self.client().pipeline(&requests);
        replies.iter().flat_map(|r| parse_values(r)).collect()
    }

    pub fn flush_all(&self) {
        assert_eq!(self.client().request(b"flush_all\r\n"), b"OK\r\n");
    }
}

/// Starts `n` memcached servers on 127.0.0.1 concurrently.
pub fn start_memcached_servers(n: usize) -> Vec<MemcachedServer> {
    let handles: Vec<_> = (0..n)
        .map(|_| thread::spawn(MemcachedServer::start))
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("memcached start thread"))
        .collect()
}

fn handed_out_hosts() -> &'static Mutex<HashSet<u8>> {
    static HOSTS: OnceLock<Mutex<HashSet<u8>>> = OnceLock::new();
    HOSTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A memcached on `127.0.0.X:11211` (Linux routes all of 127/8 to loopback), on an address
/// whose port 11211 is free, never handed out twice in this test binary. Exercises
/// nutcracker's rule that an unnamed server on port 11211 is named by its host alone.
pub fn start_memcached_on_default_port() -> MemcachedServer {
    let mut errors = Vec::new();
    // a per-process starting point, so that concurrent test runs rarely try the same address
    let first = 2 + (std::process::id() % 200) as u8;
    for offset in 0..250u16 {
        let x = 2 + ((u16::from(first) - 2 + offset) % 252) as u8;
        if !handed_out_hosts().lock().unwrap().insert(x) {
            continue;
        }
        let host = format!("127.0.0.{x}");
        if TcpListener::bind((host.as_str(), 11211)).is_err() {
            continue;
        }
        match MemcachedServer::try_start_at(&host, 11211, &[]) {
            Ok(server) => return server,
            Err(log) => errors.push(format!("{host}: {log}")),
        }
        if errors.len() >= 3 {
            break;
        }
    }
    panic!(
        "no memcached could start on 127.0.0.X:11211:\n{}",
        errors.join("\n")
    );
}

/// The `(key, value)` pairs of a `VALUE ... END` reply, in order.
pub fn parse_values(reply: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some((line, next)) = parse_line(reply, pos) {
        if line == b"END" {
            assert_eq!(next, reply.len(), "bytes after END in {}", show(reply));
            return out;
        }
        let tokens: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
        assert!(
            tokens.len() >= 4 && tokens[0] == b"VALUE",
            "not a retrieval reply: {}",
            show(reply)
        );
        let len: usize = parse_int(tokens[3]).expect("VALUE length") as usize;
        out.push((tokens[1].to_vec(), reply[next..next + len].to_vec()));
        pos = next + len + 2;
    }
    panic!("retrieval reply without END: {}", show(reply));
}

/// The end offset of one complete memcached reply starting at `from`, `None` if incomplete:
/// a line; `VALUE` blocks up to `END`; or a meta `VA <len>` line and its data block.
pub fn mc_reply_end(buf: &[u8], from: usize) -> Result<Option<usize>, String> {
    let mut pos = from;
    loop {
        let Some((line, next)) = parse_line(buf, pos) else {
            return Ok(None);
        };
        let tokens: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
        let data = match tokens[0] {
            b"VALUE" if tokens.len() >= 4 => Some(parse_int(tokens[3])?),
            b"VA" if tokens.len() >= 2 => Some(parse_int(tokens[1])?),
            _ => None,
        };
        let end = match data {
            Some(len) => {
                let end = next + len as usize + 2;
                if buf.len() < end {
                    return Ok(None);
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return Err(format!("data block not followed by CRLF: {}", show(buf)));
                }
                end
            }
            None => next,
        };
        if tokens[0] == b"VALUE" {
            pos = end;
            continue;
        }
        return Ok(Some(end));
    }
}

/// A blocking memcached ASCII client with a 10 s read timeout; replies are raw bytes.
pub struct McClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl McClient {
    pub fn connect(addr: &str) -> McClient {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        McClient::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> McClient {
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("set_write_timeout");
        let _ = stream.set_nodelay(true);
        McClient {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream
            .set_read_timeout(Some(t))
            .expect("set_read_timeout");
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("write {} bytes: {e}", bytes.len()));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends one request and reads its one reply.
    pub fn request(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.send(bytes);
        self.try_read_reply()
            .unwrap_or_else(|e| panic!("no reply to {}: {e:?}", show(bytes)))
    }

    pub fn read_reply(&mut self) -> Vec<u8> {
        self.try_read_reply()
            .unwrap_or_else(|e| panic!("reading a reply: {e:?}"))
    }

    /// The exact bytes of the next complete reply.
    pub fn try_read_reply(&mut self) -> Result<Vec<u8>, ReadError> {
        loop {
            match mc_reply_end(&self.buf, 0) {
                Ok(Some(end)) => return Ok(self.buf.drain(..end).collect()),
                Ok(None) => {}
                Err(e) => return Err(ReadError::Protocol(e)),
            }
            self.fill()?;
        }
    }

    /// Reads more bytes into the buffer.
    fn fill(&mut self) -> Result<(), ReadError> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            return match self.stream.read(&mut chunk) {
                Ok(0) => Err(ReadError::Closed),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    Ok(())
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    Err(ReadError::Timeout)
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                    ) =>
                {
                    Err(ReadError::Closed)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(ReadError::Io(e)),
            };
        }
    }

    /// Replies up to and including the next `MN\r\n`, excluding it: send requests followed by
    /// `mn\r\n` to collect however many replies they produce (none for `noreply`).
    pub fn read_until_mn(&mut self) -> Vec<Vec<u8>> {
        let mut replies = Vec::new();
        loop {
            let reply = self
                .try_read_reply()
                .unwrap_or_else(|e| panic!("reading replies up to MN, after {replies:?}: {e:?}"));
            if reply == b"MN\r\n" {
                return replies;
            }
            replies.push(reply);
        }
    }

    /// Sends `bytes` followed by `mn\r\n` in one write (from a helper thread, so that a big
    /// pipeline cannot deadlock on socket buffers) and returns the replies before `MN`.
    pub fn exchange(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let all = [bytes, b"mn\r\n"].concat();
        let mut writer = self.stream.try_clone().expect("clone stream");
        let handle = thread::spawn(move || writer.write_all(&all).and_then(|_| writer.flush()));
        let replies = self.read_until_mn();
        handle
            .join()
            .expect("writer thread")
            .expect("exchange write");
        replies
    }

    /// Sends all `requests` in one write from a helper thread while reading one reply each.
    pub fn pipeline(&mut self, requests: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let all: Vec<u8> = requests.concat();
        let mut writer = self.stream.try_clone().expect("clone stream");
        let handle = thread::spawn(move || writer.write_all(&all).and_then(|_| writer.flush()));
        let mut replies = Vec::with_capacity(requests.len());
        for i in 0..requests.len() {
            match self.try_read_reply() {
                Ok(r) => replies.push(r),
                Err(e) => panic!("pipeline: reply {i} of {} missing: {e:?}", requests.len()),
            }
        }
        handle
            .join()
            .expect("writer thread")
            .expect("pipeline write");
        replies
    }

    /// Everything the peer sends until it closes, or `Err(Timeout)` if it neither closes nor
    /// sends within the read timeout.
    pub fn read_to_close(&mut self) -> Result<Vec<u8>, ReadError> {
        loop {
            match self.fill() {
                Ok(()) => {}
                Err(ReadError::Closed) => return Ok(std::mem::take(&mut self.buf)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Bytes received but not yet returned as a reply.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
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

// ---------------------------------------------------------------------------------------------
// redis-sentinel
// ---------------------------------------------------------------------------------------------

pub fn redis_sentinel_bin() -> PathBuf {
    find_binary("redis-sentinel", "redis-sentinel")
}

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

/// One HTTP/1.1 request to Keyway's admin port: the status code and the body.
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the admin port");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("read timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: keyway\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
