//! A pool's routing snapshot and its backends. A [`Pool`] is immutable: the control plane builds
//! one (at start, on reload, on a Sentinel switch, a cluster layout change, an ejection or a
//! readmission) and publishes it whole; sessions only read it. The data path writes nothing but
//! each [`Backend`]'s failure counter, and wakes the control plane through the pool's
//! [`Signal`] when a backend reaches `server_failure_limit`.
//!
//! A [`Backend`] is one backend as its connections see it (address, auth, db, timeout,
//! keepalive, protocol, `server_connections`, `max_reply_bytes`); a new snapshot reuses the old one's `Backend` wherever those are
//! unchanged, and each worker keeps its connections keyed by it ([`Connections`]), so a new
//! snapshot reconnects only the backends that changed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::connection::{self, Handle, Report, Target};
use super::lease::{Lease, LeaseRefused};
use super::{Error, Expect, ReplyReceiver};
use crate::config::{BackendAddr, PoolConfig, ReadFrom};
use crate::metrics::{BackendMetrics, ErrorKind, Metrics, PoolMetrics, Tally};
use crate::route::cluster::Layout;
use crate::route::{slots, ShardMap, ShardSpec};
use crate::security::tls::BackendTls;

/// Most connections a worker keeps to cluster nodes its pool's layout does not list yet.
const MAX_STRAYS: usize = 64;
/// Longest that failed requests of a backend at its failure limit wait for the control plane
/// to eject it before they get their error replies.
const MAX_SETTLE: Duration = Duration::from_millis(200);

/// How the data path wakes the control plane for one pool. Shared by every snapshot of the
/// pool (by name), so a wake-up sent while a new snapshot is being installed is not lost.
#[derive(Debug, Default)]
pub struct Signal {
    /// A backend reached its failure limit: decide on ejection.
    failed: Notify,
    /// A cluster pool's layout may be stale (a redirect, an unreachable node).
    refresh: Notify,
}

impl Signal {
    /// Completes when a backend reached its failure limit since the last call completed.
    pub async fn failure_reported(&self) {
        self.failed.notified().await;
    }

    /// Completes when a refresh of the cluster layout was asked for since the last one.
    pub async fn refresh_requested(&self) {
        self.refresh.notified().await;
    }
}

/// What defines a backend connection: two backends with equal keys share connections.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    pool: String,
    name: String,
    addr: BackendAddr,
    redis: bool,
    auth: Option<String>,
    db: u32,
    readonly: bool,
    timeout: Option<Duration>,
    keepalive: bool,
    /// `server_connections`: each worker's share of it is opened per `Backend`, so a new
    /// count needs new connections.
    connections: usize,
    max_reply_bytes: usize,
    tls: Option<BackendTls>,
}

/// One backend of a pool as its connections see it: how to reach it, where its traffic is
/// counted, and its failure counter. Shared by successive snapshots while all of that holds.
pub struct Backend {
    key: Key,
    target: Arc<Target>,
    resp3: Arc<Target>,
    metrics: Arc<PoolMetrics>,
    /// Its index in `metrics` (its shard when it joined).
    index: usize,
    /// Requests failed since the backend last answered (nutcracker's `failure_count`).
    failures: AtomicU32,
    /// The failure count that wakes the control plane; 0 when the pool does not eject.
    limit: AtomicU32,
    /// A cluster node: its failures ask for a layout refresh instead.
    cluster: bool,
    signal: Arc<Signal>,
    /// Set by the control plane once a snapshot ejecting the backend is in force on every
    /// worker; cleared when one readmitting it is.
    ejected: AtomicBool,
    /// Wakes the failed requests waiting for that decision (see [`Report::settle`]).
    decided: Notify,
    /// Dedicated connections leased now, over all workers.
    leased: AtomicUsize,
    /// `dedicated_connections`: the most that may be leased at once (follows reloads).
    lease_limit: AtomicUsize,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("addr", &self.key.addr)
            .field("failures", &self.failures.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// How the pool reaches this backend, for RESP3 clients (`HELLO 3`) or not.
    pub fn target(&self, resp3: bool) -> &Target {
        if resp3 {
            &self.resp3
        } else {
            &self.target
        }
    }

    /// Requests failed since the backend last answered.
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Counts `requests` requests that failed because the backend is unreachable or broken;
    /// wakes the control plane once the count reaches the pool's `server_failure_limit`.
    fn failed(&self, requests: usize) {
        if requests == 0 {
            return;
        }
        if self.cluster {
            // A failing node may have lost its slots (failover): ask the cluster.
            self.signal.refresh.notify_one();
            return;
        }
        let added = u32::try_from(requests).unwrap_or(u32::MAX);
        let count = self
            .failures
            .fetch_add(added, Ordering::Relaxed)
            .saturating_add(added);
        let limit = self.limit.load(Ordering::Relaxed);
        if limit != 0 && count >= limit {
            self.signal.failed.notify_one();
        }
    }

    /// Sets the failure count to `count` (the control plane readmitting the backend).
    pub fn rearm(&self, count: u32) {
        self.failures.store(count, Ordering::Relaxed);
    }

    /// Records that a snapshot ejecting (`ejected`) or readmitting the backend is in force on
    /// every worker, and releases the failed requests waiting for that.
    pub fn decided(&self, ejected: bool) {
        self.ejected.store(ejected, Ordering::Release);
        self.decided.notify_waiters();
    }

    /// Whether failed requests must wait for the control plane: the backend reached its limit
    /// and no snapshot ejecting it is in force yet.
    fn undecided(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        limit != 0
            && self.failures.load(Ordering::Relaxed) >= limit
            && !self.ejected.load(Ordering::Acquire)
    }

    /// Waits until the control plane has ejected the backend, at most [`MAX_SETTLE`].
    async fn settle(&self) {
        let deadline = Instant::now() + MAX_SETTLE;
        loop {
            let decided = self.decided.notified();
            tokio::pin!(decided);
            decided.as_mut().enable();
            if !self.undecided() {
                return;
            }
            tokio::select! {
                () = decided => {}
                () = crate::timer::sleep_until(deadline) => return,
            }
        }
    }

    fn answered(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    fn backend_metrics(&self) -> Option<&BackendMetrics> {
        self.metrics.backend(self.index)
    }

    /// A permit for one dedicated connection to this backend, counted over the whole process
    /// and released when the [`Lease`] drops; open the connection with [`Lease::connect`]
    /// (or take the permit alone for a link that owns its stream).
    ///
    /// # Errors
    /// [`LeaseRefused`] (naming the limit and the backend) when `dedicated_connections` are
    /// leased already: the caller answers with an error, it never waits.
    pub fn lease(self: &Arc<Self>) -> Result<Lease, LeaseRefused> {
        let limit = self.lease_limit.load(Ordering::Relaxed);
        let granted = self
            .leased
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        match granted {
            Ok(_) => {
                if let Some(metrics) = self.backend_metrics() {
                    metrics.dedicated.inc();
                }
                Ok(Lease::new(Arc::clone(self)))
            }
            Err(_) => Err(LeaseRefused {
                limit,
                backend: self.key.addr.to_string(),
            }),
        }
    }

    /// Dedicated connections leased now, over all workers.
    pub fn leased(&self) -> usize {
        self.leased.load(Ordering::Relaxed)
    }

    /// `dedicated_connections`: the most that may be leased at once.
    pub fn lease_limit(&self) -> usize {
        self.lease_limit.load(Ordering::Relaxed)
    }

    /// Gives back one lease (the [`Lease`]'s drop).
    pub(super) fn release(&self) {
        let _ = self
            .leased
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if let Some(metrics) = self.backend_metrics() {
            metrics.dedicated.dec();
        }
    }

    /// Where a dedicated connection reports: as a shared one does (traffic, failures towards
    /// auto-eject), but not in the shared connections' gauge (the lease gauge counts it).
    pub(super) fn dedicated_report(self: &Arc<Self>) -> Arc<dyn Report> {
        Arc::new(BackendReport {
            backend: Arc::clone(self),
            shared: false,
        })
    }
}

/// A Redis Cluster pool's slot layout and replica policy.
pub struct Cluster {
    layout: Layout,
    read_from: ReadFrom,
    /// Node index by the `host:port` the cluster names it with (as in `-MOVED` replies).
    nodes: HashMap<String, usize>,
    signal: Arc<Signal>,
}

impl Cluster {
    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The node the cluster calls `addr` (`host:port`), if it is one of the pool's.
    pub fn node(&self, addr: &str) -> Option<usize> {
        self.nodes.get(addr).copied()
    }

    /// Whether read-only commands may go to replicas (`read_from` other than `master`).
    pub fn replica_reads(&self) -> bool {
        self.read_from != ReadFrom::Master
    }

    /// Asks the control plane to re-read the cluster's layout soon (cheap; coalesced).
    pub fn request_refresh(&self) {
        self.signal.refresh.notify_one();
    }

    /// The node to send a request for `slot` to: its master, or for a read (`read`) a replica
    /// as `read_from` says, `pick` choosing among several. `None` when no node serves the slot
    /// (or `read_from: replica` and it has no healthy replica).
    pub fn node_for(&self, slot: u16, read: bool, pick: u64) -> Option<usize> {
        let layout = &self.layout;
        if !read || !self.replica_reads() {
            return layout.master(slot);
        }
        let replicas = layout.replicas(slot);
        let index = usize::try_from(pick).unwrap_or(0) % replicas.len().max(1);
        match (replicas.get(index), self.read_from) {
            (Some(&replica), _) => Some(replica),
            (None, ReadFrom::Replica) => None,
            (None, _) => layout.master(slot),
        }
    }
}

/// Where a pool sends a key: a backend of a standalone pool, or a Redis Cluster slot, whose
/// node is chosen when the request is sent (the layout may change before it is). Keys split
/// and co-locate by it: by shard, or by slot as Redis Cluster requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A backend's index in the pool.
    Shard(usize),
    /// A Redis Cluster slot.
    Slot(u16),
}

/// How a pool maps keys to backends.
enum Routing {
    /// A shard map over the live backends.
    Shards(ShardMap),
    /// A Redis Cluster's slot layout.
    Cluster(Cluster),
}

/// The previous servers' placement, kept in a pool's snapshots for its migration window
/// (`migration: { read_through: true, ... }`) after a reload changed its servers: a read that
/// misses on a key's new owner is retried on the old owner this map names. Built by the
/// control plane; the data path only reads it.
#[derive(Debug)]
pub struct Handover {
    /// The previous servers' shard map, every backend live.
    map: ShardMap,
    /// Per previous shard, its backend: an index into the snapshot's backends, or past them
    /// into its retired ones (previous backends the new servers dropped).
    owners: Vec<usize>,
    until: Instant,
    copy: bool,
}

impl Handover {
    /// When the window ends (the control plane then publishes a snapshot without it).
    pub fn until(&self) -> Instant {
        self.until
    }

    /// Whether values found on the old owner are copied to the new one (`copy: true`).
    pub fn copies(&self) -> bool {
        self.copy
    }

    /// The backend that held `key` before the change, when it is not `now` (the key's
    /// shard now); an index as [`Pool::route`] gives, or past the pool's backends for a
    /// retired one.
    pub fn old_owner(&self, key: &[u8], now: usize) -> Option<usize> {
        let old = self.map.route(key)?;
        self.owners.get(old).copied().filter(|&owner| owner != now)
    }
}

/// One pool's routing snapshot: its config, its backends, its shard map (or cluster layout),
/// which backends are ejected and until when. Immutable; replaced whole.
pub struct Pool {
    config: PoolConfig,
    metrics: Arc<PoolMetrics>,
    specs: Vec<ShardSpec>,
    backends: Vec<Arc<Backend>>,
    /// During a migration window, the previous servers' placement.
    handover: Option<Arc<Handover>>,
    /// During a migration window, the previous backends the current servers dropped: shard
    /// indices past `backends` reach them.
    retired: Vec<Arc<Backend>>,
    /// Per backend, when an ejected one is due back; `None` for a live one.
    ejected: Vec<Option<Instant>>,
    routing: Routing,
    signal: Arc<Signal>,
}

impl Pool {
    /// The first snapshot of `config`, every backend live, counting into `metrics`. Backends
    /// unchanged since `previous` (the pool's snapshot before a reload or a switch) keep their
    /// connections, failure counts and ejection; a cluster pool starts with an empty layout.
    pub fn new(config: PoolConfig, metrics: &Metrics, previous: Option<&Pool>) -> Pool {
        let previous = previous.filter(|p| p.config.name == config.name);
        let names: Vec<String> = config.servers.iter().map(|s| s.ketama_name()).collect();
        let metrics = match previous {
            Some(p) if p.metrics.backends.len() == names.len() && p.names() == names => {
                Arc::clone(&p.metrics)
            }
            _ => metrics.pool(&config.name, &names),
        };
        metrics
            .client_connections_limit
            .set(i64::from(config.client_connections));
        let signal = previous.map_or_else(Arc::default, |p| Arc::clone(&p.signal));
        let limit = if config.auto_eject_hosts && config.cluster.is_none() {
            config.server_failure_limit.max(1)
        } else {
            0
        };
        let mut ejected = Vec::with_capacity(config.servers.len());
        let backends: Vec<Arc<Backend>> = config
            .servers
            .iter()
            .enumerate()
            .map(|(index, server)| {
                let key = key(&config, server.addr.clone(), server.ketama_name());
                let reused = previous.and_then(|p| {
                    let at = p.backends.iter().position(|b| b.key == key)?;
                    Some((Arc::clone(p.backends.get(at)?), p.ejected.get(at).copied()?))
                });
                match reused {
                    Some((backend, until)) => {
                        backend.limit.store(limit, Ordering::Relaxed);
                        backend
                            .lease_limit
                            .store(config.limits.dedicated_connections, Ordering::Relaxed);
                        ejected.push(until.filter(|_| limit != 0));
                        backend
                    }
                    _ => {
                        ejected.push(None);
                        Arc::new(Backend {
                            target: Arc::new(target(&config, server.addr.clone(), false)),
                            resp3: Arc::new(target(&config, server.addr.clone(), true)),
                            key,
                            metrics: Arc::clone(&metrics),
                            index,
                            failures: AtomicU32::new(0),
                            limit: AtomicU32::new(limit),
                            cluster: config.cluster.is_some(),
                            signal: Arc::clone(&signal),
                            ejected: AtomicBool::new(false),
                            decided: Notify::new(),
                            leased: AtomicUsize::new(0),
                            lease_limit: AtomicUsize::new(config.limits.dedicated_connections),
                        })
                    }
                }
            })
            .collect();
        let specs: Vec<ShardSpec> = config.servers.iter().map(|s| s.shard_spec()).collect();
        let routing = match &config.cluster {
            Some(cluster) => Routing::Cluster(Cluster {
                layout: Layout::empty(),
                read_from: cluster.read_from,
                nodes: config
                    .servers
                    .iter()
                    .enumerate()
                    .map(|(index, server)| (server.addr.to_string(), index))
                    .collect(),
                signal: Arc::clone(&signal),
            }),
            None => Routing::Shards(shard_map(&config, &specs, &ejected)),
        };
        // A window under way goes on through snapshots of the same shards (a Sentinel switch,
        // a reload changing other keys) while the config still asks for it.
        let (handover, retired) = match previous {
            Some(p) if config.migration.is_some() && p.backends.len() == backends.len() => {
                (p.handover.clone(), p.retired.clone())
            }
            _ => (None, Vec::new()),
        };
        Pool {
            config,
            metrics,
            specs,
            backends,
            handover,
            retired,
            ejected,
            routing,
            signal,
        }
    }

    /// This snapshot with a migration window from `previous` (the pool's snapshot before a
    /// reload changed its servers): reads missing here are retried on the backend
    /// `previous`'s servers placed the key on, until `now + window`. `None` when either is
    /// not a shard map of fixed placement (cluster, random) or the placement did not change.
    pub fn with_handover(&self, previous: &Pool, window: Duration, copy: bool) -> Option<Pool> {
        let (Routing::Shards(_), Routing::Shards(_)) = (&self.routing, &previous.routing) else {
            return None;
        };
        let fixed = |config: &PoolConfig| config.distribution != crate::route::Distribution::Random;
        if !fixed(&self.config)
            || !fixed(&previous.config)
            || self.specs_and_addrs() == previous.specs_and_addrs()
        {
            return None;
        }
        let old = &previous.config;
        let map = ShardMap::new(old.hash, old.distribution, old.hash_tag, &previous.specs);
        let mut retired = Vec::new();
        let owners = previous
            .backends
            .iter()
            .map(|backend| {
                match self
                    .backends
                    .iter()
                    .position(|b| Arc::ptr_eq(b, backend) || b.key == backend.key)
                {
                    Some(index) => index,
                    None => {
                        retired.push(Arc::clone(backend));
                        self.backends.len() + retired.len() - 1
                    }
                }
            })
            .collect();
        let mut next = self.with(self.routing_copy(), self.ejected.clone());
        next.handover = Some(Arc::new(Handover {
            map,
            owners,
            until: Instant::now() + window,
            copy,
        }));
        next.retired = retired;
        Some(next)
    }

    /// This snapshot without its migration window.
    pub fn without_handover(&self) -> Pool {
        let mut next = self.with(self.routing_copy(), self.ejected.clone());
        next.handover = None;
        next.retired = Vec::new();
        next
    }

    /// The migration window in force, if one is (and has not ended).
    #[inline]
    pub fn handover(&self) -> Option<&Handover> {
        self.handover
            .as_deref()
            .filter(|handover| Instant::now() < handover.until)
    }

    /// The migration window this snapshot carries, ended or not (for the control plane).
    pub fn handover_state(&self) -> Option<&Arc<Handover>> {
        self.handover.as_ref()
    }

    fn specs_and_addrs(&self) -> Vec<(&ShardSpec, &BackendAddr)> {
        self.specs
            .iter()
            .zip(self.config.servers.iter().map(|s| &s.addr))
            .collect()
    }

    fn routing_copy(&self) -> Routing {
        match &self.routing {
            Routing::Shards(map) => Routing::Shards(map.clone()),
            Routing::Cluster(cluster) => {
                Routing::Cluster(cluster.with_layout(cluster.layout.clone()))
            }
        }
    }

    fn names(&self) -> Vec<String> {
        self.config
            .servers
            .iter()
            .map(|s| s.ketama_name())
            .collect()
    }

    /// This snapshot with backend ejections `ejected` (per backend, when it is due back).
    pub fn with_ejected(&self, ejected: Vec<Option<Instant>>) -> Pool {
        let routing = match &self.routing {
            Routing::Shards(_) => Routing::Shards(shard_map(&self.config, &self.specs, &ejected)),
            Routing::Cluster(cluster) => {
                Routing::Cluster(cluster.with_layout(cluster.layout.clone()))
            }
        };
        self.with(routing, ejected)
    }

    /// This snapshot of a cluster pool with `layout` (over its nodes); `None` for other pools.
    pub fn with_layout(&self, layout: Layout) -> Option<Pool> {
        let Routing::Cluster(cluster) = &self.routing else {
            return None;
        };
        Some(self.with(
            Routing::Cluster(cluster.with_layout(layout)),
            self.ejected.clone(),
        ))
    }

    fn with(&self, routing: Routing, ejected: Vec<Option<Instant>>) -> Pool {
        Pool {
            config: self.config.clone(),
            metrics: Arc::clone(&self.metrics),
            specs: self.specs.clone(),
            backends: self.backends.clone(),
            handover: self.handover.clone(),
            retired: self.retired.clone(),
            ejected,
            routing,
            signal: Arc::clone(&self.signal),
        }
    }

    /// The pool's configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The pool's metric handles.
    pub fn metrics(&self) -> &PoolMetrics {
        &self.metrics
    }

    /// The pool's backends, in shard order.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// How the data path wakes the control plane for this pool.
    pub fn signal(&self) -> &Arc<Signal> {
        &self.signal
    }

    /// Per backend, when an ejected one is due back (`None`: live).
    pub fn ejections(&self) -> &[Option<Instant>] {
        &self.ejected
    }

    /// Whether `other` is a snapshot of the same pool with the same backends (only its
    /// ejections or cluster layout may differ).
    pub fn same_backends(&self, other: &Pool) -> bool {
        Arc::ptr_eq(&self.signal, &other.signal)
            && self.backends.len() == other.backends.len()
            && self
                .backends
                .iter()
                .zip(&other.backends)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// Where `key` goes: its shard, or in a cluster pool its slot (the node is chosen when the
    /// request is sent: [`Cluster::node_for`]).
    ///
    /// # Errors
    /// [`Error::Ejected`] when every backend is ejected.
    pub fn route(&self, key: &[u8]) -> Result<Place, Error> {
        match &self.routing {
            Routing::Shards(map) => map.route(key).map(Place::Shard).ok_or(Error::Ejected),
            Routing::Cluster(_) => Ok(Place::Slot(slots::slot(key))),
        }
    }

    /// Each shard's slot ranges, for a `distribution: slots` pool; for a cluster pool each
    /// node's slots as master.
    pub fn slot_ranges(&self) -> Option<Vec<(usize, Vec<std::ops::RangeInclusive<u16>>)>> {
        match &self.routing {
            Routing::Cluster(cluster) => Some(
                cluster
                    .layout
                    .master_ranges(self.config.servers.len())
                    .into_iter()
                    .enumerate()
                    .collect(),
            ),
            Routing::Shards(map) => map.slot_ranges(),
        }
    }

    /// The backends that together hold the pool's keyspace, which keyspace-wide commands
    /// (`SCAN`, `KEYS`, `DBSIZE`...) ask, in the order `SCAN` visits them: every backend of a
    /// standalone pool, ejected ones included (they still hold their keys, and a `SCAN`
    /// cursor needs a shard count that ejections do not change); in a cluster pool each slot
    /// master by node index, and with `replicas` their healthy replicas too (for `SCRIPT`, so
    /// that a read-only script sent to a replica finds its script).
    pub fn keyspace(&self, replicas: bool) -> Vec<usize> {
        match &self.routing {
            Routing::Shards(_) => (0..self.backends.len()).collect(),
            Routing::Cluster(cluster) => cluster.layout.nodes(replicas),
        }
    }

    /// A Redis Cluster pool's routing state; `None` for other pools.
    pub fn cluster(&self) -> Option<&Cluster> {
        match &self.routing {
            Routing::Cluster(cluster) => Some(cluster),
            Routing::Shards(_) => None,
        }
    }

    /// Whether backend `shard` is ejected in this snapshot.
    pub fn is_ejected(&self, shard: usize) -> bool {
        self.ejected.get(shard).is_some_and(Option::is_some)
    }
}

impl Cluster {
    fn with_layout(&self, layout: Layout) -> Cluster {
        Cluster {
            layout,
            read_from: self.read_from,
            nodes: self.nodes.clone(),
            signal: Arc::clone(&self.signal),
        }
    }
}

/// The shard map of `config` over the backends `ejected` leaves live.
fn shard_map(config: &PoolConfig, specs: &[ShardSpec], ejected: &[Option<Instant>]) -> ShardMap {
    let live: Vec<bool> = ejected.iter().map(Option::is_none).collect();
    ShardMap::with_live(
        config.hash,
        config.distribution,
        config.hash_tag,
        specs,
        &live,
    )
}

/// Reports one backend's traffic and health.
struct BackendReport {
    backend: Arc<Backend>,
    /// A shared (pipelined) connection, counted in `keyway_backend_connections`.
    shared: bool,
}

impl Report for BackendReport {
    fn failed(&self, error: &Error) {
        if let Some(backend) = self.backend.backend_metrics() {
            match error {
                Error::Timeout => backend.server_timedout.inc(),
                Error::Closed => backend.server_eof.inc(),
                Error::Connect { .. } | Error::Tls { .. } => {
                    backend.server_err.inc();
                    backend.up.set(0);
                }
                Error::Protocol => backend.server_err.inc(),
                Error::Ejected => {}
            }
        }
    }

    fn errored(&self, error: &Error, requests: usize) {
        let kind = match error {
            Error::Timeout => ErrorKind::Timeout,
            Error::Closed | Error::Connect { .. } | Error::Tls { .. } => ErrorKind::Refused,
            Error::Protocol => ErrorKind::Protocol,
            Error::Ejected => ErrorKind::Ejected,
        };
        if let Some(backend) = self.backend.backend_metrics() {
            backend.errors.of(kind).inc_by(requests as u64);
        }
        // Every request that failed because its backend is down or broken counts towards
        // auto-eject, however the connection learnt it (a refused connect, a refusal while
        // backing off, a reset, a timeout): as in nutcracker, a dead backend then costs about
        // `server_failure_limit` errors.
        if *error != Error::Ejected {
            self.backend.failed(requests);
        }
    }

    fn success(&self) {
        self.backend.answered();
    }

    fn connected(&self) {
        if !self.shared {
            return;
        }
        if let Some(backend) = self.backend.backend_metrics() {
            backend.connections_total.inc();
            backend.connections.inc();
            backend.up.set(1);
        }
    }

    fn disconnected(&self) {
        if !self.shared {
            return;
        }
        if let Some(backend) = self.backend.backend_metrics() {
            backend.connections.dec();
        }
    }

    fn connect_failed(&self) {
        if let Some(backend) = self.backend.backend_metrics() {
            backend.connections_total.inc();
        }
    }

    fn tally(&self) -> Tally {
        self.backend.metrics.tally(self.backend.index)
    }

    fn settle(&self) -> Option<Pin<Box<dyn Future<Output = ()> + '_>>> {
        // Only on the error path, and only while the control plane decides: nutcracker ejects
        // at the failure that reaches the limit, so the next request already routes elsewhere.
        self.backend
            .undecided()
            .then(|| Box::pin(self.backend.settle()) as Pin<Box<dyn Future<Output = ()> + '_>>)
    }
}

/// Reports a connection to a cluster node the layout does not list: it counts nothing per
/// backend, but its failures still ask for a refresh of the layout.
struct StrayReport {
    metrics: Arc<PoolMetrics>,
    signal: Arc<Signal>,
}

impl Report for StrayReport {
    fn failed(&self, _: &Error) {
        self.signal.refresh.notify_one();
    }

    fn errored(&self, _: &Error, _: usize) {}

    fn success(&self) {}

    fn connected(&self) {}

    fn disconnected(&self) {}

    fn connect_failed(&self) {}

    fn tally(&self) -> Tally {
        self.metrics.tally(usize::MAX)
    }
}

/// What defines a connection to `addr` for `config`'s pool.
fn key(config: &PoolConfig, addr: BackendAddr, name: String) -> Key {
    Key {
        pool: config.name.clone(),
        name,
        addr,
        redis: config.redis,
        auth: config.redis_auth.clone(),
        db: config.redis_db,
        readonly: readonly(config),
        timeout: config.timeout,
        keepalive: config.tcpkeepalive,
        connections: connections_per_backend(config),
        max_reply_bytes: config.limits.max_reply_bytes,
        tls: config.server_tls.clone(),
    }
}

fn readonly(config: &PoolConfig) -> bool {
    config
        .cluster
        .as_ref()
        .is_some_and(|cluster| cluster.read_from != ReadFrom::Master)
}

/// How to reach `addr` for `config`'s pool: its password, database, timeout and keepalive;
/// `READONLY` on cluster connections when replicas serve reads.
fn target(config: &PoolConfig, addr: BackendAddr, resp3: bool) -> Target {
    Target {
        addr,
        auth: config.redis_auth.clone(),
        db: config.redis_db,
        resp3,
        readonly: readonly(config),
        timeout: config.timeout,
        keepalive: config.tcpkeepalive,
        max_reply_bytes: config.limits.max_reply_bytes,
        tls: config.server_tls.clone(),
    }
}

/// How many workers serve `config`'s pool when `workers` run: each of them owns at least one
/// of every backend's `server_connections`, so that the number is the whole process's, as in
/// nutcracker, with no request ever crossing a thread. A pool with `server_connections: 1`
/// (nutcracker's default) is served by one worker; one with 4, by up to 4.
pub fn serving_workers(config: &PoolConfig, workers: usize) -> usize {
    connections_per_backend(config).min(workers.max(1))
}

/// `server_connections`, at least 1.
fn connections_per_backend(config: &PoolConfig) -> usize {
    usize::try_from(config.server_connections.max(1)).unwrap_or(usize::MAX)
}

/// Worker `worker`'s share of `total` connections spread over `serving` workers: the first
/// `total % serving` workers take one more; a worker past `serving` takes none.
fn share(total: usize, serving: usize, worker: usize) -> usize {
    if worker >= serving {
        return 0;
    }
    total / serving + usize::from(worker < total % serving)
}

/// One worker's connections, by backend (and protocol: RESP3 or not), so that a new snapshot
/// of a pool reuses the connections of every backend it shares with the old one.
#[derive(Default)]
pub struct Connections {
    /// By backend (its address: the `Arc` kept here keeps it from being reused) and protocol.
    by_backend: HashMap<(*const Backend, bool), Opened>,
    /// This worker's index among `workers`, which decides its share of each backend's
    /// `server_connections`.
    worker: usize,
    workers: usize,
}

/// A backend's connections on one worker, and the backend (kept alive with them).
type Opened = (Arc<Backend>, Vec<Handle>);

impl Connections {
    /// The connections of worker `worker` of `workers`.
    pub fn new(worker: usize, workers: usize) -> Connections {
        Connections {
            by_backend: HashMap::new(),
            worker,
            workers: workers.max(1),
        }
    }

    /// `backend`'s connections (RESP3 ones when `resp3`): those already open on this worker,
    /// else this worker's share of `server_connections`, started here.
    fn of(&mut self, backend: &Arc<Backend>, config: &PoolConfig, resp3: bool) -> Vec<Handle> {
        let entry = self
            .by_backend
            .entry((Arc::as_ptr(backend), resp3))
            .or_insert_with(|| {
                let target = if resp3 {
                    &backend.resp3
                } else {
                    &backend.target
                };
                let report: Arc<dyn Report> = Arc::new(BackendReport {
                    backend: Arc::clone(backend),
                    shared: true,
                });
                // RESP3 connections are made on a RESP3 client's first request.
                let preconnect = config.preconnect && !resp3;
                let total = connections_per_backend(config);
                let serving = serving_workers(config, self.workers);
                let handles = (0..share(total, serving, self.worker))
                    .map(|_| connection::spawn(Arc::clone(target), Arc::clone(&report), preconnect))
                    .collect();
                (Arc::clone(backend), handles)
            });
        entry.1.clone()
    }

    /// Keeps only the connections `pools` use (the routes of the pools this worker serves);
    /// the others close once the sessions still holding them are done.
    pub fn retain<'a>(&mut self, pools: impl IntoIterator<Item = &'a BackendPool>) {
        let mut used = std::collections::HashSet::new();
        for pool in pools {
            for backend in &pool.backends {
                used.insert(Arc::as_ptr(backend));
            }
        }
        self.by_backend
            .retain(|(backend, _), _| used.contains(backend));
    }
}

/// One worker's connections to a pool's backends: `server_connections` per backend, and as
/// many again for RESP3 clients (connected lazily, on their first request).
pub struct BackendPool {
    backends: Vec<Arc<Backend>>,
    shards: Vec<Vec<Handle>>,
    resp3: Vec<Vec<Handle>>,
    /// A cluster pool's connections to nodes a redirect named before the layout listed them,
    /// by address and protocol (RESP3 or not); made on first use.
    strays: RefCell<HashMap<(String, bool), Handle>>,
}

impl std::fmt::Debug for BackendPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendPool")
            .field("backends", &self.backends.len())
            .finish_non_exhaustive()
    }
}

impl BackendPool {
    /// The connections to `pool`'s backends on the current worker (its runtime), taken from
    /// `connections` where it has them.
    /// A migration window's retired backends come after the pool's own, at the indices its
    /// [`Handover`] gives them.
    pub fn start(pool: &Pool, connections: &mut Connections) -> BackendPool {
        let config = pool.config();
        let backends: Vec<Arc<Backend>> =
            pool.backends.iter().chain(&pool.retired).cloned().collect();
        let shards = backends
            .iter()
            .map(|b| connections.of(b, config, false))
            .collect();
        let resp3 = if config.redis {
            backends
                .iter()
                .map(|b| connections.of(b, config, true))
                .collect()
        } else {
            Vec::new()
        };
        BackendPool {
            backends,
            shards,
            resp3,
            strays: RefCell::new(HashMap::new()),
        }
    }

    /// Connections given by a test (see `connection::detached`), RESP2 and RESP3 per shard.
    #[cfg(test)]
    pub(crate) fn from_handles(
        pool: &Pool,
        shards: Vec<Vec<Handle>>,
        resp3: Vec<Vec<Handle>>,
    ) -> BackendPool {
        BackendPool {
            backends: pool.backends.clone(),
            shards,
            resp3,
            strays: RefCell::new(HashMap::new()),
        }
    }

    /// This worker's connection to backend (or cluster node) `node` for `client`, RESP3 when
    /// `resp3`: always the same one, so that a client's requests (and a cluster's `ASKING` and
    /// the request after it) stay in order.
    pub fn node(&self, node: usize, client: u64, resp3: bool) -> Option<&Handle> {
        let set = if resp3 { &self.resp3 } else { &self.shards };
        let conns = set.get(node)?;
        // Spreading clients: a truncated id on a 32-bit target spreads as well.
        #[allow(clippy::cast_possible_truncation)]
        let client = client as usize;
        conns.get(client % conns.len().max(1))
    }

    /// A connection to `addr`, a cluster node the pool's layout does not list yet (a redirect
    /// named it): made on first use, kept for this route's life. `None` once `MAX_STRAYS` (64)
    /// exist, so a backend naming ever new addresses cannot make Keyway open connections
    /// without bound.
    pub fn stray(&self, pool: &Pool, addr: &BackendAddr, resp3: bool) -> Option<Handle> {
        let mut strays = self.strays.borrow_mut();
        let key = (addr.to_string(), resp3);
        if !strays.contains_key(&key) && strays.len() >= MAX_STRAYS {
            return None;
        }
        let handle = strays
            .entry(key)
            .or_insert_with(|| {
                let target = Arc::new(target(pool.config(), addr.clone(), resp3));
                let report: Arc<dyn Report> = Arc::new(StrayReport {
                    metrics: Arc::clone(&pool.metrics),
                    signal: Arc::clone(&pool.signal),
                });
                connection::spawn(target, report, false)
            })
            .clone();
        Some(handle)
    }

    /// Sends `frame` to backend `shard`, over a RESP3 connection for a RESP3 client. A client
    /// always uses the same connection to a backend, so its requests to that backend execute
    /// in the order it sent them.
    pub fn send(
        &self,
        shard: usize,
        client: u64,
        frame: Bytes,
        expect: Expect,
        resp3: bool,
    ) -> ReplyReceiver {
        let handle = self.node(shard, client, resp3);
        match handle {
            Some(handle) => handle.send(frame, expect),
            None => ReplyReceiver::ready(Err(Error::Ejected)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_stop_at_dedicated_connections_and_come_back_when_dropped() {
        let yaml = "p:\n  listen: 127.0.0.1:22121\n  redis: true\n  dedicated_connections: 2\n  \
                    servers:\n   - 127.0.0.1:7001:1 a\n   - 127.0.0.1:7002:1 b\n";
        let config = crate::config::Config::parse(yaml).unwrap().pools.remove(0);
        let pool = Pool::new(config, &Metrics::new(), None);
        let (a, b) = (&pool.backends()[0], &pool.backends()[1]);
        let first = a.lease().unwrap();
        let second = a.lease().unwrap();
        let refused = a.lease().unwrap_err();
        assert_eq!(
            refused.to_string(),
            "dedicated_connections (2) reached for 127.0.0.1:7001"
        );
        // Per backend: the other one has its own two.
        let other = b.lease().unwrap();
        let gauge = |i: usize| pool.metrics().backend(i).unwrap().dedicated.get();
        assert_eq!((a.leased(), gauge(0), gauge(1)), (2, 2, 1));
        drop(first);
        assert_eq!((a.leased(), gauge(0)), (1, 1));
        let again = a.lease().unwrap();
        drop((second, again, other));
        assert_eq!((a.leased(), b.leased(), gauge(0), gauge(1)), (0, 0, 0, 0));
    }

    fn pool_of(ports: &[u16], previous: Option<&Pool>) -> Pool {
        let mut yaml = "p:\n  listen: 127.0.0.1:22121\n  redis: true\n  \
                        migration: { read_through: true, window: 1m }\n  servers:\n"
            .to_string();
        for port in ports {
            yaml.push_str(&format!("   - 127.0.0.1:{port}:1\n"));
        }
        let config = crate::config::Config::parse(&yaml).unwrap().pools.remove(0);
        Pool::new(config, &Metrics::new(), previous)
    }

    #[test]
    fn a_handover_names_each_moved_keys_old_owner_and_keeps_removed_backends() {
        let three = pool_of(&[7001, 7002, 7003], None);
        let four = pool_of(&[7001, 7002, 7003, 7004], Some(&three));
        assert!(
            four.handover().is_none(),
            "only the control plane starts a window"
        );
        let grown = four
            .with_handover(&three, Duration::from_secs(60), false)
            .unwrap();
        let handover = grown.handover().unwrap();
        let mut moved = 0;
        for n in 0..1000 {
            let key = format!("k{n}");
            let Ok(Place::Shard(now)) = grown.route(key.as_bytes()) else {
                panic!()
            };
            let Ok(Place::Shard(before)) = three.route(key.as_bytes()) else {
                panic!()
            };
            match handover.old_owner(key.as_bytes(), now) {
                Some(old) => {
                    moved += 1;
                    assert_eq!((old, now), (before, 3), "{key}");
                }
                None => assert_eq!(now, before, "{key}"),
            }
        }
        assert!(moved > 100, "{moved}");
        assert!(grown.retired.is_empty());
        // Snapshots of the same servers keep the window; ending it drops it.
        assert!(grown.with_ejected(vec![None; 4]).handover().is_some());
        assert!(grown.without_handover().handover().is_none());
        // Shrinking: the removed backend is retired, reached past the pool's backends.
        let two = pool_of(&[7001, 7002], Some(&three));
        let shrunk = two
            .with_handover(&three, Duration::from_secs(60), true)
            .unwrap();
        assert_eq!(shrunk.retired.len(), 1);
        let key = (0..1000)
            .map(|n| format!("k{n}"))
            .find(|k| three.route(k.as_bytes()) == Ok(Place::Shard(2)))
            .unwrap();
        let Ok(Place::Shard(now)) = shrunk.route(key.as_bytes()) else {
            panic!()
        };
        assert_eq!(
            shrunk.handover().unwrap().old_owner(key.as_bytes(), now),
            Some(2)
        );
        // The same servers again: no window.
        assert!(pool_of(&[7001, 7002, 7003], Some(&three))
            .with_handover(&three, Duration::from_secs(60), false)
            .is_none());
    }

    #[test]
    fn connections_spread_over_the_serving_workers_add_up_to_server_connections() {
        for total in 1..=9 {
            for serving in 1..=total.min(4) {
                let shares: Vec<usize> = (0..6).map(|w| share(total, serving, w)).collect();
                assert_eq!(
                    shares.iter().sum::<usize>(),
                    total,
                    "{total} over {serving}"
                );
                assert!(shares.iter().take(serving).all(|&n| n >= 1));
                assert!(shares.iter().skip(serving).all(|&n| n == 0));
            }
        }
    }
}
