//! What the data path needs of a socket's halves beyond `AsyncRead` and `AsyncWrite`, and
//! the halves of a plain client socket that its session shares with the backend connections
//! writing replies straight to it ([`Shared`]).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio_util::io::poll_read_buf;

/// A socket read half that can tell, without a syscall or a waker registration, whether the
/// runtime saw it readable (or closed) since the last read that found it drained. Client
/// sessions and backend connections skip polling a socket that has not turned readable.
pub trait SocketRead: AsyncRead + Unpin {
    /// Whether a read may find data (or the end of the stream).
    fn is_read_ready(&self) -> bool;

    /// Reads what the socket has into `input`, as `poll_read_buf` does.
    fn poll_fill(&mut self, cx: &mut Context<'_>, input: &mut BytesMut) -> Poll<io::Result<usize>> {
        poll_read_buf(Pin::new(self), cx, input)
    }
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
        match self.rd.poll_fill(cx, input) {
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

/// A plain (TCP or Unix) stream, used through `&self`: tokio's streams, as [`Shared`] needs
/// them.
pub trait Plain {
    /// Readiness to read, registering `cx` when there is none.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Reads into `buf` without waiting (`WouldBlock` clears the readiness).
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Reads into `input`'s spare room without waiting.
    fn try_read_buf(&self, input: &mut BytesMut) -> io::Result<usize>;
    /// Whether the runtime saw the stream readable since the last read that drained it.
    fn is_read_ready(&self) -> bool;
    /// Forgets that the stream was readable: a short read drained it.
    fn clear_read_ready(&self);
    /// Readiness to write, registering `cx` when there is none.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Writes what the socket takes now, without waiting.
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize>;
    /// [`try_write`](Plain::try_write) from several buffers in one call.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Ends the stream's sending side.
    fn shutdown_write(&self) -> io::Result<()>;
}

/// A client socket (or its write half) that takes bytes without waiting: the session's first
/// try at a reply, and the backend connection's writing one straight through
/// (`backend::reply::WriteThrough`).
pub trait TryWrite {
    /// Writes what the socket takes now, without waiting (`WouldBlock` if nothing).
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize>;
}

impl<S: Plain> TryWrite for S {
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        Plain::try_write(self, bytes)
    }
}

macro_rules! plain {
    ($stream:ty) => {
        impl Plain for $stream {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_read_ready(self, cx)
            }
            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                <$stream>::try_read(self, buf)
            }
            fn try_read_buf(&self, input: &mut BytesMut) -> io::Result<usize> {
                <$stream>::try_read_buf(self, input)
            }
            fn is_read_ready(&self) -> bool {
                self.try_io(Interest::READABLE, || Ok(())).is_ok()
            }
            fn clear_read_ready(&self) {
                let drained = || Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock));
                let _ = self.try_io(Interest::READABLE, drained);
            }
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_write_ready(self, cx)
            }
            fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
                <$stream>::try_write(self, bytes)
            }
            fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                <$stream>::try_write_vectored(self, bufs)
            }
            fn shutdown_write(&self) -> io::Result<()> {
                socket2::SockRef::from(self).shutdown(std::net::Shutdown::Write)
            }
        }
    };
}

plain!(tokio::net::TcpStream);
plain!(tokio::net::UnixStream);

/// One half of a plain client stream that others hold too: its session reads and writes
/// through two of these, and hands the stream itself to the backend connection answering its
/// awaited reply, which writes the reply straight to it ([`crate::backend::reply::WriteThrough`]).
/// Reads and writes are tokio's own (`poll_*_ready`, then `try_*`).
pub struct Shared<S>(pub Rc<S>);

impl<S: Plain> Shared<S> {
    /// Waits for readiness with `ready`, then does `io`, until it does not find the stream
    /// drained.
    fn poll_io<T>(
        &self,
        cx: &mut Context<'_>,
        ready: fn(&S, &mut Context<'_>) -> Poll<io::Result<()>>,
        mut io: impl FnMut(&S) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            ready!(ready(&self.0, cx))?;
            match io(&self.0) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }
}

impl<S: Plain> AsyncRead for Shared<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = ready!(self.poll_io(cx, S::poll_read_ready, |s| s
            .try_read(buf.initialize_unfilled())))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: Plain> SocketRead for Shared<S> {
    fn is_read_ready(&self) -> bool {
        self.0.is_read_ready()
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>, input: &mut BytesMut) -> Poll<io::Result<usize>> {
        let room = input.capacity() - input.len();
        let n = ready!(self.poll_io(cx, S::poll_read_ready, |s| s.try_read_buf(input)))?;
        if n > 0 && n < room {
            // A short read drained the socket: the next read waits for the runtime to see it
            // readable again rather than finding it empty (as tokio's own halves do).
            self.0.clear_read_ready();
        }
        Poll::Ready(Ok(n))
    }
}

impl<S: Plain> AsyncWrite for Shared<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, S::poll_write_ready, |s| s.try_write(bytes))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, S::poll_write_ready, |s| s.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.shutdown_write())
    }
}

impl<S: Plain> SocketWrite for Shared<S> {}

/// In-memory streams for unit tests: no readiness to peek at, so always poll.
#[cfg(test)]
impl SocketRead for tokio::io::ReadHalf<tokio::io::DuplexStream> {
    fn is_read_ready(&self) -> bool {
        true
    }
}

#[cfg(test)]
impl SocketWrite for tokio::io::WriteHalf<tokio::io::DuplexStream> {}
