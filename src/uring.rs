//! Client sockets through io_uring (`--io uring`): one ring per worker thread, so that many
//! clients' receives and sends cross into the kernel in one `io_uring_enter` instead of one
//! `recv` and one `send` each.
//!
//! The worker's tokio runtime stays in charge: the ring's file descriptor sits in its epoll
//! set, and one driver task per worker submits what the sessions queued and hands each
//! completion to the session waiting for it. A session queues an operation without a syscall
//! (but for the send described below); the driver, woken once for all of them, runs after the
//! sessions woken in the same turn and submits them together.
//!
//! Each client has one multishot receive armed from its accept on: the kernel receives into
//! the worker's ring of provided buffers whenever the client sends, with no submission per
//! request, and the driver copies each completion's bytes into the client's backlog and hands
//! the buffer straight back, so no client holds a buffer of the ring. A client whose backlog
//! the session has not taken passes 64 KiB has its receive cancelled, and armed again once
//! the session took it all: what a client can make the proxy hold stays bounded.
//!
//! A send takes a copy of the reply bytes: the session counts them written, and its next write
//! waits until the kernel took them all (a short send is resubmitted by the driver), so what a
//! client holds in flight is one send of at most 256 KiB; the rest waits in the session's
//! backlog, where `client_output_hard_limit` counts it. The first send after a driver turn
//! goes out at once with `send(2)`, from the session (or the backend connection writing a
//! reply through): a lone client then costs no driver wake-up. The ones after it wait for the
//! driver's turn and go to the kernel together in one `io_uring_enter`, or with `send(2)` if
//! one is all there is, which costs the kernel less than an enter and its completion.
//!
//! This is the only module with `unsafe`: the kernel reads and writes the buffers of an
//! operation until its completion, so each send buffer lives in a `Conn` that the ring's table
//! keeps alive until every operation on it completed, and is not touched meanwhile; the
//! provided buffers (2 MiB per worker) are never freed.
#![allow(unsafe_code)]

use std::alloc::{alloc_zeroed, Layout};
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll, Waker};

use io_uring::{opcode, squeue, types, IoUring};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::socket::{SocketRead, TryWrite};

/// Submission and completion queue entries per worker ring.
const ENTRIES: u32 = 4096;
/// Provided receive buffers per worker ring (a power of two, as the kernel requires).
const BUFFERS: u16 = 512;
/// The size of one provided buffer: [`BUFFERS`] of them make 2 MiB per worker.
const BUFFER_SIZE: usize = 4096;
/// The buffer group of the provided buffers.
const BUFFER_GROUP: u16 = 0;
/// Received bytes a client's session has not taken, past which its receive is cancelled.
const MAX_BACKLOG: usize = 64 * 1024;
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
    buffers: Buffers,
    /// Connections by index (`user_data >> 2`); a freed index is reused.
    conns: Vec<Option<Rc<Conn>>>,
    free: Vec<usize>,
    /// The driver's waker, to have it submit what was queued (set by its first poll).
    driver: Option<Waker>,
    /// Whether the driver was already told.
    told: bool,
    /// The completions of one turn, reused.
    reaped: Vec<(u64, i32, u32)>,
    /// Connections whose send waits for the driver's turn: one alone is sent at once with
    /// `send(2)`, several go to the kernel together in one `io_uring_enter`.
    sends: Vec<usize>,
    /// A send went out straight from its session since the driver's last turn.
    sent_inline: bool,
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
        self.tell();
    }

    /// Wakes the driver, unless it was already told.
    fn tell(&mut self) {
        if !self.told {
            self.told = true;
            if let Some(driver) = &self.driver {
                driver.wake_by_ref();
            }
        }
    }

    /// Starts connection `index`'s send. The first since the driver's last turn goes out at
    /// once with `send(2)`, sparing a lone client the driver's wake-up; the next ones wait for
    /// the driver's turn, so that many clients' sends still go together.
    fn start_send(&mut self, index: usize) {
        if self.sends.is_empty() && !self.sent_inline {
            self.sent_inline = true;
            self.send(index, true);
            return;
        }
        self.sends.push(index);
        self.tell();
    }

    /// Sends connection `index`'s send in flight: `at_once` with `send(2)` (the ring takes
    /// what the socket did not), else through the ring.
    fn send(&mut self, index: usize, at_once: bool) {
        let Some(conn) = self.conns.get(index).and_then(Clone::clone) else {
            return;
        };
        let entry = if at_once {
            conn.send_now()
        } else {
            Some(conn.send_entry())
        };
        if let Some(entry) = entry {
            self.push(&entry);
        }
        if conn.done() {
            self.remove(index);
        }
    }

    /// Starts the queued sends. A send with nothing else to submit goes out at once with
    /// `send(2)`, which costs the kernel less than an `io_uring_enter` and its completion; a
    /// send the socket cannot take whole, or several at once, goes through the ring.
    fn start_sends(&mut self) {
        let mut sends = std::mem::take(&mut self.sends);
        let alone = sends.len() == 1 && self.ring.submission().is_empty();
        for index in sends.drain(..) {
            self.send(index, alone);
        }
        self.sends = sends;
    }

    /// Submits what was queued; with `complete`, hands every completion to its connection.
    fn turn(&mut self, complete: bool) {
        self.sent_inline = false;
        self.start_sends();
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
                .map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())),
        );
        for (user_data, result, flags) in reaped.drain(..) {
            let buffer = io_uring::cqueue::buffer_select(flags);
            let index = usize::try_from(user_data >> 2).unwrap_or(usize::MAX);
            let conn = self.conns.get(index).and_then(Clone::clone);
            let Some(conn) = conn.filter(|_| user_data & 3 != CANCEL) else {
                // A cancel's own completion: the receive it cancelled completes on its own.
                if let Some(id) = buffer {
                    self.buffers.give_back(id);
                }
                continue;
            };
            match user_data & 3 {
                RECV => {
                    let more = io_uring::cqueue::more(flags);
                    let bytes = buffer.map_or(&[][..], |id| self.buffers.bytes(id, result));
                    let next = conn.received(result, more, bytes);
                    if let Some(id) = buffer {
                        self.buffers.give_back(id);
                    }
                    if let Some(entry) = next {
                        self.push(&entry);
                    }
                }
                SEND => {
                    if let Some(entry) = conn.sent(result) {
                        self.push(&entry);
                    }
                }
                _ => {}
            }
            if conn.done() {
                self.remove(index);
            }
        }
        self.buffers.publish();
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
    // takes them when the ring turns readable. A kernel older than 6.0 refuses these flags, and
    // has no multishot receive either: it serves through epoll.
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(ENTRIES)?;
    // Entering by a registered index spares the kernel a file-table lookup per submit.
    if let Err(error) = ring.submitter().register_ring_fd() {
        tracing::debug!(%error, "io_uring: ring fd not registered");
    }
    let buffers = Buffers::register(&ring)?;
    // SAFETY: the ring's descriptor stays open while the driver holds this registration: the
    // ring lives in this thread's `RING` until the thread exits, after its runtime (and the
    // driver task with it) is gone.
    let ready =
        unsafe { AsyncFd::register_with_interest(ring.as_raw_fd(), tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
    RING.with(|cell| {
        *cell.borrow_mut() = Some(Ring {
            ring,
            buffers,
            conns: Vec::new(),
            free: Vec::new(),
            driver: None,
            told: false,
            reaped: Vec::new(),
            sends: Vec::new(),
            sent_inline: false,
        });
    });
    tokio::task::spawn_local(drive(ready));
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
async fn drive(ready: AsyncFd<RawFd>) {
    // A plain future rather than a select over a `Notify`: the driver wakes twice per request
    // when a client is alone, and a waker called straight is the cheapest wake there is.
    std::future::poll_fn(|cx| {
        loop {
            match ready.poll_read_ready(cx) {
                Poll::Ready(Ok(mut guard)) => {
                    // Cleared before the completions are taken: one arriving after is a new
                    // edge.
                    guard.clear_ready();
                    with_ring(|ring| ring.turn(true));
                }
                Poll::Ready(Err(error)) => {
                    tracing::error!(%error, "io_uring: the ring cannot be polled");
                    return Poll::Ready(());
                }
                Poll::Pending => break,
            }
        }
        with_ring(|ring| {
            if !ring
                .driver
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                ring.driver = Some(cx.waker().clone());
            }
            if ring.told {
                ring.turn(false);
            }
        });
        Poll::Pending
    })
    .await;
}

/// Runs `f` on this worker's ring; `None` if there is none (or no longer, at thread exit).
fn with_ring<T>(f: impl FnOnce(&mut Ring) -> T) -> Option<T> {
    RING.try_with(|cell| cell.try_borrow_mut().ok()?.as_mut().map(f))
        .ok()
        .flatten()
}

/// The worker's provided receive buffers: a ring of [`BUFFERS`] entries the kernel takes
/// buffers from, and the buffers. Both are never freed: the kernel may still write into them
/// while it tears a ring down, and a worker's ring lasts as long as the process.
struct Buffers {
    /// The ring of entries, shared with the kernel (page-aligned).
    entries: NonNull<types::BufRingEntry>,
    /// The buffers, [`BUFFER_SIZE`] bytes each, buffer `id` at `id * BUFFER_SIZE`.
    memory: NonNull<u8>,
    /// The ring's tail as published next: the entries before it are the kernel's.
    tail: u16,
}

impl Buffers {
    /// Allocates the buffers, hands them all to the kernel and registers them with `ring`.
    fn register(ring: &IoUring) -> io::Result<Buffers> {
        let entries = Layout::from_size_align(
            usize::from(BUFFERS) * std::mem::size_of::<types::BufRingEntry>(),
            4096,
        )
        .map_err(io::Error::other)?;
        let memory = Layout::from_size_align(usize::from(BUFFERS) * BUFFER_SIZE, 64)
            .map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size; the memory is never freed (see above).
        let (entries, memory) = unsafe { (alloc_zeroed(entries), alloc_zeroed(memory)) };
        let (Some(entries), Some(memory)) = (
            NonNull::new(entries.cast::<types::BufRingEntry>()),
            NonNull::new(memory),
        ) else {
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let mut buffers = Buffers {
            entries,
            memory,
            tail: 0,
        };
        for id in 0..BUFFERS {
            buffers.give_back(id);
        }
        buffers.publish();
        let address = u64::try_from(entries.as_ptr().addr()).unwrap_or(u64::MAX);
        // SAFETY: the entries stay valid and in place as long as the ring (forever).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(address, BUFFERS, BUFFER_GROUP, 0)
        }?;
        Ok(buffers)
    }

    /// The first `len` bytes the kernel received into buffer `id`.
    fn bytes(&self, id: u16, len: i32) -> &[u8] {
        let len = usize::try_from(len).unwrap_or(0).min(BUFFER_SIZE);
        let id = usize::from(id % BUFFERS);
        // SAFETY: buffer `id` lies within the allocation; the kernel wrote `len` bytes into it
        // and no longer touches it until it is given back.
        unsafe { std::slice::from_raw_parts(self.memory.as_ptr().add(id * BUFFER_SIZE), len) }
    }

    /// Puts buffer `id` back at the ring's tail, for the kernel once published.
    fn give_back(&mut self, id: u16) {
        let id = id % BUFFERS;
        let slot = usize::from(self.tail % BUFFERS);
        // SAFETY: the slot lies within the ring, past the published tail, so the kernel does
        // not read it; the buffer lies within the allocation.
        unsafe {
            let entry = &mut *self.entries.as_ptr().add(slot);
            let buffer = self.memory.as_ptr().add(usize::from(id) * BUFFER_SIZE);
            entry.set_addr(u64::try_from(buffer.addr()).unwrap_or(u64::MAX));
            entry.set_len(u32::try_from(BUFFER_SIZE).unwrap_or(u32::MAX));
            entry.set_bid(id);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Hands the kernel the buffers given back so far.
    fn publish(&self) {
        // SAFETY: the tail field lies in the ring's first entry; the kernel reads it with an
        // acquire load, so the entries written before are seen.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries.as_ptr()).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
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
    /// Received bytes, copied out of the provided buffers.
    buf: Vec<u8>,
    /// Taken by the session so far, of `buf`'s bytes.
    taken: usize,
    /// A multishot receive is armed (until its last completion, the one without `MORE`).
    armed: bool,
    /// Its cancel was queued.
    cancelled: bool,
    /// The client closed (a receive of 0) or the socket failed.
    end: Option<Result<(), io::ErrorKind>>,
    waker: Option<Waker>,
}

impl Recv {
    /// Received bytes the session has not taken yet.
    fn backlog(&self) -> usize {
        self.buf.len() - self.taken
    }
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

    /// The entry that arms this client's multishot receive, unless one is armed, the stream
    /// ended, or the session has yet to take a full backlog.
    fn arm_entry(&self, recv: &mut Recv) -> Option<squeue::Entry> {
        if recv.armed || recv.end.is_some() || self.closed.get() || recv.backlog() > MAX_BACKLOG {
            return None;
        }
        recv.armed = true;
        recv.cancelled = false;
        Some(
            opcode::RecvMulti::new(types::Fd(self.fd.as_raw_fd()), BUFFER_GROUP)
                .build()
                .user_data(self.user_data(RECV)),
        )
    }

    /// The entry that cancels this client's receive, once.
    fn cancel_entry(&self, recv: &mut Recv) -> Option<squeue::Entry> {
        if !recv.armed || recv.cancelled {
            return None;
        }
        recv.cancelled = true;
        Some(
            opcode::AsyncCancel::new(self.user_data(RECV))
                .build()
                .user_data(self.user_data(CANCEL)),
        )
    }

    /// Arms the receive through the ring, if [`Conn::arm_entry`] says so.
    fn arm_recv(&self) {
        let entry = self.arm_entry(&mut self.recv.borrow_mut());
        if let Some(entry) = entry {
            with_ring(|ring| ring.push(&entry));
        }
    }

    /// Handles a receive's completion, `bytes` its data; the entry that arms the receive again
    /// (it ended for want of a buffer) or cancels it (the backlog is full).
    fn received(&self, result: i32, more: bool, bytes: &[u8]) -> Option<squeue::Entry> {
        let mut recv = self.recv.borrow_mut();
        if !more {
            recv.armed = false;
        }
        let readable = match result {
            0 => {
                recv.end = Some(Ok(()));
                true
            }
            // The reader clears the backlog once it took it all, so this appends to what is
            // left of it.
            1.. => {
                recv.buf.extend_from_slice(bytes);
                true
            }
            // The ring ran out of buffers for a moment: armed again below.
            error if error == -rustix::io::Errno::NOBUFS.raw_os_error() => false,
            // Cancelled by us: for the backlog (armed again once taken) or the stream's drop.
            error if error == -rustix::io::Errno::CANCELED.raw_os_error() && recv.cancelled => {
                false
            }
            error => {
                recv.end = Some(Err(io::Error::from_raw_os_error(-error).kind()));
                true
            }
        };
        // Only news for the reader wakes it: a reader woken for nothing waits on without
        // registering again (`socket::ArmedReader`).
        if readable {
            if let Some(waker) = recv.waker.take() {
                waker.wake();
            }
        }
        if recv.backlog() > MAX_BACKLOG {
            self.cancel_entry(&mut recv)
        } else {
            self.arm_entry(&mut recv)
        }
    }

    /// The ring entry that sends what is left of the send in flight.
    fn send_entry(&self) -> squeue::Entry {
        let send = self.send.borrow();
        let rest = send.buf.get(send.sent..).unwrap_or_default();
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        opcode::Send::new(types::Fd(self.fd.as_raw_fd()), rest.as_ptr(), len)
            .flags(libc_msg_nosignal())
            .build()
            .user_data(self.user_data(SEND))
    }

    /// Sends what is left of the send in flight with `send(2)`, without waiting; the ring
    /// entry for what the socket did not take.
    fn send_now(&self) -> Option<squeue::Entry> {
        let sent = {
            let send = self.send.borrow();
            let rest = send.buf.get(send.sent..).unwrap_or_default();
            rustix::net::send(
                &self.fd,
                rest,
                rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
            )
        };
        let result = match sent {
            Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
            Err(errno) if errno == rustix::io::Errno::AGAIN => return Some(self.send_entry()),
            Err(errno) => -errno.raw_os_error(),
        };
        self.sent(result)
    }

    /// Handles a send's result; the entry that sends the rest, if the socket took part.
    fn sent(&self, result: i32) -> Option<squeue::Entry> {
        let mut send = self.send.borrow_mut();
        match usize::try_from(result) {
            Ok(n) if n > 0 => {
                send.sent += n;
                if send.sent < send.buf.len() {
                    drop(send);
                    return Some(self.send_entry());
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
        self.closed.get() && !self.recv.borrow().armed && !self.send.borrow().in_flight
    }

    /// Starts sending `bytes` (a copy) if no send is in flight.
    fn start_send(&self, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let mut send = self.send.borrow_mut();
        if let Some(kind) = send.error {
            return Poll::Ready(Err(kind.into()));
        }
        // The stream was dropped (its session is over): a reply written through after that
        // has nobody to go to.
        if self.closed.get() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
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
        drop(send);
        let index = self.index.get();
        with_ring(|ring| ring.start_send(index));
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

    /// The socket as replies written straight to it see it (`Session::write_through`).
    pub fn writer(&self) -> Rc<dyn TryWrite> {
        Rc::clone(&self.conn) as Rc<dyn TryWrite>
    }

    /// The read and write halves.
    pub fn split(&self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        (ReadHalf(&self.conn), WriteHalf(&self.conn))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.conn.closed.set(true);
        let cancel = self.conn.cancel_entry(&mut self.conn.recv.borrow_mut());
        if let Some(entry) = cancel {
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
        let data = recv.buf.get(recv.taken..).unwrap_or_default();
        if !data.is_empty() {
            let n = data.len().min(out.remaining());
            out.put_slice(data.get(..n).unwrap_or_default());
            recv.taken += n;
            if recv.taken == recv.buf.len() {
                recv.buf.clear();
                recv.taken = 0;
                // A receive cancelled for the backlog starts again.
                drop(recv);
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
        recv.backlog() > 0 || recv.end.is_some()
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

impl TryWrite for WriteHalf<'_> {
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        self.0.try_write(bytes)
    }
}

impl TryWrite for Conn {
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        match self.start_send(bytes) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}
