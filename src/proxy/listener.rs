//! Listening sockets (TCP or unix, with nutcracker's `backlog` and `reuseport`) and the accept
//! loop: connection limit, accept backoff, hand-off of each client to a worker.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use socket2::{Domain, SockAddr, Socket, Type};

use super::worker::Workers;
use crate::config::{Listen, PoolConfig};
use crate::shutdown::Shutdown;

/// Pause after an accept error (e.g. out of file descriptors) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Least time between two log lines about clients refused past `client_connections`.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// A bound, listening socket that no runtime owns yet.
#[derive(Debug)]
pub enum Bound {
    /// A TCP listener.
    Tcp(std::net::TcpListener),
    /// A unix-socket listener and its path (removed when the proxy stops).
    Unix(std::os::unix::net::UnixListener, PathBuf),
}

/// Where a pool listens, as bound (the real port when the config asked for port 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalAddr {
    /// TCP address.
    Tcp(SocketAddr),
    /// Unix socket path.
    Unix(PathBuf),
}

/// An accepted client, not yet registered with a worker's runtime.
#[derive(Debug)]
pub enum Accepted {
    /// A TCP client.
    Tcp(std::net::TcpStream),
    /// A unix-socket client.
    Unix(std::os::unix::net::UnixStream),
}

/// Binds the pool's listening socket.
///
/// # Errors
/// The address is in use, not permitted, or otherwise unbindable.
pub fn bind(pool: &PoolConfig) -> io::Result<Bound> {
    let backlog = i32::try_from(pool.backlog).unwrap_or(i32::MAX);
    match &pool.listen {
        Listen::Tcp(addr) => {
            let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            if pool.reuseport {
                socket.set_reuse_port(true)?;
            }
            socket.bind(&(*addr).into())?;
            socket.listen(backlog)?;
            socket.set_nonblocking(true)?;
            Ok(Bound::Tcp(socket.into()))
        }
        Listen::Unix { path, mode } => {
            // As nutcracker: a stale socket file from an earlier run is replaced.
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                std::fs::remove_file(path)?;
            }
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            socket.bind(&SockAddr::unix(path)?)?;
            socket.listen(backlog)?;
            socket.set_nonblocking(true)?;
            if let Some(mode) = mode {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
            }
            Ok(Bound::Unix(socket.into(), path.clone()))
        }
    }
}

impl Bound {
    /// The bound address.
    ///
    /// # Errors
    /// The socket has no local address (it always has once bound).
    pub fn local_addr(&self) -> io::Result<LocalAddr> {
        match self {
            Bound::Tcp(listener) => Ok(LocalAddr::Tcp(listener.local_addr()?)),
            Bound::Unix(_, path) => Ok(LocalAddr::Unix(path.clone())),
        }
    }
}

/// Counts a pool's open client connections against `client_connections`.
#[derive(Debug, Default)]
pub struct ClientCount {
    open: AtomicUsize,
}

/// One open client connection; dropping it frees its place.
#[derive(Debug)]
pub struct ClientSlot {
    count: Arc<ClientCount>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.count.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClientCount {
    /// Takes a place, unless `limit` (0 = unlimited) places are taken.
    fn admit(self: &Arc<Self>, limit: usize) -> Option<ClientSlot> {
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        let slot = ClientSlot {
            count: Arc::clone(self),
        };
        (limit == 0 || before < limit).then_some(slot)
    }

    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// A client handed to a worker: which pool, the socket, and its place in the count.
#[derive(Debug)]
pub struct Handoff {
    /// The pool's name.
    pub pool: Arc<str>,
    /// The accepted socket.
    pub stream: Accepted,
    /// Released when the session ends.
    pub slot: ClientSlot,
}

/// Accepts clients until `stop` is cancelled (shutdown, or the pool left or moved its
/// `listen` on reload), handing each to a worker; at most `limit` clients at once (the pool's
/// `client_connections`). A client past the limit is closed at once and counted in `refused`
/// (`keyway_client_refused_total`), as nutcracker closes it.
pub async fn accept_loop(
    pool: Arc<str>,
    limit: usize,
    bound: Bound,
    count: Arc<ClientCount>,
    refused: IntCounter,
    workers: Arc<Workers>,
    stop: Shutdown,
) -> io::Result<()> {
    let listener = match bound {
        Bound::Tcp(listener) => Listener::Tcp(tokio::net::TcpListener::from_std(listener)?),
        Bound::Unix(listener, path) => {
            Listener::Unix(tokio::net::UnixListener::from_std(listener)?, path)
        }
    };
    let mut last_refusal: Option<std::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(pool = %pool, %error, "accept failed");
                crate::timer::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some(slot) = count.admit(limit) else {
            refused.inc();
            // Closed without a reply, as nutcracker does; said in the log, at most once a
            // second so that a client retrying in a loop cannot flood it.
            if last_refusal.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL) {
                tracing::warn!(pool = %pool, limit, "client_connections reached: closing new clients");
                last_refusal = Some(std::time::Instant::now());
            }
            continue;
        };
        workers.hand_off(Handoff {
            pool: Arc::clone(&pool),
            stream,
            slot,
        });
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Listener {
    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Ok(Accepted::Tcp(stream.into_std()?))
            }
            Listener::Unix(listener, _) => {
                let (stream, _) = listener.accept().await?;
                Ok(Accepted::Unix(stream.into_std()?))
            }
        }
    }
}
