//! The memcached ASCII protocol (classic and meta commands): request framing, reply
//! boundaries, the replies Keyway writes itself, and multi-key `get` fan-out. No I/O.
//!
//! Every request handed to a backend gets exactly one reply from it: the decoder strips
//! `noreply` and the meta `q` flag from the forwarded frame, and [`ReplyPolicy`] tells the
//! session which backend replies the client must not see.

pub mod codec;
pub mod command;
pub mod fanout;
pub mod reply;

pub use codec::{Request, RequestDecoder};
pub use command::{Command, ReplyPolicy};
pub use reply::{ReplyKind, ReplyScanner};

use bytes::Bytes;

/// memcached's own longest key (`KEY_MAX_LENGTH`): no limit can let a longer one through.
pub const KEY_MAX_LENGTH: usize = 250;

/// Longest command line Keyway waits for (data blocks excluded).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Size limits enforced while decoding requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, as memcached's `KEY_MAX_LENGTH` (for a base64 key, its encoded length).
    pub max_key_bytes: usize,
    /// Largest data block of a storage command; a larger one is skipped and answered
    /// `SERVER_ERROR object too large for cache`, as memcached does beyond its `-I` size.
    pub max_item_bytes: usize,
    /// Most keys in one `get`/`gets`/`gat`/`gats`.
    pub max_keys: usize,
    /// Longest command line (data blocks excluded).
    pub max_line_bytes: usize,
    /// Largest whole request: command line, data block and its CRLF. A storage request over
    /// it is answered as one over `max_item_bytes`; a longer line, as one over
    /// `max_line_bytes`.
    pub max_request_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: KEY_MAX_LENGTH,
            max_item_bytes: 1024 * 1024,
            max_keys: 16 * 1024,
            max_line_bytes: MAX_LINE_BYTES,
            max_request_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A request Keyway rejects itself, or a backend reply it cannot frame.
///
/// The variant says what happens next; [`Error::reply`] is the exact line memcached itself
/// would send for the same input (checked against memcached 1.6 in the tests).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An unknown command, or a known one with the wrong number of arguments (memcached's
    /// `ERROR`). The line has been consumed; the client always gets the reply.
    #[error("ERROR")]
    Unknown,
    /// A malformed request, consumed whole, its data block included (a data block still
    /// arriving is skipped by the decoder). The client gets `reply` unless `silent`.
    #[error("{reply}")]
    Client {
        /// The full error line without CRLF, e.g. `CLIENT_ERROR bad data chunk` or
        /// `SERVER_ERROR object too large for cache`.
        reply: &'static str,
        /// The request asked for `noreply`, and memcached stays silent on this error.
        silent: bool,
    },
    /// The stream cannot be resynchronised (no usable data length, an endless line, the
    /// binary protocol): answer `CLIENT_ERROR <reason>`, then close the client connection.
    #[error("CLIENT_ERROR {0}")]
    Fatal(&'static str),
    /// A backend sent bytes that are not a memcached reply of the expected kind: the
    /// backend connection can no longer be trusted.
    #[error("backend protocol error: {0}")]
    Backend(&'static str),
}

impl Error {
    /// The reply the client gets for this error, `None` when it gets none (a silent
    /// `noreply` error, or a backend error, which the session answers in its own words).
    pub fn reply(&self) -> Option<Bytes> {
        match self {
            Error::Unknown => Some(reply::error()),
            Error::Client { silent: true, .. } | Error::Backend(_) => None,
            Error::Client { reply, .. } => Some(reply::line(reply)),
            Error::Fatal(reason) => Some(reply::client_error(reason)),
        }
    }

    /// Whether the client connection must be closed after the reply.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Fatal(_))
    }
}
