//! What the data path needs of a socket's read half beyond `AsyncRead`.

use tokio::io::{AsyncRead, Interest};

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
