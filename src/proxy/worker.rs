//! Worker threads: each runs a single-threaded runtime owning its client sessions and its own
//! connections to every backend (kept by backend, so a new snapshot of a pool reconnects only
//! the backends that changed), and swaps a pool's [`Route`] whole when the control plane
//! publishes a new snapshot of the pool.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use super::listener::{Accepted, Handoff};
use super::session::Session;
use crate::backend::pool::{serving_workers, Connections, Pool};
use crate::backend::BackendPool;
use crate::security::tls::{self, ListenTls};
use crate::shutdown::{Shutdown, GRACE};
use crate::socket::{Plain, Shared, TryWrite};
use prometheus::IntCounter;

/// What a session uses for a request: the pool's routing snapshot (config, shard map or
/// cluster layout, ejections) and this worker's connections to its backends. Immutable;
/// replaced whole with each snapshot, so a request in flight finishes on the route it started
/// with.
pub struct Route {
    /// The pool's routing snapshot.
    pub pool: Arc<Pool>,
    /// This worker's connections to the pool's backends.
    pub backends: BackendPool,
}

/// A worker's current route for one pool. Only the worker's own thread reads or replaces it,
/// so it is a plain cell with a version that sessions compare once per request.
#[derive(Clone)]
pub struct RouteSlot(Rc<SlotCell>);

struct SlotCell {
    route: RefCell<Rc<Route>>,
    version: Cell<u64>,
}

impl RouteSlot {
    fn new(route: Route) -> RouteSlot {
        RouteSlot(Rc::new(SlotCell {
            route: RefCell::new(Rc::new(route)),
            version: Cell::new(0),
        }))
    }

    /// A slot holding `route`, for session tests.
    #[cfg(test)]
    pub(crate) fn for_test(route: Route) -> RouteSlot {
        RouteSlot::new(route)
    }

    /// The current route.
    pub fn load(&self) -> Rc<Route> {
        Rc::clone(&self.0.route.borrow())
    }

    fn store(&self, route: Route) {
        *self.0.route.borrow_mut() = Rc::new(route);
        self.0.version.set(self.0.version.get().wrapping_add(1));
    }
}

/// A session's copy of its [`RouteSlot`]'s route, refreshed when the slot's version moves.
pub struct RouteCache {
    slot: RouteSlot,
    route: Rc<Route>,
    version: u64,
}

impl RouteCache {
    /// Caches `slot`'s current route.
    pub fn new(slot: RouteSlot) -> RouteCache {
        RouteCache {
            route: slot.load(),
            version: slot.0.version.get(),
            slot,
        }
    }

    /// The slot's current route.
    pub fn load(&mut self) -> &Rc<Route> {
        self.load_with_slot().0
    }

    /// The slot's current route, and the slot (for requests that outlive one snapshot).
    pub fn load_with_slot(&mut self) -> (&Rc<Route>, &RouteSlot) {
        let version = self.slot.0.version.get();
        if version != self.version {
            self.route = self.slot.load();
            self.version = version;
        }
        (&self.route, &self.slot)
    }
}

/// Tells this worker's sessions that shutdown started. Each session registers its waker once
/// and then checks a plain flag per wait, instead of polling the process-wide token (a mutex)
/// every time it waits.
#[derive(Default)]
pub struct Closing {
    closed: Cell<bool>,
    /// The waker of each session that waits, by client id.
    waiting: RefCell<HashMap<u64, Waker>>,
}

impl Closing {
    /// Whether shutdown has started; if not, `cx`'s task is woken when it does. `registered`
    /// is the session's own record of the waker it registered, so that polling again from
    /// the same task costs no lookup.
    pub fn poll_closed(
        &self,
        client: u64,
        registered: &mut Option<Waker>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        if self.closed.get() {
            return Poll::Ready(());
        }
        if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waiting.borrow_mut().insert(client, cx.waker().clone());
            *registered = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Forgets a session that ended.
    pub fn leave(&self, client: u64) {
        self.waiting.borrow_mut().remove(&client);
    }

    fn close(&self) {
        self.closed.set(true);
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for waker in waiting.into_values() {
            waker.wake();
        }
    }
}

/// A message to a worker.
enum ToWorker {
    /// Serve a new client.
    Client(Handoff),
    /// Make `pools` the live snapshots: new or changed ones get their slots swapped (with
    /// connections to the backends this worker has none to yet), pools not listed are
    /// dropped once their last session ends.
    Install {
        pools: Vec<Arc<Pool>>,
        done: oneshot::Sender<()>,
    },
}

/// The running workers, as the acceptor and the control plane see them.
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<ToWorker>>,
    next: AtomicUsize,
    /// How many workers (the first ones) serve each pool: those owning its connections.
    serving: ArcSwap<HashMap<Arc<str>, usize>>,
}

/// How a worker does its client sockets' I/O.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Io {
    /// Readiness through epoll, a `recv` and a `send` per client turn.
    #[default]
    Epoll,
    /// One io_uring per worker ([`crate::uring`]); epoll where the kernel refuses it.
    Uring,
}

/// Process-wide client ids (also spread clients over a backend's connections).
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

impl Workers {
    /// Starts `threads` workers serving `pools`, until `shutdown`.
    ///
    /// # Errors
    /// A thread could not be spawned.
    pub fn start(
        threads: usize,
        io: Io,
        pools: &[Arc<Pool>],
        shutdown: &Shutdown,
    ) -> io::Result<(Arc<Workers>, Vec<JoinHandle<()>>)> {
        let mut senders = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads.max(1) {
            // Clients handed off (bounded by the listeners' client_connections) and installs
            // (one per applied change): the sender is bounded, the queue need not be.
            #[allow(clippy::disallowed_methods)]
            let (sender, receiver) = mpsc::unbounded_channel();
            let pools = pools.to_vec();
            let shutdown = shutdown.clone();
            let handle = std::thread::Builder::new()
                .name(format!("keyway-worker-{index}"))
                .spawn(move || run(index, threads.max(1), io, pools, receiver, shutdown))?;
            senders.push(sender);
            handles.push(handle);
        }
        let workers = Workers {
            senders,
            next: AtomicUsize::new(0),
            serving: ArcSwap::from_pointee(HashMap::new()),
        };
        Ok((Arc::new(workers), handles))
    }

    /// Hands a client to the next of the workers serving its pool, round-robin.
    pub fn hand_off(&self, handoff: Handoff) {
        let next = self.next.fetch_add(1, Ordering::Relaxed);
        let serving = self
            .serving
            .load()
            .get(&handoff.pool)
            .copied()
            .unwrap_or(self.senders.len());
        if let Some(worker) = self.senders.get(next % serving.max(1)) {
            let _ = worker.send(ToWorker::Client(handoff));
        }
    }

    /// Makes `pools` the live snapshots on every worker; returns once all of them use them.
    pub async fn install(&self, pools: &[Arc<Pool>]) {
        let serving = pools
            .iter()
            .map(|pool| {
                let config = pool.config();
                let name: Arc<str> = Arc::from(config.name.as_str());
                (name, serving_workers(config, self.senders.len()))
            })
            .collect();
        self.serving.store(Arc::new(serving));
        let mut acks = Vec::with_capacity(self.senders.len());
        for worker in &self.senders {
            let (done, ack) = oneshot::channel();
            let message = ToWorker::Install {
                pools: pools.to_vec(),
                done,
            };
            if worker.send(message).is_ok() {
                acks.push(ack);
            }
        }
        for ack in acks {
            let _ = ack.await;
        }
    }
}

/// A worker: its own runtime, its own backend connections, the sessions handed to it.
fn run(
    index: usize,
    threads: usize,
    io: Io,
    pools: Vec<Arc<Pool>>,
    mut inbox: mpsc::UnboundedReceiver<ToWorker>,
    shutdown: Shutdown,
) {
    let runtime = match crate::timer::worker_runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start worker runtime");
            return;
        }
    };
    // Sessions and backend connections share plain `Rc` cells (see `backend::reply`), so they
    // all run on this thread's `LocalRuntime`.
    runtime.block_on(async {
        if io == Io::Uring {
            match crate::uring::start() {
                Ok(()) if index == 0 => tracing::info!("client I/O through io_uring"),
                Ok(()) => {}
                Err(error) => tracing::warn!(
                    worker = index,
                    %error,
                    "io_uring is unavailable (kernel, kernel.io_uring_disabled or seccomp): \
                     client I/O through epoll"
                ),
            }
        }
        let mut routes: HashMap<Arc<str>, RouteSlot> = HashMap::new();
        let mut connections = Connections::new(index, threads);
        install(&mut routes, &mut connections, pools);
        let sessions = TaskTracker::new();
        let closing = Rc::new(Closing::default());
        tokio::task::spawn_local({
            let closing = Rc::clone(&closing);
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                closing.close();
            }
        });
        // The worker's own loop is a task like the others. The future `block_on` runs is
        // polled on every wake-up of the thread, so it only looks at a flag the task sets as
        // it ends: one client's request and reply wake the thread twice each, and polling the
        // inbox and the shutdown token there cost about 600 instructions per request, the
        // task's `JoinHandle` about 100.
        let ended = Rc::new(Ended::default());
        let end = EndOnDrop(Rc::clone(&ended));
        let inbox_loop = tokio::task::spawn_local(async move {
            let _end = end;
            loop {
                let message = tokio::select! {
                    message = inbox.recv() => message,
                    () = shutdown.cancelled() => None,
                };
                match message {
                    Some(ToWorker::Client(handoff)) => {
                        if let Some(slot) = routes.get(&handoff.pool) {
                            spawn_session(&sessions, slot.clone(), handoff, &closing);
                        }
                    }
                    Some(ToWorker::Install { pools, done }) => {
                        install(&mut routes, &mut connections, pools);
                        let _ = done.send(());
                    }
                    None => break,
                }
            }
            sessions.close();
            if crate::timer::timeout(GRACE, sessions.wait()).await.is_err() {
                tracing::warn!("grace period over: closing remaining client connections");
            }
        });
        std::future::poll_fn(|cx| ended.poll(cx)).await;
        if let Err(error) = inbox_loop.await {
            tracing::error!(worker = index, %error, "worker loop failed");
        }
    });
}

/// Whether the worker's loop task has ended, for the thread's `block_on` to look at on every
/// wake-up for less than a poll of the task's `JoinHandle` costs.
#[derive(Default)]
struct Ended {
    done: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Ended {
    /// Ready once the task ended, else keeps `cx`'s waker for its end.
    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.done.get() {
            return Poll::Ready(());
        }
        let mut waker = self.waker.borrow_mut();
        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Held by the worker's loop task: marks it [`Ended`] when the task's future is dropped,
/// whether it finished, unwound or was cancelled.
struct EndOnDrop(Rc<Ended>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.done.set(true);
        if let Some(waker) = self.0.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// Brings this worker's routes in line with `pools`: unchanged snapshots keep their route; new
/// ones get a route over this worker's connections (started here for backends it has none to
/// yet) and their slot swapped.
fn install(
    routes: &mut HashMap<Arc<str>, RouteSlot>,
    connections: &mut Connections,
    pools: Vec<Arc<Pool>>,
) {
    let mut live = HashMap::with_capacity(pools.len());
    for pool in pools {
        let name: Arc<str> = Arc::from(pool.config().name.as_str());
        let slot = match routes.remove(&name) {
            Some(slot) if Arc::ptr_eq(&slot.load().pool, &pool) => slot,
            Some(slot) => {
                slot.store(start_route(pool, connections));
                slot
            }
            None => RouteSlot::new(start_route(pool, connections)),
        };
        live.insert(name, slot);
    }
    // Routes left in `routes` belong to removed pools: their sessions keep them until they end.
    // Connections no live route uses close once the sessions still holding them are done.
    let current: Vec<Rc<Route>> = live.values().map(RouteSlot::load).collect();
    connections.retain(current.iter().map(|route| &route.backends));
    *routes = live;
}

fn start_route(pool: Arc<Pool>, connections: &mut Connections) -> Route {
    let backends = BackendPool::start(&pool, connections);
    Route { pool, backends }
}

fn spawn_session(sessions: &TaskTracker, slot: RouteSlot, handoff: Handoff, closing: &Rc<Closing>) {
    let id = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
    // The pool's certificate as it is now: a reload's new one serves the next handshakes.
    let route = slot.load();
    let tls = route
        .pool
        .config()
        .tls
        .clone()
        .map(|tls| (tls, route.pool.metrics().client_tls_failed.clone()));
    drop(route);
    let session = Session::new(id, slot);
    let closing = Rc::clone(closing);
    let Handoff { stream, slot, .. } = handoff;
    sessions.spawn_local(async move {
        if let Err(error) = serve(session, stream, tls.as_ref(), &closing).await {
            tracing::debug!(client = id, %error, "client connection failed");
        }
        closing.leave(id);
        drop(slot);
    });
}

async fn serve(
    session: Session,
    stream: Accepted,
    tls: Option<&(ListenTls, IntCounter)>,
    closing: &Closing,
) -> io::Result<()> {
    // TLS clients stay on epoll: rustls drives a readiness-based stream.
    if tls.is_none() && crate::uring::active() {
        // Blocking mode: the ring polls the socket itself.
        let socket: std::os::fd::OwnedFd = match stream {
            Accepted::Tcp(stream) => stream.set_nonblocking(false).map(|()| stream.into())?,
            Accepted::Unix(stream) => stream.set_nonblocking(false).map(|()| stream.into())?,
        };
        let stream = crate::uring::Stream::new(socket)?;
        let session = session.write_through(stream.writer());
        let (rd, wr) = stream.split();
        session.run(rd, wr, closing).await;
        return Ok(());
    }
    match stream {
        Accepted::Tcp(stream) => {
            let stream = tokio::net::TcpStream::from_std(stream)?;
            match tls {
                None => serve_plain(session, stream, closing).await,
                Some(tls) => serve_tls(session, stream, tls, closing).await?,
            }
        }
        Accepted::Unix(stream) => {
            let stream = tokio::net::UnixStream::from_std(stream)?;
            match tls {
                None => serve_plain(session, stream, closing).await,
                Some(tls) => serve_tls(session, stream, tls, closing).await?,
            }
        }
    }
    Ok(())
}

/// Serves a plain client, whose replies may be written straight to its socket by the backend
/// connection answering them.
async fn serve_plain<S: Plain + 'static>(session: Session, stream: S, closing: &Closing) {
    let stream = Rc::new(stream);
    let session = session.write_through(Rc::clone(&stream) as Rc<dyn TryWrite>);
    session
        .run(Shared(Rc::clone(&stream)), Shared(stream), closing)
        .await;
}

/// Serves a client of a `tls` pool once its handshake is done, within
/// [`tls::HANDSHAKE_TIMEOUT`]: a client that fails it or never finishes it leaves, counted in
/// `failed`.
async fn serve_tls<S>(
    session: Session,
    stream: S,
    (tls, failed): &(ListenTls, IntCounter),
    closing: &Closing,
) -> io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let handshake = crate::timer::timeout(tls::HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream));
    let stream = match handshake.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            failed.inc();
            return Err(error);
        }
        Err(_) => {
            failed.inc();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            ));
        }
    };
    let (rd, wr) = tls::split(stream);
    session.run(rd, wr, closing).await;
    Ok(())
}
