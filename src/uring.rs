//! Client sockets through io_uring (`--io uring`): one ring per worker thread, so that many
//! clients' receives and sends cross into the kernel in one `io_uring_enter` instead of one
//! `recv` and one `send` each.
//!
//! The worker's tokio runtime stays in charge: the ring's file descriptor sits in its epoll
//! set, and one driver task per worker submits what the sessions queued and hands each
//! completion to the session waiting for it. A session queues an operation without a syscall;
//! the driver, woken once for all of them, runs after the sessions woken in the same turn and
//! submits them together.
//!
//! Each client keeps at most one receive and one send in flight. A receive is queued again as
//! soon as the session has taken the bytes of the last one, so the next request usually
//! finds its receive already waiting in the kernel. A send takes a copy of the reply bytes:
//! the session counts them written, and its next write waits until the kernel took them all
//! (a short send is resubmitted by the driver), so what a client holds in flight is one
//! send of at most 256 KiB; the rest waits in the session's backlog, where
//! `client_output_hard_limit` counts it.
//!
//! This is the only module with `unsafe`: the kernel reads and writes the buffers of an
//! operation until its completion, so each buffer lives in a `Conn` that the ring's table
//! keeps alive until every operation on it completed, and is not touched meanwhile.
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use io_uring::{opcode, squeue, types, IoUring};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::socket::SocketRead;

/// Submission and completion queue entries per worker ring.
const ENTRIES: u32 = 4096;
/// A client's first receive buffer; it doubles, up to [`MAX_RECV`], when a receive fills it.
const FIRST_RECV: usize = 1024;
/// The largest receive buffer.
const MAX_RECV: usize = 64 * 1024;
/// The most bytes one send takes (and copies): the rest stays in the session's backlog, where
/// `client_output_hard_limit` counts it.
const MAX_SEND: usize = 256 * 1024;

/// Which operation of a connection a completion is for, in the low bits of its `user_data`.
const RECV: u64 = 0;
const SEND: u64 = 1;
const CANCEL: u64 = 2;

thread_local! {
    /// This worker's ring, once [`start`] made it.
    static RING: RefCell<Option<Ring>> = const { RefCell::new(None) };
}

/// A worker's ring and the connections with operations on it.
struct Ring {
    ring: IoUring,
    /// Connections by index (`user_data >> 2`); a freed index is reused.
    conns: Vec<Option<Rc<Conn>>>,
    free: Vec<usize>,
    /// Wakes the driver to submit what was queued.
    submit: Rc<Notify>,
    /// Whether the driver was already told.
    told: bool,
    /// The completions of one turn, reused.
    reaped: Vec<(u64, i32)>,
}

impl Ring {
    /// Queues `entry`; if the submission queue is full, submits first.
    fn push(&mut self, entry: &squeue::Entry) {
        // SAFETY: every entry pushed refers to a buffer owned by a `Conn` that `conns` holds
        // until the entry's completion, and that nothing touches while it is in flight.
        if unsafe { self.ring.submission().push(entry) }.is_err() {
            if let Err(error) = self.ring.submit() {
                tracing::warn!(%error, "io_uring: submit failed");
            }
            // SAFETY: as above.
            if unsafe { self.ring.submission().push(entry) }.is_err() {
                tracing::error!("io_uring: submission queue full after a submit");
            }
        }
        if !self.told {
            self.told = true;
            self.submit.notify_one();
        }
    }

    /// Submits what was queued; with `complete`, hands every completion to its connection.
    fn turn(&mut self, complete: bool) {
        self.told = false;
        if !self.ring.submission().is_empty() {
            if let Err(error) = self.ring.submit() {
                tracing::warn!(%error, "io_uring: submit failed");
            }
        }
        if !complete {
            return;
        }
        let mut reaped = std::mem::take(&mut self.reaped);
        reaped.extend(
            self.ring
                .completion()
                .map(|cqe| (cqe.user_data(), cqe.result())),
        );
        for (user_data, result) in reaped.drain(..) {
            let index = usize::try_from(user_data >> 2).unwrap_or(usize::MAX);
            let Some(conn) = self.conns.get(index).and_then(Clone::clone) else {
                continue;
            };
            match user_data & 3 {
                // A cancel's own completion: the receive it cancelled completes on its own.
                CANCEL => continue,
                RECV => conn.received(result),
                SEND => {
                    if let Some(entry) = conn.sent(result) {
                        self.push(&entry.user_data(user_data));
                    }
                }
                _ => {}
            }
            if conn.done() {
                self.remove(index);
            }
        }
        self.reaped = reaped;
    }

    /// Frees connection `index` (its operations all completed).
    fn remove(&mut self, index: usize) {
        if let Some(slot) = self.conns.get_mut(index) {
            if slot.take().is_some() {
                self.free.push(index);
            }
        }
    }

    fn insert(&mut self, conn: Rc<Conn>) -> usize {
        match self.free.pop() {
            Some(index) => {
                if let Some(slot) = self.conns.get_mut(index) {
                    *slot = Some(conn);
                }
                index
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // The kernel may still complete operations into these buffers while it tears the ring
        // down: leak the connections that have some in flight rather than free under it.
        for conn in self.conns.drain(..).flatten() {
            if !conn.done() {
                std::mem::forget(conn);
            }
        }
    }
}

/// Makes this worker's ring and starts its driver on the current worker's runtime.
///
/// # Errors
/// The kernel has no io_uring, or it is disabled (`kernel.io_uring_disabled`, seccomp).
pub fn start() -> io::Result<()> {
    // One thread submits (the worker's), and completions need not interrupt it: the driver
    // takes them when the ring turns readable. A kernel older than 6.0 refuses these flags and
    // gets a plain ring (slower: docs/bench/io_uring.md).
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(ENTRIES)
        .or_else(|error| {
            tracing::info!(%error, "io_uring: cooperative ring refused, using a plain one");
            IoUring::new(ENTRIES)
        })?;
    // Entering by a registered index spares the kernel a file-table lookup per submit.
    if let Err(error) = ring.submitter().register_ring_fd() {
        tracing::debug!(%error, "io_uring: ring fd not registered");
    }
    // SAFETY: the ring's descriptor stays open while the driver holds this registration: the
    // ring lives in this thread's `RING` until the thread exits, after its runtime (and the
    // driver task with it) is gone.
    let ready =
        unsafe { AsyncFd::register_with_interest(ring.as_raw_fd(), tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
    let submit = Rc::new(Notify::new());
    RING.with(|cell| {
        *cell.borrow_mut() = Some(Ring {
            ring,
            conns: Vec::new(),
            free: Vec::new(),
            submit: Rc::clone(&submit),
            told: false,
            reaped: Vec::new(),
        });
    });
    tokio::task::spawn_local(drive(ready, submit));
    Ok(())
}

/// Whether this worker has a ring.
pub fn active() -> bool {
    RING.with(|cell| cell.borrow().is_some())
}

/// The driver: submits what sessions queued when told, and takes completions when the ring
/// turns readable.
///
/// Completions are taken only on readiness, never right after a submit: readiness comes from
/// the same `epoll_wait` as the backend sockets' events, so a request never reaches a backend
/// connection before an event the backend sent earlier (a close of an idle connection, seen
/// first, sends the request to a fresh connection instead of a dead one).
async fn drive(ready: AsyncFd<RawFd>, submit: Rc<Notify>) {
    loop {
        tokio::select! {
            guard = ready.readable() => match guard {
                Ok(mut guard) => {
                    // Cleared before the completions are taken: one arriving after is a new
                    // edge.
                    guard.clear_ready();
                    with_ring(|ring| ring.turn(true));
                }
                Err(error) => {
                    tracing::error!(%error, "io_uring: the ring cannot be polled");
                    return;
                }
            },
            () = submit.notified() => {
                with_ring(|ring| ring.turn(false));
            }
        }
    }
}

/// Runs `f` on this worker's ring; `None` if there is none (or no longer, at thread exit).
fn with_ring<T>(f: impl FnOnce(&mut Ring) -> T) -> Option<T> {
    RING.try_with(|cell| cell.try_borrow_mut().ok()?.as_mut().map(f))
        .ok()
        .flatten()
}

/// One client socket's state, shared by its stream and the ring's table.
struct Conn {
    fd: OwnedFd,
    index: Cell<usize>,
    recv: RefCell<Recv>,
    send: RefCell<Send>,
    /// The stream was dropped: no new operations; freed once none is in flight.
    closed: Cell<bool>,
}

#[derive(Default)]
struct Recv {
    buf: Vec<u8>,
    /// Taken by the session so far, of `buf`'s bytes.
    taken: usize,
    in_flight: bool,
    /// The client closed (a receive of 0) or the socket failed.
    end: Option<Result<(), io::ErrorKind>>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Send {
    buf: Vec<u8>,
    sent: usize,
    in_flight: bool,
    error: Option<io::ErrorKind>,
    waker: Option<Waker>,
}

impl Conn {
    fn user_data(&self, op: u64) -> u64 {
        (u64::try_from(self.index.get()).unwrap_or(u64::MAX >> 2) << 2) | op
    }

    /// Queues a receive into an empty buffer, unless one is in flight or the stream ended.
    fn arm_recv(&self) {
        let mut recv = self.recv.borrow_mut();
        if recv.in_flight || recv.end.is_some() || self.closed.get() {
            return;
        }
        let size = match recv.buf.capacity() {
            0 => FIRST_RECV,
            full if recv.buf.len() == full => (full * 2).min(MAX_RECV),
            same => same,
        };
        recv.buf.clear();
        recv.buf.reserve_exact(size);
        recv.taken = 0;
        recv.in_flight = true;
        let len = u32::try_from(recv.buf.capacity()).unwrap_or(u32::MAX);
        let entry = opcode::Recv::new(types::Fd(self.fd.as_raw_fd()), recv.buf.as_mut_ptr(), len)
            .build()
            .user_data(self.user_data(RECV));
        drop(recv);
        with_ring(|ring| ring.push(&entry));
    }

    fn received(&self, result: i32) {
        let mut recv = self.recv.borrow_mut();
        recv.in_flight = false;
        match usize::try_from(result) {
            Ok(0) => recv.end = Some(Ok(())),
            Ok(n) => {
                let n = n.min(recv.buf.capacity());
                // SAFETY: the kernel wrote `n` bytes into the buffer, within its capacity.
                unsafe { recv.buf.set_len(n) };
            }
            // Cancelled because the stream was dropped: nobody reads on.
            Err(_) if self.closed.get() => recv.end = Some(Ok(())),
            Err(_) => recv.end = Some(Err(io::Error::from_raw_os_error(-result).kind())),
        }
        if let Some(waker) = recv.waker.take() {
            waker.wake();
        }
    }

    /// Handles a send's completion; the entry that sends the rest, if the kernel took part.
    fn sent(&self, result: i32) -> Option<squeue::Entry> {
        let mut send = self.send.borrow_mut();
        match usize::try_from(result) {
            Ok(n) if n > 0 => {
                send.sent += n;
                if send.sent < send.buf.len() {
                    let rest = send.buf.get(send.sent..).unwrap_or_default();
                    let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
                    return Some(
                        opcode::Send::new(types::Fd(self.fd.as_raw_fd()), rest.as_ptr(), len)
                            .flags(libc_msg_nosignal())
                            .build(),
                    );
                }
            }
            Ok(_) => send.error = Some(io::ErrorKind::WriteZero),
            Err(_) => send.error = Some(io::Error::from_raw_os_error(-result).kind()),
        }
        send.in_flight = false;
        if let Some(waker) = send.waker.take() {
            waker.wake();
        }
        None
    }

    fn done(&self) -> bool {
        self.closed.get() && !self.recv.borrow().in_flight && !self.send.borrow().in_flight
    }

    /// Starts sending `bytes` (a copy) if no send is in flight.
    fn start_send(&self, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let mut send = self.send.borrow_mut();
        if let Some(kind) = send.error {
            return Poll::Ready(Err(kind.into()));
        }
        if send.in_flight {
            return Poll::Pending;
        }
        if bytes.is_empty() {
            return Poll::Ready(Ok(0));
        }
        send.buf.clear();
        let bytes = bytes.get(..MAX_SEND).unwrap_or(bytes);
        send.buf.extend_from_slice(bytes);
        send.sent = 0;
        send.in_flight = true;
        let len = u32::try_from(send.buf.len()).unwrap_or(u32::MAX);
        let entry = opcode::Send::new(types::Fd(self.fd.as_raw_fd()), send.buf.as_ptr(), len)
            .flags(libc_msg_nosignal())
            .build()
            .user_data(self.user_data(SEND));
        drop(send);
        with_ring(|ring| ring.push(&entry));
        Poll::Ready(Ok(bytes.len()))
    }
}

/// `MSG_NOSIGNAL`: a client gone is an error on its send, not a SIGPIPE.
fn libc_msg_nosignal() -> i32 {
    0x4000
}

/// A client socket whose I/O goes through this worker's ring.
pub struct Stream {
    conn: Rc<Conn>,
}

impl Stream {
    /// Takes over `socket`, a connected TCP or Unix stream socket in blocking mode (the ring
    /// polls it itself).
    ///
    /// # Errors
    /// This worker has no ring.
    pub fn new(socket: OwnedFd) -> io::Result<Stream> {
        let conn = Rc::new(Conn {
            fd: socket,
            index: Cell::new(0),
            recv: RefCell::default(),
            send: RefCell::default(),
            closed: Cell::new(false),
        });
        let index = with_ring(|ring| ring.insert(Rc::clone(&conn)))
            .ok_or_else(|| io::Error::other("no io_uring on this worker"))?;
        conn.index.set(index);
        conn.arm_recv();
        Ok(Stream { conn })
    }

    /// The read and write halves.
    pub fn split(&self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        (ReadHalf(&self.conn), WriteHalf(&self.conn))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.conn.closed.set(true);
        if self.conn.recv.borrow().in_flight {
            let entry = opcode::AsyncCancel::new(self.conn.user_data(RECV))
                .build()
                .user_data(self.conn.user_data(CANCEL));
            with_ring(|ring| ring.push(&entry));
        } else if self.conn.done() {
            let index = self.conn.index.get();
            with_ring(|ring| ring.remove(index));
        }
    }
}

/// The read half of a [`Stream`].
pub struct ReadHalf<'a>(&'a Conn);

/// The write half of a [`Stream`].
pub struct WriteHalf<'a>(&'a Conn);

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let conn = self.0;
        let mut recv = conn.recv.borrow_mut();
        if recv.in_flight {
            recv.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let data = recv.buf.get(recv.taken..).unwrap_or_default();
        if !data.is_empty() {
            let n = data.len().min(out.remaining());
            out.put_slice(data.get(..n).unwrap_or_default());
            recv.taken += n;
            let drained = recv.taken == recv.buf.len();
            drop(recv);
            if drained {
                conn.arm_recv();
            }
            return Poll::Ready(Ok(()));
        }
        match recv.end {
            Some(Ok(())) => Poll::Ready(Ok(())),
            Some(Err(kind)) => Poll::Ready(Err(kind.into())),
            None => {
                recv.waker = Some(cx.waker().clone());
                drop(recv);
                conn.arm_recv();
                Poll::Pending
            }
        }
    }
}

impl SocketRead for ReadHalf<'_> {
    fn is_read_ready(&self) -> bool {
        let recv = self.0.recv.borrow();
        !recv.in_flight && (recv.taken < recv.buf.len() || recv.end.is_some())
    }
}

impl AsyncWrite for WriteHalf<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let conn = self.0;
        match conn.start_send(bytes) {
            Poll::Pending => {
                conn.send.borrow_mut().waker = Some(cx.waker().clone());
                Poll::Pending
            }
            ready => ready,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut send = self.0.send.borrow_mut();
        if send.in_flight {
            send.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        match send.error {
            Some(kind) => Poll::Ready(Err(kind.into())),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.as_mut().poll_flush(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(
                rustix::net::shutdown(&self.0.fd, rustix::net::Shutdown::Write)
                    .map_err(io::Error::from),
            ),
            other => other,
        }
    }
}

impl crate::socket::SocketWrite for WriteHalf<'_> {}

impl crate::proxy::session::ClientWrite for WriteHalf<'_> {
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        match self.0.start_send(bytes) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}
