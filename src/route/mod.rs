//! Key → shard index: hash tag → hash → distribution. Pure, no I/O: cheap to test, bench and
//! diff against nutcracker. A [`ShardMap`] is immutable and replaced whole.

pub mod hash;
pub mod ketama;
pub mod modula;
pub mod random;

pub use hash::HashFn;

/// How hashed keys are spread over shards (nutcracker's `distribution`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Consistent hashing on an MD5 continuum (160 points per shard, scaled by weight).
    Ketama,
    /// `hash % total weight`.
    Modula,
    /// A random live shard per request.
    Random,
}

/// One backend as routing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    /// The ketama point name: the server's name, else `host:port` (`host` alone for port 11211).
    pub name: String,
    /// Relative weight, at least 1.
    pub weight: u32,
}

impl Distribution {
    /// The distribution with this config name: `ketama`, `modula` or `random`.
    pub fn parse(name: &str) -> Option<Distribution> {
        match name {
            "ketama" => Some(Distribution::Ketama),
            "modula" => Some(Distribution::Modula),
            "random" => Some(Distribution::Random),
            _ => None,
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
    /// looked up in the distribution (random ignores it).
    ///
    /// ```
    /// use keyway::route::{Distribution, HashFn, ShardMap, ShardSpec};
    ///
    /// let shards: Vec<ShardSpec> = (1..=3)
    ///     .map(|n| ShardSpec { name: format!("10.0.0.{n}:6379"), weight: 1 })
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
    /// ```
    #[inline]
    pub fn route(&self, key: &[u8]) -> Option<usize> {
        if self.live_count == 0 {
            return None;
        }
        if self.shard_count == 1 {
            return Some(0);
        }
        match &self.dispatch {
            Dispatch::Ketama(continuum) => continuum.dispatch(self.key_hash(key)),
            Dispatch::Modula(modula) => modula.dispatch(self.key_hash(key)),
            Dispatch::Random(random) => random.dispatch(),
        }
    }

    /// The part of `key` that is hashed. With a hash tag `[open, close]`: the bytes between
    /// the first `open` and the first `close` after it, if both exist and enclose at least
    /// one byte; otherwise (and without a hash tag) the whole key.
    pub fn hashed_part<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        match self.hash_tag {
            Some(tag) => hash_tag_part(tag, key),
            None => key,
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
