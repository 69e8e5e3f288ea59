//! The ring both hash rings share: sorted points, each owned by a shard. Ketama's continuum
//! ([`super::ketama::Continuum`], 32-bit points) and Jedis's ring ([`super::jedis::Ring`],
//! signed 64-bit points) differ only in how they make their points.

/// Points in ascending order, each owned by a shard: a hash belongs to the first point at or
/// after it, wrapping to the first point.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Points<V> {
    /// Point values, ascending; kept apart from `owners` so the search stays in cache.
    values: Vec<V>,
    /// `owners[i]` owns `values[i]`.
    owners: Vec<u32>,
    /// Where each bucket of values (by their top `bits`) starts in `values`, and one past the
    /// end: a lookup searches one bucket (a point or two), not the whole ring.
    starts: Vec<u32>,
    bits: u32,
}

/// A point value's place in the ring's order, as an unsigned number: its top bits bucket it.
pub trait Ordinal: Ord + Copy {
    /// Order-preserving: `a < b` exactly when `a.ordinal() < b.ordinal()`.
    fn ordinal(self) -> u64;
}

impl Ordinal for u32 {
    fn ordinal(self) -> u64 {
        u64::from(self) << 32
    }
}

impl Ordinal for i64 {
    fn ordinal(self) -> u64 {
        // Flipping the sign bit maps i64's order onto u64's.
        (self as u64) ^ (1 << 63)
    }
}

impl<V: Ordinal> Points<V> {
    /// The ring of `points` (`(value, shard)`), already sorted by value.
    pub(super) fn from_sorted(points: impl IntoIterator<Item = (V, u32)>) -> Points<V> {
        let (values, owners): (Vec<V>, Vec<u32>) = points.into_iter().unzip();
        // About one point per bucket, at most 2^16 buckets (256 KiB).
        let bits = values
            .len()
            .next_power_of_two()
            .trailing_zeros()
            .clamp(1, 16);
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut at = 0;
        for bucket in 0..=(1u64 << bits) {
            while values
                .get(at)
                .is_some_and(|v: &V| v.ordinal() >> (64 - bits) < bucket)
            {
                at += 1;
            }
            // `at` is at most the point count, far below 2^32 (12 bytes of memory each).
            #[allow(clippy::cast_possible_truncation)]
            starts.push(at as u32);
        }
        Points {
            values,
            owners,
            starts,
            bits,
        }
    }

    /// The shard owning `hash`: the first point >= `hash`, else the first point. `None` if
    /// there are no points.
    #[inline]
    pub fn dispatch(&self, hash: V) -> Option<usize> {
        // Points of lower buckets are below `hash`, of higher ones above it.
        // (A default, empty ring has no bits: every hash is in bucket 0, which is empty.)
        // At most 16 bits are left: the bucket fits.
        #[allow(clippy::cast_possible_truncation)]
        let bucket = hash.ordinal().checked_shr(64 - self.bits).unwrap_or(0) as usize;
        let lo = self.starts.get(bucket).map_or(0, |&at| at as usize);
        let hi = self.starts.get(bucket + 1).map_or(lo, |&at| at as usize);
        let within = self.values.get(lo..hi).unwrap_or_default();
        let at = lo + within.partition_point(|&value| value < hash);
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The ring's answer without the bucket index: a search of every point.
    fn searched<V: Ordinal>(values: &[V], hash: V) -> Option<usize> {
        let at = values.partition_point(|&value| value < hash);
        (!values.is_empty()).then_some(if at == values.len() { 0 } else { at })
    }

    fn ring<V: Ordinal>(mut values: Vec<V>) -> (Vec<V>, Points<V>) {
        values.sort();
        let points = Points::from_sorted(values.iter().enumerate().map(|(i, &v)| (v, i as u32)));
        (values, points)
    }

    #[test]
    fn an_empty_ring_owns_nothing() {
        assert_eq!(Points::<u32>::default().dispatch(7), None);
        assert_eq!(ring::<i64>(vec![]).1.dispatch(-7), None);
    }

    proptest! {
        #[test]
        fn the_bucket_index_finds_what_a_full_search_finds_u32(
            values in prop::collection::vec(any::<u32>(), 0..700),
            hashes in prop::collection::vec(any::<u32>(), 1..50),
        ) {
            let (values, points) = ring(values);
            for hash in hashes.into_iter().chain(values.iter().copied()).chain([0, u32::MAX]) {
                // Equal values: the first of them owns the hash, as in the full search.
                prop_assert_eq!(points.dispatch(hash), searched(&values, hash));
            }
        }

        #[test]
        fn the_bucket_index_finds_what_a_full_search_finds_i64(
            values in prop::collection::vec(any::<i64>(), 0..700),
            hashes in prop::collection::vec(any::<i64>(), 1..50),
        ) {
            let (values, points) = ring(values);
            for hash in hashes.into_iter().chain(values.iter().copied()).chain([i64::MIN, 0, i64::MAX]) {
                prop_assert_eq!(points.dispatch(hash), searched(&values, hash));
            }
        }
    }
}
