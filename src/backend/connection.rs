//! One task per backend connection: it connects lazily (or at start with `preconnect`), sends
//! its setup commands (`AUTH`, `HELLO 3`, `SELECT`, `READONLY`), writes queued requests in
//! vectored batches, pairs each reply with the oldest waiting request (FIFO), enforces the
//! per-request timeout, and reconnects with backoff.

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
use super::{Error, Expect, Job};
use crate::config::BackendAddr;
use crate::metrics::Tally;
use crate::protocol::memcache;
use crate::protocol::resp::{ReplyScanner, Request};
use crate::socket::{ArmedReader, SocketRead};

/// Requests written but not yet answered on one connection; past it the connection stops
/// taking new jobs until replies drain (they wait in the channel, bounded by client limits).
const MAX_IN_FLIGHT: usize = 16 * 1024;
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
    /// Queues `frame`, whose reply looks like `expect`; the reply (or error) arrives on the
    /// returned receiver.
    pub fn send(&self, frame: Bytes, expect: Expect) -> ReplyReceiver {
        let (reply, receiver) = reply::channel();
        // Once the task is gone the job is dropped here, and its reply says `Closed`.
        if !self.queue.gone.get() {
            self.queue.jobs.borrow_mut().push_back(Job {
                frame,
                expect,
                reply,
            });
            self.queue.wake();
        }
        receiver
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
}

impl Queue {
    fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
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
        self.queue.jobs.borrow_mut().pop_front()
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        self.queue.gone.set(true);
        // Dropped outside the borrow: each job's reply then says `Closed`.
        let jobs = std::mem::take(&mut *self.queue.jobs.borrow_mut());
        drop(jobs);
    }
}

/// Starts a connection task on the current worker's `LocalSet`. It ends when every clone of
/// its [`Handle`] is dropped and its in-flight requests are answered.
pub fn spawn(target: Arc<Target>, report: Arc<dyn Report>, preconnect: bool) -> Handle {
    let queue = Rc::new(Queue {
        handles: Cell::new(1),
        ..Queue::default()
    });
    let jobs = Jobs {
        queue: Rc::clone(&queue),
    };
    tokio::task::spawn_local(run(target, report, jobs, preconnect));
    Handle { queue }
}

async fn run(target: Arc<Target>, report: Arc<dyn Report>, mut jobs: Jobs, preconnect: bool) {
    let mut backoff = Backoff::default();
    let mut first = Vec::new();
    let mut connect_now = preconnect;
    loop {
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
        let outcome = match connect(&target).await {
            Ok(stream) => {
                backoff.reset();
                report.connected();
                let outcome = stream
                    .serve(&target, &*report, std::mem::take(&mut first), &mut jobs)
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
                if matches!(error, Error::Connect { .. }) {
                    backoff.failed(error.clone());
                }
                tracing::debug!(backend = %target.addr, %error, "backend connection failed");
                if !first.is_empty() {
                    settle(&*report).await;
                }
                fail(first.drain(..), &error);
            }
        }
    }
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

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

async fn connect(target: &Target) -> Result<Stream, Error> {
    let limit = target.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let attempt = async {
        match &target.addr {
            BackendAddr::Tcp { host, port } => {
                // `[::1]` stays bracketed in the config because nutcracker hashes it so.
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let stream = TcpStream::connect((host, *port)).await?;
                stream.set_nodelay(true)?;
                if target.keepalive {
                    socket2::SockRef::from(&stream).set_keepalive(true)?;
                }
                Ok(Stream::Tcp(stream))
            }
            BackendAddr::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        }
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(connect_error(target, io::Error::kind(&error))),
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

impl Stream {
    async fn serve(
        mut self,
        target: &Target,
        report: &dyn Report,
        first: Vec<Job>,
        jobs: &mut Jobs,
    ) -> Result<Ended, Error> {
        match &mut self {
            Stream::Tcp(stream) => {
                let (rd, wr) = stream.split();
                Pipeline::new(target, report, rd, wr).run(first, jobs).await
            }
            Stream::Unix(stream) => {
                let (rd, wr) = stream.split();
                Pipeline::new(target, report, rd, wr).run(first, jobs).await
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

/// A request written (or queued to be written) and waiting for its reply.
struct Waiting {
    reply: Option<ReplySender>,
    expect: Expect,
    sent: Instant,
    deadline: Option<Instant>,
}

/// The connected state: requests out, replies in, strictly in order.
struct Pipeline<'a, R, W> {
    target: &'a Target,
    report: &'a dyn Report,
    /// Traffic counted since the last poll, flushed at its end.
    tally: Tally,
    rd: ArmedReader<R>,
    wr: W,
    /// Frames not yet (fully) written.
    unwritten: VecDeque<Bytes>,
    /// Every request whose reply has not arrived, oldest first.
    waiting: VecDeque<Waiting>,
    input: BytesMut,
    resp: ReplyScanner,
    memcache: memcache::ReplyScanner,
}

impl<'a, R: SocketRead, W: AsyncWrite + Unpin> Pipeline<'a, R, W> {
    fn new(target: &'a Target, report: &'a dyn Report, rd: R, wr: W) -> Self {
        Pipeline {
            target,
            report,
            tally: report.tally(),
            rd: ArmedReader::new(rd),
            wr,
            unwritten: VecDeque::new(),
            waiting: VecDeque::new(),
            input: BytesMut::with_capacity(16 * 1024),
            resp: ReplyScanner::default(),
            memcache: memcache::ReplyScanner::default(),
        }
    }

    async fn run(mut self, first: Vec<Job>, jobs: &mut Jobs) -> Result<Ended, Error> {
        self.handshake();
        let now = Instant::now();
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
        let sent = Instant::now();
        let deadline = self.target.timeout.map(|t| sent + t);
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
            self.unwritten.push_back(request.frame().clone());
            self.waiting.push_back(Waiting {
                reply: None,
                expect: Expect::Resp,
                sent,
                deadline,
            });
        }
    }

    fn push(&mut self, job: Job, now: Instant) {
        let deadline = self.target.timeout.map(|t| now + t);
        self.tally.request(job.frame.len());
        self.unwritten.push_back(job.frame);
        self.waiting.push_back(Waiting {
            reply: Some(job.reply),
            expect: job.expect,
            sent: now,
            deadline,
        });
    }

    async fn pump(&mut self, jobs: &mut Jobs) -> Result<Ended, Error> {
        let mut state = Pump {
            open: true,
            timer: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            armed: false,
        };
        std::future::poll_fn(|cx| {
            let poll = self.poll_pump(cx, jobs, &mut state);
            self.tally.flush();
            poll
        })
        .await
    }

    /// Takes jobs, writes, reads and delivers replies until none of them can go on; then the
    /// task sleeps until a job, the socket or the timer wakes it.
    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        jobs: &mut Jobs,
        state: &mut Pump,
    ) -> Poll<Result<Ended, Error>> {
        loop {
            if !state.open && self.waiting.is_empty() {
                return Poll::Ready(Ok(Ended::Shutdown));
            }
            let mut progress = false;
            // Reads first, as before any new job: a backend that closed an idle connection is then
            // seen idle, and the job goes to a fresh connection instead of failing on this one.
            match self.rd.poll_read(cx, &mut self.input) {
                Poll::Ready(Ok(0)) if self.waiting.is_empty() => {
                    return Poll::Ready(Ok(Ended::Idle));
                }
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    return Poll::Ready(Err(Error::Closed));
                }
                Poll::Ready(Ok(_)) => {
                    if let Err(error) = self.deliver() {
                        return Poll::Ready(Err(error));
                    }
                    progress = true;
                }
                Poll::Pending => {}
            }
            if state.open && self.waiting.len() < MAX_IN_FLIGHT {
                match jobs.poll_recv(cx) {
                    Poll::Ready(Some(job)) => {
                        let now = Instant::now();
                        self.push(job, now);
                        while self.waiting.len() < MAX_IN_FLIGHT {
                            let Some(job) = jobs.try_recv() else { break };
                            self.push(job, now);
                        }
                        progress = true;
                    }
                    Poll::Ready(None) => {
                        state.open = false;
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            if !self.unwritten.is_empty() {
                match poll_write_some(&mut self.wr, cx, &mut self.unwritten) {
                    Poll::Ready(Ok(())) => progress = true,
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(Error::Closed)),
                    Poll::Pending => {}
                }
            }
            // Deadlines only grow along the queue, so a timer armed for an older request may
            // fire early but never late: it is re-armed only when it fires, not per reply.
            if !state.armed {
                if let Some(at) = self.waiting.front().and_then(|w| w.deadline) {
                    state.timer.as_mut().reset(at);
                    state.armed = true;
                }
            }
            if state.armed && state.timer.as_mut().poll(cx).is_ready() {
                state.armed = false;
                let expired = self.waiting.front().and_then(|w| w.deadline);
                if expired.is_some_and(|at| at <= Instant::now()) {
                    return Poll::Ready(Err(Error::Timeout));
                }
                progress = true;
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Hands every complete reply in the input buffer to the oldest waiting request.
    fn deliver(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        loop {
            let Some(front) = self.waiting.front() else {
                if self.input.is_empty() {
                    break;
                }
                // Bytes nobody asked for: the stream is out of step.
                return Err(Error::Protocol);
            };
            let scanned = match front.expect {
                Expect::Resp => self.resp.scan(&self.input).map_err(|_| Error::Protocol)?,
                Expect::Memcache(kind) => self
                    .memcache
                    .scan(&self.input, kind)
                    .map_err(|_| Error::Protocol)?,
            };
            let Some(len) = scanned else {
                break;
            };
            let reply = self.input.split_to(len).freeze();
            let waiting = self.waiting.pop_front().ok_or(Error::Protocol)?;
            match waiting.reply {
                Some(sender) => {
                    self.tally.response(reply.len(), now - waiting.sent);
                    sender.send(Ok(reply));
                }
                // Our own AUTH / SELECT: an error there means the backend is unusable.
                None if reply.first() == Some(&b'-') => {
                    tracing::warn!(backend = %self.target.addr, reply = %String::from_utf8_lossy(&reply).trim_end(), "backend refused connection setup");
                    return Err(connect_error(self.target, io::ErrorKind::PermissionDenied));
                }
                None => {}
            }
        }
        self.report.success();
        if self.input.capacity() - self.input.len() < 4096 {
            self.input.reserve(16 * 1024);
        }
        Ok(())
    }
}

/// Writes as much of the queued frames as one vectored write takes.
fn poll_write_some<W: AsyncWrite + Unpin>(
    wr: &mut W,
    cx: &mut Context<'_>,
    queue: &mut VecDeque<Bytes>,
) -> Poll<io::Result<()>> {
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
    Poll::Ready(Ok(()))
}

/// The pump's state between polls.
struct Pump {
    /// Whether the handle is still there (jobs may come).
    open: bool,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Whether the timer is set for the oldest request's deadline.
    armed: bool,
}
