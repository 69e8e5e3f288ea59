//! Modula distribution, as nutcracker's `nc_modula.c`: `hash % total live weight`.

use super::ShardSpec;

/// Each live shard owns `weight` consecutive slots, in shard order; a hash picks slot
/// `hash % total`. Stored as running totals rather than nutcracker's one entry per weight
/// unit, so memory stays bounded whatever the weights.
///
/// ```
/// use keyway::route::modula::Modula;
/// use keyway::route::ShardSpec;
///
/// let shards = [
///     ShardSpec::new("a", 1),
///     ShardSpec::new("b", 2),
/// ];
/// let modula = Modula::new(&shards, &[true, true]);
/// let owners: Vec<_> = (0..6).map(|hash| modula.dispatch(hash)).collect();
/// assert_eq!(owners, [Some(0), Some(1), Some(1), Some(0), Some(1), Some(1)]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Modula {
    /// `(slots up to and including this shard, shard index)`, in shard order; zero-weight
    /// shards left out.
    ends: Vec<(u64, u32)>,
    /// Total live weight: the number of slots.
    total: u64,
}

impl Modula {
    /// The slots of the live shards (`live[i]`; a missing entry counts as live), as
    /// `modula_update` lays them out.
    pub fn new(shards: &[ShardSpec], live: &[bool]) -> Modula {
        let mut total = 0u64;
        let mut ends = Vec::new();
        for (index, shard) in shards.iter().enumerate() {
            if !live.get(index).copied().unwrap_or(true) || shard.weight == 0 {
                continue;
            }
            total += u64::from(shard.weight);
            let Ok(index) = u32::try_from(index) else {
                break;
            };
            ends.push((total, index));
        }
        Modula { ends, total }
    }

    /// The shard owning slot `hash % total` (`modula_dispatch`); `None` without slots.
    #[inline]
    pub fn dispatch(&self, hash: u32) -> Option<usize> {
        let slot = u64::from(hash).checked_rem(self.total)?;
        let at = self.ends.partition_point(|&(end, _)| end <= slot);
        self.ends.get(at).map(|&(_, shard)| shard as usize)
    }

    /// Number of slots: the total weight of live shards.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}
