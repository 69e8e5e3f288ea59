//! The hand-off of one reply from a backend connection task to the session that asked for it.
//!
//! A session and the backend connections it talks to run on the same worker thread (its
//! `LocalRuntime`), so the hand-off is a single-slot cell behind an `Rc`: no atomics, no lock, and
//! slots are reused per thread rather than allocated per request. Its API mirrors
//! `tokio::sync::oneshot`'s receiver.
//!
//! A session with nothing else in line for its client's socket may arm its awaited reply with
//! a [`WriteThrough`]: the connection delivering the reply then writes it to the client
//! itself, and wakes the session only for what the socket did not take. An unpipelined
//! request costs one session poll instead of two.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

pub use tokio::sync::oneshot::error::TryRecvError;

use bytes::{Buf, Bytes};

use super::{Error, Outcome};
use crate::clock::Tick;

/// Where one reply waits until its session takes it.
#[derive(Default)]
struct Slot {
    /// The outcome once delivered; taken by the receiver.
    outcome: Cell<Option<Outcome>>,
    /// Set once the outcome was taken: the receiver then reports `Closed`, as oneshot does.
    taken: Cell<bool>,
    /// The session waiting for this reply, if it is waiting.
    waker: Cell<Option<Waker>>,
    /// The client's socket, while the session lets the reply be written straight to it.
    through: Cell<Option<Rc<dyn WriteThrough>>>,
}

/// Where a reply may go straight to the client: its socket, while nothing is in line before
/// the reply.
pub trait WriteThrough {
    /// The reply is ready at `now`: writes what the socket takes of `reply` (`None` for a
    /// failure, which the session words) and says how many bytes that was.
    fn reply_ready(&self, reply: Option<&[u8]>, now: Tick) -> usize;
}

/// Most unused slots a thread keeps for reuse: more than the requests in flight on a busy
/// worker, little memory.
const SPARE_SLOTS: usize = 1024;

thread_local! {
    /// Slots whose sender and receiver are both gone, clean, ready for the next request.
    static SPARE: RefCell<Vec<Rc<Slot>>> = const { RefCell::new(Vec::new()) };
}

/// A new reply slot: the connection side and the session side.
pub fn channel() -> (ReplySender, ReplyReceiver) {
    let spare = SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten();
    let slot = spare.unwrap_or_default();
    (
        ReplySender {
            slot: Some(Rc::clone(&slot)),
        },
        ReplyReceiver { slot },
    )
}

/// Delivers a reply exactly once; dropped without sending, it delivers [`Error::Closed`].
pub struct ReplySender {
    slot: Option<Rc<Slot>>,
}

impl ReplySender {
    /// Delivers `outcome` and wakes the session if it waits for it.
    pub fn send(mut self, outcome: Outcome) {
        self.deliver(outcome, None);
    }

    /// Whether the session armed this reply to be written straight to its client.
    pub fn writes_through(&self) -> bool {
        self.slot.as_ref().is_some_and(|slot| {
            let through = slot.through.take();
            let armed = through.is_some();
            slot.through.set(through);
            armed
        })
    }

    /// [`send`](ReplySender::send) for a reply read at `now`.
    pub fn send_at(mut self, outcome: Outcome, now: Tick) {
        self.deliver(outcome, Some(now));
    }

    fn deliver(&mut self, mut outcome: Outcome, now: Option<Tick>) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        if let Some(through) = slot.through.take() {
            let now = now.unwrap_or_else(Tick::now);
            let written = through.reply_ready(outcome.as_deref().ok(), now);
            if let Ok(reply) = &mut outcome {
                if written >= reply.len() {
                    // All of it is with the client: nothing to wake the session for.
                    slot.outcome.set(Some(Ok(Bytes::new())));
                    return;
                }
                reply.advance(written);
            }
        }
        slot.outcome.set(Some(outcome));
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
    }
}

impl Drop for ReplySender {
    fn drop(&mut self) {
        // Checked first: a sent reply (the usual case) builds no error to throw away.
        if self.slot.is_some() {
            self.deliver(Err(Error::Closed), None);
        }
    }
}

impl std::fmt::Debug for ReplySender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplySender")
            .field("sent", &self.slot.is_none())
            .finish()
    }
}

/// The session's side of a reply: polled with [`try_recv`](ReplyReceiver::try_recv), or
/// awaited.
pub struct ReplyReceiver {
    slot: Rc<Slot>,
}

/// The sender went away and the reply was already taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("reply already taken")]
pub struct RecvError;

impl ReplyReceiver {
    /// A receiver whose reply is already there (for requests answered without a backend).
    pub fn ready(outcome: Outcome) -> ReplyReceiver {
        let slot = Slot {
            outcome: Cell::new(Some(outcome)),
            ..Slot::default()
        };
        ReplyReceiver {
            slot: Rc::new(slot),
        }
    }

    /// Lets the connection delivering the reply write it to the client through `through`,
    /// until [`disarm`](ReplyReceiver::disarm). Only while nothing else waits to be written to
    /// the client before this reply, and the session needs no wake-up for it.
    pub fn arm(&self, through: Rc<dyn WriteThrough>) {
        self.slot.through.set(Some(through));
    }

    /// Takes back [`arm`](ReplyReceiver::arm): the reply comes to the session again.
    pub fn disarm(&self) {
        drop(self.slot.through.take());
    }

    /// The reply if it has arrived; never waits.
    ///
    /// # Errors
    /// `Empty` while the reply is on its way; `Closed` once it was taken.
    pub fn try_recv(&mut self) -> Result<Outcome, TryRecvError> {
        match self.slot.outcome.take() {
            Some(outcome) => {
                self.slot.taken.set(true);
                Ok(outcome)
            }
            None if self.slot.taken.get() => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }
}

impl Future for ReplyReceiver {
    type Output = Result<Outcome, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.try_recv() {
            Ok(outcome) => Poll::Ready(Ok(outcome)),
            Err(TryRecvError::Closed) => Poll::Ready(Err(RecvError)),
            Err(TryRecvError::Empty) => {
                register(&this.slot.waker, cx);
                Poll::Pending
            }
        }
    }
}

impl Drop for ReplyReceiver {
    fn drop(&mut self) {
        // Reusable once the sender is gone too: the last owner puts it back, clean.
        if Rc::strong_count(&self.slot) != 1 {
            return;
        }
        drop(self.slot.outcome.take());
        drop(self.slot.waker.take());
        drop(self.slot.through.take());
        self.slot.taken.set(false);
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_SLOTS {
                spare.push(Rc::clone(&self.slot));
            }
        });
    }
}

impl std::fmt::Debug for ReplyReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyReceiver").finish_non_exhaustive()
    }
}

/// Stores `cx`'s waker in `cell` to be woken later. The same task polls again and again: its
/// stored waker is kept rather than cloned anew.
pub(crate) fn register(cell: &Cell<Option<Waker>>, cx: &Context<'_>) {
    let waker = match cell.take() {
        Some(waker) if waker.will_wake(cx.waker()) => waker,
        _ => cx.waker().clone(),
    };
    cell.set(Some(waker));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sent_reply_is_received_once_then_closed() {
        let (sender, mut receiver) = channel();
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Empty));
        sender.send(Ok(Bytes::from_static(b"+OK\r\n")));
        assert_eq!(receiver.try_recv(), Ok(Ok(Bytes::from_static(b"+OK\r\n"))));
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn a_dropped_sender_delivers_closed() {
        let (sender, mut receiver) = channel();
        drop(sender);
        assert_eq!(receiver.try_recv(), Ok(Err(Error::Closed)));
    }

    #[test]
    fn a_reused_slot_starts_empty() {
        for _ in 0..3 {
            let (sender, mut receiver) = channel();
            assert_eq!(receiver.try_recv(), Err(TryRecvError::Empty));
            sender.send(Ok(Bytes::from_static(b"+OK\r\n")));
            assert_eq!(receiver.try_recv(), Ok(Ok(Bytes::from_static(b"+OK\r\n"))));
        }
        // Dropped before it was read: the next user must not see this reply.
        let (sender, receiver) = channel();
        sender.send(Ok(Bytes::from_static(b"+STALE\r\n")));
        drop(receiver);
        let (_sender, mut receiver) = channel();
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Empty));
    }

    /// A socket that takes at most `room` bytes, and what it took and was told.
    #[derive(Default)]
    struct Socket {
        room: usize,
        took: RefCell<Vec<u8>>,
        calls: Cell<usize>,
        failures: Cell<usize>,
    }

    impl WriteThrough for Socket {
        fn reply_ready(&self, reply: Option<&[u8]>, _: Tick) -> usize {
            self.calls.set(self.calls.get() + 1);
            let Some(reply) = reply else {
                self.failures.set(self.failures.get() + 1);
                return 0;
            };
            let n = reply.len().min(self.room);
            self.took.borrow_mut().extend_from_slice(&reply[..n]);
            n
        }
    }

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Sends `reply` to a receiver armed with `socket` and awaited: what it then holds, and
    /// how often the session was woken.
    fn through(socket: &Rc<Socket>, reply: Outcome) -> (Outcome, usize) {
        let count = std::sync::Arc::new(Count(0.into()));
        let waker = Waker::from(std::sync::Arc::clone(&count));
        let (sender, mut receiver) = channel();
        receiver.arm(Rc::clone(socket) as Rc<dyn WriteThrough>);
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut receiver).poll(&mut cx).is_pending());
        sender.send(reply);
        let outcome = receiver.try_recv().expect("delivered");
        (outcome, count.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    #[test]
    fn a_reply_the_socket_takes_whole_is_written_through_without_a_wake() {
        let socket = Rc::new(Socket {
            room: usize::MAX,
            ..Socket::default()
        });
        let (outcome, wakes) = through(&socket, Ok(Bytes::from_static(b"$1\r\nv\r\n")));
        assert_eq!(outcome, Ok(Bytes::new()), "nothing left for the session");
        assert_eq!(wakes, 0);
        assert_eq!(socket.took.borrow().as_slice(), b"$1\r\nv\r\n");
    }

    #[test]
    fn what_the_socket_does_not_take_goes_back_to_the_session() {
        let socket = Rc::new(Socket {
            room: 3,
            ..Socket::default()
        });
        let (outcome, wakes) = through(&socket, Ok(Bytes::from_static(b"+HELLO\r\n")));
        assert_eq!(outcome, Ok(Bytes::from_static(b"LLO\r\n")));
        assert_eq!(wakes, 1);
        assert_eq!(socket.took.borrow().as_slice(), b"+HE");
        // A full socket takes nothing: the whole reply goes to the session.
        let full = Rc::new(Socket::default());
        let (outcome, wakes) = through(&full, Ok(Bytes::from_static(b"+OK\r\n")));
        assert_eq!(outcome, Ok(Bytes::from_static(b"+OK\r\n")));
        assert_eq!(wakes, 1);
    }

    #[test]
    fn a_failure_is_reported_through_but_worded_by_the_session() {
        let socket = Rc::new(Socket {
            room: usize::MAX,
            ..Socket::default()
        });
        let (outcome, wakes) = through(&socket, Err(Error::Timeout));
        assert_eq!(outcome, Err(Error::Timeout));
        assert_eq!(
            (wakes, socket.calls.get(), socket.failures.get()),
            (1, 1, 1)
        );
        assert!(socket.took.borrow().is_empty());
        // A sender dropped unsent is one too.
        let (sender, receiver) = channel();
        receiver.arm(Rc::clone(&socket) as Rc<dyn WriteThrough>);
        drop(sender);
        drop(receiver);
        assert_eq!(socket.failures.get(), 2);
    }

    #[test]
    fn a_disarmed_reply_and_a_reused_slot_come_to_the_session() {
        let socket = Rc::new(Socket {
            room: usize::MAX,
            ..Socket::default()
        });
        let (sender, mut receiver) = channel();
        receiver.arm(Rc::clone(&socket) as Rc<dyn WriteThrough>);
        receiver.disarm();
        sender.send(Ok(Bytes::from_static(b"+OK\r\n")));
        assert_eq!(receiver.try_recv(), Ok(Ok(Bytes::from_static(b"+OK\r\n"))));
        // Armed, then dropped unanswered: the slot's next user is not written through.
        let (sender, receiver) = channel();
        receiver.arm(Rc::clone(&socket) as Rc<dyn WriteThrough>);
        drop(receiver);
        drop(sender);
        let (sender, mut receiver) = channel();
        sender.send(Ok(Bytes::from_static(b"+NEXT\r\n")));
        assert_eq!(
            receiver.try_recv(),
            Ok(Ok(Bytes::from_static(b"+NEXT\r\n")))
        );
        assert_eq!(
            socket.calls.get(),
            1,
            "only the dropped one's Closed came through"
        );
        assert!(socket.took.borrow().is_empty());
    }

    #[tokio::test]
    async fn awaiting_wakes_when_the_reply_arrives() {
        let (sender, receiver) = channel();
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                let waiter = tokio::task::spawn_local(receiver);
                tokio::task::yield_now().await;
                sender.send(Err(Error::Timeout));
                assert_eq!(waiter.await.ok(), Some(Ok(Err(Error::Timeout))));
            })
            .await;
    }
}
