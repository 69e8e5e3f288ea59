//! nutcracker.yml → raw values per key (`raw`) → validated, typed [`Config`] (`validate`).
//! Startup, `-t` and reload all go through [`Config::parse`], so the three can never disagree.
//! Every pool key is declared once, in `keys`: parsing, validation, the reload diff and the
//! README's key tables (held to it by a test) all follow that table.

pub(crate) mod keys;
mod raw;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::route::{Distribution, HashFn, ShardSpec};
use crate::security::tls::{BackendTls, ListenTls};

/// A whole config file: its pools, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The pools, in the order the file lists them.
    pub pools: Vec<PoolConfig>,
}

impl Config {
    /// Reads and parses the config file at `path`.
    ///
    /// # Errors
    /// An I/O problem reading the file, or every problem [`Config::parse`] finds.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            Error::from(vec![Problem::Io {
                path: path.to_owned(),
                source,
            }])
        })?;
        Config::parse(&text)
    }

    /// Parses and validates config text; listen hostnames are resolved here, as nutcracker does.
    ///
    /// # Errors
    /// Every problem found (YAML syntax, structure, unknown keys, bad values, duplicates), each
    /// naming its pool and key.
    pub fn parse(text: &str) -> Result<Config, Error> {
        let raw = raw::parse(text).map_err(Error::from)?;
        validate::validate(raw).map_err(Error::from)
    }
}

/// One pool: a listen address, its backends and how keys are spread over them.
///
/// Defaults are nutcracker 0.5's for every key it knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// The pool's name (its key in the file).
    pub name: String,
    /// Where clients connect (`listen`).
    pub listen: Listen,
    /// Key hash function (`hash`, default `fnv1a_64`).
    pub hash: HashFn,
    /// Two bytes delimiting the part of a key that is hashed (`hash_tag`, default none).
    /// Two *bytes*, as nutcracker counts: `"é"` is a valid hash tag to it. Always `{}` under
    /// `distribution: slots`.
    pub hash_tag: Option<[u8; 2]>,
    /// How hashes map to shards (`distribution`, default ketama; Keyway adds `slots`, whose
    /// assignment is each backend's [`BackendConfig::slots`]).
    pub distribution: Distribution,
    /// Per-request timeout (`timeout` in ms). `None` (absent or 0) waits forever, as in
    /// nutcracker, which arms no timer for a timeout of 0.
    pub timeout: Option<Duration>,
    /// Listen backlog (`backlog`, default 512).
    pub backlog: u32,
    /// Maximum client connections, 0 = unlimited (`client_connections`, default 0).
    pub client_connections: u32,
    /// Redis pool when true, memcached pool when false (`redis`, default false).
    pub redis: bool,
    /// TCP keepalive on connections (`tcpkeepalive`, default false).
    pub tcpkeepalive: bool,
    /// SO_REUSEPORT on the listener (`reuseport`, default false; nutcracker after 0.5.0).
    pub reuseport: bool,
    /// Password sent to backends with AUTH, and required from clients (`redis_auth`).
    /// Only allowed on redis pools; never empty.
    pub redis_auth: Option<String>,
    /// Database SELECTed on backend connections (`redis_db`, default 0).
    pub redis_db: u32,
    /// Connect to every backend at start (`preconnect`, default false).
    pub preconnect: bool,
    /// Eject a backend after `server_failure_limit` consecutive failures (`auto_eject_hosts`,
    /// default false).
    pub auto_eject_hosts: bool,
    /// Connections per backend, at least 1 (`server_connections`, default 1).
    pub server_connections: u32,
    /// How long an ejected backend stays out (`server_retry_timeout`, default 30 s).
    pub server_retry_timeout: Duration,
    /// Consecutive failures before ejection (`server_failure_limit`, default 2).
    pub server_failure_limit: u32,
    /// The backends, in nutcracker's order (shorter name first, then bytewise): a backend's
    /// index here is its shard index.
    pub servers: Vec<BackendConfig>,
    /// Keyway's own limits (extension keys).
    pub limits: Limits,
    /// Where the backends' addresses come from when Redis Sentinel manages them (extension keys
    /// `sentinels`, `sentinel_auth`); `None` for a pool of fixed addresses.
    pub sentinel: Option<SentinelConfig>,
    /// Where the backends come from when they are a Redis Cluster's nodes (extension keys
    /// `cluster`, `read_from`); `None` otherwise. A cluster pool's `servers` are the nodes
    /// Keyway learnt from the cluster (empty until it asks), and it routes by slot.
    pub cluster: Option<ClusterConfig>,
    /// Whether clients may empty the pool: `FLUSHDB` and `FLUSHALL`, sent to every shard
    /// (`allow_flush`, default false: they are refused, naming the key). Redis pools only.
    pub allow_flush: bool,
    /// What to do when a reload changes the pool's servers (`migration`): `Some` reads a
    /// miss on a key's new owner through from its old owner for the window. `None` (the
    /// default, or `read_through: false`): keys that move start empty on their new owner.
    pub migration: Option<Migration>,
    /// The client-side ACL users (`users`: `ACL SETUSER` lines), compiled; `None` keeps
    /// nutcracker's meaning of `redis_auth` (one password, every command) and checks nothing.
    pub users: Option<std::sync::Arc<crate::acl::Users>>,
    /// TLS on the listener (`tls`): clients must handshake before their first request.
    pub tls: Option<ListenTls>,
    /// TLS on every connection to the pool's backends, Sentinels and cluster nodes
    /// (`server_tls`), verifying them.
    pub server_tls: Option<BackendTls>,
}

/// `migration: { read_through: true, window: 30m, copy: false }`: for `window` after a reload
/// changes the pool's servers, a read that misses on a key's new owner is retried on the
/// owner the previous servers gave it; with `copy`, a value found there is also written to
/// the new owner (with its TTL). Writes and deletes meanwhile also delete the old copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// How long the old owners are read through.
    pub window: Duration,
    /// Whether a value read from its old owner is copied to its new owner.
    pub copy: bool,
}

/// A pool whose backends are a Redis Cluster: Keyway learns the nodes and the slot map from
/// any reachable seed, follows `-MOVED`/`-ASK`, and refreshes the map as it changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Nodes to ask for the cluster's layout (`cluster`), in file order; never empty.
    pub seeds: Vec<HostPort>,
    /// Which nodes serve read-only commands (`read_from`, default `master`).
    pub read_from: ReadFrom,
}

/// Which nodes of a Redis Cluster serve read-only commands (writes always go to the master).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadFrom {
    /// The slot's master only: reads see every acknowledged write.
    #[default]
    Master,
    /// A replica of the slot's master only (`READONLY` connections); a slot without a healthy
    /// replica is an error. Reads may lag writes.
    Replica,
    /// A replica when the slot has a healthy one, else the master.
    PreferReplica,
}

impl ReadFrom {
    /// The setting named `name` in the config file.
    pub fn parse(name: &str) -> Option<ReadFrom> {
        match name {
            "master" => Some(ReadFrom::Master),
            "replica" => Some(ReadFrom::Replica),
            "prefer_replica" => Some(ReadFrom::PreferReplica),
            _ => None,
        }
    }
}

/// A pool whose backends are Redis Sentinel masters: each `servers` line is `mastername:weight`,
/// the master name is the backend's ring name (so a failover moves no key), and its address is
/// [`BackendAddr::unresolved`] until Keyway asks the Sentinels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelConfig {
    /// The Sentinels to ask and watch (`sentinels`), in file order; never empty.
    pub sentinels: Vec<HostPort>,
    /// Password sent to the Sentinels with `AUTH` (`sentinel_auth`); never empty.
    pub auth: Option<String>,
}

/// A Sentinel's or cluster seed's address (`host:port`), resolved when Keyway connects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Hostname or IP address (an IPv6 address may be bracketed).
    pub host: String,
    /// TCP port, 1..=65535.
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Where a pool listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address; a hostname in the file is resolved at validation (first address), as
    /// nutcracker does.
    Tcp(SocketAddr),
    /// A unix socket path (`/path.sock [octal perm]`).
    Unix {
        /// The socket's path.
        path: PathBuf,
        /// Permissions to chmod the socket to; `None` when absent or 0, as nutcracker skips
        /// the chmod for 0.
        mode: Option<u32>,
    },
}

impl std::str::FromStr for Listen {
    type Err = String;

    /// A `listen` value as the config file writes it: `host:port` (resolved now) or
    /// `/path.sock [octal perm]`.
    fn from_str(text: &str) -> Result<Listen, String> {
        validate::parse_listen(text)
    }
}

/// `--listen POOL=ADDR`: this instance listens for pool `pool` at `listen`, whatever the
/// config says (a fleet's instances share one config but not always one address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenOverride {
    /// The pool's name.
    pub pool: String,
    /// Where this instance listens for it.
    pub listen: Listen,
}

impl std::str::FromStr for ListenOverride {
    type Err = String;

    fn from_str(text: &str) -> Result<ListenOverride, String> {
        let (pool, listen) = text
            .split_once('=')
            .ok_or_else(|| format!("'{text}' is not POOL=ADDR"))?;
        Ok(ListenOverride {
            pool: pool.to_owned(),
            listen: listen.parse()?,
        })
    }
}

impl Config {
    /// Applies `overrides` to the pools they name; the names of those this config lacks.
    pub fn override_listens(&mut self, overrides: &[ListenOverride]) -> Vec<String> {
        let mut missing = Vec::new();
        for o in overrides {
            match self.pools.iter_mut().find(|p| p.name == o.pool) {
                Some(pool) => pool.listen = o.listen.clone(),
                None => missing.push(o.pool.clone()),
            }
        }
        missing
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix { path, mode: None } => write!(f, "{}", path.display()),
            Listen::Unix {
                path,
                mode: Some(mode),
            } => write!(f, "{} {mode:04o}", path.display()),
        }
    }
}

/// One backend (a `servers` line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// Where it is.
    pub addr: BackendAddr,
    /// Relative weight, at least 1.
    pub weight: u32,
    /// The optional name after the address; it replaces the address as the ketama point name.
    pub name: Option<String>,
    /// The slots it owns in a `distribution: slots` pool, sorted as written: from the pool's
    /// `slots` key, else the even split in shard order. Empty in other pools.
    pub slots: Vec<RangeInclusive<u16>>,
}

impl BackendConfig {
    /// nutcracker's ketama point name: the name if given, else `host:port`, or `host` alone
    /// when the port is 11211 (libmemcached compatibility). For a unix socket without a name,
    /// nutcracker's name is the path followed by `:` (it counts one byte past the path, which is
    /// the `:` before the weight); Keyway mirrors that so placement stays identical.
    pub fn ketama_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match &self.addr {
            BackendAddr::Tcp { host, port: 11211 } => host.clone(),
            BackendAddr::Tcp { host, port } => format!("{host}:{port}"),
            BackendAddr::Unix(path) => format!("{}:", path.display()),
        }
    }

    /// What routing needs: the ketama point name, the weight and the slots.
    pub fn shard_spec(&self) -> ShardSpec {
        ShardSpec {
            name: self.ketama_name(),
            weight: self.weight,
            named: self.name.is_some(),
            slots: self.slots.clone(),
        }
    }

    /// How it is shown in logs: the name if given, else nutcracker's `host:port:weight`
    /// (`/path:weight` for a unix socket). nutcracker's stats JSON keys backends by
    /// [`BackendConfig::ketama_name`] instead.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(name) if !name.is_empty() => name.clone(),
            _ => format!("{}:{}", self.addr, self.weight),
        }
    }
}

/// A backend's address; resolved lazily, at connect time, as nutcracker does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BackendAddr {
    /// Host and port as written. The host is kept verbatim (it is part of the ketama name):
    /// nutcracker's IPv6 form is `::1:6379:1` (host `::1`); a bracketed `[::1]` stays bracketed
    /// and must be unbracketed by whoever resolves it.
    Tcp {
        /// Hostname or IP address.
        host: String,
        /// TCP port, 1..=65535.
        port: u16,
    },
    /// A unix socket path.
    Unix(PathBuf),
}

impl BackendAddr {
    /// The address of a Sentinel pool's backend before the Sentinels are asked: empty host,
    /// port 0, which never connects. Keyway fills in the master's address before it builds the
    /// pool (at start and on every reload), so a live pool never holds it.
    pub fn unresolved() -> BackendAddr {
        BackendAddr::Tcp {
            host: String::new(),
            port: 0,
        }
    }

    /// Whether this is [`BackendAddr::unresolved`].
    pub fn is_unresolved(&self) -> bool {
        matches!(self, BackendAddr::Tcp { host, port: 0 } if host.is_empty())
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            BackendAddr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Keyway's per-pool limits (extension keys, documented in `conf/keyway.yml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request accepted, in bytes (`max_request_bytes`, default 64 MiB).
    pub max_request_bytes: usize,
    /// Most elements in one multibulk request (`max_multibulk_length`, default 1 048 576).
    pub max_multibulk_length: usize,
    /// Longest key accepted, in bytes (`max_key_bytes`, default 1 MiB).
    pub max_key_bytes: usize,
    /// Most requests in flight per client before Keyway stops reading from it
    /// (`max_pipeline`, default 4096).
    pub max_pipeline: usize,
    /// Largest reply accepted from a backend, in bytes (`max_reply_bytes`, default 512 MiB,
    /// as Redis's `proto-max-bulk-len`); a larger one fails its request and recycles the
    /// connection.
    pub max_reply_bytes: usize,
    /// Reply bytes held for one client (received from backends, not yet taken by the client)
    /// past which Keyway stops reading its requests (`client_output_limit`, default 64 MiB):
    /// the soft limit of Redis's `client-output-buffer-limit`.
    pub client_output_limit: usize,
    /// Reply bytes held for one client past which Keyway closes it
    /// (`client_output_hard_limit`, default 1 GiB): the hard limit.
    pub client_output_hard_limit: usize,
    /// Most dedicated connections (a client's own, for a blocking command or a transaction)
    /// open to one backend at once, for the whole process (`dedicated_connections`, default
    /// 64); past it such a request gets an error reply naming the limit.
    pub dedicated_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 64 * 1024 * 1024,
            max_multibulk_length: 1_048_576,
            max_key_bytes: 1024 * 1024,
            max_pipeline: 4096,
            max_reply_bytes: 512 * 1024 * 1024,
            client_output_limit: 64 * 1024 * 1024,
            client_output_hard_limit: 1024 * 1024 * 1024,
            dedicated_connections: 64,
        }
    }
}

/// Everything wrong with a config file. Displays one problem per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", Lines(&self.problems))]
pub struct Error {
    problems: Vec<Problem>,
}

impl Error {
    /// Each problem found, in file order.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl From<Vec<Problem>> for Error {
    fn from(problems: Vec<Problem>) -> Self {
        Error { problems }
    }
}

struct Lines<'a>(&'a [Problem]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// One thing wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The file could not be read.
    #[error("cannot read '{}': {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid YAML, or a YAML feature Keyway rejects (several documents, duplicate keys).
    #[error("YAML: {message}")]
    Syntax {
        /// The parser's message, with line and column when known.
        message: String,
        /// 1-based line, when known.
        line: Option<usize>,
    },
    /// The file as a whole is wrong (empty, not a mapping of pools).
    #[error("{0}")]
    File(String),
    /// A pool as a whole is wrong.
    #[error("pool '{pool}': {message}")]
    Pool {
        /// The pool's name.
        pool: String,
        /// What is wrong.
        message: String,
    },
    /// One key of a pool is wrong.
    #[error("pool '{pool}': key '{key}': {message}")]
    Key {
        /// The pool's name.
        pool: String,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    const MINIMAL: &str = "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1\n";

    #[test]
    fn defaults_match_nutcracker() {
        let config = Config::parse(MINIMAL).unwrap();
        let expected = PoolConfig {
            name: "alpha".into(),
            listen: Listen::Tcp(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::LOCALHOST,
                22121,
            ))),
            hash: HashFn::Fnv1a_64,
            hash_tag: None,
            distribution: Distribution::Ketama,
            timeout: None,
            backlog: 512,
            client_connections: 0,
            redis: false,
            tcpkeepalive: false,
            reuseport: false,
            redis_auth: None,
            redis_db: 0,
            preconnect: false,
            auto_eject_hosts: false,
            server_connections: 1,
            server_retry_timeout: Duration::from_millis(30_000),
            server_failure_limit: 2,
            servers: vec![BackendConfig {
                addr: BackendAddr::Tcp {
                    host: "127.0.0.1".into(),
                    port: 6379,
                },
                weight: 1,
                name: None,
                slots: Vec::new(),
            }],
            limits: Limits::default(),
            sentinel: None,
            cluster: None,
            allow_flush: false,
            migration: None,
            users: None,
            tls: None,
            server_tls: None,
        };
        assert_eq!(config.pools, [expected]);
    }

    #[test]
    fn limits_defaults() {
        let limits = Limits::default();
        assert_eq!(limits.max_request_bytes, 67_108_864);
        assert_eq!(limits.max_multibulk_length, 1_048_576);
        assert_eq!(limits.max_key_bytes, 1_048_576);
        assert_eq!(limits.max_pipeline, 4096);
    }

    #[test]
    fn ketama_name_is_host_port_or_host_for_11211() {
        let tcp = |host: &str, port| BackendConfig {
            addr: BackendAddr::Tcp {
                host: host.into(),
                port,
            },
            weight: 3,
            name: None,
            slots: Vec::new(),
        };
        assert_eq!(tcp("10.0.0.1", 6379).ketama_name(), "10.0.0.1:6379");
        assert_eq!(tcp("10.0.0.1", 11211).ketama_name(), "10.0.0.1");
        assert_eq!(tcp("10.0.0.1", 6379).display_name(), "10.0.0.1:6379:3");
        let named = BackendConfig {
            name: Some("shard1".into()),
            ..tcp("10.0.0.1", 11211)
        };
        assert_eq!(named.ketama_name(), "shard1");
        assert_eq!(named.display_name(), "shard1");
        assert_eq!(named.shard_spec(), ShardSpec::new("shard1", 3));
    }

    #[test]
    fn ketama_name_of_unnamed_unix_socket_ends_with_colon() {
        let unix = BackendConfig {
            addr: BackendAddr::Unix("/tmp/redis.sock".into()),
            weight: 2,
            name: None,
            slots: Vec::new(),
        };
        assert_eq!(unix.ketama_name(), "/tmp/redis.sock:");
        assert_eq!(unix.display_name(), "/tmp/redis.sock:2");
    }

    #[test]
    fn listen_display() {
        let unix = Listen::Unix {
            path: "/tmp/a.sock".into(),
            mode: Some(0o666),
        };
        assert_eq!(unix.to_string(), "/tmp/a.sock 0666");
    }

    #[test]
    fn error_lists_one_problem_per_line() {
        let text = "alpha:\n  listen: 127.0.0.1:22121\n  hash: fnv2\n  timeout: -1\n  servers:\n   - 127.0.0.1:6379:1\n";
        let err = Config::parse(text).unwrap_err();
        let shown = err.to_string();
        let lines: Vec<_> = shown.lines().collect();
        assert_eq!(lines.len(), 2, "{shown}");
        assert!(lines[0].starts_with(
            "pool 'alpha': key 'hash': unknown hash function 'fnv2' (expected one of one_at_a_time md5"
        ));
        assert!(lines[1].starts_with("pool 'alpha': key 'timeout': "));
        assert_eq!(err.problems().len(), 2);
    }

    #[test]
    fn load_reports_missing_file() {
        let err = Config::load(Path::new("/nonexistent/keyway.yml")).unwrap_err();
        assert!(matches!(err.problems(), [Problem::Io { .. }]));
        assert!(err
            .to_string()
            .starts_with("cannot read '/nonexistent/keyway.yml'"));
    }

    #[test]
    fn every_example_config_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("yml") {
                if let Err(err) = Config::load(&path) {
                    panic!("{}:\n{err}", path.display());
                }
                loaded += 1;
            }
        }
        assert!(
            loaded >= 3,
            "expected conf/nutcracker.yml, conf/keyway.yml and conf/slots.yml"
        );
    }

    #[test]
    fn slots_example_splits_evenly_and_explicitly() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/slots.yml");
        let config = Config::load(&path).unwrap();
        let slots = |pool: &PoolConfig| -> Vec<(String, Vec<RangeInclusive<u16>>)> {
            pool.servers
                .iter()
                .map(|s| (s.ketama_name(), s.slots.clone()))
                .collect()
        };
        let [even, explicit] = &config.pools[..] else {
            panic!("two pools expected")
        };
        assert!(even.distribution == Distribution::Slots && even.hash_tag == Some(*b"{}"));
        assert_eq!(
            slots(even),
            [
                ("s1".to_owned(), vec![0..=5460]),
                ("s2".to_owned(), vec![5461..=10922]),
                ("s3".to_owned(), vec![10923..=16383]),
            ]
        );
        assert_eq!(
            slots(explicit),
            [
                ("cache-a".to_owned(), vec![0..=5000, 16000..=16383]),
                ("cache-b".to_owned(), vec![5001..=10922]),
                ("127.0.0.1:7013".to_owned(), vec![10923..=15999]),
            ]
        );
    }

    #[test]
    fn sentinel_example_names_masters() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/sentinel.yml");
        let config = Config::load(&path).unwrap();
        let [pool] = &config.pools[..] else {
            panic!("one pool expected")
        };
        let sentinel = pool.sentinel.as_ref().unwrap();
        assert_eq!(sentinel.sentinels.len(), 3);
        assert_eq!(sentinel.auth.as_deref(), Some("change-me"));
        let names: Vec<_> = pool
            .servers
            .iter()
            .map(BackendConfig::ketama_name)
            .collect();
        assert_eq!(names, ["shard-1", "shard-2"]);
        assert!(pool.servers.iter().all(|s| s.addr.is_unresolved()));
    }

    #[test]
    fn keyway_example_is_the_demo_pool() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/keyway.yml");
        let config = Config::load(&path).unwrap();
        let [pool] = &config.pools[..] else {
            panic!("one pool expected")
        };
        assert_eq!(pool.name, "main");
        assert_eq!(pool.listen, Listen::Tcp("127.0.0.1:22121".parse().unwrap()));
        assert!(pool.redis && pool.auto_eject_hosts);
        assert_eq!(pool.hash, HashFn::Fnv1a_64);
        assert_eq!(pool.hash_tag, Some(*b"{}"));
        assert_eq!(pool.timeout, Some(Duration::from_millis(400)));
        let names: Vec<_> = pool
            .servers
            .iter()
            .map(BackendConfig::ketama_name)
            .collect();
        assert_eq!(
            names,
            [
                "127.0.0.1:7001",
                "127.0.0.1:7002",
                "127.0.0.1:7003",
                "127.0.0.1:7004"
            ]
        );
        assert_eq!(pool.limits, Limits::default());
    }
}
