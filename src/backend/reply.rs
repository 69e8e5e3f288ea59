//! The hand-off of one reply from a backend connection task to the session that asked for it.
//!
//! A session and the backend connections it talks to run on the same worker thread (one
//! `LocalSet`), so the hand-off is a single-slot cell behind an `Rc`: no atomics, no lock, and
//! slots are reused per thread rather than allocated per request. Its API mirrors
//! `tokio::sync::oneshot`'s receiver.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

pub use tokio::sync::oneshot::error::TryRecvError;

use super::{Error, Outcome};

/// Where one reply waits until its session takes it.
#[derive(Default)]
struct Slot {
    /// The outcome once delivered; taken by the receiver.
    outcome: Cell<Option<Outcome>>,
    /// Set once the outcome was taken: the receiver then reports `Closed`, as oneshot does.
    taken: Cell<bool>,
    /// The session waiting for this reply, if it is waiting.
    waker: Cell<Option<Waker>>,
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
        self.deliver(outcome);
    }

    fn deliver(&mut self, outcome: Outcome) {
        if let Some(slot) = self.slot.take() {
            slot.outcome.set(Some(outcome));
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
        }
    }
}

impl Drop for ReplySender {
    fn drop(&mut self) {
        // Checked first: a sent reply (the usual case) builds no error to throw away.
        if self.slot.is_some() {
            self.deliver(Err(Error::Closed));
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
    use bytes::Bytes;

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
