//! Raw pools → typed [`PoolConfig`]s: nutcracker's defaults, its value rules (`nc_conf.c`),
//! and every problem reported with its pool and key.
//!
//! [`PoolChecker::check`] reads one pool in the order its problems are reported, one concern
//! per file:
//! - `nutcracker`: nutcracker's scalar keys (`listen`, `hash`, ... `server_failure_limit`);
//! - `limits`: Keyway's size and pipeline limits;
//! - `sources`: where the backends come from when not from `servers` alone: Redis Sentinel
//!   (`sentinels`, `sentinel_auth`) or a Redis Cluster (`cluster`, `read_from`), and the keys a
//!   cluster pool cannot use;
//! - `servers`: the `servers` lines, their names and nutcracker's shard order;
//! - `slots`: `distribution: slots` and its `slots` key;
//! - `migration`: `distribution: sharded_jedis` (`jedis_names`) and the `migration` key.
//! - `tls`: `tls` and `server_tls`, whose files are read and checked here.
//!
//! The value parsers several of them share (nutcracker's numbers, booleans, ports) are here.

mod limits;
mod migration;
mod nutcracker;
mod servers;
mod slots;
mod sources;
mod tls;

use std::time::Duration;

use super::keys::Key;
use super::raw::{RawConfig, RawPool, Scalar};
use super::{Config, PoolConfig, Problem};
use crate::route::Distribution;
pub(crate) use nutcracker::parse_listen;
use nutcracker::Nutcracker;

/// nutcracker reads numbers into a C `int` and rejects negatives.
const MAX_NUMBER: u64 = i32::MAX as u64;

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
                    key: Key::Listen.name().into(),
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
    fn check(&mut self, mut raw: RawPool) -> Option<PoolConfig> {
        let before = self.problems.len();
        if self.name.is_empty() {
            self.problems.push(Problem::Pool {
                pool: String::new(),
                message: "a pool name must not be empty".into(),
            });
        }
        let limits = self.limits(&mut raw);
        let hash_is_set = raw.has(Key::Hash);
        let distribution_is_set = raw.has(Key::Distribution);
        let mut keys = self.nutcracker_keys(&mut raw);
        let masters = raw.has(Key::Sentinels);
        let clustered = raw.has(Key::Cluster);
        let sentinel = self.sentinel(
            raw.lines(Key::Sentinels),
            raw.scalar(Key::SentinelAuth),
            keys.redis,
        );
        let cluster = self.cluster(
            raw.lines(Key::Cluster),
            raw.scalar(Key::ReadFrom),
            keys.redis,
        );
        let allow_flush = self.or_default(
            raw.scalar(Key::AllowFlush),
            Key::AllowFlush,
            false,
            parse_bool,
        );
        if allow_flush == Some(true) && keys.redis == Some(false) {
            self.problem(
                Key::AllowFlush,
                "is only valid on a redis pool (redis: true)".into(),
            );
        }
        let listed_order = matches!(keys.distribution, Some(Distribution::ShardedJedis(_)));
        let mut servers =
            self.servers_key(raw.lines(Key::Servers), clustered, masters, listed_order);
        self.jedis_rules(
            &mut keys,
            hash_is_set,
            raw.scalar(Key::JedisNames),
            servers.as_deref(),
        );
        let migration = self.migration(raw.fields(Key::Migration), clustered);
        let users = self.users(raw.lines(Key::Users), &keys);
        let slots = raw.slots();
        let tls = self.tls(raw.fields(Key::Tls));
        let server_tls = self.server_tls(raw.fields(Key::ServerTls), servers.as_ref());
        if clustered {
            self.cluster_rules(&mut keys, masters, hash_is_set, distribution_is_set, &slots);
        } else if keys.distribution == Some(Distribution::Slots) {
            self.slots_rules(&mut keys, hash_is_set, slots, servers.as_mut());
        } else if slots.is_some() {
            self.problem(Key::Slots, "is only valid with distribution: slots".into());
        }

        if self.problems.len() > before {
            return None;
        }
        let Nutcracker {
            listen,
            hash,
            hash_tag,
            distribution,
            timeout,
            backlog,
            client_connections,
            redis,
            tcpkeepalive,
            reuseport,
            redis_auth,
            redis_db,
            preconnect,
            auto_eject_hosts,
            server_connections,
            server_retry_timeout,
            server_failure_limit,
        } = keys;
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
            allow_flush: allow_flush?,
            migration: migration?,
            users: users?,
            tls: tls?,
            server_tls: server_tls?,
        })
    }

    /// `users`: ACL users, on a redis pool; the default user follows `redis_auth` unless a
    /// line names it.
    fn users(
        &mut self,
        lines: Option<Vec<String>>,
        keys: &Nutcracker,
    ) -> Option<Option<std::sync::Arc<crate::acl::Users>>> {
        let Some(lines) = lines else {
            return Some(None);
        };
        if keys.redis == Some(false) {
            self.problem(
                Key::Users,
                "is only valid on a redis pool (redis: true)".into(),
            );
            return None;
        }
        let redis_auth = keys.redis_auth.as_ref().and_then(|auth| auth.as_deref());
        let users = crate::acl::Users::parse(&lines, redis_auth);
        self.value(Key::Users, users)
            .map(|users| Some(std::sync::Arc::new(users)))
    }

    /// The parsed value, or the default when the key is absent.
    fn or_default<T>(
        &mut self,
        scalar: Scalar,
        key: Key,
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
        key: Key,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        match scalar.0 {
            Some(text) => self.value(key, parse(&text)).map(Some),
            None => Some(None),
        }
    }

    fn value<T>(&mut self, key: Key, parsed: Result<T, String>) -> Option<T> {
        parsed.map_err(|message| self.problem(key, message)).ok()
    }

    fn missing<T>(&mut self, key: Key) -> Option<T> {
        self.problem(key, "is missing".into());
        None
    }

    fn problem(&mut self, key: Key, message: String) {
        self.problems.push(Problem::Key {
            pool: self.name.to_owned(),
            key: key.name().to_owned(),
            message,
        });
    }
}

fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
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

/// A password key's value (`redis_auth`, `sentinel_auth`): any text but the empty string.
fn parse_password(text: &str) -> Result<String, String> {
    if text.is_empty() {
        Err("must not be empty (leave the key out for no password)".into())
    } else {
        Ok(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::route::HashFn;

    pub(super) fn pool(extra: &str) -> String {
        format!("alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1\n{extra}")
    }

    pub(super) fn parse(text: &str) -> Result<Config, Vec<String>> {
        Config::parse(text).map_err(|e| e.problems().iter().map(ToString::to_string).collect())
    }

    pub(super) fn first(extra: &str) -> PoolConfig {
        match parse(&pool(extra)) {
            Ok(mut config) => config.pools.remove(0),
            Err(problems) => panic!("{problems:?}"),
        }
    }

    /// The single problem reported for `extra` added to a valid pool.
    pub(super) fn rejection(extra: &str) -> String {
        let problems = parse(&pool(extra)).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems[0].clone()
    }

    #[test]
    fn users_are_compiled_and_bad_rules_rejected_without_the_password() {
        let p = first("  redis: true\n  users:\n   - \"app on >s3cret ~app:* +@read\"\n");
        let users = p.users.unwrap();
        assert!(users.authenticate(b"app", b"s3cret").is_ok());
        assert!(users.authenticate(b"default", b"").is_err());
        assert_eq!(
            rejection("  redis: true\n  users:\n   - \"app on <s3cret\"\n"),
            "pool 'alpha': key 'users': user line 1 ('app'): rule '<(redacted)': the password \
             to remove does not exist: it is not one of the user's"
        );
        assert!(rejection("  users:\n   - \"app on\"\n").contains("only valid on a redis pool"));
        assert!(rejection("  redis: true\n  users: app\n").contains("must be a list"));
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
    fn allow_flush_is_a_redis_pools_opt_in() {
        assert!(!first("  redis: true\n").allow_flush);
        assert!(first("  redis: true\n  allow_flush: true\n").allow_flush);
        assert_eq!(
            rejection("  allow_flush: true\n"),
            "pool 'alpha': key 'allow_flush': is only valid on a redis pool (redis: true)"
        );
        assert!(
            rejection("  redis: true\n  allow_flush: yes\n").contains("'yes' is not true or false")
        );
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
    fn rejects_non_boolean() {
        assert_eq!(
            rejection("  redis: yes\n"),
            "pool 'alpha': key 'redis': 'yes' is not true or false"
        );
        assert!(rejection("  preconnect: True\n").contains("'True' is not true or false"));
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
    fn all_problems_across_pools_are_reported() {
        let text = "a:\n  listen: 127.0.0.1\n  hash: x\n  redis: 1\n  servers:\n   - h:1:1\n\
                    b:\n  listen: 127.0.0.1:1\n  timeout: x\n  servers:\n   - h:1:0\n";
        assert_eq!(parse(text).unwrap_err().len(), 5);
    }

    #[test]
    fn parse_number_matches_nc_atoi() {
        assert_eq!(parse_number("0"), Ok(0));
        assert_eq!(parse_number("007"), Ok(7));
        for bad in ["", " 1", "1 ", "-0", "+1", "1e3", "٣"] {
            assert!(parse_number(bad).is_err(), "{bad:?}");
        }
    }
}
