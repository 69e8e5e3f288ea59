//! Keyspace-wide commands (`SCAN KEYS DBSIZE RANDOMKEY FLUSHDB FLUSHALL SCRIPT LASTSAVE TIME`,
//! `INFO keyspace`, and `PUBSUB`'s counts of the subscriptions spread over the shards): what
//! each asks of the pool's shards — all of them with a merge, the first
//! one, or for `SCAN` the one shard its cursor names — and the `SCAN` cursor that carries the
//! shard and the backend's cursor in one decimal number.

use bytes::{Bytes, BytesMut};

use super::codec::Request;
use super::command::Command;
use super::fanout;
use super::reply::{self, ReplyScanner};
use crate::protocol::fanout as split;

/// What a pool offers the keyspace-wide commands.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    /// How many shards the request goes to: every backend; a cluster's masters (for `SCRIPT`
    /// with their replicas).
    pub shards: usize,
    /// Whether the pool lets clients flush it (`allow_flush`).
    pub allow_flush: bool,
    /// The backends' database (`redis_db`), which the proxy presents as db 0.
    pub db: u32,
    /// Largest reply Keyway accepts (`max_reply_bytes`): a merged `KEYS` reply too.
    pub max_reply_bytes: usize,
}

/// Where a keyspace-wide request goes.
#[derive(Debug)]
pub enum Action {
    /// To every shard (the request as the client sent it, or the one given), the replies
    /// gathered into one.
    Every(Gather, Option<Request>),
    /// To the first shard alone, the reply passed on (`TIME`: one clock for every client and
    /// every proxy in front of the same shards).
    First,
    /// To shard `shard` (in keyspace order), with the backend's cursor in place of the
    /// client's; the reply is gathered by [`Gather::Scan`] to carry the client's next cursor.
    Scan {
        /// The shard to scan.
        shard: usize,
        /// The request for that shard.
        request: Request,
    },
}

/// A `SCAN` cursor through the proxy: the shard being scanned and that shard's own cursor,
/// encoded as `backend * shards + shard` in decimal.
///
/// The shard sits in the low digits so that the cursor stays as small as the backend's own:
/// clients that hold cursors in 64 bits (go-redis parses a `uint64`, node-redis a `Number`)
/// keep working, because a Redis cursor never exceeds its hash table's size. The number is
/// computed in 128 bits, so that any 64-bit backend cursor round-trips even when the product
/// passes 2^64. Cursor 0 is shard 0 from its start, and 0 comes back only once the last shard
/// is done.
///
/// ```
/// use keyway::protocol::resp::keyspace::Cursor;
///
/// let start = Cursor::parse(b"0", 4).ok_or("no cursor")?;
/// assert_eq!((start.shard, start.backend), (0, 0));
/// // Shard 2 answered cursor 17: the client gets 17 * 4 + 2 = 70 and passes it back.
/// assert_eq!(Cursor::next(2, 17, 4), "70");
/// let again = Cursor::parse(b"70", 4).ok_or("no cursor")?;
/// assert_eq!((again.shard, again.backend), (2, 17));
/// // Shard 2 is done: shard 3 from its start, then 0 once shard 3 is done too.
/// assert_eq!(Cursor::next(2, 0, 4), "3");
/// assert_eq!(Cursor::next(3, 0, 4), "0");
/// // Any 64-bit backend cursor survives.
/// let top = Cursor::next(3, u64::MAX, 4);
/// let back = Cursor::parse(top.as_bytes(), 4).ok_or("no cursor")?;
/// assert_eq!((back.shard, back.backend), (3, u64::MAX));
/// assert!(Cursor::parse(b"12x", 4).is_none());
/// # Ok::<(), &str>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The shard to scan, in keyspace order.
    pub shard: usize,
    /// That shard's own cursor.
    pub backend: u64,
}

impl Cursor {
    /// The cursor a client sent, over `shards` shards; `None` when it is not a decimal number
    /// or its backend part does not fit in 64 bits (then Redis's `-ERR invalid cursor`).
    pub fn parse(text: &[u8], shards: usize) -> Option<Cursor> {
        if text.is_empty() || shards == 0 {
            return None;
        }
        let value = text.iter().try_fold(0u128, |n, &b| {
            if b.is_ascii_digit() {
                n.checked_mul(10)?.checked_add(u128::from(b - b'0'))
            } else {
                None
            }
        })?;
        let shards = u128::try_from(shards).ok()?;
        let shard = usize::try_from(value % shards).ok()?;
        let backend = u64::try_from(value / shards).ok()?;
        Some(Cursor { shard, backend })
    }

    /// The client's next cursor after shard `shard` of `shards` answered `backend`: the same
    /// shard further on, the next shard from its start, or `"0"` after the last.
    pub fn next(shard: usize, backend: u64, shards: usize) -> String {
        let (shard, shards) = (shard as u128, shards as u128);
        let value = if backend != 0 {
            u128::from(backend) * shards + shard
        } else if shard + 1 < shards {
            shard + 1
        } else {
            0
        };
        value.to_string()
    }
}

/// Whether `INFO` asks for exactly the keyspace section (`INFO keyspace`), which the shards
/// answer; every other `INFO` is answered by Keyway.
pub fn is_info_keyspace(request: &Request) -> bool {
    request.argc() == 2
        && request
            .arg(1)
            .is_some_and(|section| section.eq_ignore_ascii_case(b"keyspace"))
}

/// Where `request` (a keyspace-wide `command`, or `INFO keyspace`) goes in a pool offering
/// `context`.
///
/// # Errors
/// The reply to give instead: a pool with no shard to ask, `FLUSHDB`/`FLUSHALL` on a pool
/// without `allow_flush`, an invalid `SCAN` cursor, a `SCRIPT` subcommand that cannot be
/// broadcast.
pub fn plan(command: &Command, request: &Request, context: &Context) -> Result<Action, Bytes> {
    if context.shards == 0 {
        return Err(reply::error("CLUSTERDOWN The pool has no shard to ask"));
    }
    let arg = |i: usize| request.arg(i).unwrap_or_default();
    Ok(match command.name {
        "scan" => {
            let cursor = Cursor::parse(arg(1), context.shards)
                .ok_or_else(|| reply::error("ERR invalid cursor"))?;
            let backend = cursor.backend.to_string();
            let mut args: Vec<&[u8]> = Vec::with_capacity(request.argc());
            args.push(arg(0));
            args.push(backend.as_bytes());
            args.extend((2..request.argc()).map(arg));
            Action::Scan {
                shard: cursor.shard,
                request: Request::from_arg_slices(&args),
            }
        }
        "keys" => Action::Every(
            Gather::Concat {
                max_bytes: context.max_reply_bytes,
            },
            None,
        ),
        "dbsize" => Action::Every(Gather::Sum, None),
        "randomkey" => Action::Every(Gather::Random, None),
        "lastsave" => Action::Every(Gather::Min, None),
        "time" => Action::First,
        "flushdb" | "flushall" => {
            if !context.allow_flush {
                return Err(reply::error(&format!(
                    "ERR {} is refused on this pool: it would flush every shard; set allow_flush: true in the pool's config to allow it",
                    command.name.to_ascii_uppercase()
                )));
            }
            // The proxy presents one database: FLUSHALL empties it (the backends' `redis_db`)
            // and leaves their other databases, which other pools may use, alone.
            let mut args: Vec<&[u8]> = vec![b"FLUSHDB"];
            args.extend((1..request.argc()).map(arg));
            Action::Every(Gather::Ok, Some(Request::from_arg_slices(&args)))
        }
        "script" => {
            let sub = arg(1);
            if sub.eq_ignore_ascii_case(b"load") {
                Action::Every(Gather::AllEqual, None)
            } else if sub.eq_ignore_ascii_case(b"exists") {
                Action::Every(Gather::And, None)
            } else if sub.eq_ignore_ascii_case(b"flush") {
                Action::Every(Gather::Ok, None)
            } else {
                return Err(reply::error(&format!(
                    "ERR unsupported command 'script {}'",
                    String::from_utf8_lossy(sub.get(..32).unwrap_or(sub)).to_ascii_lowercase()
                )));
            }
        }
        "info" => Action::Every(Gather::InfoKeyspace { db: context.db }, None),
        // Each channel lives on one shard, each pattern on every shard (one cluster node).
        "pubsub" => {
            let sub = arg(1);
            let is = |name: &[u8]| sub.eq_ignore_ascii_case(name);
            if is(b"channels") || is(b"shardchannels") {
                Action::Every(
                    Gather::Concat {
                        max_bytes: context.max_reply_bytes,
                    },
                    None,
                )
            } else if is(b"numsub") || is(b"shardnumsub") {
                Action::Every(Gather::SumPairs, None)
            } else if is(b"numpat") {
                Action::Every(Gather::Max, None)
            } else {
                Action::First
            }
        }
        other => return Err(reply::error(&format!("ERR unsupported command '{other}'"))),
    })
}

/// How the shards' replies to a keyspace-wide request become the client's reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gather {
    /// `DBSIZE`: the integers summed.
    Sum,
    /// `FLUSHDB FLUSHALL SCRIPT FLUSH`: `+OK` once every shard said `+OK`.
    Ok,
    /// `KEYS`: every shard's array, concatenated, within `max_bytes` (the pool's
    /// `max_reply_bytes`, as for one backend's reply).
    Concat {
        /// Largest gathered reply.
        max_bytes: usize,
    },
    /// `SCRIPT LOAD`: every shard must give the same reply (the script's sha), which is the
    /// reply; shards that disagree are an error.
    AllEqual,
    /// `SCRIPT EXISTS`: per element, 1 only if every shard says 1.
    And,
    /// `LASTSAVE`: the smallest integer (the oldest save).
    Min,
    /// `PUBSUB NUMPAT`: the largest integer (every shard has each pattern a client
    /// subscribed through Keyway).
    Max,
    /// `PUBSUB NUMSUB` / `SHARDNUMSUB`: `[name, count, ...]` from every shard, in the same
    /// order; the counts summed per name.
    SumPairs,
    /// `RANDOMKEY`: one non-nil reply, picked at random; nil when every shard said nil.
    Random,
    /// `INFO keyspace`: the `dbN` lines of the backends' database (`redis_db`), summed into
    /// the one database the proxy presents, `db0`.
    InfoKeyspace {
        /// The backends' database.
        db: u32,
    },
    /// `SCAN`: the one shard's reply, its cursor replaced by the client's cursor for the
    /// next call (see [`Cursor`]).
    Scan {
        /// The shard that was scanned, in keyspace order.
        shard: u32,
        /// How many shards the keyspace has.
        shards: u32,
    },
}

/// How a keyspace-wide request's replies (one per shard asked, in keyspace order) gather.
pub type Plan = split::Plan<Gather>;

/// Gathers the shards' replies (in the order the shards were asked). The first error reply,
/// or reply of an unexpected shape, becomes the whole reply.
pub fn merge(plan: &Plan, replies: &[Bytes]) -> Bytes {
    match *plan.merge() {
        Gather::Sum => fanout::sum(replies),
        Gather::Ok => fanout::all_ok(replies),
        Gather::Concat { max_bytes } => merge_concat(replies, max_bytes),
        Gather::AllEqual => merge_all_equal(replies),
        Gather::And => merge_and(replies),
        Gather::Min => merge_extreme(replies, i64::min),
        Gather::Max => merge_extreme(replies, i64::max),
        Gather::SumPairs => merge_sum_pairs(replies),
        Gather::Random => merge_random(replies),
        Gather::InfoKeyspace { db } => merge_info_keyspace(replies, db),
        Gather::Scan { shard, shards } => match replies {
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

/// `LASTSAVE`, `PUBSUB NUMPAT`: the integer `pick` prefers of all the shards'.
fn merge_extreme(replies: &[Bytes], pick: fn(i64, i64) -> i64) -> Bytes {
    let mut kept: Option<i64> = None;
    for part in replies {
        match reply::integer_value(part) {
            Some(n) => kept = Some(kept.map_or(n, |m| pick(m, n))),
            None => return part.clone(),
        }
    }
    kept.map_or_else(|| reply::error("ERR no shard answered"), reply::integer)
}

/// `PUBSUB NUMSUB`: the first shard's names, each with the sum of every shard's count.
fn merge_sum_pairs(replies: &[Bytes]) -> Bytes {
    let mut names: Vec<&[u8]> = Vec::new();
    let mut counts: Vec<i64> = Vec::new();
    for (i, part) in replies.iter().enumerate() {
        let Some(elements) = elements(part) else {
            return part.clone();
        };
        if elements.len() % 2 != 0 || (i > 0 && elements.len() != names.len() * 2) {
            return reply::error("ERR the shards' replies differ in length");
        }
        for (j, pair) in elements.chunks(2).enumerate() {
            let (Some(&name), Some(count)) = (
                pair.first(),
                pair.get(1).copied().and_then(reply::integer_value),
            ) else {
                return reply::error("ERR a shard's reply is not a list of counts");
            };
            if i == 0 {
                names.push(name);
                counts.push(count);
            } else if let Some(sum) = counts.get_mut(j) {
                *sum = sum.saturating_add(count);
            }
        }
    }
    let mut out = BytesMut::with_capacity(16 + names.iter().map(|n| n.len() + 16).sum::<usize>());
    reply::put_array_header(&mut out, names.len() * 2);
    for (name, count) in names.iter().zip(counts) {
        out.extend_from_slice(name);
        out.extend_from_slice(&reply::integer(count));
    }
    out.freeze()
}

/// The elements of an array reply, each as its own bytes.
fn elements(part: &[u8]) -> Option<Vec<&[u8]>> {
    let (count, mut at) = reply::array_start(part)?;
    let mut items = Vec::with_capacity(count.min(part.len()));
    for _ in 0..count {
        let rest = part.get(at..)?;
        let len = ReplyScanner::default().scan(rest).ok()??;
        items.push(rest.get(..len)?);
        at += len;
    }
    Some(items)
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
        let next = Cursor::next(shard as usize, cursor, shards as usize);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::resp::command::lookup;

    const CONTEXT: Context = Context {
        shards: 4,
        allow_flush: false,
        db: 0,
        max_reply_bytes: 1 << 20,
    };

    fn plan_of(args: &[&str], context: &Context) -> Result<Action, Bytes> {
        let request = Request::from_args(args.iter().map(|a| a.as_bytes()));
        plan(lookup(args[0].as_bytes()).unwrap(), &request, context)
    }

    fn args_of(request: &Request) -> Vec<String> {
        (0..request.argc())
            .map(|i| String::from_utf8_lossy(request.arg(i).unwrap()).into_owned())
            .collect()
    }

    fn every(merge: Gather, replies: &[&'static [u8]]) -> Bytes {
        let replies: Vec<Bytes> = replies.iter().map(|r| Bytes::from_static(r)).collect();
        merge_parts(merge, &replies)
    }

    fn merge_parts(merge: Gather, replies: &[Bytes]) -> Bytes {
        super::merge(&Plan::whole(merge, replies.len()), replies)
    }

    #[test]
    fn pubsub_counts_sum_per_name_and_patterns_take_the_largest() {
        assert_eq!(
            every(
                Gather::SumPairs,
                &[
                    b"*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:0\r\n",
                    b"*4\r\n$1\r\na\r\n:2\r\n$1\r\nb\r\n:3\r\n"
                ]
            )
            .as_ref(),
            b"*4\r\n$1\r\na\r\n:3\r\n$1\r\nb\r\n:3\r\n"
        );
        assert!(
            every(Gather::SumPairs, &[b"*2\r\n$1\r\na\r\n:1\r\n", b"*0\r\n"]).starts_with(b"-ERR")
        );
        assert_eq!(
            every(Gather::Max, &[b":1\r\n", b":4\r\n", b":2\r\n"]).as_ref(),
            b":4\r\n"
        );
        assert_eq!(
            every(Gather::Max, &[b":1\r\n", b"-ERR x\r\n"]).as_ref(),
            b"-ERR x\r\n"
        );
    }

    #[test]
    fn keys_concatenate_within_the_reply_limit() {
        let keys = Gather::Concat { max_bytes: 100 };
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
        let small = Gather::Concat { max_bytes: 10 };
        let too_big = every(small, &[b"*1\r\n$3\r\nabc\r\n", b"*1\r\n$3\r\ndef\r\n"]);
        assert!(too_big.starts_with(b"-ERR reply too large"), "{too_big:?}");
    }

    #[test]
    fn script_load_needs_one_sha_and_exists_needs_every_shard() {
        let sha: &[u8] = b"$3\r\nabc\r\n";
        assert_eq!(every(Gather::AllEqual, &[sha, sha, sha]).as_ref(), sha);
        assert!(every(Gather::AllEqual, &[sha, b"$3\r\nabd\r\n"]).starts_with(b"-ERR"));
        assert_eq!(
            every(Gather::AllEqual, &[sha, b"-NOSCRIPT x\r\n"]).as_ref(),
            b"-NOSCRIPT x\r\n"
        );
        assert_eq!(
            every(
                Gather::And,
                &[b"*3\r\n:1\r\n:1\r\n:0\r\n", b"*3\r\n:1\r\n:0\r\n:0\r\n"]
            )
            .as_ref(),
            b"*3\r\n:1\r\n:0\r\n:0\r\n"
        );
        assert!(every(Gather::And, &[b"*1\r\n:1\r\n", b"*2\r\n:1\r\n:1\r\n"]).starts_with(b"-ERR"));
    }

    #[test]
    fn lastsave_is_the_oldest_and_randomkey_skips_empty_shards() {
        assert_eq!(
            every(Gather::Min, &[b":30\r\n", b":10\r\n", b":20\r\n"]).as_ref(),
            b":10\r\n"
        );
        for _ in 0..20 {
            let key = every(
                Gather::Random,
                &[b"$-1\r\n", b"$1\r\nk\r\n", b"$-1\r\n", b"$1\r\nj\r\n"],
            );
            assert!(
                key.as_ref() == b"$1\r\nk\r\n" || key.as_ref() == b"$1\r\nj\r\n",
                "{key:?}"
            );
        }
        assert_eq!(
            every(Gather::Random, &[b"$-1\r\n", b"$-1\r\n"]).as_ref(),
            b"$-1\r\n"
        );
        assert_eq!(
            every(Gather::Random, &[b"_\r\n", b"_\r\n"]).as_ref(),
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
            merge_parts(Gather::InfoKeyspace { db: 3 }, &replies).as_ref(),
            b"$48\r\n# Keyspace\r\ndb0:keys=16,expires=8,avg_ttl=2500\r\n\r\n"
        );
        let empty = [shard("# Keyspace\r\n"), shard("# Keyspace\r\n")];
        assert_eq!(
            merge_parts(Gather::InfoKeyspace { db: 0 }, &empty).as_ref(),
            b"$12\r\n# Keyspace\r\n\r\n"
        );
    }

    #[test]
    fn scan_replies_carry_the_clients_next_cursor() {
        let scan = |shard, reply: &'static [u8]| every(Gather::Scan { shard, shards: 4 }, &[reply]);
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

    #[test]
    fn scan_goes_to_the_cursors_shard_with_the_backends_cursor_and_the_options() {
        let Ok(Action::Scan { shard, request }) = plan_of(
            &["SCAN", "70", "MATCH", "k*", "COUNT", "5", "TYPE", "hash"],
            &CONTEXT,
        ) else {
            panic!("expected a scan");
        };
        assert_eq!(shard, 2);
        assert_eq!(
            args_of(&request),
            ["SCAN", "17", "MATCH", "k*", "COUNT", "5", "TYPE", "hash"]
        );
    }

    #[test]
    fn invalid_cursors_are_refused_as_redis_does() {
        let too_big = format!("{}", u128::from(u64::MAX) * 4 + 4);
        for cursor in [
            "",
            "x",
            "-1",
            "1.5",
            " 1",
            &too_big,
            "1000000000000000000000000000000000000000",
        ] {
            match plan_of(&["SCAN", cursor], &CONTEXT) {
                Err(reply) => assert_eq!(reply.as_ref(), b"-ERR invalid cursor\r\n", "{cursor:?}"),
                Ok(action) => panic!("{cursor:?}: {action:?}"),
            }
        }
    }

    #[test]
    fn the_cursor_walks_every_shard_in_order_and_round_trips() {
        for shards in [1, 2, 3, 4, 7, 100] {
            for shard in 0..shards {
                for backend in [1, 2, 255, 1 << 32, u64::MAX / 3, u64::MAX - 1, u64::MAX] {
                    let next = Cursor::next(shard, backend, shards);
                    assert_eq!(
                        Cursor::parse(next.as_bytes(), shards),
                        Some(Cursor { shard, backend })
                    );
                }
                let done = Cursor::next(shard, 0, shards);
                let expected = if shard + 1 < shards {
                    Cursor {
                        shard: shard + 1,
                        backend: 0,
                    }
                } else {
                    Cursor {
                        shard: 0,
                        backend: 0,
                    }
                };
                assert_eq!(Cursor::parse(done.as_bytes(), shards), Some(expected));
                assert_eq!(done == "0", shard + 1 == shards);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_backend_cursor_on_any_shard_round_trips(
            shards in 1usize..100_000,
            shard in proptest::prelude::any::<usize>(),
            backend in 1..=u64::MAX,
        ) {
            let shard = shard % shards;
            let next = Cursor::next(shard, backend, shards);
            proptest::prop_assert_eq!(
                Cursor::parse(next.as_bytes(), shards),
                Some(Cursor { shard, backend })
            );
        }
    }

    #[test]
    fn flush_needs_the_pools_consent_and_flushall_flushes_the_pools_database() {
        let refused = plan_of(&["FLUSHDB"], &CONTEXT).unwrap_err();
        let text = String::from_utf8_lossy(&refused).into_owned();
        assert!(text.starts_with("-ERR FLUSHDB is refused"), "{text}");
        assert!(text.contains("allow_flush: true"), "{text}");
        let allowed = Context {
            allow_flush: true,
            ..CONTEXT
        };
        let Ok(Action::Every(Gather::Ok, Some(request))) =
            plan_of(&["flushall", "ASYNC"], &allowed)
        else {
            panic!("expected a broadcast");
        };
        assert_eq!(args_of(&request), ["FLUSHDB", "ASYNC"]);
    }

    #[test]
    fn script_subcommands_merge_each_their_way() {
        let merge = |args: &[&str]| match plan_of(args, &CONTEXT) {
            Ok(Action::Every(merge, None)) => Ok(merge),
            Ok(other) => panic!("{other:?}"),
            Err(reply) => Err(String::from_utf8_lossy(&reply).into_owned()),
        };
        assert_eq!(merge(&["SCRIPT", "LOAD", "return 1"]), Ok(Gather::AllEqual));
        assert_eq!(merge(&["script", "exists", "a", "b"]), Ok(Gather::And));
        assert_eq!(merge(&["Script", "Flush"]), Ok(Gather::Ok));
        assert_eq!(
            merge(&["SCRIPT", "KILL"]),
            Err("-ERR unsupported command 'script kill'\r\n".into())
        );
        assert!(matches!(plan_of(&["TIME"], &CONTEXT), Ok(Action::First)));
        assert!(matches!(
            plan_of(&["DBSIZE"], &CONTEXT),
            Ok(Action::Every(Gather::Sum, None))
        ));
    }

    #[test]
    fn a_pool_without_shards_says_so() {
        let empty = Context {
            shards: 0,
            ..CONTEXT
        };
        assert!(plan_of(&["DBSIZE"], &empty).is_err());
        assert!(plan_of(&["SCAN", "0"], &empty).is_err());
    }

    #[test]
    fn only_info_keyspace_alone_goes_to_the_shards() {
        let info = |args: &[&str]| {
            is_info_keyspace(&Request::from_args(args.iter().map(|a| a.as_bytes())))
        };
        assert!(info(&["INFO", "keyspace"]));
        assert!(info(&["info", "KEYSPACE"]));
        assert!(!info(&["INFO"]));
        assert!(!info(&["INFO", "server"]));
        assert!(!info(&["INFO", "keyspace", "server"]));
    }
}
