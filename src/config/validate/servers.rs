//! The `servers` key: `host:port:weight [name]` lines (or Sentinel master names), nutcracker's
//! duplicate check and its shard order.

use std::path::PathBuf;

use super::sources::parse_master;
use super::{parse_number, parse_port, PoolChecker};
use crate::config::keys::Key;
use crate::config::{BackendAddr, BackendConfig};

impl PoolChecker<'_> {
    /// The `servers` key: required, except in a cluster pool, which must not have it (its
    /// nodes come from the cluster). `masters`: the lines name Sentinel masters.
    /// `listed_order` (`distribution: sharded_jedis`): the shards stay in the file's order,
    /// as Jedis takes its list, and only a name written on the line names a server.
    pub(super) fn servers_key(
        &mut self,
        lines: Option<Vec<String>>,
        clustered: bool,
        masters: bool,
        listed_order: bool,
    ) -> Option<Vec<BackendConfig>> {
        match lines {
            Some(_) if clustered => {
                self.problem(
                    Key::Servers,
                    "is not used with 'cluster': Keyway learns the nodes from the cluster \
                     (remove the key)"
                        .into(),
                );
                None
            }
            None if clustered => Some(Vec::new()),
            Some(lines) => self.servers(&lines, masters, listed_order),
            None => self.missing(Key::Servers),
        }
    }

    /// The `servers` lines: addresses, or Sentinel master names when `masters`.
    fn servers(
        &mut self,
        lines: &[String],
        masters: bool,
        listed_order: bool,
    ) -> Option<Vec<BackendConfig>> {
        if lines.is_empty() {
            self.problem(Key::Servers, "has no servers".into());
            return None;
        }
        let mut servers: Vec<BackendConfig> = Vec::with_capacity(lines.len());
        let mut valid = true;
        for line in lines {
            let parsed = if masters {
                parse_master(line)
            } else {
                parse_server(line, !listed_order)
            };
            match parsed {
                Ok(server) => servers.push(server),
                Err(message) => {
                    self.problem(Key::Servers, format!("'{line}': {message}"));
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
                        Key::Servers,
                        format!("more than one server is named '{a}' (names must be unique)"),
                    );
                    reported = Some(a);
                    valid = false;
                }
            }
        }
        // nutcracker sorts a pool's servers by name (shorter first, then bytewise) while
        // checking for duplicates, and that sorted order is the shard order modula and
        // random index into; keep it so placement matches. Jedis indexes its list as given.
        if !listed_order {
            servers.sort_by_cached_key(|server| {
                let name = server.ketama_name();
                (name.len(), name.into_bytes())
            });
        }
        valid.then_some(servers)
    }
}

/// A server or master weight: a number of at least 1.
pub(super) fn parse_weight(text: &str) -> Result<u32, String> {
    match parse_number(text) {
        Ok(0) => Err("weight must be at least 1".to_owned()),
        Ok(w) => Ok(w),
        Err(_) => Err(format!("weight '{text}' is not a positive number")),
    }
}

/// A `servers` line: `host:port:weight [name]` or `/path/sock:weight [name]`, split from the
/// end as nutcracker's `conf_add_server` does: the name after the last space, the weight after
/// the last `:`, then (TCP) the port after the next `:`; the rest is the host, verbatim.
/// `port_names`: an unnamed server whose port is spelt unusually (`06379`) is named
/// `host:06379`, nutcracker's ketama name for it.
fn parse_server(line: &str, port_names: bool) -> Result<BackendConfig, String> {
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
        if port_names && name.is_none() && port != 11211 && port_text != port.to_string() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::tests::parse;

    fn server(line: &str) -> Result<BackendConfig, String> {
        parse_server(line, true)
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
                let parsed = parse_server(&line, true).unwrap();
                prop_assert_eq!(parsed, tcp(&host, port, weight, name.as_deref()));
            }

            #[test]
            fn parse_server_never_panics(line in "\\PC{0,40}") {
                let _ = parse_server(&line, true);
            }
        }
    }
}
