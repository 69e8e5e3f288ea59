//! Requests that change their connection's state, each on a dedicated backend connection
//! ([`crate::backend::lease`]): blocking commands (the connection is the request's until its
//! reply is in) and transactions (`WATCH`/`MULTI`/`EXEC`, pinned to the shard of their first
//! key, one connection from the pin to the end of the transaction). A connection that ended
//! clean is kept by its client for its next one ([`KeptSlot`]); any other end closes it.
//!
//! Switching a client to a dedicated connection waits until its earlier replies are in, and
//! the requests after a blocking command or a transaction's end wait for its reply, so that a
//! client's requests execute in the order it sent them, as on one Redis.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::cluster::Redirect;
use super::local;
use super::resp::{unsupported, CROSSSLOT};
use super::session::{backend_error, Client, Dialect, Handler, Pending};
use super::worker::Route;
use crate::backend::lease::Dedicated;
use crate::backend::pool::{Backend, Place};
use crate::backend::reply::TryRecvError;
use crate::backend::{self, Expect, Outcome, Patience, ReplyReceiver};
use crate::protocol::resp::command::{BlockTime, Command, Kind, Tx};
use crate::protocol::resp::{reply, Request};

/// Redis's reply to `EXEC` after a command was refused while queueing.
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";
/// Most commands without a key queued (answered `+QUEUED` here) before a transaction's first
/// key says which shard it goes to.
const MAX_UNPINNED: usize = 1024;

/// A client's clean dedicated connection, kept (lease and all) for its next blocking command
/// or transaction: a client that blocks once usually blocks again (a job queue's worker loops
/// on `BZPOPMIN`), and a kept connection spares it a connect and setup each time. Closed when
/// the client goes away, or when its next one is for another backend or protocol.
#[derive(Debug, Default)]
pub(crate) struct KeptSlot(RefCell<Option<Kept>>);

#[derive(Debug)]
struct Kept {
    node: usize,
    resp3: bool,
    conn: Dedicated,
}

impl KeptSlot {
    /// The kept connection, if it goes to backend `node` in protocol `resp3` and is open; any
    /// other one is closed (its lease given back for the new one).
    fn take(&self, node: usize, resp3: bool) -> Option<Dedicated> {
        let kept = self.0.borrow_mut().take()?;
        (kept.node == node && kept.resp3 == resp3 && !kept.conn.is_closed()).then_some(kept.conn)
    }

    /// Keeps `conn`, clean (its last request's reply is in and left no state), unless the
    /// backend has no lease to spare (a kept connection must not be why another client is
    /// refused one while the backend is at its limit).
    fn keep(&self, node: usize, resp3: bool, conn: Dedicated, backend: &Backend) {
        if conn.is_closed() || backend.leased() >= backend.lease_limit() {
            return;
        }
        *self.0.borrow_mut() = Some(Kept { node, resp3, conn });
    }

    /// Closes the kept connection, if any (`RESET`).
    pub(super) fn clear(&self) {
        let kept = self.0.borrow_mut().take();
        drop(kept);
    }
}

/// A client's transaction: the shard it is pinned to, its connection there, and what Redis
/// tracks (inside `MULTI`, a refused command).
#[derive(Debug, Default)]
pub(crate) struct Transaction {
    /// Where the transaction's keys live, once the first one was seen.
    place: Option<Place>,
    /// The dedicated connection to `place`.
    conn: Option<Dedicated>,
    /// The backend it goes to (its index in the pool).
    node: Option<usize>,
    /// The client sent `MULTI`.
    multi: bool,
    /// A command was refused while queueing: `EXEC` answers `-EXECABORT`.
    failed: bool,
    /// Keyless commands queued before the pin (`PING` after `MULTI`), sent once pinned.
    unpinned: Vec<Bytes>,
    /// Their bytes.
    unpinned_bytes: usize,
}

impl Transaction {
    /// Whether its connection ended: the backend's state (watched keys, queued commands) is
    /// gone with it.
    fn is_lost(&self) -> bool {
        self.conn.as_ref().is_some_and(Dedicated::is_closed)
    }

    /// The transaction's connection, when it is pinned to `place`.
    pub(super) fn conn_for(&self, place: Place) -> Option<&Dedicated> {
        self.conn.as_ref().filter(|_| self.place == Some(place))
    }
}

impl Client {
    /// Whether the client is between `MULTI` and `EXEC`/`DISCARD`.
    pub(super) fn in_multi(&self) -> bool {
        self.transaction.as_ref().is_some_and(|tx| tx.multi)
    }

    /// Forgets the client's transaction (`RESET`): its connection closes once the replies
    /// already asked for on it are in, and the backend drops what it queued and watched.
    pub(super) fn end_transaction(&mut self) {
        self.kept.clear();
        if let Some(conn) = self.transaction.take().and_then(|tx| tx.conn) {
            conn.finish();
            self.fence = true;
        }
    }
}

impl Handler<'_> {
    /// An error reply to a request refused before it ran; inside `MULTI` it makes `EXEC`
    /// answer `-EXECABORT`, as Redis does.
    pub(super) fn rejected(&mut self, reply: Bytes) -> Pending {
        if let Some(tx) = self.client.transaction.as_mut().filter(|tx| tx.multi) {
            tx.failed = true;
        }
        Pending::Ready(reply)
    }

    /// The reply when the client's transaction lost its connection (its backend closed it,
    /// failed or timed out): the client is closed after it, as if its Redis had gone away,
    /// so that it reconnects and retries instead of running on without its `WATCH`.
    pub(super) fn lost_transaction(&mut self) -> Option<Pending> {
        if !self
            .client
            .transaction
            .as_ref()
            .is_some_and(|tx| tx.is_lost())
        {
            return None;
        }
        self.client.transaction = None;
        self.client.quitting = true;
        Some(Pending::Ready(reply::error(
            "ERR the transaction's backend connection was lost; closing the connection",
        )))
    }

    /// A blocking command: on a dedicated connection of its own to the shard of its keys,
    /// allowed its own block time plus the pool's `timeout`.
    pub(super) fn blocking(
        &mut self,
        command: &Command,
        request: Request,
    ) -> Result<Pending, Request> {
        let patience = match command.block_time(&request) {
            BlockTime::No => return Ok(self.forward(command, request)),
            BlockTime::For(block) => Patience::Longer(block),
            BlockTime::Forever => Patience::Unbounded,
            // The backend answers at once with Redis's error.
            BlockTime::Invalid => Patience::Timeout,
        };
        let place = match self.place_of(command, &request) {
            Ok(place) => place,
            Err(reply) => return Ok(Pending::Ready(reply)),
        };
        if !self.idle {
            return Err(request);
        }
        let (conn, node) = match self.dedicated(place) {
            Ok(opened) => opened,
            Err(reply) => return Ok(Pending::Ready(reply)),
        };
        let receiver = conn.send(request.frame().clone(), Expect::Resp, patience);
        self.client.fence = true;
        self.client.blocked = true;
        Ok(self.held(receiver, Some((conn, node))))
    }

    /// A reply over a dedicated connection, `kept` (the connection and its backend) open
    /// until it is in and then kept for reuse.
    fn held(&self, receiver: ReplyReceiver, kept: Option<(Dedicated, usize)>) -> Pending {
        Pending::Held(Box::new(Held {
            receiver,
            done: None,
            kept,
            resp3: self.client.resp3,
            cluster: self.route.pool.cluster().is_some(),
            route: Rc::clone(self.route),
            slot: Rc::clone(&self.client.kept),
        }))
    }

    /// A dedicated connection to the backend serving `place` (a clean one this worker kept,
    /// or a new one under a new lease) and the backend's index, or the error reply saying why
    /// not.
    fn dedicated(&self, place: Place) -> Result<(Dedicated, usize), Bytes> {
        let pool = &self.route.pool;
        let node = match place {
            Place::Shard(shard) => Some(shard),
            Place::Slot(slot) => pool
                .cluster()
                .and_then(|cluster| cluster.node_for(slot, false, self.client.id)),
        };
        let Some((node, backend)) = node.and_then(|node| Some((node, pool.backends().get(node)?)))
        else {
            return Err(reply::error("ERR no backend serves the keys' shard"));
        };
        let resp3 = self.client.resp3;
        if let Some(conn) = self.client.kept.take(node, resp3) {
            return Ok((conn, node));
        }
        let lease = backend
            .lease()
            .map_err(|refused| reply::error(&format!("ERR {refused}")))?;
        Ok((lease.connect(resp3), node))
    }

    /// A transaction command, or any command inside `MULTI`.
    pub(super) fn transaction(
        &mut self,
        command: &Command,
        request: Request,
    ) -> Result<Pending, Request> {
        match command.kind {
            Kind::Transaction(Tx::Multi) => Ok(self.multi(&request)),
            Kind::Transaction(Tx::Exec) => self.exec(request),
            Kind::Transaction(Tx::Discard) => Ok(self.discard(&request)),
            Kind::Transaction(Tx::Watch) => self.watch(command, request),
            Kind::Transaction(Tx::Unwatch) if self.client.in_multi() => {
                Ok(self.queue_keyless(request))
            }
            Kind::Transaction(Tx::Unwatch) => Ok(self.unwatch(&request)),
            _ => self.queue(command, request),
        }
    }

    fn multi(&mut self, request: &Request) -> Pending {
        if self.client.in_multi() {
            return Pending::Ready(reply::error("ERR MULTI calls can not be nested"));
        }
        let tx = self.client.transaction.get_or_insert_with(Box::default);
        tx.multi = true;
        if tx.conn.is_some() {
            return self.on_pinned(request.frame().clone());
        }
        Pending::Ready(Bytes::from_static(b"+OK\r\n"))
    }

    fn exec(&mut self, request: Request) -> Result<Pending, Request> {
        let Some(tx) = self.client.transaction.as_mut().filter(|tx| tx.multi) else {
            return Ok(Pending::Ready(reply::error("ERR EXEC without MULTI")));
        };
        if tx.failed {
            // The backend never saw the refused command: it discards what it queued, and
            // the connection closes once the replies to what was queued are in.
            if let Some(conn) = self.client.transaction.take().and_then(|tx| tx.conn) {
                let discard = Request::from_args([&b"DISCARD"[..]]);
                drop(conn.send(discard.into_frame(), Expect::Resp, Patience::Timeout));
                conn.finish();
                self.client.fence = true;
            }
            self.client.transaction = None;
            return Ok(Pending::Ready(reply::error(EXECABORT)));
        }
        if tx.conn.is_none() {
            if tx.unpinned.is_empty() {
                self.client.transaction = None;
                return Ok(Pending::Ready(Bytes::from_static(b"*0\r\n")));
            }
            // Keyless commands only: any shard runs them as Redis would; the empty key's.
            let place = match self.route(b"") {
                Ok(place) => place,
                Err(reply) => {
                    self.client.transaction = None;
                    return Ok(Pending::Ready(reply));
                }
            };
            if !self.idle {
                return Err(request);
            }
            if let Err(reply) = self.pin(place) {
                self.client.transaction = None;
                return Ok(Pending::Ready(reply));
            }
        }
        Ok(self.end(&request))
    }

    fn discard(&mut self, request: &Request) -> Pending {
        if !self.client.in_multi() {
            return Pending::Ready(reply::error("ERR DISCARD without MULTI"));
        }
        // Ends the transaction and its watch, as `UNWATCH` does.
        self.unwatch(request)
    }

    /// Ends the client's transaction state: over its connection when it has one (the reply
    /// comes from the backend), else at once.
    fn unwatch(&mut self, request: &Request) -> Pending {
        if self
            .client
            .transaction
            .as_ref()
            .is_some_and(|tx| tx.conn.is_some())
        {
            return self.end(request);
        }
        self.client.transaction = None;
        Pending::Ready(Bytes::from_static(b"+OK\r\n"))
    }

    /// Sends the transaction's last request (`EXEC`, `DISCARD`, `UNWATCH`) on its connection,
    /// which is clean once the reply is in (kept for reuse then); the client's next requests
    /// wait for it.
    fn end(&mut self, request: &Request) -> Pending {
        let Some(tx) = self.client.transaction.take() else {
            return Pending::Ready(reply::error("ERR no transaction"));
        };
        let (Some(conn), Some(node)) = (tx.conn, tx.node) else {
            return Pending::Ready(reply::error("ERR no transaction connection"));
        };
        let receiver = conn.send(request.frame().clone(), Expect::Resp, Patience::Timeout);
        self.client.fence = true;
        self.held(receiver, Some((conn, node)))
    }

    fn watch(&mut self, command: &Command, request: Request) -> Result<Pending, Request> {
        if self.client.in_multi() {
            return Ok(Pending::Ready(reply::error(
                "ERR WATCH inside MULTI is not allowed",
            )));
        }
        let place = match self.place_of(command, &request) {
            Ok(place) => place,
            Err(reply) => return Ok(Pending::Ready(reply)),
        };
        let pinned = self.client.transaction.as_ref().and_then(|tx| tx.place);
        match pinned {
            Some(pinned) if pinned != place => Ok(Pending::Ready(reply::error(CROSSSLOT))),
            Some(_) => Ok(self.on_pinned(request.frame().clone())),
            None => {
                if !self.idle {
                    return Err(request);
                }
                self.client.transaction.get_or_insert_with(Box::default);
                if let Err(reply) = self.pin(place) {
                    self.client.transaction = None;
                    return Ok(Pending::Ready(reply));
                }
                Ok(self.on_pinned(request.frame().clone()))
            }
        }
    }

    /// A command inside `MULTI`: queued on the transaction's shard (`+QUEUED`), or refused,
    /// which makes `EXEC` answer `-EXECABORT`.
    fn queue(&mut self, command: &Command, request: Request) -> Result<Pending, Request> {
        match command.kind {
            Kind::Local if matches!(command.name, "ping" | "echo") => {
                Ok(self.queue_keyless(request))
            }
            // Run at once inside `MULTI`, as Redis does.
            Kind::Local if matches!(command.name, "quit" | "reset") => Ok(Pending::Ready(
                local::answer(self.client, &self.route.pool, command, &request),
            )),
            Kind::Local | Kind::Subscription(_) | Kind::Keyspace => {
                Ok(self.rejected(reply::error(&format!(
                    "ERR '{}' inside MULTI is not supported by the proxy",
                    command.name
                ))))
            }
            Kind::Unsupported | Kind::Transaction(_) => {
                Ok(self.rejected(unsupported(command.name)))
            }
            Kind::Routed | Kind::Fanout(_) | Kind::Blocking(_) => {
                let place = match self.place_of(command, &request) {
                    Ok(place) => place,
                    Err(reply) => return Ok(self.rejected(reply)),
                };
                let pinned = self.client.transaction.as_ref().and_then(|tx| tx.place);
                match pinned {
                    Some(pinned) if pinned != place => Ok(self.rejected(reply::error(CROSSSLOT))),
                    Some(_) => Ok(self.on_pinned(request.frame().clone())),
                    None => {
                        if !self.idle {
                            return Err(request);
                        }
                        if let Err(reply) = self.pin(place) {
                            return Ok(self.rejected(reply));
                        }
                        Ok(self.on_pinned(request.frame().clone()))
                    }
                }
            }
        }
    }

    /// A keyless command inside `MULTI`: sent if the transaction is pinned, else kept until
    /// it is (Redis would answer `+QUEUED`, and so does Keyway).
    fn queue_keyless(&mut self, request: Request) -> Pending {
        let limit = self.limits.max_request_bytes;
        let Some(tx) = self.client.transaction.as_mut() else {
            return Pending::Ready(reply::error("ERR no transaction"));
        };
        if tx.conn.is_some() {
            return self.on_pinned(request.frame().clone());
        }
        let frame = request.into_frame();
        if tx.unpinned.len() >= MAX_UNPINNED
            || tx.unpinned_bytes.saturating_add(frame.len()) > limit
        {
            return self.rejected(reply::error(
                "ERR too many commands queued before the transaction's first key",
            ));
        }
        tx.unpinned_bytes += frame.len();
        tx.unpinned.push(frame);
        Pending::Ready(Bytes::from_static(b"+QUEUED\r\n"))
    }

    /// Pins the client's transaction to `place`: a dedicated connection there, with `MULTI`
    /// and the commands queued so far sent ahead (they were answered already).
    fn pin(&mut self, place: Place) -> Result<(), Bytes> {
        let (conn, node) = self.dedicated(place)?;
        let Some(tx) = self.client.transaction.as_mut() else {
            return Err(reply::error("ERR no transaction"));
        };
        if tx.multi {
            let multi = Request::from_args([&b"MULTI"[..]]);
            drop(conn.send(multi.frame().clone(), Expect::Resp, Patience::Timeout));
            for frame in tx.unpinned.drain(..) {
                drop(conn.send(frame, Expect::Resp, Patience::Timeout));
            }
            tx.unpinned_bytes = 0;
        }
        tx.place = Some(place);
        tx.conn = Some(conn);
        tx.node = Some(node);
        Ok(())
    }

    /// Sends `frame` on the pinned transaction's connection.
    fn on_pinned(&self, frame: Bytes) -> Pending {
        match self
            .client
            .transaction
            .as_ref()
            .and_then(|tx| tx.conn.as_ref())
        {
            Some(conn) => {
                let receiver = conn.send(frame, Expect::Resp, Patience::Timeout);
                if self.route.pool.cluster().is_some() {
                    self.held(receiver, None)
                } else {
                    Pending::Backend(receiver, Dialect::Redis)
                }
            }
            None => Pending::Ready(reply::error("ERR no transaction connection")),
        }
    }
}

/// A reply over a dedicated connection, which `kept` (if any) keeps open until the reply is
/// in; then the connection is clean (a blocking command answered, a transaction ended) and
/// kept for the worker's next client that needs one. In a cluster pool a redirect becomes
/// `-TRYAGAIN`: the slot moved while the connection was pinned to its node, so the command
/// (or the transaction, which the node aborts) was not run there; the client retries, and
/// Keyway routes the retry on a fresh layout.
pub(crate) struct Held {
    receiver: ReplyReceiver,
    /// The reply, once in.
    done: Option<Bytes>,
    kept: Option<(Dedicated, usize)>,
    /// The connection's protocol.
    resp3: bool,
    cluster: bool,
    route: Rc<Route>,
    /// Where the client keeps its clean connection.
    slot: Rc<KeptSlot>,
}

impl Held {
    /// The reply, once in (see [`Pending::try_take`]).
    pub(super) fn try_take(&mut self) -> Option<Bytes> {
        if self.done.is_none() {
            let outcome = match self.receiver.try_recv() {
                Ok(outcome) => outcome,
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Closed) => Err(backend::Error::Closed),
            };
            self.done = Some(self.finish(outcome));
        }
        self.done.take()
    }

    /// Whether the reply is in; if not, the task is woken when it arrives.
    pub(super) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.done.is_some() {
            return Poll::Ready(());
        }
        match Pin::new(&mut self.receiver).poll(cx) {
            Poll::Ready(outcome) => {
                let outcome = outcome.unwrap_or(Err(backend::Error::Closed));
                self.done = Some(self.finish(outcome));
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The reply's bytes once in, else 0 (see [`Pending::poll_held`]).
    pub(super) fn poll_held(&mut self, cx: &mut Context<'_>) -> usize {
        match self.poll_ready(cx) {
            Poll::Ready(()) => self.done.as_ref().map_or(0, Bytes::len),
            Poll::Pending => 0,
        }
    }

    /// The client's reply for `outcome`; the connection is kept for reuse when clean.
    fn finish(&mut self, outcome: Outcome) -> Bytes {
        let kept = self.kept.take();
        let bytes = match outcome {
            Ok(bytes) => bytes,
            // The connection failed or timed out: it is closing, never reused.
            Err(error) => return backend_error(&error, Dialect::Redis),
        };
        let redirect = match bytes.first() {
            Some(b'-') if self.cluster => Redirect::parse(&bytes, ""),
            _ => None,
        };
        if let Some(Redirect::Moved(_) | Redirect::Ask(_)) = redirect {
            if let Some(cluster) = self.route.pool.cluster() {
                cluster.request_refresh();
            }
            return reply::error("TRYAGAIN the slot moved while its connection was pinned; retry");
        }
        if let Some((conn, node)) = kept {
            if let Some(backend) = self.route.pool.backends().get(node) {
                self.slot.keep(node, self.resp3, conn, backend);
            }
        }
        bytes
    }
}
