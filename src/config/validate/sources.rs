//! Where a pool's backends come from when `servers` alone does not say: Redis Sentinel
//! (`sentinels`, `sentinel_auth`; the `servers` lines name masters) or a Redis Cluster
//! (`cluster`, `read_from`; no `servers` at all), and the keys a cluster pool cannot use.

use super::nutcracker::Nutcracker;
use super::servers::parse_weight;
use super::{parse_password, parse_port, PoolChecker};
use crate::config::keys::Key;
use crate::config::raw::{RawMap, Scalar};
use crate::config::{
    BackendAddr, BackendConfig, ClusterConfig, HostPort, ReadFrom, SentinelConfig,
};
use crate::route::Distribution;

/// One of the two address-list keys, `cluster` and `sentinels`: a redis-only list of distinct
/// `host:port` lines with a companion key that is valid only beside it.
struct AddressList {
    key: Key,
    /// The key valid only with this one, and the problem when it stands alone.
    companion: (Key, &'static str),
    /// The problem on a memcached pool.
    redis_only: &'static str,
    /// The problem when the list is empty.
    empty: &'static str,
    /// What an entry should be, for the problem with a malformed one.
    entry: &'static str,
}

const CLUSTER: AddressList = AddressList {
    key: Key::Cluster,
    companion: (
        Key::ReadFrom,
        "is only valid with 'cluster' (which Redis Cluster nodes serve reads)",
    ),
    redis_only: "is only valid on a redis pool (redis: true): it names Redis Cluster nodes",
    empty: "has no seeds (list at least one node as host:port, or leave the key out)",
    entry: "a cluster node's address, e.g. 10.0.0.5:7000",
};

const SENTINELS: AddressList = AddressList {
    key: Key::Sentinels,
    companion: (
        Key::SentinelAuth,
        "is only valid with 'sentinels' (the Sentinels' password)",
    ),
    redis_only: "is only valid on a redis pool (redis: true): Sentinel manages Redis masters",
    empty: "has no Sentinels (list at least one host:port, or leave the key out)",
    entry: "a Sentinel's address, e.g. 10.0.0.5:26379",
};

impl PoolChecker<'_> {
    /// The `cluster` and `read_from` keys: `Some(None)` for a pool that is not a cluster,
    /// `None` when either key is wrong (the problems are recorded).
    pub(super) fn cluster(
        &mut self,
        lines: Option<Vec<String>>,
        read_from: Scalar,
        redis: Option<bool>,
    ) -> Option<Option<ClusterConfig>> {
        let before = self.problems.len();
        let Some(seeds) = self.addresses(&CLUSTER, lines, &read_from, redis)? else {
            return Some(None);
        };
        let read_from = self.or_default(read_from, Key::ReadFrom, ReadFrom::Master, |text| {
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
    pub(super) fn sentinel(
        &mut self,
        lines: Option<Vec<String>>,
        auth: Scalar,
        redis: Option<bool>,
    ) -> Option<Option<SentinelConfig>> {
        let before = self.problems.len();
        let Some(sentinels) = self.addresses(&SENTINELS, lines, &auth, redis)? else {
            return Some(None);
        };
        let auth = self.optional(auth, Key::SentinelAuth, parse_password);
        if self.problems.len() > before {
            return None;
        }
        Some(Some(SentinelConfig {
            sentinels,
            auth: auth?,
        }))
    }

    /// `list`'s addresses: `Some(None)` when the key is absent, `None` when its companion is
    /// set without it; otherwise every valid address, in file order, each problem recorded.
    fn addresses(
        &mut self,
        list: &AddressList,
        lines: Option<Vec<String>>,
        companion: &Scalar,
        redis: Option<bool>,
    ) -> Option<Option<Vec<HostPort>>> {
        let Some(lines) = lines else {
            if companion.0.is_some() {
                let (key, alone) = list.companion;
                self.problem(key, alone.into());
                return None;
            }
            return Some(None);
        };
        if redis == Some(false) {
            self.problem(list.key, list.redis_only.into());
        }
        if lines.is_empty() {
            self.problem(list.key, list.empty.into());
        }
        let mut addresses: Vec<HostPort> = Vec::with_capacity(lines.len());
        for line in &lines {
            match parse_host_port(line, list.entry) {
                Ok(addr) if addresses.contains(&addr) => {
                    self.problem(list.key, format!("'{line}' is listed more than once"));
                }
                Ok(addr) => addresses.push(addr),
                Err(message) => self.problem(list.key, format!("'{line}': {message}")),
            }
        }
        Some(Some(addresses))
    }

    /// The rules of a cluster pool: it routes by Redis Cluster's slots (`{}` hash tags,
    /// CRC16), in database 0, and the keys that would say otherwise are refused.
    pub(super) fn cluster_rules(
        &mut self,
        keys: &mut Nutcracker,
        masters: bool,
        hash_is_set: bool,
        distribution_is_set: bool,
        slots: &Option<RawMap>,
    ) {
        if masters {
            self.problem(
                Key::Cluster,
                "cannot be combined with 'sentinels' (a Redis Cluster fails over by itself)".into(),
            );
        }
        if distribution_is_set && keys.distribution != Some(Distribution::Slots) {
            self.problem(
                Key::Distribution,
                "a cluster pool routes by Redis Cluster's slots (remove the key or write \
                 slots)"
                    .into(),
            );
        }
        keys.distribution = Some(Distribution::Slots);
        if hash_is_set {
            self.problem(
                Key::Hash,
                "is not used by a cluster pool, which hashes CRC16(key) mod 16384 as Redis \
                 Cluster does (remove the key)"
                    .into(),
            );
        }
        keys.hash_tag = self.slots_hash_tag(keys.hash_tag);
        if keys.redis_db.is_some_and(|db| db != 0) {
            self.problem(
                Key::RedisDb,
                "must be 0 in a cluster pool (Redis Cluster has only database 0)".into(),
            );
        }
        if keys.auto_eject_hosts == Some(true) {
            self.problem(
                Key::AutoEjectHosts,
                "is not used by a cluster pool: the cluster promotes a replica when a \
                 master fails, and Keyway follows (remove the key)"
                    .into(),
            );
        }
        if slots.is_some() {
            self.problem(
                Key::Slots,
                "is not used with 'cluster': the cluster says which node owns each slot".into(),
            );
        }
    }
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
pub(super) fn parse_master(line: &str) -> Result<BackendConfig, String> {
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
    use crate::config::validate::tests::{first, parse, rejection};
    use crate::config::{HostPort, ReadFrom};
    use crate::route::Distribution;

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
}
