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
//! command table, maps keys to shards through its pool's routing snapshot (a
//! [`backend::pool::Pool`]: config, [`route`] shard map or cluster layout, ejected backends),
//! read through one cached pointer per request, and hands frames to its worker's
//! [`backend::connection`] tasks. Two FIFOs keep replies in order: each backend connection
//! pairs replies with requests oldest-first, and each session writes replies in the order its
//! client sent the requests. A session awaiting one reply with nothing else in line for its
//! plain client socket arms it for write-through ([`backend::reply`]): the connection that
//! reads the reply writes it to the client itself and wakes the session only for what the
//! socket did not take, so an unpipelined request costs one session poll. The connection
//! publishes its counters and queue gauges before it writes a reply through, so the stats a
//! client reads after its reply already count it.
//!
//! Routing state has one writer, [`control`]: start, reload, a Sentinel switch, a cluster
//! layout change, an ejection or a readmission each build a new immutable snapshot and publish
//! it on every worker. The data path writes nothing but each backend's failure counter, and
//! wakes the control plane when one reaches `server_failure_limit`. Workers keep their backend
//! connections by backend, so a new snapshot reconnects only the backends it changed.
//!
//! `server_connections` is the whole process's number per backend, as in nutcracker: a pool
//! is served by its first `min(threads, server_connections)` workers
//! ([`backend::pool::serving_workers`]), each owning its share of every backend's
//! connections, and the listener hands the pool's clients to those workers only. So no request
//! crosses a thread and the count holds exactly; a pool wanting more threads asks for more
//! connections.
//!
//! - [`acl`]: ACL users in Redis's `ACL SETUSER` syntax (`users`): rules compiled at config
//!   load, `AUTH`, the per-request check (command, keys, channels).
//! - [`admin`]: the admin HTTP server: /metrics, /healthz, /pools, POST /reload.
//! - [`config`]: nutcracker.yml → validated, typed pools (startup, `-t` and reload share it).
//! - [`control`]: the only writer of routing state: start and reload (one pipeline: resolve,
//!   build snapshots, bind, install), Sentinel failover, cluster layout, auto-eject, the
//!   key-move estimate and `keyway plan` (which keys a config change moves, and where), and
//!   migration windows: after a reload changes a pool's servers (with `migration:
//!   { read_through: true }`), the snapshot keeps the previous placement until a timer drops
//!   it. `docs/migrating.md` says how to move to Keyway and grow a pool without losing the
//!   cache.
//! - [`cli`]: nutcracker's command-line flags plus Keyway's own.
//! - [`clock`]: the data path's clock, whole nanoseconds of `CLOCK_MONOTONIC` ([`clock::Tick`]):
//!   request and backend latencies and deadlines without `Instant`'s `timespec` arithmetic.
//! - [`fleet`]: many instances, one shard map: the config in etcd v3 (watched, each revision
//!   through the reload pipeline), membership under a lease, and `keyway publish` (validated,
//!   compare-and-swap, history, rollback), `keyway history`, `keyway fleet` (drift).
//! - [`protocol`]: wire formats; the only code that knows them (and the keyspace-wide
//!   commands' plans: which shards, how replies gather, the `SCAN` cursor).
//! - [`route`]: pure key → shard maps (hashes, ketama, modula, random, slots), nutcracker-exact;
//!   and Jedis's `ShardedJedis` ring (`sharded_jedis`, MurmurHash64A, shards in list order);
//!   both rings are one `Points` type (sorted points, binary search), differing in their points.
//! - [`backend`]: routing snapshots, pipelined backend connections, reconnects, timeouts,
//!   failure counts; leased dedicated connections (`dedicated_connections` per backend, for
//!   the whole process) for blocking commands and transactions.
//! - [`server`]: the composition root: bind (the control plane's prepare), run (install), the
//!   threads.
//! - [`security`]: TLS on both sides (rustls): a pool's listener (`tls`) and its connections
//!   to backends, Sentinels and cluster nodes (`server_tls`), loaded and checked with the
//!   config, so a reload re-reads the certificates; the data path sees only one more pair of
//!   stream halves behind the same session and connection code.
//! - [`signals`]: the signals Keyway acts on, caught by `signal-hook` on a thread of their own
//!   (tokio's signal driver would look for them at every park of every worker).
//! - [`proxy`]: listeners, worker threads (each with its own backend connections), sessions
//!   speaking RESP2/RESP3 or memcached, locally answered commands; a client's own state:
//!   subscriptions (links of its own per shard), a blocked pop or a transaction (on a leased
//!   dedicated connection). What each means through a sharding proxy: `docs/applications.md`.
//!   During a migration window, reads that miss on a key's new owner are read through from
//!   its old owner (optionally copied), and writes delete the old copy.
//! - [`metrics`]: every metric once; Prometheus text and nutcracker's stats JSON read them.
//! - [`shutdown`]: graceful stop.
//! - [`timer`]: timers made where a runtime serves them: the workers' runtimes have no time
//!   driver (it cost every park of the thread), their timers live on one thread of their own.
//! - [`uring`]: client sockets through one io_uring per worker (`--io uring`): many clients'
//!   receives and sends in one `io_uring_enter`; the only module with `unsafe`.

// Outside tests, no unchecked indexing and no silently truncating cast: where one is the
// algorithm (nutcracker's C integer arithmetic) it is allowed on that item, with the reason.
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::cast_possible_truncation)
)]

pub mod acl;
pub mod admin;
pub mod backend;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod fleet;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod route;
pub mod security;
pub mod server;
pub mod shutdown;
pub mod signals;
pub mod socket;
pub mod timer;
pub mod uring;

pub use server::{bind, Proxy};
