//! Moving keys without losing the cache: `distribution: sharded_jedis` (its hash, hash tag and
//! `jedis_names`) and the `migration` key (read-through from the old owners after a change of
//! servers).

use std::time::Duration;

use super::nutcracker::Nutcracker;
use super::{parse_bool, PoolChecker};
use crate::config::keys::Key;
use crate::config::raw::{RawMap, Scalar};
use crate::config::{BackendConfig, Migration};
use crate::route::{Distribution, HashFn, JedisNames};

/// The longest migration window: a day is plenty to warm a cache, and bounds how long an old
/// map is kept.
const MAX_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

impl PoolChecker<'_> {
    /// The rules of a `distribution: sharded_jedis` pool: `hash: murmur64a` (the default
    /// there), Jedis's `{}` tag, and `jedis_names` (required once a server has a name, as the
    /// Jedis versions place named servers differently). Elsewhere `murmur64a` and
    /// `jedis_names` are refused.
    pub(super) fn jedis_rules(
        &mut self,
        keys: &mut Nutcracker,
        hash_is_set: bool,
        names: Scalar,
        servers: Option<&[BackendConfig]>,
    ) {
        let names = self.optional(names, Key::JedisNames, |text| {
            JedisNames::parse(text).ok_or_else(|| {
                format!(
                    "unknown setting '{text}' (expected weighted, as Jedis 2.0.0-2.9.x, or \
                     plain, as Jedis 2.10.0-3.x)"
                )
            })
        });
        let Some(Distribution::ShardedJedis(_)) = keys.distribution else {
            if keys.hash == Some(HashFn::Murmur64a) {
                self.problem(
                    Key::Hash,
                    "murmur64a is only used by distribution: sharded_jedis".into(),
                );
            }
            if let Some(Some(_)) = names {
                self.problem(
                    Key::JedisNames,
                    "is only valid with distribution: sharded_jedis".into(),
                );
            }
            return;
        };
        match keys.hash {
            _ if !hash_is_set => keys.hash = Some(HashFn::Murmur64a),
            Some(HashFn::Murmur64a) | None => {}
            Some(other) => self.problem(
                Key::Hash,
                format!(
                    "'{}' cannot be used with distribution: sharded_jedis, which hashes with \
                     Jedis's MurmurHash64A (write murmur64a or remove the key)",
                    other.name()
                ),
            ),
        }
        if let Some(Some(tag)) = keys.hash_tag {
            if &tag != b"{}" {
                self.problem(
                    Key::HashTag,
                    format!(
                        "'{}' cannot be used with distribution: sharded_jedis, whose key tags \
                         are Jedis's default pattern {{...}} (set it to \"{{}}\" or remove it)",
                        String::from_utf8_lossy(&tag)
                    ),
                );
            }
        }
        let named = servers.is_some_and(|servers| servers.iter().any(|s| s.name.is_some()));
        match names {
            Some(Some(names)) => keys.distribution = Some(Distribution::ShardedJedis(names)),
            Some(None) if named => self.problem(
                Key::JedisNames,
                "is missing: Jedis places named servers differently by version; set \
                 jedis_names: weighted (Jedis 2.0.0-2.9.x) or plain (2.10.0-3.x)"
                    .into(),
            ),
            _ => {}
        }
    }

    /// The `migration` key: `read_through` (required), `window` (required with
    /// `read_through: true`; e.g. `30m`, `90s`, `1h 30m`, at most a day), `copy` (default
    /// false). `None` in the result: no migration. Not for a cluster pool, which follows the
    /// cluster's own slot migrations.
    pub(super) fn migration(
        &mut self,
        raw: Option<RawMap>,
        clustered: bool,
    ) -> Option<Option<Migration>> {
        let Some(RawMap(settings)) = raw else {
            return Some(None);
        };
        if clustered {
            self.problem(
                Key::Migration,
                "is not used with 'cluster': Redis Cluster moves keys itself".into(),
            );
            return None;
        }
        let setting = |name: &str| {
            settings
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        let mut wrong = Vec::new();
        let read_through = match setting("read_through").map(|t| parse_bool(&t)) {
            Some(Ok(value)) => Some(value),
            Some(Err(message)) => {
                wrong.push(format!("read_through: {message}"));
                None
            }
            None => {
                wrong.push("read_through is missing (true or false)".into());
                None
            }
        };
        let copy = match setting("copy").map(|t| parse_bool(&t)) {
            Some(Ok(value)) => Some(value),
            Some(Err(message)) => {
                wrong.push(format!("copy: {message}"));
                None
            }
            None => Some(false),
        };
        let window = match setting("window").map(|t| parse_window(&t)) {
            Some(Ok(window)) => Some(window),
            Some(Err(message)) => {
                wrong.push(format!("window: {message}"));
                None
            }
            None if read_through == Some(true) => {
                wrong.push("window is missing (how long to read through, e.g. 30m)".into());
                None
            }
            None => Some(Duration::ZERO),
        };
        if !wrong.is_empty() {
            self.problem(Key::Migration, wrong.join("; "));
            return None;
        }
        let (read_through, copy, window) = (read_through?, copy?, window?);
        Some(read_through.then_some(Migration { window, copy }))
    }
}

/// A window: a positive duration such as `30m`, `90s`, `1h 30m` or `500ms`, at most a day.
fn parse_window(text: &str) -> Result<Duration, String> {
    let window = humantime::parse_duration(text)
        .map_err(|error| format!("'{text}' is not a duration such as 30m or 90s ({error})"))?;
    if window.is_zero() {
        return Err("must be longer than 0".into());
    }
    if window > MAX_WINDOW {
        return Err(format!("'{text}' is longer than a day"));
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use crate::config::validate::tests::{first, parse, rejection};
    use crate::config::Migration;
    use crate::route::{Distribution, HashFn, JedisNames};
    use std::time::Duration;

    fn jedis(extra: &str, servers: &[&str]) -> Result<crate::config::PoolConfig, Vec<String>> {
        let lines: String = servers.iter().map(|s| format!("   - {s}\n")).collect();
        let text = format!(
            "j:\n  listen: 127.0.0.1:22121\n  redis: true\n  distribution: sharded_jedis\n{extra}  servers:\n{lines}"
        );
        parse(&text).map(|mut config| config.pools.remove(0))
    }

    #[test]
    fn sharded_jedis_keeps_list_order_and_hashes_murmur64a() {
        let pool = jedis(
            "",
            &["10.0.0.9:6379:1", "10.0.0.1:6379:2", "10.0.0.5:06379:1"],
        )
        .unwrap();
        assert_eq!(pool.hash, HashFn::Murmur64a);
        assert_eq!(
            pool.distribution,
            Distribution::ShardedJedis(JedisNames::Plain)
        );
        let hosts: Vec<String> = pool.servers.iter().map(|s| s.addr.to_string()).collect();
        assert_eq!(hosts, ["10.0.0.9:6379", "10.0.0.1:6379", "10.0.0.5:6379"]);
        // An odd port spelling does not make a server named: Jedis places it by its index.
        assert!(pool.servers.iter().all(|s| s.name.is_none()));
        let explicit = jedis("  hash: murmur64a\n  hash_tag: \"{}\"\n", &["h:1:1"]).unwrap();
        assert_eq!(explicit.hash_tag, Some(*b"{}"));
    }

    #[test]
    fn named_jedis_servers_need_jedis_names() {
        let problems = jedis("", &["h:1:1 cache1", "h:2:1"]).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("key 'jedis_names': is missing"),
            "{problems:?}"
        );
        let pool = jedis("  jedis_names: weighted\n", &["h:1:1 cache1", "h:2:1"]).unwrap();
        assert_eq!(
            pool.distribution,
            Distribution::ShardedJedis(JedisNames::Weighted)
        );
        assert!(jedis("  jedis_names: old\n", &["h:1:1"]).unwrap_err()[0]
            .contains("unknown setting 'old'"));
    }

    #[test]
    fn sharded_jedis_refuses_other_hashes_and_tags() {
        let problems = jedis("  hash: md5\n  hash_tag: \"$$\"\n", &["h:1:1"]).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("'md5' cannot be used with distribution: sharded_jedis"));
        assert!(problems[1].contains("'$$' cannot be used"));
        assert!(
            rejection("  hash: murmur64a\n").contains("only used by distribution: sharded_jedis")
        );
        assert!(rejection("  jedis_names: plain\n").contains("only valid with distribution"));
    }

    #[test]
    fn migration_reads_its_settings() {
        assert_eq!(first("").migration, None);
        assert_eq!(
            first("  migration: { read_through: true, window: 30m }\n").migration,
            Some(Migration {
                window: Duration::from_secs(1800),
                copy: false
            })
        );
        assert_eq!(
            first("  migration: { read_through: true, window: 1h 30m, copy: true }\n").migration,
            Some(Migration {
                window: Duration::from_secs(5400),
                copy: true
            })
        );
        assert_eq!(
            first("  migration: { read_through: false }\n").migration,
            None
        );
    }

    #[test]
    fn migration_rejects_bad_settings() {
        let message = rejection("  migration: { read_through: true }\n");
        assert!(message.contains("window is missing"), "{message}");
        let message = rejection("  migration: { read_through: yes, window: 2d, copy: 1 }\n");
        assert!(
            message.contains("read_through: 'yes' is not true or false"),
            "{message}"
        );
        assert!(message.contains("copy: '1'"), "{message}");
        assert!(
            message.contains("window: '2d' is longer than a day"),
            "{message}"
        );
        let message = rejection("  migration: { read_through: true, window: soon }\n");
        assert!(message.contains("'soon' is not a duration"), "{message}");
        let message = rejection("  migration: { window: 1m }\n");
        assert!(message.contains("read_through is missing"), "{message}");
        let message = rejection("  migration: { read_through: true, windw: 1m }\n");
        assert!(message.contains("unknown setting 'windw'"), "{message}");
    }
}
