//! Redis Cluster's 16384 hash slots (Keyway's `distribution: slots`): a key's slot is the
//! CRC16 of its hash tag (or of the whole key) mod 16384, and each slot has one owning shard.

use std::fmt;
use std::ops::RangeInclusive;

use super::ShardSpec;

/// Number of hash slots, as in Redis Cluster.
pub const SLOTS: usize = 16384;
/// The highest slot number.
pub const MAX_SLOT: u16 = 16383;
/// Marks a slot without a live owner in [`SlotMap`]'s table. Also why a shard index at or past
/// it can own no slot.
const NO_SHARD: u16 = u16::MAX;

/// Redis Cluster's key slot (`keyHashSlot`): CRC16-XMODEM of the hashed part, mod 16384. The
/// hashed part is the bytes between the first `{` and the first `}` after it when that is
/// non-empty, else the whole key; `CLUSTER KEYSLOT` answers the same.
///
/// ```
/// use keyway::route::slots::slot;
///
/// assert_eq!(slot(b"123456789"), 0x31c3);
/// assert_eq!(slot(b"user:{42}:name"), slot(b"42"));
/// ```
#[inline]
pub fn slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(super::hash_tag_part(*b"{}", key)) & MAX_SLOT
}

/// The even split `redis-cli --cluster create` makes over `shards` masters, in the order given:
/// contiguous ranges, each `16384 / shards` slots long with float rounding as redis-cli does
/// (3 shards: `0-5460`, `5461-10922`, `10923-16383`); the last shard takes the rest. With more
/// shards than slots the shards past slot 16383 get none.
///
/// ```
/// use keyway::route::slots::even_split;
///
/// assert_eq!(even_split(3), [vec![0..=5460], vec![5461..=10922], vec![10923..=16383]]);
/// assert_eq!(even_split(1), [vec![0..=16383]]);
/// ```
pub fn even_split(shards: usize) -> Vec<Vec<RangeInclusive<u16>>> {
    // clusterManagerCommandCreate: `float` cursor and step, `lround` of a float sum.
    let per_shard = SLOTS as f32 / shards as f32;
    let mut cursor = 0.0f32;
    let mut first: i64 = 0;
    let mut split = Vec::with_capacity(shards);
    for index in 0..shards {
        // redis-cli's float arithmetic, bounded by SLOTS: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        let mut last = f64::from(cursor + per_shard - 1.0).round() as i64;
        if last > i64::from(MAX_SLOT) || index + 1 == shards {
            last = i64::from(MAX_SLOT);
        }
        last = last.max(first);
        match (u16::try_from(first), u16::try_from(last)) {
            (Ok(start), Ok(end)) if end <= MAX_SLOT => split.push(vec![start..=end]),
            _ => split.push(Vec::new()),
        }
        first = last + 1;
        cursor += per_shard;
    }
    split
}

/// A flaw in an explicit slot assignment: the first run of slots owned twice, or owned by
/// no shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flaw {
    /// `slots` are claimed by both shards (the same shard twice when it lists them twice).
    Overlap {
        /// The first run of slots claimed by the same two shards.
        slots: RangeInclusive<u16>,
        /// The first two claimants, in shard order.
        shards: [usize; 2],
    },
    /// `slots` have no owner.
    Gap {
        /// The first run of unowned slots.
        slots: RangeInclusive<u16>,
        /// How many slots have no owner in all.
        unowned: usize,
    },
}

/// The flaws of an assignment of slots to shards (`per_shard[i]` are shard `i`'s ranges): at
/// most one [`Flaw::Overlap`] then one [`Flaw::Gap`], the first of each in slot order. Empty
/// when every slot is owned exactly once. Ranges past slot 16383 are ignored.
///
/// ```
/// use keyway::route::slots::{flaws, Flaw};
///
/// assert_eq!(flaws(&[vec![0..=9000], vec![9001..=16383]]), []);
/// assert_eq!(
///     flaws(&[vec![0..=9000], vec![8000..=16000]]),
///     [
///         Flaw::Overlap { slots: 8000..=9000, shards: [0, 1] },
///         Flaw::Gap { slots: 16001..=16383, unowned: 383 },
///     ]
/// );
/// ```
pub fn flaws(per_shard: &[Vec<RangeInclusive<u16>>]) -> Vec<Flaw> {
    // Per slot: how many claims, and the first two claimants.
    let mut claims = vec![(0u32, [usize::MAX; 2]); SLOTS];
    for (shard, ranges) in per_shard.iter().enumerate() {
        for range in ranges {
            let (start, end) = (usize::from(*range.start()), usize::from(*range.end()));
            for claim in claims.iter_mut().take(end + 1).skip(start) {
                if let Some(slot) = claim.1.get_mut(claim.0.min(2) as usize) {
                    *slot = shard;
                }
                claim.0 = claim.0.saturating_add(1);
            }
        }
    }
    let mut found = Vec::new();
    if let Some((run, &(_, shards))) = first_run(&claims, |&(count, _)| count >= 2) {
        found.push(Flaw::Overlap { slots: run, shards });
    }
    if let Some((run, _)) = first_run(&claims, |&(count, _)| count == 0) {
        let unowned = claims.iter().filter(|&&(count, _)| count == 0).count();
        found.push(Flaw::Gap {
            slots: run,
            unowned,
        });
    }
    found
}

/// The first run of equal entries matching `wanted`, with its entry.
fn first_run<T: PartialEq>(
    table: &[T],
    wanted: impl Fn(&T) -> bool,
) -> Option<(RangeInclusive<u16>, &T)> {
    let start = table.iter().position(&wanted)?;
    let entry = table.get(start)?;
    let len = table
        .get(start..)?
        .iter()
        .take_while(|other| *other == entry)
        .count();
    let first = u16::try_from(start).ok()?;
    let last = u16::try_from(start + len - 1).ok()?;
    Some((first..=last, entry))
}

/// Which shard owns each slot: a table of 16384 shard indices (32 KiB), looked up directly.
/// `benches/route.rs` (`slot_lookup`) measured about 2 ns per lookup, against 8 ns (3 shards)
/// to 23 ns (100 shards of 4 ranges) for a binary search over sorted range starts.
///
/// ```
/// use keyway::route::slots::{slot, SlotMap};
/// use keyway::route::ShardSpec;
///
/// let shards = [ShardSpec::new("a", 1), ShardSpec::new("b", 1)];
/// let map = SlotMap::new(&shards, &[]);
/// assert_eq!(map.ranges(), [vec![0..=8191], vec![8192..=16383]]);
/// assert_eq!(map.dispatch(100), Some(0));
/// assert_eq!(map.dispatch(slot(b"somekey")), Some(1)); // slot 11058
///
/// // An ejected owner's slots have nowhere else to go.
/// let ejected = SlotMap::new(&shards, &[true, false]);
/// assert_eq!(ejected.dispatch(11058), None);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// `owners[slot]`: the live shard owning `slot`, or `NO_SHARD`.
    owners: Box<[u16; SLOTS]>,
    /// Each shard's slots as assigned, whether it is live or not: sorted, merged.
    ranges: Vec<Vec<RangeInclusive<u16>>>,
}

impl SlotMap {
    /// The slot table of `shards`, owners ejected (`live[i] == false`; a missing entry counts
    /// as live) leaving their slots unowned. Each shard owns its [`ShardSpec::slots`]; when no
    /// shard has any, slots are split evenly in shard order ([`even_split`]). A slot claimed
    /// twice goes to the first claimant in shard order (config validation rejects that), and
    /// shard indices from 65535 on own nothing.
    pub fn new(shards: &[ShardSpec], live: &[bool]) -> SlotMap {
        let even;
        let assigned: Vec<&[RangeInclusive<u16>]> =
            if shards.iter().all(|shard| shard.slots.is_empty()) {
                even = even_split(shards.len());
                even.iter().map(Vec::as_slice).collect()
            } else {
                shards.iter().map(|shard| shard.slots.as_slice()).collect()
            };
        let mut owners = Box::new([NO_SHARD; SLOTS]);
        for (shard, ranges) in assigned.iter().enumerate() {
            let Ok(shard) = u16::try_from(shard) else {
                break;
            };
            if shard == NO_SHARD {
                break;
            }
            for range in ranges.iter() {
                let (start, end) = (usize::from(*range.start()), usize::from(*range.end()));
                for owner in owners.iter_mut().take(end + 1).skip(start) {
                    if *owner == NO_SHARD {
                        *owner = shard;
                    }
                }
            }
        }
        let ranges = ranges_by_owner(&owners[..], shards.len());
        for owner in owners.iter_mut() {
            if !live.get(usize::from(*owner)).copied().unwrap_or(true) {
                *owner = NO_SHARD;
            }
        }
        SlotMap { owners, ranges }
    }

    /// The live shard owning `slot`; `None` when its owner is ejected, it has none, or `slot`
    /// is past 16383.
    #[inline]
    pub fn dispatch(&self, slot: u16) -> Option<usize> {
        match self.owners.get(usize::from(slot)) {
            Some(&NO_SHARD) | None => None,
            Some(&shard) => Some(usize::from(shard)),
        }
    }

    /// Each shard's slots (index = shard), sorted and merged, as assigned: ejection aside.
    pub fn ranges(&self) -> &[Vec<RangeInclusive<u16>>] {
        &self.ranges
    }
}

impl fmt::Debug for SlotMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The 16384-entry table would drown any log line: show the assignment instead.
        f.debug_struct("SlotMap")
            .field("ranges", &self.ranges)
            .finish_non_exhaustive()
    }
}

/// The runs of `owners`, grouped per owner `0..shards`.
pub(crate) fn ranges_by_owner(owners: &[u16], shards: usize) -> Vec<Vec<RangeInclusive<u16>>> {
    let mut ranges = vec![Vec::new(); shards];
    let mut start = 0usize;
    while let Some(&owner) = owners.get(start) {
        let len = owners
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&other| other == owner)
            .count();
        if let (Some(list), Ok(first), Ok(last)) = (
            ranges.get_mut(usize::from(owner)),
            u16::try_from(start),
            u16::try_from(start + len - 1),
        ) {
            list.push(first..=last);
        }
        start += len;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn specs(slots: &[&[RangeInclusive<u16>]]) -> Vec<ShardSpec> {
        slots
            .iter()
            .enumerate()
            .map(|(n, ranges)| ShardSpec {
                slots: ranges.to_vec(),
                ..ShardSpec::new(format!("s{n}"), 1)
            })
            .collect()
    }

    #[test]
    fn crc16_xmodem_check_value() {
        assert_eq!(
            crc16::State::<crc16::XMODEM>::calculate(b"123456789"),
            0x31c3
        );
        assert_eq!(slot(b"123456789"), 0x31c3);
        assert_eq!(slot(b""), 0);
    }

    #[test]
    fn slots_of_keys_known_from_redis() {
        // CLUSTER KEYSLOT on redis 7.
        for (key, expected) in [
            (&b"foo"[..], 12182),
            (b"bar", 5061),
            (b"somekey", 11058),
            (b"hello", 866),
            (b"{user1000}.following", 3443),
            (b"{user1000}.followers", 3443),
            (b"user1000", 3443),
        ] {
            assert_eq!(slot(key), expected, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn hash_tag_edge_cases_follow_redis_cluster() {
        let crc = |part: &[u8]| crc16::State::<crc16::XMODEM>::calculate(part) & MAX_SLOT;
        for (key, part) in [
            (&b"{}"[..], &b"{}"[..]),
            (b"{a", b"{a"),
            (b"a{}b{c}", b"a{}b{c}"),
            (b"{{a}}", b"{a"),
            (b"x{a}{b}", b"a"),
            (b"}a{b}", b"b"),
            (b"{}{a}", b"{}{a}"),
            (b"a}", b"a}"),
            (b"{\x00\xff}", b"\x00\xff"),
        ] {
            assert_eq!(slot(key), crc(part), "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn even_split_matches_redis_cli_cluster_create() {
        // `redis-cli --cluster create` with 3 to 6 masters prints these ranges.
        assert_eq!(
            even_split(3),
            [vec![0..=5460], vec![5461..=10922], vec![10923..=16383]]
        );
        assert_eq!(
            even_split(4),
            [
                vec![0..=4095],
                vec![4096..=8191],
                vec![8192..=12287],
                vec![12288..=16383]
            ]
        );
        assert_eq!(
            even_split(5),
            [
                vec![0..=3276],
                vec![3277..=6553],
                vec![6554..=9829],
                vec![9830..=13106],
                vec![13107..=16383]
            ]
        );
        assert_eq!(
            even_split(6),
            [
                vec![0..=2730],
                vec![2731..=5460],
                vec![5461..=8191],
                vec![8192..=10922],
                vec![10923..=13652],
                vec![13653..=16383]
            ]
        );
        assert_eq!(even_split(0), Vec::<Vec<RangeInclusive<u16>>>::new());
    }

    #[test]
    fn even_split_with_more_shards_than_slots_leaves_the_rest_empty() {
        let split = even_split(SLOTS + 2);
        assert!(split.iter().take(SLOTS).all(|ranges| ranges.len() == 1));
        assert!(split.iter().skip(SLOTS).all(Vec::is_empty));
        assert!(flaws(&split).is_empty());
    }

    #[test]
    fn flaws_name_the_first_overlap_and_gap() {
        assert_eq!(flaws(&even_split(7)), []);
        assert_eq!(
            flaws(&[vec![0..=10, 5..=20, 21..=16383]]),
            [Flaw::Overlap {
                slots: 5..=10,
                shards: [0, 0]
            }]
        );
        assert_eq!(
            flaws(&[vec![0..=99, 200..=16383], vec![], vec![300..=300]]),
            [
                Flaw::Overlap {
                    slots: 300..=300,
                    shards: [0, 2]
                },
                Flaw::Gap {
                    slots: 100..=199,
                    unowned: 100
                }
            ]
        );
        assert_eq!(
            flaws(&[vec![1..=16382]]),
            [Flaw::Gap {
                slots: 0..=0,
                unowned: 2
            }]
        );
        assert_eq!(
            flaws(&[]),
            [Flaw::Gap {
                slots: 0..=16383,
                unowned: SLOTS
            }]
        );
    }

    #[test]
    fn explicit_ranges_are_owned_and_merged() {
        let map = SlotMap::new(&specs(&[&[0..=9, 20..=16383], &[10..=14, 15..=19]]), &[]);
        assert_eq!(map.ranges(), [vec![0..=9, 20..=16383], vec![10..=19]]);
        assert_eq!(map.dispatch(9), Some(0));
        assert_eq!(map.dispatch(10), Some(1));
        assert_eq!(map.dispatch(19), Some(1));
        assert_eq!(map.dispatch(16383), Some(0));
        assert_eq!(map.dispatch(16384), None);
    }

    #[test]
    fn unowned_slots_route_nowhere_and_first_claimant_wins() {
        let map = SlotMap::new(&specs(&[&[0..=99], &[50..=199], &[]]), &[]);
        assert_eq!(map.dispatch(60), Some(0));
        assert_eq!(map.dispatch(150), Some(1));
        assert_eq!(map.dispatch(200), None);
        assert_eq!(map.ranges(), [vec![0..=99], vec![100..=199], vec![]]);
    }

    #[test]
    fn ejected_owner_keeps_its_ranges_but_routes_nowhere() {
        let map = SlotMap::new(&specs(&[&[], &[], &[]]), &[true, false, true]);
        assert_eq!(map.ranges(), even_split(3).as_slice());
        assert_eq!(map.dispatch(0), Some(0));
        assert_eq!(map.dispatch(5461), None);
        assert_eq!(map.dispatch(10922), None);
        assert_eq!(map.dispatch(10923), Some(2));
    }

    #[test]
    fn debug_shows_ranges_not_the_table() {
        let shown = format!("{:?}", SlotMap::new(&specs(&[&[], &[]]), &[]));
        assert_eq!(
            shown,
            "SlotMap { ranges: [[0..=8191], [8192..=16383]], .. }"
        );
    }

    proptest! {
        #[test]
        fn keys_sharing_a_tag_share_a_slot(
            prefix in prop::collection::vec(any::<u8>().prop_filter("no open", |&b| b != b'{'), 0..10),
            tag in prop::collection::vec(any::<u8>().prop_filter("no close", |&b| b != b'}'), 1..10),
            suffix in prop::collection::vec(any::<u8>(), 0..10),
        ) {
            let key = [&prefix[..], b"{", &tag[..], b"}", &suffix[..]].concat();
            prop_assert_eq!(slot(&key), slot(&tag));
            prop_assert!(usize::from(slot(&key)) < SLOTS);
        }

        #[test]
        fn even_split_covers_every_slot_once_in_order(shards in 1usize..2000) {
            let split = even_split(shards);
            prop_assert_eq!(split.len(), shards);
            prop_assert!(flaws(&split).is_empty());
            // Contiguous and ascending in shard order, sizes within one of each other.
            let sizes: Vec<usize> = split.iter().flatten().map(|r| r.len()).collect();
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            prop_assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1));
            let map = SlotMap::new(&specs(&vec![&[][..]; shards]), &[]);
            prop_assert_eq!(map.ranges(), split.as_slice());
        }

        #[test]
        fn the_map_routes_each_slot_to_its_live_owner(
            cuts in prop::collection::btree_set(1u16..=MAX_SLOT, 0..20),
            live_seed in any::<u64>(),
        ) {
            // Random contiguous ranges, one per shard.
            let bounds: Vec<u16> = std::iter::once(0).chain(cuts.iter().copied()).collect();
            let ranges: Vec<Vec<RangeInclusive<u16>>> = bounds
                .iter()
                .enumerate()
                .map(|(i, &start)| {
                    let end = bounds.get(i + 1).map_or(MAX_SLOT, |next| next - 1);
                    vec![start..=end]
                })
                .collect();
            prop_assert!(flaws(&ranges).is_empty());
            let live: Vec<bool> = (0..ranges.len()).map(|i| live_seed >> (i % 64) & 1 == 1).collect();
            let shards: Vec<ShardSpec> = ranges
                .iter()
                .map(|r| ShardSpec { slots: r.clone(), ..ShardSpec::new("x", 1) })
                .collect();
            let map = SlotMap::new(&shards, &live);
            for (shard, shard_ranges) in ranges.iter().enumerate() {
                for slot in shard_ranges.iter().flat_map(|r| [*r.start(), *r.end()]) {
                    prop_assert_eq!(map.dispatch(slot), live[shard].then_some(shard));
                }
            }
        }
    }
}
