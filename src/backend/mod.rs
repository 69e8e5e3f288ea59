//! All talk with backends: a task per backend connection, pipelined, replies paired FIFO.
//! Sessions never touch a backend socket; they send [`Job`]s and await the reply
//! on a [`ReplyReceiver`]. [`pool`] holds the routing snapshots the control plane publishes,
//! each worker's connections (kept by backend), and the failure counts the connections report.
//! [`lease`] gives a client a connection of its own (a blocked pop, a transaction), bounded
//! per backend by `dedicated_connections`.

pub mod connection;
pub mod lease;
pub mod pool;
pub mod reply;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use pool::BackendPool;
pub use reply::{ReplyReceiver, ReplySender};

/// Why a request got no reply from its backend. The variant decides what happens next:
/// every one becomes an error reply to that request; all but `Ejected` count, once per
/// request, as a backend failure towards auto-eject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The backend could not be reached (or refused our AUTH/SELECT). The client sees only
    /// the kind of failure; the address is for logs.
    #[error("{}", describe(*kind))]
    Connect {
        /// What went wrong.
        kind: io::ErrorKind,
        /// The backend's address.
        addr: Arc<str>,
    },
    /// The TLS handshake with the backend failed (`server_tls`): its certificate did not
    /// verify, or it refused ours. Counted as a failure to connect. As with `Connect`, the
    /// client sees only the kind of failure; the address and the reason are for logs.
    #[error("TLS handshake with backend failed")]
    Tls {
        /// The backend's address.
        addr: Arc<str>,
        /// Why, as rustls says it (e.g. `invalid peer certificate: UnknownIssuer`).
        reason: Arc<str>,
    },
    /// No reply within the pool's `timeout`; the connection was recycled.
    #[error("Connection timed out")]
    Timeout,
    /// The backend closed the connection (or it failed) before replying.
    #[error("Connection reset by backend")]
    Closed,
    /// Every backend of the pool is ejected: there is nowhere to send the request.
    #[error("no live backend in pool")]
    Ejected,
    /// The backend sent bytes that are not a valid reply, or a reply longer than the pool's
    /// `max_reply_bytes`; the connection was recycled.
    #[error("backend protocol error")]
    Protocol,
}

fn describe(kind: io::ErrorKind) -> &'static str {
    match kind {
        io::ErrorKind::ConnectionRefused => "Connection refused",
        io::ErrorKind::ConnectionReset => "Connection reset by peer",
        io::ErrorKind::TimedOut => "Connection timed out",
        io::ErrorKind::NotFound => "No such file or directory",
        io::ErrorKind::PermissionDenied => "Permission denied",
        io::ErrorKind::AddrNotAvailable => "Cannot assign requested address",
        _ => "Connection failed",
    }
}

/// The outcome of one forwarded request: the backend's complete reply frame, or why none came.
pub type Outcome = Result<Bytes, Error>;

/// What a request's reply looks like, so the connection can find where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// One RESP reply.
    Resp,
    /// A memcached reply of this kind.
    Memcache(crate::protocol::memcache::ReplyKind),
}

/// How long a request's reply may take before it fails with [`Error::Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// The pool's `timeout` (none without one).
    Timeout,
    /// The pool's `timeout` on top of this long: a blocking command's own block time, which
    /// the timeout must never cut short (none without a pool `timeout`).
    Longer(Duration),
    /// No bound: a command that blocks until woken (`BLPOP k 0`).
    Unbounded,
}

/// One request for a backend connection: the frame to write and where its reply goes.
#[derive(Debug)]
pub struct Job {
    /// The complete request frame.
    pub frame: Bytes,
    /// The shape of its reply.
    pub expect: Expect,
    /// How long its reply may take.
    pub patience: Patience,
    /// Receives the reply (or the error) exactly once.
    pub reply: ReplySender,
}
