//! What the data path needs of a socket's halves beyond `AsyncRead` and `AsyncWrite`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio_util::io::poll_read_buf;

/// A socket read half that can tell, without a syscall or a waker registration, whether the
/// runtime saw it readable (or closed) since the last read that found it drained. Client
/// sessions and backend connections skip polling a socket that has not turned readable.
pub trait SocketRead: AsyncRead + Unpin {
    /// Whether a read may find data (or the end of the stream).
    fn is_read_ready(&self) -> bool;
}

impl SocketRead for tokio::net::tcp::ReadHalf<'_> {
    fn is_read_ready(&self) -> bool {
        self.as_ref().try_io(Interest::READABLE, || Ok(())).is_ok()
    }
}

impl SocketRead for tokio::net::unix::ReadHalf<'_> {
    fn is_read_ready(&self) -> bool {
        self.as_ref().try_io(Interest::READABLE, || Ok(())).is_ok()
    }
}

/// A socket write half that may keep bytes it took (TLS records the socket did not take yet,
/// or a TLS alert a read produced), sent by `poll_flush`.
pub trait SocketWrite: AsyncWrite + Unpin {
    /// Whether bytes wait for `poll_flush`. Never for a plain socket, which keeps none: the
    /// check compiles away on that path.
    #[inline]
    fn needs_flush(&self) -> bool {
        false
    }
}

impl SocketWrite for tokio::net::tcp::WriteHalf<'_> {}

impl SocketWrite for tokio::net::unix::WriteHalf<'_> {}

/// Reads a socket for one task, and skips polling it when it has nothing new: once a read
/// returned `Pending`, the task's waker stays registered until the socket turns readable, so
/// polling it again before then (the task also wakes for other reasons) would only take the
/// registration lock again. One task polls it, so the registered waker stays right.
pub struct ArmedReader<R> {
    rd: R,
    /// The last poll registered the waker and the socket has not been readable since.
    armed: bool,
}

impl<R: SocketRead> ArmedReader<R> {
    /// Reads through `rd`.
    pub fn new(rd: R) -> ArmedReader<R> {
        ArmedReader { rd, armed: false }
    }

    /// Reads what the socket has into `input`, as `poll_read_buf` does.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        input: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        if self.armed && !self.rd.is_read_ready() {
            return Poll::Pending;
        }
        match poll_read_buf(Pin::new(&mut self.rd), cx, input) {
            Poll::Pending => {
                // Out of cooperative budget, the read registered nothing: poll it next time.
                self.armed = tokio::task::coop::has_budget_remaining();
                Poll::Pending
            }
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

/// In-memory streams for unit tests: no readiness to peek at, so always poll.
#[cfg(test)]
impl SocketRead for tokio::io::ReadHalf<tokio::io::DuplexStream> {
    fn is_read_ready(&self) -> bool {
        true
    }
}

#[cfg(test)]
impl SocketWrite for tokio::io::WriteHalf<tokio::io::DuplexStream> {}
