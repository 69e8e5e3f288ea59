//! A pool's backends: the shared shard map with nutcracker's auto-eject (failure counts,
//! ejection, retry), and each worker's own pipelined connections to every backend.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;

use super::connection::{self, Handle, Report, Target};
use super::{Error, Expect, ReplyReceiver};
use crate::config::PoolConfig;
use crate::metrics::{ErrorKind, Metrics, PoolMetrics};
use crate::route::{ShardMap, ShardSpec};

/// Marks "no rebuild scheduled" in [`Pool::rebuild_at`].
const NEVER: u64 = u64::MAX;

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
        Pool {
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

    /// The shard for `key`.
    ///
    /// # Errors
    /// [`Error::Ejected`] when every backend is ejected.
    pub fn route(&self, key: &[u8]) -> Result<usize, Error> {
        self.route_on(&self.map.load(), key)
    }

    /// The shard for `key` on `map`, a recent (cached) copy of this pool's map; schedules the
    /// rebuild an ejected backend's return needs.
    ///
    /// # Errors
    /// [`Error::Ejected`] when every backend is ejected.
    pub fn route_on(&self, map: &ShardMap, key: &[u8]) -> Result<usize, Error> {
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

    /// Each shard's slot ranges, for a `distribution: slots` pool.
    pub fn slot_ranges(&self) -> Option<Vec<(usize, Vec<std::ops::RangeInclusive<u16>>)>> {
        self.map.load().slot_ranges()
    }

    /// Whether backend `shard` is currently ejected.
    pub fn is_ejected(&self, shard: usize) -> bool {
        self.health
            .get(shard)
            .is_some_and(|h| h.ejected_until.load(Ordering::Relaxed) > self.now_ms())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Counts a failure of `shard`; with `auto_eject_hosts`, ejects it once the count reaches
    /// `server_failure_limit` (nutcracker keeps counting, so a backend that fails again right
    /// after its retry is ejected again at once).
    fn failure(&self, shard: usize) {
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

    fn request(&self, bytes: usize) {
        if let Some(backend) = self.backend() {
            backend.request(bytes);
        }
    }

    fn response(&self, bytes: usize, elapsed: Duration) {
        if let Some(backend) = self.backend() {
            backend.response(bytes);
        }
        self.pool.metrics.observe(elapsed);
    }
}

/// One worker's connections to a pool's backends: `server_connections` per backend, and as
/// many again for RESP3 clients (connected lazily, on their first request).
#[derive(Debug)]
pub struct BackendPool {
    shards: Vec<Vec<Handle>>,
    resp3: Vec<Vec<Handle>>,
}

impl BackendPool {
    /// Starts the connection tasks on the current runtime.
    pub fn start(pool: &Arc<Pool>) -> BackendPool {
        let shards = Self::connections(pool, false, pool.config().preconnect);
        let resp3 = if pool.config().redis {
            Self::connections(pool, true, false)
        } else {
            Vec::new()
        };
        BackendPool { shards, resp3 }
    }

    fn connections(pool: &Arc<Pool>, resp3: bool, preconnect: bool) -> Vec<Vec<Handle>> {
        let config = pool.config();
        config
            .servers
            .iter()
            .enumerate()
            .map(|(shard, server)| {
                let target = Arc::new(Target {
                    addr: server.addr.clone(),
                    auth: config.redis_auth.clone(),
                    db: config.redis_db,
                    resp3,
                    timeout: config.timeout,
                    keepalive: config.tcpkeepalive,
                });
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
        let set = if resp3 { &self.resp3 } else { &self.shards };
        let handle = set
            .get(shard)
            .and_then(|conns| conns.get(client as usize % conns.len().max(1)));
        match handle {
            Some(handle) => handle.send(frame, expect),
            None => ReplyReceiver::ready(Err(Error::Ejected)),
        }
    }
}
