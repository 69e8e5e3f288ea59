//! Keyspace-wide commands (`SCAN KEYS DBSIZE RANDOMKEY FLUSHDB FLUSHALL SCRIPT LASTSAVE TIME`,
//! `INFO keyspace`): what each asks of the pool's shards — all of them with a merge, the first
//! one, or for `SCAN` the one shard its cursor names — and the `SCAN` cursor that carries the
//! shard and the backend's cursor in one decimal number.

use bytes::Bytes;

use super::codec::Request;
use super::command::{Command, Merge};
use super::reply;

/// What a pool offers the keyspace-wide commands.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    /// How many shards hold the keyspace (backends; a cluster's masters).
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
    /// merged by the merge.
    Every(Merge, Option<Request>),
    /// To the first shard alone, the reply passed on (`TIME`: one clock for every client and
    /// every proxy in front of the same shards).
    First,
    /// To shard `shard` (in keyspace order), with the backend's cursor in place of the
    /// client's; the reply is merged by [`Merge::Scan`] to carry the client's next cursor.
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
            Merge::Concat {
                max_bytes: context.max_reply_bytes,
            },
            None,
        ),
        "dbsize" => Action::Every(Merge::Sum, None),
        "randomkey" => Action::Every(Merge::Random, None),
        "lastsave" => Action::Every(Merge::Min, None),
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
            Action::Every(Merge::Ok, Some(Request::from_arg_slices(&args)))
        }
        "script" => {
            let sub = arg(1);
            if sub.eq_ignore_ascii_case(b"load") {
                Action::Every(Merge::AllEqual, None)
            } else if sub.eq_ignore_ascii_case(b"exists") {
                Action::Every(Merge::And, None)
            } else if sub.eq_ignore_ascii_case(b"flush") {
                Action::Every(Merge::Ok, None)
            } else {
                return Err(reply::error(&format!(
                    "ERR unsupported command 'script {}'",
                    String::from_utf8_lossy(sub.get(..32).unwrap_or(sub)).to_ascii_lowercase()
                )));
            }
        }
        "info" => Action::Every(Merge::InfoKeyspace { db: context.db }, None),
        other => return Err(reply::error(&format!("ERR unsupported command '{other}'"))),
    })
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
        let Ok(Action::Every(Merge::Ok, Some(request))) = plan_of(&["flushall", "ASYNC"], &allowed)
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
        assert_eq!(merge(&["SCRIPT", "LOAD", "return 1"]), Ok(Merge::AllEqual));
        assert_eq!(merge(&["script", "exists", "a", "b"]), Ok(Merge::And));
        assert_eq!(merge(&["Script", "Flush"]), Ok(Merge::Ok));
        assert_eq!(
            merge(&["SCRIPT", "KILL"]),
            Err("-ERR unsupported command 'script kill'\r\n".into())
        );
        assert!(matches!(plan_of(&["TIME"], &CONTEXT), Ok(Action::First)));
        assert!(matches!(
            plan_of(&["DBSIZE"], &CONTEXT),
            Ok(Action::Every(Merge::Sum, None))
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
