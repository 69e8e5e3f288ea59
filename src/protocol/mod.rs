//! The only code that knows wire formats: requests in, replies out.

pub mod fanout;
pub mod memcache;
pub mod resp;

/// A malformed request. Decoder errors are fatal for the stream: the client gets the
/// error reply, then its connection is closed, because the framing can no longer be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes do not follow the protocol (Redis's wording: `Protocol error: ...`).
    #[error("Protocol error: {0}")]
    Protocol(&'static str),
}
