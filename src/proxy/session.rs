//! One task per client, protocol-neutral: read, decode through the pool's protocol handler
//! (`proxy/resp.rs` or `proxy/memcache.rs`, behind one enum seam) which classifies, routes and
//! dispatches each request, then write replies strictly in request order.
//!
//! Replies are kept in a FIFO of `Pending` entries, one per request; the head is written as
//! soon as it is ready, and everything ready behind it goes out in the same write. What the
//! client's socket does not take waits in a backlog; with the replies already in behind the
//! head, that is the client's held output: past `client_output_limit` no new request is
//! decoded, past `client_output_hard_limit` the client is closed. A request after a protocol
//! switch (`HELLO`) goes over other backend connections, so it waits until every reply asked
//! before the switch is in.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use prometheus::Histogram;
use smallvec::SmallVec;
use tokio::io::AsyncWriteExt;

use super::cluster::ClusterRequest;
use super::memcache::Memcache;
use super::migration::{MoveFirst, ReadThrough};
use super::pubsub::{Confirmation, PubSub, Step};
use super::resp::Resp;
use super::stateful::{Held, KeptSlot, Transaction};
use super::worker::{Closing, Route, RouteCache, RouteSlot};
use crate::backend::pool::Place;
use crate::backend::reply::{TryRecvError, WriteThrough};
use crate::backend::{self, Expect, Outcome, Patience};
use crate::clock::Tick;
use crate::config::Limits;
use crate::protocol::memcache::{self, ReplyPolicy};
use crate::protocol::resp::fanout;
use crate::protocol::resp::keyspace;
use crate::protocol::resp::reply;
use crate::socket::{ArmedReader, Plain, Shared, SocketRead, SocketWrite, TryWrite};

/// Initial read buffer: small, so that idle clients cost little; it grows with the traffic.
const INITIAL_READ_BUFFER: usize = 1024;
/// Below this much spare room the read buffer grows (by its size, at least [`READ_CHUNK`]),
/// so that large requests are read in few calls while small ones never grow it.
const MIN_SPARE: usize = 512;
const READ_CHUNK: usize = 16 * 1024;

/// What the connection knows about its client.
#[derive(Debug)]
pub struct Client {
    /// Unique per process; also picks the backend connection, keeping per-client order.
    pub id: u64,
    /// Whether the client passed `AUTH` (or the pool needs none).
    pub authenticated: bool,
    /// Set by `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// Set by `QUIT`: reply, then close.
    pub quitting: bool,
    /// Set by `HELLO 3`: the client speaks RESP3.
    pub resp3: bool,
    /// The client's transaction (`WATCH`, `MULTI`...) and its dedicated connection, if any.
    pub(super) transaction: Option<Box<Transaction>>,
    /// Set by a request whose successors must wait until its reply is in (they would go
    /// over other backend connections and could overtake it: a transaction's end).
    pub(super) fence: bool,
    /// Set by a blocking request: it is fenced, and the client going away meanwhile ends
    /// the session at once (as Redis drops a blocked client), closing its connection.
    pub(super) blocked: bool,
    /// The client's clean dedicated connection, kept for its next blocking command or
    /// transaction.
    pub(super) kept: Rc<KeptSlot>,
    /// Its subscriptions, once it has subscribed.
    pub(crate) pubsub: Option<Box<PubSub>>,
    /// The ACL user it is, on a pool with `users` (`None` before `AUTH` when the default
    /// user needs a password or is disabled).
    pub(crate) login: Option<crate::acl::Login>,
    /// Its failed `AUTH`s: the [`crate::acl::MAX_AUTH_FAILURES`]th closes the connection.
    pub(crate) auth_failures: u32,
}

/// A client session on one pool.
pub struct Session {
    client: Client,
    /// The client's socket, when replies may be written straight to it.
    socket: Option<Rc<dyn TryWrite>>,
    /// This worker's route to the pool's current snapshot, cached: a new snapshot (reload,
    /// failover, ejection) is noticed with one plain load.
    route: RouteCache,
    limits: Limits,
    dialect: Dialect,
}

/// What handling one request needs: the client's state and the route loaded for it. The
/// protocol handlers ([`Resp`], [`Memcache`]) start replies through it.
pub(super) struct Handler<'s> {
    pub(super) client: &'s mut Client,
    pub(super) route: &'s Rc<Route>,
    /// Where `route` came from: a cluster request retried later routes on the pool's snapshot
    /// as it is then.
    pub(super) slot: &'s RouteSlot,
    pub(super) limits: &'s Limits,
    dialect: Dialect,
    /// The request never writes (a cluster pool may send it to a replica).
    pub(super) read: bool,
    /// No reply is pending before this request: it may switch to a dedicated connection
    /// without overtaking the client's earlier requests.
    pub(super) idle: bool,
}

/// The reply to one request, in request order.
pub(super) enum Pending {
    Ready(Bytes),
    Backend(backend::ReplyReceiver, Dialect),
    /// A request to a Redis Cluster pool, following redirects.
    Cluster(Box<ClusterRequest>),
    /// A read during a migration window: retried on the key's old owner if it misses.
    ReadThrough(Box<ReadThrough>),
    /// A write during a migration window that depends on what its keys hold: they are moved
    /// to their new owners first.
    MoveFirst(Box<MoveFirst>),
    Fanout(Box<FanoutReply>),
    /// memcached `noreply` / meta quiet mode: waits its turn, then shows only what the
    /// policy lets through (often nothing).
    Filtered(Box<Pending>, ReplyPolicy),
    /// A reply over a dedicated connection: a blocking command's own (closed once the reply
    /// is taken, or when the client goes away first), or a cluster pool's transaction.
    Held(Box<Held>),
    /// A subscription change, confirmed once the subscriber connections concerned have.
    Subscribed(Box<Confirmation>),
    /// A subscribed client's reply, held until its subscriber connections have delivered
    /// every message that came before the request (see [`PubSub::barrier`]).
    Behind(Box<(Confirmation, Pending)>),
}

/// The protocol a pool's clients speak; it decides how errors are worded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// RESP (`redis: true`).
    Redis,
    /// memcached ASCII (`redis: false`).
    Memcache,
}

/// A split request: its parts' replies, merged once all are in.
pub(super) struct FanoutReply {
    pub(super) plan: Plan,
    pub(super) parts: Parts,
}

/// A split request's parts: inline up to 8 (a fan-out is mostly over few shards), so the
/// fan-out takes one allocation, not two.
pub(super) type Parts = SmallVec<[Pending; 8]>;

/// How a split request's replies merge, per protocol.
pub(super) enum Plan {
    Resp(fanout::Plan),
    /// A keyspace-wide request's replies, one per shard asked.
    Keyspace(keyspace::Plan),
    Memcache(memcache::fanout::Plan),
    /// The first part's reply; the others (deleting old copies in a migration window)
    /// only have to be in.
    First,
    /// A delete during a migration window, beside the deletes of its keys' old copies:
    /// what was deleted anywhere, at most `keys` (`DEL`/`UNLINK`: the sum; memcached
    /// `delete`: `DELETED` if either copy was).
    Deleted {
        /// The keys the client asked to delete.
        keys: usize,
    },
}

/// The seam between the protocol-neutral loop and the pool's protocol: decodes a request and
/// starts its reply. An enum rather than a trait object, so that the per-request call is a
/// match the compiler can inline.
enum Decoder {
    Resp(Resp),
    Memcache(Memcache),
}

impl Decoder {
    /// Whether a request waits, decoded, for the replies before it.
    #[inline]
    fn has_waiting(&self) -> bool {
        matches!(self, Decoder::Resp(resp) if resp.has_waiting())
    }

    fn new(dialect: Dialect, limits: &Limits) -> Decoder {
        match dialect {
            Dialect::Redis => Decoder::Resp(Resp::new(limits)),
            Dialect::Memcache => Decoder::Memcache(Memcache::new(limits)),
        }
    }
}

/// What decoding the buffered input produced.
pub(super) enum Decoded {
    /// Nothing complete yet.
    More,
    /// A request (or a rejected one), with its reply to come.
    Request(Pending),
    /// A request that gets no reply at all.
    Silent,
    /// A request that must wait until every reply before it is in (the decoder keeps it
    /// and returns it then).
    Wait,
    /// A malformed frame: reply, then close; the stream cannot be trusted.
    Fatal(Bytes),
}

impl Session {
    /// A session for client `id` on the pool behind `slot` (this worker's route to it). The
    /// protocol and limits are the pool's at connect time; routing follows every reload.
    pub fn new(id: u64, slot: RouteSlot) -> Session {
        let route = slot.load();
        let config = route.pool.config();
        let limits = config.limits;
        let dialect = if config.redis {
            Dialect::Redis
        } else {
            Dialect::Memcache
        };
        let (authenticated, login) = super::local::initial_login(config);
        Session {
            client: Client {
                id,
                authenticated,
                name: None,
                quitting: false,
                resp3: false,
                transaction: None,
                fence: false,
                blocked: false,
                kept: Rc::default(),
                pubsub: None,
                login,
                auth_failures: 0,
            },
            socket: None,
            route: RouteCache::new(slot),
            limits,
            dialect,
        }
    }

    /// Lets the backend connection answering a lone awaited request write its reply straight
    /// to `socket`, the client's (see [`crate::backend::reply`]): the session's halves must
    /// be of the same stream ([`Shared`] ones, or a ring stream's, `crate::uring::Stream`).
    pub fn write_through(mut self, socket: Rc<dyn TryWrite>) -> Session {
        self.socket = Some(socket);
        self
    }

    /// Serves the client until it closes, sends `QUIT`, sends a malformed frame, or shutdown
    /// starts; in-flight requests are answered first in every case but a broken connection
    /// and a client past `client_output_hard_limit`.
    pub async fn run<R, W>(mut self, rd: R, mut wr: W, closing: &Closing)
    where
        R: SocketRead,
        W: ClientWrite,
    {
        let mut rd = ArmedReader::new(rd);
        let mut input = BytesMut::with_capacity(INITIAL_READ_BUFFER);
        let mut output = BytesMut::new();
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut backlog = Backlog::default();
        // Reply bytes already in behind the oldest one awaited, counted while the client's
        // socket is full or the pipeline is deep (see [`SCAN_DEPTH`]).
        let mut held_behind = 0;
        let mut decoder = Decoder::new(self.dialect, &self.limits);
        let max_pipeline = self.limits.max_pipeline.max(1);
        let soft_limit = self.limits.client_output_limit;
        let hard_limit = self.limits.client_output_hard_limit;
        let mut reading = true;
        // Set when the client half-closed: no more reads, but the requests already read (kept
        // back by a fence or a limit) are still decoded and answered.
        let mut draining = false;
        // Set when the client switched protocol (`HELLO`): its next requests go over other
        // backend connections, so they wait until every reply asked before the switch is in;
        // otherwise a read could overtake the same client's write.
        let mut fenced = false;
        // Set while a blocking request is awaited: the client's end of stream is watched for.
        let mut blocked = false;
        // Counted on the pool the client connected to, even if a reload replaces it.
        let pool = Arc::clone(&self.route.load().pool);
        let metrics = pool.metrics();
        metrics.client_connections.inc();
        metrics.client_connections_total.inc();
        // Request latency, arrival to reply ready: every request decoded from a read arrived
        // when that read returned (one clock reading per read, one per batch of replies).
        let mut latency = metrics.latency();
        let through = (self.socket.take()).map(|socket| {
            Rc::new(Through {
                socket,
                arrived: Cell::new(None),
                fired: Cell::new(false),
                latency: latency.histogram(),
            })
        });
        let mut arrived = Tick::now();
        let mut registered = None;
        // Whether the decoding below stopped for want of input (rather than at a limit).
        let mut decoded_all;
        let may_decode = |reading: bool, fenced: bool, in_flight: usize, held: usize| {
            reading && !fenced && in_flight < max_pipeline && held < soft_limit
        };
        loop {
            fenced &= !pending.is_empty();
            blocked &= fenced;
            if backlog.is_empty() && pending.len() <= SCAN_DEPTH {
                held_behind = 0;
            }
            decoded_all = false;
            while may_decode(
                reading || draining,
                fenced,
                pending.len(),
                backlog.bytes + held_behind,
            ) {
                // Both decoders make nothing of nothing (but a request they kept waiting):
                // checked here, as the session asks after every read and reply.
                if input.is_empty() && !decoder.has_waiting() {
                    decoded_all = true;
                    break;
                }
                let resp3 = self.client.resp3;
                let idle = pending.is_empty();
                match self.decode(&mut decoder, &mut input, idle) {
                    Decoded::More => {
                        decoded_all = true;
                        break;
                    }
                    Decoded::Request(reply) => {
                        // A blocking command waits as long as its client asked: not latency.
                        if self.client.blocked {
                            latency.unmeasured();
                        } else {
                            latency.arrived(arrived);
                        }
                        pending.push_back(reply);
                    }
                    Decoded::Silent => {}
                    Decoded::Wait => self.client.fence = true,
                    Decoded::Fatal(reply) => {
                        metrics.client_err.inc();
                        tracing::debug!(
                            client = self.client.id,
                            "closing client after malformed request"
                        );
                        latency.arrived(arrived);
                        pending.push_back(Pending::Ready(reply));
                        reading = false;
                    }
                }
                fenced = self.client.resp3 != resp3 || std::mem::take(&mut self.client.fence);
                blocked |= std::mem::take(&mut self.client.blocked);
                if self.client.quitting {
                    reading = false;
                }
            }
            if blocked && draining {
                // A client gone (half-closed) before its command blocked: Redis frees a
                // blocked client whose connection ended, and so does Keyway.
                metrics.client_connections.dec();
                return;
            }
            // A reply ready alone is written as it is; several are gathered into `output`.
            // Behind replies the socket has not taken yet, they queue up in the backlog.
            let mut single: Option<Bytes> = None;
            let mut now = None;
            loop {
                let bytes = match pending.front_mut().and_then(Pending::try_take) {
                    Some(bytes) => {
                        pending.pop_front();
                        if through.as_ref().is_some_and(|t| t.fired.take()) {
                            // Counted when it came through (see the arming below).
                            latency.skip();
                        } else {
                            latency.replied(*now.get_or_insert_with(Tick::now));
                        }
                        // Counted anew at the next wait: it may have been the one just taken.
                        held_behind = 0;
                        bytes
                    }
                    // Between two replies: what the client's subscriptions delivered.
                    None => match self.client.pubsub.as_mut().map(|p| p.step()) {
                        Some(Step::Message(bytes)) => bytes,
                        Some(Step::Progress) => continue,
                        Some(Step::Failed(reason)) => {
                            tracing::info!(client = self.client.id, %reason, "closing subscriber");
                            metrics.client_err.inc();
                            metrics.client_connections.dec();
                            return;
                        }
                        Some(Step::Idle) | None => break,
                    },
                };
                if !backlog.is_empty() {
                    backlog.push(bytes);
                    continue;
                }
                if single.is_none() && output.is_empty() {
                    single = Some(bytes);
                    continue;
                }
                if let Some(first) = single.take() {
                    output.extend_from_slice(&first);
                }
                output.extend_from_slice(&bytes);
            }
            // Counted before the client can see the replies (a no-op when none was taken).
            latency.flush();
            let ready = single.as_deref().unwrap_or(&output);
            if !ready.is_empty() {
                // Straight away when the socket takes it all (the usual case); what it does
                // not take waits in the backlog, written as the socket drains.
                let written = match wr.try_write(ready) {
                    Ok(n) => n,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(_) => {
                        metrics.client_err.inc();
                        metrics.client_connections.dec();
                        return;
                    }
                };
                if written < ready.len() {
                    let rest = match single {
                        Some(bytes) => bytes.slice(written..),
                        None => output.split().freeze().slice(written..),
                    };
                    backlog.push(rest);
                }
                output.clear();
                continue;
            }
            if !reading && (!draining || decoded_all) && pending.is_empty() && backlog.is_empty() {
                break;
            }
            if input.capacity() - input.len() < MIN_SPARE {
                input.reserve(input.len().max(READ_CHUNK));
            }
            let pressed = !backlog.is_empty() || pending.len() > SCAN_DEPTH;
            // A lone reply awaited, nothing else in line for the socket, and nothing for the
            // session to do once the reply is out: the connection delivering it writes it to
            // the client itself, and this session sleeps until the client sends more.
            let armed = match (&through, pending.front()) {
                (Some(through), Some(Pending::Backend(receiver, _)))
                    if pending.len() == 1
                        && backlog.is_empty()
                        && reading
                        && !draining
                        && decoded_all
                        && self.client.pubsub.is_none() =>
                {
                    through.arrived.set(latency.oldest());
                    receiver.arm(Rc::clone(through) as Rc<dyn WriteThrough>);
                    true
                }
                _ => false,
            };
            let woke = std::future::poll_fn(|cx| {
                if let Some(front) = pending.front_mut() {
                    if front.poll_ready(cx).is_ready() {
                        let gone = matches!(front, Pending::Ready(rest) if rest.is_empty());
                        if !(armed && gone && through.as_ref().is_some_and(|t| t.fired.take())) {
                            return Poll::Ready(Woke::Reply);
                        }
                        // Written through whole while the session slept: done with, here.
                        pending.pop_front();
                        latency.skip();
                    }
                }
                if !backlog.is_empty() {
                    if let Poll::Ready(written) = backlog.poll_write(&mut wr, cx) {
                        return Poll::Ready(Woke::Wrote(written));
                    }
                }
                if wr.needs_flush() {
                    if let Poll::Ready(Err(error)) = Pin::new(&mut wr).poll_flush(cx) {
                        return Poll::Ready(Woke::Wrote(Err(error)));
                    }
                }
                if pressed {
                    // Replies arriving behind the oldest one count too, or they would pile
                    // up unbounded in their reply cells while it is awaited.
                    held_behind = pending.iter_mut().skip(1).map(|p| p.poll_held(cx)).sum();
                }
                // So do messages the client's subscriptions delivered.
                let messages = self.client.pubsub.as_ref().map_or(0, |p| p.held());
                if (pressed || messages > 0) && backlog.bytes + held_behind + messages > hard_limit
                {
                    return Poll::Ready(Woke::Overflow);
                }
                if let Some(pubsub) = self.client.pubsub.as_mut() {
                    if pubsub.poll(cx).is_ready() {
                        return Poll::Ready(Woke::Reply);
                    }
                }
                let fenced = fenced && !pending.is_empty();
                let held = backlog.bytes + held_behind;
                if may_decode(reading || draining, fenced, pending.len(), held) {
                    // What stopped the decoding has passed: requests may wait in the input.
                    if !decoded_all {
                        return Poll::Ready(Woke::Decode);
                    }
                    if reading {
                        if let Poll::Ready(read) = rd.poll_read(cx, &mut input) {
                            return Poll::Ready(Woke::Read(read));
                        }
                    }
                }
                if blocked && reading && input.len() < BLOCKED_READ_LIMIT {
                    // Only to see the client go; what it sends meanwhile waits in the input.
                    if let Poll::Ready(read) = rd.poll_read(cx, &mut input) {
                        return Poll::Ready(Woke::Read(read));
                    }
                }
                if reading
                    && closing
                        .poll_closed(self.client.id, &mut registered, cx)
                        .is_ready()
                {
                    return Poll::Ready(Woke::Closing);
                }
                Poll::Pending
            })
            .await;
            if armed {
                // Awake, the session may write again: the reply (if still awaited) comes to it.
                if let Some(Pending::Backend(receiver, _)) = pending.front() {
                    receiver.disarm();
                }
            }
            match woke {
                Woke::Reply => {
                    // More replies are on their way (a pipeline): let the backend connections
                    // woken in this same turn deliver theirs first, so that one write carries
                    // them all (a quarter fewer writes at -P 16 over four backends).
                    if pending.len() > 1 {
                        tokio::task::yield_now().await;
                    }
                }
                Woke::Read(Ok(n)) if n > 0 => arrived = Tick::now(),
                Woke::Decode => {}
                Woke::Read(_) if blocked => {
                    // Redis drops a blocked client that went away: so does Keyway, closing
                    // its dedicated connection (the backend sees it go).
                    metrics.client_eof.inc();
                    metrics.client_connections.dec();
                    return;
                }
                Woke::Read(read) => {
                    metrics.client_eof.inc();
                    draining = matches!(read, Ok(0)) && !self.client.quitting;
                    reading = false;
                }
                Woke::Closing => reading = false,
                Woke::Wrote(Ok(n)) if n > 0 => backlog.advance(n),
                Woke::Wrote(_) => {
                    metrics.client_err.inc();
                    metrics.client_connections.dec();
                    return;
                }
                Woke::Overflow => {
                    tracing::info!(
                        client = self.client.id,
                        held = backlog.bytes + held_behind,
                        limit = hard_limit,
                        "closing client: replies held past client_output_hard_limit"
                    );
                    metrics.client_output_closed.inc();
                    metrics.client_connections.dec();
                    return;
                }
            }
        }
        metrics.client_connections.dec();
        let _ = wr.shutdown().await;
    }

    /// Takes the next request off the input and starts its reply, on the pool's route as it
    /// is now.
    fn decode(&mut self, decoder: &mut Decoder, input: &mut BytesMut, idle: bool) -> Decoded {
        let (route, slot) = self.route.load_with_slot();
        let mut handler = Handler {
            client: &mut self.client,
            route,
            slot,
            limits: &self.limits,
            dialect: self.dialect,
            read: false,
            idle,
        };
        match decoder {
            Decoder::Resp(resp) => resp.decode(input, &mut handler),
            Decoder::Memcache(memcache) => memcache.decode(input, &mut handler),
        }
    }
}

/// A client socket's write half: written to with `try_write` first, then polled.
pub trait ClientWrite: SocketWrite + TryWrite {}

impl<W: SocketWrite + TryWrite> ClientWrite for W {}

impl TryWrite for tokio::net::tcp::WriteHalf<'_> {
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        self.as_ref().try_write(bytes)
    }
}

impl TryWrite for tokio::net::unix::WriteHalf<'_> {
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        self.as_ref().try_write(bytes)
    }
}

impl<S: Plain> TryWrite for Shared<S> {
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        self.0.try_write(bytes)
    }
}

/// The client's socket as its awaited reply's [`WriteThrough`].
struct Through {
    socket: Rc<dyn TryWrite>,
    /// When the armed reply's request arrived, if it is measured.
    arrived: Cell<Option<Tick>>,
    /// Set when the armed reply came through: its latency is counted, and the session skips it.
    fired: Cell<bool>,
    /// The pool's request latency histogram.
    latency: Histogram,
}

impl WriteThrough for Through {
    fn reply_ready(&self, reply: Option<&[u8]>, now: Tick) -> usize {
        self.fired.set(true);
        // Counted before the client can see the reply, as the session counts its own.
        if let Some(at) = self.arrived.take() {
            (self.latency).observe(now.seconds_since(at));
        }
        // What the socket does not take (or a write error) goes back to the session.
        reply.map_or(0, |bytes| self.socket.try_write(bytes).unwrap_or(0))
    }
}

impl Handler<'_> {
    /// Where `key` goes, or the error reply to give instead.
    pub(super) fn route(&self, key: &[u8]) -> Result<Place, Bytes> {
        if self.dialect == Dialect::Redis && key.len() > self.limits.max_key_bytes {
            return Err(reply::error("ERR key too long"));
        }
        self.route.pool.route(key).map_err(|error| {
            self.route.pool.metrics().forward_error.inc();
            backend_error(&error, self.dialect)
        })
    }

    /// Counts the sub-requests of a split request (nutcracker's `fragments`).
    pub(super) fn fragments(&self, parts: usize) {
        self.route.pool.metrics().fragments.inc_by(parts as u64);
    }

    /// Sends `frame` to `place`: a backend, or a cluster slot (following redirects).
    pub(super) fn send(&self, place: Place, frame: Bytes, expect: Expect) -> Pending {
        match place {
            _ if self.client.transaction.is_some() => {
                // A client pinned to a shard by `WATCH` talks to it over its own connection.
                match self
                    .client
                    .transaction
                    .as_ref()
                    .and_then(|tx| tx.conn_for(place))
                {
                    Some(conn) => {
                        Pending::Backend(conn.send(frame, expect, Patience::Timeout), self.dialect)
                    }
                    None => self.send_shared(place, frame, expect),
                }
            }
            _ => self.send_shared(place, frame, expect),
        }
    }

    /// [`Handler::send`] over the shared connections.
    fn send_shared(&self, place: Place, frame: Bytes, expect: Expect) -> Pending {
        match place {
            Place::Shard(shard) => {
                let client = self.client.id;
                let receiver =
                    (self.route.backends).send(shard, client, frame, expect, self.client.resp3);
                Pending::Backend(receiver, self.dialect)
            }
            Place::Slot(slot) => Pending::Cluster(Box::new(ClusterRequest::start(
                Rc::clone(self.route),
                self.slot.clone(),
                frame,
                slot,
                self.client.id,
                self.client.resp3,
                self.read,
            ))),
        }
    }
}

impl Pending {
    /// The reply, if it is complete; never waits.
    pub(super) fn try_take(&mut self) -> Option<Bytes> {
        match self {
            Pending::Ready(bytes) => Some(std::mem::take(bytes)),
            Pending::Backend(receiver, dialect) => match receiver.try_recv() {
                Ok(outcome) => Some(outcome_reply(outcome, *dialect)),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Closed) => Some(backend_error(&backend::Error::Closed, *dialect)),
            },
            Pending::Cluster(request) => request.try_take(),
            Pending::ReadThrough(request) => request.try_take(),
            Pending::MoveFirst(write) => write.try_take(),
            Pending::Fanout(fanout) => {
                for part in &mut fanout.parts {
                    let bytes = part.try_take()?;
                    *part = Pending::Ready(bytes);
                }
                let replies: SmallVec<[Bytes; 8]> = fanout
                    .parts
                    .iter_mut()
                    .filter_map(Pending::try_take)
                    .collect();
                Some(match &fanout.plan {
                    Plan::Resp(plan) => fanout::merge(plan, &replies),
                    Plan::Keyspace(plan) => keyspace::merge(plan, &replies),
                    Plan::Memcache(plan) => memcache::fanout::merge(plan, &replies),
                    Plan::First => replies.into_iter().next().unwrap_or_default(),
                    Plan::Deleted { keys } => super::migration::merge_deleted(*keys, &replies),
                })
            }
            Pending::Filtered(inner, policy) => {
                let bytes = inner.try_take()?;
                Some(if policy.forwards(&bytes) {
                    bytes
                } else {
                    Bytes::new()
                })
            }
            Pending::Held(held) => held.try_take(),
            Pending::Subscribed(confirmation) => confirmation.take(),
            Pending::Behind(behind) => {
                let (barrier, reply) = &mut **behind;
                if !barrier.is_ready() {
                    return None;
                }
                let bytes = reply.try_take()?;
                barrier.take();
                Some(bytes)
            }
        }
    }

    /// The bytes of this reply that have arrived (all of it, or a split request's parts in so
    /// far), taking in what is ready; the task is woken when a part still awaited arrives.
    pub(super) fn poll_held(&mut self, cx: &mut Context<'_>) -> usize {
        match self {
            Pending::Ready(bytes) => bytes.len(),
            Pending::Backend(..) => match self.poll_ready(cx) {
                Poll::Ready(()) => self.poll_held(cx),
                Poll::Pending => 0,
            },
            Pending::Cluster(request) => match request.poll_ready(cx) {
                Poll::Ready(()) => match request.try_take() {
                    Some(bytes) => {
                        *self = Pending::Ready(bytes);
                        self.poll_held(cx)
                    }
                    None => 0,
                },
                Poll::Pending => 0,
            },
            Pending::ReadThrough(request) => match request.poll_ready(cx) {
                Poll::Ready(()) => match request.try_take() {
                    Some(bytes) => {
                        *self = Pending::Ready(bytes);
                        self.poll_held(cx)
                    }
                    None => 0,
                },
                Poll::Pending => 0,
            },
            Pending::MoveFirst(write) => write.poll_held(cx),
            Pending::Fanout(fanout) => fanout.parts.iter_mut().map(|p| p.poll_held(cx)).sum(),
            Pending::Filtered(inner, _) => inner.poll_held(cx),
            Pending::Held(held) => held.poll_held(cx),
            Pending::Subscribed(confirmation) if confirmation.is_ready() => confirmation.len(),
            Pending::Subscribed(_) => 0,
            Pending::Behind(behind) => behind.1.poll_held(cx),
        }
    }

    /// Whether the reply is complete; if not, the task is woken when the part it waits for
    /// arrives.
    pub(super) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Pending::Ready(_) => Poll::Ready(()),
            Pending::Backend(receiver, dialect) => match Pin::new(receiver).poll(cx) {
                Poll::Ready(outcome) => {
                    let outcome = outcome.unwrap_or(Err(backend::Error::Closed));
                    *self = Pending::Ready(outcome_reply(outcome, *dialect));
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            },
            Pending::Cluster(request) => request.poll_ready(cx),
            Pending::ReadThrough(request) => request.poll_ready(cx),
            Pending::MoveFirst(write) => write.poll_ready(cx),
            Pending::Fanout(fanout) => {
                for part in &mut fanout.parts {
                    if part.poll_ready(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                Poll::Ready(())
            }
            Pending::Filtered(inner, _) => inner.poll_ready(cx),
            Pending::Held(held) => held.poll_ready(cx),
            // Its confirmations come through the client's subscriptions, polled with it.
            Pending::Subscribed(confirmation) => {
                if confirmation.is_ready() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
            Pending::Behind(behind) => {
                let (barrier, reply) = &mut **behind;
                match reply.poll_ready(cx) {
                    Poll::Ready(()) if barrier.is_ready() => Poll::Ready(()),
                    _ => Poll::Pending,
                }
            }
        }
    }
}

/// What ended a session's wait.
enum Woke {
    /// The oldest reply is complete.
    Reply,
    /// The client socket was read: bytes, 0 at end of stream, or an error.
    Read(io::Result<usize>),
    /// Shutdown started.
    Closing,
    /// The input may hold requests that a limit kept from being decoded, and it no longer does.
    Decode,
    /// The backlog was written to: bytes taken, 0 if the socket took none, or an error.
    Wrote(io::Result<usize>),
    /// The client holds more reply bytes than `client_output_hard_limit`.
    Overflow,
}

/// Past this many requests in flight, replies that arrive behind the oldest one awaited are
/// counted towards the client's output limits even while the client keeps up. Counting them
/// means polling every pending reply on each wake-up, and being woken by each of them, so
/// short pipelines (the common case, which cannot hold much) are spared it.
const SCAN_DEPTH: usize = 64;

/// Input read from a blocked client, only to see it go, before Keyway stops reading it.
const BLOCKED_READ_LIMIT: usize = 64 * 1024;

/// Most replies handed to one vectored write of the backlog.
const MAX_IOV: usize = 64;

/// Replies the client's socket has not taken yet, oldest first: they wait here, uncopied,
/// while the session goes on reading (below `client_output_limit`), and count towards the
/// client's output limits.
#[derive(Default)]
struct Backlog {
    replies: VecDeque<Bytes>,
    /// Their total length.
    bytes: usize,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    fn push(&mut self, reply: Bytes) {
        if !reply.is_empty() {
            self.bytes += reply.len();
            self.replies.push_back(reply);
        }
    }

    /// Writes from the oldest reply on, as much as the socket takes in one call.
    fn poll_write<W: ClientWrite>(
        &self,
        wr: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut count = 0;
        for (slice, reply) in slices.iter_mut().zip(&self.replies) {
            *slice = IoSlice::new(reply);
            count += 1;
        }
        Pin::new(wr).poll_write_vectored(cx, slices.get(..count).unwrap_or_default())
    }

    /// Drops the first `n` bytes, which the socket took.
    fn advance(&mut self, mut n: usize) {
        self.bytes = self.bytes.saturating_sub(n);
        while n > 0 {
            let Some(front) = self.replies.front_mut() else {
                break;
            };
            if n < front.len() {
                front.advance(n);
                break;
            }
            n -= front.len();
            self.replies.pop_front();
        }
    }
}

fn outcome_reply(outcome: Outcome, dialect: Dialect) -> Bytes {
    outcome.unwrap_or_else(|error| backend_error(&error, dialect))
}

/// A backend failure in the client's protocol: `-ERR ...` or `SERVER_ERROR ...`.
pub(super) fn backend_error(error: &backend::Error, dialect: Dialect) -> Bytes {
    match dialect {
        Dialect::Redis => reply::error(&format!("ERR {error}")),
        Dialect::Memcache => memcache::reply::server_error(&error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::task::Waker;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWrite, DuplexStream, WriteHalf};
    use tokio::task::LocalSet;

    use super::*;
    use crate::backend::connection;
    use crate::backend::pool::Pool;
    use crate::backend::{BackendPool, Job};
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::protocol::resp::Request;

    /// The session's end of an in-memory client connection.
    struct Writer(RefCell<WriteHalf<DuplexStream>>);

    impl AsyncWrite for Writer {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(self.get_mut().0.get_mut()).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(self.get_mut().0.get_mut()).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(self.get_mut().0.get_mut()).poll_shutdown(cx)
        }
    }

    impl SocketWrite for Writer {}

    impl TryWrite for Writer {
        fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
            let mut cx = Context::from_waker(Waker::noop());
            match Pin::new(&mut *self.0.borrow_mut()).poll_write(&mut cx, bytes) {
                Poll::Ready(written) => written,
                Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    type Jobs = Box<dyn FnMut() -> Option<Job>>;

    /// A session on a Redis pool of `shards` backends whose connections the test plays, over
    /// an in-memory client connection of `capacity` bytes each way.
    struct Harness {
        pool: Arc<Pool>,
        client: DuplexStream,
        /// Per shard: the RESP2 connection's jobs, then the RESP3 one's.
        resp2: Vec<Jobs>,
        resp3: Vec<Jobs>,
    }

    impl Harness {
        fn start(shards: usize, options: &str, capacity: usize) -> Harness {
            let servers: String = (0..shards)
                .map(|i| format!("   - 127.0.0.1:{}:1 s{i}\n", 7000 + i))
                .collect();
            let yaml = format!(
                "alpha:\n  listen: 127.0.0.1:22121\n  redis: true\n{options}  servers:\n{servers}"
            );
            let config = Config::parse(&yaml).unwrap().pools.remove(0);
            let pool = Arc::new(Pool::new(config, &Metrics::new(), None));
            let (mut resp2, mut resp3) = (Vec::new(), Vec::new());
            let (mut handles2, mut handles3) = (Vec::new(), Vec::new());
            for _ in 0..shards {
                let (handle, jobs) = connection::detached();
                handles2.push(vec![handle]);
                resp2.push(Box::new(jobs) as Jobs);
                let (handle, jobs) = connection::detached();
                handles3.push(vec![handle]);
                resp3.push(Box::new(jobs) as Jobs);
            }
            let route = Route {
                pool: Arc::clone(&pool),
                backends: BackendPool::from_handles(&pool, handles2, handles3),
            };
            let session = Session::new(1, RouteSlot::for_test(route));
            let (client, server) = tokio::io::duplex(capacity);
            let (rd, wr) = tokio::io::split(server);
            tokio::task::spawn_local(async move {
                let closing = Closing::default();
                session.run(rd, Writer(RefCell::new(wr)), &closing).await;
            });
            Harness {
                pool,
                client,
                resp2,
                resp3,
            }
        }

        /// A key that the pool routes to `shard`.
        fn key_on(&self, shard: usize, skip: usize) -> String {
            (0..10_000)
                .map(|i| format!("key:{i}"))
                .filter(|key| self.pool.route(key.as_bytes()) == Ok(Place::Shard(shard)))
                .nth(skip)
                .unwrap()
        }

        async fn send(&mut self, args: &[&[&str]]) {
            let mut bytes = Vec::new();
            for command in args {
                bytes.extend_from_slice(format!("*{}\r\n", command.len()).as_bytes());
                for arg in *command {
                    bytes.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
                }
            }
            self.client.write_all(&bytes).await.unwrap();
        }

        /// The jobs queued on a connection so far.
        fn jobs(jobs: &mut Jobs) -> Vec<Job> {
            std::iter::from_fn(jobs).collect()
        }

        /// What the client received within a (paused, so instant) second.
        async fn received(&mut self) -> Vec<u8> {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(Ok(n)) =
                crate::timer::timeout(Duration::from_secs(1), self.client.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            got
        }
    }

    /// Lets every task run until all wait (time is paused: it moves only when all are idle).
    async fn settle() {
        crate::timer::sleep(Duration::from_millis(1)).await;
    }

    fn answer(job: Job, reply: &str) {
        job.reply.send(Ok(Bytes::copy_from_slice(reply.as_bytes())));
    }

    #[tokio::test(start_paused = true)]
    async fn pipelined_replies_keep_request_order_when_shards_answer_out_of_order() {
        LocalSet::new()
            .run_until(async {
                let mut h = Harness::start(2, "", 64 * 1024);
                let (a0, a1) = (h.key_on(0, 0), h.key_on(0, 1));
                let (b0, b1) = (h.key_on(1, 0), h.key_on(1, 1));
                h.send(&[
                    &["GET", &a0],
                    &["GET", &b0],
                    &["GET", &a1],
                    &["GET", &b1],
                    &["PING"],
                ])
                .await;
                settle().await;
                let on_a = Harness::jobs(&mut h.resp2[0]);
                let on_b = Harness::jobs(&mut h.resp2[1]);
                assert_eq!((on_a.len(), on_b.len()), (2, 2));
                // The second shard answers first: nothing may be written before the first reply.
                for (job, reply) in on_b.into_iter().zip(["$2\r\nb0\r\n", "$2\r\nb1\r\n"]) {
                    answer(job, reply);
                }
                assert_eq!(h.received().await, b"");
                for (job, reply) in on_a.into_iter().zip(["$2\r\na0\r\n", "$2\r\na1\r\n"]) {
                    answer(job, reply);
                }
                assert_eq!(
                    String::from_utf8(h.received().await).unwrap(),
                    "$2\r\na0\r\n$2\r\nb0\r\n$2\r\na1\r\n$2\r\nb1\r\n+PONG\r\n"
                );
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn keyspace_requests_ask_every_shard_and_reply_in_request_order() {
        LocalSet::new()
            .run_until(async {
                let mut h = Harness::start(2, "", 64 * 1024);
                let a = h.key_on(0, 0);
                h.send(&[
                    &["GET", &a],
                    &["DBSIZE"],
                    &["SCAN", "0", "COUNT", "5"],
                    &["PING"],
                ])
                .await;
                settle().await;
                let on_0 = Harness::jobs(&mut h.resp2[0]);
                let on_1 = Harness::jobs(&mut h.resp2[1]);
                let frames =
                    |jobs: &[Job]| -> Vec<Bytes> { jobs.iter().map(|j| j.frame.clone()).collect() };
                assert_eq!(
                    frames(&on_0),
                    [
                        Request::from_args([&b"GET"[..], a.as_bytes()]).into_frame(),
                        Request::from_args([&b"DBSIZE"[..]]).into_frame(),
                        Request::from_args([&b"SCAN"[..], b"0", b"COUNT", b"5"]).into_frame(),
                    ]
                );
                assert_eq!(
                    frames(&on_1),
                    [Request::from_args([&b"DBSIZE"[..]]).into_frame()]
                );
                // The second shard answers first; nothing goes out before the GET's reply.
                for job in on_1 {
                    answer(job, ":3\r\n");
                }
                assert_eq!(h.received().await, b"");
                for (job, reply) in on_0.into_iter().zip([
                    "$1\r\nv\r\n",
                    ":4\r\n",
                    "*2\r\n$1\r\n9\r\n*1\r\n$1\r\nk\r\n",
                ]) {
                    answer(job, reply);
                }
                // DBSIZE summed; SCAN's cursor is shard 0's 9, as 9 * 2 shards + 0.
                assert_eq!(
                    String::from_utf8(h.received().await).unwrap(),
                    "$1\r\nv\r\n:7\r\n*2\r\n$2\r\n18\r\n*1\r\n$1\r\nk\r\n+PONG\r\n"
                );
                // The cursor leads to shard 0 again, from 9; then shard 1 from its start.
                h.send(&[&["SCAN", "18"]]).await;
                settle().await;
                let next = Harness::jobs(&mut h.resp2[0]);
                assert_eq!(
                    frames(&next),
                    [Request::from_args([&b"SCAN"[..], b"9"]).into_frame()]
                );
                for job in next {
                    answer(job, "*2\r\n$1\r\n0\r\n*0\r\n");
                }
                assert_eq!(h.received().await, b"*2\r\n$1\r\n1\r\n*0\r\n");
                h.send(&[&["SCAN", "1"]]).await;
                settle().await;
                let last = Harness::jobs(&mut h.resp2[1]);
                assert_eq!(
                    frames(&last),
                    [Request::from_args([&b"SCAN"[..], b"0"]).into_frame()]
                );
                for job in last {
                    answer(job, "*2\r\n$1\r\n0\r\n*0\r\n");
                }
                assert_eq!(h.received().await, b"*2\r\n$1\r\n0\r\n*0\r\n");
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_after_hello_waits_until_the_replies_before_it_are_in() {
        LocalSet::new()
            .run_until(async {
                let mut h = Harness::start(1, "", 64 * 1024);
                h.send(&[&["SET", "k", "v"], &["HELLO", "3"], &["GET", "k"]])
                    .await;
                settle().await;
                let set = Harness::jobs(&mut h.resp2[0]);
                assert_eq!(set.len(), 1);
                // The GET goes over the RESP3 connection: not before the SET is answered.
                assert_eq!(Harness::jobs(&mut h.resp3[0]).len(), 0);
                for job in set {
                    answer(job, "+OK\r\n");
                }
                settle().await;
                let get = Harness::jobs(&mut h.resp3[0]);
                assert_eq!(get.len(), 1);
                for job in get {
                    answer(job, "$1\r\nv\r\n");
                }
                let got = String::from_utf8(h.received().await).unwrap();
                assert!(got.starts_with("+OK\r\n%7\r\n"), "{got:?}");
                assert!(
                    got.ends_with("$7\r\nmodules\r\n*0\r\n$1\r\nv\r\n"),
                    "{got:?}"
                );
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_read_is_closed_past_the_hard_limit() {
        LocalSet::new()
            .run_until(async {
                let limits = "  client_output_limit: 512\n  client_output_hard_limit: 1024\n";
                let mut h = Harness::start(2, limits, 16 * 1024);
                let (a, b) = (h.key_on(0, 0), h.key_on(1, 0));
                // The first shard's reply never comes; the second shard's pile up behind it, in
                // a pipeline deep enough for them to count.
                h.send(&[&["GET", &a]]).await;
                for _ in 0..SCAN_DEPTH {
                    h.send(&[&["GET", &b]]).await;
                }
                h.send(&[&["PING"]]).await;
                settle().await;
                let _stuck = Harness::jobs(&mut h.resp2[0]);
                let value = format!("${}\r\n{}\r\n", 300, "x".repeat(300));
                for job in Harness::jobs(&mut h.resp2[1]) {
                    answer(job, &value);
                    settle().await;
                }
                // Nothing was written (the head is missing) and the client is closed.
                let got = h.received().await;
                assert_eq!(got, b"");
                let mut rest = [0u8; 16];
                let end = crate::timer::timeout(Duration::from_secs(10), h.client.read(&mut rest));
                assert_eq!(end.await.ok().and_then(Result::ok), Some(0), "still open");
                assert_eq!(h.pool.metrics().client_output_closed.get(), 1);
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_soft_limit_new_requests_wait_until_the_client_reads() {
        LocalSet::new()
            .run_until(async {
                let limits = "  client_output_limit: 512\n";
                let mut h = Harness::start(1, limits, 64);
                h.send(&[&["GET", "big"]]).await;
                settle().await;
                let value = format!("${}\r\n{}\r\n", 1000, "x".repeat(1000));
                for job in Harness::jobs(&mut h.resp2[0]) {
                    answer(job, &value);
                }
                settle().await;
                // The socket took 64 bytes; the rest is held, past the soft limit.
                h.send(&[&["GET", "next"]]).await;
                settle().await;
                assert_eq!(
                    Harness::jobs(&mut h.resp2[0]).len(),
                    0,
                    "read past the limit"
                );
                let mut got = Vec::new();
                let mut buf = [0u8; 256];
                while got.len() < value.len() {
                    let n = h.client.read(&mut buf).await.unwrap();
                    assert!(n > 0, "closed");
                    got.extend_from_slice(&buf[..n]);
                }
                assert_eq!(got, value.as_bytes());
                settle().await;
                let next = Harness::jobs(&mut h.resp2[0]);
                assert_eq!(next.len(), 1, "drained: the next request goes out");
                for job in next {
                    answer(job, "$-1\r\n");
                }
                assert_eq!(h.received().await, b"$-1\r\n");
                assert_eq!(h.pool.metrics().client_output_closed.get(), 0);
            })
            .await;
    }
}
