//! A pool's backends: the shared shard map with nutcracker's auto-eject (failure counts,
//! ejection, retry), and each worker's own pipelined connections to every backend.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use bytes::Bytes;
use tokio::sync::Notify;

use super::connection::{self, Handle, Report, Target};
use super::{Error, Expect, ReplyReceiver};
use crate::config::{BackendAddr, PoolConfig, ReadFrom};
use crate::metrics::{ErrorKind, Metrics, PoolMetrics, Tally};
use crate::route::cluster::Layout;
use crate::route::{slots, ShardMap, ShardSpec};

/// Marks "no rebuild scheduled" in [`Pool::rebuild_at`].
const NEVER: u64 = u64::MAX;
/// Most connections a worker keeps to cluster nodes its pool's layout does not list yet.
const MAX_STRAYS: usize = 64;

/// A pool's state shared by every worker: its config, its live shard map, its backends' health.
pub struct Pool {
    config: PoolConfig,
    metrics: Arc<PoolMetrics>,
    specs: Vec<ShardSpec>,
    /// Shared so that sessions can keep an `arc_swap::Cache` of it: one atomic load per
    /// request instead of a full `ArcSwap::load`.
    map: Arc<ArcSwap<ShardMap>>,
    health: Vec<Health>,
    epoch: Instant,
    /// When (ms since `epoch`) an ejected backend is due back, so the map must be rebuilt.
    rebuild_at: AtomicU64,
    /// A Redis Cluster pool's slot layout; `None` for every other pool.
    cluster: Option<Cluster>,
}

/// A Redis Cluster pool's routing state: the layout the control plane keeps current, and the
/// way the data path asks it for a refresh.
pub struct Cluster {
    layout: ArcSwap<Layout>,
    read_from: ReadFrom,
    /// Node index by the `host:port` the cluster names it with (as in `-MOVED` replies).
    nodes: HashMap<String, usize>,
    /// Wakes the control plane's watcher; requests coalesce into one refresh.
    refresh: Notify,
}

impl Cluster {
    /// The current layout.
    pub fn layout(&self) -> Guard<Arc<Layout>> {
        self.layout.load()
    }

    /// Makes `layout` current; whether it differs from the one it replaces.
    pub fn set_layout(&self, layout: Layout) -> bool {
        if **self.layout.load() == layout {
            return false;
        }
        self.layout.store(Arc::new(layout));
        true
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
        self.refresh.notify_one();
    }

    /// Completes when a refresh was asked for since the last one completed.
    pub async fn refresh_requested(&self) {
        self.refresh.notified().await;
    }

    /// The node to send a request for `slot` to: its master, or for a read (`read`) a replica
    /// as `read_from` says, `pick` choosing among several. `None` when no node serves the slot
    /// (or `read_from: replica` and it has no healthy replica).
    pub fn node_for(&self, slot: u16, read: bool, pick: u64) -> Option<usize> {
        let layout = self.layout.load();
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

/// One backend's failure bookkeeping.
#[derive(Debug, Default)]
struct Health {
    failures: AtomicU32,
    /// Ejected until this time (ms since the pool's epoch); 0 = live.
    ejected_until: AtomicU64,
}

impl Pool {
    /// The pool for `config`, every backend live, counting into `metrics`.
    pub fn new(config: PoolConfig, metrics: &Metrics) -> Pool {
        let names: Vec<String> = config.servers.iter().map(|s| s.ketama_name()).collect();
        let metrics = metrics.pool(&config.name, &names);
        let specs: Vec<ShardSpec> = config.servers.iter().map(|s| s.shard_spec()).collect();
        let map = ShardMap::new(config.hash, config.distribution, config.hash_tag, &specs);
        let health = specs.iter().map(|_| Health::default()).collect();
        let cluster = config.cluster.as_ref().map(|cluster| Cluster {
            layout: ArcSwap::from_pointee(Layout::empty()),
            read_from: cluster.read_from,
            nodes: config
                .servers
                .iter()
                .enumerate()
                .map(|(index, server)| (server.addr.to_string(), index))
                .collect(),
            refresh: Notify::new(),
        });
        Pool {
            cluster,
            config,
            metrics,
            specs,
            map: Arc::new(ArcSwap::from_pointee(map)),
            health,
            epoch: Instant::now(),
            rebuild_at: AtomicU64::new(NEVER),
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

    /// The shard for `key` on `map`, a recent (cached) copy of this pool's map; schedules the
    /// rebuild an ejected backend's return needs.
    ///
    /// A cluster pool answers the key's slot instead: the node is chosen when the request is
    /// sent ([`Cluster::node_for`]), and requests split and co-locate by slot, as Redis
    /// Cluster requires.
    ///
    /// # Errors
    /// [`Error::Ejected`] when every backend is ejected.
    pub fn route_on(&self, map: &ShardMap, key: &[u8]) -> Result<usize, Error> {
        if self.cluster.is_some() {
            return Ok(usize::from(slots::slot(key)));
        }
        let rebuild_at = self.rebuild_at.load(Ordering::Relaxed);
        if rebuild_at != NEVER && rebuild_at <= self.now_ms() {
            self.rebuild();
        }
        map.route(key).ok_or(Error::Ejected)
    }

    /// The pool's live shard map, for [`arc_swap::Cache`].
    pub fn map(&self) -> &Arc<ArcSwap<ShardMap>> {
        &self.map
    }

    /// Each shard's slot ranges, for a `distribution: slots` pool; for a cluster pool each
    /// node's slots as master.
    pub fn slot_ranges(&self) -> Option<Vec<(usize, Vec<std::ops::RangeInclusive<u16>>)>> {
        match &self.cluster {
            Some(cluster) => Some(
                cluster
                    .layout()
                    .master_ranges(self.config.servers.len())
                    .into_iter()
                    .enumerate()
                    .collect(),
            ),
            None => self.map.load().slot_ranges(),
        }
    }

    /// A Redis Cluster pool's routing state; `None` for other pools.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// Whether backend `shard` is currently ejected.
    pub fn is_ejected(&self, shard: usize) -> bool {
        self.health
            .get(shard)
            .is_some_and(|h| h.ejected_until.load(Ordering::Relaxed) > self.now_ms())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts a failure of `shard`; with `auto_eject_hosts`, ejects it once the count reaches
    /// `server_failure_limit` (nutcracker keeps counting, so a backend that fails again right
    /// after its retry is ejected again at once).
    fn failure(&self, shard: usize) {
        if let Some(cluster) = &self.cluster {
            // A failing node may have lost its slots (failover): ask the cluster.
            cluster.request_refresh();
        }
        let Some(health) = self.health.get(shard) else {
            return;
        };
        let failures = health
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if !self.config.auto_eject_hosts || failures < self.config.server_failure_limit {
            return;
        }
        let now = self.now_ms();
        if health.ejected_until.load(Ordering::Relaxed) > now {
            return;
        }
        let until = now + duration_ms(self.config.server_retry_timeout).max(1);
        health.ejected_until.store(until, Ordering::Relaxed);
        self.metrics.eject(shard);
        tracing::warn!(pool = %self.config.name, backend = %self.config.servers.get(shard).map(|s| s.display_name()).unwrap_or_default(), failures, "backend ejected");
        self.rebuild();
    }

    fn success(&self, shard: usize) {
        if let Some(health) = self.health.get(shard) {
            if health.failures.load(Ordering::Relaxed) != 0 {
                health.failures.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Rebuilds the shard map from the backends that are live now.
    fn rebuild(&self) {
        let now = self.now_ms();
        let mut next = NEVER;
        let live: Vec<bool> = self
            .health
            .iter()
            .enumerate()
            .map(|(shard, h)| {
                let until = h.ejected_until.load(Ordering::Relaxed);
                if until > now {
                    next = next.min(until);
                } else if until != 0 {
                    // Its retry time has come: back in the map (nutcracker's `next_retry = 0`).
                    h.ejected_until.store(0, Ordering::Relaxed);
                    self.metrics.readmit(shard);
                }
                until <= now
            })
            .collect();
        let config = &self.config;
        let map = ShardMap::with_live(
            config.hash,
            config.distribution,
            config.hash_tag,
            &self.specs,
            &live,
        );
        self.map.store(Arc::new(map));
        self.rebuild_at.store(next, Ordering::Relaxed);
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Reports one backend's traffic and health to its pool.
struct ShardReport {
    pool: Arc<Pool>,
    shard: usize,
}

impl ShardReport {
    fn backend(&self) -> Option<&crate::metrics::BackendMetrics> {
        self.pool.metrics.backend(self.shard)
    }
}

impl Report for ShardReport {
    fn failed(&self, error: &Error) {
        if let Some(backend) = self.backend() {
            match error {
                Error::Timeout => backend.server_timedout.inc(),
                Error::Closed => backend.server_eof.inc(),
                Error::Connect(_) => {
                    backend.server_err.inc();
                    backend.up.set(0);
                }
                Error::Protocol => backend.server_err.inc(),
                Error::Ejected => {}
            }
        }
        self.pool.failure(self.shard);
    }

    fn errored(&self, error: &Error, requests: usize) {
        let kind = match error {
            Error::Timeout => ErrorKind::Timeout,
            Error::Closed | Error::Connect(_) => ErrorKind::Refused,
            Error::Protocol => ErrorKind::Protocol,
            Error::Ejected => ErrorKind::Ejected,
        };
        if let Some(backend) = self.backend() {
            backend.errors.of(kind).inc_by(requests as u64);
        }
    }

    fn success(&self) {
        self.pool.success(self.shard);
    }

    fn connected(&self) {
        if let Some(backend) = self.backend() {
            backend.connections_total.inc();
            backend.connections.inc();
            backend.up.set(1);
        }
    }

    fn disconnected(&self) {
        if let Some(backend) = self.backend() {
            backend.connections.dec();
        }
    }

    fn connect_failed(&self) {
        if let Some(backend) = self.backend() {
            backend.connections_total.inc();
        }
    }

    fn tally(&self) -> Tally {
        self.pool.metrics.tally(self.shard)
    }
}

/// How to reach `addr` for `config`'s pool: its password, database, timeout and keepalive;
/// `READONLY` on cluster connections when replicas serve reads.
fn target(config: &PoolConfig, addr: BackendAddr, resp3: bool) -> Target {
    Target {
        addr,
        auth: config.redis_auth.clone(),
        db: config.redis_db,
        resp3,
        readonly: config
            .cluster
            .as_ref()
            .is_some_and(|cluster| cluster.read_from != ReadFrom::Master),
        timeout: config.timeout,
        keepalive: config.tcpkeepalive,
        max_reply_bytes: config.limits.max_reply_bytes,
    }
}

/// One worker's connections to a pool's backends: `server_connections` per backend, and as
/// many again for RESP3 clients (connected lazily, on their first request).
#[derive(Debug)]
pub struct BackendPool {
    shards: Vec<Vec<Handle>>,
    resp3: Vec<Vec<Handle>>,
    /// A cluster pool's connections to nodes a redirect named before the layout listed them,
    /// by address and protocol (RESP3 or not); made on first use.
    strays: RefCell<HashMap<(String, bool), Handle>>,
}

impl BackendPool {
    /// Starts the connection tasks on the current worker (its `LocalSet`).
    pub fn start(pool: &Arc<Pool>) -> BackendPool {
        let shards = Self::connections(pool, false, pool.config().preconnect);
        let resp3 = if pool.config().redis {
            Self::connections(pool, true, false)
        } else {
            Vec::new()
        };
        BackendPool {
            shards,
            resp3,
            strays: RefCell::new(HashMap::new()),
        }
    }

    /// Connections given by a test (see `connection::detached`), RESP2 and RESP3 per shard.
    #[cfg(test)]
    pub(crate) fn from_handles(shards: Vec<Vec<Handle>>, resp3: Vec<Vec<Handle>>) -> BackendPool {
        BackendPool {
            shards,
            resp3,
            strays: RefCell::new(HashMap::new()),
        }
    }

    fn connections(pool: &Arc<Pool>, resp3: bool, preconnect: bool) -> Vec<Vec<Handle>> {
        let config = pool.config();
        config
            .servers
            .iter()
            .enumerate()
            .map(|(shard, server)| {
                let target = Arc::new(target(config, server.addr.clone(), resp3));
                let report: Arc<dyn Report> = Arc::new(ShardReport {
                    pool: Arc::clone(pool),
                    shard,
                });
                (0..config.server_connections.max(1))
                    .map(|_| {
                        connection::spawn(Arc::clone(&target), Arc::clone(&report), preconnect)
                    })
                    .collect()
            })
            .collect()
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
    /// named it): made on first use, kept for this route's life. `None` once [`MAX_STRAYS`]
    /// exist, so a backend naming ever new addresses cannot make Keyway open connections
    /// without bound.
    pub fn stray(&self, pool: &Arc<Pool>, addr: &BackendAddr, resp3: bool) -> Option<Handle> {
        let mut strays = self.strays.borrow_mut();
        let key = (addr.to_string(), resp3);
        if !strays.contains_key(&key) && strays.len() >= MAX_STRAYS {
            return None;
        }
        let handle = strays
            .entry(key)
            .or_insert_with(|| {
                let target = Arc::new(target(pool.config(), addr.clone(), resp3));
                // No shard of the pool: counts nothing per backend, but its failures still ask
                // for a refresh of the layout.
                let report: Arc<dyn Report> = Arc::new(ShardReport {
                    pool: Arc::clone(pool),
                    shard: usize::MAX,
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
