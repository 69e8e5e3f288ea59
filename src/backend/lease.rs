//! Dedicated backend connections: a client's own connection to one backend, for a state that
//! must not touch the shared pipelined connections (a blocked pop, a `WATCH`/`MULTI`).
//!
//! A [`Lease`] is the permit, counted per backend over the whole process (at most
//! `dedicated_connections`) and given back when it drops; a [`Dedicated`] is a connection
//! opened under one, set up as a shared connection is (`AUTH`, `HELLO 3`, `SELECT`) by the
//! same code. It never reconnects. Dropped, it closes at once (the client went away); after
//! [`Dedicated::finish`] once its last reply is in; a client may keep a provably clean one,
//! lease and all, for its own next blocking command or transaction.

use std::sync::Arc;

use bytes::Bytes;
use tokio::task::AbortHandle;

use super::connection::{self, Handle};
use super::pool::Backend;
use super::{Expect, Patience, ReplyReceiver};

/// A permit for one dedicated connection to a backend; dropping it gives the permit back.
pub struct Lease {
    backend: Arc<Backend>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("backend", &self.backend)
            .finish()
    }
}

/// No permit: the backend has `dedicated_connections` leased already. Its text is the error
/// reply's (after `ERR `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dedicated_connections ({limit}) reached for {backend}")]
pub struct LeaseRefused {
    /// The pool's `dedicated_connections`.
    pub limit: usize,
    /// The backend's address.
    pub backend: String,
}

impl Lease {
    /// Made only by [`Backend::lease`], which counted it.
    pub(super) fn new(backend: Arc<Backend>) -> Lease {
        Lease { backend }
    }

    /// The backend the permit is for.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Opens a dedicated connection to the backend under this lease, on the current worker's
    /// runtime, over RESP3 when `resp3`. The lease lives as long as the connection.
    pub fn connect(self, resp3: bool) -> Dedicated {
        let target = Arc::new(self.backend.target(resp3).clone());
        let report = self.backend.dedicated_report();
        let (handle, abort) = connection::spawn_dedicated(target, report, self);
        Dedicated {
            handle: Some(handle),
            abort: Some(abort),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.release();
    }
}

/// One client's own connection to a backend. Dropped, it closes at once, whatever is in
/// flight (the client disconnected); [`Dedicated::finish`] closes it once its replies are in.
pub struct Dedicated {
    handle: Option<Handle>,
    abort: Option<AbortHandle>,
}

impl std::fmt::Debug for Dedicated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedicated")
            .field("handle", &self.handle)
            .finish()
    }
}

impl Dedicated {
    /// Sends `frame` (its reply shaped as `expect`, allowed to take `patience`); requests
    /// are answered in the order sent. Once the connection has ended the reply is an error.
    pub fn send(&self, frame: Bytes, expect: Expect, patience: Patience) -> ReplyReceiver {
        match &self.handle {
            Some(handle) => handle.send_with(frame, expect, patience),
            None => ReplyReceiver::ready(Err(super::Error::Closed)),
        }
    }

    /// Whether the connection has ended (the backend closed it, it failed or timed out):
    /// whatever is sent now fails.
    pub fn is_closed(&self) -> bool {
        self.handle.as_ref().is_none_or(Handle::is_closed)
    }

    /// No more requests: the connection closes (and its lease is given back) once every
    /// reply already asked for is in.
    pub fn finish(mut self) {
        self.abort = None;
        self.handle = None;
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        if let Some(abort) = self.abort.take() {
            abort.abort();
        }
    }
}
