//! Key → shard index: hash tag → hash → distribution. Pure, no I/O: cheap to test, bench and
//! diff against nutcracker. A [`ShardMap`] is immutable and replaced whole.

use std::ops::RangeInclusive;

pub mod cluster;
pub mod hash;
pub mod jedis;
pub mod ketama;
pub mod modula;
pub mod points;
pub mod random;
pub mod slots;

pub use hash::HashFn;
pub use jedis::JedisNames;

/// How hashed keys are spread over shards (nutcracker's `distribution`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Consistent hashing on an MD5 continuum (160 points per shard, scaled by weight).
    Ketama,
    /// `hash % total weight`.
    Modula,
    /// A random live shard per request.
    Random,
    /// Keyway's extension: Redis Cluster's 16384 slots, `CRC16(key or {tag}) mod 16384`, each
    /// slot owned by one shard (presharding). Always uses the `{}` hash tag; ignores the hash
    /// function and weights.
    Slots,
    /// Keyway's extension: Jedis's `ShardedJedis` ring ([`jedis::Ring`]): MurmurHash64A over
    /// 160 points per unit of weight, shards in config list order, named shards' points as
    /// the [`JedisNames`] say; `hash_tag` `{}` is Jedis's default key-tag pattern.
    ShardedJedis(JedisNames),
}

/// One backend as routing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    /// The ketama point name: the server's name, else `host:port` (`host` alone for port 11211).
    pub name: String,
    /// Relative weight, at least 1.
    pub weight: u32,
    /// Whether the config gave the server a name (Jedis names an unnamed shard's points by
    /// its index instead); ketama always uses `name`.
    pub named: bool,
    /// The slots this shard owns under [`Distribution::Slots`]; ignored by the others. When no
    /// shard of a slots map owns any, the map splits the slots evenly ([`slots::even_split`]).
    pub slots: Vec<RangeInclusive<u16>>,
}

impl ShardSpec {
    /// A shard named `name` with `weight` and no explicit slots.
    pub fn new(name: impl Into<String>, weight: u32) -> ShardSpec {
        ShardSpec {
            name: name.into(),
            weight,
            named: true,
            slots: Vec::new(),
        }
    }

    /// A shard without a name, with `weight` (Jedis places it by its index).
    pub fn unnamed(weight: u32) -> ShardSpec {
        ShardSpec {
            named: false,
            ..ShardSpec::new("", weight)
        }
    }
}

impl Distribution {
    /// The distribution with this config name: `ketama`, `modula`, `random`, `slots` or
    /// `sharded_jedis` (with [`JedisNames::Plain`]; the pool's `jedis_names` key may say
    /// otherwise).
    pub fn parse(name: &str) -> Option<Distribution> {
        match name {
            "ketama" => Some(Distribution::Ketama),
            "modula" => Some(Distribution::Modula),
            "random" => Some(Distribution::Random),
            "slots" => Some(Distribution::Slots),
            "sharded_jedis" => Some(Distribution::ShardedJedis(JedisNames::Plain)),
            _ => None,
        }
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Ketama => "ketama",
            Distribution::Modula => "modula",
            Distribution::Random => "random",
            Distribution::Slots => "slots",
            Distribution::ShardedJedis(_) => "sharded_jedis",
        }
    }
}

/// Immutable key → shard map for one pool: hash tag → hash → distribution. Rebuilt whole when
/// the pool's shards or their liveness change.
#[derive(Clone, Debug)]
pub struct ShardMap {
    hash: HashFn,
    hash_tag: Option<[u8; 2]>,
    shard_count: usize,
    live_count: usize,
    dispatch: Dispatch,
}

/// The distribution's lookup structure over the live shards.
#[derive(Clone, Debug)]
enum Dispatch {
    Ketama(ketama::Continuum),
    Modula(modula::Modula),
    Random(random::Random),
    Slots(slots::SlotMap),
    Jedis(jedis::Ring),
}

impl ShardMap {
    /// A map with every shard live.
    pub fn new(
        hash: HashFn,
        distribution: Distribution,
        hash_tag: Option<[u8; 2]>,
        shards: &[ShardSpec],
    ) -> ShardMap {
        ShardMap::with_live(hash, distribution, hash_tag, shards, &[])
    }

    /// A map where only shards with `live[i] == true` take part (a missing entry counts as
    /// live): nutcracker's `auto_eject_hosts`. Ejected shards leave the distribution and the
    /// live ones are re-weighted among themselves, as `ketama_update`, `modula_update` and
    /// `random_update` do.
    ///
    /// Under [`Distribution::Slots`] a slot belongs to one shard whatever its liveness (moving
    /// it would split its keys over two backends): an ejected shard's slots route nowhere, and
    /// `hash_tag` is always `{}`, as Redis Cluster's.
    pub fn with_live(
        hash: HashFn,
        distribution: Distribution,
        hash_tag: Option<[u8; 2]>,
        shards: &[ShardSpec],
        live: &[bool],
    ) -> ShardMap {
        let live_count = (0..shards.len())
            .filter(|&index| live.get(index).copied().unwrap_or(true))
            .count();
        let dispatch = match distribution {
            Distribution::Ketama => Dispatch::Ketama(ketama::Continuum::new(shards, live)),
            Distribution::Modula => Dispatch::Modula(modula::Modula::new(shards, live)),
            Distribution::Random => Dispatch::Random(random::Random::new(shards, live)),
            Distribution::Slots => Dispatch::Slots(slots::SlotMap::new(shards, live)),
            Distribution::ShardedJedis(names) => {
                Dispatch::Jedis(jedis::Ring::new(shards, live, names))
            }
        };
        let hash_tag = match distribution {
            Distribution::Slots => Some(*b"{}"),
            _ => hash_tag,
        };
        ShardMap {
            hash,
            hash_tag,
            shard_count: shards.len(),
            live_count,
            dispatch,
        }
    }

    /// The shard (index into the `shards` the map was built from) that `key` belongs to, or
    /// `None` when no shard is live. Allocation-free.
    ///
    /// As in nutcracker's `server_pool_idx`: a pool of one shard always answers 0 without
    /// hashing; otherwise the hash tag is applied, an empty key hashes to 0, and the hash is
    /// looked up in the distribution (random ignores it). [`Distribution::Slots`] instead
    /// answers the owner of [`slots::slot`]`(key)`, `None` when that owner is ejected.
    ///
    /// ```
    /// use keyway::route::{Distribution, HashFn, ShardMap, ShardSpec};
    ///
    /// let shards: Vec<ShardSpec> = (1..=3)
    ///     .map(|n| ShardSpec::new(format!("10.0.0.{n}:6379"), 1))
    ///     .collect();
    /// let map = ShardMap::new(HashFn::Fnv1a_64, Distribution::Ketama, Some(*b"{}"), &shards);
    ///
    /// let shard = map.route(b"user:{42}:name");
    /// assert!(shard.is_some_and(|shard| shard < 3));
    /// // The hash tag puts keys sharing `{42}` on the same shard.
    /// assert_eq!(map.route(b"user:{42}:email"), shard);
    /// assert_eq!(map.route(b"42"), shard);
    ///
    /// // Eject every shard but the last: all keys go there.
    /// let map = ShardMap::with_live(
    ///     HashFn::Fnv1a_64,
    ///     Distribution::Ketama,
    ///     None,
    ///     &shards,
    ///     &[false, false, true],
    /// );
    /// assert_eq!(map.route(b"anything"), Some(2));
    ///
    /// // Slots: three shards own 0-5460, 5461-10922, 10923-16383.
    /// let map = ShardMap::new(HashFn::Fnv1a_64, Distribution::Slots, None, &shards);
    /// assert_eq!(keyway::route::slots::slot(b"{user1000}.following"), 3443);
    /// assert_eq!(map.route(b"{user1000}.following"), Some(0));
    /// assert_eq!(map.route(b"foo"), Some(2)); // slot 12182
    /// ```
    #[inline]
    pub fn route(&self, key: &[u8]) -> Option<usize> {
        if self.live_count == 0 {
            return None;
        }
        match &self.dispatch {
            Dispatch::Slots(table) => table.dispatch(slots::slot(key)),
            _ if self.shard_count == 1 => Some(0),
            Dispatch::Ketama(continuum) => continuum.dispatch(self.key_hash(key)),
            Dispatch::Modula(modula) => modula.dispatch(self.key_hash(key)),
            Dispatch::Random(random) => random.dispatch(),
            Dispatch::Jedis(ring) => {
                let part = match self.hash_tag {
                    Some(_) => jedis::key_tag(key),
                    None => key,
                };
                ring.dispatch(hash::murmur64a(part))
            }
        }
    }

    /// Under [`Distribution::Slots`], every shard (in shard order, those owning nothing
    /// included) with its slots, sorted and merged, as assigned: an ejected shard keeps its
    /// ranges here though its keys route nowhere. `None` for the other distributions.
    ///
    /// ```
    /// use keyway::route::{Distribution, HashFn, ShardMap, ShardSpec};
    ///
    /// let shards = [ShardSpec::new("a", 1), ShardSpec::new("b", 1)];
    /// let map = ShardMap::new(HashFn::Fnv1a_64, Distribution::Slots, None, &shards);
    /// assert_eq!(
    ///     map.slot_ranges(),
    ///     Some(vec![(0, vec![0..=8191]), (1, vec![8192..=16383])])
    /// );
    /// let ketama = ShardMap::new(HashFn::Fnv1a_64, Distribution::Ketama, None, &shards);
    /// assert_eq!(ketama.slot_ranges(), None);
    /// ```
    pub fn slot_ranges(&self) -> Option<Vec<(usize, Vec<RangeInclusive<u16>>)>> {
        match &self.dispatch {
            Dispatch::Slots(table) => Some(table.ranges().iter().cloned().enumerate().collect()),
            _ => None,
        }
    }

    /// The part of `key` that is hashed. With a hash tag `[open, close]`: the bytes between
    /// the first `open` and the first `close` after it, if both exist and enclose at least
    /// one byte; otherwise (and without a hash tag) the whole key.
    /// Under [`Distribution::ShardedJedis`] the tag is Jedis's ([`jedis::key_tag`]).
    pub fn hashed_part<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        match (self.hash_tag, &self.dispatch) {
            (Some(_), Dispatch::Jedis(_)) => jedis::key_tag(key),
            (Some(tag), _) => hash_tag_part(tag, key),
            (None, _) => key,
        }
    }

    /// Number of shards, live or not.
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// Number of live shards.
    pub fn live_count(&self) -> usize {
        self.live_count
    }

    /// `server_pool_hash`: an empty key hashes to 0 without calling the hash function.
    #[inline]
    fn key_hash(&self, key: &[u8]) -> u32 {
        let part = self.hashed_part(key);
        if part.is_empty() {
            0
        } else {
            self.hash.hash(part)
        }
    }
}

/// nutcracker's hash tag rule (`server_pool_idx`).
fn hash_tag_part([open, close]: [u8; 2], key: &[u8]) -> &[u8] {
    let Some(start) = key.iter().position(|&byte| byte == open) else {
        return key;
    };
    let inside = key.get(start + 1..).unwrap_or_default();
    match inside.iter().position(|&byte| byte == close) {
        Some(end) if end > 0 => inside.get(..end).unwrap_or(key),
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn specs(weights: &[u32]) -> Vec<ShardSpec> {
        weights
            .iter()
            .enumerate()
            .map(|(n, &weight)| ShardSpec::new(format!("10.0.0.{n}:6379"), weight))
            .collect()
    }

    fn tagged(tag: &[u8; 2]) -> ShardMap {
        ShardMap::new(
            HashFn::Fnv1a_64,
            Distribution::Ketama,
            Some(*tag),
            &specs(&[1, 1]),
        )
    }

    #[test]
    fn distribution_names() {
        assert_eq!(Distribution::parse("ketama"), Some(Distribution::Ketama));
        assert_eq!(Distribution::parse("modula"), Some(Distribution::Modula));
        assert_eq!(Distribution::parse("random"), Some(Distribution::Random));
        assert_eq!(Distribution::parse("slots"), Some(Distribution::Slots));
        assert_eq!(Distribution::parse("Ketama"), None);
        assert_eq!(Distribution::parse("vnode"), None);
    }

    #[test]
    fn hash_tag_extraction_follows_nutcracker() {
        let curly = tagged(b"{}");
        for (key, part) in [
            (&b"{user1000}.following"[..], &b"user1000"[..]),
            (b"{user1000}.followers", b"user1000"),
            (b"foo{}{bar}", b"foo{}{bar}"),
            (b"foo{{bar}}zap", b"{bar"),
            (b"foo{bar}{zap}", b"bar"),
            (b"foo}bar{zap}", b"zap"),
            (b"no tag", b"no tag"),
            (b"{", b"{"),
            (b"}{", b"}{"),
            (b"{}", b"{}"),
            (b"", b""),
        ] {
            assert_eq!(
                curly.hashed_part(key),
                part,
                "{:?}",
                String::from_utf8_lossy(key)
            );
        }
        let dollars = tagged(b"$$");
        assert_eq!(dollars.hashed_part(b"a$b$c"), b"b");
        assert_eq!(dollars.hashed_part(b"$$x$"), b"$$x$");
        let untagged = ShardMap::new(HashFn::Md5, Distribution::Modula, None, &specs(&[1, 1]));
        assert_eq!(untagged.hashed_part(b"{a}b"), b"{a}b");
    }

    #[test]
    fn one_shard_pool_takes_every_key_without_hashing() {
        for distribution in [
            Distribution::Ketama,
            Distribution::Modula,
            Distribution::Random,
        ] {
            let map = ShardMap::new(HashFn::Crc16, distribution, None, &specs(&[1]));
            assert_eq!(map.route(b""), Some(0));
            assert_eq!(map.route(b"key"), Some(0));
            // Even a zero weight: nutcracker skips dispatch for one server.
            let zero = ShardMap::new(HashFn::Crc16, distribution, None, &specs(&[0]));
            assert_eq!(zero.route(b"key"), Some(0));
        }
    }

    #[test]
    fn slots_route_by_cluster_slot_with_curly_tags_whatever_the_hash_tag() {
        let shards = specs(&[1, 1, 1]);
        // A `$$` tag or none: a slots map hashes `{}` tags, as Redis Cluster does.
        for tag in [None, Some(*b"$$"), Some(*b"{}")] {
            let map = ShardMap::new(HashFn::Md5, Distribution::Slots, tag, &shards);
            assert_eq!(map.hashed_part(b"a{b}c"), b"b");
            assert_eq!(map.hashed_part(b"a$b$c"), b"a$b$c");
            for key in [&b"foo"[..], b"bar", b"{user1000}.x", b"", b"\x00\xff{\x01}"] {
                let expected = match slots::slot(key) {
                    0..=5460 => 0,
                    5461..=10922 => 1,
                    _ => 2,
                };
                assert_eq!(map.route(key), Some(expected));
            }
        }
    }

    #[test]
    fn slots_of_an_ejected_shard_route_nowhere() {
        let shards = specs(&[1, 1, 1]);
        let map = ShardMap::with_live(
            HashFn::Fnv1a_64,
            Distribution::Slots,
            None,
            &shards,
            &[true, false, true],
        );
        // foo is slot 12182 (shard 2), bar 5061 (shard 0).
        assert_eq!(map.route(b"foo"), Some(2));
        assert_eq!(map.route(b"bar"), Some(0));
        let of_shard_1 = (0..1000u32)
            .map(|n| format!("key:{n}"))
            .find(|key| (5461..=10922).contains(&slots::slot(key.as_bytes())));
        assert!(of_shard_1.is_some_and(|key| map.route(key.as_bytes()).is_none()));
        assert_eq!(map.live_count(), 2);
        // The assignment still shows shard 1's slots.
        assert_eq!(
            map.slot_ranges(),
            Some(vec![
                (0, vec![0..=5460]),
                (1, vec![5461..=10922]),
                (2, vec![10923..=16383])
            ])
        );
    }

    #[test]
    fn slots_honour_explicit_assignment() {
        let mut shards = specs(&[1, 1]);
        shards[0].slots = vec![0..=99, 12000..=16383];
        shards[1].slots = vec![100..=11999];
        let map = ShardMap::new(HashFn::Fnv1a_64, Distribution::Slots, None, &shards);
        assert_eq!(map.route(b"foo"), Some(0)); // 12182
        assert_eq!(map.route(b"bar"), Some(1)); // 5061
        assert_eq!(
            map.slot_ranges(),
            Some(vec![
                (0, vec![0..=99, 12000..=16383]),
                (1, vec![100..=11999])
            ])
        );
    }

    #[test]
    fn one_shard_slots_pool_routes_through_the_table() {
        let mut shards = specs(&[1]);
        assert_eq!(
            ShardMap::new(HashFn::Md5, Distribution::Slots, None, &shards).route(b"foo"),
            Some(0)
        );
        // A hand-built map owning part of the slots routes the rest nowhere.
        shards[0].slots = vec![0..=99];
        let map = ShardMap::new(HashFn::Md5, Distribution::Slots, None, &shards);
        assert_eq!(map.route(b"foo"), None);
    }

    #[test]
    fn no_live_shard_routes_nowhere() {
        for distribution in [
            Distribution::Ketama,
            Distribution::Modula,
            Distribution::Random,
            Distribution::Slots,
        ] {
            let empty = ShardMap::new(HashFn::Md5, distribution, None, &[]);
            assert_eq!(
                (empty.route(b"k"), empty.shard_count(), empty.live_count()),
                (None, 0, 0)
            );
            let shards = specs(&[1, 2]);
            let map = ShardMap::with_live(HashFn::Md5, distribution, None, &shards, &[false; 2]);
            assert_eq!(
                (map.route(b"k"), map.shard_count(), map.live_count()),
                (None, 2, 0)
            );
            let one = ShardMap::with_live(HashFn::Md5, distribution, None, &specs(&[1]), &[false]);
            assert_eq!(one.route(b"k"), None);
        }
    }

    #[test]
    fn empty_key_hashes_to_zero() {
        // jenkins("") is 0xdeadbefc, but nutcracker never hashes an empty key.
        let shards = specs(&[1, 1, 1]);
        let modula = ShardMap::new(HashFn::Jenkins, Distribution::Modula, None, &shards);
        assert_eq!(modula.route(b""), Some(0));
        let ketama = ShardMap::new(HashFn::Jenkins, Distribution::Ketama, None, &shards);
        let continuum = ketama::Continuum::new(&shards, &[]);
        assert_eq!(ketama.route(b""), continuum.dispatch(0));
    }

    #[test]
    fn modula_repeats_each_live_shard_weight_times() {
        let shards = specs(&[2, 1, 3]);
        let map = ShardMap::with_live(
            HashFn::Crc16,
            Distribution::Modula,
            None,
            &shards,
            &[true, false, true],
        );
        // Slots: [0, 0, 2, 2, 2]; crc16("\x01") = 0x1021 = 4129, 4129 % 5 = 4.
        assert_eq!(map.route(b"\x01"), Some(2));
        // crc16("\x02") = 0x2042 = 8258, 8258 % 5 = 3.
        assert_eq!(map.route(b"\x02"), Some(2));
        // crc16("\x03") = 0x3063 = 12387, 12387 % 5 = 2.
        assert_eq!(map.route(b"\x03"), Some(2));
        // crc16("\x05") = 0x50a5 = 20645, 20645 % 5 = 0.
        assert_eq!(map.route(b"\x05"), Some(0));
        assert_eq!(map.live_count(), 2);
    }

    #[test]
    fn random_picks_every_live_shard_and_only_those() {
        let map = ShardMap::with_live(
            HashFn::Md5,
            Distribution::Random,
            None,
            &specs(&[1, 1, 1, 1]),
            &[true, false, true, true],
        );
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[map.route(b"same key").unwrap()] += 1;
        }
        assert_eq!(seen[1], 0);
        assert!(
            seen.iter()
                .enumerate()
                .all(|(shard, &n)| shard == 1 || n > 400),
            "{seen:?}"
        );
    }

    #[test]
    fn ejecting_from_26_equal_shards_also_moves_keys_between_survivors() {
        // nutcracker gives 25 equal live shards 156 points each (f32 rounding), not 160, so
        // this ejection reshuffles some keys among the survivors too; Keyway must match that.
        let shards = specs(&[1; 26]);
        let all = ShardMap::new(HashFn::Fnv1a_64, Distribution::Ketama, None, &shards);
        let mut live = [true; 26];
        live[7] = false;
        let ejected =
            ShardMap::with_live(HashFn::Fnv1a_64, Distribution::Ketama, None, &shards, &live);
        let moved_between_survivors = (0..5000u32)
            .map(|n| format!("key:{n}"))
            .filter(|key| {
                let before = all.route(key.as_bytes());
                before != Some(7) && before != ejected.route(key.as_bytes())
            })
            .count();
        assert!(moved_between_survivors > 0);
    }

    #[test]
    fn sharded_jedis_hashes_jedis_key_tags_with_murmur64a() {
        let shards = [
            ShardSpec::unnamed(1),
            ShardSpec::new("cache-b", 2),
            ShardSpec::unnamed(3),
        ];
        let jedis = Distribution::ShardedJedis(JedisNames::Plain);
        let tagged = ShardMap::new(HashFn::Murmur64a, jedis, Some(*b"{}"), &shards);
        let plain = ShardMap::new(HashFn::Murmur64a, jedis, None, &shards);
        let ring = jedis::Ring::new(&shards, &[], JedisNames::Plain);
        for key in [&b"user:{42}:name"[..], b"a{}b{c}", b"k{}}", b"plain", b""] {
            let part = jedis::key_tag(key);
            assert_eq!(tagged.hashed_part(key), part);
            assert_eq!(tagged.route(key), ring.dispatch(hash::murmur64a(part)));
            assert_eq!(plain.route(key), ring.dispatch(hash::murmur64a(key)));
        }
        // Unlike nutcracker's rule, an empty tag does not end the search: `{}b{c}` hashes `}b{c`.
        assert_eq!(tagged.hashed_part(b"a{}b{c}"), b"}b{c");
        assert_eq!(Distribution::parse("sharded_jedis"), Some(jedis));
        assert_eq!(jedis.name(), "sharded_jedis");
    }

    fn distribution() -> impl Strategy<Value = Distribution> {
        prop_oneof![Just(Distribution::Ketama), Just(Distribution::Modula)]
    }

    fn hash_fn() -> impl Strategy<Value = HashFn> {
        (0..HashFn::ALL.len()).prop_map(|n| HashFn::ALL[n])
    }

    proptest! {
        #[test]
        fn routing_is_deterministic(
            hash in hash_fn(),
            distribution in distribution(),
            weights in prop::collection::vec(1u32..5, 1..8),
            keys in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..20),
        ) {
            let shards = specs(&weights);
            let first = ShardMap::new(hash, distribution, Some(*b"{}"), &shards);
            let second = ShardMap::new(hash, distribution, Some(*b"{}"), &shards);
            for key in &keys {
                let shard = first.route(key);
                prop_assert!(shard.is_some_and(|shard| shard < shards.len()));
                prop_assert_eq!(shard, first.route(key));
                prop_assert_eq!(shard, second.route(key));
            }
        }

        #[test]
        fn routes_only_to_live_shards(
            hash in hash_fn(),
            distribution in prop_oneof![Just(Distribution::Ketama), Just(Distribution::Modula), Just(Distribution::Random)],
            shards in prop::collection::vec((1u32..5, any::<bool>()), 2..10),
            key in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let (weights, live): (Vec<u32>, Vec<bool>) = shards.into_iter().unzip();
            let map = ShardMap::with_live(hash, distribution, None, &specs(&weights), &live);
            match map.route(&key) {
                Some(shard) => prop_assert!(live[shard]),
                None => prop_assert!(live.iter().all(|&live| !live)),
            }
        }

        #[test]
        fn modula_matches_nutcracker_slot_list(
            hash in hash_fn(),
            shards in prop::collection::vec((0u32..6, any::<bool>()), 2..10),
            key in prop::collection::vec(any::<u8>(), 1..40),
        ) {
            let (weights, live): (Vec<u32>, Vec<bool>) = shards.into_iter().unzip();
            let slots: Vec<usize> = (0..weights.len())
                .filter(|&n| live[n])
                .flat_map(|n| std::iter::repeat_n(n, weights[n] as usize))
                .collect();
            let map = ShardMap::with_live(hash, Distribution::Modula, None, &specs(&weights), &live);
            let expected = (!slots.is_empty())
                .then(|| slots[(hash.hash(&key) % slots.len() as u32) as usize]);
            prop_assert_eq!(map.route(&key), expected);
        }

        #[test]
        fn hashed_part_is_the_tagged_substring(
            prefix in prop::collection::vec(any::<u8>().prop_filter("no open", |&b| b != b'{'), 0..10),
            inner in prop::collection::vec(any::<u8>().prop_filter("no close", |&b| b != b'}'), 1..10),
            suffix in prop::collection::vec(any::<u8>(), 0..10),
        ) {
            let map = tagged(b"{}");
            let key = [&prefix[..], b"{", &inner[..], b"}", &suffix[..]].concat();
            prop_assert_eq!(map.hashed_part(&key), &inner[..]);
            // Keys sharing a tag share a shard.
            let other = [b"other:{", &inner[..], b"}"].concat();
            prop_assert_eq!(map.route(&key), map.route(&other));
        }

        #[test]
        fn hashed_part_is_a_nonempty_slice_of_the_key(key in prop::collection::vec(any::<u8>(), 0..40)) {
            let map = tagged(b"{}");
            let part = map.hashed_part(&key);
            prop_assert_eq!(part.is_empty(), key.is_empty());
            let found = key.windows(part.len().max(1)).any(|window| window == part) || part.is_empty();
            prop_assert!(found);
            if !key.contains(&b'{') {
                prop_assert_eq!(part, &key[..]);
            }
        }

        #[test]
        fn empty_tag_or_no_close_hashes_whole_key(
            prefix in prop::collection::vec(any::<u8>().prop_filter("no open", |&b| b != b'{'), 0..10),
            rest in prop::collection::vec(any::<u8>().prop_filter("no close", |&b| b != b'}'), 0..10),
        ) {
            let map = tagged(b"{}");
            let unclosed = [&prefix[..], b"{", &rest[..]].concat();
            prop_assert_eq!(map.hashed_part(&unclosed), &unclosed[..]);
            let empty = [&prefix[..], b"{}", &rest[..]].concat();
            prop_assert_eq!(map.hashed_part(&empty), &empty[..]);
        }
    }

    proptest! {
        // Each case builds two continuums of up to 24 shards: fewer cases keep debug test runs short.
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// With equal weights and at most 24 shards (see the 26-shard test below), every live shard keeps exactly
        /// its 160 points when another is ejected, so only the ejected shard's keys move.
        #[test]
        fn ejecting_an_equal_weight_shard_moves_only_its_keys(
            count in 2usize..=24,
            weight in 1u32..4,
            ejected_seed in any::<usize>(),
            keys in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..24), 50),
        ) {
            let ejected = ejected_seed % count;
            let shards = specs(&vec![weight; count]);
            let mut live = vec![true; count];
            live[ejected] = false;
            let all = ShardMap::new(HashFn::Fnv1a_64, Distribution::Ketama, None, &shards);
            let rest = ShardMap::with_live(HashFn::Fnv1a_64, Distribution::Ketama, None, &shards, &live);
            for key in &keys {
                let before = all.route(key);
                let after = rest.route(key);
                prop_assert!(after.is_some() && after != Some(ejected));
                if before != Some(ejected) {
                    prop_assert_eq!(before, after);
                }
            }
        }

        /// Whatever the weights, keys of the ejected shard land on live shards; the survivors'
        /// keys may move too, as nutcracker re-weights the survivors' points.
        #[test]
        fn ejected_shards_keys_go_to_live_shards(
            weights in prop::collection::vec(1u32..10, 2..12),
            ejected_seed in any::<usize>(),
            keys in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..24), 50),
        ) {
            let ejected = ejected_seed % weights.len();
            let shards = specs(&weights);
            let mut live = vec![true; weights.len()];
            live[ejected] = false;
            let rest = ShardMap::with_live(HashFn::Murmur, Distribution::Ketama, None, &shards, &live);
            for key in &keys {
                prop_assert!(rest.route(key).is_some_and(|shard| shard != ejected));
            }
        }

    }
}
