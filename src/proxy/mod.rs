//! All talk with clients: listeners, worker threads, sessions, locally answered commands.
//!
//! Threads: `--threads` workers, each a single-threaded runtime that owns its client sessions
//! *and its own backend connections*, so a request never crosses a thread or takes a lock
//! between client and backend. The composition root that starts them is [`crate::server`].

pub mod cluster;
pub mod listener;
pub mod local;
mod memcache;
mod migration;
mod pubsub;
mod resp;
pub mod session;
mod stateful;
pub mod worker;
