//! One task per backend connection: it connects lazily (or at start with `preconnect`), sends
//! its setup commands (`AUTH`, `HELLO 3`, `SELECT`, `READONLY`), writes queued requests in
//! vectored batches, pairs each reply with the oldest waiting request (FIFO), enforces the
//! per-request timeout and `max_reply_bytes` (from a reply's header, before buffering it), keeps
//! the backend's queue gauges, and reconnects with backoff.
//!
//! When nothing is in flight on the whole worker, the session sending a request writes it to
//! a plain (TCP or unix) socket itself, and the task takes it over when the reply wakes it:
//! one client's request then costs one task poll fewer (`Queue::write_directly`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

use super::reply::{self, ReplyReceiver, ReplySender};
use super::{Error, Expect, Job, Patience};
use crate::clock::Tick;
use crate::config::BackendAddr;
use crate::metrics::Tally;
use crate::protocol::memcache;
use crate::protocol::resp::{ReplyScanner, Request};
use crate::security::tls::{self, BackendTls};
use crate::socket::{self, ArmedReader, Plain, SocketRead, SocketWrite};

/// Requests written but not yet answered on one connection; past it the connection stops
/// taking new jobs until replies drain (they wait in the channel, bounded by client limits).
const MAX_IN_FLIGHT: usize = 16 * 1024;

/// Reply bytes a connection reads in one poll before it lets the worker's other tasks run:
/// the sessions it delivered to then see what they hold, and a client past its
/// `client_output_hard_limit` is closed before more piles up for it (a backend that keeps its
/// socket full would otherwise be read for a whole cooperative budget, up to 128 reads).
const READ_PER_POLL: usize = 1024 * 1024;
/// Most frames handed to one `writev`.
const MAX_IOV: usize = 64;
/// First and largest pause between failed connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Bounds connecting when the pool has no `timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The backend's address.
    pub addr: BackendAddr,
    /// Sent as `AUTH` after connecting.
    pub auth: Option<String>,
    /// Sent as `SELECT` after connecting when not 0.
    pub db: u32,
    /// Sent `HELLO 3` after connecting: replies come in RESP3.
    pub resp3: bool,
    /// Sent `READONLY` after connecting: a Redis Cluster replica then serves reads.
    pub readonly: bool,
    /// Bound on connecting and on each request's reply.
    pub timeout: Option<Duration>,
    /// `SO_KEEPALIVE` on the socket.
    pub keepalive: bool,
    /// Largest reply accepted (`max_reply_bytes`): a longer one is refused from its header,
    /// fails its request and recycles the connection.
    pub max_reply_bytes: usize,
    /// TLS over the connection (`server_tls`), verifying the backend.
    pub tls: Option<BackendTls>,
}

/// Where a connection reports its traffic and failures (the pool: failure counts, metrics).
pub trait Report: Send + Sync + 'static {
    /// A connection attempt, or an established connection, failed with `error`: counts
    /// towards auto-eject.
    fn failed(&self, error: &Error);
    /// `requests` requests were answered with `error` instead of a reply.
    fn errored(&self, error: &Error, requests: usize);
    /// The backend answered.
    fn success(&self);
    /// A connection was established.
    fn connected(&self);
    /// An established connection closed.
    fn disconnected(&self);
    /// A connection attempt failed.
    fn connect_failed(&self);
    /// A fresh tally for one connection's traffic (requests, replies, latencies), flushed
    /// once per batch.
    fn tally(&self) -> Tally;
    /// Something to wait for before failed requests get their error replies: when the
    /// backend just reached its failure limit, the control plane's decision (ejection) being
    /// in force on every worker, so that the clients that see these errors send their next
    /// requests on the new map. `None`: reply at once.
    fn settle(&self) -> Option<Pin<Box<dyn Future<Output = ()> + '_>>> {
        None
    }
}

/// Waits for what `report` says failed requests must wait for, if anything.
async fn settle(report: &dyn Report) {
    if let Some(decided) = report.settle() {
        decided.await;
    }
}

/// Sends jobs to a connection task; once every clone is dropped the task knows no more will
/// come.
pub struct Handle {
    queue: Rc<Queue>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("queued", &self.queue.jobs.borrow().len())
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// Queues `frame`, whose reply looks like `expect` and may take the pool's `timeout`; the
    /// reply (or error) arrives on the returned receiver.
    pub fn send(&self, frame: Bytes, expect: Expect) -> ReplyReceiver {
        self.send_with(frame, expect, Patience::Timeout)
    }

    /// [`Handle::send`], the reply allowed to take as long as `patience` says.
    pub fn send_with(&self, frame: Bytes, expect: Expect, patience: Patience) -> ReplyReceiver {
        let (reply, receiver) = reply::channel();
        // Once the task is gone the job is dropped here, and its reply says `Closed`.
        if !self.queue.gone.get() {
            // Each branch builds its job where it goes.
            if self.queue.may_write_directly() {
                self.queue.write_directly(Job {
                    frame,
                    expect,
                    patience,
                    reply,
                });
            } else {
                self.queue.push_back(frame, expect, patience, reply);
            }
        }
        receiver
    }
}

impl Handle {
    /// Whether the connection task is gone: whatever is sent fails with [`Error::Closed`].
    pub fn is_closed(&self) -> bool {
        self.queue.gone.get()
    }
}

impl Clone for Handle {
    fn clone(&self) -> Handle {
        self.queue
            .handles
            .set(self.queue.handles.get().saturating_add(1));
        Handle {
            queue: Rc::clone(&self.queue),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let handles = self.queue.handles.get().saturating_sub(1);
        self.queue.handles.set(handles);
        if handles == 0 {
            self.queue.wake();
        }
    }
}

/// The jobs between the sessions and one connection task of a worker. Both sides run on the
/// worker's thread, so plain cells do: no atomics, no lock.
#[derive(Default)]
struct Queue {
    /// Jobs not yet taken by the task. Borrowed only inside this file's short methods, never
    /// across a call out, so the borrows cannot overlap.
    jobs: RefCell<VecDeque<Job>>,
    /// The task, while it waits for jobs.
    waker: Cell<Option<Waker>>,
    /// How many [`Handle`]s there are; none left: no more jobs will come.
    handles: Cell<usize>,
    /// The task is gone: jobs would never be served.
    gone: Cell<bool>,
    /// Frame bytes of the queued jobs (part of the backend's `in_queue_bytes`).
    bytes: Cell<usize>,
    /// The connected socket, when it is plain TCP or unix: a session may write to it itself.
    socket: RefCell<Option<Rc<dyn Plain>>>,
    /// The task lets a session write to `socket` itself (see [`Queue::write_directly`]).
    direct: Cell<bool>,
    /// Requests sessions wrote themselves, oldest first, each with what the socket did not
    /// take of its frame, for the task to take over.
    written: RefCell<VecDeque<(Waiting, Bytes)>>,
    /// Whether `written` holds any (checked by the task on each pass, without a borrow).
    wrote: Cell<bool>,
    /// The bound on each reply (the target's `timeout`).
    timeout: Option<Duration>,
}

impl Queue {
    fn new(target: &Target) -> Queue {
        Queue {
            handles: Cell::new(1),
            timeout: target.timeout,
            ..Queue::default()
        }
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Queues a job for the task, and wakes it. (Built here, the job is written in its slot
    /// in place: a dozen words not copied.) No session writes itself until the task took it:
    /// a later request must not overtake it.
    #[inline(always)]
    fn push_back(&self, frame: Bytes, expect: Expect, patience: Patience, reply: ReplySender) {
        self.direct.set(false);
        self.bytes.set(self.bytes.get().saturating_add(frame.len()));
        self.jobs.borrow_mut().push_back(Job {
            frame,
            expect,
            patience,
            reply,
        });
        self.wake();
    }

    /// Whether [`Queue::write_directly`] may write: the whole worker waits on no backend and
    /// has not lately (see [`CROWDED`]), and the task allows it.
    #[inline(always)]
    fn may_write_directly(&self) -> bool {
        if UNANSWERED.get() != 0 {
            CROWDED.set(CROWDED_FOR);
            return false;
        }
        match CROWDED.get() {
            0 => self.direct.get(),
            crowded => {
                CROWDED.set(crowded - 1);
                false
            }
        }
    }

    /// Writes `job`'s frame to the socket from the session sending it (when
    /// [`Queue::may_write_directly`]): the lone client's request then costs no wake-up and
    /// poll of the task (its reply wakes it, as any other). With requests in flight anywhere
    /// on the worker, jobs are queued instead, and the task writes what the sessions of a
    /// turn queued in one batch.
    ///
    /// The task allows it while it has nothing to write, no job is queued, and its timer is
    /// set (for an older request's deadline, or none is needed): replies then still pair with
    /// requests in the order written, and this request's deadline is still kept. It takes the
    /// request over at its next poll; if the socket did not take the whole frame, at once.
    fn write_directly(&self, job: Job) {
        let socket = self.socket.borrow();
        // A socket seen readable may hold the backend's close of an idle connection: the
        // task reads first, and sends the job on a fresh connection.
        let Some(socket) = socket.as_ref().filter(|socket| !socket.is_read_ready()) else {
            return self.push_back(job.frame, job.expect, job.patience, job.reply);
        };
        let mut frame = job.frame;
        let waiting = Waiting::new(
            Some(job.reply),
            job.expect,
            job.patience,
            self.timeout,
            Tick::now(),
            frame.len(),
        );
        // A failed write leaves the frame to the task, whose own write then fails.
        let written = socket.try_write(&frame).unwrap_or(0);
        frame.advance(written.min(frame.len()));
        if !frame.is_empty() {
            self.direct.set(false);
            self.wake();
        }
        self.written.borrow_mut().push_back((waiting, frame));
        self.wrote.set(true);
    }
}

/// The connection task's end of its [`Queue`].
struct Jobs {
    queue: Rc<Queue>,
}

impl Jobs {
    /// The oldest queued job, or `None` when none is queued and the handle is gone.
    async fn recv(&mut self) -> Option<Job> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Job>> {
        if let Some(job) = self.try_recv() {
            return Poll::Ready(Some(job));
        }
        if self.queue.handles.get() == 0 {
            return Poll::Ready(None);
        }
        reply::register(&self.queue.waker, cx);
        Poll::Pending
    }

    fn try_recv(&mut self) -> Option<Job> {
        let job = self.queue.jobs.borrow_mut().pop_front()?;
        let bytes = self.queue.bytes.get().saturating_sub(job.frame.len());
        self.queue.bytes.set(bytes);
        Some(job)
    }

    /// How many jobs are queued, and their frame bytes.
    fn queued(&self) -> (usize, usize) {
        (self.queue.jobs.borrow().len(), self.queue.bytes.get())
    }

    /// The oldest request a session wrote itself, and what is left to write of it.
    fn take_written(&mut self) -> Option<(Waiting, Bytes)> {
        let taken = self.queue.written.borrow_mut().pop_front();
        self.queue.wrote.set(taken.is_some());
        taken
    }

    /// Lets sessions write to `socket` themselves, when the task allows it, until the
    /// returned guard is dropped.
    fn share(&mut self, socket: Rc<dyn Plain>) -> Sharing<'_> {
        *self.queue.socket.borrow_mut() = Some(socket);
        Sharing { jobs: self }
    }

    /// Ends sessions' writing to the socket; what they wrote and the task did not take over
    /// (its connection ended meanwhile) fails with `Closed`.
    fn unshare(&self) {
        self.queue.direct.set(false);
        let socket = self.queue.socket.borrow_mut().take();
        drop(socket);
        let written = std::mem::take(&mut *self.queue.written.borrow_mut());
        self.queue.wrote.set(false);
        for (waiting, _) in written {
            if let Some(reply) = waiting.reply {
                reply.send(Err(Error::Closed));
            }
        }
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        self.queue.gone.set(true);
        self.unshare();
        // Dropped outside the borrow: each job's reply then says `Closed`.
        let jobs = std::mem::take(&mut *self.queue.jobs.borrow_mut());
        drop(jobs);
    }
}

/// The connection task's [`Jobs`] while sessions may write to its socket themselves.
struct Sharing<'a> {
    jobs: &'a mut Jobs,
}

impl Drop for Sharing<'_> {
    fn drop(&mut self) {
        self.jobs.unshare();
    }
}

/// Starts a connection task on the current worker's runtime. It ends when every clone of
/// its [`Handle`] is dropped and its in-flight requests are answered.
pub fn spawn(target: Arc<Target>, report: Arc<dyn Report>, preconnect: bool) -> Handle {
    spawn_with(target, report, preconnect, Dial)
}

/// [`spawn`] with the streams coming from `connector` instead of the network.
fn spawn_with<C: Connector>(
    target: Arc<Target>,
    report: Arc<dyn Report>,
    preconnect: bool,
    connector: C,
) -> Handle {
    let queue = Rc::new(Queue::new(&target));
    let jobs = Jobs {
        queue: Rc::clone(&queue),
    };
    tokio::task::spawn_local(run(target, report, jobs, preconnect, connector, false));
    Handle { queue }
}

/// Starts a dedicated connection task on the current worker's runtime: it connects at once
/// and never reconnects, so that a connection's state (a `WATCH`, a `MULTI`) is never
/// silently lost; once the connection ends every request still sent fails with
/// [`Error::Closed`]. `guard` lives as long as the task (a lease). The task ends when every
/// clone of its [`Handle`] is dropped and its requests are answered, or at once when aborted
/// through the returned handle (which closes the connection: the backend sees it go).
pub fn spawn_dedicated<G: 'static>(
    target: Arc<Target>,
    report: Arc<dyn Report>,
    guard: G,
) -> (Handle, tokio::task::AbortHandle) {
    let queue = Rc::new(Queue::new(&target));
    let jobs = Jobs {
        queue: Rc::clone(&queue),
    };
    let task = tokio::task::spawn_local(async move {
        let _guard = guard;
        run(target, report, jobs, true, Dial, true).await;
    });
    (Handle { queue }, task.abort_handle())
}

/// A handle with no connection task behind it, for session tests: the returned function takes
/// its queued jobs, which the test answers through their `reply`.
#[cfg(test)]
pub(crate) fn detached() -> (Handle, impl FnMut() -> Option<Job>) {
    let queue = Rc::new(Queue {
        handles: Cell::new(1),
        ..Queue::default()
    });
    let mut jobs = Jobs {
        queue: Rc::clone(&queue),
    };
    (Handle { queue }, move || jobs.try_recv())
}

/// The connection task; `once`: one connection only, never a reconnect (dedicated).
async fn run<C: Connector>(
    target: Arc<Target>,
    report: Arc<dyn Report>,
    mut jobs: Jobs,
    preconnect: bool,
    mut connector: C,
    once: bool,
) {
    let mut backoff = Backoff::default();
    let mut first = Vec::new();
    let mut connect_now = preconnect;
    // One tally for the task's life: its queue gauges then count every job it holds, while
    // connecting too, and dropping it takes them back.
    let mut tally = report.tally();
    loop {
        publish_queued(&mut tally, &first, &jobs);
        if !connect_now {
            let Some(job) = jobs.recv().await else {
                return;
            };
            first.push(job);
            while let Some(job) = jobs.try_recv() {
                first.push(job);
            }
        }
        connect_now = false;
        if let Some(error) = backoff.refusal() {
            // Refused while backing off: each request still fails because the backend is down,
            // so each counts towards auto-eject (in `errored`).
            report.errored(&error, first.len());
            settle(&*report).await;
            fail(first.drain(..), &error);
            continue;
        }
        publish_queued(&mut tally, &first, &jobs);
        let limit = target.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let attempt = match crate::timer::timeout(limit, connector.connect(&target)).await {
            Ok(attempt) => attempt,
            Err(_) => Err(connect_error(&target, io::ErrorKind::TimedOut)),
        };
        let outcome = match attempt {
            Ok(stream) => {
                backoff.reset();
                report.connected();
                let first = std::mem::take(&mut first);
                let outcome = stream
                    .serve(&target, &*report, &mut tally, first, &mut jobs)
                    .await;
                report.disconnected();
                outcome
            }
            Err(error) => {
                report.connect_failed();
                report.failed(&error);
                report.errored(&error, first.len());
                Err(error)
            }
        };
        match outcome {
            Ok(Ended::Shutdown) => return,
            Ok(Ended::Idle) => {}
            Err(error) => {
                if matches!(error, Error::Connect { .. } | Error::Tls { .. }) {
                    backoff.failed(error.clone());
                }
                tracing::debug!(backend = %target.addr, %error, "backend connection failed");
                if !first.is_empty() {
                    settle(&*report).await;
                }
                fail(first.drain(..), &error);
            }
        }
        if once {
            // What is still queued fails with `Closed` as the jobs are dropped.
            return;
        }
    }
}

/// Sets the queue gauges while no connection is up: every job held is still to be written.
fn publish_queued(tally: &mut Tally, first: &[Job], jobs: &Jobs) {
    let (queued, queued_bytes) = jobs.queued();
    let first_bytes: usize = first.iter().map(|job| job.frame.len()).sum();
    tally.queued(
        first.len() + queued,
        first_bytes.saturating_add(queued_bytes),
        0,
        0,
    );
    tally.flush();
}

fn fail(jobs: impl Iterator<Item = Job>, error: &Error) {
    for job in jobs {
        job.reply.send(Err(error.clone()));
    }
}

/// Refuses connection attempts for a while after one failed, doubling the pause.
#[derive(Debug, Default)]
struct Backoff {
    until: Option<(Instant, Error)>,
    pause: Duration,
}

impl Backoff {
    fn refusal(&self) -> Option<Error> {
        match &self.until {
            Some((until, error)) if Instant::now() < *until => Some(error.clone()),
            _ => None,
        }
    }

    fn failed(&mut self, error: Error) {
        self.pause = (self.pause * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        self.until = Some((Instant::now() + self.pause, error));
    }

    fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// Opens a connection's byte stream: the network in production ([`Dial`]), in-memory streams
/// in unit tests. Generic, so the production path is monomorphised: no dynamic dispatch.
trait Connector: 'static {
    /// What a connection runs over.
    type Stream: Transport;

    /// Opens one stream to `target`; the caller bounds the time it takes.
    fn connect(&mut self, target: &Target) -> impl Future<Output = Result<Self::Stream, Error>>;
}

/// A byte stream a [`Pipeline`] can run over once split into its two halves.
trait Transport {
    /// Runs the connected state until the connection ends.
    async fn serve(
        self,
        target: &Target,
        report: &dyn Report,
        tally: &mut Tally,
        first: Vec<Job>,
        jobs: &mut Jobs,
    ) -> Result<Ended, Error>;
}

/// Connects to the target's address over TCP or a unix socket.
struct Dial;

impl Connector for Dial {
    type Stream = Stream;

    async fn connect(&mut self, target: &Target) -> Result<Stream, Error> {
        let attempt = async {
            match &target.addr {
                BackendAddr::Tcp { host, port } => {
                    // `[::1]` stays bracketed in the config because nutcracker hashes it so.
                    let bare = host.trim_start_matches('[').trim_end_matches(']');
                    let stream = TcpStream::connect((bare, *port)).await?;
                    stream.set_nodelay(true)?;
                    if target.keepalive {
                        socket2::SockRef::from(&stream).set_keepalive(true)?;
                    }
                    Ok(Stream::Tcp(stream))
                }
                BackendAddr::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
            }
        };
        let stream = attempt
            .await
            .map_err(|error: io::Error| connect_error(target, error.kind()))?;
        let Some(tls) = &target.tls else {
            return Ok(stream);
        };
        let tcp = match (stream, &target.addr) {
            (Stream::Tcp(tcp), BackendAddr::Tcp { host, .. }) => tls.connect(host, tcp).await,
            // Validation refuses `server_tls` with a unix socket; never fall back to plaintext.
            _ => Err("server_tls applies to TCP backends only".into()),
        };
        match tcp {
            Ok(stream) => Ok(Stream::Tls(Box::new(stream))),
            Err(reason) => {
                // An operator's problem (a wrong CA, name or certificate), said at each
                // attempt; the backoff paces the attempts.
                tracing::warn!(backend = %target.addr, %reason, "TLS handshake with backend failed");
                Err(Error::Tls {
                    addr: Arc::from(target.addr.to_string()),
                    reason: Arc::from(reason),
                })
            }
        }
    }
}

/// A connected socket to a backend.
pub(crate) enum Stream {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over a unix socket.
    Unix(UnixStream),
    /// TLS over TCP (`server_tls`).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connects to `target`'s address as the pool's own connections do (`TCP_NODELAY`, keepalive,
/// TLS), within the pool's `timeout` (5 s without one); the caller does the setup it needs.
pub(crate) async fn dial(target: &Target) -> Result<Stream, Error> {
    let limit = target.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    match crate::timer::timeout(limit, Dial.connect(target)).await {
        Ok(connected) => connected,
        Err(_) => Err(connect_error(target, io::ErrorKind::TimedOut)),
    }
}

/// A failure to reach `target` (or to set its connection up).
fn connect_error(target: &Target, kind: io::ErrorKind) -> Error {
    Error::Connect {
        kind,
        addr: Arc::from(target.addr.to_string()),
    }
}

impl Transport for Stream {
    async fn serve(
        self,
        target: &Target,
        report: &dyn Report,
        tally: &mut Tally,
        first: Vec<Job>,
        jobs: &mut Jobs,
    ) -> Result<Ended, Error> {
        // A plain socket is shared with the sessions, which may write to it themselves.
        match self {
            Stream::Tcp(stream) => {
                let stream = Rc::new(stream);
                let (rd, wr) = (
                    socket::Shared(Rc::clone(&stream)),
                    socket::Shared(Rc::clone(&stream)),
                );
                let shared = jobs.share(stream);
                let pipeline = Pipeline::new(target, report, tally, rd, wr);
                pipeline.run(first, shared.jobs).await
            }
            Stream::Unix(stream) => {
                let stream = Rc::new(stream);
                let (rd, wr) = (
                    socket::Shared(Rc::clone(&stream)),
                    socket::Shared(Rc::clone(&stream)),
                );
                let shared = jobs.share(stream);
                let pipeline = Pipeline::new(target, report, tally, rd, wr);
                pipeline.run(first, shared.jobs).await
            }
            Stream::Tls(stream) => {
                let (rd, wr) = tls::split(*stream);
                let pipeline = Pipeline::new(target, report, tally, rd, wr);
                pipeline.run(first, jobs).await
            }
        }
    }
}

/// How a healthy connection ended.
enum Ended {
    /// Every handle is gone and every request answered.
    Shutdown,
    /// The backend closed an idle connection; the next request reconnects.
    Idle,
}

thread_local! {
    /// Requests this worker's backend connections hold unanswered, counted by the life of
    /// their [`Waiting`]: none means every connection of the worker is idle.
    static UNANSWERED: Cell<usize> = const { Cell::new(0) };
    /// How many more requests sent to an idle worker are queued rather than written by their
    /// sessions, since one was last sent with others in flight. Many clients drain the worker
    /// now and then (about one request in twenty with fifty clients), and the first session
    /// of the next turn would then write alone, a `send` outside the turn's batch: a sign of
    /// company keeps the sessions batching for a while.
    static CROWDED: Cell<u32> = const { Cell::new(0) };
}

/// What [`CROWDED`] is set to by a request sent with others in flight.
const CROWDED_FOR: u32 = 64;

/// One of [`UNANSWERED`], for as long as it lives.
struct Unanswered;

impl Unanswered {
    fn new() -> Unanswered {
        UNANSWERED.set(UNANSWERED.get().saturating_add(1));
        Unanswered
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        UNANSWERED.set(UNANSWERED.get().saturating_sub(1));
    }
}

/// A request written (or queued to be written) and waiting for its reply.
struct Waiting {
    reply: Option<ReplySender>,
    expect: Expect,
    sent: Tick,
    deadline: Option<Tick>,
    /// A blocking command: its reply time is the block's, kept out of the latency histogram.
    blocks: bool,
    /// The request frame's length (for the queue gauges).
    bytes: usize,
    /// Counts the request in [`UNANSWERED`] while the record lives.
    _counted: Unanswered,
}

impl Waiting {
    /// The record of a request of `bytes` sent at `sent` with `patience`, to a backend whose
    /// replies may take `timeout`.
    #[inline(always)]
    fn new(
        reply: Option<ReplySender>,
        expect: Expect,
        patience: Patience,
        timeout: Option<Duration>,
        sent: Tick,
        bytes: usize,
    ) -> Waiting {
        let deadline = match patience {
            Patience::Timeout => timeout.and_then(|t| sent.checked_add(t)),
            // Past what a `Tick` holds, the block is as good as forever.
            Patience::Longer(block) => {
                timeout.and_then(|t| sent.checked_add(t.saturating_add(block)))
            }
            Patience::Unbounded => None,
        };
        Waiting {
            reply,
            expect,
            sent,
            deadline,
            blocks: !matches!(patience, Patience::Timeout),
            bytes,
            _counted: Unanswered::new(),
        }
    }
}

/// The connected state: requests out, replies in, strictly in order.
struct Pipeline<'a, R, W> {
    target: &'a Target,
    report: &'a dyn Report,
    /// Traffic counted since the last poll, flushed at its end.
    tally: &'a mut Tally,
    rd: ArmedReader<R>,
    wr: W,
    /// Frames not yet (fully) written.
    unwritten: VecDeque<Bytes>,
    /// The bytes left in `unwritten`.
    unwritten_bytes: usize,
    /// Every request whose reply has not arrived, oldest first.
    waiting: VecDeque<Waiting>,
    /// The frame bytes of `waiting`'s requests, written or not.
    waiting_bytes: usize,
    input: BytesMut,
    resp: ReplyScanner,
    memcache: memcache::ReplyScanner,
    /// Replies read, to be written straight to their clients once the stats count them
    /// (kept for its allocation).
    through: Vec<(ReplySender, Bytes)>,
}

impl<'a, R: SocketRead, W: SocketWrite> Pipeline<'a, R, W> {
    fn new(target: &'a Target, report: &'a dyn Report, tally: &'a mut Tally, rd: R, wr: W) -> Self {
        Pipeline {
            target,
            report,
            tally,
            rd: ArmedReader::new(rd),
            wr,
            unwritten: VecDeque::new(),
            unwritten_bytes: 0,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            input: BytesMut::with_capacity(16 * 1024),
            resp: ReplyScanner::new(target.max_reply_bytes),
            memcache: memcache::ReplyScanner::new(target.max_reply_bytes),
            through: Vec::new(),
        }
    }

    async fn run(mut self, first: Vec<Job>, jobs: &mut Jobs) -> Result<Ended, Error> {
        self.handshake();
        let now = Tick::now();
        for job in first {
            self.push(job, now);
        }
        let outcome = self.pump(jobs).await;
        if let Err(error) = &outcome {
            let replies: Vec<ReplySender> =
                self.waiting.drain(..).filter_map(|w| w.reply).collect();
            self.report.failed(error);
            self.report.errored(error, replies.len());
            settle(self.report).await;
            for reply in replies {
                reply.send(Err(error.clone()));
            }
        }
        outcome
    }

    /// Queues `AUTH`, `HELLO 3`, `SELECT` and `READONLY` as the target needs; their replies
    /// are checked like any other, but go nowhere.
    fn handshake(&mut self) {
        let sent = Tick::now();
        let mut setup = Vec::new();
        if let Some(password) = &self.target.auth {
            setup.push(Request::from_args([&b"AUTH"[..], password.as_bytes()]));
        }
        if self.target.resp3 {
            setup.push(Request::from_args([&b"HELLO"[..], b"3"]));
        }
        if self.target.db != 0 {
            let db = self.target.db.to_string();
            setup.push(Request::from_args([&b"SELECT"[..], db.as_bytes()]));
        }
        if self.target.readonly {
            setup.push(Request::from_args([&b"READONLY"[..]]));
        }
        for request in setup {
            let frame = request.into_frame();
            let waiting = Waiting::new(
                None,
                Expect::Resp,
                Patience::Timeout,
                self.target.timeout,
                sent,
                frame.len(),
            );
            self.queue(waiting, frame);
        }
    }

    // `push` and `queue` are inlined into the pump by hand: out of line (as the compiler
    // chose once the pump grew) they cost about 50 instructions per GET.
    #[inline(always)]
    fn push(&mut self, job: Job, now: Tick) {
        self.tally.request(job.frame.len());
        let waiting = Waiting::new(
            Some(job.reply),
            job.expect,
            job.patience,
            self.target.timeout,
            now,
            job.frame.len(),
        );
        self.queue(waiting, job.frame);
    }

    /// Queues `waiting`'s reply and `unwritten`, what is left to write of its frame (all of
    /// it, or what a session writing it itself could not).
    #[inline(always)]
    fn queue(&mut self, waiting: Waiting, unwritten: Bytes) {
        self.waiting_bytes += waiting.bytes;
        self.waiting.push_back(waiting);
        if !unwritten.is_empty() {
            self.unwritten_bytes += unwritten.len();
            self.unwritten.push_back(unwritten);
        }
    }

    /// Sets the queue gauges (nutcracker's `in_queue` and `out_queue`): jobs not yet taken
    /// and frames not yet written are in, written requests awaiting their reply are out.
    fn publish_queues(&mut self, jobs: &Jobs) {
        let (queued, queued_bytes) = jobs.queued();
        let out = self.waiting.len().saturating_sub(self.unwritten.len());
        let out_bytes = self.waiting_bytes.saturating_sub(self.unwritten_bytes);
        self.tally.queued(
            queued + self.unwritten.len(),
            queued_bytes.saturating_add(self.unwritten_bytes),
            out,
            out_bytes,
        );
    }

    async fn pump(&mut self, jobs: &mut Jobs) -> Result<Ended, Error> {
        let mut state = Pump {
            open: true,
            timer: Box::pin(crate::timer::sleep(Duration::from_secs(3600))),
            armed: false,
            yielded: false,
        };
        std::future::poll_fn(|cx| {
            let poll = self.poll_pump(cx, jobs, &mut state);
            self.publish_queues(jobs);
            self.tally.flush();
            // Sessions may write themselves while nothing waits to be written before their
            // requests and the timer keeps their deadlines (see `Queue::write_directly`).
            let direct = poll.is_pending()
                && self.unwritten.is_empty()
                && (state.armed || self.target.timeout.is_none() || !self.waiting.is_empty())
                && jobs.queue.jobs.borrow().is_empty();
            jobs.queue.direct.set(direct);
            poll
        })
        .await
    }

    /// Takes jobs, writes, reads and delivers replies until none of them can go on; then the
    /// task sleeps until a job, the socket or the timer wakes it.
    ///
    /// Each source is polled until it is `Pending` (its waker registered), and the loop goes
    /// round again only for what may have changed since: a read that delivered (more may have
    /// come, and in-flight room was freed), a write that left frames unwritten, the handle's
    /// end, the timer firing. With one client that is one pass per request instead of two.
    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        jobs: &mut Jobs,
        state: &mut Pump,
    ) -> Poll<Result<Ended, Error>> {
        let mut read = 0;
        loop {
            // Requests sessions wrote themselves come before any job queued after them.
            if jobs.queue.wrote.get() {
                while let Some((waiting, unwritten)) = jobs.take_written() {
                    self.tally.request(waiting.bytes);
                    self.queue(waiting, unwritten);
                }
            }
            if !state.open && self.waiting.is_empty() {
                return Poll::Ready(Ok(Ended::Shutdown));
            }
            let mut again = false;
            let mut delivered = false;
            // Reads first, as before any new job: a backend that closed an idle connection is then
            // seen idle, and the job goes to a fresh connection instead of failing on this one.
            match self.rd.poll_read(cx, &mut self.input) {
                Poll::Ready(Ok(0)) if self.waiting.is_empty() => {
                    return Poll::Ready(Ok(Ended::Idle));
                }
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    return Poll::Ready(Err(Error::Closed));
                }
                Poll::Ready(Ok(n)) => {
                    if let Err(error) = self.deliver(jobs) {
                        return Poll::Ready(Err(error));
                    }
                    read += n;
                    again = true;
                    delivered = true;
                }
                Poll::Pending => {}
            }
            // Until the queue is empty (the waker registered) or the in-flight limit: a read
            // that delivers frees room, and comes round again.
            let mut now = None;
            while state.open && self.waiting.len() < MAX_IN_FLIGHT {
                match jobs.poll_recv(cx) {
                    Poll::Ready(Some(job)) => {
                        let now = *now.get_or_insert_with(Tick::now);
                        self.push(job, now);
                    }
                    Poll::Ready(None) => {
                        state.open = false;
                        again = true;
                    }
                    Poll::Pending => break,
                }
            }
            if delivered && !state.yielded && !self.unwritten.is_empty() {
                // Replies came in with this batch of readiness: the sessions woken with them
                // are queueing their next requests. Letting them run first sends them all in
                // one write.
                state.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !self.unwritten.is_empty() {
                match poll_write_some(&mut self.wr, cx, &mut self.unwritten) {
                    Poll::Ready(Ok(written)) => {
                        self.unwritten_bytes = self.unwritten_bytes.saturating_sub(written);
                        state.yielded = false;
                        // The socket took all it would, or all there was.
                        again |= !self.unwritten.is_empty();
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(Error::Closed)),
                    Poll::Pending => {}
                }
            }
            if self.wr.needs_flush() {
                if let Poll::Ready(Err(_)) = Pin::new(&mut self.wr).poll_flush(cx) {
                    return Poll::Ready(Err(Error::Closed));
                }
            }
            // Deadlines only grow along the queue, so a timer armed for an older request may
            // fire early but never late: it is re-armed only when it fires, not per reply.
            if !state.armed {
                let deadline = self.waiting.front().and_then(|w| w.deadline);
                if let Some(at) = deadline.and_then(Tick::instant) {
                    state.timer.as_mut().reset(at);
                    state.armed = true;
                }
            }
            if state.armed && state.timer.as_mut().poll(cx).is_ready() {
                state.armed = false;
                let expired = self.waiting.front().and_then(|w| w.deadline);
                if expired.is_some_and(|at| at <= Tick::now()) {
                    return Poll::Ready(Err(Error::Timeout));
                }
                again = true;
            }
            if read >= READ_PER_POLL {
                // Jobs taken and written, the rest waits for the next poll.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !again {
                return Poll::Pending;
            }
        }
    }

    /// Hands every complete reply in the input buffer to the oldest waiting request.
    ///
    /// A reply to be written straight to its client waits until the counters and queue
    /// gauges are published: what the client then reads from the stats must already count
    /// it. (A woken session runs after this poll, which publishes them at its end.)
    fn deliver(&mut self, jobs: &Jobs) -> Result<(), Error> {
        let now = Tick::now();
        let read = self.read_replies(now);
        if !self.through.is_empty() {
            self.publish_queues(jobs);
            self.tally.flush();
            for (sender, reply) in self.through.drain(..) {
                sender.send_at(Ok(reply), now);
            }
        }
        read?;
        if self.input.capacity() - self.input.len() < 4096 {
            self.input.reserve(16 * 1024);
        }
        Ok(())
    }

    /// Takes every complete reply off the input buffer, counts it, and hands it to its
    /// request (or queues it in `through`).
    fn read_replies(&mut self, now: Tick) -> Result<(), Error> {
        let mut answered = false;
        let read = loop {
            let Some(front) = self.waiting.front() else {
                if self.input.is_empty() {
                    break Ok(());
                }
                // Bytes nobody asked for: the stream is out of step.
                break Err(Error::Protocol);
            };
            let scanned = match front.expect {
                Expect::Resp => self.resp.scan(&self.input).map_err(drop),
                Expect::Memcache(kind) => self.memcache.scan(&self.input, kind).map_err(drop),
            };
            let len = match scanned {
                Ok(Some(len)) => len,
                Ok(None) => break Ok(()),
                Err(()) => break Err(Error::Protocol),
            };
            let reply = self.input.split_to(len).freeze();
            let Some(waiting) = self.waiting.pop_front() else {
                break Err(Error::Protocol);
            };
            self.waiting_bytes = self.waiting_bytes.saturating_sub(waiting.bytes);
            answered = true;
            match waiting.reply {
                Some(sender) => {
                    if waiting.blocks {
                        self.tally.blocked_response(reply.len());
                    } else {
                        self.tally
                            .response(reply.len(), now.seconds_since(waiting.sent));
                    }
                    if sender.writes_through() {
                        self.through.push((sender, reply));
                    } else {
                        sender.send_at(Ok(reply), now);
                    }
                }
                // Our own AUTH / SELECT: an error there means the backend is unusable.
                None if reply.first() == Some(&b'-') => {
                    tracing::warn!(backend = %self.target.addr, reply = %String::from_utf8_lossy(&reply).trim_end(), "backend refused connection setup");
                    break Err(connect_error(self.target, io::ErrorKind::PermissionDenied));
                }
                None => {}
            }
        };
        // Only a complete reply shows the backend healthy: one trickling bytes, or sending
        // garbage (even after good replies), must still count towards auto-eject.
        if answered && read.is_ok() {
            self.report.success();
        }
        read
    }
}

/// Writes as much of the queued frames as one vectored write takes; how many bytes it wrote.
fn poll_write_some<W: AsyncWrite + Unpin>(
    wr: &mut W,
    cx: &mut Context<'_>,
    queue: &mut VecDeque<Bytes>,
) -> Poll<io::Result<usize>> {
    let mut slices = [IoSlice::new(&[]); MAX_IOV];
    let mut count = 0;
    for (slot, frame) in slices.iter_mut().zip(queue.iter()) {
        *slot = IoSlice::new(frame);
        count += 1;
    }
    let mut written =
        match Pin::new(wr).poll_write_vectored(cx, slices.get(..count).unwrap_or_default()) {
            Poll::Ready(Ok(written)) => written,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => return Poll::Pending,
        };
    if written == 0 {
        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
    }
    let total = written;
    while written > 0 {
        let Some(front) = queue.front_mut() else {
            break;
        };
        if written >= front.len() {
            written -= front.len();
            queue.pop_front();
        } else {
            front.advance(written);
            written = 0;
        }
    }
    Poll::Ready(Ok(total))
}

/// The pump's state between polls.
struct Pump {
    /// Whether the handle is still there (jobs may come).
    open: bool,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Whether the timer is set for the oldest request's deadline.
    armed: bool,
    /// Whether the pump has let the worker's other tasks run once since its last write.
    yielded: bool,
}

#[cfg(test)]
mod tests {
    //! The connection task over in-memory streams and paused time: no network, no waiting.

    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::task::LocalSet;

    use super::*;
    use crate::metrics::{Metrics, PoolMetrics};

    const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
    const TIMEOUT: Duration = Duration::from_millis(500);

    impl Transport for DuplexStream {
        async fn serve(
            self,
            target: &Target,
            report: &dyn Report,
            tally: &mut Tally,
            first: Vec<Job>,
            jobs: &mut Jobs,
        ) -> Result<Ended, Error> {
            let (rd, wr) = tokio::io::split(self);
            Pipeline::new(target, report, tally, rd, wr)
                .run(first, jobs)
                .await
        }
    }

    /// Hands out the streams queued in it, one per attempt, and refuses once none is left;
    /// records when each attempt was made.
    #[derive(Clone, Default)]
    struct Script {
        streams: Rc<RefCell<VecDeque<DuplexStream>>>,
        attempts: Rc<RefCell<Vec<Instant>>>,
    }

    impl Script {
        /// Queues a stream for the next attempt; the backend's end of it.
        fn backend(&self) -> DuplexStream {
            self.backend_holding(64 * 1024)
        }

        /// [`Script::backend`], its stream holding up to `bytes` in each direction.
        fn backend_holding(&self, bytes: usize) -> DuplexStream {
            let (ours, theirs) = tokio::io::duplex(bytes);
            self.streams.borrow_mut().push_back(ours);
            theirs
        }

        fn attempts(&self) -> Vec<Instant> {
            self.attempts.borrow().clone()
        }
    }

    impl Connector for Script {
        type Stream = DuplexStream;

        async fn connect(&mut self, _target: &Target) -> Result<DuplexStream, Error> {
            self.attempts.borrow_mut().push(Instant::now());
            let next = self.streams.borrow_mut().pop_front();
            next.ok_or(Error::Connect {
                kind: io::ErrorKind::ConnectionRefused,
                addr: Arc::from("test"),
            })
        }
    }

    /// Records what the connection reports.
    struct Recorder {
        metrics: Arc<PoolMetrics>,
        failed: Mutex<Vec<Error>>,
        successes: Mutex<usize>,
    }

    impl Report for Recorder {
        fn failed(&self, error: &Error) {
            self.failed.lock().unwrap().push(error.clone());
        }
        fn errored(&self, _error: &Error, _requests: usize) {}
        fn success(&self) {
            *self.successes.lock().unwrap() += 1;
        }
        fn connected(&self) {}
        fn disconnected(&self) {}
        fn connect_failed(&self) {}
        fn tally(&self) -> Tally {
            self.metrics.tally(0)
        }
    }

    fn target() -> Arc<Target> {
        Arc::new(Target {
            addr: BackendAddr::Tcp {
                host: "backend".into(),
                port: 6379,
            },
            auth: None,
            db: 0,
            resp3: false,
            readonly: false,
            timeout: Some(TIMEOUT),
            keepalive: false,
            max_reply_bytes: 1024 * 1024,
            tls: None,
        })
    }

    fn start(script: &Script) -> (Handle, Arc<Recorder>) {
        let metrics = Metrics::new().pool("p", &["b".to_string()]);
        let recorder = Arc::new(Recorder {
            metrics,
            failed: Mutex::new(Vec::new()),
            successes: Mutex::new(0),
        });
        let report: Arc<dyn Report> = Arc::clone(&recorder) as Arc<dyn Report>;
        let handle = spawn_with(target(), report, false, script.clone());
        (handle, recorder)
    }

    fn get(key: &str) -> Bytes {
        Request::from_args([&b"GET"[..], key.as_bytes()])
            .frame()
            .clone()
    }

    /// Reads exactly `n` bytes from the backend's end.
    async fn read_exactly(backend: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        backend.read_exact(&mut buf).await.unwrap();
        buf
    }

    #[tokio::test(start_paused = true)]
    async fn replies_pair_with_requests_oldest_first() {
        LocalSet::new()
            .run_until(async {
                let script = Script::default();
                let mut backend = script.backend();
                let (handle, _) = start(&script);
                let frames = [get("a"), get("bb"), get("ccc")];
                let replies: Vec<_> = frames
                    .iter()
                    .map(|frame| handle.send(frame.clone(), Expect::Resp))
                    .collect();
                let sent: Vec<u8> = frames.concat();
                assert_eq!(read_exactly(&mut backend, sent.len()).await, sent);
                // Three replies, the second split across writes: each goes to its request.
                backend.write_all(b"$1\r\na\r\n$2\r\nb").await.unwrap();
                crate::timer::sleep(Duration::from_millis(10)).await;
                backend.write_all(b"b\r\n$3\r\nccc\r\n").await.unwrap();
                let mut got = Vec::new();
                for reply in replies {
                    got.push(reply.await.unwrap().unwrap());
                }
                assert_eq!(
                    got,
                    [&b"$1\r\na\r\n"[..], b"$2\r\nbb\r\n", b"$3\r\nccc\r\n"]
                );
                assert_eq!(script.attempts().len(), 1, "one connection for all");
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_that_keeps_its_socket_full_lets_other_tasks_run_past_a_mib() {
        LocalSet::new()
            .run_until(async {
                let script = Script::default();
                let mut backend = script.backend_holding(4 * 1024 * 1024);
                let (handle, _) = start(&script);
                // 24 replies of 64 KiB, all in the socket at once: 1.5 MiB, fewer reads than
                // a cooperative budget.
                const REPLIES: usize = 24;
                let mut replies: Vec<_> = (0..REPLIES)
                    .map(|_| handle.send(get("big"), Expect::Resp))
                    .collect();
                read_exactly(&mut backend, get("big").len() * REPLIES).await;
                let value = vec![b'x'; 64 * 1024];
                let one = [format!("${}\r\n", value.len()).as_bytes(), &value, b"\r\n"].concat();
                backend.write_all(&one.repeat(REPLIES)).await.unwrap();
                // Another task of the worker (as a session is): between its turns, how many
                // replies the connection had delivered.
                let observer = tokio::task::spawn_local(async move {
                    let mut seen = Vec::new();
                    let mut cx = Context::from_waker(std::task::Waker::noop());
                    let mut done = [false; REPLIES];
                    loop {
                        for (reply, done) in replies.iter_mut().zip(done.iter_mut()) {
                            if !*done {
                                if let Poll::Ready(outcome) = Pin::new(reply).poll(&mut cx) {
                                    assert_eq!(outcome.unwrap().unwrap(), one);
                                    *done = true;
                                }
                            }
                        }
                        seen.push(done.iter().filter(|d| **d).count());
                        if !done.contains(&false) {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    seen
                });
                let seen = observer.await.unwrap();
                assert!(
                    seen.iter().any(|&n| n > 0 && n < REPLIES),
                    "all delivered in one poll: {seen:?}"
                );
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_reply_times_out_and_the_connection_is_recycled() {
        LocalSet::new()
            .run_until(async {
                let script = Script::default();
                let mut first = script.backend();
                let mut second = script.backend();
                let (handle, recorder) = start(&script);
                let late = handle.send(get("late"), Expect::Resp);
                read_exactly(&mut first, get("late").len()).await;
                // No reply within the timeout: the request fails, the connection closes.
                assert_eq!(late.await.unwrap(), Err(Error::Timeout));
                assert_eq!(*recorder.failed.lock().unwrap(), [Error::Timeout]);
                let mut rest = Vec::new();
                assert_eq!(first.read_to_end(&mut rest).await.unwrap(), 0, "closed");
                // The late reply reaches nobody; the next request gets a fresh connection.
                let _ = first.write_all(b"$4\r\nlate\r\n").await;
                let next = handle.send(get("next"), Expect::Resp);
                read_exactly(&mut second, get("next").len()).await;
                second.write_all(b"$4\r\nnext\r\n").await.unwrap();
                assert_eq!(
                    next.await.unwrap(),
                    Ok(Bytes::from_static(b"$4\r\nnext\r\n"))
                );
                assert_eq!(script.attempts().len(), 2);
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_in_time_is_not_timed_out_by_an_older_deadline() {
        LocalSet::new()
            .run_until(async {
                let script = Script::default();
                let mut backend = script.backend();
                let (handle, recorder) = start(&script);
                for round in 0..4 {
                    // Each answered just before its deadline: no timeout, however many.
                    let reply = handle.send(PING.into(), Expect::Resp);
                    read_exactly(&mut backend, PING.len()).await;
                    crate::timer::sleep(TIMEOUT - Duration::from_millis(50)).await;
                    backend.write_all(b"+PONG\r\n").await.unwrap();
                    assert_eq!(
                        reply.await.unwrap(),
                        Ok(Bytes::from_static(b"+PONG\r\n")),
                        "round {round}"
                    );
                }
                assert!(recorder.failed.lock().unwrap().is_empty());
                assert_eq!(script.attempts().len(), 1);
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn failed_connects_back_off_doubling_up_to_the_cap_and_reset_on_success() {
        LocalSet::new()
            .run_until(async {
                let script = Script::default();
                let (handle, _) = start(&script);
                let started = Instant::now();
                // A request every 10 ms for 4 s, none can connect.
                let mut refused = 0;
                while started.elapsed() < Duration::from_secs(4) {
                    let reply = handle.send(PING.into(), Expect::Resp);
                    assert_eq!(
                        reply.await.unwrap(),
                        Err(Error::Connect {
                            kind: io::ErrorKind::ConnectionRefused,
                            addr: Arc::from("test")
                        })
                    );
                    refused += 1;
                    crate::timer::sleep(Duration::from_millis(10)).await;
                }
                let attempts = script.attempts();
                let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
                // Attempts only after each pause: 50, 100, 200, 400, 800 ms, then 1 s each.
                let wanted = [50, 100, 200, 400, 800, 1000];
                for (gap, want) in gaps.iter().zip(wanted) {
                    let want = Duration::from_millis(want);
                    assert!(
                        *gap >= want && *gap < want + Duration::from_millis(20),
                        "gaps {gaps:?}"
                    );
                }
                assert!(gaps.len() >= 5, "gaps {gaps:?}");
                assert!(
                    refused > attempts.len() * 10,
                    "most requests refused at once"
                );
                // Once a connection succeeds the pause starts over.
                crate::timer::sleep(BACKOFF_MAX).await;
                let mut backend = script.backend();
                let reply = handle.send(PING.into(), Expect::Resp);
                read_exactly(&mut backend, PING.len()).await;
                backend.write_all(b"+PONG\r\n").await.unwrap();
                assert_eq!(reply.await.unwrap(), Ok(Bytes::from_static(b"+PONG\r\n")));
                drop(backend);
                // The backend closed the idle connection: the next attempt fails, and the
                // one after it may come 50 ms later again.
                crate::timer::sleep(Duration::from_millis(10)).await;
                let before = script.attempts().len();
                let reply = handle.send(PING.into(), Expect::Resp);
                assert!(reply.await.unwrap().is_err());
                crate::timer::sleep(BACKOFF_MIN).await;
                let reply = handle.send(PING.into(), Expect::Resp);
                assert!(reply.await.unwrap().is_err());
                assert_eq!(script.attempts().len(), before + 2, "50 ms after a reset");
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_reply_that_never_completes_is_no_success() {
        LocalSet::new()
            .run_until(async {
                let script = Script::default();
                let mut backend = script.backend();
                let (handle, recorder) = start(&script);
                let reply = handle.send(get("k"), Expect::Resp);
                read_exactly(&mut backend, get("k").len()).await;
                // Four bytes within the 500 ms timeout, then the connection is gone.
                for byte in b"$5\r\nhel" {
                    if backend.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    crate::timer::sleep(Duration::from_millis(100)).await;
                }
                assert_eq!(reply.await.unwrap(), Err(Error::Timeout));
                // Bytes came, no reply did: nothing may reset the backend's failure count.
                assert_eq!(*recorder.successes.lock().unwrap(), 0);
                assert_eq!(*recorder.failed.lock().unwrap(), [Error::Timeout]);
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn garbage_after_a_good_reply_in_one_read_is_no_success() {
        LocalSet::new()
            .run_until(async {
                let script = Script::default();
                let mut backend = script.backend();
                let (handle, recorder) = start(&script);
                let first = handle.send(get("a"), Expect::Resp);
                let second = handle.send(get("b"), Expect::Resp);
                read_exactly(&mut backend, 2 * get("a").len()).await;
                backend.write_all(b"$1\r\nv\r\n!garbage\r\n").await.unwrap();
                // The complete reply is still handed over; the stream out of step fails the
                // rest, and does not count as the backend answering well.
                assert_eq!(first.await.unwrap(), Ok(Bytes::from_static(b"$1\r\nv\r\n")));
                assert_eq!(second.await.unwrap(), Err(Error::Protocol));
                assert_eq!(*recorder.successes.lock().unwrap(), 0);
                assert_eq!(*recorder.failed.lock().unwrap(), [Error::Protocol]);
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_over_max_reply_bytes_fails_its_request_from_the_header() {
        LocalSet::new()
            .run_until(async {
                let script = Script::default();
                let mut backend = script.backend();
                let mut again = script.backend();
                let (handle, recorder) = start(&script);
                let reply = handle.send(get("big"), Expect::Resp);
                read_exactly(&mut backend, get("big").len()).await;
                backend.write_all(b"$2000000\r\nxx").await.unwrap();
                assert_eq!(reply.await.unwrap(), Err(Error::Protocol));
                assert_eq!(*recorder.failed.lock().unwrap(), [Error::Protocol]);
                let reply = handle.send(PING.into(), Expect::Resp);
                read_exactly(&mut again, PING.len()).await;
                again.write_all(b"+PONG\r\n").await.unwrap();
                assert_eq!(reply.await.unwrap(), Ok(Bytes::from_static(b"+PONG\r\n")));
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn queue_gauges_count_unwritten_and_unanswered_requests() {
        LocalSet::new()
            .run_until(async {
                let script = Script::default();
                let mut backend = script.backend();
                let (handle, recorder) = start(&script);
                let gauges = |r: &Recorder| {
                    let b = r.metrics.backend(0).unwrap();
                    [
                        b.in_queue.get(),
                        b.in_queue_bytes.get(),
                        b.out_queue.get(),
                        b.out_queue_bytes.get(),
                    ]
                };
                let replies: Vec<_> = (0..3)
                    .map(|_| handle.send(PING.into(), Expect::Resp))
                    .collect();
                read_exactly(&mut backend, 3 * PING.len()).await;
                tokio::task::yield_now().await;
                let out = 3 * PING.len() as i64;
                assert_eq!(gauges(&recorder), [0, 0, 3, out]);
                backend
                    .write_all(b"+PONG\r\n+PONG\r\n+PONG\r\n")
                    .await
                    .unwrap();
                for reply in replies {
                    assert!(reply.await.unwrap().is_ok());
                }
                tokio::task::yield_now().await;
                assert_eq!(gauges(&recorder), [0, 0, 0, 0]);
                drop(handle);
                crate::timer::sleep(Duration::from_millis(10)).await;
                assert_eq!(gauges(&recorder), [0, 0, 0, 0], "the task ended");
            })
            .await;
    }

    /// A backend on a loopback socket, and a connection to it: the only kind a session may
    /// write to itself.
    async fn loopback(
        timeout: Option<Duration>,
    ) -> (tokio::net::TcpListener, Handle, Arc<Recorder>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(Target {
            addr: BackendAddr::Tcp {
                host: "127.0.0.1".into(),
                port,
            },
            timeout,
            ..(*target()).clone()
        });
        let recorder = Arc::new(Recorder {
            metrics: Metrics::new().pool("p", &["b".to_string()]),
            failed: Mutex::new(Vec::new()),
            successes: Mutex::new(0),
        });
        let report: Arc<dyn Report> = Arc::clone(&recorder) as Arc<dyn Report>;
        let handle = spawn_with(target, report, false, Dial);
        (listener, handle, recorder)
    }

    /// Reads exactly `n` bytes from the backend's end, blocking the thread (and so every task
    /// of the test): what arrives was written before the call, not by the connection task.
    fn read_blocking(backend: &tokio::net::TcpStream, n: usize) -> Vec<u8> {
        use std::io::Read;
        let fd = socket2::SockRef::from(backend).try_clone().unwrap();
        fd.set_nonblocking(false).unwrap();
        fd.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = vec![0; n];
        let mut stream = std::net::TcpStream::from(fd);
        stream.read_exact(&mut got).unwrap();
        // The flag is the socket's, shared with the backend's tokio stream.
        stream.set_nonblocking(true).unwrap();
        got
    }

    /// A loopback backend, and a connection to it made and answered once: idle, so the next
    /// request is written by its sender.
    async fn idle_connection(
        timeout: Option<Duration>,
    ) -> (
        tokio::net::TcpListener,
        tokio::net::TcpStream,
        Handle,
        Arc<Recorder>,
    ) {
        let (listener, handle, recorder) = loopback(timeout).await;
        let reply = handle.send(PING.into(), Expect::Resp);
        let (mut backend, _) = listener.accept().await.unwrap();
        assert_eq!(read_exactly_tcp(&mut backend, PING.len()).await, PING);
        backend.write_all(b"+PONG\r\n").await.unwrap();
        assert_eq!(reply.await.unwrap(), Ok(Bytes::from_static(b"+PONG\r\n")));
        tokio::task::yield_now().await;
        (listener, backend, handle, recorder)
    }

    async fn read_exactly_tcp(backend: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        backend.read_exact(&mut buf).await.unwrap();
        buf
    }

    #[tokio::test]
    async fn a_request_to_an_idle_worker_is_written_by_its_sender_and_pairs_as_any_other_until_it_gets_crowded(
    ) {
        LocalSet::new()
            .run_until(async {
                let (_, mut backend, handle, recorder) = idle_connection(None).await;
                // Written during `send`: the backend has it before the task could run.
                let first = handle.send(get("a"), Expect::Resp);
                assert_eq!(read_blocking(&backend, get("a").len()), get("a"));
                // With that one unanswered, the next two are queued for the task, behind it.
                let second = handle.send(get("bb"), Expect::Resp);
                let third = handle.send(get("ccc"), Expect::Resp);
                let queued = [get("bb"), get("ccc")].concat();
                assert_eq!(read_exactly_tcp(&mut backend, queued.len()).await, queued);
                backend
                    .write_all(b"$1\r\na\r\n$2\r\nbb\r\n$3\r\nccc\r\n")
                    .await
                    .unwrap();
                assert_eq!(first.await.unwrap(), Ok(Bytes::from_static(b"$1\r\na\r\n")));
                assert_eq!(
                    second.await.unwrap(),
                    Ok(Bytes::from_static(b"$2\r\nbb\r\n"))
                );
                assert_eq!(
                    third.await.unwrap(),
                    Ok(Bytes::from_static(b"$3\r\nccc\r\n"))
                );
                // Counted as any other request: the PING and these three.
                tokio::task::yield_now().await;
                let b = recorder.metrics.backend(0).unwrap();
                assert_eq!(b.requests.get(), 4);
                assert_eq!(b.responses.get(), 4);
                assert_eq!([b.in_queue.get(), b.out_queue.get()], [0, 0]);
                // Idle again, but lately crowded: the next few are queued for the task...
                for round in 0..CROWDED_FOR {
                    let reply = handle.send(get("d"), Expect::Resp);
                    assert!(!handle.queue.wrote.get(), "round {round} queued");
                    assert_eq!(
                        read_exactly_tcp(&mut backend, get("d").len()).await,
                        get("d")
                    );
                    backend.write_all(b"$-1\r\n").await.unwrap();
                    assert_eq!(reply.await.unwrap(), Ok(Bytes::from_static(b"$-1\r\n")));
                    tokio::task::yield_now().await;
                }
                // ...then a lone one is written by its sender again.
                let alone = handle.send(get("e"), Expect::Resp);
                assert!(handle.queue.wrote.get());
                assert_eq!(read_blocking(&backend, get("e").len()), get("e"));
                backend.write_all(b"$-1\r\n").await.unwrap();
                assert_eq!(alone.await.unwrap(), Ok(Bytes::from_static(b"$-1\r\n")));
            })
            .await;
    }

    #[tokio::test]
    async fn a_queued_request_is_never_overtaken_by_one_its_sender_writes() {
        LocalSet::new()
            .run_until(async {
                let (_, mut backend, handle, _) = idle_connection(None).await;
                // The last lone request the crowding rule holds back is queued...
                CROWDED.set(1);
                let first = handle.send(get("a"), Expect::Resp);
                // ...and the next, lone too, is queued behind it rather than written first.
                let second = handle.send(get("bb"), Expect::Resp);
                assert!(!handle.queue.wrote.get());
                let sent = [get("a"), get("bb")].concat();
                assert_eq!(read_exactly_tcp(&mut backend, sent.len()).await, sent);
                backend.write_all(b"$1\r\na\r\n$2\r\nbb\r\n").await.unwrap();
                assert_eq!(first.await.unwrap(), Ok(Bytes::from_static(b"$1\r\na\r\n")));
                assert_eq!(
                    second.await.unwrap(),
                    Ok(Bytes::from_static(b"$2\r\nbb\r\n"))
                );
            })
            .await;
    }

    #[tokio::test]
    async fn a_request_its_sender_wrote_still_times_out() {
        LocalSet::new()
            .run_until(async {
                let timeout = Duration::from_millis(300);
                let (_, backend, handle, recorder) = idle_connection(Some(timeout)).await;
                // The timer, set for the PING, keeps this one's deadline too.
                let reply = handle.send(get("a"), Expect::Resp);
                assert_eq!(read_blocking(&backend, get("a").len()), get("a"));
                let waited = crate::timer::timeout(Duration::from_secs(30), reply).await;
                assert_eq!(waited.expect("no hang").unwrap(), Err(Error::Timeout));
                assert_eq!(*recorder.failed.lock().unwrap(), [Error::Timeout]);
            })
            .await;
    }

    #[tokio::test]
    async fn a_frame_the_socket_does_not_take_whole_is_finished_by_the_task_in_order() {
        LocalSet::new()
            .run_until(async {
                let (_, mut backend, handle, _) = idle_connection(None).await;
                // Far more than the socket buffers hold while the backend reads nothing.
                let value = vec![b'v'; 8 * 1024 * 1024];
                let big = Request::from_args([&b"SET"[..], b"k", &value])
                    .frame()
                    .clone();
                let set = handle.send(big.clone(), Expect::Resp);
                assert!(
                    handle.queue.wrote.get() && !handle.queue.direct.get(),
                    "written in part by its sender, the rest left to the task"
                );
                let read = handle.send(get("k"), Expect::Resp);
                let sent = [big, get("k")].concat();
                assert_eq!(read_exactly_tcp(&mut backend, sent.len()).await, sent);
                backend.write_all(b"+OK\r\n$1\r\nv\r\n").await.unwrap();
                assert_eq!(set.await.unwrap(), Ok(Bytes::from_static(b"+OK\r\n")));
                assert_eq!(read.await.unwrap(), Ok(Bytes::from_static(b"$1\r\nv\r\n")));
            })
            .await;
    }

    #[tokio::test]
    async fn after_the_backend_closes_an_idle_connection_the_next_request_goes_on_a_new_one() {
        LocalSet::new()
            .run_until(async {
                let (listener, backend, handle, recorder) = idle_connection(None).await;
                drop(backend);
                // Once the task saw the close, nobody writes to that socket any more.
                let closed = crate::timer::timeout(Duration::from_secs(30), async {
                    while handle.queue.socket.borrow().is_some() {
                        crate::timer::sleep(Duration::from_millis(5)).await;
                    }
                });
                closed.await.expect("the task sees the close");
                let reply = handle.send(PING.into(), Expect::Resp);
                let (mut backend, _) = listener.accept().await.unwrap();
                assert_eq!(read_exactly_tcp(&mut backend, PING.len()).await, PING);
                backend.write_all(b"+PONG\r\n").await.unwrap();
                assert_eq!(reply.await.unwrap(), Ok(Bytes::from_static(b"+PONG\r\n")));
                assert!(recorder.failed.lock().unwrap().is_empty());
            })
            .await;
    }
}
