//! What a config change does to a pool: which settings changed, and the share of keys that
//! would move to another backend (estimated by routing the same sample keys on both maps).

use super::plan;
use crate::config::keys::Key;
use crate::config::{Limits, PoolConfig};

/// The settings that differ between two versions of a pool, by their config key (the
/// config's key table names them). Every field of [`PoolConfig`] and [`Limits`] is named here
/// (the destructuring does not compile without a new one); a Sentinel or cluster setting that
/// changed is reported under the key that makes the pool one (`sentinels`, `cluster`).
pub fn changed_keys(old: &PoolConfig, new: &PoolConfig) -> Vec<&'static str> {
    let PoolConfig {
        name: _,
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
        servers,
        limits,
        sentinel,
        cluster,
        allow_flush,
        migration,
        users,
        tls,
        server_tls,
    } = old;
    let Limits {
        max_request_bytes,
        max_multibulk_length,
        max_key_bytes,
        max_pipeline,
        max_reply_bytes,
        client_output_limit,
        client_output_hard_limit,
        dedicated_connections,
    } = limits;
    let now = &new.limits;
    [
        (Key::Listen, *listen != new.listen),
        (Key::Hash, *hash != new.hash),
        (Key::HashTag, *hash_tag != new.hash_tag),
        (
            Key::Distribution,
            distribution.name() != new.distribution.name(),
        ),
        (Key::Timeout, *timeout != new.timeout),
        (Key::Backlog, *backlog != new.backlog),
        (
            Key::ClientConnections,
            *client_connections != new.client_connections,
        ),
        (Key::Redis, *redis != new.redis),
        (Key::Tcpkeepalive, *tcpkeepalive != new.tcpkeepalive),
        (Key::Reuseport, *reuseport != new.reuseport),
        (Key::RedisAuth, *redis_auth != new.redis_auth),
        (Key::RedisDb, *redis_db != new.redis_db),
        (Key::Preconnect, *preconnect != new.preconnect),
        (
            Key::AutoEjectHosts,
            *auto_eject_hosts != new.auto_eject_hosts,
        ),
        (
            Key::ServerConnections,
            *server_connections != new.server_connections,
        ),
        (
            Key::ServerRetryTimeout,
            *server_retry_timeout != new.server_retry_timeout,
        ),
        (
            Key::ServerFailureLimit,
            *server_failure_limit != new.server_failure_limit,
        ),
        (Key::Servers, *servers != new.servers),
        (
            Key::MaxRequestBytes,
            *max_request_bytes != now.max_request_bytes,
        ),
        (
            Key::MaxMultibulkLength,
            *max_multibulk_length != now.max_multibulk_length,
        ),
        (Key::MaxKeyBytes, *max_key_bytes != now.max_key_bytes),
        (Key::MaxPipeline, *max_pipeline != now.max_pipeline),
        (Key::MaxReplyBytes, *max_reply_bytes != now.max_reply_bytes),
        (
            Key::ClientOutputLimit,
            *client_output_limit != now.client_output_limit,
        ),
        (
            Key::ClientOutputHardLimit,
            *client_output_hard_limit != now.client_output_hard_limit,
        ),
        (
            Key::DedicatedConnections,
            *dedicated_connections != now.dedicated_connections,
        ),
        (Key::Sentinels, *sentinel != new.sentinel),
        (Key::Cluster, *cluster != new.cluster),
        (Key::AllowFlush, *allow_flush != new.allow_flush),
        (
            Key::JedisNames,
            distribution.name() == new.distribution.name() && *distribution != new.distribution,
        ),
        (Key::Migration, *migration != new.migration),
        (Key::Users, *users != new.users),
        (Key::Tls, *tls != new.tls),
        (Key::ServerTls, *server_tls != new.server_tls),
    ]
    .into_iter()
    .filter_map(|(key, differs)| differs.then_some(key.name()))
    .collect()
}

/// The estimated share (0.0 to 1.0) of keys whose backend (by address) differs between the
/// two pools' maps, over [`plan::synthetic_keys`]; `None` for `random` distribution (or a
/// cluster pool), where keys have no fixed backend. `keyway plan` tells where they go.
///
/// ```
/// use keyway::config::Config;
/// use keyway::control::diff::moved_share;
/// let old = Config::parse("p:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:7001:1\n   - 127.0.0.1:7002:1\n")?;
/// let same = old.pools[0].clone();
/// assert_eq!(moved_share(&old.pools[0], &same), Some(0.0));
/// # Ok::<(), keyway::config::Error>(())
/// ```
pub fn moved_share(old: &PoolConfig, new: &PoolConfig) -> Option<f64> {
    let keys = plan::synthetic_keys();
    plan::moves(old, new, keys.iter().map(Vec::as_slice)).map(|moves| moves.share())
}

/// One line per pool describing the change from `old` to `new` (pools matched by name).
pub fn describe(old: &[PoolConfig], new: &[PoolConfig]) -> Vec<String> {
    let mut lines = Vec::new();
    for pool in new {
        match old.iter().find(|o| o.name == pool.name) {
            None => lines.push(format!("pool '{}': added", pool.name)),
            Some(before) if before == pool => {
                lines.push(format!("pool '{}': unchanged", pool.name))
            }
            Some(before) => {
                let keys = changed_keys(before, pool).join(", ");
                let share = match moved_share(before, pool) {
                    Some(share) => format!("~{:.1}% of keys move", share * 100.0),
                    None => "keys have no fixed backend (random or cluster)".to_string(),
                };
                let window = match &pool.migration {
                    Some(migration) if before.servers != pool.servers => format!(
                        "; migration window {}{}: misses read through from the old owners",
                        humantime::format_duration(migration.window),
                        if migration.copy { ", copying" } else { "" }
                    ),
                    _ => String::new(),
                };
                lines.push(format!(
                    "pool '{}': changed ({keys}); {share}{window}",
                    pool.name
                ));
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

    fn pool(servers: &[&str], extra: &str) -> PoolConfig {
        let mut text = format!("p:\n  listen: 127.0.0.1:22121\n  redis: true\n{extra}  servers:\n");
        for s in servers {
            text.push_str(&format!("   - {s}\n"));
        }
        Config::parse(&text).unwrap().pools.remove(0)
    }

    #[test]
    fn adding_one_of_five_ketama_backends_moves_about_a_fifth() {
        let four = [
            "127.0.0.1:7001:1",
            "127.0.0.1:7002:1",
            "127.0.0.1:7003:1",
            "127.0.0.1:7004:1",
        ];
        let five = [&four[..], &["127.0.0.1:7005:1"]].concat();
        let share = moved_share(&pool(&four, ""), &pool(&five, "")).unwrap();
        assert!((0.12..0.28).contains(&share), "{share}");
    }

    #[test]
    fn changing_the_hash_moves_most_keys() {
        let servers = ["127.0.0.1:7001:1", "127.0.0.1:7002:1", "127.0.0.1:7003:1"];
        let share = moved_share(&pool(&servers, ""), &pool(&servers, "  hash: murmur\n")).unwrap();
        assert!(share > 0.5, "{share}");
    }

    #[test]
    fn describe_names_added_removed_and_changed_keys() {
        let a = pool(&["127.0.0.1:7001:1"], "");
        let mut b = pool(&["127.0.0.1:7001:1", "127.0.0.1:7002:1"], "");
        b.name = "q".into();
        let mut a2 = a.clone();
        a2.timeout = Some(std::time::Duration::from_millis(5));
        let lines = describe(std::slice::from_ref(&a), &[a2, b]);
        assert_eq!(lines[0], "pool 'p': changed (timeout); ~0.0% of keys move");
        assert_eq!(lines[1], "pool 'q': added");
        let lines = describe(&[a], &[]);
        assert_eq!(lines, ["pool 'p': removed"]);
    }

    #[test]
    fn a_changed_cluster_setting_is_named() {
        let cluster = |read_from: &str| {
            let text = format!(
                "p:\n  listen: 127.0.0.1:22121\n  redis: true\n  cluster:\n   - 127.0.0.1:7001\n  read_from: {read_from}\n"
            );
            Config::parse(&text).unwrap().pools.remove(0)
        };
        let (a, b) = (cluster("master"), cluster("replica"));
        assert_eq!(changed_keys(&a, &b), ["cluster"]);
        assert!(changed_keys(&a, &a).is_empty());
    }

    #[test]
    fn a_changed_limit_is_named_by_its_key() {
        let a = pool(&["127.0.0.1:7001:1"], "");
        let b = pool(
            &["127.0.0.1:7001:1"],
            "  max_pipeline: 16\n  client_output_limit: 1000\n",
        );
        assert_eq!(
            changed_keys(&a, &b),
            ["max_pipeline", "client_output_limit"]
        );
    }
}
