//! Pub/sub through the proxy. A client's subscriptions are its own: each shard it subscribes on
//! gets a subscriber connection of the client's (a *link*, under a lease of the backend's
//! `dedicated_connections`), opened on its first subscription there and closed once it has
//! none left, or with the client. Channels (and sharded channels)
//! are placed by their name as keys are, so that `PUBLISH` (routed by its channel) meets its
//! subscribers on one shard; patterns are subscribed on every shard (on one node of a Redis
//! Cluster, which forwards every message to all of its nodes).
//!
//! Keyway keeps the client's subscription sets and writes the confirmations itself, with the
//! counts one Redis would give, once every link concerned has confirmed: a message published
//! after the client read its confirmation is delivered. Messages are forwarded as the backend
//! sent them (RESP2 arrays, or RESP3 `>` pushes for a RESP3 client, whose links say `HELLO 3`),
//! between whole replies; a link's messages behind a confirmation not yet written wait for it,
//! so none precedes the confirmation of its subscription. While a client has links, every
//! reply of its waits behind a [`PubSub::barrier`], so that none overtakes a message its
//! backend sent earlier. A link that fails ends the client's connection: a subscription never
//! ends silently.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backend::connection::{self, Stream, Target};
use crate::backend::lease::Lease;
use crate::protocol::resp::codec::put_decimal;
use crate::protocol::resp::command::Subscription;
use crate::protocol::resp::reply::put_bulk;
use crate::protocol::resp::{ReplyScanner, Request};
use crate::security::tls;

/// A client's subscriptions and the links that carry them.
pub(crate) struct PubSub {
    /// The client speaks RESP3: confirmations are pushes, links say `HELLO 3`.
    resp3: bool,
    /// Channel → the backend it is subscribed on.
    channels: HashMap<Bytes, usize>,
    /// Sharded channel → the backend it is subscribed on.
    shard_channels: HashMap<Bytes, usize>,
    /// Pattern → the backends it is subscribed on.
    patterns: HashMap<Bytes, Vec<usize>>,
    /// By backend index.
    links: HashMap<usize, Link>,
    inbox: Rc<RefCell<Inbox>>,
    next_link: u64,
}

impl fmt::Debug for PubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSub")
            .field("channels", &self.channels.len())
            .field("patterns", &self.patterns.len())
            .field("shard_channels", &self.shard_channels.len())
            .field("links", &self.links.len())
            .finish()
    }
}

/// Where a subscription request's names go, worked out by the caller from the pool's route.
pub(crate) enum Placement {
    /// Per name, in request order, the backend it goes to (`SUBSCRIBE`, `SSUBSCRIBE`).
    ByName(Vec<usize>),
    /// Every name to each of these backends (`PSUBSCRIBE`).
    Every(Vec<usize>),
    /// Nothing to place: unsubscribing from what the client has.
    Known,
}

/// The reply to a subscription request, due once the links it waits for have confirmed.
pub(crate) struct Confirmation {
    reply: Bytes,
    /// Per link: how many confirmations it must have delivered.
    waits: Vec<(u64, u64)>,
    inbox: Rc<RefCell<Inbox>>,
}

/// What the links delivered, per link, in the order each received it.
#[derive(Default)]
struct Inbox {
    links: HashMap<u64, Incoming>,
    /// The message bytes waiting in every link's queue.
    bytes: usize,
    waker: Option<Waker>,
    /// Why a link failed: the client's connection ends.
    failure: Option<String>,
    /// The subscriptions were dropped (`RESET`): confirmations still due are given as they are.
    dropped: bool,
}

#[derive(Default)]
struct Incoming {
    entries: VecDeque<Entry>,
    /// Confirmations taken off `entries`.
    popped: u64,
    /// Of those, the ones whose client reply is written; behind a later one, messages wait.
    written: u64,
}

enum Entry {
    /// A message, as the backend sent it.
    Message(Bytes),
    /// A confirmation of one channel or pattern (un)subscribed.
    Ack,
}

/// The session side of a link: what it was asked, and its queue of frames to send.
struct Link {
    id: u64,
    outbox: Rc<Outbox>,
    /// Confirmations asked of it so far.
    sent: u64,
    /// Channels, sharded channels and patterns subscribed through it.
    subs: usize,
}

/// Frames for a link's task to write; closed when the link is dropped.
#[derive(Default)]
struct Outbox {
    frames: RefCell<VecDeque<Bytes>>,
    /// Confirmations the frames queued so far ask for.
    asked: Cell<u64>,
    notify: Notify,
    closed: Cell<bool>,
}

impl Drop for PubSub {
    fn drop(&mut self) {
        self.inbox.borrow_mut().dropped = true;
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.outbox.closed.set(true);
        self.outbox.notify.notify_one();
    }
}

/// What the session does next with the client's subscriptions.
pub(crate) enum Step {
    /// A message to write to the client, between two replies.
    Message(Bytes),
    /// A confirmation came in: a reply may be complete now.
    Progress,
    /// Nothing to do until a link delivers more.
    Idle,
    /// A link failed: the client's connection ends, for this reason.
    Failed(String),
}

impl PubSub {
    /// No subscriptions yet, for a RESP3 client or not.
    pub(crate) fn new(resp3: bool) -> PubSub {
        PubSub {
            resp3,
            channels: HashMap::new(),
            shard_channels: HashMap::new(),
            patterns: HashMap::new(),
            links: HashMap::new(),
            inbox: Rc::default(),
            next_link: 0,
        }
    }

    /// Whether the client has any subscription (RESP2 clients are then in subscribed mode).
    pub(crate) fn subscribed(&self) -> bool {
        !(self.channels.is_empty() && self.patterns.is_empty() && self.shard_channels.is_empty())
    }

    /// Applies a subscription request for `names` placed by `placement`, opening links where
    /// needed with `target` (a backend's address and setup, and a lease of one of its
    /// `dedicated_connections`, or why there is none); the confirmation to reply with.
    #[inline(never)]
    pub(crate) fn apply(
        &mut self,
        kind: Subscription,
        names: &[&[u8]],
        placement: Placement,
        target: impl Fn(usize) -> Result<(Target, Lease), String>,
    ) -> Result<Confirmation, String> {
        let mut reply = BytesMut::new();
        // Per backend, the names to send it, in request order.
        let mut batches: Vec<(usize, Vec<Bytes>)> = Vec::new();
        let mut batch =
            |backend: usize, name: &Bytes| match batches.iter_mut().find(|(b, _)| *b == backend) {
                Some((_, names)) => names.push(name.clone()),
                None => batches.push((backend, vec![name.clone()])),
            };
        let mut subs_delta: Vec<(usize, isize)> = Vec::new();
        let mut delta =
            |backend: usize, d: isize| match subs_delta.iter_mut().find(|(b, _)| *b == backend) {
                Some((_, n)) => *n += d,
                None => subs_delta.push((backend, d)),
            };
        let word = kind_word(kind);
        let unsubscribing = matches!(
            kind,
            Subscription::Unsubscribe | Subscription::Punsubscribe | Subscription::Sunsubscribe
        );
        // Every link a subscription needs is opened first, so that a refusal changes nothing
        // (a link left without subscriptions is closed at the next step).
        let needed: Vec<usize> = match (&placement, kind) {
            (Placement::ByName(backends), _) => backends.clone(),
            (Placement::Every(backends), Subscription::Psubscribe) => backends.clone(),
            _ => Vec::new(),
        };
        for backend in needed {
            if !self.links.contains_key(&backend) {
                let (target, lease) = target(backend)?;
                let link = self.open(target, lease);
                self.links.insert(backend, link);
            }
        }
        let names: Vec<Bytes> = if names.is_empty() && unsubscribing {
            let known: Vec<Bytes> = match kind {
                Subscription::Unsubscribe => self.channels.keys().cloned().collect(),
                Subscription::Punsubscribe => self.patterns.keys().cloned().collect(),
                _ => self.shard_channels.keys().cloned().collect(),
            };
            if known.is_empty() {
                let count = self.count(kind);
                self.confirm(&mut reply, word, None, count);
                return Ok(self.confirmation(reply.freeze(), Vec::new()));
            }
            known
        } else {
            names.iter().map(|n| Bytes::copy_from_slice(n)).collect()
        };
        for (i, name) in names.iter().enumerate() {
            match kind {
                Subscription::Subscribe | Subscription::Ssubscribe => {
                    let backend = match &placement {
                        Placement::ByName(backends) => backends.get(i).copied(),
                        _ => None,
                    }
                    .ok_or("ERR the channel has no shard")?;
                    let set = if kind == Subscription::Subscribe {
                        &mut self.channels
                    } else {
                        &mut self.shard_channels
                    };
                    if !set.contains_key(name) {
                        set.insert(name.clone(), backend);
                        batch(backend, name);
                        delta(backend, 1);
                    }
                }
                Subscription::Psubscribe => {
                    let Placement::Every(backends) = &placement else {
                        return Err("ERR the pattern has no shards".into());
                    };
                    if !self.patterns.contains_key(name) {
                        self.patterns.insert(name.clone(), backends.clone());
                        for &backend in backends {
                            batch(backend, name);
                            delta(backend, 1);
                        }
                    }
                }
                Subscription::Unsubscribe | Subscription::Sunsubscribe => {
                    let set = if kind == Subscription::Unsubscribe {
                        &mut self.channels
                    } else {
                        &mut self.shard_channels
                    };
                    if let Some(backend) = set.remove(name) {
                        batch(backend, name);
                        delta(backend, -1);
                    }
                }
                Subscription::Punsubscribe => {
                    for backend in self.patterns.remove(name).unwrap_or_default() {
                        batch(backend, name);
                        delta(backend, -1);
                    }
                }
            }
            let count = self.count(kind);
            self.confirm(&mut reply, word, Some(name), count);
        }
        let mut waits = Vec::with_capacity(batches.len());
        for (backend, names) in batches {
            let Some(link) = self.links.get_mut(&backend) else {
                continue;
            };
            // Sharded channels one per frame: a cluster node takes one slot per command.
            let frames: Vec<Vec<Bytes>> = match kind {
                Subscription::Ssubscribe | Subscription::Sunsubscribe => {
                    names.into_iter().map(|n| vec![n]).collect()
                }
                _ => vec![names],
            };
            for names in frames {
                let acks = names.len() as u64;
                let args = std::iter::once(word.as_bytes()).chain(names.iter().map(|n| &n[..]));
                link.ask(Request::from_args(args).frame().clone(), acks);
            }
            waits.push((link.id, link.sent));
        }
        for (backend, d) in subs_delta {
            if let Some(link) = self.links.get_mut(&backend) {
                link.subs = link.subs.saturating_add_signed(d);
            }
        }
        Ok(self.confirmation(reply.freeze(), waits))
    }

    /// A barrier behind what every link has received so far (`None` without links): ready
    /// once each has answered a `PING` sent now. A reply held behind it follows every message
    /// published before its request was read, as one Redis orders them: a message the
    /// backend pushed before a publisher's reply is not overtaken by a later request's reply.
    pub(crate) fn barrier(&mut self) -> Option<Confirmation> {
        if self.links.is_empty() {
            return None;
        }
        let ping = Request::from_args([&b"PING"[..]]).frame().clone();
        let waits = self
            .links
            .values_mut()
            .map(|link| {
                link.ask(ping.clone(), 1);
                (link.id, link.sent)
            })
            .collect();
        Some(self.confirmation(Bytes::new(), waits))
    }

    /// The message bytes the links delivered that the client has not been given yet.
    pub(crate) fn held(&self) -> usize {
        self.inbox.borrow().bytes
    }

    /// Takes the next thing the links delivered that may go to the client now.
    #[inline(never)]
    pub(crate) fn step(&mut self) -> Step {
        let mut inbox = self.inbox.borrow_mut();
        let inbox = &mut *inbox;
        if let Some(failure) = inbox.failure.take() {
            return Step::Failed(failure);
        }
        for incoming in inbox.links.values_mut() {
            match incoming.entries.front() {
                Some(Entry::Ack) => {
                    incoming.entries.pop_front();
                    incoming.popped += 1;
                    return Step::Progress;
                }
                Some(Entry::Message(_)) if incoming.popped == incoming.written => {
                    if let Some(Entry::Message(bytes)) = incoming.entries.pop_front() {
                        inbox.bytes = inbox.bytes.saturating_sub(bytes.len());
                        return Step::Message(bytes);
                    }
                }
                _ => {}
            }
        }
        // A link with nothing subscribed and every confirmation written is closed.
        self.links.retain(|_, link| {
            let busy = inbox
                .links
                .get(&link.id)
                .is_some_and(|incoming| incoming.written < link.sent);
            let keep = link.subs > 0 || busy;
            if !keep {
                inbox.links.remove(&link.id);
            }
            keep
        });
        Step::Idle
    }

    /// Ready when [`PubSub::step`] has something to give; otherwise the task is woken when a
    /// link delivers.
    #[inline(never)]
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inbox = self.inbox.borrow_mut();
        let due = inbox.failure.is_some()
            || inbox
                .links
                .values()
                .any(|incoming| match incoming.entries.front() {
                    Some(Entry::Ack) => true,
                    Some(Entry::Message(_)) => incoming.popped == incoming.written,
                    None => false,
                });
        if due {
            return Poll::Ready(());
        }
        if !inbox
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            inbox.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn count(&self, kind: Subscription) -> usize {
        match kind {
            Subscription::Ssubscribe | Subscription::Sunsubscribe => self.shard_channels.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }

    /// Appends one confirmation: `[kind, name, count]`, nil name for an unsubscription from
    /// nothing.
    fn confirm(&self, out: &mut BytesMut, word: &str, name: Option<&Bytes>, count: usize) {
        out.put_u8(if self.resp3 { b'>' } else { b'*' });
        out.put_slice(b"3\r\n");
        put_bulk(out, word.as_bytes());
        match name {
            Some(name) => put_bulk(out, name),
            None if self.resp3 => out.put_slice(b"_\r\n"),
            None => out.put_slice(b"$-1\r\n"),
        }
        out.put_u8(b':');
        put_decimal(out, count as u64);
        out.put_slice(b"\r\n");
    }

    fn confirmation(&self, reply: Bytes, waits: Vec<(u64, u64)>) -> Confirmation {
        Confirmation {
            reply,
            waits,
            inbox: Rc::clone(&self.inbox),
        }
    }

    /// Opens a link to `target` under `lease`: a task on this worker, ended when the link is
    /// dropped; the lease is given back when the task ends.
    fn open(&mut self, mut target: Target, lease: Lease) -> Link {
        self.next_link += 1;
        let id = self.next_link;
        target.resp3 = self.resp3;
        let outbox = Rc::new(Outbox::default());
        self.inbox
            .borrow_mut()
            .links
            .insert(id, Incoming::default());
        let inbox = Rc::clone(&self.inbox);
        let task_outbox = Rc::clone(&outbox);
        tokio::task::spawn_local(async move {
            run(target, id, inbox, task_outbox).await;
            drop(lease);
        });
        Link {
            id,
            outbox,
            sent: 0,
            subs: 0,
        }
    }
}

impl Link {
    /// Queues `frame` for the link's task, which is to deliver `acks` confirmations for it.
    fn ask(&mut self, frame: Bytes, acks: u64) {
        self.outbox.frames.borrow_mut().push_back(frame);
        self.sent += acks;
        self.outbox.asked.set(self.sent);
        self.outbox.notify.notify_one();
    }
}

impl Confirmation {
    /// Whether every link it waits for has confirmed.
    #[inline(never)]
    pub(crate) fn is_ready(&self) -> bool {
        let inbox = self.inbox.borrow();
        inbox.dropped
            || self.waits.iter().all(|(id, n)| {
                inbox
                    .links
                    .get(id)
                    .is_none_or(|incoming| incoming.popped >= *n)
            })
    }

    /// The reply, once ready; the links' messages behind it may follow it then.
    #[inline(never)]
    pub(crate) fn take(&mut self) -> Option<Bytes> {
        if !self.is_ready() {
            return None;
        }
        let mut inbox = self.inbox.borrow_mut();
        for (id, n) in &self.waits {
            if let Some(incoming) = inbox.links.get_mut(id) {
                incoming.written = incoming.written.max(*n);
            }
        }
        Some(std::mem::take(&mut self.reply))
    }

    /// Its length, for the client's output limits.
    pub(crate) fn len(&self) -> usize {
        self.reply.len()
    }
}

/// Redis's subscribed-mode `PING` reply to a RESP2 client: `["pong", message]`.
pub(crate) fn subscribed_ping(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 24);
    out.put_slice(b"*2\r\n");
    put_bulk(&mut out, b"pong");
    put_bulk(&mut out, message);
    out.freeze()
}

fn kind_word(kind: Subscription) -> &'static str {
    match kind {
        Subscription::Subscribe => "subscribe",
        Subscription::Unsubscribe => "unsubscribe",
        Subscription::Psubscribe => "psubscribe",
        Subscription::Punsubscribe => "punsubscribe",
        Subscription::Ssubscribe => "ssubscribe",
        Subscription::Sunsubscribe => "sunsubscribe",
    }
}

/// A link's task: connects, sets up, then writes what the session queues and delivers what
/// the backend pushes, until the link is dropped or fails.
async fn run(target: Target, id: u64, inbox: Rc<RefCell<Inbox>>, outbox: Rc<Outbox>) {
    let served = match connection::dial(&target).await {
        Ok(Stream::Tcp(mut stream)) => {
            let (rd, wr) = stream.split();
            serve(&target, id, &inbox, &outbox, rd, wr).await
        }
        Ok(Stream::Unix(mut stream)) => {
            let (rd, wr) = stream.split();
            serve(&target, id, &inbox, &outbox, rd, wr).await
        }
        Ok(Stream::Tls(stream)) => {
            let (rd, wr) = tls::split(*stream);
            serve(&target, id, &inbox, &outbox, rd, wr).await
        }
        Err(error) => Err(error.to_string()),
    };
    if let Err(reason) = served {
        if !outbox.closed.get() {
            let mut inbox = inbox.borrow_mut();
            inbox.failure = Some(format!(
                "subscriber connection to {}: {reason}",
                target.addr
            ));
            if let Some(waker) = inbox.waker.take() {
                waker.wake();
            }
        }
    }
}

async fn serve<R, W>(
    target: &Target,
    id: u64,
    inbox: &RefCell<Inbox>,
    outbox: &Outbox,
    mut rd: R,
    mut wr: W,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    // Replies to our own setup, which go nowhere.
    let mut setup = 0;
    if let Some(password) = &target.auth {
        out.extend_from_slice(Request::from_args([&b"AUTH"[..], password.as_bytes()]).frame());
        setup += 1;
    }
    if target.resp3 {
        out.extend_from_slice(Request::from_args([&b"HELLO"[..], b"3"]).frame());
        setup += 1;
    }
    let mut input = BytesMut::with_capacity(4096);
    let mut scanner = ReplyScanner::new(target.max_reply_bytes);
    // Confirmations received, and until when the next one is due (the pool's `timeout`, from
    // the request or the confirmation before it): a backend that stops confirming fails the
    // link rather than leave the client waiting for its reply.
    let mut confirmed = 0;
    let mut due: Option<Instant> = None;
    loop {
        if outbox.closed.get() {
            return Ok(());
        }
        out.extend(outbox.frames.borrow_mut().drain(..).flatten());
        if !out.is_empty() {
            wr.write_all(&out).await.map_err(|e| e.to_string())?;
            // TLS keeps what the socket did not take: sent now (a no-op on plain sockets).
            wr.flush().await.map_err(|e| e.to_string())?;
            out.clear();
            continue;
        }
        let awaited = outbox.asked.get() > confirmed;
        if !awaited {
            due = None;
        } else if due.is_none() {
            due = target.timeout.map(|t| Instant::now() + t);
        }
        let deadline = due.unwrap_or_else(Instant::now);
        tokio::select! {
            () = outbox.notify.notified() => {}
            () = crate::timer::sleep_until(deadline), if due.is_some() => {
                return Err("no confirmation within the pool's timeout".into());
            }
            read = rd.read_buf(&mut input) => {
                match read {
                    Ok(0) => return Err("closed by the backend".into()),
                    Ok(_) => {}
                    Err(error) => return Err(error.to_string()),
                }
                while let Some(len) = scanner.scan(&input).map_err(|e| e.to_string())? {
                    let frame = input.split_to(len).freeze();
                    if frame.first() == Some(&b'-') {
                        let text = String::from_utf8_lossy(frame.get(1..len.saturating_sub(2)).unwrap_or_default());
                        return Err(format!("the backend refused: {text}"));
                    }
                    if setup > 0 {
                        setup -= 1;
                        continue;
                    }
                    if deliver(inbox, id, frame) {
                        confirmed += 1;
                        due = None;
                    }
                }
                if input.capacity() - input.len() < 1024 {
                    input.reserve(16 * 1024);
                }
            }
        }
    }
}

/// Queues a frame from the backend for the client: messages as they are, confirmations and
/// the answers to barriers' `PING`s as acknowledgements (then `true`); anything else goes
/// nowhere.
fn deliver(inbox: &RefCell<Inbox>, id: u64, frame: Bytes) -> bool {
    let entry = match push_kind(&frame) {
        Some(b"message" | b"pmessage" | b"smessage") => Entry::Message(frame),
        Some(
            b"subscribe" | b"unsubscribe" | b"psubscribe" | b"punsubscribe" | b"ssubscribe"
            | b"sunsubscribe" | b"pong",
        ) => Entry::Ack,
        // A `PING`'s answer on a RESP3 link, or on one no longer subscribed.
        None if &frame[..] == b"+PONG\r\n" => Entry::Ack,
        _ => return false,
    };
    let ack = matches!(entry, Entry::Ack);
    let mut inbox = inbox.borrow_mut();
    if let Entry::Message(bytes) = &entry {
        inbox.bytes += bytes.len();
    }
    if let Some(incoming) = inbox.links.get_mut(&id) {
        incoming.entries.push_back(entry);
    }
    if let Some(waker) = inbox.waker.take() {
        waker.wake();
    }
    ack
}

/// The first element of an array or push frame, when it is a bulk string: the push's kind.
fn push_kind(frame: &[u8]) -> Option<&[u8]> {
    if !matches!(frame.first(), Some(b'*' | b'>')) {
        return None;
    }
    let header = frame.windows(2).position(|w| w == b"\r\n")? + 2;
    let rest = frame.get(header..)?;
    let digits = rest.strip_prefix(b"$")?;
    let end = digits.windows(2).position(|w| w == b"\r\n")?;
    let len: usize = std::str::from_utf8(digits.get(..end)?).ok()?.parse().ok()?;
    digits.get(end + 2..end + 2 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_kinds_are_read_from_resp2_arrays_and_resp3_pushes() {
        assert_eq!(
            push_kind(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"),
            Some(&b"message"[..])
        );
        assert_eq!(
            push_kind(b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"),
            Some(&b"subscribe"[..])
        );
        assert_eq!(push_kind(b"+PONG\r\n"), None);
        assert_eq!(push_kind(b"*1\r\n:1\r\n"), None);
        assert_eq!(push_kind(b"*1\r\n$9\r\nsub"), None);
    }

    #[test]
    fn confirmations_carry_redis_counts_without_any_link_for_what_is_known() {
        let mut pubsub = PubSub::new(false);
        let mut reply = pubsub
            .apply(Subscription::Unsubscribe, &[], Placement::Known, |_| {
                Err("no backend".into())
            })
            .unwrap();
        assert!(reply.is_ready());
        assert_eq!(
            reply.take().unwrap(),
            Bytes::from_static(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n")
        );
        let mut resp3 = PubSub::new(true);
        let mut reply = resp3
            .apply(Subscription::Punsubscribe, &[], Placement::Known, |_| {
                Err("no backend".into())
            })
            .unwrap();
        assert_eq!(
            reply.take().unwrap(),
            Bytes::from_static(b">3\r\n$12\r\npunsubscribe\r\n_\r\n:0\r\n")
        );
        assert_eq!(
            subscribed_ping(b""),
            Bytes::from_static(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
        );
    }
}
