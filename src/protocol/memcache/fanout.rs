//! Multi-key retrievals (`get`, `gets`, `gat`, `gats`): split into one request per shard,
//! then merge the shards' `VALUE` blocks back in the client's key order.

use bytes::{Bytes, BytesMut};

use super::codec::Request;
use super::reply;
use crate::protocol::fanout::{self, Layout};

/// A request split by shard: one retrieval per shard (`get k1 k2\r\n`, or
/// `gat <exptime> k1 k2\r\n`, ... with that shard's keys), merged with the client's request
/// at hand for its keys in order.
pub type Split<P = usize> = fanout::Split<Vec<Part<P>>, Request, P>;

/// The sub-request for one place (a shard).
pub type Part<P = usize> = fanout::Part<Request, P>;

/// How the parts' replies merge into the client's reply.
pub type Plan = fanout::Plan<Request>;

/// Splits `request` by the shard `route` picks for each of its keys. A request without keys
/// is routed by the empty key.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use keyway::protocol::memcache::fanout::{merge, split, Split};
/// use keyway::protocol::memcache::RequestDecoder;
///
/// let mut buf = BytesMut::from(&b"get a b c\r\n"[..]);
/// let request = RequestDecoder::default().decode(&mut buf).unwrap().unwrap();
/// let route = |key: &[u8]| Ok::<_, ()>(usize::from(key == b"b"));
/// let Ok(Split::Parts(parts, plan)) = split(&request, route) else { unreachable!() };
/// assert_eq!(parts[0].request.frame().as_ref(), b"get a c\r\n");
/// assert_eq!(parts[1].request.frame().as_ref(), b"get b\r\n");
/// let replies = [
///     Bytes::from_static(b"VALUE c 0 1\r\nC\r\nEND\r\n"),
///     Bytes::from_static(b"VALUE b 0 1\r\nB\r\nEND\r\n"),
/// ];
/// let merged = merge(&plan, &replies);
/// assert_eq!(merged.as_ref(), b"VALUE b 0 1\r\nB\r\nVALUE c 0 1\r\nC\r\nEND\r\n");
/// ```
///
/// # Errors
/// The first error `route` returns.
pub fn split<P: Copy + PartialEq, E>(
    request: &Request,
    mut route: impl FnMut(&[u8]) -> Result<P, E>,
) -> Result<Split<P>, E> {
    // Most requests carry one key: route it without the bookkeeping of a split.
    if request.key_count() <= 1 {
        return Ok(Split::Whole(route(
            request.keys().next().unwrap_or_default(),
        )?));
    }
    let layout = Layout::route(request.keys(), request.key_count(), route)?;
    if let Some(shard) = layout.single_shard() {
        return Ok(Split::Whole(shard));
    }
    // The sub-requests carry the keys as the client sent them; listed once, as walking the
    // request's key spans again for every part costs more than the one allocation.
    let raw: Vec<&[u8]> = request.raw_keys().collect();
    Ok(layout.split(request.clone(), true, |part, shard, order| {
        let keys = fanout::keys_of(order, part).filter_map(|key| raw.get(key).copied());
        Part {
            shard,
            request: Request::retrieval(request.command(), request.prefix(), keys),
        }
    }))
}

/// Merges the parts' complete replies (in part order) into one: each key's `VALUE` blocks in
/// the client's key order (a key asked twice is answered twice, as memcached does; missing
/// keys are left out), then one `END`. A part's error reply becomes the whole reply.
pub fn merge(plan: &Plan, replies: &[Bytes]) -> Bytes {
    if replies.len() != plan.parts() {
        return reply::server_error("backend replies do not match the request");
    }
    let mut blocks = Vec::with_capacity(replies.len());
    for part in replies {
        match reply::value_blocks(part) {
            Some(part_blocks) => blocks.push(part_blocks),
            None => return error_of(part),
        }
    }
    let size: usize = replies.iter().map(Bytes::len).sum();
    let mut out = BytesMut::with_capacity(size);
    // Each part's blocks answer its keys in order, skipping misses: pair them greedily.
    let mut next = vec![0usize; replies.len()];
    for (key, &(part, _)) in plan.merge().raw_keys().zip(plan.order()) {
        let part = part as usize;
        let (Some(reply), Some(part_blocks), Some(at)) =
            (replies.get(part), blocks.get(part), next.get_mut(part))
        else {
            continue;
        };
        let Some(block) = part_blocks.get(*at) else {
            continue;
        };
        if reply.get(block.key.clone()) == Some(key) {
            out.extend_from_slice(reply.get(block.block.clone()).unwrap_or_default());
            *at += 1;
        }
    }
    if blocks
        .iter()
        .zip(&next)
        .any(|(part, &used)| used != part.len())
    {
        return reply::server_error("backend reply has values for keys not asked");
    }
    out.extend_from_slice(b"END\r\n");
    out.freeze()
}

/// The error line ending a part's reply (the scanner only ends a retrieval reply early with
/// one), or a generic error if the reply is something else.
fn error_of(part: &Bytes) -> Bytes {
    let last = reply::last_line(part);
    let is_error = [&b"ERROR"[..], b"CLIENT_ERROR ", b"SERVER_ERROR "]
        .iter()
        .any(|prefix| last.starts_with(prefix));
    if is_error {
        part.slice_ref(last)
    } else {
        reply::server_error("backend reply is not a retrieval reply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::memcache::RequestDecoder;
    use proptest::prelude::*;

    fn route_by_first_byte(key: &[u8]) -> Result<usize, ()> {
        Ok(key.first().map_or(0, |b| (b % 3) as usize))
    }

    fn request(input: &[u8]) -> Request {
        RequestDecoder::default()
            .decode(&mut BytesMut::from(input))
            .unwrap()
            .unwrap()
    }

    fn value(key: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "VALUE {} 0 {}\r\n",
            String::from_utf8_lossy(key),
            key.len() + 1
        )
        .into_bytes();
        out.extend_from_slice(key);
        out.extend_from_slice(b"!\r\n");
        out
    }

    #[test]
    fn one_shard_forwards_whole() {
        for input in [
            &b"get a d\r\n"[..],
            b"set a 0 0 1\r\nx\r\n",
            b"mg YQ== b v\r\n",
        ] {
            match split(&request(input), route_by_first_byte).unwrap() {
                Split::Whole(shard) => assert_eq!(shard, 1, "{input:?}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            split(&request(b"version\r\n"), route_by_first_byte),
            Ok(Split::Whole(0))
        ));
    }

    #[test]
    fn gat_parts_keep_the_exptime_and_merge_in_key_order() {
        let Split::Parts(parts, plan) =
            split(&request(b"gat 60 a b d b c\r\n"), route_by_first_byte).unwrap()
        else {
            panic!("expected parts");
        };
        let frames: Vec<(usize, &[u8])> = parts
            .iter()
            .map(|part| (part.shard, part.request.frame().as_ref()))
            .collect();
        assert_eq!(
            frames,
            vec![
                (1, &b"gat 60 a d\r\n"[..]),
                (2, b"gat 60 b b\r\n"),
                (0, b"gat 60 c\r\n")
            ]
        );
        let replies = [
            Bytes::from([value(b"a"), value(b"d"), b"END\r\n".to_vec()].concat()),
            Bytes::from([value(b"b"), value(b"b"), b"END\r\n".to_vec()].concat()),
            Bytes::from_static(b"END\r\n"),
        ];
        let expected = [
            value(b"a"),
            value(b"b"),
            value(b"d"),
            value(b"b"),
            b"END\r\n".to_vec(),
        ]
        .concat();
        assert_eq!(merge(&plan, &replies).as_ref(), &expected[..]);
    }

    #[test]
    fn missing_keys_are_dropped_and_errors_win() {
        let Split::Parts(_, plan) =
            split(&request(b"gets a b d\r\n"), route_by_first_byte).unwrap()
        else {
            panic!("expected parts");
        };
        let replies = [
            Bytes::from([value(b"d"), b"END\r\n".to_vec()].concat()),
            Bytes::from_static(b"END\r\n"),
        ];
        assert_eq!(
            merge(&plan, &replies).as_ref(),
            &[value(b"d"), b"END\r\n".to_vec()].concat()[..]
        );
        let failed = [
            Bytes::from_static(b"END\r\n"),
            reply::server_error("Connection timed out"),
        ];
        assert_eq!(
            merge(&plan, &failed).as_ref(),
            b"SERVER_ERROR Connection timed out\r\n"
        );
        let unasked = [
            Bytes::from([value(b"x"), b"END\r\n".to_vec()].concat()),
            Bytes::from_static(b"END\r\n"),
        ];
        assert!(merge(&plan, &unasked).starts_with(b"SERVER_ERROR"));
        assert!(merge(&plan, &failed[..1]).starts_with(b"SERVER_ERROR"));
    }

    proptest! {
        #[test]
        fn split_then_merge_keeps_order_and_count(
            keys in proptest::collection::vec("[a-f]{1,3}", 1..40),
            hits in proptest::collection::vec(any::<bool>(), 6),
        ) {
            let line = format!("get {}\r\n", keys.join(" "));
            let request = request(line.as_bytes());
            let hit = |key: &[u8]| hits[(key[0] - b'a') as usize];
            let expected: Vec<u8> = keys
                .iter()
                .filter(|key| hit(key.as_bytes()))
                .flat_map(|key| value(key.as_bytes()))
                .chain(b"END\r\n".iter().copied())
                .collect();
            match split(&request, route_by_first_byte).unwrap() {
                Split::Whole(_) => prop_assert!(keys.iter().all(|k| k.as_bytes()[0] % 3 == keys[0].as_bytes()[0] % 3)),
                Split::Parts(parts, plan) => {
                    let replies: Vec<Bytes> = parts
                        .iter()
                        .map(|part| {
                            let mut out: Vec<u8> = part.request.keys().filter(|k| hit(k)).flat_map(value).collect();
                            out.extend_from_slice(b"END\r\n");
                            Bytes::from(out)
                        })
                        .collect();
                    let total: usize = parts.iter().map(|part| part.request.key_count()).sum();
                    prop_assert_eq!(total, keys.len());
                    prop_assert_eq!(merge(&plan, &replies).to_vec(), expected);
                }
            }
        }
    }
}
