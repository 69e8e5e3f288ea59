//! Splitting a multi-key request by where its keys go, for either protocol: the place of each
//! key (`P`: whatever the pool routes to — a shard, or a Redis Cluster slot), the sub-request
//! per place, and the plan that puts the replies back in key order.
//! Each protocol builds its sub-requests and merges its replies itself ([`super::resp::fanout`],
//! [`super::memcache::fanout`]); the bookkeeping between the two is here, once.

use smallvec::SmallVec;

/// A multi-key request split by place; `C` holds what was made of each part (its
/// sub-request, or what sending it gave), `M` is what the merge needs besides the key order,
/// `P` where a key goes.
#[derive(Debug)]
pub enum Split<C, M, P = usize> {
    /// Every key goes to one place: forward the original request unchanged.
    Whole(P),
    /// One item per place, in place order, and how to put the replies back together.
    Parts(C, Plan<M>),
}

/// The sub-request for one place.
#[derive(Debug)]
pub struct Part<R, P = usize> {
    /// Where its keys go.
    pub shard: P,
    /// The request carrying this shard's keys (and values).
    pub request: R,
}

/// How the parts' replies merge into the client's reply: for each of the client's keys, in
/// its order, the part that got it and its place among that part's keys.
#[derive(Debug)]
pub struct Plan<M> {
    merge: M,
    order: Order,
    parts: usize,
}

impl<M> Plan<M> {
    /// The plan for one request sent whole to `parts` places (every shard, for a keyspace-wide
    /// command): no key order, the replies merged in place order.
    pub fn whole(merge: M, parts: usize) -> Plan<M> {
        Plan {
            merge,
            order: Order::new(),
            parts,
        }
    }

    /// What the protocol's merge needs besides the key order.
    pub fn merge(&self) -> &M {
        &self.merge
    }

    /// Per key of the client's request, in order: (part, index among that part's keys).
    pub fn order(&self) -> &[(u32, u32)] {
        &self.order
    }

    /// The number of parts, hence of replies to merge.
    pub fn parts(&self) -> usize {
        self.parts
    }
}

/// Where the keys of one request go: the parts (one per shard, in the order of their first
/// key) and each key's part. Built once per split request, inline for a few parts and keys.
#[derive(Debug)]
pub(crate) struct Layout<P> {
    /// Per part: its place and how many keys it got.
    shards: SmallVec<[(P, u32); 8]>,
    /// Per key, in request order: (part, index among that part's keys).
    order: Order,
}

/// Per key of a split request: (part, index among that part's keys); inline for up to 16
/// keys, so most splits allocate nothing for it.
type Order = SmallVec<[(u32, u32); 16]>;

impl<P: Copy + PartialEq> Layout<P> {
    /// Routes `keys` (about `count` of them) with `route`.
    ///
    /// # Errors
    /// The first error `route` returns.
    pub(crate) fn route<'k, E>(
        keys: impl IntoIterator<Item = &'k [u8]>,
        count: usize,
        mut route: impl FnMut(&[u8]) -> Result<P, E>,
    ) -> Result<Layout<P>, E> {
        let mut shards: SmallVec<[(P, u32); 8]> = SmallVec::new();
        let mut order = Order::with_capacity(count);
        for key in keys {
            let shard = route(key)?;
            let part = match shards.iter().position(|&(s, _)| s == shard) {
                Some(part) => part,
                None => {
                    shards.push((shard, 0));
                    shards.len() - 1
                }
            };
            let Some((_, taken)) = shards.get_mut(part) else {
                break;
            };
            // A request holds fewer keys than bytes, and at most `u32::MAX` bytes (codec).
            #[allow(clippy::cast_possible_truncation)]
            let part = part as u32;
            order.push((part, *taken));
            *taken += 1;
        }
        Ok(Layout { shards, order })
    }

    /// The shard, when all the keys go to one (or there are none: then `None`).
    pub(crate) fn single_shard(&self) -> Option<P> {
        match self.shards[..] {
            [(shard, _)] => Some(shard),
            _ => None,
        }
    }

    /// The parts in order: (shard, number of keys).
    #[cfg(test)]
    pub(crate) fn shards(&self) -> &[(P, u32)] {
        &self.shards
    }

    /// The number of parts.
    pub(crate) fn parts(&self) -> usize {
        self.shards.len()
    }

    /// Per key, in request order: (part, index among that part's keys).
    pub(crate) fn order(&self) -> &[(u32, u32)] {
        &self.order
    }

    /// Makes each part's item with `build(part, shard, order)` (`order` as in
    /// [`Plan::order`]; [`keys_of`] picks the part's keys from it), and the plan to merge
    /// their replies; `keep_order` false drops the key order (a merge that sums or checks
    /// replies does not need it).
    pub(crate) fn split<T, C: FromIterator<T>, M>(
        self,
        merge: M,
        keep_order: bool,
        mut build: impl FnMut(usize, P, &[(u32, u32)]) -> T,
    ) -> Split<C, M, P> {
        let parts = self
            .shards
            .iter()
            .enumerate()
            .map(|(part, &(shard, _))| build(part, shard, &self.order))
            .collect();
        let mut order = self.order;
        if !keep_order {
            order.clear();
        }
        Split::Parts(
            parts,
            Plan {
                merge,
                order,
                parts: self.shards.len(),
            },
        )
    }
}

/// The indexes (in request order) of the keys that `order` sends to `part`.
pub(crate) fn keys_of(
    order: &[(u32, u32)],
    part: usize,
) -> impl Iterator<Item = usize> + Clone + '_ {
    order
        .iter()
        .enumerate()
        .filter(move |(_, &(key_part, _))| key_part as usize == part)
        .map(|(key, _)| key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_come_in_the_order_of_their_first_key() {
        let keys: [&[u8]; 5] = [b"b1", b"a1", b"b2", b"c1", b"a2"];
        let route = |key: &[u8]| Ok::<_, ()>(usize::from(key[0] - b'a') * 10);
        let layout = Layout::route(keys, keys.len(), route).unwrap();
        assert_eq!(layout.shards(), &[(10, 2), (0, 2), (20, 1)]);
        assert_eq!(layout.single_shard(), None);
        let split: Split<Vec<_>, (), usize> = layout.split((), true, |part, shard, order| {
            (part, shard, keys_of(order, part).collect::<Vec<_>>())
        });
        let Split::Parts(requests, plan) = split else {
            panic!("expected parts");
        };
        assert_eq!(
            requests,
            vec![(0, 10, vec![0, 2]), (1, 0, vec![1, 4]), (2, 20, vec![3])]
        );
        assert_eq!(plan.order(), &[(0, 0), (1, 0), (0, 1), (2, 0), (1, 1)]);
        assert_eq!(plan.parts(), 3);
    }

    #[test]
    fn one_shard_and_route_errors() {
        let keys: [&[u8]; 2] = [b"x", b"y"];
        let one = Layout::route(keys, 2, |_| Ok::<_, ()>(3)).unwrap();
        assert_eq!(one.single_shard(), Some(3));
        let failed = Layout::route(keys, 2, |key| if key == b"y" { Err("no") } else { Ok(0) });
        assert_eq!(failed.map(|_| ()), Err("no"));
        let none = Layout::route([], 0, |_| Ok::<_, ()>(0)).unwrap();
        assert_eq!(none.single_shard(), None);
    }
}
