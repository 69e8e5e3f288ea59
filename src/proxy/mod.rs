//! All talk with clients: listeners, worker threads, sessions, locally answered commands.
//!
//! Threads: one acceptor thread (signals, accept loops) and `--threads` workers, each a
//! single-threaded runtime that owns its client sessions *and its own backend connections*, so a
//! request never crosses a thread or takes a lock between client and backend.

pub mod listener;
pub mod local;
pub mod session;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::backend::pool::Pool;
use crate::backend::BackendPool;
use crate::config::Config;
use crate::shutdown::{Shutdown, GRACE};
use listener::{Accepted, Bound, ClientCount, Handoff, LocalAddr};
use session::Session;

/// A proxy with its listeners bound, ready to [`run`](Proxy::run).
pub struct Proxy {
    pools: Vec<Arc<Pool>>,
    listeners: Vec<Bound>,
    counts: Vec<Arc<ClientCount>>,
    threads: usize,
}

/// Binds every pool's listener. Binding is apart from running so that callers (and tests,
/// with port 0) learn the addresses before traffic starts.
///
/// # Errors
/// A listener could not be bound.
pub fn bind(config: Config, threads: usize) -> io::Result<Proxy> {
    let mut listeners = Vec::with_capacity(config.pools.len());
    for pool in &config.pools {
        let bound = listener::bind(pool).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!(
                    "pool '{}': cannot listen on {:?}: {error}",
                    pool.name, pool.listen
                ),
            )
        })?;
        listeners.push(bound);
    }
    let pools: Vec<Arc<Pool>> = config
        .pools
        .into_iter()
        .map(|p| Arc::new(Pool::new(p)))
        .collect();
    let counts = pools.iter().map(|_| Arc::default()).collect();
    Ok(Proxy {
        pools,
        listeners,
        counts,
        threads: threads.max(1),
    })
}

impl Proxy {
    /// Each pool's name and bound address, in config order.
    pub fn local_addrs(&self) -> Vec<(String, LocalAddr)> {
        self.pools
            .iter()
            .zip(&self.listeners)
            .filter_map(|(pool, bound)| {
                Some((pool.config().name.clone(), bound.local_addr().ok()?))
            })
            .collect()
    }

    /// Serves until `shutdown` is cancelled, then drains: stops accepting, lets sessions finish
    /// their in-flight requests (up to the grace period), and returns. Blocks the calling thread.
    ///
    /// # Errors
    /// A runtime or thread could not be created.
    pub fn run(self, shutdown: Shutdown) -> io::Result<()> {
        let mut senders = Vec::with_capacity(self.threads);
        let mut workers = Vec::with_capacity(self.threads);
        for index in 0..self.threads {
            let (sender, receiver) = mpsc::unbounded_channel();
            senders.push(sender);
            let pools = self.pools.clone();
            let shutdown = shutdown.clone();
            let worker = std::thread::Builder::new()
                .name(format!("keyway-worker-{index}"))
                .spawn(move || run_worker(pools, receiver, shutdown))?;
            workers.push(worker);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let mut accepting = Vec::new();
            for (index, (bound, count)) in self.listeners.into_iter().zip(self.counts).enumerate() {
                let Some(pool) = self.pools.get(index) else {
                    continue;
                };
                let pool = Arc::clone(pool);
                let senders = senders.clone();
                let shutdown = shutdown.clone();
                accepting.push(tokio::spawn(async move {
                    let config = pool.config();
                    if let Err(error) =
                        listener::accept_loop(index, config, bound, count, senders, shutdown).await
                    {
                        tracing::error!(pool = %config.name, %error, "listener failed");
                    }
                }));
            }
            drop(senders);
            for task in accepting {
                let _ = task.await;
            }
        });
        for worker in workers {
            let _ = worker.join();
        }
        Ok(())
    }
}

/// Process-wide client ids (also spread clients over a backend's connections).
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// A worker: its own runtime, its own backend connections, the sessions handed to it.
fn run_worker(
    pools: Vec<Arc<Pool>>,
    mut clients: mpsc::UnboundedReceiver<Handoff>,
    shutdown: Shutdown,
) {
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
        let backends: Vec<Arc<BackendPool>> = pools
            .iter()
            .map(|pool| Arc::new(BackendPool::start(pool)))
            .collect();
        let sessions = TaskTracker::new();
        while let Some(handoff) = clients.recv().await {
            let (Some(pool), Some(backends)) =
                (pools.get(handoff.pool), backends.get(handoff.pool))
            else {
                continue;
            };
            let id = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
            let session = Session::new(id, Arc::clone(pool), Arc::clone(backends));
            let shutdown = shutdown.clone();
            let slot = handoff.slot;
            sessions.spawn(async move {
                if let Err(error) = serve(session, handoff.stream, shutdown).await {
                    tracing::debug!(client = id, %error, "client connection failed");
                }
                drop(slot);
            });
        }
        sessions.close();
        if tokio::time::timeout(GRACE, sessions.wait()).await.is_err() {
            tracing::warn!("grace period over: closing remaining client connections");
        }
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
