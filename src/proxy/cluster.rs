//! One request to a Redis Cluster pool, followed until it has a reply the client may see:
//! `-MOVED` is retried on the named node (and asks for a layout refresh), `-ASK` is sent there
//! after `ASKING`, and `-TRYAGAIN`, `-CLUSTERDOWN` or an unreachable node (a failover under way)
//! are retried on the slot's current owner, with short pauses, for up to the pool's `timeout`
//! ([`DEFAULT_RETRY_WINDOW`] without one). Clients never see a redirect unless the cluster keeps
//! redirecting past `MAX_REDIRECTS`.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Sleep};

use super::session::{backend_error, Dialect};
use super::worker::{Route, RouteSlot};
use crate::backend::connection::Handle;
use crate::backend::reply::TryRecvError;
use crate::backend::{self, Expect, Outcome, ReplyReceiver};
use crate::config::BackendAddr;
use crate::protocol::resp::{reply, Request};

/// Redirects (`MOVED`, `ASK`) followed for one request before its last one is passed on.
const MAX_REDIRECTS: u8 = 5;
/// How long a request is retried while its slot's node is unreachable or the cluster says to
/// try again (a failover or a slot migration under way), when the pool sets no `timeout`.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(5);
/// First and longest pause between such retries.
const RETRY_MIN: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_millis(200);

/// What a cluster node's reply asks of the proxy.
#[derive(Debug, PartialEq, Eq)]
pub enum Redirect {
    /// `-MOVED slot host:port`: the slot lives there now.
    Moved(BackendAddr),
    /// `-ASK slot host:port`: this one request goes there, after `ASKING`.
    Ask(BackendAddr),
    /// `-TRYAGAIN` (keys mid-migration) or `-CLUSTERDOWN` (no quorum or coverage yet): the
    /// request was not executed; retry shortly.
    Retry,
}

impl Redirect {
    /// The redirect `reply` carries, if it is one. An address without a host (`:7001`, from a
    /// node that does not know its own address) takes `host`.
    ///
    /// ```
    /// use keyway::config::BackendAddr;
    /// use keyway::proxy::cluster::Redirect;
    ///
    /// let to = BackendAddr::Tcp { host: "127.0.0.1".into(), port: 7001 };
    /// assert_eq!(Redirect::parse(b"-MOVED 3999 127.0.0.1:7001\r\n", ""), Some(Redirect::Moved(to.clone())));
    /// assert_eq!(Redirect::parse(b"-ASK 3999 :7001\r\n", "127.0.0.1"), Some(Redirect::Ask(to)));
    /// assert_eq!(Redirect::parse(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n", ""), Some(Redirect::Retry));
    /// assert_eq!(Redirect::parse(b"-ERR wrong type\r\n", ""), None);
    /// assert_eq!(Redirect::parse(b"+MOVED 1 a:1\r\n", ""), None);
    /// ```
    pub fn parse(reply: &[u8], host: &str) -> Option<Redirect> {
        let line = reply.strip_prefix(b"-")?;
        let line = line.strip_suffix(b"\r\n").unwrap_or(line);
        if line.starts_with(b"TRYAGAIN") || line.starts_with(b"CLUSTERDOWN") {
            return Some(Redirect::Retry);
        }
        let text = std::str::from_utf8(line).ok()?;
        let mut words = text.split(' ');
        let (kind, _slot, addr) = (words.next()?, words.next()?, words.next()?);
        let (at, port) = addr.rsplit_once(':')?;
        let port = port.parse().ok().filter(|&port| port != 0)?;
        let host = if at.is_empty() { host } else { at };
        if host.is_empty() {
            return None;
        }
        let addr = BackendAddr::Tcp {
            host: host.to_owned(),
            port,
        };
        match kind {
            "MOVED" => Some(Redirect::Moved(addr)),
            "ASK" => Some(Redirect::Ask(addr)),
            _ => None,
        }
    }
}

/// Where the next attempt goes.
enum Destination {
    /// The slot's node as the current layout says.
    Slot,
    /// A node a redirect named; after `ASKING` when `asking`.
    Node(BackendAddr, bool),
}

enum State {
    Waiting(ReplyReceiver),
    /// Paused until the timer fires, then sent to the slot's owner again.
    RetryAt(Pin<Box<Sleep>>),
    Done(Bytes),
}

/// A request to a cluster pool and what became of it so far.
pub struct ClusterRequest {
    /// The route the last attempt went by (node indices are the snapshot's).
    route: Rc<Route>,
    /// Where each attempt takes the pool's current route from: a retry follows the layout
    /// the control plane published meanwhile.
    routes: RouteSlot,
    frame: Bytes,
    slot: u16,
    client: u64,
    resp3: bool,
    read: bool,
    started: Instant,
    redirects: u8,
    retries: u32,
    /// The node the last attempt went to, when it is one of the pool's.
    node: Option<usize>,
    state: State,
}

impl ClusterRequest {
    /// Sends `frame`, whose keys hash to `slot`, for `client` (RESP3 when `resp3`); `read`:
    /// it never writes, so `read_from` may send it to a replica.
    pub fn start(
        route: Rc<Route>,
        routes: RouteSlot,
        frame: Bytes,
        slot: u16,
        client: u64,
        resp3: bool,
        read: bool,
    ) -> ClusterRequest {
        let mut request = ClusterRequest {
            route,
            routes,
            frame,
            slot,
            client,
            resp3,
            read,
            started: Instant::now(),
            redirects: 0,
            retries: 0,
            node: None,
            state: State::Done(Bytes::new()),
        };
        request.send(Destination::Slot);
        request
    }

    /// The final reply, if it is in; never waits (but follows a redirect that arrived).
    pub fn try_take(&mut self) -> Option<Bytes> {
        loop {
            match &mut self.state {
                State::Done(bytes) => return Some(std::mem::take(bytes)),
                State::Waiting(receiver) => match receiver.try_recv() {
                    Ok(outcome) => self.advance(outcome),
                    Err(TryRecvError::Empty) => return None,
                    Err(TryRecvError::Closed) => self.advance(Err(backend::Error::Closed)),
                },
                State::RetryAt(sleep) if sleep.deadline() <= Instant::now() => {
                    self.send(Destination::Slot);
                }
                State::RetryAt(_) => return None,
            }
        }
    }

    /// Whether the final reply is in; if not, the task is woken when the reply or retry it
    /// waits for is due. Every step leaves a consistent state.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.state {
                State::Done(_) => return Poll::Ready(()),
                State::Waiting(receiver) => match Pin::new(receiver).poll(cx) {
                    Poll::Ready(outcome) => {
                        self.advance(outcome.unwrap_or(Err(backend::Error::Closed)));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::RetryAt(sleep) => match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => self.send(Destination::Slot),
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }

    /// Takes in one attempt's outcome: done, or the next attempt under way or scheduled.
    fn advance(&mut self, outcome: Outcome) {
        let pool = &self.route.pool;
        let retryable = self.may_retry();
        match outcome {
            Ok(bytes) => {
                let redirect = match bytes.first() {
                    Some(b'-') => Redirect::parse(&bytes, self.node_host()),
                    _ => None,
                };
                match redirect {
                    Some(Redirect::Moved(addr)) if self.redirects < MAX_REDIRECTS => {
                        self.redirects += 1;
                        pool.metrics().moved.inc();
                        self.refresh();
                        self.send(Destination::Node(addr, false));
                    }
                    Some(Redirect::Ask(addr)) if self.redirects < MAX_REDIRECTS => {
                        self.redirects += 1;
                        pool.metrics().ask.inc();
                        self.send(Destination::Node(addr, true));
                    }
                    Some(Redirect::Retry) if retryable => {
                        self.refresh();
                        self.retry_later();
                    }
                    _ => self.state = State::Done(bytes),
                }
            }
            // Never sent: safe to send again once the cluster has moved the slot elsewhere.
            Err(backend::Error::Connect { .. }) if retryable => {
                self.refresh();
                self.retry_later();
            }
            Err(error) => self.state = State::Done(backend_error(&error, Dialect::Redis)),
        }
    }

    /// Asks the control plane for a fresh layout.
    fn refresh(&self) {
        if let Some(cluster) = self.route.pool.cluster() {
            cluster.request_refresh();
        }
    }

    /// Whether the request is still within its retry window.
    fn may_retry(&self) -> bool {
        let window = self
            .route
            .pool
            .config()
            .timeout
            .unwrap_or(DEFAULT_RETRY_WINDOW);
        self.started.elapsed() < window
    }

    fn retry_later(&mut self) {
        let pause = RETRY_MIN
            .saturating_mul(1 << self.retries.min(8))
            .min(RETRY_MAX);
        self.retries += 1;
        self.state = State::RetryAt(Box::pin(crate::timer::sleep(pause)));
    }

    /// The host of the node the last attempt went to ("" when unknown).
    fn node_host(&self) -> &str {
        let server = self
            .node
            .and_then(|node| self.route.pool.config().servers.get(node));
        match server.map(|server| &server.addr) {
            Some(BackendAddr::Tcp { host, .. }) => host,
            _ => "",
        }
    }

    /// Sends the request to `destination`, on the pool's current snapshot.
    fn send(&mut self, destination: Destination) {
        let current = self.routes.load();
        if !Rc::ptr_eq(&current, &self.route) {
            self.route = current;
        }
        let Some(cluster) = self.route.pool.cluster() else {
            self.state = State::Done(reply::error("ERR not a cluster pool"));
            return;
        };
        let (node, asking) = match destination {
            Destination::Slot => match cluster.node_for(self.slot, self.read, self.client) {
                Some(node) => (Some(node), false),
                None => {
                    cluster.request_refresh();
                    if self.may_retry() {
                        self.retry_later();
                    } else {
                        self.state = State::Done(reply::error(&format!(
                            "CLUSTERDOWN Hash slot {} not served",
                            self.slot
                        )));
                    }
                    return;
                }
            },
            Destination::Node(addr, asking) => match cluster.node(&addr.to_string()) {
                Some(node) => (Some(node), asking),
                None => {
                    // A node the layout does not list yet: reach it directly meanwhile.
                    cluster.request_refresh();
                    let pool = &self.route.pool;
                    self.node = None;
                    self.state = match self.route.backends.stray(pool, &addr, self.resp3) {
                        Some(handle) => State::Waiting(self.dispatch(&handle, asking)),
                        None => State::Done(reply::error(&format!(
                            "ERR too many unknown cluster nodes (redirected to {addr})"
                        ))),
                    };
                    return;
                }
            },
        };
        self.node = node;
        let handle = node.and_then(|node| self.route.backends.node(node, self.client, self.resp3));
        self.state = match handle {
            Some(handle) => State::Waiting(self.dispatch(handle, asking)),
            None => State::Done(reply::error("ERR no connection to the slot's node")),
        };
    }

    /// Queues the frame on `handle`, after `ASKING` when `asking` (its reply is dropped).
    fn dispatch(&self, handle: &Handle, asking: bool) -> ReplyReceiver {
        if asking {
            let asking = Request::from_args([&b"ASKING"[..]]);
            drop(handle.send(asking.frame().clone(), Expect::Resp));
        }
        handle.send(self.frame.clone(), Expect::Resp)
    }
}
