//! Raw pools → typed [`PoolConfig`]s: nutcracker's defaults, its value rules (`nc_conf.c`),
//! and every problem reported with its pool and key.

use std::net::ToSocketAddrs;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawConfig, RawPool, RawSlots, Scalar};
use super::{
    BackendAddr, BackendConfig, ClusterConfig, Config, HostPort, Limits, Listen, PoolConfig,
    Problem, ReadFrom, SentinelConfig,
};
use crate::route::slots::{self, Flaw, MAX_SLOT, SLOTS};
use crate::route::{Distribution, HashFn};

/// The hash names nutcracker knows, then Keyway's `murmur3`, for error messages.
const HASH_NAMES: &str =
    "one_at_a_time md5 crc16 crc32 crc32a fnv1_64 fnv1a_64 fnv1_32 fnv1a_32 hsieh murmur jenkins murmur3";
const DISTRIBUTION_NAMES: &str = "ketama modula random, or Keyway's slots";
/// nutcracker reads numbers into a C `int` and rejects negatives.
const MAX_NUMBER: u64 = i32::MAX as u64;
/// `sizeof(sun_path)` on Linux, counting the terminating NUL.
const UNIX_PATH_CAPACITY: usize = 108;
/// The largest permission nutcracker accepts on a listen socket.
const MAX_MODE: u32 = 0o777;

/// Turns raw pools into a [`Config`], or returns every problem found.
pub(crate) fn validate(raw: RawConfig) -> Result<Config, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut pools: Vec<PoolConfig> = Vec::new();
    for (name, raw_pool) in raw.pools {
        let mut pool = PoolChecker {
            name: &name,
            problems: &mut problems,
        };
        if let Some(config) = pool.check(raw_pool) {
            if let Some(other) = pools.iter().find(|p| p.listen == config.listen) {
                problems.push(Problem::Key {
                    pool: name.clone(),
                    key: "listen".into(),
                    message: format!(
                        "'{}' is already the listen address of pool '{}'",
                        config.listen, other.name
                    ),
                });
            }
            pools.push(config);
        }
    }
    if problems.is_empty() {
        Ok(Config { pools })
    } else {
        Err(problems)
    }
}

/// Checks one pool, pushing each problem with the pool's name.
struct PoolChecker<'a> {
    name: &'a str,
    problems: &'a mut Vec<Problem>,
}

impl PoolChecker<'_> {
    /// The typed pool, or `None` when any of its keys is wrong (the problems are recorded).
    fn check(&mut self, raw: RawPool) -> Option<PoolConfig> {
        let before = self.problems.len();
        if self.name.is_empty() {
            self.problems.push(Problem::Pool {
                pool: String::new(),
                message: "a pool name must not be empty".into(),
            });
        }
        let limits = self.limits(&raw);
        let hash_is_set = raw.hash.0.is_some();
        let listen = match raw.listen.0 {
            Some(text) => self.value("listen", parse_listen(&text)),
            None => self.missing("listen"),
        };
        let hash = self.or_default(raw.hash, "hash", HashFn::Fnv1a_64, |text| {
            HashFn::parse(text).ok_or_else(|| {
                format!("unknown hash function '{text}' (expected one of {HASH_NAMES})")
            })
        });
        let hash_tag = self.optional(raw.hash_tag, "hash_tag", |text| {
            <[u8; 2]>::try_from(text.as_bytes()).map_err(|_| {
                format!("'{text}' is not a hash tag of exactly two characters, e.g. \"{{}}\"")
            })
        });
        let distribution_is_set = raw.distribution.0.is_some();
        let distribution = self.or_default(
            raw.distribution,
            "distribution",
            Distribution::Ketama,
            |text| {
                Distribution::parse(text).ok_or_else(|| {
                    format!("unknown distribution '{text}' (expected one of {DISTRIBUTION_NAMES})")
                })
            },
        );
        let timeout = self
            .optional(raw.timeout, "timeout", parse_number)
            .map(|ms| ms.filter(|&ms| ms > 0).map(millis));
        let backlog = self.or_default(raw.backlog, "backlog", 512, parse_number);
        let client_connections = self.or_default(
            raw.client_connections,
            "client_connections",
            0,
            parse_number,
        );
        let redis = self.or_default(raw.redis, "redis", false, parse_bool);
        let tcpkeepalive = self.or_default(raw.tcpkeepalive, "tcpkeepalive", false, parse_bool);
        let reuseport = self.or_default(raw.reuseport, "reuseport", false, parse_bool);
        let redis_auth = self.optional(raw.redis_auth, "redis_auth", |text| {
            if text.is_empty() {
                Err("must not be empty (leave the key out for no password)".into())
            } else {
                Ok(text.to_owned())
            }
        });
        if let (Some(Some(_)), Some(false)) = (&redis_auth, redis) {
            self.problem(
                "redis_auth",
                "is only valid on a redis pool (redis: true)".into(),
            );
        }
        let redis_db = self.or_default(raw.redis_db, "redis_db", 0, parse_number);
        let preconnect = self.or_default(raw.preconnect, "preconnect", false, parse_bool);
        let auto_eject_hosts =
            self.or_default(raw.auto_eject_hosts, "auto_eject_hosts", false, parse_bool);
        let server_connections =
            self.or_default(raw.server_connections, "server_connections", 1, |text| {
                match parse_number(text)? {
                    0 => Err("cannot be 0".into()),
                    n => Ok(n),
                }
            });
        let server_retry_timeout = self
            .or_default(
                raw.server_retry_timeout,
                "server_retry_timeout",
                30_000,
                parse_number,
            )
            .map(millis);
        let server_failure_limit = self.or_default(
            raw.server_failure_limit,
            "server_failure_limit",
            2,
            parse_number,
        );
        let masters = raw.sentinels.is_some();
        let clustered = raw.cluster.is_some();
        let sentinel = self.sentinel(raw.sentinels, raw.sentinel_auth, redis);
        let cluster = self.cluster(raw.cluster, raw.read_from, redis);
        let mut servers = match raw.servers {
            Some(_) if clustered => {
                self.problem(
                    "servers",
                    "is not used with 'cluster': Keyway learns the nodes from the cluster \
                     (remove the key)"
                        .into(),
                );
                None
            }
            None if clustered => Some(Vec::new()),
            Some(lines) => self.servers(&lines, masters),
            None => self.missing("servers"),
        };
        let mut hash_tag = hash_tag;
        let mut distribution = distribution;
        if clustered {
            if masters {
                self.problem(
                    "cluster",
                    "cannot be combined with 'sentinels' (a Redis Cluster fails over by itself)"
                        .into(),
                );
            }
            if distribution_is_set && distribution != Some(Distribution::Slots) {
                self.problem(
                    "distribution",
                    "a cluster pool routes by Redis Cluster's slots (remove the key or write \
                     slots)"
                        .into(),
                );
            }
            distribution = Some(Distribution::Slots);
            if hash_is_set {
                self.problem(
                    "hash",
                    "is not used by a cluster pool, which hashes CRC16(key) mod 16384 as Redis \
                     Cluster does (remove the key)"
                        .into(),
                );
            }
            hash_tag = self.slots_hash_tag(hash_tag);
            if redis_db.is_some_and(|db| db != 0) {
                self.problem(
                    "redis_db",
                    "must be 0 in a cluster pool (Redis Cluster has only database 0)".into(),
                );
            }
            if auto_eject_hosts == Some(true) {
                self.problem(
                    "auto_eject_hosts",
                    "is not used by a cluster pool: the cluster promotes a replica when a \
                     master fails, and Keyway follows (remove the key)"
                        .into(),
                );
            }
            if raw.slots.is_some() {
                self.problem(
                    "slots",
                    "is not used with 'cluster': the cluster says which node owns each slot".into(),
                );
            }
        } else if distribution == Some(Distribution::Slots) {
            if hash_is_set {
                self.problem(
                    "hash",
                    "is not used by distribution: slots, which always hashes CRC16(key) mod \
                     16384 as Redis Cluster does (remove the key)"
                        .into(),
                );
            }
            hash_tag = self.slots_hash_tag(hash_tag);
            if let Some(servers) = servers.as_mut() {
                self.assign_slots(raw.slots, servers);
            }
        } else if raw.slots.is_some() {
            self.problem("slots", "is only valid with distribution: slots".into());
        }

        if self.problems.len() > before {
            return None;
        }
        Some(PoolConfig {
            name: self.name.to_owned(),
            listen: listen?,
            hash: hash?,
            hash_tag: hash_tag?,
            distribution: distribution?,
            timeout: timeout?,
            backlog: backlog?,
            client_connections: client_connections?,
            redis: redis?,
            tcpkeepalive: tcpkeepalive?,
            reuseport: reuseport?,
            redis_auth: redis_auth?,
            redis_db: redis_db?,
            preconnect: preconnect?,
            auto_eject_hosts: auto_eject_hosts?,
            server_connections: server_connections?,
            server_retry_timeout: server_retry_timeout?,
            server_failure_limit: server_failure_limit?,
            servers: servers?,
            limits: limits?,
            sentinel: sentinel?,
            cluster: cluster?,
        })
    }

    /// The `cluster` and `read_from` keys: `Some(None)` for a pool that is not a cluster,
    /// `None` when either key is wrong (the problems are recorded).
    fn cluster(
        &mut self,
        lines: Option<Vec<String>>,
        read_from: Scalar,
        redis: Option<bool>,
    ) -> Option<Option<ClusterConfig>> {
        let Some(lines) = lines else {
            if read_from.0.is_some() {
                self.problem(
                    "read_from",
                    "is only valid with 'cluster' (which Redis Cluster nodes serve reads)".into(),
                );
                return None;
            }
            return Some(None);
        };
        let before = self.problems.len();
        if redis == Some(false) {
            self.problem(
                "cluster",
                "is only valid on a redis pool (redis: true): it names Redis Cluster nodes".into(),
            );
        }
        if lines.is_empty() {
            self.problem(
                "cluster",
                "has no seeds (list at least one node as host:port, or leave the key out)".into(),
            );
        }
        let mut seeds: Vec<HostPort> = Vec::with_capacity(lines.len());
        for line in &lines {
            match parse_host_port(line, "a cluster node's address, e.g. 10.0.0.5:7000") {
                Ok(addr) if seeds.contains(&addr) => {
                    self.problem("cluster", format!("'{line}' is listed more than once"));
                }
                Ok(addr) => seeds.push(addr),
                Err(message) => self.problem("cluster", format!("'{line}': {message}")),
            }
        }
        let read_from = self.or_default(read_from, "read_from", ReadFrom::Master, |text| {
            ReadFrom::parse(text).ok_or_else(|| {
                format!("unknown value '{text}' (expected master, replica or prefer_replica)")
            })
        });
        if self.problems.len() > before {
            return None;
        }
        Some(Some(ClusterConfig {
            seeds,
            read_from: read_from?,
        }))
    }

    /// The `sentinels` and `sentinel_auth` keys: `Some(None)` for a pool without Sentinel,
    /// `None` when either key is wrong (the problems are recorded).
    fn sentinel(
        &mut self,
        lines: Option<Vec<String>>,
        auth: Scalar,
        redis: Option<bool>,
    ) -> Option<Option<SentinelConfig>> {
        let Some(lines) = lines else {
            if auth.0.is_some() {
                self.problem(
                    "sentinel_auth",
                    "is only valid with 'sentinels' (the Sentinels' password)".into(),
                );
                return None;
            }
            return Some(None);
        };
        let before = self.problems.len();
        if redis == Some(false) {
            self.problem(
                "sentinels",
                "is only valid on a redis pool (redis: true): Sentinel manages Redis masters"
                    .into(),
            );
        }
        if lines.is_empty() {
            self.problem(
                "sentinels",
                "has no Sentinels (list at least one host:port, or leave the key out)".into(),
            );
        }
        let mut sentinels: Vec<HostPort> = Vec::with_capacity(lines.len());
        for line in &lines {
            match parse_host_port(line, "a Sentinel's address, e.g. 10.0.0.5:26379") {
                Ok(addr) if sentinels.contains(&addr) => {
                    self.problem("sentinels", format!("'{line}' is listed more than once"));
                }
                Ok(addr) => sentinels.push(addr),
                Err(message) => self.problem("sentinels", format!("'{line}': {message}")),
            }
        }
        let auth = self.optional(auth, "sentinel_auth", |text| {
            if text.is_empty() {
                Err("must not be empty (leave the key out for no password)".into())
            } else {
                Ok(text.to_owned())
            }
        });
        if self.problems.len() > before {
            return None;
        }
        Some(Some(SentinelConfig {
            sentinels,
            auth: auth?,
        }))
    }

    /// The `servers` lines: addresses, or Sentinel master names when `masters`.
    fn servers(&mut self, lines: &[String], masters: bool) -> Option<Vec<BackendConfig>> {
        if lines.is_empty() {
            self.problem("servers", "has no servers".into());
            return None;
        }
        let mut servers: Vec<BackendConfig> = Vec::with_capacity(lines.len());
        let mut valid = true;
        for line in lines {
            let parsed = if masters {
                parse_master(line)
            } else {
                parse_server(line)
            };
            match parsed {
                Ok(server) => servers.push(server),
                Err(message) => {
                    self.problem("servers", format!("'{line}': {message}"));
                    valid = false;
                }
            }
        }
        // nutcracker's only duplicate check: two servers with the same ketama name, which is
        // the address when no name is given. Two names on one address are allowed.
        let mut names: Vec<String> = servers.iter().map(BackendConfig::ketama_name).collect();
        names.sort();
        let mut reported: Option<&String> = None;
        for pair in names.windows(2) {
            if let [a, b] = pair {
                if a == b && reported != Some(a) {
                    self.problem(
                        "servers",
                        format!("more than one server is named '{a}' (names must be unique)"),
                    );
                    reported = Some(a);
                    valid = false;
                }
            }
        }
        // nutcracker sorts a pool's servers by name (shorter first, then bytewise) while
        // checking for duplicates, and that sorted order is the shard order modula and
        // random index into; keep it so placement matches.
        servers.sort_by_cached_key(|server| {
            let name = server.ketama_name();
            (name.len(), name.into_bytes())
        });
        valid.then_some(servers)
    }

    /// A slots pool hashes `{}` tags, as Redis Cluster does, so that a key keeps its slot on a
    /// real cluster: any other tag is refused rather than silently replaced.
    fn slots_hash_tag(&mut self, hash_tag: Option<Option<[u8; 2]>>) -> Option<Option<[u8; 2]>> {
        match hash_tag? {
            None => Some(Some(*b"{}")),
            Some(tag) if &tag == b"{}" => Some(Some(tag)),
            Some(tag) => {
                self.problem(
                    "hash_tag",
                    format!(
                        "'{}' cannot be used with distribution: slots, which always uses Redis \
                         Cluster's \"{{}}\" (remove the key or set it to \"{{}}\")",
                        String::from_utf8_lossy(&tag)
                    ),
                );
                None
            }
        }
    }

    /// Gives each server of a slots pool its slots: from the `slots` key (server name →
    /// ranges), every slot exactly once, or else [`slots::even_split`] in shard order (the
    /// sorted `servers`).
    fn assign_slots(&mut self, raw: Option<RawSlots>, servers: &mut [BackendConfig]) {
        let before = self.problems.len();
        if servers.len() > SLOTS {
            self.problem(
                "servers",
                format!(
                    "distribution: slots takes at most {SLOTS} servers (one per slot), found {}",
                    servers.len()
                ),
            );
        }
        for server in servers.iter().filter(|server| server.weight != 1) {
            self.problem(
                "servers",
                format!(
                    "'{}': weight {} is not used by distribution: slots (write 1, and give a \
                     server more slots with the 'slots' key)",
                    server.display_name(),
                    server.weight
                ),
            );
        }
        let assigned = match raw {
            None => slots::even_split(servers.len()),
            Some(RawSlots(entries)) => self.explicit_slots(&entries, servers),
        };
        if self.problems.len() > before {
            return;
        }
        for (server, ranges) in servers.iter_mut().zip(assigned) {
            server.slots = ranges;
        }
    }

    /// The `slots` key's ranges per server (in `servers` order), each problem recorded.
    fn explicit_slots(
        &mut self,
        entries: &[(String, String)],
        servers: &[BackendConfig],
    ) -> Vec<Vec<RangeInclusive<u16>>> {
        let names: Vec<String> = servers.iter().map(BackendConfig::ketama_name).collect();
        let mut assigned = vec![Vec::new(); servers.len()];
        let mut valid = true;
        for (name, text) in entries {
            let Some(index) = names.iter().position(|known| known == name) else {
                self.problem(
                    "slots",
                    format!(
                        "'{name}' is not a server of this pool (a server is named by the word \
                         after its weight, else by host:port; this pool has {})",
                        names.join(" ")
                    ),
                );
                valid = false;
                continue;
            };
            match (parse_slot_ranges(text), assigned.get_mut(index)) {
                (Ok(mut ranges), Some(slot)) => {
                    ranges.sort_by_key(|range| *range.start());
                    *slot = ranges;
                }
                (Err(message), _) => {
                    self.problem("slots", format!("server '{name}': {message}"));
                    valid = false;
                }
                (Ok(_), None) => valid = false,
            }
        }
        if valid {
            for flaw in slots::flaws(&assigned) {
                let message = flaw_message(&flaw, &names);
                self.problem("slots", message);
            }
        }
        assigned
    }

    fn limits(&mut self, raw: &RawPool) -> Option<Limits> {
        let defaults = Limits::default();
        let mut limit = |scalar: &Scalar, key: &str, default: usize| {
            self.or_default(scalar.clone(), key, default, parse_limit)
        };
        Some(Limits {
            max_request_bytes: limit(
                &raw.max_request_bytes,
                "max_request_bytes",
                defaults.max_request_bytes,
            )?,
            max_multibulk_length: limit(
                &raw.max_multibulk_length,
                "max_multibulk_length",
                defaults.max_multibulk_length,
            )?,
            max_key_bytes: limit(&raw.max_key_bytes, "max_key_bytes", defaults.max_key_bytes)?,
            max_pipeline: limit(&raw.max_pipeline, "max_pipeline", defaults.max_pipeline)?,
            max_reply_bytes: limit(
                &raw.max_reply_bytes,
                "max_reply_bytes",
                defaults.max_reply_bytes,
            )?,
            client_output_limit: limit(
                &raw.client_output_limit,
                "client_output_limit",
                defaults.client_output_limit,
            )?,
            client_output_hard_limit: limit(
                &raw.client_output_hard_limit,
                "client_output_hard_limit",
                defaults.client_output_hard_limit,
            )?,
        })
    }

    /// The parsed value, or the default when the key is absent.
    fn or_default<T>(
        &mut self,
        scalar: Scalar,
        key: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match scalar.0 {
            Some(text) => self.value(key, parse(&text)),
            None => Some(default),
        }
    }

    /// `Some(None)` when the key is absent, `Some(Some(v))` when valid, `None` when invalid.
    fn optional<T>(
        &mut self,
        scalar: Scalar,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        match scalar.0 {
            Some(text) => self.value(key, parse(&text)).map(Some),
            None => Some(None),
        }
    }

    fn value<T>(&mut self, key: &str, parsed: Result<T, String>) -> Option<T> {
        parsed.map_err(|message| self.problem(key, message)).ok()
    }

    fn missing<T>(&mut self, key: &str) -> Option<T> {
        self.problem(key, "is missing".into());
        None
    }

    fn problem(&mut self, key: &str, message: String) {
        self.problems.push(Problem::Key {
            pool: self.name.to_owned(),
            key: key.to_owned(),
            message,
        });
    }
}

/// A [`Flaw`] in words, servers by name.
fn flaw_message(flaw: &Flaw, names: &[String]) -> String {
    let name = |index: usize| names.get(index).map_or("?", String::as_str);
    match flaw {
        Flaw::Overlap {
            slots,
            shards: [first, second],
        } if first == second => {
            format!("{} assigned to '{}' twice", slots_are(slots), name(*first))
        }
        Flaw::Overlap {
            slots,
            shards: [first, second],
        } => format!(
            "{} assigned to both '{}' and '{}' (each slot needs exactly one server)",
            slots_are(slots),
            name(*first),
            name(*second)
        ),
        Flaw::Gap { slots, unowned } => {
            let more = if *unowned > slots.len() {
                format!(", {unowned} slots in all")
            } else {
                String::new()
            };
            format!(
                "{} assigned to no server (each of the slots 0-{MAX_SLOT} needs exactly one \
                 server{more})",
                slots_are(slots)
            )
        }
    }
}

/// "slot 7 is" or "slots 5-10 are".
fn slots_are(slots: &RangeInclusive<u16>) -> String {
    if slots.start() == slots.end() {
        format!("slot {} is", slots.start())
    } else {
        format!("slots {}-{} are", slots.start(), slots.end())
    }
}

/// A `slots` value: comma-separated slots (`6000`) and inclusive ranges (`0-5460`), spaces
/// allowed around each, every slot within 0-16383.
fn parse_slot_ranges(text: &str) -> Result<Vec<RangeInclusive<u16>>, String> {
    if text.trim().is_empty() {
        return Err("no slots given (leave the server out of 'slots' to give it none)".into());
    }
    text.split(',')
        .map(|item| {
            let item = item.trim();
            let (start, end) = item.split_once('-').unwrap_or((item, item));
            let (start, end) = (
                parse_slot(start.trim(), item)?,
                parse_slot(end.trim(), item)?,
            );
            if start > end {
                return Err(format!(
                    "'{item}' is reversed (write the lower slot first: {end}-{start})"
                ));
            }
            Ok(start..=end)
        })
        .collect()
}

/// One slot number of `item`, 0-16383.
fn parse_slot(text: &str, item: &str) -> Result<u16, String> {
    let value = parse_digits(text)
        .ok_or_else(|| format!("'{item}' is not a slot or slot range (e.g. '0-5460,6000')"))?;
    u16::try_from(value)
        .ok()
        .filter(|&slot| slot <= MAX_SLOT)
        .ok_or_else(|| format!("{text} is not a slot (0-{MAX_SLOT})"))
}

fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

/// A server or master weight: a number of at least 1.
fn parse_weight(text: &str) -> Result<u32, String> {
    match parse_number(text) {
        Ok(0) => Err("weight must be at least 1".to_owned()),
        Ok(w) => Ok(w),
        Err(_) => Err(format!("weight '{text}' is not a positive number")),
    }
}

/// A number as nutcracker's `nc_atoi` reads it: ASCII digits only (no sign, no spaces, no
/// `0x`), into a C `int`. nutcracker silently wraps values past `i32::MAX`; Keyway rejects them.
fn parse_number(text: &str) -> Result<u32, String> {
    let value = parse_digits(text).ok_or_else(|| format!("'{text}' is not a number"))?;
    if value > MAX_NUMBER {
        return Err(format!("{text} is too large (at most {MAX_NUMBER})"));
    }
    u32::try_from(value).map_err(|_| format!("{text} is too large (at most {MAX_NUMBER})"))
}

/// A Keyway limit: a positive number of any size the platform holds.
fn parse_limit(text: &str) -> Result<usize, String> {
    let value = parse_digits(text).ok_or_else(|| format!("'{text}' is not a number"))?;
    match usize::try_from(value) {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text} is too large")),
    }
}

/// Non-empty ASCII digits, saturating at `u64::MAX` (callers reject that as too large).
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// Exactly `true` or `false`, as nutcracker compares them (not `True`, `yes`, `1`).
fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("'{text}' is not true or false")),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match parse_digits(text).map(u16::try_from) {
        Some(Ok(port)) if port > 0 => Ok(port),
        _ => Err(format!("'{text}' is not a port (1-65535)")),
    }
}

/// `host:port`, `ip:port` (IPv6 as `::1:port`, or `[::1]:port`) or `/path.sock [octal perm]`.
fn parse_listen(text: &str) -> Result<Listen, String> {
    if text.starts_with('/') {
        // nutcracker splits at the last space: everything before it is the path.
        let (path, mode) = match text.rsplit_once(' ') {
            Some((path, perm)) => (path, parse_mode(perm)?),
            None => (text, None),
        };
        if path.len() >= UNIX_PATH_CAPACITY {
            return Err(format!(
                "unix socket path '{path}' is too long (at most {} bytes)",
                UNIX_PATH_CAPACITY - 1
            ));
        }
        return Ok(Listen::Unix {
            path: PathBuf::from(path),
            mode,
        });
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("'{text}' is not host:port or /path/to.sock"))?;
    let port = parse_port(port)?;
    // Brackets are Keyway's addition: nutcracker's getaddrinfo fails on `[::1]`.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    resolve(host, port)
}

/// The first address getaddrinfo returns, as nutcracker binds to.
fn resolve(host: &str, port: u16) -> Result<Listen, String> {
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .map(Listen::Tcp)
            .ok_or_else(|| format!("'{host}' resolves to no address")),
        Err(e) => Err(format!("cannot resolve '{host}': {e}")),
    }
}

/// Octal digits, at most 0777; 0 means "leave the socket's mode alone", as in nutcracker.
/// nutcracker's `strtol` reads garbage such as `abc` or `0o777` as 0; Keyway rejects it.
fn parse_mode(text: &str) -> Result<Option<u32>, String> {
    let invalid = || format!("'{text}' is not an octal permission (e.g. 0666, at most 0777)");
    if text.is_empty() || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(invalid());
    }
    let mode = text
        .bytes()
        .try_fold(0u32, |m, b| {
            m.checked_mul(8)?.checked_add(u32::from(b - b'0'))
        })
        .filter(|&m| m <= MAX_MODE)
        .ok_or_else(invalid)?;
    Ok((mode != 0).then_some(mode))
}

/// A `servers` line: `host:port:weight [name]` or `/path/sock:weight [name]`, split from the
/// end as nutcracker's `conf_add_server` does: the name after the last space, the weight after
/// the last `:`, then (TCP) the port after the next `:`; the rest is the host, verbatim.
fn parse_server(line: &str) -> Result<BackendConfig, String> {
    let format = || {
        "expected 'host:port:weight [name]' or '/path/to.sock:weight [name]' \
         (a name cannot contain spaces)"
            .to_owned()
    };
    let (rest, name) = match line.rsplit_once(' ') {
        Some((rest, name)) => (rest, Some(name)),
        None => (line, None),
    };
    let (addr, weight) = rest.rsplit_once(':').ok_or_else(format)?;
    let weight = parse_weight(weight);
    let mut name = name.map(str::to_owned);
    let addr = if addr.starts_with('/') {
        if addr.contains(':') {
            return Err(format!("{} (a socket path cannot contain ':')", format()));
        }
        BackendAddr::Unix(PathBuf::from(addr))
    } else {
        let (host, port_text) = addr.rsplit_once(':').ok_or_else(format)?;
        if host.is_empty() {
            return Err("the host is empty".into());
        }
        let port = parse_port(port_text)?;
        // nutcracker's ketama name holds the port as written: keep "06379" exact.
        if name.is_none() && port != 11211 && port_text != port.to_string() {
            name = Some(format!("{host}:{port_text}"));
        }
        BackendAddr::Tcp {
            host: host.to_owned(),
            port,
        }
    };
    Ok(BackendConfig {
        addr,
        weight: weight?,
        name,
        slots: Vec::new(),
    })
}

/// A `sentinels` or `cluster` entry: `host:port` (IPv6 as `::1:port` or `[::1]:port`);
/// `what` says what it should be, for the error.
fn parse_host_port(text: &str, what: &str) -> Result<HostPort, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("is not host:port ({what})"))?;
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.contains(char::is_whitespace) {
        return Err("the host contains a space".into());
    }
    Ok(HostPort {
        host: host.to_owned(),
        port: parse_port(port)?,
    })
}

/// A `servers` line of a Sentinel pool: `mastername:weight`. The master name becomes the
/// backend's name (its ring position); the address stays [`BackendAddr::unresolved`] until the
/// Sentinels are asked.
fn parse_master(line: &str) -> Result<BackendConfig, String> {
    let looks_like_address = || {
        "looks like an address: in a pool with 'sentinels' a server line names a Sentinel \
         master as 'mastername:weight', and the Sentinels give its address"
            .to_owned()
    };
    if line.contains(' ') {
        return Err(
            "expected 'mastername:weight' (no name after it: in a pool with 'sentinels' the \
             master name is the server's name)"
                .into(),
        );
    }
    let (master, weight) = line
        .rsplit_once(':')
        .ok_or_else(|| "expected 'mastername:weight'".to_owned())?;
    if master.is_empty() {
        return Err("the master name is empty".into());
    }
    if master.contains(':') || master.starts_with('/') || master.parse::<std::net::IpAddr>().is_ok()
    {
        return Err(looks_like_address());
    }
    let weight = parse_weight(weight)?;
    Ok(BackendConfig {
        addr: BackendAddr::unresolved(),
        weight,
        name: Some(master.to_owned()),
        slots: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv6Addr, SocketAddr};

    fn pool(extra: &str) -> String {
        format!("alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1\n{extra}")
    }

    fn parse(text: &str) -> Result<Config, Vec<String>> {
        Config::parse(text).map_err(|e| e.problems().iter().map(ToString::to_string).collect())
    }

    fn first(extra: &str) -> PoolConfig {
        match parse(&pool(extra)) {
            Ok(mut config) => config.pools.remove(0),
            Err(problems) => panic!("{problems:?}"),
        }
    }

    /// The single problem reported for `extra` added to a valid pool.
    fn rejection(extra: &str) -> String {
        let problems = parse(&pool(extra)).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems[0].clone()
    }

    fn server(line: &str) -> Result<BackendConfig, String> {
        parse_server(line)
    }

    fn tcp(host: &str, port: u16, weight: u32, name: Option<&str>) -> BackendConfig {
        BackendConfig {
            addr: BackendAddr::Tcp {
                host: host.into(),
                port,
            },
            weight,
            name: name.map(Into::into),
            slots: Vec::new(),
        }
    }

    #[test]
    fn every_key_is_read() {
        let p = first(
            "  hash: murmur\n  hash_tag: \"{}\"\n  distribution: modula\n  timeout: 400\n  \
             backlog: 1024\n  client_connections: 100\n  redis: true\n  tcpkeepalive: true\n  \
             reuseport: true\n  redis_auth: secret\n  redis_db: 3\n  preconnect: true\n  \
             auto_eject_hosts: true\n  server_connections: 4\n  server_retry_timeout: 2000\n  \
             server_failure_limit: 5\n  max_request_bytes: 1000\n  max_multibulk_length: 10\n  \
             max_key_bytes: 100\n  max_pipeline: 8\n",
        );
        assert_eq!(p.hash, HashFn::Murmur);
        assert_eq!(p.hash_tag, Some(*b"{}"));
        assert_eq!(p.distribution, Distribution::Modula);
        assert_eq!(p.timeout, Some(Duration::from_millis(400)));
        assert_eq!((p.backlog, p.client_connections), (1024, 100));
        assert!(p.redis && p.tcpkeepalive && p.reuseport && p.preconnect && p.auto_eject_hosts);
        assert_eq!(p.redis_auth.as_deref(), Some("secret"));
        assert_eq!((p.redis_db, p.server_connections), (3, 4));
        assert_eq!(p.server_retry_timeout, Duration::from_secs(2));
        assert_eq!(p.server_failure_limit, 5);
        assert_eq!(
            p.limits,
            Limits {
                max_request_bytes: 1000,
                max_multibulk_length: 10,
                max_key_bytes: 100,
                max_pipeline: 8,
                ..Limits::default()
            }
        );
    }

    #[test]
    fn murmur3_is_a_keyway_hash() {
        assert_eq!(first("  hash: murmur3\n").hash, HashFn::Murmur3);
    }

    #[test]
    fn zero_timeout_means_none() {
        assert_eq!(first("  timeout: 0\n").timeout, None);
    }

    #[test]
    fn quoted_numbers_are_numbers() {
        assert_eq!(
            first("  timeout: \"400\"\n").timeout,
            Some(Duration::from_millis(400))
        );
    }

    #[test]
    fn leading_zeros_are_decimal() {
        assert_eq!(
            first("  timeout: 0400\n").timeout,
            Some(Duration::from_millis(400))
        );
    }

    #[test]
    fn zero_values_nutcracker_allows() {
        let p = first(
            "  backlog: 0\n  server_retry_timeout: 0\n  server_failure_limit: 0\n  client_connections: 0\n",
        );
        assert_eq!(p.server_retry_timeout, Duration::ZERO);
        assert_eq!((p.backlog, p.server_failure_limit), (0, 0));
    }

    #[test]
    fn redis_auth_tilde_is_a_password() {
        assert_eq!(
            first("  redis: true\n  redis_auth: ~\n")
                .redis_auth
                .as_deref(),
            Some("~")
        );
    }

    #[test]
    fn two_byte_hash_tag_is_accepted() {
        assert_eq!(first("  hash_tag: \"é\"\n").hash_tag, Some([0xc3, 0xa9]));
        assert_eq!(first("  hash_tag: $$\n").hash_tag, Some(*b"$$"));
    }

    // --- one test per rejection ---

    #[test]
    fn rejects_unknown_hash() {
        assert_eq!(
            rejection("  hash: fnv2\n"),
            format!("pool 'alpha': key 'hash': unknown hash function 'fnv2' (expected one of {HASH_NAMES})")
        );
    }

    #[test]
    fn rejects_unknown_distribution() {
        assert!(rejection("  distribution: rand\n")
            .starts_with("pool 'alpha': key 'distribution': unknown distribution 'rand'"));
    }

    #[test]
    fn rejects_hash_tag_of_three_characters() {
        assert!(rejection("  hash_tag: \"{}}\"\n").starts_with("pool 'alpha': key 'hash_tag': "));
    }

    #[test]
    fn rejects_empty_hash_tag() {
        assert!(rejection("  hash_tag: \"\"\n").starts_with("pool 'alpha': key 'hash_tag': "));
    }

    #[test]
    fn rejects_negative_timeout() {
        assert_eq!(
            rejection("  timeout: -1\n"),
            "pool 'alpha': key 'timeout': '-1' is not a number"
        );
    }

    #[test]
    fn rejects_non_numeric_timeout() {
        assert!(rejection("  timeout: 1.5\n").contains("'1.5' is not a number"));
        assert!(rejection("  timeout: 0x10\n").contains("is not a number"));
        assert!(rejection("  timeout: +5\n").contains("is not a number"));
    }

    #[test]
    fn rejects_empty_and_null_timeout() {
        assert!(rejection("  timeout:\n").contains("'' is not a number"));
        assert!(rejection("  timeout: ~\n").contains("'~' is not a number"));
    }

    #[test]
    fn rejects_numbers_past_a_c_int() {
        assert!(rejection("  timeout: 2147483648\n").contains("too large"));
        assert_eq!(
            first("  timeout: 2147483647\n").timeout,
            Some(Duration::from_millis(2_147_483_647))
        );
    }

    #[test]
    fn rejects_negative_redis_db() {
        assert!(rejection("  redis_db: -1\n").starts_with("pool 'alpha': key 'redis_db': "));
    }

    #[test]
    fn rejects_non_boolean() {
        assert_eq!(
            rejection("  redis: yes\n"),
            "pool 'alpha': key 'redis': 'yes' is not true or false"
        );
        assert!(rejection("  preconnect: True\n").contains("'True' is not true or false"));
    }

    #[test]
    fn rejects_zero_server_connections() {
        assert_eq!(
            rejection("  server_connections: 0\n"),
            "pool 'alpha': key 'server_connections': cannot be 0"
        );
    }

    #[test]
    fn rejects_empty_redis_auth() {
        assert!(rejection("  redis: true\n  redis_auth: \"\"\n")
            .starts_with("pool 'alpha': key 'redis_auth': must not be empty"));
    }

    #[test]
    fn rejects_redis_auth_on_memcached_pool() {
        assert_eq!(
            rejection("  redis_auth: pw\n"),
            "pool 'alpha': key 'redis_auth': is only valid on a redis pool (redis: true)"
        );
    }

    #[test]
    fn rejects_zero_limit() {
        assert_eq!(
            rejection("  max_pipeline: 0\n"),
            "pool 'alpha': key 'max_pipeline': must be at least 1"
        );
    }

    #[test]
    fn rejects_non_numeric_limit() {
        assert!(rejection("  max_key_bytes: 1MB\n").contains("'1MB' is not a number"));
    }

    #[test]
    fn rejects_missing_listen() {
        assert_eq!(
            parse("a:\n  servers:\n   - 127.0.0.1:6379:1\n").unwrap_err(),
            ["pool 'a': key 'listen': is missing"]
        );
    }

    #[test]
    fn servers_take_nutcracker_order_shorter_names_first_then_bytewise() {
        let text = "a:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1 zz\n   - 127.0.0.1:6380:1 b\n   - 127.0.0.1:6381:1 a\n   - 127.0.0.1:6382:1 ab\n";
        let names: Vec<String> = parse(text).unwrap().pools[0]
            .servers
            .iter()
            .map(BackendConfig::ketama_name)
            .collect();
        assert_eq!(names, ["a", "b", "ab", "zz"]);
    }

    #[test]
    fn rejects_missing_servers() {
        assert_eq!(
            parse("a:\n  listen: 127.0.0.1:22121\n").unwrap_err(),
            ["pool 'a': key 'servers': is missing"]
        );
    }

    #[test]
    fn rejects_empty_servers() {
        assert_eq!(
            parse("a:\n  listen: 127.0.0.1:22121\n  servers: []\n").unwrap_err(),
            ["pool 'a': key 'servers': has no servers"]
        );
    }

    #[test]
    fn rejects_empty_pool_name() {
        let problems = parse(&pool("").replace("alpha", "\"\"")).unwrap_err();
        assert_eq!(problems, ["pool '': a pool name must not be empty"]);
    }

    #[test]
    fn rejects_duplicate_listen() {
        let text = format!("{}{}", pool(""), pool("").replace("alpha", "beta"));
        assert_eq!(
            parse(&text).unwrap_err(),
            ["pool 'beta': key 'listen': '127.0.0.1:22121' is already the listen address of pool 'alpha'"]
        );
    }

    #[test]
    fn rejects_duplicate_server_address() {
        let text = "a:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1\n   - 127.0.0.1:6379:2\n";
        assert_eq!(
            parse(text).unwrap_err(),
            ["pool 'a': key 'servers': more than one server is named '127.0.0.1:6379' (names must be unique)"]
        );
    }

    #[test]
    fn rejects_duplicate_server_name() {
        let text = "a:\n  listen: 127.0.0.1:22121\n  servers:\n   - 10.0.0.1:6379:1 s1\n   - 10.0.0.2:6379:1 s1\n   - 10.0.0.3:6379:1 s1\n";
        assert_eq!(parse(text).unwrap_err().len(), 1);
    }

    #[test]
    fn accepts_one_address_under_two_names() {
        let text = "a:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1 x\n   - 127.0.0.1:6379:1 y\n";
        assert_eq!(parse(text).unwrap().pools[0].servers.len(), 2);
    }

    #[test]
    fn rejects_zero_weight() {
        assert_eq!(
            server("127.0.0.1:6379:0").unwrap_err(),
            "weight must be at least 1"
        );
    }

    #[test]
    fn rejects_negative_weight() {
        assert!(server("127.0.0.1:6379:-1")
            .unwrap_err()
            .contains("not a positive number"));
    }

    #[test]
    fn rejects_port_out_of_range() {
        assert!(server("127.0.0.1:70000:1")
            .unwrap_err()
            .contains("not a port"));
        assert!(server("127.0.0.1:0:1").unwrap_err().contains("not a port"));
    }

    #[test]
    fn rejects_server_without_port() {
        assert!(server("127.0.0.1:1")
            .unwrap_err()
            .starts_with("expected 'host:port:weight"));
        assert!(server("127.0.0.1").is_err());
    }

    #[test]
    fn rejects_name_with_spaces() {
        // The name is what follows the last space; "1 my" is then not a weight.
        assert!(server("127.0.0.1:6379:1 my server")
            .unwrap_err()
            .contains("weight"));
    }

    #[test]
    fn rejects_host_with_spaces() {
        assert!(server("my host:6379:1").is_err());
    }

    #[test]
    fn rejects_empty_host() {
        assert_eq!(server(":6379:1").unwrap_err(), "the host is empty");
    }

    #[test]
    fn rejects_unix_server_without_weight() {
        assert!(server("/tmp/r.sock").is_err());
        assert!(server("/tmp/r.sock:0").is_err());
    }

    #[test]
    fn rejects_unix_server_path_with_colon() {
        assert!(server("/tmp/r:x.sock:1")
            .unwrap_err()
            .contains("cannot contain ':'"));
    }

    #[test]
    fn all_server_problems_are_reported() {
        let text = "a:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:0\n   - 127.0.0.1:1\n   - 127.0.0.1:6380:1\n";
        let problems = parse(text).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("pool 'a': key 'servers': '127.0.0.1:6379:0': "));
    }

    #[test]
    fn all_problems_across_pools_are_reported() {
        let text = "a:\n  listen: 127.0.0.1\n  hash: x\n  redis: 1\n  servers:\n   - h:1:1\n\
                    b:\n  listen: 127.0.0.1:1\n  timeout: x\n  servers:\n   - h:1:0\n";
        assert_eq!(parse(text).unwrap_err().len(), 5);
    }

    #[test]
    fn rejects_listen_without_port() {
        assert!(rejection_listen("127.0.0.1").contains("is not host:port"));
    }

    #[test]
    fn rejects_listen_bad_port() {
        assert!(rejection_listen("127.0.0.1:0").contains("not a port"));
        assert!(rejection_listen("127.0.0.1:abc").contains("not a port"));
        assert!(rejection_listen("127.0.0.1:65536").contains("not a port"));
    }

    #[test]
    fn rejects_unresolvable_listen() {
        assert!(rejection_listen("nosuchhost.invalid:22121").contains("cannot resolve"));
        assert!(rejection_listen(":22121").contains("cannot resolve"));
    }

    #[test]
    fn rejects_listen_mode_above_0777() {
        assert!(rejection_listen("/tmp/x.sock 1777").contains("not an octal permission"));
    }

    #[test]
    fn rejects_listen_mode_that_is_not_octal() {
        assert!(rejection_listen("/tmp/x.sock abc").contains("not an octal permission"));
        assert!(rejection_listen("/tmp/x.sock 0o777").contains("not an octal permission"));
        assert!(rejection_listen("/tmp/my sock").contains("not an octal permission"));
    }

    #[test]
    fn rejects_listen_path_too_long() {
        let path = format!("/tmp/{}.sock", "a".repeat(98));
        assert!(rejection_listen(&path).contains("too long"));
    }

    // --- distribution: slots ---

    /// A slots pool over servers `s0`..`s{n-1}` (file order `names`), plus `extra` keys.
    fn slots_pool(names: &[&str], extra: &str) -> String {
        let mut text = format!(
            "alpha:\n  listen: 127.0.0.1:22121\n  distribution: slots\n{extra}  servers:\n"
        );
        for (n, name) in names.iter().enumerate() {
            text.push_str(&format!("   - 127.0.0.1:{}:1 {name}\n", 7001 + n));
        }
        text
    }

    fn slots_of(text: &str) -> Vec<(String, Vec<RangeInclusive<u16>>)> {
        match parse(text) {
            Ok(config) => config.pools[0]
                .servers
                .iter()
                .map(|s| (s.ketama_name(), s.slots.clone()))
                .collect(),
            Err(problems) => panic!("{problems:?}"),
        }
    }

    fn slots_rejection(names: &[&str], extra: &str) -> String {
        let problems = parse(&slots_pool(names, extra)).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems[0].clone()
    }

    const TWO: &[&str] = &["a", "b"];

    #[test]
    fn slots_pool_splits_evenly_in_sorted_server_order() {
        let text = slots_pool(&["zz", "b", "aaa"], "");
        assert_eq!(
            slots_of(&text),
            [
                ("b".to_owned(), vec![0..=5460]),
                ("zz".to_owned(), vec![5461..=10922]),
                ("aaa".to_owned(), vec![10923..=16383]),
            ]
        );
        let pool = &parse(&text).unwrap().pools[0];
        assert_eq!(pool.distribution, Distribution::Slots);
        assert_eq!(pool.hash_tag, Some(*b"{}"));
    }

    #[test]
    fn slots_pool_takes_an_explicit_assignment_by_name() {
        let text = slots_pool(
            &["zz", "b", "aaa"],
            "  hash_tag: \"{}\"\n  slots:\n    aaa: 9000-16383, 0-99\n    b: 100-3999\n    zz: 4000-8999\n",
        );
        assert_eq!(
            slots_of(&text),
            [
                ("b".to_owned(), vec![100..=3999]),
                ("zz".to_owned(), vec![4000..=8999]),
                ("aaa".to_owned(), vec![0..=99, 9000..=16383]),
            ]
        );
    }

    #[test]
    fn slots_key_names_unnamed_servers_by_host_port_and_may_leave_one_out() {
        let text = "alpha:\n  listen: 127.0.0.1:22121\n  distribution: slots\n  servers:\n   \
                    - 127.0.0.1:7001:1\n   - 127.0.0.1:7002:1\n   - 127.0.0.1:7003:1 spare\n  \
                    slots:\n    127.0.0.1:7001: 0-8191\n    \"127.0.0.1:7002\": 8192-16383\n";
        assert_eq!(
            slots_of(text),
            [
                ("spare".to_owned(), vec![]),
                ("127.0.0.1:7001".to_owned(), vec![0..=8191]),
                ("127.0.0.1:7002".to_owned(), vec![8192..=16383]),
            ]
        );
    }

    #[test]
    fn single_slots_and_spaces_are_accepted() {
        assert_eq!(
            parse_slot_ranges(" 0-5 ,7, 9 - 10,16383"),
            Ok(vec![0..=5, 7..=7, 9..=10, 16383..=16383])
        );
    }

    #[test]
    fn rejects_overlapping_slots() {
        assert_eq!(
            slots_rejection(TWO, "  slots:\n    a: 0-9000\n    b: 8000-16383\n"),
            "pool 'alpha': key 'slots': slots 8000-9000 are assigned to both 'a' and 'b' \
             (each slot needs exactly one server)"
        );
    }

    #[test]
    fn rejects_a_slot_given_twice_to_one_server() {
        assert_eq!(
            slots_rejection(TWO, "  slots:\n    a: 0-9000, 9000\n    b: 9001-16383\n"),
            "pool 'alpha': key 'slots': slot 9000 is assigned to 'a' twice"
        );
    }

    #[test]
    fn rejects_a_gap_naming_the_first_unassigned_slots() {
        assert_eq!(
            slots_rejection(TWO, "  slots:\n    a: 0-99, 200-299\n    b: 400-16382\n"),
            "pool 'alpha': key 'slots': slots 100-199 are assigned to no server (each of the \
             slots 0-16383 needs exactly one server, 201 slots in all)"
        );
        assert_eq!(
            slots_rejection(TWO, "  slots:\n    a: 0-16382\n"),
            "pool 'alpha': key 'slots': slot 16383 is assigned to no server (each of the slots \
             0-16383 needs exactly one server)"
        );
    }

    #[test]
    fn rejects_overlap_and_gap_together() {
        let problems = parse(&slots_pool(
            TWO,
            "  slots:\n    a: 0-100\n    b: 50-16000\n",
        ))
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("slots 50-100 are assigned to both 'a' and 'b'"));
        assert!(problems[1].contains("slots 16001-16383 are assigned to no server"));
    }

    #[test]
    fn rejects_slot_out_of_range() {
        assert_eq!(
            slots_rejection(TWO, "  slots:\n    a: 0-8191\n    b: 8192-16384\n"),
            "pool 'alpha': key 'slots': server 'b': 16384 is not a slot (0-16383)"
        );
        let huge = slots_rejection(TWO, "  slots:\n    a: 65536\n");
        assert!(huge.ends_with("65536 is not a slot (0-16383)"), "{huge}");
    }

    #[test]
    fn rejects_reversed_range() {
        assert_eq!(
            slots_rejection(TWO, "  slots:\n    a: 8191-0\n    b: 8192-16383\n"),
            "pool 'alpha': key 'slots': server 'a': '8191-0' is reversed (write the lower slot \
             first: 0-8191)"
        );
    }

    #[test]
    fn rejects_bad_slot_syntax() {
        for bad in [
            "0..8191",
            "-5",
            "1-2-3",
            "0-8191,",
            "x",
            "0x10",
            "~",
            "0-8191;8192",
        ] {
            let message = slots_rejection(TWO, &format!("  slots:\n    a: \"{bad}\"\n"));
            assert!(
                message.starts_with("pool 'alpha': key 'slots': server 'a': '")
                    && message.ends_with("is not a slot or slot range (e.g. '0-5460,6000')"),
                "{bad}: {message}"
            );
        }
        assert_eq!(
            slots_rejection(TWO, "  slots:\n    a:\n"),
            "pool 'alpha': key 'slots': server 'a': no slots given (leave the server out of \
             'slots' to give it none)"
        );
    }

    #[test]
    fn rejects_unknown_server_in_slots() {
        assert_eq!(
            slots_rejection(TWO, "  slots:\n    a: 0-16383\n    c: 5\n"),
            "pool 'alpha': key 'slots': 'c' is not a server of this pool (a server is named by \
             the word after its weight, else by host:port; this pool has a b)"
        );
    }

    #[test]
    fn rejects_slots_key_without_slots_distribution() {
        assert_eq!(
            rejection("  slots:\n    127.0.0.1:6379: 0-16383\n"),
            "pool 'alpha': key 'slots': is only valid with distribution: slots"
        );
    }

    #[test]
    fn rejects_other_hash_tag_on_slots_pool() {
        assert_eq!(
            slots_rejection(TWO, "  hash_tag: \"$$\"\n"),
            "pool 'alpha': key 'hash_tag': '$$' cannot be used with distribution: slots, which \
             always uses Redis Cluster's \"{}\" (remove the key or set it to \"{}\")"
        );
    }

    #[test]
    fn rejects_hash_on_slots_pool() {
        assert_eq!(
            slots_rejection(TWO, "  hash: crc16\n"),
            "pool 'alpha': key 'hash': is not used by distribution: slots, which always hashes \
             CRC16(key) mod 16384 as Redis Cluster does (remove the key)"
        );
    }

    #[test]
    fn rejects_weight_on_slots_pool() {
        let text = slots_pool(TWO, "").replace("7002:1 b", "7002:2 b");
        assert_eq!(
            parse(&text).unwrap_err(),
            [
                "pool 'alpha': key 'servers': 'b': weight 2 is not used by distribution: slots \
              (write 1, and give a server more slots with the 'slots' key)"
            ]
        );
    }

    #[test]
    fn rejects_more_servers_than_slots() {
        let names: Vec<String> = (0..=SLOTS).map(|n| format!("s{n}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(
            slots_rejection(&names, ""),
            "pool 'alpha': key 'servers': distribution: slots takes at most 16384 servers (one \
             per slot), found 16385"
        );
    }

    fn rejection_listen(listen: &str) -> String {
        parse_listen(listen).unwrap_err()
    }

    // --- every listen form ---

    #[test]
    fn listen_forms() {
        let v4: SocketAddr = "127.0.0.1:22121".parse().unwrap();
        assert_eq!(parse_listen("127.0.0.1:22121"), Ok(Listen::Tcp(v4)));
        assert_eq!(
            parse_listen("0.0.0.0:22121"),
            Ok(Listen::Tcp("0.0.0.0:22121".parse().unwrap()))
        );
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 22121);
        assert_eq!(parse_listen("::1:22121"), Ok(Listen::Tcp(v6)));
        assert_eq!(parse_listen("[::1]:22121"), Ok(Listen::Tcp(v6)));
        match parse_listen("localhost:22121") {
            Ok(Listen::Tcp(addr)) => {
                assert!(addr.ip().is_loopback());
                assert_eq!(addr.port(), 22121);
            }
            other => panic!("{other:?}"),
        }
        let unix = |path: &str, mode| Listen::Unix {
            path: path.into(),
            mode,
        };
        assert_eq!(parse_listen("/tmp/x.sock"), Ok(unix("/tmp/x.sock", None)));
        assert_eq!(
            parse_listen("/tmp/x.sock 0666"),
            Ok(unix("/tmp/x.sock", Some(0o666)))
        );
        assert_eq!(
            parse_listen("/tmp/x.sock 777"),
            Ok(unix("/tmp/x.sock", Some(0o777)))
        );
        assert_eq!(parse_listen("/tmp/x.sock 0"), Ok(unix("/tmp/x.sock", None)));
        // nutcracker splits at the last space: the path keeps the extra one.
        assert_eq!(
            parse_listen("/tmp/x.sock  0666"),
            Ok(unix("/tmp/x.sock ", Some(0o666)))
        );
        let longest = format!("/tmp/{}.sock", "a".repeat(97));
        assert!(parse_listen(&longest).is_ok());
    }

    // --- every server form ---

    #[test]
    fn server_forms() {
        assert_eq!(
            server("127.0.0.1:6379:1"),
            Ok(tcp("127.0.0.1", 6379, 1, None))
        );
        assert_eq!(
            server("127.0.0.1:6379:10 shard1"),
            Ok(tcp("127.0.0.1", 6379, 10, Some("shard1")))
        );
        assert_eq!(
            server("redis.local:6380:2"),
            Ok(tcp("redis.local", 6380, 2, None))
        );
        assert_eq!(
            server("127.0.0.1:6379:1 a:b"),
            Ok(tcp("127.0.0.1", 6379, 1, Some("a:b")))
        );
        assert_eq!(server("::1:6379:1"), Ok(tcp("::1", 6379, 1, None)));
        assert_eq!(server("[::1]:6379:1"), Ok(tcp("[::1]", 6379, 1, None)));
        // nutcracker takes everything before the port as the host.
        assert_eq!(
            server("127.0.0.1:6379:1:2"),
            Ok(tcp("127.0.0.1:6379", 1, 2, None))
        );
        // Unresolvable hosts are fine: resolution is lazy, at connect time.
        assert_eq!(
            server("nosuchhost.invalid:6379:1"),
            Ok(tcp("nosuchhost.invalid", 6379, 1, None))
        );
        // A trailing space gives an empty name, which nutcracker uses as the ketama name.
        assert_eq!(
            server("127.0.0.1:6379:1 "),
            Ok(tcp("127.0.0.1", 6379, 1, Some("")))
        );
        let unix = |name: Option<&str>| BackendConfig {
            addr: BackendAddr::Unix("/tmp/r.sock".into()),
            weight: 1,
            name: name.map(Into::into),
            slots: Vec::new(),
        };
        assert_eq!(server("/tmp/r.sock:1"), Ok(unix(None)));
        assert_eq!(server("/tmp/r.sock:1 r1"), Ok(unix(Some("r1"))));
    }

    #[test]
    fn port_11211_is_left_out_of_the_ketama_name() {
        assert_eq!(
            server("10.0.0.1:11211:1").unwrap().ketama_name(),
            "10.0.0.1"
        );
        assert_eq!(
            server("10.0.0.1:011211:1").unwrap().ketama_name(),
            "10.0.0.1"
        );
    }

    #[test]
    fn ketama_name_keeps_the_port_as_written() {
        let s = server("127.0.0.1:06379:01").unwrap();
        assert_eq!(s.ketama_name(), "127.0.0.1:06379");
        assert_eq!(s.weight, 1);
    }

    #[test]
    fn large_weight_is_kept() {
        assert_eq!(server("127.0.0.1:11214:100000").unwrap().weight, 100_000);
    }

    #[test]
    fn parse_number_matches_nc_atoi() {
        assert_eq!(parse_number("0"), Ok(0));
        assert_eq!(parse_number("007"), Ok(7));
        for bad in ["", " 1", "1 ", "-0", "+1", "1e3", "٣"] {
            assert!(parse_number(bad).is_err(), "{bad:?}");
        }
    }

    const CLUSTER_POOL: &str = "cl:\n  listen: 127.0.0.1:22124\n  redis: true\n  cluster:\n   - 10.0.0.5:7000\n   - node-2:7001\n";

    /// The problems of the cluster pool with `extra` lines added.
    fn cluster_problems(extra: &str) -> Vec<String> {
        parse(&format!("{CLUSTER_POOL}{extra}")).unwrap_err()
    }

    #[test]
    fn cluster_pool_has_seeds_no_servers_and_routes_by_slot() {
        let config = parse(CLUSTER_POOL).unwrap();
        let pool = &config.pools[0];
        let cluster = pool.cluster.as_ref().unwrap();
        assert_eq!(
            cluster.seeds,
            [
                HostPort {
                    host: "10.0.0.5".into(),
                    port: 7000
                },
                HostPort {
                    host: "node-2".into(),
                    port: 7001
                }
            ]
        );
        assert_eq!(cluster.read_from, ReadFrom::Master);
        assert!(pool.servers.is_empty());
        assert_eq!(pool.distribution, Distribution::Slots);
        assert_eq!(pool.hash_tag, Some(*b"{}"));
        let replica = parse(&format!("{CLUSTER_POOL}  read_from: prefer_replica\n")).unwrap();
        assert_eq!(
            replica.pools[0].cluster.as_ref().unwrap().read_from,
            ReadFrom::PreferReplica
        );
    }

    #[test]
    fn cluster_pool_rejects_keys_that_cannot_apply() {
        let cases: [(&str, &str); 9] = [
            (
                "  servers:\n   - 127.0.0.1:6379:1\n",
                "key 'servers': is not used with 'cluster'",
            ),
            (
                "  distribution: ketama\n",
                "key 'distribution': a cluster pool routes by Redis Cluster's slots",
            ),
            ("  hash: md5\n", "key 'hash': is not used by a cluster pool"),
            (
                "  hash_tag: \"$$\"\n",
                "key 'hash_tag': '$$' cannot be used",
            ),
            (
                "  redis_db: 2\n",
                "key 'redis_db': must be 0 in a cluster pool",
            ),
            (
                "  auto_eject_hosts: true\n",
                "key 'auto_eject_hosts': is not used by a cluster pool",
            ),
            (
                "  read_from: nearest\n",
                "key 'read_from': unknown value 'nearest'",
            ),
            (
                "  sentinels:\n   - 10.0.0.9:26379\n",
                "key 'cluster': cannot be combined with 'sentinels'",
            ),
            (
                "  slots:\n    a: 0-16383\n",
                "key 'slots': is not used with 'cluster'",
            ),
        ];
        for (extra, expected) in cases {
            let problems = cluster_problems(extra);
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{extra:?}: {problems:?}"
            );
        }
    }

    #[test]
    fn cluster_seeds_must_be_addresses_and_read_from_needs_a_cluster() {
        let problems = parse(&CLUSTER_POOL.replace("node-2:7001", "node-2")).unwrap_err();
        assert_eq!(
            problems,
            ["pool 'cl': key 'cluster': 'node-2': is not host:port (a cluster node's address, e.g. 10.0.0.5:7000)"]
        );
        let problems = parse(&CLUSTER_POOL.replace("node-2:7001", "10.0.0.5:7000")).unwrap_err();
        assert_eq!(
            problems,
            ["pool 'cl': key 'cluster': '10.0.0.5:7000' is listed more than once"]
        );
        let problems = parse(&CLUSTER_POOL.replace("  redis: true\n", "")).unwrap_err();
        assert!(
            problems[0].contains("is only valid on a redis pool"),
            "{problems:?}"
        );
        let problems = parse(
            "a:\n  listen: 127.0.0.1:1\n  read_from: replica\n  servers:\n   - 127.0.0.1:6379:1\n",
        )
        .unwrap_err();
        assert_eq!(problems, ["pool 'a': key 'read_from': is only valid with 'cluster' (which Redis Cluster nodes serve reads)"]);
    }

    const SENTINEL_POOL: &str = "ha:\n  listen: 127.0.0.1:22124\n  redis: true\n  sentinels:\n   - 10.0.0.5:26379\n   - sentinel-2:26379\n  servers:\n   - mymaster-2:1\n   - mymaster-1:3\n";

    /// The problems of the sentinel pool with `from` replaced by `to`.
    fn sentinel_problems(from: &str, to: &str) -> Vec<String> {
        assert!(SENTINEL_POOL.contains(from), "{from}");
        parse(&SENTINEL_POOL.replace(from, to)).unwrap_err()
    }

    #[test]
    fn sentinel_pool_names_masters_and_leaves_addresses_unresolved() {
        let config = parse(SENTINEL_POOL).unwrap();
        let pool = &config.pools[0];
        let sentinel = pool.sentinel.as_ref().unwrap();
        assert_eq!(
            sentinel.sentinels,
            [
                HostPort {
                    host: "10.0.0.5".into(),
                    port: 26379
                },
                HostPort {
                    host: "sentinel-2".into(),
                    port: 26379
                }
            ]
        );
        assert_eq!(sentinel.auth, None);
        let servers: Vec<_> = pool
            .servers
            .iter()
            .map(|s| (s.ketama_name(), s.weight, s.addr.is_unresolved()))
            .collect();
        assert_eq!(
            servers,
            [
                ("mymaster-1".to_owned(), 3, true),
                ("mymaster-2".to_owned(), 1, true)
            ]
        );
    }

    #[test]
    fn sentinel_auth_is_read() {
        let text = SENTINEL_POOL.replace("  servers:", "  sentinel_auth: s3cret\n  servers:");
        let config = parse(&text).unwrap();
        let auth = config.pools[0].sentinel.as_ref().unwrap().auth.clone();
        assert_eq!(auth.as_deref(), Some("s3cret"));
    }

    #[test]
    fn pool_without_sentinels_has_none() {
        assert_eq!(first("").sentinel, None);
    }

    #[test]
    fn sentinels_on_a_memcached_pool_are_rejected() {
        assert_eq!(
            sentinel_problems("  redis: true\n", ""),
            ["pool 'ha': key 'sentinels': is only valid on a redis pool (redis: true): Sentinel manages Redis masters"]
        );
    }

    #[test]
    fn empty_sentinel_list_is_rejected() {
        assert_eq!(
            sentinel_problems("  sentinels:\n   - 10.0.0.5:26379\n   - sentinel-2:26379\n", "  sentinels: []\n"),
            ["pool 'ha': key 'sentinels': has no Sentinels (list at least one host:port, or leave the key out)"]
        );
    }

    #[test]
    fn bad_sentinel_address_is_rejected() {
        assert_eq!(
            sentinel_problems("10.0.0.5:26379", "10.0.0.5"),
            ["pool 'ha': key 'sentinels': '10.0.0.5': is not host:port (a Sentinel's address, e.g. 10.0.0.5:26379)"]
        );
        assert_eq!(
            sentinel_problems("10.0.0.5:26379", "10.0.0.5:0"),
            ["pool 'ha': key 'sentinels': '10.0.0.5:0': '0' is not a port (1-65535)"]
        );
        assert_eq!(
            sentinel_problems("10.0.0.5:26379", ":26379"),
            ["pool 'ha': key 'sentinels': ':26379': the host is empty"]
        );
    }

    #[test]
    fn duplicate_sentinel_is_rejected() {
        assert_eq!(
            sentinel_problems("sentinel-2:26379", "10.0.0.5:26379"),
            ["pool 'ha': key 'sentinels': '10.0.0.5:26379' is listed more than once"]
        );
    }

    #[test]
    fn sentinels_must_be_a_list() {
        let problems = sentinel_problems(
            "  sentinels:\n   - 10.0.0.5:26379\n   - sentinel-2:26379\n",
            "  sentinels: 10.0.0.5:26379\n",
        );
        assert_eq!(
            problems,
            ["pool 'ha': key 'sentinels': must be a list of Sentinel addresses (host:port), found a single value"]
        );
    }

    #[test]
    fn address_in_a_sentinel_pool_is_rejected() {
        for line in [
            "127.0.0.1:6379:1",
            "127.0.0.1:1",
            "/tmp/redis.sock:1",
            "::1:1",
        ] {
            let problems = sentinel_problems("mymaster-2:1", line);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].starts_with(&format!("pool 'ha': key 'servers': '{line}': looks like an address: in a pool with 'sentinels'")),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn bad_master_lines_are_rejected() {
        assert_eq!(
            sentinel_problems("mymaster-2:1", "mymaster-2"),
            ["pool 'ha': key 'servers': 'mymaster-2': expected 'mastername:weight'"]
        );
        assert_eq!(
            sentinel_problems("mymaster-2:1", "mymaster-2:0"),
            ["pool 'ha': key 'servers': 'mymaster-2:0': weight must be at least 1"]
        );
        assert_eq!(
            sentinel_problems("mymaster-2:1", ":1"),
            ["pool 'ha': key 'servers': ':1': the master name is empty"]
        );
        assert!(sentinel_problems("mymaster-2:1", "mymaster-2:1 alias")[0]
            .starts_with("pool 'ha': key 'servers': 'mymaster-2:1 alias': expected 'mastername:weight' (no name after it"));
        assert_eq!(
            sentinel_problems("mymaster-2:1", "mymaster-1:1"),
            ["pool 'ha': key 'servers': more than one server is named 'mymaster-1' (names must be unique)"]
        );
    }

    #[test]
    fn sentinel_auth_needs_sentinels_and_a_value() {
        assert_eq!(
            rejection("  redis: true\n  sentinel_auth: x\n"),
            "pool 'alpha': key 'sentinel_auth': is only valid with 'sentinels' (the Sentinels' password)"
        );
        assert_eq!(
            sentinel_problems("  servers:", "  sentinel_auth: \"\"\n  servers:"),
            ["pool 'ha': key 'sentinel_auth': must not be empty (leave the key out for no password)"]
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_tcp_server_line_round_trips(
                host in "[a-z][a-z0-9.-]{0,20}",
                port in 1u16..,
                weight in 1u32..=i32::MAX as u32,
                name in proptest::option::of("[A-Za-z0-9_:.-]{1,12}"),
            ) {
                let line = match &name {
                    Some(n) => format!("{host}:{port}:{weight} {n}"),
                    None => format!("{host}:{port}:{weight}"),
                };
                let parsed = parse_server(&line).unwrap();
                prop_assert_eq!(parsed, tcp(&host, port, weight, name.as_deref()));
            }

            #[test]
            fn parse_server_never_panics(line in "\\PC{0,40}") {
                let _ = parse_server(&line);
                let _ = parse_mode(&line);
            }
        }
    }
}
