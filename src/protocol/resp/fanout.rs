//! Multi-key commands (`MGET`, `MSET`, `DEL`, ...): split into one request per shard, then
//! merge the shards' replies back in the client's key order.

use bytes::Bytes;
use smallvec::SmallVec;

use super::codec::Request;
use super::codec::{array_header_len, bulk_len, put_array_header, put_bulk};
use super::command::Merge;
use super::reply;
use crate::protocol::fanout::{self, Layout};

/// A multi-key request split by where its keys go (`P`: a shard, or a cluster slot); `C`
/// holds what sending each part gave.
pub type Split<C, P = usize> = fanout::Split<C, Merge, P>;

/// How the parts' replies merge into the client's reply (the key order kept for
/// `Merge::Values` only).
pub type Plan = fanout::Plan<Merge>;

/// Splits `request` (whose keys start at argument 1; with `Merge::Ok` each key is followed by
/// its value) by the shard `route` picks for each key, and hands each part's sub-request
/// frame to `send(shard, frame)`, in part order; what it returns is collected in `C`.
///
/// # Errors
/// The first error `route` returns (nothing is sent then).
pub fn split<P: Copy + PartialEq, E, T, C: FromIterator<T>>(
    request: &Request,
    merge: Merge,
    route: impl FnMut(&[u8]) -> Result<P, E>,
    mut send: impl FnMut(P, Bytes) -> T,
) -> Result<Split<C, P>, E> {
    let step = if merge == Merge::Ok { 2 } else { 1 };
    let keys = (1..).step_by(step).map_while(|i| request.arg(i));
    let layout = Layout::route(keys, request.argc() / step, route)?;
    if let Some(shard) = layout.single_shard() {
        return Ok(Split::Whole(shard));
    }
    let args_of = |key: usize| {
        let first = 1 + key * step;
        (first..first + step).filter_map(|j| request.arg(j))
    };
    // Every part's frame goes into one buffer of exactly their size, then sliced: one
    // allocation for all of them (and one more to share it), not one per part.
    let name = request.name();
    let mut sizes: SmallVec<[(usize, usize); 8]> =
        SmallVec::from_elem((1, bulk_len(name)), layout.parts());
    for (key, &(part, _)) in layout.order().iter().enumerate() {
        if let Some((argc, size)) = sizes.get_mut(part as usize) {
            for arg in args_of(key) {
                *argc += 1;
                *size += bulk_len(arg);
            }
        }
    }
    let total = sizes
        .iter()
        .map(|&(argc, size)| array_header_len(argc) + size);
    let mut frames = Vec::with_capacity(total.sum());
    let mut ends: SmallVec<[usize; 8]> = SmallVec::with_capacity(sizes.len());
    for (part, &(argc, _)) in sizes.iter().enumerate() {
        put_array_header(&mut frames, argc);
        put_bulk(&mut frames, name);
        for key in fanout::keys_of(layout.order(), part) {
            for arg in args_of(key) {
                put_bulk(&mut frames, arg);
            }
        }
        ends.push(frames.len());
    }
    let frames = Bytes::from(frames);
    Ok(
        layout.split(merge, merge == Merge::Values, |part, shard, _| {
            let start = part.checked_sub(1).and_then(|p| ends.get(p)).copied();
            let end = ends.get(part).copied().unwrap_or_default();
            send(shard, frames.slice(start.unwrap_or_default()..end))
        }),
    )
}

/// Merges the parts' replies (in part order). The first error reply, or reply of an unexpected
/// shape, becomes the whole reply.
pub fn merge(plan: &Plan, replies: &[Bytes]) -> Bytes {
    match plan.merge() {
        Merge::Values => merge_values(plan.order(), replies),
        Merge::Sum => sum(replies),
        Merge::Ok => all_ok(replies),
    }
}

/// The integer replies summed; the first reply that is not an integer instead.
pub(crate) fn sum(replies: &[Bytes]) -> Bytes {
    let mut sum: i64 = 0;
    for part in replies {
        match reply::integer_value(part) {
            Some(n) => sum = sum.saturating_add(n),
            None => return part.clone(),
        }
    }
    reply::integer(sum)
}

/// `+OK` once every reply is `+OK`; the first that is not instead.
pub(crate) fn all_ok(replies: &[Bytes]) -> Bytes {
    replies
        .iter()
        .find(|part| part.as_ref() != b"+OK\r\n")
        .cloned()
        .unwrap_or_else(|| reply::simple("OK"))
}

fn merge_values(order: &[(u32, u32)], replies: &[Bytes]) -> Bytes {
    // Per part: how many elements were taken and where the next one starts. A part's elements
    // are wanted in their own order, so each reply is scanned once, front to back.
    let mut cursors: SmallVec<[Cursor; 8]> = SmallVec::with_capacity(replies.len());
    // Each part's elements are all of it but its header: the merged reply's size is exact,
    // so its buffer becomes `Bytes` without another allocation.
    let mut size = array_header_len(order.len());
    for part in replies {
        match reply::array_start(part) {
            Some((count, start)) => {
                size += part.len().saturating_sub(start);
                cursors.push(Cursor {
                    taken: 0,
                    count,
                    at: start,
                });
            }
            None => return part.clone(),
        }
    }
    let mut out = Vec::with_capacity(size);
    put_array_header(&mut out, order.len());
    for &(part, index) in order {
        let element = replies
            .get(part as usize)
            .zip(cursors.get_mut(part as usize))
            .and_then(|(reply, cursor)| cursor.next(reply, index as usize));
        match element {
            Some(bytes) => out.extend_from_slice(bytes),
            None => return reply::error("ERR backend reply has fewer elements than keys"),
        }
    }
    Bytes::from(out)
}

/// Walks the elements of one part's array reply.
struct Cursor {
    /// Elements taken so far.
    taken: usize,
    /// Elements in the array.
    count: usize,
    /// Where the next element starts.
    at: usize,
}

impl Cursor {
    /// Element `index`, which must be the next one.
    fn next<'r>(&mut self, reply: &'r [u8], index: usize) -> Option<&'r [u8]> {
        if index != self.taken || self.taken >= self.count {
            return None;
        }
        let rest = reply.get(self.at..)?;
        let len = reply::element_len(rest)?;
        let element = rest.get(..len)?;
        self.taken += 1;
        self.at += len;
        Some(element)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::resp::codec::{Limits, RequestDecoder};
    use bytes::BytesMut;
    use proptest::prelude::*;

    fn route_by_first_byte(key: &[u8]) -> Result<usize, ()> {
        Ok(key.first().map_or(0, |b| (b % 3) as usize))
    }

    /// `split` by `route_by_first_byte`, each part as (shard, frame).
    fn split_frames(request: &Request, merge: Merge) -> Split<Vec<(usize, Bytes)>> {
        split(request, merge, route_by_first_byte, |shard, frame| {
            (shard, frame)
        })
        .unwrap()
    }

    /// A part's frame decoded back into its request.
    fn request_of(frame: &Bytes) -> Request {
        let mut buf = BytesMut::from(&frame[..]);
        let request = RequestDecoder::new(Limits::default()).decode(&mut buf);
        assert!(buf.is_empty(), "one frame, nothing after it");
        request.unwrap().unwrap()
    }

    fn args_of(frame: &Bytes) -> Vec<Vec<u8>> {
        let request = request_of(frame);
        (0..request.argc())
            .map(|i| request.arg(i).unwrap().to_vec())
            .collect()
    }

    #[test]
    fn one_shard_forwards_whole() {
        let request = Request::from_args([&b"MGET"[..], b"a", b"d"]);
        match split_frames(&request, Merge::Values) {
            Split::Whole(shard) => assert_eq!(shard, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mset_splits_pairs() {
        let request = Request::from_args([&b"MSET"[..], b"a", b"1", b"b", b"2", b"d", b"3"]);
        let Split::Parts(parts, _) = split_frames(&request, Merge::Ok) else {
            panic!("expected parts");
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, 1);
        assert_eq!(args_of(&parts[0].1), [&b"MSET"[..], b"a", b"1", b"d", b"3"]);
        assert_eq!(args_of(&parts[1].1), [&b"MSET"[..], b"b", b"2"]);
    }

    #[test]
    fn mget_merges_in_key_order() {
        let request = Request::from_args([&b"MGET"[..], b"a", b"b", b"d", b"b"]);
        let Split::Parts(parts, plan) = split_frames(&request, Merge::Values) else {
            panic!("expected parts");
        };
        assert_eq!(args_of(&parts[1].1), [&b"MGET"[..], b"b", b"b"]);
        let replies = [
            Bytes::from_static(b"*2\r\n$2\r\nva\r\n$-1\r\n"),
            Bytes::from_static(b"*2\r\n$2\r\nvb\r\n$2\r\nvb\r\n"),
        ];
        assert_eq!(
            merge(&plan, &replies).as_ref(),
            b"*4\r\n$2\r\nva\r\n$2\r\nvb\r\n$-1\r\n$2\r\nvb\r\n"
        );
    }

    #[test]
    fn counts_sum_and_errors_win() {
        let request = Request::from_args([&b"DEL"[..], b"a", b"b"]);
        let Split::Parts(_, plan) = split_frames(&request, Merge::Sum) else {
            panic!("expected parts");
        };
        let ok = [Bytes::from_static(b":1\r\n"), Bytes::from_static(b":2\r\n")];
        assert_eq!(merge(&plan, &ok).as_ref(), b":3\r\n");
        let failed = [
            Bytes::from_static(b":1\r\n"),
            reply::error("ERR Connection timed out"),
        ];
        assert_eq!(
            merge(&plan, &failed).as_ref(),
            b"-ERR Connection timed out\r\n"
        );
    }

    proptest! {
        #[test]
        fn split_then_merge_keeps_order_and_count(keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..6), 1..40), shards in 1u8..20) {
            // Up to 19 parts, not only the few of a small pool.
            let route = |key: &[u8]| Ok::<usize, ()>(usize::from(key[0] % shards));
            let mut args: Vec<&[u8]> = vec![b"MGET"];
            args.extend(keys.iter().map(Vec::as_slice));
            let request = Request::from_args(args);
            let expected: Vec<u8> = {
                let mut out = BytesMut::new();
                reply::put_array_header(&mut out, keys.len());
                for key in &keys { reply::put_bulk(&mut out, key); }
                out.to_vec()
            };
            match split::<_, _, _, Vec<(usize, Bytes)>>(&request, Merge::Values, route, |shard, frame| (shard, frame)).unwrap() {
                Split::Whole(_) => prop_assert!(keys.iter().all(|k| k[0] % shards == keys[0][0] % shards)),
                Split::Parts(parts, plan) => {
                    // Each backend echoes its keys as values.
                    let replies: Vec<Bytes> = parts.iter().map(|part| {
                        let request = request_of(&part.1);
                        let mut out = BytesMut::new();
                        reply::put_array_header(&mut out, request.argc() - 1);
                        for i in 1..request.argc() { reply::put_bulk(&mut out, request.arg(i).unwrap()); }
                        out.freeze()
                    }).collect();
                    prop_assert_eq!(merge(&plan, &replies).to_vec(), expected);
                }
            }
        }
    }
}
