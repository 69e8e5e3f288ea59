//! Keyway: a Redis-protocol sharding proxy, a drop-in, multi-threaded twemproxy replacement.
//!
//! The data path, left to right:
//!
//! ```text
//! client ─▶ listener ─▶ worker ─▶ session ──route──▶ backend connection ─▶ Redis
//!                                    ▲  (pending FIFO)        (waiting FIFO)   │
//!                                    └───────────── replies ◀──────────────────┘
//! ```
//!
//! A [`proxy::session::Session`] decodes requests ([`protocol`]), classifies them with the
//! command table, maps keys to shards ([`route`], through the pool's auto-eject state in
//! [`backend::pool`]), and hands frames to its worker's [`backend::connection`] tasks. Two FIFOs
//! keep replies in order: each backend connection pairs replies with requests oldest-first, and
//! each session writes replies in the order its client sent the requests.
//!
//! - [`admin`]: the admin HTTP server: /metrics, /healthz, /pools, POST /reload.
//! - [`config`]: nutcracker.yml → validated, typed pools (startup, `-t` and reload share it).
//! - [`control`]: the only writer of the live pools: reload, Sentinel failover, the key-move
//!   estimate.
//! - [`cli`]: nutcracker's command-line flags plus Keyway's own.
//! - [`protocol`]: wire formats; the only code that knows them.
//! - [`route`]: pure key → shard maps (hashes, ketama, modula, random, slots), nutcracker-exact.
//! - [`backend`]: pipelined backend connections, reconnects, timeouts, ejection.
//! - [`server`]: the composition root: bind, run, the threads.
//! - [`signals`]: the signals Keyway acts on.
//! - [`proxy`]: listeners, worker threads (each with its own backend connections), sessions
//!   speaking RESP2/RESP3 or memcached, locally answered commands.
//! - [`metrics`]: every metric once; Prometheus text and nutcracker's stats JSON read them.
//! - [`shutdown`]: graceful stop.

// Outside tests, no unchecked indexing and no silently truncating cast: where one is the
// algorithm (nutcracker's C integer arithmetic) it is allowed on that item, with the reason.
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::cast_possible_truncation)
)]

pub mod admin;
pub mod backend;
pub mod cli;
pub mod config;
pub mod control;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod route;
pub mod server;
pub mod shutdown;
pub mod signals;
pub mod socket;

pub use server::{bind, Proxy};
