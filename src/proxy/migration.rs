//! A pool's migration window on the data path (`migration: { read_through: true, ... }`):
//! a read that misses on its key's new owner is retried on the old owner the snapshot's
//! [`Handover`](crate::backend::pool::Handover) names, and with `copy: true` a value found
//! there is written to the new owner (`DUMP`/`PTTL` → `RESTORE` without `REPLACE`; memcached
//! `mg` → `add`), so a newer write is never overwritten. Writes and deletes go to the new
//! owner and delete the old copy beside it; their reply waits for both, so a read sent after
//! it can never find the old value. A write that depends on what the key holds (`INCR`,
//! `APPEND`, `HSET`, `EXPIRE`, `SET ... NX`, memcached `incr`/`append`/`cas`/`touch`...) first
//! moves the key to its new owner the same way (a [`MoveFirst`]), so that a counter does not
//! restart from nothing; only whole overwrites (`SET`, `SETEX`, `PSETEX`, `MSET`, memcached
//! `set`) and deletes skip the move.
//!
//! A miss is a nil or empty reply: `$-1`, RESP3 `_`, `*-1`, `*0`, `%0`, `~0` (an `MGET` part
//! of one key: `*1 $-1`), memcached `END` or meta `EN`.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};

use super::session::{backend_error, Dialect, FanoutReply, Handler, Parts, Pending, Plan};
use super::worker::Route;
use crate::backend::pool::Place;
use crate::backend::reply::TryRecvError;
use crate::backend::{self, Expect, Outcome, ReplyReceiver};
use crate::protocol::memcache::{self, ReplyKind};
use crate::protocol::resp::command::{Command, Kind, Merge};
use crate::protocol::resp::fanout::{self, Split};
use crate::protocol::resp::{reply, Request};

/// Copies in flight on one worker at most: past it a read served from the old owner is not
/// copied (the next read of the key copies it), so a client reading fast cannot pile up
/// copies without bound.
const MAX_COPIES: usize = 256;
/// memcached reads an `exptime` above 30 days as a Unix time.
const MEMCACHE_RELATIVE_LIMIT: i64 = 30 * 24 * 60 * 60;

thread_local! {
    static COPIES: Cell<usize> = const { Cell::new(0) };
}

/// Where a request's key lives during the window.
#[derive(Clone, Copy, Debug)]
pub(super) struct Owners {
    /// Its owner on the current servers.
    pub(super) new: usize,
    /// Its owner on the previous servers (differs from `new`).
    pub(super) old: usize,
}

/// A read under way: on the new owner, then (if it missed) on the old one.
pub(super) struct ReadThrough {
    route: Rc<Route>,
    frame: Bytes,
    /// The key as written on the wire (for the copy's requests).
    key: Bytes,
    owners: Owners,
    client: u64,
    resp3: bool,
    expect: Expect,
    dialect: Dialect,
    copy: bool,
    state: State,
}

enum State {
    New(ReplyReceiver),
    Old {
        receiver: ReplyReceiver,
        /// The new owner's miss: the reply if the old owner has nothing either.
        miss: Bytes,
        /// What the copy reads from the old owner, sent right behind the read.
        copy: Option<Source>,
    },
    Done(Bytes),
}

/// The old owner's replies a copy is made from: `DUMP` and `PTTL`, or memcached's `mg`.
struct Source {
    value: ReplyReceiver,
    ttl: Option<ReplyReceiver>,
}

/// A write that depends on what its keys hold, during the window: each key whose owner
/// changed is copied from its old owner to its new one (without replacing what the new owner
/// has), then the write runs on the new owner and the old copies are deleted beside it. The
/// client's later requests wait for its reply (a fence), so none overtakes the write.
pub(super) struct MoveFirst {
    /// The keys' copies, while under way.
    moving: Option<Pin<Box<dyn Future<Output = ()>>>>,
    /// The write, until the copies are done.
    write: Option<Write>,
    /// The write and the deletes of the old copies, once sent.
    reply: Option<Pending>,
}

/// What a [`MoveFirst`] sends once its keys are moved.
struct Write {
    route: Rc<Route>,
    new: usize,
    frame: Bytes,
    expect: Expect,
    client: u64,
    resp3: bool,
    dialect: Dialect,
    /// Per old owner, the keys whose old copies it holds.
    old_copies: Vec<(usize, Vec<Bytes>)>,
}

impl MoveFirst {
    /// Reads each moved key off its old owner now (pipelined behind the client's earlier
    /// requests there); copies it, then writes, as the reply is polled.
    fn start(write: Write) -> MoveFirst {
        let sources: Vec<(Bytes, Source)> = write
            .old_copies
            .iter()
            .flat_map(|(old, keys)| keys.iter().map(move |key| (*old, key)))
            .map(|(old, key)| {
                let source = copy_source(
                    &write.route,
                    old,
                    key,
                    write.client,
                    write.resp3,
                    write.dialect,
                );
                (key.clone(), source)
            })
            .collect();
        let (route, new, client, resp3, dialect) = (
            Rc::clone(&write.route),
            write.new,
            write.client,
            write.resp3,
            write.dialect,
        );
        let moving = async move {
            for (key, source) in sources {
                copy(&route, new, client, resp3, dialect, &key, source).await;
            }
        };
        MoveFirst {
            moving: Some(Box::pin(moving)),
            write: Some(write),
            reply: None,
        }
    }

    /// The reply, if it is in; never waits (the session polls [`MoveFirst::poll_ready`]
    /// before it sleeps, which registers its waker).
    pub(super) fn try_take(&mut self) -> Option<Bytes> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.poll_ready(&mut cx) {
            Poll::Ready(()) => self.reply.as_mut()?.try_take(),
            Poll::Pending => None,
        }
    }

    /// Whether the reply is in; if not, the task is woken when the step it waits for is done.
    pub(super) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(moving) = &mut self.moving {
            if moving.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.moving = None;
        }
        if let Some(write) = self.write.take() {
            self.reply = Some(write.send());
        }
        match &mut self.reply {
            Some(reply) => reply.poll_ready(cx),
            None => Poll::Ready(()),
        }
    }

    /// The bytes of the reply that have arrived.
    pub(super) fn poll_held(&mut self, cx: &mut Context<'_>) -> usize {
        match (self.poll_ready(cx), &mut self.reply) {
            (Poll::Ready(()), Some(reply)) => reply.poll_held(cx),
            _ => 0,
        }
    }
}

impl Write {
    /// Sends the write to the new owner and the deletes of the old copies beside it.
    fn send(self) -> Pending {
        let main = Pending::Backend(
            self.route
                .backends
                .send(self.new, self.client, self.frame, self.expect, self.resp3),
            self.dialect,
        );
        let send = |old: usize, frame: Bytes, expect: Expect| {
            let receiver = self
                .route
                .backends
                .send(old, self.client, frame, expect, self.resp3);
            Pending::Backend(receiver, self.dialect)
        };
        with_deletes(main, self.old_copies, self.dialect, Plan::First, send)
    }
}

/// `main`, with the old copies in `old_copies` (per old owner, its keys) deleted beside it
/// through `send`; the reply merges by `plan`.
fn with_deletes(
    main: Pending,
    old_copies: Vec<(usize, Vec<Bytes>)>,
    dialect: Dialect,
    plan: Plan,
    send: impl Fn(usize, Bytes, Expect) -> Pending,
) -> Pending {
    if old_copies.is_empty() {
        return main;
    }
    let mut parts = Parts::new();
    parts.push(main);
    for (old, keys) in old_copies {
        match dialect {
            Dialect::Redis => {
                let args: Vec<&[u8]> = std::iter::once(&b"DEL"[..])
                    .chain(keys.iter().map(|k| &k[..]))
                    .collect();
                parts.push(send(old, resp(&args), Expect::Resp));
            }
            Dialect::Memcache => {
                for key in keys {
                    let frame = memcache_line(b"delete", &key, b"");
                    parts.push(send(old, frame, Expect::Memcache(ReplyKind::Line)));
                }
            }
        }
    }
    Pending::Fanout(Box::new(FanoutReply { plan, parts }))
}

/// Sends what a copy of `key` reads from its old owner `old`: `DUMP` and `PTTL`, or
/// memcached's `mg key v f t`.
fn copy_source(
    route: &Route,
    old: usize,
    key: &[u8],
    client: u64,
    resp3: bool,
    dialect: Dialect,
) -> Source {
    let backends = &route.backends;
    match dialect {
        Dialect::Redis => Source {
            value: backends.send(old, client, resp(&[b"DUMP", key]), Expect::Resp, resp3),
            ttl: Some(backends.send(old, client, resp(&[b"PTTL", key]), Expect::Resp, resp3)),
        },
        Dialect::Memcache => Source {
            value: backends.send(
                old,
                client,
                memcache_line(b"mg", key, b" v f t"),
                Expect::Memcache(ReplyKind::Meta),
                false,
            ),
            ttl: None,
        },
    }
}

impl ReadThrough {
    /// Sends `frame` (a read of `key`) to the key's new owner; `copy`: copy a value found on
    /// the old owner.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        route: &Rc<Route>,
        frame: Bytes,
        key: Bytes,
        owners: Owners,
        client: u64,
        resp3: bool,
        expect: Expect,
        copy: bool,
    ) -> ReadThrough {
        let receiver = route
            .backends
            .send(owners.new, client, frame.clone(), expect, resp3);
        let dialect = match expect {
            Expect::Resp => Dialect::Redis,
            Expect::Memcache(_) => Dialect::Memcache,
        };
        ReadThrough {
            route: Rc::clone(route),
            frame,
            key,
            owners,
            client,
            resp3,
            expect,
            dialect,
            copy,
            state: State::New(receiver),
        }
    }

    /// The reply, if it is in; never waits.
    pub(super) fn try_take(&mut self) -> Option<Bytes> {
        loop {
            let receiver = match &mut self.state {
                State::Done(bytes) => return Some(std::mem::take(bytes)),
                State::New(receiver) | State::Old { receiver, .. } => receiver,
            };
            match receiver.try_recv() {
                Ok(outcome) => self.advance(outcome),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Closed) => self.advance(Err(backend::Error::Closed)),
            }
        }
    }

    /// Whether the reply is in; if not, the task is woken when the awaited one arrives.
    pub(super) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let receiver = match &mut self.state {
                State::Done(_) => return Poll::Ready(()),
                State::New(receiver) | State::Old { receiver, .. } => receiver,
            };
            match Pin::new(receiver).poll(cx) {
                Poll::Ready(outcome) => {
                    self.advance(outcome.unwrap_or(Err(backend::Error::Closed)))
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn advance(&mut self, outcome: Outcome) {
        let state = std::mem::replace(&mut self.state, State::Done(Bytes::new()));
        self.state = match (state, outcome) {
            (State::New(_), Ok(bytes)) if is_miss(&bytes) => self.ask_old_owner(bytes),
            (State::New(_), Ok(bytes)) => State::Done(bytes),
            (State::New(_), Err(error)) => State::Done(backend_error(&error, self.dialect)),
            (State::Old { copy, .. }, Ok(bytes)) if !is_miss(&bytes) && !is_error(&bytes) => {
                self.route.pool.metrics().migration_hits.inc();
                if let Some(source) = copy {
                    self.copy_to_new_owner(source);
                }
                State::Done(bytes)
            }
            // Nothing there either, or the old owner failed: the new owner's miss is the
            // truth about the key now.
            (State::Old { miss, .. }, _) => State::Done(miss),
            (State::Done(bytes), _) => State::Done(bytes),
        };
    }

    fn ask_old_owner(&mut self, miss: Bytes) -> State {
        let backends = &self.route.backends;
        let old = self.owners.old;
        let receiver = backends.send(
            old,
            self.client,
            self.frame.clone(),
            self.expect,
            self.resp3,
        );
        let copy = (self.copy && COPIES.with(Cell::get) < MAX_COPIES).then(|| {
            copy_source(
                &self.route,
                old,
                &self.key,
                self.client,
                self.resp3,
                self.dialect,
            )
        });
        State::Old {
            receiver,
            miss,
            copy,
        }
    }

    /// Writes the value `source` reads to the new owner, in the background (the client has
    /// its reply already), unless the new owner has the key by then.
    fn copy_to_new_owner(&self, source: Source) {
        let route = Rc::clone(&self.route);
        let (key, new, client, resp3, dialect) = (
            self.key.clone(),
            self.owners.new,
            self.client,
            self.resp3,
            self.dialect,
        );
        COPIES.with(|n| n.set(n.get() + 1));
        tokio::task::spawn_local(async move {
            copy(&route, new, client, resp3, dialect, &key, source).await;
            COPIES.with(|n| n.set(n.get().saturating_sub(1)));
        });
    }
}

/// Writes the value `source` read off the old owner to the new owner `new` (unless it has
/// the key by then), counting the copies made.
async fn copy(
    route: &Route,
    new: usize,
    client: u64,
    resp3: bool,
    dialect: Dialect,
    key: &[u8],
    source: Source,
) {
    let request = match dialect {
        Dialect::Redis => restore(key, source).await,
        Dialect::Memcache => add(key, source).await,
    };
    if let Some((frame, expect, stored)) = request {
        let sent = route.backends.send(new, client, frame, expect, resp3);
        if let Ok(Ok(reply)) = sent.await {
            if reply.as_ref() == stored {
                route.pool.metrics().migration_copies.inc();
            }
        }
    }
}

/// `RESTORE key ttl payload` from the old owner's `DUMP` and `PTTL` (no `REPLACE`: a key the
/// new owner has meanwhile wins, `BUSYKEY`); `None` when the key is gone or about to expire.
async fn restore(key: &[u8], source: Source) -> Option<(Bytes, Expect, &'static [u8])> {
    let dump = source.value.await.ok()?.ok()?;
    let pttl = source.ttl?.await.ok()?.ok()?;
    let payload = bulk_data(&dump)?;
    let ttl = match reply::integer_value(&pttl)? {
        -1 => 0,
        ms if ms > 0 => ms,
        _ => return None,
    };
    let ttl = ttl.to_string();
    Some((
        resp(&[b"RESTORE", key, ttl.as_bytes(), payload]),
        Expect::Resp,
        b"+OK\r\n",
    ))
}

/// `add key flags exptime bytes` from the old owner's `mg key v f t` (`add`: a key the new
/// owner has meanwhile wins, `NOT_STORED`); `None` when the key is gone or expiring.
async fn add(key: &[u8], source: Source) -> Option<(Bytes, Expect, &'static [u8])> {
    let reply = source.value.await.ok()?.ok()?;
    let (header, data) = meta_value(&reply)?;
    let mut flags: &[u8] = b"0";
    let mut ttl: i64 = -1;
    for token in header.split(|&b| b == b' ').skip(2) {
        match token.split_first() {
            Some((b'f', value)) => flags = value,
            Some((b't', value)) => ttl = std::str::from_utf8(value).ok()?.parse().ok()?,
            _ => {}
        }
    }
    let exptime = match ttl {
        -1 => 0,
        secs if secs > MEMCACHE_RELATIVE_LIMIT => unix_now()? + secs,
        secs if secs > 0 => secs,
        _ => return None,
    };
    let mut frame = BytesMut::with_capacity(key.len() + data.len() + 48);
    frame.put_slice(b"add ");
    frame.put_slice(key);
    frame.put_u8(b' ');
    frame.put_slice(flags);
    frame.put_slice(format!(" {exptime} {}\r\n", data.len()).as_bytes());
    frame.put_slice(data);
    frame.put_slice(b"\r\n");
    Some((
        frame.freeze(),
        Expect::Memcache(ReplyKind::Line),
        b"STORED\r\n",
    ))
}

fn unix_now() -> Option<i64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    i64::try_from(now.as_secs()).ok()
}

/// The header line (without CRLF) and data of a meta `VA <size> <flags>*` reply.
fn meta_value(reply: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = reply.strip_prefix(b"VA ")?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    let header = reply.get(..end + 3)?;
    let size: usize = std::str::from_utf8(rest.get(..end)?.split(|&b| b == b' ').next()?)
        .ok()?
        .parse()
        .ok()?;
    let data = reply.get(end + 5..end + 5 + size)?;
    Some((header, data))
}

/// The data of a non-nil bulk string reply.
fn bulk_data(reply: &[u8]) -> Option<&[u8]> {
    let rest = reply.strip_prefix(b"$")?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    let size: usize = std::str::from_utf8(rest.get(..end)?).ok()?.parse().ok()?;
    rest.get(end + 2..end + 2 + size)
}

/// Whether `reply` says the key is not there.
pub(super) fn is_miss(reply: &[u8]) -> bool {
    matches!(
        reply,
        b"$-1\r\n"
            | b"_\r\n"
            | b"*-1\r\n"
            | b"*0\r\n"
            | b"%0\r\n"
            | b"~0\r\n"
            | b"*1\r\n$-1\r\n"
            | b"*1\r\n_\r\n"
            | b"END\r\n"
            | b"EN\r\n"
    )
}

/// Whether `reply` is an error (RESP or memcached).
fn is_error(reply: &[u8]) -> bool {
    reply.starts_with(b"-")
        || reply.starts_with(b"ERROR")
        || reply.starts_with(b"SERVER_ERROR")
        || reply.starts_with(b"CLIENT_ERROR")
}

/// A RESP request frame.
pub(super) fn resp(args: &[&[u8]]) -> Bytes {
    Request::from_arg_slices(args).into_frame()
}

/// A memcached command line `<command> <key><rest>\r\n`.
pub(super) fn memcache_line(command: &[u8], key: &[u8], rest: &[u8]) -> Bytes {
    let mut line = BytesMut::with_capacity(command.len() + key.len() + rest.len() + 3);
    line.put_slice(command);
    line.put_u8(b' ');
    line.put_slice(key);
    line.put_slice(rest);
    line.put_slice(b"\r\n");
    line.freeze()
}

impl Handler<'_> {
    /// Whether the pool is in a migration window for this request (a client in a
    /// transaction keeps its own connection, and the window's rules do not apply there).
    #[inline]
    pub(super) fn migrating(&self) -> bool {
        self.client.transaction.is_none() && self.route.pool.handover().is_some()
    }

    /// A RESP request routed or split by key, during a migration window: reads of one key
    /// and `MGET` (key by key) read through; writes also delete the old copies.
    #[inline(never)]
    pub(super) fn migrate_resp(&mut self, command: &Command, request: Request) -> Pending {
        match command.kind {
            Kind::Fanout(Merge::Values) => self.read_each_resp(request),
            Kind::Routed if command.is_read_only() => {
                let keys: Vec<usize> = command
                    .keys(&request)
                    .map(Iterator::collect)
                    .unwrap_or_default();
                let place = match self.place_of(command, &request) {
                    Ok(place) => place,
                    Err(reply) => return Pending::Ready(reply),
                };
                match keys.as_slice() {
                    [only] => {
                        let key = Bytes::copy_from_slice(request.arg(*only).unwrap_or_default());
                        self.read_one(place, request.into_frame(), key, Expect::Resp)
                    }
                    _ => self.send(place, request.into_frame(), Expect::Resp),
                }
            }
            Kind::Routed if overwrites(command, &request) => {
                let keys = self.resp_keys(command, &request);
                let main = self.forward(command, request);
                self.beside(main, keys, Dialect::Redis, false)
            }
            Kind::Routed => {
                let keys = self.resp_keys(command, &request);
                match self.place_of(command, &request) {
                    Ok(place) => self.move_first(place, request.into_frame(), keys, Expect::Resp),
                    Err(reply) => Pending::Ready(reply),
                }
            }
            Kind::Fanout(merge) if matches!(command.name, "del" | "unlink" | "mset") => {
                let keys = self.resp_keys(command, &request);
                let main = self.fan_out(merge, request);
                self.beside(main, keys, Dialect::Redis, command.name != "mset")
            }
            Kind::Fanout(merge) => self.fan_out(merge, request),
            _ => self.forward(command, request),
        }
    }

    fn resp_keys(&self, command: &Command, request: &Request) -> Vec<Bytes> {
        command
            .keys(request)
            .map(|keys| {
                keys.filter_map(|at| request.arg(at).map(Bytes::copy_from_slice))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `MGET` key by key, each read through on its own.
    fn read_each_resp(&self, request: Request) -> Pending {
        // Each key is numbered (its argument's index), so that it gets a part of its own.
        let mut count = 0usize;
        let route = |key: &[u8]| {
            count += 1;
            self.route(key).map(|place| (place, count))
        };
        let read = |(place, at): (Place, usize), frame| {
            let key = Bytes::copy_from_slice(request.arg(at).unwrap_or_default());
            self.read_one(place, frame, key, Expect::Resp)
        };
        match fanout::split::<_, _, _, Parts>(&request, Merge::Values, route, read) {
            Err(reply) => Pending::Ready(reply),
            Ok(Split::Whole((place, _))) => {
                let key = Bytes::copy_from_slice(request.arg(1).unwrap_or_default());
                self.read_one(place, request.into_frame(), key, Expect::Resp)
            }
            Ok(Split::Parts(parts, plan)) => {
                self.fragments(parts.len());
                Pending::Fanout(Box::new(FanoutReply {
                    plan: Plan::Resp(plan),
                    parts,
                }))
            }
        }
    }

    /// A memcached request during a migration window: `get`/`gets` (key by key) and `mg`
    /// read through; storage, arithmetic, `delete`, `touch` and meta writes also delete the
    /// old copy; `gat`/`gats`/`me` go as usual.
    #[inline(never)]
    pub(super) fn migrate_memcache(&mut self, request: &memcache::Request) -> Pending {
        use memcache::Command as C;
        let expect = Expect::Memcache(request.expect());
        match request.command() {
            C::Get | C::Gets | C::MetaGet => {
                let mut count = 0u32;
                let split = memcache::fanout::split(request, |key| {
                    count += 1;
                    self.route(key).map(|place| (place, count))
                });
                match split {
                    Err(reply) => Pending::Ready(reply),
                    Ok(memcache::fanout::Split::Whole((place, _))) => {
                        let key = first_key(request);
                        self.read_one(place, request.frame().clone(), key, expect)
                    }
                    Ok(memcache::fanout::Split::Parts(parts, plan)) => {
                        self.fragments(parts.len());
                        let parts = parts
                            .into_iter()
                            .map(|part| {
                                let key = first_key(&part.request);
                                self.read_one(
                                    part.shard.0,
                                    part.request.frame().clone(),
                                    key,
                                    expect,
                                )
                            })
                            .collect();
                        Pending::Fanout(Box::new(FanoutReply {
                            plan: Plan::Memcache(plan),
                            parts,
                        }))
                    }
                }
            }
            C::Gat | C::Gats | C::MetaDebug => self.memcache_plain(request, expect),
            command => {
                // A classic key is its wire form; a base64 meta key has no classic delete.
                let same = request.keys().eq(request.raw_keys());
                let keys = if same {
                    vec![first_key(request)]
                } else {
                    Vec::new()
                };
                if !matches!(command, C::Set | C::Delete | C::MetaDelete) {
                    return match self.route(request.keys().next().unwrap_or_default()) {
                        Ok(place) => self.move_first(place, request.frame().clone(), keys, expect),
                        Err(reply) => Pending::Ready(reply),
                    };
                }
                let main = self.memcache_plain(request, expect);
                self.beside(main, keys, Dialect::Memcache, command == C::Delete)
            }
        }
    }

    /// A single-key memcached request on its key's new owner.
    fn memcache_plain(&self, request: &memcache::Request, expect: Expect) -> Pending {
        match self.route(request.keys().next().unwrap_or_default()) {
            Ok(place) => self.send(place, request.frame().clone(), expect),
            Err(reply) => Pending::Ready(reply),
        }
    }

    /// A read of `key` on `place`, retried on the key's old owner if it misses there.
    fn read_one(&self, place: Place, frame: Bytes, key: Bytes, expect: Expect) -> Pending {
        let (Place::Shard(new), Some(handover)) = (place, self.route.pool.handover()) else {
            return self.send(place, frame, expect);
        };
        match handover.old_owner(&key, new) {
            Some(old) => Pending::ReadThrough(Box::new(ReadThrough::start(
                self.route,
                frame,
                key,
                Owners { new, old },
                self.client.id,
                self.client.resp3,
                expect,
                handover.copies(),
            ))),
            None => self.send(place, frame, expect),
        }
    }

    /// `main` (a write), with the old copies of `keys` deleted beside it on their old owners
    /// where those differ; the reply is `main`'s once all are done, or for a delete
    /// (`deletes`) what was deleted anywhere.
    fn beside(&self, main: Pending, keys: Vec<Bytes>, dialect: Dialect, deletes: bool) -> Pending {
        let plan = if deletes {
            Plan::Deleted { keys: keys.len() }
        } else {
            Plan::First
        };
        let old_copies = self.old_copies(keys);
        with_deletes(main, old_copies, dialect, plan, |old, frame, expect| {
            self.send(Place::Shard(old), frame, expect)
        })
    }

    /// `frame` (a write of `keys`, on `place`) as a [`MoveFirst`] when any key has an old
    /// owner, the client's later requests fenced behind it; else as usual.
    fn move_first(
        &mut self,
        place: Place,
        frame: Bytes,
        keys: Vec<Bytes>,
        expect: Expect,
    ) -> Pending {
        let old_copies = self.old_copies(keys);
        let Place::Shard(new) = place else {
            return self.send(place, frame, expect);
        };
        if old_copies.is_empty() {
            return self.send(place, frame, expect);
        }
        self.client.fence = true;
        Pending::MoveFirst(Box::new(MoveFirst::start(Write {
            route: Rc::clone(self.route),
            new,
            frame,
            expect,
            client: self.client.id,
            resp3: self.client.resp3,
            dialect: match expect {
                Expect::Resp => Dialect::Redis,
                Expect::Memcache(_) => Dialect::Memcache,
            },
            old_copies,
        })))
    }

    /// Per old owner, those of `keys` whose owner changed: their old copies.
    fn old_copies(&self, keys: Vec<Bytes>) -> Vec<(usize, Vec<Bytes>)> {
        let Some(handover) = self.route.pool.handover() else {
            return Vec::new();
        };
        let mut by_owner: Vec<(usize, Vec<Bytes>)> = Vec::new();
        for key in keys {
            let Ok(Place::Shard(new)) = self.route.pool.route(&key) else {
                continue;
            };
            let Some(old) = handover.old_owner(&key, new) else {
                continue;
            };
            match by_owner.iter_mut().find(|(owner, _)| *owner == old) {
                Some((_, keys)) => keys.push(key),
                None => by_owner.push((old, vec![key])),
            }
        }
        by_owner
    }
}

/// Whether a write replaces its keys' values whole, whatever they held (`SET` without
/// `NX`/`XX`/`GET`/`KEEPTTL`, `SETEX`, `PSETEX`): no need to move them first.
fn overwrites(command: &Command, request: &Request) -> bool {
    match command.name {
        "setex" | "psetex" => true,
        "set" => (3..request.argc()).all(|i| {
            let option = request.arg(i).unwrap_or_default();
            !["nx", "xx", "get", "keepttl"]
                .iter()
                .any(|word| option.eq_ignore_ascii_case(word.as_bytes()))
        }),
        _ => false,
    }
}

/// The reply to a delete made on a key's new owner (`replies[0]`) and on its old one: the
/// keys deleted anywhere (at most `keys`), or memcached's `DELETED` if either copy was. An
/// error on the new owner is the reply.
pub(super) fn merge_deleted(keys: usize, replies: &[Bytes]) -> Bytes {
    let Some(main) = replies.first().cloned() else {
        return Bytes::new();
    };
    if main.starts_with(b":") {
        let deleted: i64 = replies.iter().filter_map(|r| reply::integer_value(r)).sum();
        let most = i64::try_from(keys).unwrap_or(i64::MAX);
        return reply::integer(deleted.min(most));
    }
    if main.as_ref() == b"NOT_FOUND\r\n" && replies.iter().any(|r| r.as_ref() == b"DELETED\r\n") {
        return Bytes::from_static(b"DELETED\r\n");
    }
    main
}

/// A memcached request's first key, as sent.
fn first_key(request: &memcache::Request) -> Bytes {
    Bytes::copy_from_slice(request.raw_keys().next().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_are_nil_or_empty_replies() {
        for miss in [
            &b"$-1\r\n"[..],
            b"_\r\n",
            b"*0\r\n",
            b"*1\r\n$-1\r\n",
            b"END\r\n",
            b"EN\r\n",
        ] {
            assert!(is_miss(miss));
        }
        for hit in [
            &b"$1\r\na\r\n"[..],
            b":0\r\n",
            b"*1\r\n$1\r\na\r\n",
            b"VALUE k 0 1\r\na\r\nEND\r\n",
            b"-ERR x\r\n",
        ] {
            assert!(!is_miss(hit));
        }
    }

    #[test]
    fn dump_and_meta_values_are_read() {
        assert_eq!(bulk_data(b"$4\r\na\r\nb\r\n"), Some(&b"a\r\nb"[..]));
        assert_eq!(bulk_data(b"$-1\r\n"), None);
        let (header, data) = meta_value(b"VA 2 f7 t100\r\nhi\r\n").unwrap();
        assert_eq!((header, data), (&b"VA 2 f7 t100"[..], &b"hi"[..]));
        assert_eq!(meta_value(b"EN\r\n"), None);
        assert_eq!(meta_value(b"VA 9 f7\r\nhi\r\n"), None);
    }

    #[test]
    fn deletes_count_the_old_copies() {
        let replies = |r: &[&'static [u8]]| -> Vec<Bytes> {
            r.iter().map(|b| Bytes::from_static(b)).collect()
        };
        assert_eq!(
            merge_deleted(2, &replies(&[b":0\r\n", b":2\r\n"])).as_ref(),
            b":2\r\n"
        );
        assert_eq!(
            merge_deleted(1, &replies(&[b":1\r\n", b":1\r\n"])).as_ref(),
            b":1\r\n"
        );
        assert_eq!(
            merge_deleted(1, &replies(&[b"NOT_FOUND\r\n", b"DELETED\r\n"])).as_ref(),
            b"DELETED\r\n"
        );
        assert_eq!(
            merge_deleted(1, &replies(&[b"-ERR x\r\n", b":1\r\n"])).as_ref(),
            b"-ERR x\r\n"
        );
    }

    #[tokio::test]
    async fn memcached_copies_keep_flags_and_ttl() {
        let source = Source {
            value: ReplyReceiver::ready(Ok(Bytes::from_static(b"VA 2 f7 t100\r\nhi\r\n"))),
            ttl: None,
        };
        let (frame, _, stored) = add(b"k", source).await.unwrap();
        assert_eq!(frame.as_ref(), b"add k 7 100 2\r\nhi\r\n");
        assert_eq!(stored, b"STORED\r\n");
        let forever = Source {
            value: ReplyReceiver::ready(Ok(Bytes::from_static(b"VA 1 t-1 f0\r\nx\r\n"))),
            ttl: None,
        };
        assert_eq!(
            add(b"k", forever).await.unwrap().0.as_ref(),
            b"add k 0 0 1\r\nx\r\n"
        );
    }

    #[tokio::test]
    async fn redis_copies_restore_with_the_remaining_ttl_and_skip_gone_keys() {
        let source = |pttl: &'static [u8]| Source {
            value: ReplyReceiver::ready(Ok(Bytes::from_static(b"$3\r\nabc\r\n"))),
            ttl: Some(ReplyReceiver::ready(Ok(Bytes::from_static(pttl)))),
        };
        let (frame, _, _) = restore(b"k", source(b":1500\r\n")).await.unwrap();
        assert_eq!(frame, resp(&[b"RESTORE", b"k", b"1500", b"abc"]));
        let (frame, _, _) = restore(b"k", source(b":-1\r\n")).await.unwrap();
        assert_eq!(frame, resp(&[b"RESTORE", b"k", b"0", b"abc"]));
        assert!(restore(b"k", source(b":-2\r\n")).await.is_none());
    }
}
