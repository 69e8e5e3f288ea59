//! `keyway plan -c OLD --to NEW`: per pool, the share of keys a config change moves, and from
//! which backend to which, over synthetic keys or a real sample `SCAN`ned from live servers.

use std::collections::BTreeMap;
use std::time::Duration;

use super::client::{self, Connection, Value};
use crate::config::{HostPort, PoolConfig};
use crate::route::{Distribution, ShardMap};

/// Synthetic keys routed when no sample is given; 20,000 give each share within about ±1%.
pub const SYNTHETIC_KEYS: usize = 20_000;
/// `SCAN ... COUNT` asked per call when sampling.
const SCAN_COUNT: &[u8] = b"1000";
/// Largest reply accepted from a sampled server.
const MAX_SCAN_REPLY: usize = 64 * 1024 * 1024;

/// What a config change does to a sample of keys in one pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moves {
    /// Keys routed on both maps.
    pub sampled: usize,
    /// Keys whose backend (by address) differs.
    pub moved: usize,
    /// The moved keys by `(old backend, new backend)` address, most first.
    pub flows: Vec<(String, String, usize)>,
}

impl Moves {
    /// The share of the sample that moves, 0.0 to 1.0 (0 for an empty sample).
    pub fn share(&self) -> f64 {
        if self.sampled == 0 {
            0.0
        } else {
            self.moved as f64 / self.sampled as f64
        }
    }
}

/// Routes `keys` on both pools' maps (every backend live); `None` when either pool is
/// `random` (keys have no fixed backend) or a cluster pool (the cluster places them).
///
/// ```
/// use keyway::config::Config;
/// use keyway::control::plan::moves;
///
/// let yaml = |servers: &str| format!("p:\n  listen: 127.0.0.1:22121\n  servers:\n{servers}");
/// let old = Config::parse(&yaml("   - 10.0.0.1:6379:1\n"))?.pools.remove(0);
/// let new = Config::parse(&yaml("   - 10.0.0.2:6379:1\n"))?.pools.remove(0);
/// let moves = moves(&old, &new, [&b"a"[..], b"b"]).unwrap();
/// assert_eq!((moves.sampled, moves.moved), (2, 2));
/// assert_eq!(moves.flows, [("10.0.0.1:6379".to_string(), "10.0.0.2:6379".to_string(), 2)]);
/// # Ok::<(), keyway::config::Error>(())
/// ```
pub fn moves<'k>(
    old: &PoolConfig,
    new: &PoolConfig,
    keys: impl IntoIterator<Item = &'k [u8]>,
) -> Option<Moves> {
    let fixed =
        |pool: &PoolConfig| pool.distribution != Distribution::Random && pool.cluster.is_none();
    if !fixed(old) || !fixed(new) {
        return None;
    }
    let (old_map, new_map) = (map_of(old), map_of(new));
    let mut flows: BTreeMap<(String, String), usize> = BTreeMap::new();
    let (mut sampled, mut moved) = (0, 0);
    for key in keys {
        sampled += 1;
        let before = old_map.route(key).and_then(|s| address(old, s));
        let after = new_map.route(key).and_then(|s| address(new, s));
        if before != after {
            moved += 1;
            let label = |addr: Option<String>| addr.unwrap_or_else(|| "nowhere".into());
            *flows.entry((label(before), label(after))).or_default() += 1;
        }
    }
    let mut flows: Vec<(String, String, usize)> =
        flows.into_iter().map(|((a, b), n)| (a, b, n)).collect();
    flows.sort_by_key(|flow| std::cmp::Reverse(flow.2));
    Some(Moves {
        sampled,
        moved,
        flows,
    })
}

/// `keyway:sample:0` ... : the synthetic keys.
pub fn synthetic_keys() -> Vec<Vec<u8>> {
    (0..SYNTHETIC_KEYS)
        .map(|n| format!("keyway:sample:{n}").into_bytes())
        .collect()
}

/// The pool's shard map with every backend live.
pub(super) fn map_of(pool: &PoolConfig) -> ShardMap {
    let specs: Vec<_> = pool.servers.iter().map(|s| s.shard_spec()).collect();
    ShardMap::new(pool.hash, pool.distribution, pool.hash_tag, &specs)
}

fn address(pool: &PoolConfig, shard: usize) -> Option<String> {
    pool.servers
        .get(shard)
        .map(|server| server.addr.to_string())
}

/// Up to `limit` keys from each of `servers` (Redis servers, or a Keyway pool, which scans
/// all its backends), by `SCAN` with `COUNT 1000`, authenticating with `auth` when set;
/// every call is bound by `timeout`.
///
/// # Errors
/// A server could not be reached, refused the password or answered `SCAN` with an error.
pub async fn sample(
    servers: &[HostPort],
    auth: Option<&str>,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<Vec<u8>>, client::Error> {
    let mut keys = Vec::new();
    // A sample is taken over plain connections: `--sample-from` names servers, not a pool.
    let access = client::Access {
        auth: auth.map(str::to_owned),
        tls: None,
    };
    for server in servers {
        let mut connection = Connection::open(server, &access, timeout, MAX_SCAN_REPLY).await?;
        let mut cursor = b"0".to_vec();
        let mut taken = 0;
        loop {
            let reply = connection
                .call(&[b"SCAN", &cursor, b"COUNT", SCAN_COUNT])
                .await?;
            let Some([next, Value::Array(Some(batch))]) = reply.items() else {
                return Err(client::unexpected(reply));
            };
            let Some(next) = next.text() else {
                return Err(client::unexpected(reply));
            };
            for key in batch {
                if let Value::Bulk(Some(key)) = key {
                    if taken < limit {
                        keys.push(key.clone());
                        taken += 1;
                    }
                }
            }
            if next == "0" || taken >= limit {
                break;
            }
            cursor = next.into_bytes();
        }
    }
    Ok(keys)
}

/// The plan, a few lines per pool (matched by name): unchanged, added, removed, or the share
/// of `keys` that moves and each flow `old backend -> new backend`. `source` names the keys.
pub fn report(
    old: &[PoolConfig],
    new: &[PoolConfig],
    keys: &[Vec<u8>],
    source: &str,
) -> Vec<String> {
    let mut lines = Vec::new();
    for pool in new {
        let Some(before) = old.iter().find(|o| o.name == pool.name) else {
            lines.push(format!("pool '{}': added", pool.name));
            continue;
        };
        match moves(before, pool, keys.iter().map(Vec::as_slice)) {
            None => lines.push(format!(
                "pool '{}': keys have no fixed backend (random or cluster)",
                pool.name
            )),
            Some(moves) if moves.moved == 0 => lines.push(format!(
                "pool '{}': no key moves ({} {source} keys)",
                pool.name, moves.sampled
            )),
            Some(moves) => {
                lines.push(format!(
                    "pool '{}': {:.1}% of keys move ({} of {} {source} keys)",
                    pool.name,
                    moves.share() * 100.0,
                    moves.moved,
                    moves.sampled
                ));
                for (from, to, count) in &moves.flows {
                    lines.push(format!(
                        "  {from} -> {to}: {:.1}% ({count})",
                        *count as f64 * 100.0 / moves.sampled.max(1) as f64
                    ));
                }
                if let Some(migration) = &pool.migration {
                    lines.push(format!(
                        "  migration: read-through from the old owners for {}{}",
                        humantime::format_duration(migration.window),
                        if migration.copy { ", copying" } else { "" }
                    ));
                }
            }
        }
    }
    for pool in old {
        if !new.iter().any(|n| n.name == pool.name) {
            lines.push(format!("pool '{}': removed", pool.name));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn pool(servers: &[&str]) -> PoolConfig {
        let mut text = "p:\n  listen: 127.0.0.1:22121\n  redis: true\n  servers:\n".to_string();
        for s in servers {
            text.push_str(&format!("   - {s}\n"));
        }
        Config::parse(&text).unwrap().pools.remove(0)
    }

    #[test]
    fn growing_three_backends_to_four_moves_a_quarter_all_to_the_new_one() {
        let three = ["127.0.0.1:7001:1", "127.0.0.1:7002:1", "127.0.0.1:7003:1"];
        let four = [&three[..], &["127.0.0.1:7004:1"]].concat();
        let keys = synthetic_keys();
        let moves = moves(&pool(&three), &pool(&four), keys.iter().map(Vec::as_slice)).unwrap();
        assert!((0.18..0.32).contains(&moves.share()), "{moves:?}");
        assert_eq!(moves.flows.len(), 3, "{moves:?}");
        assert!(moves.flows.iter().all(|(_, to, _)| to == "127.0.0.1:7004"));
        assert_eq!(moves.flows.iter().map(|f| f.2).sum::<usize>(), moves.moved);
        let lines = report(&[pool(&three)], &[pool(&four)], &keys, "synthetic");
        assert!(lines[0].starts_with("pool 'p': 2") || lines[0].starts_with("pool 'p': "));
        assert!(lines[0].contains("of 20000 synthetic keys"), "{lines:?}");
        assert!(
            lines[1].starts_with("  127.0.0.1:700") && lines[1].contains("-> 127.0.0.1:7004: ")
        );
    }

    #[test]
    fn an_unchanged_pool_moves_nothing() {
        let servers = ["127.0.0.1:7001:1", "127.0.0.1:7002:1"];
        let lines = report(
            &[pool(&servers)],
            &[pool(&servers)],
            &synthetic_keys(),
            "synthetic",
        );
        assert_eq!(lines, ["pool 'p': no key moves (20000 synthetic keys)"]);
    }
}
