//! Random distribution, as nutcracker's `nc_random.c`: any live shard, weights ignored.

use rand::Rng;

use super::ShardSpec;

/// The live shards; each request goes to one picked uniformly (nutcracker ignores weights
/// here and never hashes the key).
///
/// ```
/// use keyway::route::random::Random;
/// use keyway::route::ShardSpec;
///
/// let shards = [
///     ShardSpec::new("a", 1),
///     ShardSpec::new("b", 5),
/// ];
/// let random = Random::new(&shards, &[false, true]);
/// assert_eq!(random.dispatch(), Some(1));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Random {
    /// Indices of live shards.
    live: Vec<u32>,
}

impl Random {
    /// The live shards (`live[i]`; a missing entry counts as live), as `random_update` lists them.
    pub fn new(shards: &[ShardSpec], live: &[bool]) -> Random {
        let live = (0..shards.len())
            .filter(|&index| live.get(index).copied().unwrap_or(true))
            .filter_map(|index| u32::try_from(index).ok())
            .collect();
        Random { live }
    }

    /// A live shard picked at random (`random_dispatch`); `None` if none is live.
    #[inline]
    pub fn dispatch(&self) -> Option<usize> {
        if self.live.is_empty() {
            return None;
        }
        let at = rand::thread_rng().gen_range(0..self.live.len());
        self.live.get(at).map(|&shard| shard as usize)
    }

    /// Number of live shards.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no shard is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}
