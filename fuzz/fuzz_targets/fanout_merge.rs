//! Fan-out split and merge on arbitrary keys and arbitrary shard replies, for both protocols.
//!
//! With replies that answer the parts' keys (some found, some not), the merged reply is the
//! one a single backend would give: every key in the client's order. With any other replies
//! (each a complete reply, as the backend connection hands over), the merge gives either a
//! reply of the right shape and count or a clean error reply, never a panic.
#![no_main]

use bytes::{Bytes, BytesMut};
use keyway::protocol::memcache::{self, ReplyKind};
use keyway::protocol::resp::codec::Limits;
use keyway::protocol::resp::command::Merge;
use keyway::protocol::resp::{fanout, reply, ReplyScanner, Request, RequestDecoder};
use libfuzzer_sys::fuzz_target;

/// At most this many keys per request, so that one input stays quick.
const MAX_KEYS: usize = 64;

fuzz_target!(|input: (Vec<Vec<u8>>, u8, Vec<Vec<u8>>)| {
    let (mut keys, shards, replies) = input;
    keys.truncate(MAX_KEYS);
    if keys.is_empty() {
        return;
    }
    let shards = usize::from(shards % 8) + 1;
    resp(&keys, shards, &replies);
    memcached(&keys, shards, &replies);
});

/// A key's shard: any function of the key's bytes will do, as long as it is one.
fn shard_of(key: &[u8], shards: usize) -> usize {
    key.iter().fold(7usize, |h, &b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    }) % shards
}

/// Whether a backend holds `key`: decided by the key, so that a repeated key answers alike.
fn is_held(key: &[u8]) -> bool {
    key.iter().fold(0u8, |h, &b| h ^ b) & 1 == 0
}

/// The first complete RESP reply in `bytes`, or an error reply when there is none: what a
/// backend connection hands the session.
fn resp_reply(bytes: &[u8]) -> Bytes {
    match ReplyScanner::default().scan(bytes) {
        Ok(Some(len)) => Bytes::copy_from_slice(&bytes[..len]),
        _ => reply::error("ERR Connection reset by backend"),
    }
}

/// A part's frame decoded back into its request, as its backend reads it: it must be one
/// whole frame.
fn sent(_shard: usize, frame: Bytes) -> Request {
    let mut buf = BytesMut::from(&frame[..]);
    match RequestDecoder::new(Limits::default()).decode(&mut buf) {
        Ok(Some(request)) if buf.is_empty() => request,
        other => panic!("a part's frame is not one request: {other:?}"),
    }
}

fn resp(keys: &[Vec<u8>], shards: usize, replies: &[Vec<u8>]) {
    let route = |key: &[u8]| Ok::<_, ()>(shard_of(key, shards));
    // MGET: echo each key's value (nil when not held), then arbitrary replies.
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(keys.iter().map(Vec::as_slice));
    let request = Request::from_arg_slices(&args);
    let Ok(split) = fanout::split::<_, _, _, Vec<Request>>(&request, Merge::Values, route, sent)
    else {
        unreachable!("the route never fails")
    };
    if let fanout::Split::Parts(parts, plan) = split {
        let total: usize = parts.iter().map(|part| part.argc() - 1).sum();
        assert_eq!(total, keys.len(), "every key goes to exactly one part");
        let answers: Vec<Bytes> = parts
            .iter()
            .map(|part| values(part.argc() - 1, |i| part.arg(i + 1)))
            .collect();
        let expected = values(keys.len(), |i| keys.get(i).map(Vec::as_slice));
        assert_eq!(
            fanout::merge(&plan, &answers),
            expected,
            "MGET merged out of order"
        );
        let arbitrary: Vec<Bytes> = (0..parts.len())
            .map(|i| resp_reply(replies.get(i).map_or(&b""[..], Vec::as_slice)))
            .collect();
        let merged = fanout::merge(&plan, &arbitrary);
        assert_complete_resp(&merged);
        if merged.first() != Some(&b'-') {
            assert_eq!(
                reply::array_start(&merged).map(|(count, _)| count),
                Some(keys.len()),
                "MGET merged to the wrong count"
            );
        }
    }
    // DEL (sums) and MSET (all +OK) on arbitrary replies: a complete reply either way.
    for (merge, step) in [(Merge::Sum, 1), (Merge::Ok, 2)] {
        let mut args: Vec<&[u8]> = vec![b"CMD"];
        for key in keys {
            args.push(key);
            if step == 2 {
                args.push(b"value");
            }
        }
        let request = Request::from_arg_slices(&args);
        let split = fanout::split::<_, _, _, Vec<Request>>(&request, merge, route, sent);
        if let Ok(fanout::Split::Parts(parts, plan)) = split {
            let arbitrary: Vec<Bytes> = (0..parts.len())
                .map(|i| resp_reply(replies.get(i).map_or(&b""[..], Vec::as_slice)))
                .collect();
            assert_complete_resp(&fanout::merge(&plan, &arbitrary));
        }
    }
}

/// An array of `count` bulk values (nil for keys not held), value `i` from `key(i)`.
fn values<'k>(count: usize, key: impl Fn(usize) -> Option<&'k [u8]>) -> Bytes {
    let mut out = BytesMut::new();
    reply::put_array_header(&mut out, count);
    for i in 0..count {
        match key(i) {
            Some(key) if is_held(key) => reply::put_bulk(&mut out, key),
            _ => out.extend_from_slice(b"$-1\r\n"),
        }
    }
    out.freeze()
}

fn assert_complete_resp(merged: &[u8]) {
    assert_eq!(
        ReplyScanner::default().scan(merged).ok().flatten(),
        Some(merged.len()),
        "the merged reply is not one complete RESP reply: {merged:?}"
    );
}

/// The same keys as memcached keys: printable, 1 to 250 bytes.
fn memcached_key(key: &[u8]) -> Vec<u8> {
    let mut key: Vec<u8> = key.iter().map(|&b| b'!' + b % 94).take(250).collect();
    if key.is_empty() {
        key.push(b'k');
    }
    key
}

fn memcached(keys: &[Vec<u8>], shards: usize, replies: &[Vec<u8>]) {
    let keys: Vec<Vec<u8>> = keys.iter().map(|key| memcached_key(key)).collect();
    let mut line = b"get".to_vec();
    for key in &keys {
        line.push(b' ');
        line.extend_from_slice(key);
    }
    line.extend_from_slice(b"\r\n");
    let mut buf = BytesMut::from(&line[..]);
    let Ok(Some(request)) = memcache::RequestDecoder::default().decode(&mut buf) else {
        return; // a line over the decoder's limit
    };
    let route = |key: &[u8]| Ok::<_, ()>(shard_of(key, shards));
    let Ok(memcache::fanout::Split::Parts(parts, plan)) = memcache::fanout::split(&request, route)
    else {
        return;
    };
    let total: usize = parts.iter().map(|part| part.request.key_count()).sum();
    assert_eq!(total, keys.len(), "every key goes to exactly one part");
    let answer = |keys: &mut dyn Iterator<Item = &[u8]>| {
        let mut out = Vec::new();
        for key in keys.filter(|key| is_held(key)) {
            out.extend_from_slice(b"VALUE ");
            out.extend_from_slice(key);
            out.extend_from_slice(format!(" 0 {}\r\n", key.len()).as_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"END\r\n");
        Bytes::from(out)
    };
    let answers: Vec<Bytes> = parts
        .iter()
        .map(|part| answer(&mut part.request.keys()))
        .collect();
    let expected = answer(&mut keys.iter().map(Vec::as_slice));
    assert_eq!(
        memcache::fanout::merge(&plan, &answers),
        expected,
        "get merged out of order"
    );
    let arbitrary: Vec<Bytes> = (0..parts.len())
        .map(|i| {
            let bytes = replies.get(i).map_or(&b""[..], Vec::as_slice);
            match memcache::ReplyScanner::default().scan(bytes, ReplyKind::Values) {
                Ok(Some(len)) => Bytes::copy_from_slice(&bytes[..len]),
                _ => memcache::reply::server_error("Connection reset by backend"),
            }
        })
        .collect();
    let merged = memcache::fanout::merge(&plan, &arbitrary);
    assert_eq!(
        memcache::ReplyScanner::default()
            .scan(&merged, ReplyKind::Values)
            .ok()
            .flatten(),
        Some(merged.len()),
        "the merged reply is not one complete retrieval reply: {merged:?}"
    );
    // Its values answer the client's keys in the client's order.
    let mut asked = keys.iter();
    for key in value_keys(&merged) {
        assert!(
            asked.any(|k| k.as_slice() == key),
            "merged value for {key:?} is out of the client's key order"
        );
    }
}

/// The keys of the `VALUE` blocks of a complete retrieval reply.
fn value_keys(reply: &[u8]) -> Vec<&[u8]> {
    let mut keys = Vec::new();
    let mut at = 0;
    while let Some(nl) = reply[at..].windows(2).position(|w| w == b"\r\n") {
        let line = &reply[at..at + nl];
        at += nl + 2;
        let mut tokens = line.split(|&c| c == b' ');
        if tokens.next() != Some(b"VALUE") {
            break;
        }
        let (Some(key), _, Some(len)) = (tokens.next(), tokens.next(), tokens.next()) else {
            break;
        };
        keys.push(key);
        let len: usize = std::str::from_utf8(len)
            .ok()
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        at += len + 2;
        if at > reply.len() {
            break;
        }
    }
    keys
}
