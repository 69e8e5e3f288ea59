//! nutcracker's scalar pool keys: `listen` through `server_failure_limit`, with its defaults
//! and its parsing rules (`nc_conf.c`), checked differentially by `tests/config_compat.rs`.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use super::{millis, parse_bool, parse_number, parse_password, parse_port, PoolChecker};
use crate::config::keys::Key;
use crate::config::raw::RawPool;
use crate::config::Listen;
use crate::route::{Distribution, HashFn};

/// The hash names nutcracker knows, then Keyway's `murmur3` and `murmur64a`, for error messages.
const HASH_NAMES: &str =
    "one_at_a_time md5 crc16 crc32 crc32a fnv1_64 fnv1a_64 fnv1_32 fnv1a_32 hsieh murmur jenkins murmur3 murmur64a";
const DISTRIBUTION_NAMES: &str = "ketama modula random, or Keyway's slots and sharded_jedis";
/// `sizeof(sun_path)` on Linux, counting the terminating NUL.
const UNIX_PATH_CAPACITY: usize = 108;
/// The largest permission nutcracker accepts on a listen socket.
const MAX_MODE: u32 = 0o777;

/// nutcracker's scalar keys as read: each `None` when its value is wrong (the problem is
/// recorded), so that the later checks still see the others.
pub(super) struct Nutcracker {
    pub(super) listen: Option<Listen>,
    pub(super) hash: Option<HashFn>,
    pub(super) hash_tag: Option<Option<[u8; 2]>>,
    pub(super) distribution: Option<Distribution>,
    pub(super) timeout: Option<Option<Duration>>,
    pub(super) backlog: Option<u32>,
    pub(super) client_connections: Option<u32>,
    pub(super) redis: Option<bool>,
    pub(super) tcpkeepalive: Option<bool>,
    pub(super) reuseport: Option<bool>,
    pub(super) redis_auth: Option<Option<String>>,
    pub(super) redis_db: Option<u32>,
    pub(super) preconnect: Option<bool>,
    pub(super) auto_eject_hosts: Option<bool>,
    pub(super) server_connections: Option<u32>,
    pub(super) server_retry_timeout: Option<Duration>,
    pub(super) server_failure_limit: Option<u32>,
}

impl PoolChecker<'_> {
    /// Takes and checks nutcracker's scalar keys, in its order.
    pub(super) fn nutcracker_keys(&mut self, raw: &mut RawPool) -> Nutcracker {
        let listen = match raw.scalar(Key::Listen).0 {
            Some(text) => self.value(Key::Listen, parse_listen(&text)),
            None => self.missing(Key::Listen),
        };
        let hash = self.or_default(raw.scalar(Key::Hash), Key::Hash, HashFn::Fnv1a_64, |text| {
            HashFn::parse(text).ok_or_else(|| {
                format!("unknown hash function '{text}' (expected one of {HASH_NAMES})")
            })
        });
        let hash_tag = self.optional(raw.scalar(Key::HashTag), Key::HashTag, |text| {
            <[u8; 2]>::try_from(text.as_bytes()).map_err(|_| {
                format!("'{text}' is not a hash tag of exactly two characters, e.g. \"{{}}\"")
            })
        });
        let distribution = self.or_default(
            raw.scalar(Key::Distribution),
            Key::Distribution,
            Distribution::Ketama,
            |text| {
                Distribution::parse(text).ok_or_else(|| {
                    format!("unknown distribution '{text}' (expected one of {DISTRIBUTION_NAMES})")
                })
            },
        );
        let timeout = self
            .optional(raw.scalar(Key::Timeout), Key::Timeout, parse_number)
            .map(|ms| ms.filter(|&ms| ms > 0).map(millis));
        let mut number =
            |key: Key, default: u32| self.or_default(raw.scalar(key), key, default, parse_number);
        let backlog = number(Key::Backlog, 512);
        let client_connections = number(Key::ClientConnections, 0);
        let mut flag = |key: Key| self.or_default(raw.scalar(key), key, false, parse_bool);
        let redis = flag(Key::Redis);
        let tcpkeepalive = flag(Key::Tcpkeepalive);
        let reuseport = flag(Key::Reuseport);
        let redis_auth = self.optional(raw.scalar(Key::RedisAuth), Key::RedisAuth, parse_password);
        if let (Some(Some(_)), Some(false)) = (&redis_auth, redis) {
            self.problem(
                Key::RedisAuth,
                "is only valid on a redis pool (redis: true)".into(),
            );
        }
        let redis_db = self.or_default(raw.scalar(Key::RedisDb), Key::RedisDb, 0, parse_number);
        let mut flag = |key: Key| self.or_default(raw.scalar(key), key, false, parse_bool);
        let preconnect = flag(Key::Preconnect);
        let auto_eject_hosts = flag(Key::AutoEjectHosts);
        let server_connections = self.or_default(
            raw.scalar(Key::ServerConnections),
            Key::ServerConnections,
            1,
            |text| match parse_number(text)? {
                0 => Err("cannot be 0".into()),
                n => Ok(n),
            },
        );
        let mut number =
            |key: Key, default: u32| self.or_default(raw.scalar(key), key, default, parse_number);
        let server_retry_timeout = number(Key::ServerRetryTimeout, 30_000).map(millis);
        let server_failure_limit = number(Key::ServerFailureLimit, 2);
        Nutcracker {
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
        }
    }
}

/// `host:port`, `ip:port` (IPv6 as `::1:port`, or `[::1]:port`) or `/path.sock [octal perm]`.
pub(crate) fn parse_listen(text: &str) -> Result<Listen, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::tests::{first, parse, rejection};
    use std::net::{IpAddr, Ipv6Addr, SocketAddr};

    #[test]
    fn murmur3_is_a_keyway_hash() {
        assert_eq!(first("  hash: murmur3\n").hash, HashFn::Murmur3);
    }

    #[test]
    fn zero_timeout_means_none() {
        assert_eq!(first("  timeout: 0\n").timeout, None);
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
    fn rejects_negative_redis_db() {
        assert!(rejection("  redis_db: -1\n").starts_with("pool 'alpha': key 'redis_db': "));
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
    fn rejects_missing_listen() {
        assert_eq!(
            parse("a:\n  servers:\n   - 127.0.0.1:6379:1\n").unwrap_err(),
            ["pool 'a': key 'listen': is missing"]
        );
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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_mode_never_panics(line in "\\PC{0,40}") {
                let _ = parse_mode(&line);
            }
        }
    }
}
