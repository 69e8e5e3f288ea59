//! Worker threads: each runs a single-threaded runtime owning its client sessions and its own
//! connections to every backend, and swaps a pool's [`Route`] whole when the pool changes.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use super::listener::{Accepted, Handoff};
use super::session::Session;
use crate::backend::pool::Pool;
use crate::backend::BackendPool;
use crate::shutdown::{Shutdown, GRACE};

/// What a session uses for a request: the pool's shared state (config, shard map, health) and
/// this worker's connections to its backends. Immutable; replaced whole on reload or failover,
/// so a request in flight finishes on the route it started with.
pub struct Route {
    /// The pool's shared state.
    pub pool: Arc<Pool>,
    /// This worker's connections to the pool's backends.
    pub backends: Arc<BackendPool>,
}

/// A worker's current route for one pool; sessions load it once per request.
pub type RouteSlot = Arc<ArcSwap<Route>>;

/// A message to a worker.
enum ToWorker {
    /// Serve a new client.
    Client(Handoff),
    /// Make `pools` the live set: new or changed pools get fresh connections and their
    /// slots swapped, pools not listed are dropped once their last session ends.
    Install {
        pools: Vec<Arc<Pool>>,
        done: oneshot::Sender<()>,
    },
}

/// The running workers, as the acceptor and the control plane see them.
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<ToWorker>>,
    next: AtomicUsize,
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
        pools: &[Arc<Pool>],
        shutdown: &Shutdown,
    ) -> io::Result<(Arc<Workers>, Vec<JoinHandle<()>>)> {
        let mut senders = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads.max(1) {
            let (sender, receiver) = mpsc::unbounded_channel();
            let pools = pools.to_vec();
            let shutdown = shutdown.clone();
            let handle = std::thread::Builder::new()
                .name(format!("keyway-worker-{index}"))
                .spawn(move || run(pools, receiver, shutdown))?;
            senders.push(sender);
            handles.push(handle);
        }
        let workers = Workers {
            senders,
            next: AtomicUsize::new(0),
        };
        Ok((Arc::new(workers), handles))
    }

    /// Hands a client to the next worker, round-robin.
    pub fn hand_off(&self, handoff: Handoff) {
        let next = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(worker) = self.senders.get(next % self.senders.len().max(1)) {
            let _ = worker.send(ToWorker::Client(handoff));
        }
    }

    /// Makes `pools` the live set on every worker; returns once all of them use it.
    pub async fn install(&self, pools: &[Arc<Pool>]) {
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
fn run(pools: Vec<Arc<Pool>>, mut inbox: mpsc::UnboundedReceiver<ToWorker>, shutdown: Shutdown) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start worker runtime");
            return;
        }
    };
    runtime.block_on(async {
        let mut routes: HashMap<Arc<str>, RouteSlot> = HashMap::new();
        install(&mut routes, pools);
        let sessions = TaskTracker::new();
        loop {
            let message = tokio::select! {
                message = inbox.recv() => message,
                () = shutdown.cancelled() => None,
            };
            match message {
                Some(ToWorker::Client(handoff)) => {
                    if let Some(slot) = routes.get(&handoff.pool) {
                        spawn_session(&sessions, Arc::clone(slot), handoff, &shutdown);
                    }
                }
                Some(ToWorker::Install { pools, done }) => {
                    install(&mut routes, pools);
                    let _ = done.send(());
                }
                None => break,
            }
        }
        sessions.close();
        if tokio::time::timeout(GRACE, sessions.wait()).await.is_err() {
            tracing::warn!("grace period over: closing remaining client connections");
        }
    });
}

/// Brings this worker's routes in line with `pools`: unchanged pools keep their route (and
/// connections); new or changed ones get connections started here and their slot swapped.
fn install(routes: &mut HashMap<Arc<str>, RouteSlot>, pools: Vec<Arc<Pool>>) {
    let mut live = HashMap::with_capacity(pools.len());
    for pool in pools {
        let name: Arc<str> = Arc::from(pool.config().name.as_str());
        let slot = match routes.remove(&name) {
            Some(slot) if Arc::ptr_eq(&slot.load().pool, &pool) => slot,
            Some(slot) => {
                slot.store(Arc::new(start_route(pool)));
                slot
            }
            None => Arc::new(ArcSwap::from_pointee(start_route(pool))),
        };
        live.insert(name, slot);
    }
    // Routes left in `routes` belong to removed pools: their sessions keep them until they end.
    *routes = live;
}

fn start_route(pool: Arc<Pool>) -> Route {
    let backends = Arc::new(BackendPool::start(&pool));
    Route { pool, backends }
}

fn spawn_session(sessions: &TaskTracker, slot: RouteSlot, handoff: Handoff, shutdown: &Shutdown) {
    let id = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
    let session = Session::new(id, slot);
    let shutdown = shutdown.clone();
    let Handoff { stream, slot, .. } = handoff;
    sessions.spawn(async move {
        if let Err(error) = serve(session, stream, shutdown).await {
            tracing::debug!(client = id, %error, "client connection failed");
        }
        drop(slot);
    });
}

async fn serve(session: Session, stream: Accepted, shutdown: Shutdown) -> io::Result<()> {
    match stream {
        Accepted::Tcp(stream) => {
            let mut stream = tokio::net::TcpStream::from_std(stream)?;
            let (rd, wr) = stream.split();
            session.run(rd, wr, shutdown).await;
        }
        Accepted::Unix(stream) => {
            let mut stream = tokio::net::UnixStream::from_std(stream)?;
            let (rd, wr) = stream.split();
            session.run(rd, wr, shutdown).await;
        }
    }
    Ok(())
}
