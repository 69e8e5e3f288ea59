//! Multi-key commands (`MGET`, `MSET`, `DEL`, ...): split into one request per shard, then
//! merge the shards' replies back in the client's key order; and the merges of keyspace-wide
//! commands sent to every shard (`KEYS`, `DBSIZE`, `SCRIPT LOAD`, `INFO keyspace`...).

use bytes::{Bytes, BytesMut};

use super::codec::Request;
use super::command::Merge;
use super::keyspace::Cursor as ScanCursor;
use super::reply::{self, ReplyScanner};
use crate::protocol::fanout::{self, Layout};

/// A multi-key request split by where its keys go (`P`: a shard, or a cluster slot).
pub type Split<P = usize> = fanout::Split<Request, Merge, P>;

/// The sub-request for one place: the command name followed by its keys (and values).
pub type Part<P = usize> = fanout::Part<Request, P>;

/// How the parts' replies merge into the client's reply (the key order kept for
/// `Merge::Values` only).
pub type Plan = fanout::Plan<Merge>;

/// Splits `request` (whose keys start at argument 1; with `Merge::Ok` each key is followed by
/// its value) by the shard `route` picks for each key.
///
/// # Errors
/// The first error `route` returns.
pub fn split<P: Copy + PartialEq, E>(
    request: &Request,
    merge: Merge,
    route: impl FnMut(&[u8]) -> Result<P, E>,
) -> Result<Split<P>, E> {
    let step = if merge == Merge::Ok { 2 } else { 1 };
    let keys = (1..).step_by(step).map_while(|i| request.arg(i));
    let layout = Layout::route(keys, request.argc() / step, route)?;
    if let Some(shard) = layout.single_shard() {
        return Ok(Split::Whole(shard));
    }
    // Each part's arguments gathered in one list, reused from part to part.
    let most = layout
        .shards()
        .iter()
        .map(|&(_, count)| count as usize)
        .max()
        .unwrap_or(0);
    let mut args: Vec<&[u8]> = Vec::with_capacity(1 + most * step);
    Ok(
        layout.split(merge, merge == Merge::Values, |part, _, order| {
            args.clear();
            args.push(request.name());
            for key in fanout::keys_of(order, part) {
                let first = 1 + key * step;
                args.extend((first..first + step).filter_map(|j| request.arg(j)));
            }
            Request::from_arg_slices(&args)
        }),
    )
}

/// Merges the parts' replies (in part order). The first error reply, or reply of an unexpected
/// shape, becomes the whole reply.
pub fn merge(plan: &Plan, replies: &[Bytes]) -> Bytes {
    match *plan.merge() {
        Merge::Values => merge_values(plan.order(), replies),
        Merge::Sum => {
            let mut sum: i64 = 0;
            for part in replies {
                match reply::integer_value(part) {
                    Some(n) => sum = sum.saturating_add(n),
                    None => return part.clone(),
                }
            }
            reply::integer(sum)
        }
        Merge::Ok => replies
            .iter()
            .find(|part| part.as_ref() != b"+OK\r\n")
            .cloned()
            .unwrap_or_else(|| reply::simple("OK")),
        Merge::Concat { max_bytes } => merge_concat(replies, max_bytes),
        Merge::AllEqual => merge_all_equal(replies),
        Merge::And => merge_and(replies),
        Merge::Min => {
            let mut least: Option<i64> = None;
            for part in replies {
                match reply::integer_value(part) {
                    Some(n) => least = Some(least.map_or(n, |m| m.min(n))),
                    None => return part.clone(),
                }
            }
            least.map_or_else(|| reply::error("ERR no shard answered"), reply::integer)
        }
        Merge::Random => merge_random(replies),
        Merge::InfoKeyspace { db } => merge_info_keyspace(replies, db),
        Merge::Scan { shard, shards } => match replies {
            [part] => merge_scan(part, shard, shards),
            _ => reply::error("ERR SCAN asks one shard"),
        },
    }
}

/// Whether `part` is an error reply (RESP2 `-`, RESP3 blob error `!`).
fn is_error(part: &[u8]) -> bool {
    matches!(part.first(), Some(b'-' | b'!'))
}

/// The first error among the replies.
fn first_error(replies: &[Bytes]) -> Option<&Bytes> {
    replies.iter().find(|part| is_error(part))
}

/// `KEYS`: the arrays' elements, shard after shard, in one array no larger than `max_bytes`.
fn merge_concat(replies: &[Bytes], max_bytes: usize) -> Bytes {
    let mut count = 0usize;
    let mut bodies = Vec::with_capacity(replies.len());
    for part in replies {
        match reply::array_start(part).and_then(|(n, start)| Some((n, part.get(start..)?))) {
            Some((n, body)) => {
                count += n;
                bodies.push(body);
            }
            None => return part.clone(),
        }
    }
    let size: usize = bodies.iter().map(|body| body.len()).sum();
    if size > max_bytes {
        return reply::error(&format!(
            "ERR reply too large: the shards' replies add up to {size} bytes, past max_reply_bytes ({max_bytes})"
        ));
    }
    let mut out = BytesMut::with_capacity(size + 16);
    reply::put_array_header(&mut out, count);
    for body in bodies {
        out.extend_from_slice(body);
    }
    out.freeze()
}

/// `SCRIPT LOAD`: the one reply every shard gave.
fn merge_all_equal(replies: &[Bytes]) -> Bytes {
    if let Some(error) = first_error(replies) {
        return error.clone();
    }
    match replies.split_first() {
        Some((first, rest)) if rest.iter().all(|part| part == first) => first.clone(),
        Some(_) => reply::error("ERR the shards' replies differ"),
        None => reply::error("ERR no shard answered"),
    }
}

/// `SCRIPT EXISTS`: per element, the least of the shards' integers (1 only if all say 1).
fn merge_and(replies: &[Bytes]) -> Bytes {
    let mut all: Option<Vec<i64>> = None;
    for part in replies {
        let Some(values) = integers(part) else {
            return part.clone();
        };
        all = Some(match all {
            None => values,
            Some(so_far) if so_far.len() == values.len() => {
                so_far.iter().zip(&values).map(|(a, b)| *a.min(b)).collect()
            }
            Some(_) => return reply::error("ERR the shards' replies differ in length"),
        });
    }
    let values = all.unwrap_or_default();
    let mut out = BytesMut::with_capacity(4 + values.len() * 4);
    reply::put_array_header(&mut out, values.len());
    for value in values {
        out.extend_from_slice(&reply::integer(value));
    }
    out.freeze()
}

/// The elements of an array of integers.
fn integers(part: &[u8]) -> Option<Vec<i64>> {
    let (count, mut at) = reply::array_start(part)?;
    let mut values = Vec::with_capacity(count.min(part.len()));
    for _ in 0..count {
        let rest = part.get(at..)?;
        let len = ReplyScanner::default().scan(rest).ok()??;
        values.push(reply::integer_value(rest.get(..len)?)?);
        at += len;
    }
    Some(values)
}

/// `RANDOMKEY`: a key from a shard picked at random among those that have one.
fn merge_random(replies: &[Bytes]) -> Bytes {
    if let Some(error) = first_error(replies) {
        return error.clone();
    }
    let keys: Vec<&Bytes> = replies
        .iter()
        .filter(|part| !matches!(part.as_ref(), b"$-1\r\n" | b"_\r\n"))
        .collect();
    if keys.is_empty() {
        return replies.first().cloned().unwrap_or_else(reply::nil);
    }
    let pick = rand::Rng::gen_range(&mut rand::thread_rng(), 0..keys.len());
    keys.get(pick).map_or_else(reply::nil, |key| (*key).clone())
}

/// The payload of a bulk string (`$`) or RESP3 verbatim string (`=`, its `txt:` dropped).
fn string_payload(part: &[u8]) -> Option<&[u8]> {
    let kind = *part.first()?;
    if kind != b'$' && kind != b'=' {
        return None;
    }
    let header = memchr::memmem::find(part, b"\r\n")?;
    let len = usize::try_from(super::codec::parse_i64(part.get(1..header)?)?).ok()?;
    let payload = part.get(header + 2..header + 2 + len)?;
    if kind == b'=' {
        return payload.get(4..);
    }
    Some(payload)
}

/// `INFO keyspace`: the `db<db>:` lines summed into `db0` (the proxy's one database): every
/// count added, `avg_ttl` averaged over the keys with an expiry.
fn merge_info_keyspace(replies: &[Bytes], db: u32) -> Bytes {
    let prefix = format!("db{db}:");
    let mut fields: Vec<(String, u64)> = Vec::new();
    // Sum of avg_ttl × expires over the shards that report one, and of their expires.
    let (mut ttl_weighted, mut ttl_weight) = (0u128, 0u128);
    for part in replies {
        let Some(text) = string_payload(part) else {
            return part.clone();
        };
        let text = String::from_utf8_lossy(text);
        let Some(line) = text
            .lines()
            .find_map(|line| line.trim_end().strip_prefix(&prefix))
        else {
            continue;
        };
        let values: Vec<(&str, u64)> = line
            .split(',')
            .filter_map(|field| {
                let (name, value) = field.split_once('=')?;
                Some((name, value.parse().ok()?))
            })
            .collect();
        let expires = values
            .iter()
            .find(|(name, _)| *name == "expires")
            .map_or(0, |&(_, n)| n);
        for (name, value) in values {
            if name == "avg_ttl" {
                if value > 0 {
                    ttl_weighted += u128::from(value) * u128::from(expires);
                    ttl_weight += u128::from(expires);
                }
                if !fields.iter().any(|(known, _)| known == name) {
                    fields.push((name.to_owned(), 0));
                }
                continue;
            }
            match fields.iter_mut().find(|(known, _)| known == name) {
                Some((_, sum)) => *sum = sum.saturating_add(value),
                None => fields.push((name.to_owned(), value)),
            }
        }
    }
    let average = ttl_weighted.checked_div(ttl_weight).unwrap_or(0);
    let mut text = String::from("# Keyspace\r\n");
    let keys = fields
        .iter()
        .find(|(name, _)| name == "keys")
        .map_or(0, |&(_, n)| n);
    if keys > 0 {
        let line: Vec<String> = fields
            .iter()
            .map(|(name, value)| match name.as_str() {
                "avg_ttl" => format!("avg_ttl={average}"),
                _ => format!("{name}={value}"),
            })
            .collect();
        text.push_str("db0:");
        text.push_str(&line.join(","));
        text.push_str("\r\n");
    }
    reply::bulk(text.as_bytes())
}

/// `SCAN`: the shard's reply with the client's next cursor in place of the shard's own.
fn merge_scan(part: &Bytes, shard: u32, shards: u32) -> Bytes {
    let rewritten = (|| {
        let (2, at) = reply::array_start(part)? else {
            return None;
        };
        let rest = part.get(at..)?;
        let len = ReplyScanner::default().scan(rest).ok()??;
        let cursor = string_payload(rest.get(..len)?)?;
        let cursor = std::str::from_utf8(cursor).ok()?.parse::<u64>().ok()?;
        let next = ScanCursor::next(shard as usize, cursor, shards as usize);
        let keys = rest.get(len..)?;
        let mut out = BytesMut::with_capacity(keys.len() + 32);
        reply::put_array_header(&mut out, 2);
        reply::put_bulk(&mut out, next.as_bytes());
        out.extend_from_slice(keys);
        Some(out.freeze())
    })();
    match rewritten {
        Some(bytes) => bytes,
        None if is_error(part) => part.clone(),
        None => reply::error("ERR unexpected SCAN reply from the backend"),
    }
}

fn merge_values(order: &[(u32, u32)], replies: &[Bytes]) -> Bytes {
    // Per part: how many elements were taken and where the next one starts. A part's elements
    // are wanted in their own order, so each reply is scanned once, front to back.
    let mut cursors = Vec::with_capacity(replies.len());
    for part in replies {
        match reply::array_start(part) {
            Some((count, start)) => cursors.push(Cursor {
                taken: 0,
                count,
                at: start,
            }),
            None => return part.clone(),
        }
    }
    let size: usize = replies.iter().map(Bytes::len).sum();
    let mut out = BytesMut::with_capacity(size + 16);
    reply::put_array_header(&mut out, order.len());
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
    out.freeze()
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
        let len = ReplyScanner::default().scan(rest).ok()??;
        let element = rest.get(..len)?;
        self.taken += 1;
        self.at += len;
        Some(element)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route_by_first_byte(key: &[u8]) -> Result<usize, ()> {
        Ok(key.first().map_or(0, |b| (b % 3) as usize))
    }

    fn args_of(request: &Request) -> Vec<&[u8]> {
        (0..request.argc())
            .map(|i| request.arg(i).unwrap())
            .collect()
    }

    #[test]
    fn one_shard_forwards_whole() {
        let request = Request::from_args([&b"MGET"[..], b"a", b"d"]);
        match split(&request, Merge::Values, route_by_first_byte).unwrap() {
            Split::Whole(shard) => assert_eq!(shard, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mset_splits_pairs() {
        let request = Request::from_args([&b"MSET"[..], b"a", b"1", b"b", b"2", b"d", b"3"]);
        let Split::Parts(parts, _) = split(&request, Merge::Ok, route_by_first_byte).unwrap()
        else {
            panic!("expected parts");
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].shard, 1);
        assert_eq!(
            args_of(&parts[0].request),
            vec![&b"MSET"[..], b"a", b"1", b"d", b"3"]
        );
        assert_eq!(args_of(&parts[1].request), vec![&b"MSET"[..], b"b", b"2"]);
    }

    #[test]
    fn mget_merges_in_key_order() {
        let request = Request::from_args([&b"MGET"[..], b"a", b"b", b"d", b"b"]);
        let Split::Parts(parts, plan) =
            split(&request, Merge::Values, route_by_first_byte).unwrap()
        else {
            panic!("expected parts");
        };
        assert_eq!(args_of(&parts[1].request), vec![&b"MGET"[..], b"b", b"b"]);
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
        let Split::Parts(_, plan) = split(&request, Merge::Sum, route_by_first_byte).unwrap()
        else {
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

    fn every(merge: Merge, replies: &[&'static [u8]]) -> Bytes {
        let replies: Vec<Bytes> = replies.iter().map(|r| Bytes::from_static(r)).collect();
        merge_parts(merge, &replies)
    }

    fn merge_parts(merge: Merge, replies: &[Bytes]) -> Bytes {
        super::merge(&Plan::whole(merge, replies.len()), replies)
    }

    #[test]
    fn keys_concatenate_within_the_reply_limit() {
        let keys = Merge::Concat { max_bytes: 100 };
        assert_eq!(
            every(
                keys,
                &[
                    b"*1\r\n$1\r\na\r\n",
                    b"*0\r\n",
                    b"*2\r\n$1\r\nb\r\n$1\r\nc\r\n"
                ]
            )
            .as_ref(),
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
        );
        assert_eq!(
            every(keys, &[b"*0\r\n", b"-ERR down\r\n"]).as_ref(),
            b"-ERR down\r\n"
        );
        let small = Merge::Concat { max_bytes: 10 };
        let too_big = every(small, &[b"*1\r\n$3\r\nabc\r\n", b"*1\r\n$3\r\ndef\r\n"]);
        assert!(too_big.starts_with(b"-ERR reply too large"), "{too_big:?}");
    }

    #[test]
    fn script_load_needs_one_sha_and_exists_needs_every_shard() {
        let sha: &[u8] = b"$3\r\nabc\r\n";
        assert_eq!(every(Merge::AllEqual, &[sha, sha, sha]).as_ref(), sha);
        assert!(every(Merge::AllEqual, &[sha, b"$3\r\nabd\r\n"]).starts_with(b"-ERR"));
        assert_eq!(
            every(Merge::AllEqual, &[sha, b"-NOSCRIPT x\r\n"]).as_ref(),
            b"-NOSCRIPT x\r\n"
        );
        assert_eq!(
            every(
                Merge::And,
                &[b"*3\r\n:1\r\n:1\r\n:0\r\n", b"*3\r\n:1\r\n:0\r\n:0\r\n"]
            )
            .as_ref(),
            b"*3\r\n:1\r\n:0\r\n:0\r\n"
        );
        assert!(every(Merge::And, &[b"*1\r\n:1\r\n", b"*2\r\n:1\r\n:1\r\n"]).starts_with(b"-ERR"));
    }

    #[test]
    fn lastsave_is_the_oldest_and_randomkey_skips_empty_shards() {
        assert_eq!(
            every(Merge::Min, &[b":30\r\n", b":10\r\n", b":20\r\n"]).as_ref(),
            b":10\r\n"
        );
        for _ in 0..20 {
            let key = every(
                Merge::Random,
                &[b"$-1\r\n", b"$1\r\nk\r\n", b"$-1\r\n", b"$1\r\nj\r\n"],
            );
            assert!(
                key.as_ref() == b"$1\r\nk\r\n" || key.as_ref() == b"$1\r\nj\r\n",
                "{key:?}"
            );
        }
        assert_eq!(
            every(Merge::Random, &[b"$-1\r\n", b"$-1\r\n"]).as_ref(),
            b"$-1\r\n"
        );
        assert_eq!(
            every(Merge::Random, &[b"_\r\n", b"_\r\n"]).as_ref(),
            b"_\r\n"
        );
    }

    #[test]
    fn info_keyspace_sums_the_pools_database_into_db0() {
        let shard = |text: &str| {
            let mut out = BytesMut::new();
            reply::put_bulk(&mut out, text.as_bytes());
            out.freeze()
        };
        let replies = [
            shard("# Keyspace\r\ndb0:keys=9,expires=9,avg_ttl=9\r\ndb3:keys=10,expires=2,avg_ttl=1000\r\n"),
            shard("# Keyspace\r\ndb3:keys=5,expires=6,avg_ttl=3000\r\n"),
            shard("# Keyspace\r\n"),
            Bytes::from_static(b"=48\r\ntxt:# Keyspace\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n\r\n"),
        ];
        assert_eq!(
            merge_parts(Merge::InfoKeyspace { db: 3 }, &replies).as_ref(),
            b"$48\r\n# Keyspace\r\ndb0:keys=16,expires=8,avg_ttl=2500\r\n\r\n"
        );
        let empty = [shard("# Keyspace\r\n"), shard("# Keyspace\r\n")];
        assert_eq!(
            merge_parts(Merge::InfoKeyspace { db: 0 }, &empty).as_ref(),
            b"$12\r\n# Keyspace\r\n\r\n"
        );
    }

    #[test]
    fn scan_replies_carry_the_clients_next_cursor() {
        let scan = |shard, reply: &'static [u8]| every(Merge::Scan { shard, shards: 4 }, &[reply]);
        assert_eq!(
            scan(2, b"*2\r\n$2\r\n17\r\n*1\r\n$1\r\nk\r\n").as_ref(),
            b"*2\r\n$2\r\n70\r\n*1\r\n$1\r\nk\r\n"
        );
        assert_eq!(
            scan(1, b"*2\r\n$1\r\n0\r\n*0\r\n").as_ref(),
            b"*2\r\n$1\r\n2\r\n*0\r\n"
        );
        assert_eq!(
            scan(3, b"*2\r\n$1\r\n0\r\n*0\r\n").as_ref(),
            b"*2\r\n$1\r\n0\r\n*0\r\n"
        );
        assert_eq!(
            scan(0, b"-ERR syntax error\r\n").as_ref(),
            b"-ERR syntax error\r\n"
        );
        assert!(scan(0, b"*2\r\n$1\r\nx\r\n*0\r\n").starts_with(b"-ERR unexpected SCAN reply"));
    }

    proptest! {
        #[test]
        fn split_then_merge_keeps_order_and_count(keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..6), 1..40)) {
            let mut args: Vec<&[u8]> = vec![b"MGET"];
            args.extend(keys.iter().map(Vec::as_slice));
            let request = Request::from_args(args);
            let expected: Vec<u8> = {
                let mut out = BytesMut::new();
                reply::put_array_header(&mut out, keys.len());
                for key in &keys { reply::put_bulk(&mut out, key); }
                out.to_vec()
            };
            match split(&request, Merge::Values, route_by_first_byte).unwrap() {
                Split::Whole(_) => prop_assert!(keys.iter().all(|k| k[0] % 3 == keys[0][0] % 3)),
                Split::Parts(parts, plan) => {
                    // Each backend echoes its keys as values.
                    let replies: Vec<Bytes> = parts.iter().map(|part| {
                        let mut out = BytesMut::new();
                        reply::put_array_header(&mut out, part.request.argc() - 1);
                        for i in 1..part.request.argc() { reply::put_bulk(&mut out, part.request.arg(i).unwrap()); }
                        out.freeze()
                    }).collect();
                    prop_assert_eq!(merge(&plan, &replies).to_vec(), expected);
                }
            }
        }
    }
}
