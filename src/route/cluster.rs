//! A Redis Cluster's layout as Keyway routes by it: each slot's master and healthy replicas,
//! as indexes into the pool's nodes. Immutable; the control plane swaps in a new one whenever
//! the cluster's slot map changes.

use std::fmt;
use std::ops::RangeInclusive;

use super::slots::{ranges_by_owner, SLOTS};

/// Marks a slot no group serves.
const UNSERVED: u16 = u16::MAX;

/// One master and its replicas, as node indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The node that owns the group's slots and takes every write.
    pub master: usize,
    /// Healthy replicas, which may serve reads (`READONLY`).
    pub replicas: Vec<usize>,
}

/// Slot → group, and each group's nodes.
#[derive(Clone, PartialEq, Eq)]
pub struct Layout {
    owners: Box<[u16; SLOTS]>,
    groups: Vec<Group>,
}

impl Layout {
    /// A layout that serves no slot (a cluster not asked yet).
    pub fn empty() -> Layout {
        Layout {
            owners: Box::new([UNSERVED; SLOTS]),
            groups: Vec::new(),
        }
    }

    /// The layout where each group serves its ranges. A slot claimed twice stays with the first
    /// group that claims it; ranges past slot 16383 are ignored.
    ///
    /// ```
    /// use keyway::route::cluster::{Group, Layout};
    ///
    /// let layout = Layout::new(vec![
    ///     (vec![0..=8191], Group { master: 2, replicas: vec![0] }),
    ///     (vec![8192..=16383], Group { master: 1, replicas: vec![] }),
    /// ]);
    /// assert_eq!(layout.master(100), Some(2));
    /// assert_eq!(layout.replicas(100), &[0]);
    /// assert_eq!(layout.master(16383), Some(1));
    /// assert!(layout.replicas(16383).is_empty());
    /// ```
    pub fn new(groups: Vec<(Vec<RangeInclusive<u16>>, Group)>) -> Layout {
        let mut owners = Box::new([UNSERVED; SLOTS]);
        let mut kept = Vec::with_capacity(groups.len());
        for (ranges, group) in groups {
            let Ok(index) = u16::try_from(kept.len()) else {
                break;
            };
            if index == UNSERVED {
                break;
            }
            for range in &ranges {
                let (start, end) = (usize::from(*range.start()), usize::from(*range.end()));
                for owner in owners.iter_mut().take(end + 1).skip(start) {
                    if *owner == UNSERVED {
                        *owner = index;
                    }
                }
            }
            kept.push(group);
        }
        Layout {
            owners,
            groups: kept,
        }
    }

    /// The group serving `slot`, if any.
    #[inline]
    fn group(&self, slot: u16) -> Option<&Group> {
        let index = *self.owners.get(usize::from(slot))?;
        self.groups.get(usize::from(index))
    }

    /// The master node of `slot`; `None` when no node serves it.
    #[inline]
    pub fn master(&self, slot: u16) -> Option<usize> {
        self.group(slot).map(|group| group.master)
    }

    /// The healthy replicas of `slot`'s master (empty when it has none or no one serves it).
    #[inline]
    pub fn replicas(&self, slot: u16) -> &[usize] {
        self.group(slot).map_or(&[], |group| &group.replicas)
    }

    /// The nodes that serve slots, sorted by index: each group's master, and with `replicas`
    /// its healthy replicas too.
    ///
    /// ```
    /// use keyway::route::cluster::{Group, Layout};
    ///
    /// let layout = Layout::new(vec![
    ///     (vec![0..=8191], Group { master: 2, replicas: vec![0] }),
    ///     (vec![8192..=16383], Group { master: 1, replicas: vec![] }),
    /// ]);
    /// assert_eq!(layout.nodes(false), [1, 2]);
    /// assert_eq!(layout.nodes(true), [0, 1, 2]);
    /// ```
    pub fn nodes(&self, replicas: bool) -> Vec<usize> {
        let mut nodes: Vec<usize> = self
            .groups
            .iter()
            .flat_map(|group| {
                let others = if replicas { &group.replicas[..] } else { &[] };
                std::iter::once(group.master).chain(others.iter().copied())
            })
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Whether every slot is served.
    pub fn covers_all(&self) -> bool {
        self.owners.iter().all(|&owner| owner != UNSERVED)
    }

    /// Each of the `nodes` nodes (index = node) with the slots it serves as master, sorted and
    /// merged; replicas and idle nodes have none.
    pub fn master_ranges(&self, nodes: usize) -> Vec<Vec<RangeInclusive<u16>>> {
        let by_group = ranges_by_owner(&self.owners[..], self.groups.len());
        let mut by_node = vec![Vec::new(); nodes];
        for (group, ranges) in self.groups.iter().zip(by_group) {
            if let Some(slot) = by_node.get_mut(group.master) {
                slot.extend(ranges);
            }
        }
        for ranges in &mut by_node {
            ranges.sort_by_key(|range| *range.start());
        }
        by_node
    }
}

impl fmt::Debug for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layout")
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(master: usize, replicas: &[usize]) -> Group {
        Group {
            master,
            replicas: replicas.to_vec(),
        }
    }

    #[test]
    fn empty_layout_serves_nothing() {
        let layout = Layout::empty();
        assert_eq!(layout.master(0), None);
        assert!(layout.replicas(0).is_empty());
        assert!(!layout.covers_all());
        assert_eq!(layout.master_ranges(2), vec![vec![], vec![]]);
    }

    #[test]
    fn slots_map_to_their_groups_and_gaps_stay_unserved() {
        let layout = Layout::new(vec![
            (vec![0..=99, 200..=299], group(3, &[1])),
            (vec![100..=150], group(0, &[])),
        ]);
        assert_eq!(layout.master(0), Some(3));
        assert_eq!(layout.master(250), Some(3));
        assert_eq!(layout.replicas(250), &[1]);
        assert_eq!(layout.master(120), Some(0));
        assert_eq!(layout.master(160), None);
        assert_eq!(layout.master(16383), None);
        assert!(!layout.covers_all());
        assert_eq!(
            layout.master_ranges(4),
            vec![vec![100..=150], vec![], vec![], vec![0..=99, 200..=299]]
        );
    }

    #[test]
    fn a_slot_claimed_twice_stays_with_the_first_group() {
        let layout = Layout::new(vec![
            (vec![0..=16383], group(0, &[])),
            (vec![5..=5], group(1, &[])),
        ]);
        assert_eq!(layout.master(5), Some(0));
        assert!(layout.covers_all());
    }
}
