//! Every pool key, declared once: its name, whether nutcracker knows it, and the shape its value
//! must have. The table drives parsing (the known keys, the shape checks, the typed read of
//! each value), validation (a problem names its key through [`Key`]) and the reload diff, and a
//! test holds the README's key tables to it.

/// Who defines a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// nutcracker 0.5 (plus `reuseport`, which it gained after 0.5.0).
    Nutcracker,
    /// Keyway's own extension.
    Keyway,
}

/// The shape of a key's value in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One scalar, kept as the text nutcracker sees.
    Scalar,
    /// A list of scalar lines; `one` and `many` name the entries in messages.
    Lines {
        /// One entry, e.g. "server line".
        one: &'static str,
        /// The entries, e.g. "server lines".
        many: &'static str,
    },
    /// `slots`: a mapping of server name to slot ranges.
    Slots,
    #[expect(
        dead_code,
        reason = "the first Fields keys (tls, server_tls, migration) land next"
    )]
    /// A mapping of named settings to single values, e.g. `tls: {cert: ..., key: ...}`;
    /// `fields` are the setting names it may hold.
    Fields {
        /// The settings it may hold.
        fields: &'static [&'static str],
    },
}

macro_rules! pool_keys {
    ($( $(#[$doc:meta])* $key:ident = $name:literal, $origin:ident, $shape:expr; )*) => {
        /// A pool key.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub(crate) enum Key {
            $( $(#[$doc])* $key, )*
        }

        impl Key {
            /// Every key: nutcracker's in its own order (`conf_commands` in `nc_conf.c`), then
            /// Keyway's.
            pub(crate) const ALL: &'static [Key] = &[$( Key::$key, )*];

            /// The key as written in the file.
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $( Key::$key => $name, )*
                }
            }

            /// Who defines it.
            pub(crate) fn origin(self) -> Origin {
                match self {
                    $( Key::$key => Origin::$origin, )*
                }
            }

            /// The shape its value must have.
            pub(crate) fn shape(self) -> Shape {
                match self {
                    $( Key::$key => $shape, )*
                }
            }
        }
    };
}

const SCALAR: Shape = Shape::Scalar;

pool_keys! {
    /// `host:port`, `ip:port` or `/path.sock [perm]`; required.
    Listen = "listen", Nutcracker, SCALAR;
    /// The key hash function.
    Hash = "hash", Nutcracker, SCALAR;
    /// Two characters around the hashed part of a key.
    HashTag = "hash_tag", Nutcracker, SCALAR;
    /// ketama, modula, random (or Keyway's slots).
    Distribution = "distribution", Nutcracker, SCALAR;
    /// Per-request timeout in ms.
    Timeout = "timeout", Nutcracker, SCALAR;
    /// Listen backlog.
    Backlog = "backlog", Nutcracker, SCALAR;
    /// Most clients at once.
    ClientConnections = "client_connections", Nutcracker, SCALAR;
    /// Redis pool (else memcached).
    Redis = "redis", Nutcracker, SCALAR;
    /// TCP keepalive on backend connections.
    Tcpkeepalive = "tcpkeepalive", Nutcracker, SCALAR;
    /// SO_REUSEPORT on the listener.
    Reuseport = "reuseport", Nutcracker, SCALAR;
    /// Backend password.
    RedisAuth = "redis_auth", Nutcracker, SCALAR;
    /// Backend database.
    RedisDb = "redis_db", Nutcracker, SCALAR;
    /// Connect to every backend at start.
    Preconnect = "preconnect", Nutcracker, SCALAR;
    /// Eject failing backends.
    AutoEjectHosts = "auto_eject_hosts", Nutcracker, SCALAR;
    /// Connections per backend.
    ServerConnections = "server_connections", Nutcracker, SCALAR;
    /// How long an ejected backend stays out, in ms.
    ServerRetryTimeout = "server_retry_timeout", Nutcracker, SCALAR;
    /// Consecutive failures before ejection.
    ServerFailureLimit = "server_failure_limit", Nutcracker, SCALAR;
    /// The backends.
    Servers = "servers", Nutcracker,
        Shape::Lines { one: "server line", many: "server lines" };
    /// Largest request, in bytes.
    MaxRequestBytes = "max_request_bytes", Keyway, SCALAR;
    /// Most elements in one multibulk request.
    MaxMultibulkLength = "max_multibulk_length", Keyway, SCALAR;
    /// Longest key, in bytes.
    MaxKeyBytes = "max_key_bytes", Keyway, SCALAR;
    /// Requests in flight per client.
    MaxPipeline = "max_pipeline", Keyway, SCALAR;
    /// Largest backend reply, in bytes.
    MaxReplyBytes = "max_reply_bytes", Keyway, SCALAR;
    /// Reply bytes held for a client before Keyway stops reading it.
    ClientOutputLimit = "client_output_limit", Keyway, SCALAR;
    /// Reply bytes held for a client before Keyway closes it.
    ClientOutputHardLimit = "client_output_hard_limit", Keyway, SCALAR;
    /// Dedicated connections per backend (blocking commands, transactions).
    DedicatedConnections = "dedicated_connections", Keyway, SCALAR;
    /// `distribution: slots`: server name → slot ranges.
    Slots = "slots", Keyway, Shape::Slots;
    /// Redis Sentinel addresses.
    Sentinels = "sentinels", Keyway,
        Shape::Lines { one: "Sentinel address", many: "Sentinel addresses (host:port)" };
    /// The Sentinels' password.
    SentinelAuth = "sentinel_auth", Keyway, SCALAR;
    /// Redis Cluster seed addresses.
    Cluster = "cluster", Keyway,
        Shape::Lines { one: "seed address", many: "seed addresses (host:port)" };
    /// Which cluster nodes serve reads.
    ReadFrom = "read_from", Keyway, SCALAR;
    /// Whether clients may `FLUSHDB`/`FLUSHALL` every shard.
    AllowFlush = "allow_flush", Keyway, SCALAR;
}

impl Key {
    /// The key named `name`, if nutcracker or Keyway knows it.
    pub(crate) fn named(name: &str) -> Option<Key> {
        Key::ALL.iter().copied().find(|key| key.name() == name)
    }

    /// The names of the keys from `origin`, in table order, for messages.
    pub(crate) fn names(origin: Origin) -> Vec<&'static str> {
        Key::ALL
            .iter()
            .filter(|key| key.origin() == origin)
            .map(|key| key.name())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first column of every row of the README table under the header row `header`.
    fn readme_table(header: &str) -> Vec<String> {
        let readme = include_str!("../../README.md");
        let rows: Vec<&str> = readme
            .lines()
            .skip_while(|line| line.trim() != header)
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .collect();
        assert!(!rows.is_empty(), "no README table headed {header}");
        rows.iter()
            .map(|row| {
                let cell = row.split('|').nth(1).unwrap().trim();
                cell.strip_prefix('`')
                    .and_then(|c| c.strip_suffix('`'))
                    .unwrap_or_else(|| panic!("first cell is not one `key`: {row}"))
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn the_readme_lists_exactly_the_declared_keys_in_order() {
        assert_eq!(
            readme_table("| nutcracker key | default | meaning |"),
            Key::names(Origin::Nutcracker)
        );
        assert_eq!(
            readme_table("| Keyway key | default | meaning |"),
            Key::names(Origin::Keyway)
        );
    }

    #[test]
    fn names_are_unique_and_found() {
        for key in Key::ALL {
            assert_eq!(Key::named(key.name()), Some(*key));
        }
        assert_eq!(Key::named("listen "), None);
        assert_eq!(Key::names(Origin::Nutcracker).len(), 18);
    }

    #[test]
    fn every_keyway_key_is_shown_in_an_example_config() {
        // DESIGN: each extension is documented in conf/ by an example that a test loads.
        let examples = [
            include_str!("../../conf/keyway.yml"),
            include_str!("../../conf/slots.yml"),
            include_str!("../../conf/sentinel.yml"),
            include_str!("../../conf/cluster.yml"),
        ];
        for key in Key::ALL.iter().filter(|k| k.origin() == Origin::Keyway) {
            let shown = examples.iter().any(|text| {
                text.lines().any(|line| {
                    let line = line.trim_start().trim_start_matches('#').trim_start();
                    line.starts_with(&format!("{}:", key.name()))
                })
            });
            assert!(shown, "{} is in no example config in conf/", key.name());
        }
    }
}
