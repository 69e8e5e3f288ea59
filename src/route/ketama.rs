//! The ketama continuum, built and searched as nutcracker's `nc_ketama.c` does.

use super::hash::{md5_digest, md5_word};
use super::ShardSpec;

/// Points per live shard of average weight.
const POINTS_PER_SHARD: f32 = 160.0;
/// Points taken from one MD5 digest.
const POINTS_PER_HASH: u32 = 4;
/// nutcracker formats point names into a `char[86]` (`KETAMA_MAX_HOSTLEN`) with `snprintf`.
const MAX_POINT_NAME: usize = 86;

/// A sorted ring of `(point, shard)` pairs: a hash belongs to the first point at or after it,
/// wrapping to the first point.
///
/// ```
/// use keyway::route::ketama::Continuum;
/// use keyway::route::ShardSpec;
///
/// let shards = [
///     ShardSpec { name: "a".into(), weight: 1 },
///     ShardSpec { name: "b".into(), weight: 1 },
/// ];
/// let continuum = Continuum::new(&shards, &[true, true]);
/// assert_eq!(continuum.len(), 320);
/// assert!(continuum.dispatch(0xdead_beef).is_some_and(|shard| shard < 2));
///
/// let one_live = Continuum::new(&shards, &[false, true]);
/// assert_eq!(one_live.dispatch(0xdead_beef), Some(1));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Continuum {
    /// Point values, ascending; kept apart from `shards` so the binary search stays in cache.
    values: Vec<u32>,
    /// `shards[i]` owns `values[i]`.
    shards: Vec<u32>,
}

impl Continuum {
    /// Builds the continuum of the live shards (`live[i]`; a missing entry counts as live),
    /// as `ketama_update` does: each live shard gets `floor(share * 40 * nlive) * 4` points,
    /// its share being its weight over the total weight of live shards only.
    pub fn new(shards: &[ShardSpec], live: &[bool]) -> Continuum {
        let is_live = |index: usize| live.get(index).copied().unwrap_or(true);
        let live_shards = || {
            shards
                .iter()
                .enumerate()
                .filter(move |&(index, _)| is_live(index))
        };
        let nlive = live_shards().count() as u32;
        // `uint32_t total_weight`: wraps like the C sum would.
        let total_weight = live_shards().fold(0u32, |sum, (_, s)| sum.wrapping_add(s.weight));

        let mut points: Vec<(u32, u32)> = Vec::new();
        for (index, shard) in live_shards() {
            let count = point_count(shard.weight, total_weight, nlive);
            points.reserve(count as usize);
            let mut name = Vec::with_capacity(shard.name.len() + 11);
            for group in 0..count / POINTS_PER_HASH {
                name.clear();
                name.extend_from_slice(shard.name.as_bytes());
                name.push(b'-');
                name.extend_from_slice(group.to_string().as_bytes());
                let digest = md5_digest(&snprintf_bytes(&name));
                for word in 0..POINTS_PER_HASH as usize {
                    points.push((md5_word(&digest, word), index as u32));
                }
            }
        }
        // nutcracker uses qsort; glibc's qsort is a stable merge sort for arrays this size, so
        // equal points keep shard order, and the search below finds the lowest shard's first.
        points.sort_by_key(|&(value, _)| value);
        let (values, shards) = points.into_iter().unzip();
        Continuum { values, shards }
    }

    /// The shard owning `hash`: the first point >= `hash`, else the first point
    /// (`ketama_dispatch`). `None` if the continuum has no points.
    #[inline]
    pub fn dispatch(&self, hash: u32) -> Option<usize> {
        let at = self.values.partition_point(|&value| value < hash);
        self.shards
            .get(at)
            .or_else(|| self.shards.first())
            .map(|&shard| shard as usize)
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no points (no live shard, or only zero weights).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The points, ascending: `(value, shard index)`.
    pub fn points(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.values
            .iter()
            .zip(&self.shards)
            .map(|(&value, &shard)| (value, shard as usize))
    }
}

/// `ketama_update`'s points for one shard, with its float types: `pct` is a `float`, the
/// product is `float`, the `+ 0.0000000001` is a `double` literal (so the sum is a double,
/// rounded back to float before `floorf`).
fn point_count(weight: u32, total_weight: u32, nlive: u32) -> u32 {
    let pct = weight as f32 / total_weight as f32;
    let per_hash = (((pct * POINTS_PER_SHARD / POINTS_PER_HASH as f32 * nlive as f32) as f64
        + 0.000_000_000_1) as f32)
        .floor();
    // `(uint32_t)` of a NaN (total weight 0) is undefined in C; `as` gives 0 points.
    (per_hash * POINTS_PER_HASH as f32) as u32
}

/// The bytes nutcracker hashes for a point name: `snprintf` into `char[86]` truncates to 85
/// bytes plus NUL, but the returned (untruncated) length is what gets hashed. Up to 86 bytes
/// this is exact; beyond, nutcracker reads past its buffer (undefined), and zeros stand in.
fn snprintf_bytes(name: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if name.len() < MAX_POINT_NAME {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut buffer = vec![0u8; name.len()];
    for (dst, src) in buffer.iter_mut().zip(name.iter().take(MAX_POINT_NAME - 1)) {
        *dst = *src;
    }
    std::borrow::Cow::Owned(buffer)
}
