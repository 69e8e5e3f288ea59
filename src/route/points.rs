//! The ring both hash rings share: sorted points, each owned by a shard. Ketama's continuum
//! ([`super::ketama::Continuum`], 32-bit points) and Jedis's ring ([`super::jedis::Ring`],
//! signed 64-bit points) differ only in how they make their points.

/// Points in ascending order, each owned by a shard: a hash belongs to the first point at or
/// after it, wrapping to the first point.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Points<V> {
    /// Point values, ascending; kept apart from `owners` so the binary search stays in cache.
    values: Vec<V>,
    /// `owners[i]` owns `values[i]`.
    owners: Vec<u32>,
}

impl<V: Ord + Copy> Points<V> {
    /// The ring of `points` (`(value, shard)`), already sorted by value.
    pub(super) fn from_sorted(points: impl IntoIterator<Item = (V, u32)>) -> Points<V> {
        let (values, owners) = points.into_iter().unzip();
        Points { values, owners }
    }

    /// The shard owning `hash`: the first point >= `hash`, else the first point. `None` if
    /// there are no points.
    #[inline]
    pub fn dispatch(&self, hash: V) -> Option<usize> {
        let at = self.values.partition_point(|&value| value < hash);
        self.owners
            .get(at)
            .or_else(|| self.owners.first())
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
    pub fn points(&self) -> impl Iterator<Item = (V, usize)> + '_ {
        self.values
            .iter()
            .zip(&self.owners)
            .map(|(&value, &shard)| (value, shard as usize))
    }
}
