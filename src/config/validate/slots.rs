//! `distribution: slots`: Redis Cluster's 16384 slots over standalone servers, evenly or by
//! the `slots` key (server name → ranges), every slot owned exactly once.

use std::ops::RangeInclusive;

use super::nutcracker::Nutcracker;
use super::{parse_digits, PoolChecker};
use crate::config::keys::Key;
use crate::config::raw::RawMap;
use crate::config::BackendConfig;
use crate::route::slots::{self, Flaw, MAX_SLOT, SLOTS};

impl PoolChecker<'_> {
    /// The rules of a `distribution: slots` pool (not a cluster pool): no `hash`, the `{}`
    /// hash tag, and each server's slots.
    pub(super) fn slots_rules(
        &mut self,
        keys: &mut Nutcracker,
        hash_is_set: bool,
        slots: Option<RawMap>,
        servers: Option<&mut Vec<BackendConfig>>,
    ) {
        if hash_is_set {
            self.problem(
                Key::Hash,
                "is not used by distribution: slots, which always hashes CRC16(key) mod \
                 16384 as Redis Cluster does (remove the key)"
                    .into(),
            );
        }
        keys.hash_tag = self.slots_hash_tag(keys.hash_tag);
        if let Some(servers) = servers {
            self.assign_slots(slots, servers);
        }
    }

    /// A slots pool hashes `{}` tags, as Redis Cluster does, so that a key keeps its slot on a
    /// real cluster: any other tag is refused rather than silently replaced.
    pub(super) fn slots_hash_tag(
        &mut self,
        hash_tag: Option<Option<[u8; 2]>>,
    ) -> Option<Option<[u8; 2]>> {
        match hash_tag? {
            None => Some(Some(*b"{}")),
            Some(tag) if &tag == b"{}" => Some(Some(tag)),
            Some(tag) => {
                self.problem(
                    Key::HashTag,
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
    fn assign_slots(&mut self, raw: Option<RawMap>, servers: &mut [BackendConfig]) {
        let before = self.problems.len();
        if servers.len() > SLOTS {
            self.problem(
                Key::Servers,
                format!(
                    "distribution: slots takes at most {SLOTS} servers (one per slot), found {}",
                    servers.len()
                ),
            );
        }
        for server in servers.iter().filter(|server| server.weight != 1) {
            self.problem(
                Key::Servers,
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
            Some(RawMap(entries)) => self.explicit_slots(&entries, servers),
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
                    Key::Slots,
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
                    self.problem(Key::Slots, format!("server '{name}': {message}"));
                    valid = false;
                }
                (Ok(_), None) => valid = false,
            }
        }
        if valid {
            for flaw in slots::flaws(&assigned) {
                let message = flaw_message(&flaw, &names);
                self.problem(Key::Slots, message);
            }
        }
        assigned
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::tests::{parse, rejection};
    use crate::route::Distribution;

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
}
