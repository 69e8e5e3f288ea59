//! Every metric, defined once on one Prometheus registry. The Prometheus text
//! ([`Metrics::render`]) and nutcracker's stats JSON ([`stats`]) both read these same values.
//!
//! Label values are resolved once, when a pool is (re)built ([`Metrics::pool`]): the request path
//! holds [`PoolMetrics`] / [`BackendMetrics`] handles and increments plain atomics, no lookup.

pub mod stats;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Request latency buckets, in seconds: 50 µs to 5 s.
const DURATION_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

const POOL: &[&str] = &["pool"];
const BACKEND: &[&str] = &["pool", "backend"];
const BACKEND_KIND: &[&str] = &["pool", "backend", "kind"];
const BACKEND_QUEUE: &[&str] = &["pool", "backend", "queue"];
const POOL_KIND: &[&str] = &["pool", "kind"];
const POOL_RESULT: &[&str] = &["pool", "result"];

/// The Prometheus text exposition content type, for `GET /metrics`.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Why a request failed, as counted in `keyway_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No reply within the pool's `timeout`.
    Timeout,
    /// The backend could not be reached (connect failed or was refused, connection reset).
    Refused,
    /// Nowhere to send the request: its backend (or every backend) is ejected.
    Ejected,
    /// The backend sent bytes that are not a valid reply.
    Protocol,
    /// The client sent a request that could not be forwarded (malformed, unsupported, too big).
    Client,
}

impl ErrorKind {
    /// Every kind, in label order.
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Timeout,
        ErrorKind::Refused,
        ErrorKind::Ejected,
        ErrorKind::Protocol,
        ErrorKind::Client,
    ];

    /// The `kind` label value.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Refused => "refused",
            ErrorKind::Ejected => "ejected",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Client => "client",
        }
    }
}

/// The process's metrics: one per process, shared by every thread.
///
/// ```
/// use std::time::Duration;
/// use keyway::metrics::{ErrorKind, Metrics};
///
/// let metrics = Metrics::new();
/// // Once per pool (at start and on reload), off the request path:
/// let pool = metrics.pool("alpha", &["s0".to_string(), "127.0.0.1:6380".to_string()]);
/// // Per backend connection: traffic and latencies counted locally, flushed per batch.
/// let mut tally = pool.tally(1);
/// tally.request(31);
/// tally.response(5, Duration::from_micros(180));
/// tally.flush();
/// // Rare events: plain atomic increments through the handles.
/// if let Some(backend) = pool.backend(1) {
///     backend.errors.of(ErrorKind::Timeout).inc();
/// }
/// assert!(metrics.render().contains(r#"keyway_requests_total{backend="127.0.0.1:6380",pool="alpha"} 1"#));
/// assert!(keyway::metrics::stats::render(&metrics).contains(r#""requests":1, "request_bytes":31"#));
/// ```
pub struct Metrics {
    registry: Registry,
    started: Instant,
    /// Live pools in registration order (the stats JSON lists them in this order).
    pools: Mutex<Vec<Arc<PoolMetrics>>>,
    client_connections: IntGaugeVec,
    client_connections_total: IntCounterVec,
    client_eof: IntCounterVec,
    client_err: IntCounterVec,
    forward_error: IntCounterVec,
    fragments: IntCounterVec,
    server_ejects: IntCounterVec,
    request_duration: HistogramVec,
    requests: IntCounterVec,
    responses: IntCounterVec,
    request_bytes: IntCounterVec,
    response_bytes: IntCounterVec,
    errors: IntCounterVec,
    server_eof: IntCounterVec,
    server_err: IntCounterVec,
    server_timedout: IntCounterVec,
    connections: IntGaugeVec,
    connections_total: IntCounterVec,
    up: IntGaugeVec,
    ejected: IntGaugeVec,
    queue_requests: IntGaugeVec,
    queue_bytes: IntGaugeVec,
    sentinel_switches: IntCounterVec,
    redirects: IntCounterVec,
    cluster_refreshes: IntCounterVec,
    reloads: IntCounterVec,
    generation: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("pools", &self.lock_pools().len())
            .finish_non_exhaustive()
    }
}

/// Creates and registers one metric. Names, help texts and label names are constants of this
/// file and each is registered once on a fresh registry, so neither step can fail (the unit tests
/// build a [`Metrics`], which exercises every one).
#[allow(clippy::expect_used)]
fn registered<C: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<C>,
) -> C {
    let metric = metric.expect("metric names, help and labels are valid constants");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric name is registered once, on its own registry");
    metric
}

impl Metrics {
    /// Every metric, registered on a registry of its own, all series empty.
    pub fn new() -> Arc<Metrics> {
        let r = Registry::new();
        let counters = |name: &str, help: &str, labels: &[&str]| {
            registered(&r, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            registered(&r, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let metrics = Metrics {
            client_connections: gauges(
                "keyway_client_connections",
                "Open client connections (nutcracker: client_connections).",
                POOL,
            ),
            client_connections_total: counters(
                "keyway_client_connections_total",
                "Client connections accepted.",
                POOL,
            ),
            client_eof: counters(
                "keyway_client_eof_total",
                "Client connections closed by the client (nutcracker: client_eof).",
                POOL,
            ),
            client_err: counters(
                "keyway_client_errors_total",
                "Client connections closed on an error (nutcracker: client_err).",
                POOL,
            ),
            forward_error: counters(
                "keyway_forward_errors_total",
                "Requests that could not be forwarded to a backend (nutcracker: forward_error).",
                POOL,
            ),
            fragments: counters(
                "keyway_fragments_total",
                "Sub-requests created by splitting multi-key requests (nutcracker: fragments).",
                POOL,
            ),
            server_ejects: counters(
                "keyway_backend_ejects_total",
                "Times a backend of the pool was ejected (nutcracker: server_ejects).",
                POOL,
            ),
            request_duration: registered(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "keyway_request_duration_seconds",
                        "Time from a request's arrival to its reply being ready for the client.",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    POOL,
                ),
            ),
            requests: counters(
                "keyway_requests_total",
                "Requests sent to a backend (nutcracker: requests).",
                BACKEND,
            ),
            responses: counters(
                "keyway_responses_total",
                "Replies received from a backend (nutcracker: responses).",
                BACKEND,
            ),
            request_bytes: counters(
                "keyway_request_bytes_total",
                "Request bytes sent to a backend (nutcracker: request_bytes).",
                BACKEND,
            ),
            response_bytes: counters(
                "keyway_response_bytes_total",
                "Reply bytes received from a backend (nutcracker: response_bytes).",
                BACKEND,
            ),
            errors: counters(
                "keyway_errors_total",
                "Requests answered with an error instead of a backend reply, by kind.",
                BACKEND_KIND,
            ),
            server_eof: counters(
                "keyway_backend_eof_total",
                "Backend connections closed by the backend (nutcracker: server_eof).",
                BACKEND,
            ),
            server_err: counters(
                "keyway_backend_errors_total",
                "Backend connections failed or closed on an error (nutcracker: server_err).",
                BACKEND,
            ),
            server_timedout: counters(
                "keyway_backend_timeouts_total",
                "Backend connections that timed out (nutcracker: server_timedout).",
                BACKEND,
            ),
            connections: gauges(
                "keyway_backend_connections",
                "Open backend connections, over all workers (nutcracker: server_connections).",
                BACKEND,
            ),
            connections_total: counters(
                "keyway_backend_connections_total",
                "Backend connection attempts, failed ones included.",
                BACKEND,
            ),
            up: gauges(
                "keyway_backend_up",
                "1 while the backend is reachable (its last connection attempt succeeded), else 0.",
                BACKEND,
            ),
            ejected: gauges(
                "keyway_backend_ejected",
                "1 while the backend is ejected from its pool's shard map, else 0.",
                BACKEND,
            ),
            queue_requests: gauges(
                "keyway_backend_queue_requests",
                "Requests queued for a backend: in = not yet written, out = awaiting a reply \
                 (nutcracker: in_queue, out_queue).",
                BACKEND_QUEUE,
            ),
            queue_bytes: gauges(
                "keyway_backend_queue_bytes",
                "Request bytes queued for a backend: in = not yet written, out = awaiting a \
                 reply (nutcracker: in_queue_bytes, out_queue_bytes).",
                BACKEND_QUEUE,
            ),
            sentinel_switches: counters(
                "keyway_sentinel_switches_total",
                "Sentinel master switches applied to a backend.",
                BACKEND,
            ),
            redirects: counters(
                "keyway_cluster_redirects_total",
                "Redis Cluster redirects followed for clients, by kind (moved or ask).",
                POOL_KIND,
            ),
            cluster_refreshes: counters(
                "keyway_cluster_refreshes_total",
                "Redis Cluster slot map refreshes, by result (ok or error).",
                POOL_RESULT,
            ),
            reloads: counters(
                "keyway_reloads_total",
                "Configuration reloads, by result (ok or error).",
                &["result"],
            ),
            generation: registered(
                &r,
                IntGauge::new(
                    "keyway_config_generation",
                    "Generation of the configuration in use: 1 once started, +1 per applied reload.",
                ),
            ),
            registry: r,
            started: Instant::now(),
            pools: Mutex::new(Vec::new()),
        };
        // Both results exist from the start, so a dashboard's rate() has a series to read.
        metrics.reloads.with_label_values(&["ok"]);
        metrics.reloads.with_label_values(&["error"]);
        Arc::new(metrics)
    }

    /// The handles for pool `pool` with backends `backends` (their stats names, in shard order:
    /// for nutcracker-identical stats JSON that is nutcracker's server name, i.e.
    /// `BackendConfig::ketama_name`: the configured name, else `host:port`, `host` alone for
    /// port 11211, `path:` for a unix socket). Every series starts at 0 (or keeps its value when
    /// the pool already exists).
    ///
    /// Calling it again for the same pool (on reload) returns handles to the same series for
    /// backends that remain and removes the series of backends that are gone; handles returned
    /// earlier for remaining backends keep counting into the same series.
    pub fn pool(&self, pool: &str, backends: &[String]) -> Arc<PoolMetrics> {
        let metrics = Arc::new(PoolMetrics {
            name: pool.to_string(),
            client_connections: self.client_connections.with_label_values(&[pool]),
            client_connections_total: self.client_connections_total.with_label_values(&[pool]),
            client_eof: self.client_eof.with_label_values(&[pool]),
            client_err: self.client_err.with_label_values(&[pool]),
            forward_error: self.forward_error.with_label_values(&[pool]),
            fragments: self.fragments.with_label_values(&[pool]),
            server_ejects: self.server_ejects.with_label_values(&[pool]),
            request_duration: self.request_duration.with_label_values(&[pool]),
            moved: self.redirects.with_label_values(&[pool, "moved"]),
            ask: self.redirects.with_label_values(&[pool, "ask"]),
            refreshed: self.cluster_refreshes.with_label_values(&[pool, "ok"]),
            refresh_failed: self.cluster_refreshes.with_label_values(&[pool, "error"]),
            backends: backends.iter().map(|b| self.backend(pool, b)).collect(),
        });
        let mut pools = self.lock_pools();
        if let Some(old) = pools.iter_mut().find(|p| p.name == pool) {
            for gone in old.backends.iter().filter(|b| !backends.contains(&b.name)) {
                self.remove_backend(pool, &gone.name);
            }
            *old = Arc::clone(&metrics);
        } else {
            pools.push(Arc::clone(&metrics));
        }
        metrics
    }

    fn backend(&self, pool: &str, backend: &str) -> BackendMetrics {
        let labels = [pool, backend];
        let errors = |kind: ErrorKind| {
            self.errors
                .with_label_values(&[pool, backend, kind.label()])
        };
        let queue = |vec: &IntGaugeVec, queue: &str| vec.with_label_values(&[pool, backend, queue]);
        BackendMetrics {
            name: backend.to_string(),
            requests: self.requests.with_label_values(&labels),
            responses: self.responses.with_label_values(&labels),
            request_bytes: self.request_bytes.with_label_values(&labels),
            response_bytes: self.response_bytes.with_label_values(&labels),
            errors: ErrorCounters {
                timeout: errors(ErrorKind::Timeout),
                refused: errors(ErrorKind::Refused),
                ejected: errors(ErrorKind::Ejected),
                protocol: errors(ErrorKind::Protocol),
                client: errors(ErrorKind::Client),
            },
            server_eof: self.server_eof.with_label_values(&labels),
            server_err: self.server_err.with_label_values(&labels),
            server_timedout: self.server_timedout.with_label_values(&labels),
            connections: self.connections.with_label_values(&labels),
            connections_total: self.connections_total.with_label_values(&labels),
            up: self.up.with_label_values(&labels),
            ejected: self.ejected.with_label_values(&labels),
            ejected_at_usec: AtomicI64::new(0),
            in_queue: queue(&self.queue_requests, "in"),
            in_queue_bytes: queue(&self.queue_bytes, "in"),
            out_queue: queue(&self.queue_requests, "out"),
            out_queue_bytes: queue(&self.queue_bytes, "out"),
            sentinel_switches: self.sentinel_switches.with_label_values(&labels),
        }
    }

    /// Removes pool `pool` and every series it and its backends had (a reload that drops the
    /// pool). Handles still held keep working but are no longer exported.
    pub fn forget_pool(&self, pool: &str) {
        let mut pools = self.lock_pools();
        let Some(index) = pools.iter().position(|p| p.name == pool) else {
            return;
        };
        let old = pools.remove(index);
        drop(pools);
        for backend in &old.backends {
            self.remove_backend(pool, &backend.name);
        }
        let labels = [pool];
        // Err only means "no such series": nothing to remove.
        let _ = self.client_connections.remove_label_values(&labels);
        let _ = self.client_connections_total.remove_label_values(&labels);
        let _ = self.client_eof.remove_label_values(&labels);
        let _ = self.client_err.remove_label_values(&labels);
        let _ = self.forward_error.remove_label_values(&labels);
        let _ = self.fragments.remove_label_values(&labels);
        let _ = self.server_ejects.remove_label_values(&labels);
        let _ = self.request_duration.remove_label_values(&labels);
        for kind in ["moved", "ask"] {
            let _ = self.redirects.remove_label_values(&[pool, kind]);
        }
        for result in ["ok", "error"] {
            let _ = self.cluster_refreshes.remove_label_values(&[pool, result]);
        }
    }

    fn remove_backend(&self, pool: &str, backend: &str) {
        let labels = [pool, backend];
        for vec in [
            &self.requests,
            &self.responses,
            &self.request_bytes,
            &self.response_bytes,
            &self.server_eof,
            &self.server_err,
            &self.server_timedout,
            &self.connections_total,
            &self.sentinel_switches,
        ] {
            let _ = vec.remove_label_values(&labels);
        }
        for vec in [&self.connections, &self.up, &self.ejected] {
            let _ = vec.remove_label_values(&labels);
        }
        for kind in ErrorKind::ALL {
            let _ = self
                .errors
                .remove_label_values(&[pool, backend, kind.label()]);
        }
        for queue in ["in", "out"] {
            let _ = self
                .queue_requests
                .remove_label_values(&[pool, backend, queue]);
            let _ = self
                .queue_bytes
                .remove_label_values(&[pool, backend, queue]);
        }
    }

    /// The live pools, in the order they were first registered.
    pub fn pools(&self) -> Vec<Arc<PoolMetrics>> {
        self.lock_pools().clone()
    }

    fn lock_pools(&self) -> MutexGuard<'_, Vec<Arc<PoolMetrics>>> {
        // The list is only ever replaced or spliced whole, so a panic elsewhere cannot leave it
        // half-updated: a poisoned lock is still consistent.
        self.pools.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every metric in the Prometheus text exposition format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut text) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        text
    }

    /// Counts one reload attempt: applied (`ok`) or rejected, the old config kept (`!ok`).
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.with_label_values(&[result]).inc();
    }

    /// Sets the generation of the configuration in use.
    pub fn set_generation(&self, n: u64) {
        self.generation.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The generation of the configuration in use.
    pub fn generation(&self) -> u64 {
        u64::try_from(self.generation.get()).unwrap_or(0)
    }

    /// Time since this `Metrics` was created (process uptime, as it is created at start).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// One pool's metric handles: increment them directly, no lookup.
#[derive(Debug)]
pub struct PoolMetrics {
    /// The pool's name (the `pool` label).
    pub name: String,
    /// Open client connections: `inc` on accept, `dec` on close.
    pub client_connections: IntGauge,
    /// Client connections accepted.
    pub client_connections_total: IntCounter,
    /// Clients that closed their connection (nutcracker's `client_eof`).
    pub client_eof: IntCounter,
    /// Client connections closed on an error (nutcracker's `client_err`).
    pub client_err: IntCounter,
    /// Requests that could not be forwarded (nutcracker's `forward_error`).
    pub forward_error: IntCounter,
    /// Sub-requests created by splitting multi-key requests (nutcracker's `fragments`).
    pub fragments: IntCounter,
    /// Backend ejections in this pool (nutcracker's `server_ejects`); see [`PoolMetrics::eject`].
    pub server_ejects: IntCounter,
    /// Request latency in seconds, observed through [`PoolMetrics::tally`].
    pub request_duration: Histogram,
    /// Redis Cluster `-MOVED` redirects followed.
    pub moved: IntCounter,
    /// Redis Cluster `-ASK` redirects followed.
    pub ask: IntCounter,
    /// Redis Cluster slot map refreshes that succeeded.
    pub refreshed: IntCounter,
    /// Redis Cluster slot map refreshes that reached no node.
    pub refresh_failed: IntCounter,
    /// Per backend, in shard order.
    pub backends: Vec<BackendMetrics>,
}

impl PoolMetrics {
    /// The handles of backend `shard`.
    pub fn backend(&self, shard: usize) -> Option<&BackendMetrics> {
        self.backends.get(shard)
    }

    /// A fresh tally for one connection to backend `shard` (latency only for a node the pool
    /// does not list).
    pub fn tally(&self, shard: usize) -> Tally {
        Tally {
            backend: self.backend(shard).map(|backend| BackendTally {
                requests: backend.requests.local(),
                request_bytes: backend.request_bytes.local(),
                responses: backend.responses.local(),
                response_bytes: backend.response_bytes.local(),
                queues: [
                    backend.in_queue.clone(),
                    backend.in_queue_bytes.clone(),
                    backend.out_queue.clone(),
                    backend.out_queue_bytes.clone(),
                ],
                queued: [0; 4],
                published: [0; 4],
            }),
            latency: self.request_duration.local(),
        }
    }

    /// Records that backend `shard` was ejected now: counts the ejection, sets its `ejected`
    /// gauge and its `server_ejected_at` time.
    pub fn eject(&self, shard: usize) {
        self.server_ejects.inc();
        if let Some(backend) = self.backend(shard) {
            backend.ejected.set(1);
            backend
                .ejected_at_usec
                .store(unix_usec(), Ordering::Relaxed);
        }
    }

    /// Records that backend `shard` is back in the shard map. Its `server_ejected_at` keeps the
    /// time of the last ejection, as nutcracker's does.
    pub fn readmit(&self, shard: usize) {
        if let Some(backend) = self.backend(shard) {
            backend.ejected.set(0);
        }
    }
}

/// Microseconds since the Unix epoch (nutcracker's `server_ejected_at` unit).
fn unix_usec() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One backend's metric handles (labels `pool`, `backend`).
#[derive(Debug)]
pub struct BackendMetrics {
    /// The backend's stats name (the `backend` label; the server's key in the stats JSON).
    pub name: String,
    /// Requests written to the backend.
    pub requests: IntCounter,
    /// Replies read from the backend.
    pub responses: IntCounter,
    /// Request bytes written to the backend.
    pub request_bytes: IntCounter,
    /// Reply bytes read from the backend.
    pub response_bytes: IntCounter,
    /// Requests that got an error reply instead of the backend's, by kind.
    pub errors: ErrorCounters,
    /// Connections the backend closed (nutcracker's `server_eof`).
    pub server_eof: IntCounter,
    /// Connections that failed (nutcracker's `server_err`): connect errors, resets, bad replies.
    pub server_err: IntCounter,
    /// Connections that timed out (nutcracker's `server_timedout`).
    pub server_timedout: IntCounter,
    /// Open connections, over all workers: `inc` on connect, `dec` on close.
    pub connections: IntGauge,
    /// Connection attempts, failed ones included (part of the stats JSON's `total_connections`).
    pub connections_total: IntCounter,
    /// 1 while reachable (last connection attempt succeeded), else 0.
    pub up: IntGauge,
    /// 1 while ejected, else 0; see [`PoolMetrics::eject`].
    pub ejected: IntGauge,
    /// When the backend was last ejected, µs since the Unix epoch; 0 = never (nutcracker's
    /// `server_ejected_at`). Only in the stats JSON.
    pub ejected_at_usec: AtomicI64,
    /// Requests queued but not yet written (nutcracker's `in_queue`).
    pub in_queue: IntGauge,
    /// Bytes of those requests (nutcracker's `in_queue_bytes`).
    pub in_queue_bytes: IntGauge,
    /// Requests written and awaiting their reply (nutcracker's `out_queue`).
    pub out_queue: IntGauge,
    /// Bytes of those requests (nutcracker's `out_queue_bytes`).
    pub out_queue_bytes: IntGauge,
    /// Sentinel master switches applied to this backend.
    pub sentinel_switches: IntCounter,
}

/// One backend connection's traffic and latencies, counted without atomics and added to the
/// shared metrics in one step per batch of requests and replies ([`Tally::flush`]).
pub struct Tally {
    backend: Option<BackendTally>,
    latency: LocalHistogram,
}

struct BackendTally {
    requests: LocalIntCounter,
    request_bytes: LocalIntCounter,
    responses: LocalIntCounter,
    response_bytes: LocalIntCounter,
    /// `in_queue`, `in_queue_bytes`, `out_queue`, `out_queue_bytes`, shared by every
    /// connection to the backend: each adds what it holds.
    queues: [IntGauge; 4],
    /// This connection's share as last set, and as last added to `queues`.
    queued: [i64; 4],
    published: [i64; 4],
}

impl Tally {
    /// Counts one request of `bytes` queued for the backend.
    pub fn request(&mut self, bytes: usize) {
        if let Some(backend) = &mut self.backend {
            backend.requests.inc();
            backend.request_bytes.inc_by(bytes as u64);
        }
    }

    /// Counts one reply of `bytes` that arrived `elapsed` after its request was queued.
    pub fn response(&mut self, bytes: usize, elapsed: Duration) {
        if let Some(backend) = &mut self.backend {
            backend.responses.inc();
            backend.response_bytes.inc_by(bytes as u64);
        }
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Sets what the connection holds now: requests (and their bytes) queued and not yet
    /// written, and written and awaiting a reply. The backend's queue gauges follow at the
    /// next flush.
    pub fn queued(&mut self, queued: usize, queued_bytes: usize, out: usize, out_bytes: usize) {
        if let Some(backend) = &mut self.backend {
            let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            backend.queued = [
                gauge(queued),
                gauge(queued_bytes),
                gauge(out),
                gauge(out_bytes),
            ];
        }
    }

    /// Adds what was counted since the last flush to the shared metrics.
    pub fn flush(&mut self) {
        if let Some(backend) = &mut self.backend {
            backend.requests.flush();
            backend.request_bytes.flush();
            backend.responses.flush();
            backend.response_bytes.flush();
            backend.publish();
        }
        self.latency.flush();
    }
}

impl BackendTally {
    /// Moves the shared queue gauges by how much this connection's share changed.
    fn publish(&mut self) {
        for ((gauge, queued), published) in self
            .queues
            .iter()
            .zip(self.queued)
            .zip(self.published.iter_mut())
        {
            if queued != *published {
                gauge.add(queued - *published);
                *published = queued;
            }
        }
    }
}

impl Drop for BackendTally {
    fn drop(&mut self) {
        // A connection gone holds nothing: take its share back out of the shared gauges.
        self.queued = [0; 4];
        self.publish();
    }
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally").finish_non_exhaustive()
    }
}

/// `keyway_errors_total{pool,backend,kind}`, one handle per kind.
#[derive(Debug)]
pub struct ErrorCounters {
    /// `kind="timeout"`.
    pub timeout: IntCounter,
    /// `kind="refused"`.
    pub refused: IntCounter,
    /// `kind="ejected"`.
    pub ejected: IntCounter,
    /// `kind="protocol"`.
    pub protocol: IntCounter,
    /// `kind="client"`.
    pub client: IntCounter,
}

impl ErrorCounters {
    /// The counter for `kind`.
    pub fn of(&self, kind: ErrorKind) -> &IntCounter {
        match kind {
            ErrorKind::Timeout => &self.timeout,
            ErrorKind::Refused => &self.refused,
            ErrorKind::Ejected => &self.ejected,
            ErrorKind::Protocol => &self.protocol,
            ErrorKind::Client => &self.client,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// One parsed sample line: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// Parses the text exposition: HELP and TYPE per family, then samples. Asserts the format's
    /// rules on the way (every sample belongs to a family announced by HELP and TYPE before it).
    fn parse(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
        let mut types = BTreeMap::new();
        let mut helps = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.is_empty(), "{line}");
                helps.insert(name.to_string(), help.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(helps.contains_key(name), "TYPE before HELP: {line}");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                types.insert(name.to_string(), kind.to_string());
            } else {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let value: f64 = value.parse().unwrap();
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => {
                        let labels = labels.strip_suffix('}').unwrap();
                        let labels = labels
                            .split(',')
                            .filter(|l| !l.is_empty())
                            .map(|l| {
                                let (k, v) = l.split_once('=').unwrap();
                                (k.to_string(), v.trim_matches('"').to_string())
                            })
                            .collect();
                        (name, labels)
                    }
                    None => (series, BTreeMap::new()),
                };
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
                    .unwrap_or(name);
                assert!(types.contains_key(family), "sample before TYPE: {line}");
                samples.push((name.to_string(), labels, value));
            }
        }
        (types, samples)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn value(text: &str, name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
        let wanted = labels(pairs);
        parse(text)
            .1
            .into_iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, v)| v)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_documented_family_is_rendered_with_its_type() {
        let metrics = Metrics::new();
        metrics.pool("alpha", &names(&["s0", "s1"]));
        let (types, _) = parse(&metrics.render());
        let expected = [
            ("keyway_requests_total", "counter"),
            ("keyway_responses_total", "counter"),
            ("keyway_errors_total", "counter"),
            ("keyway_request_duration_seconds", "histogram"),
            ("keyway_request_bytes_total", "counter"),
            ("keyway_response_bytes_total", "counter"),
            ("keyway_client_connections", "gauge"),
            ("keyway_client_connections_total", "counter"),
            ("keyway_backend_connections", "gauge"),
            ("keyway_backend_connections_total", "counter"),
            ("keyway_backend_up", "gauge"),
            ("keyway_backend_ejected", "gauge"),
            ("keyway_reloads_total", "counter"),
            ("keyway_config_generation", "gauge"),
            ("keyway_sentinel_switches_total", "counter"),
            ("keyway_cluster_redirects_total", "counter"),
            ("keyway_cluster_refreshes_total", "counter"),
            ("keyway_client_eof_total", "counter"),
            ("keyway_client_errors_total", "counter"),
            ("keyway_forward_errors_total", "counter"),
            ("keyway_fragments_total", "counter"),
            ("keyway_backend_ejects_total", "counter"),
            ("keyway_backend_eof_total", "counter"),
            ("keyway_backend_errors_total", "counter"),
            ("keyway_backend_timeouts_total", "counter"),
            ("keyway_backend_queue_requests", "gauge"),
            ("keyway_backend_queue_bytes", "gauge"),
        ];
        for (name, kind) in expected {
            assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
            assert!(name.starts_with("keyway_"));
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
        }
        assert_eq!(
            types.len(),
            expected.len(),
            "undocumented families: {types:?}"
        );
    }

    #[test]
    fn counters_move_after_inc_and_series_start_at_zero() {
        let metrics = Metrics::new();
        let pool = metrics.pool("alpha", &names(&["s0", "s1"]));
        let s1 = [("pool", "alpha"), ("backend", "s1")];
        let before = metrics.render();
        assert_eq!(value(&before, "keyway_requests_total", &s1), Some(0.0));
        let timeouts = [("pool", "alpha"), ("backend", "s1"), ("kind", "timeout")];
        assert_eq!(value(&before, "keyway_errors_total", &timeouts), Some(0.0));

        let mut tally = pool.tally(1);
        tally.request(10);
        tally.request(5);
        tally.response(7, Duration::from_micros(300));
        tally.flush();
        pool.backend(1).unwrap().errors.of(ErrorKind::Timeout).inc();
        pool.client_connections.inc();
        let after = metrics.render();
        assert_eq!(value(&after, "keyway_requests_total", &s1), Some(2.0));
        assert_eq!(value(&after, "keyway_request_bytes_total", &s1), Some(15.0));
        assert_eq!(value(&after, "keyway_responses_total", &s1), Some(1.0));
        assert_eq!(value(&after, "keyway_response_bytes_total", &s1), Some(7.0));
        assert_eq!(value(&after, "keyway_errors_total", &timeouts), Some(1.0));
        let s0 = [("pool", "alpha"), ("backend", "s0")];
        assert_eq!(value(&after, "keyway_requests_total", &s0), Some(0.0));
        let alpha = [("pool", "alpha")];
        assert_eq!(
            value(&after, "keyway_client_connections", &alpha),
            Some(1.0)
        );
        let count = "keyway_request_duration_seconds_count";
        assert_eq!(value(&after, count, &alpha), Some(1.0));
        let bucket = |le| [("pool", "alpha"), ("le", le)];
        let name = "keyway_request_duration_seconds_bucket";
        assert_eq!(value(&after, name, &bucket("0.00025")), Some(0.0));
        assert_eq!(value(&after, name, &bucket("0.0005")), Some(1.0));
    }

    #[test]
    fn histogram_buckets_span_50us_to_5s() {
        let metrics = Metrics::new();
        metrics.pool("alpha", &[]);
        let (_, samples) = parse(&metrics.render());
        let les: Vec<String> = samples
            .iter()
            .filter(|(n, _, _)| n == "keyway_request_duration_seconds_bucket")
            .map(|(_, l, _)| l["le"].clone())
            .collect();
        assert_eq!(les.first().map(String::as_str), Some("0.00005"));
        assert_eq!(les.iter().rev().nth(1).map(String::as_str), Some("5"));
        assert_eq!(les.last().map(String::as_str), Some("+Inf"));
    }

    #[test]
    fn every_error_kind_has_its_own_series() {
        let metrics = Metrics::new();
        let pool = metrics.pool("alpha", &names(&["s0"]));
        for (i, kind) in ErrorKind::ALL.into_iter().enumerate() {
            pool.backends[0].errors.of(kind).inc_by(i as u64 + 1);
        }
        let text = metrics.render();
        for (i, kind) in ErrorKind::ALL.into_iter().enumerate() {
            let l = [("pool", "alpha"), ("backend", "s0"), ("kind", kind.label())];
            assert_eq!(
                value(&text, "keyway_errors_total", &l),
                Some(i as f64 + 1.0)
            );
        }
    }

    #[test]
    fn handles_for_the_same_series_share_their_value() {
        let metrics = Metrics::new();
        let first = metrics.pool("alpha", &names(&["s0"]));
        let second = metrics.pool("alpha", &names(&["s0"]));
        first.backends[0].requests.inc();
        second.backends[0].requests.inc();
        assert_eq!(first.backends[0].requests.get(), 2);
        assert_eq!(metrics.pools().len(), 1);
    }

    #[test]
    fn reload_removes_series_of_backends_that_are_gone() {
        let metrics = Metrics::new();
        let old = metrics.pool("alpha", &names(&["s0", "s1"]));
        old.backends[0].requests.inc();
        metrics.pool("alpha", &names(&["s0", "s2"]));
        let text = metrics.render();
        let of = |b| [("pool", "alpha"), ("backend", b)];
        assert_eq!(value(&text, "keyway_requests_total", &of("s0")), Some(1.0));
        assert_eq!(value(&text, "keyway_requests_total", &of("s2")), Some(0.0));
        assert!(!text.contains("backend=\"s1\""), "{text}");
    }

    #[test]
    fn forget_pool_removes_every_series_of_the_pool() {
        let metrics = Metrics::new();
        let alpha = metrics.pool("alpha", &names(&["s0"]));
        metrics.pool("beta", &names(&["b0"]));
        alpha.client_connections_total.inc();
        alpha.request_duration.observe(0.001);
        metrics.forget_pool("alpha");
        metrics.forget_pool("never-existed");
        let text = metrics.render();
        assert!(!text.contains("\"alpha\""), "{text}");
        assert!(text.contains("pool=\"beta\""));
        assert_eq!(metrics.pools().len(), 1);
        // A pool added back starts from zero.
        let again = metrics.pool("alpha", &names(&["s0"]));
        assert_eq!(again.client_connections_total.get(), 0);
    }

    #[test]
    fn reloads_and_generation() {
        let metrics = Metrics::new();
        let ok = [("result", "ok")];
        let error = [("result", "error")];
        assert_eq!(
            value(&metrics.render(), "keyway_reloads_total", &ok),
            Some(0.0)
        );
        metrics.reload(true);
        metrics.reload(true);
        metrics.reload(false);
        metrics.set_generation(7);
        let text = metrics.render();
        assert_eq!(value(&text, "keyway_reloads_total", &ok), Some(2.0));
        assert_eq!(value(&text, "keyway_reloads_total", &error), Some(1.0));
        assert_eq!(value(&text, "keyway_config_generation", &[]), Some(7.0));
        metrics.set_generation(u64::MAX);
        assert_eq!(metrics.generation(), i64::MAX as u64);
    }

    #[test]
    fn eject_and_readmit_set_the_gauge_and_keep_the_time() {
        let metrics = Metrics::new();
        let pool = metrics.pool("alpha", &names(&["s0", "s1"]));
        pool.eject(1);
        pool.eject(9);
        let s1 = &pool.backends[1];
        assert_eq!(pool.server_ejects.get(), 2);
        assert_eq!(s1.ejected.get(), 1);
        let at = s1.ejected_at_usec.load(Ordering::Relaxed);
        assert!(at > 1_600_000_000_000_000, "{at}");
        pool.readmit(1);
        assert_eq!(s1.ejected.get(), 0);
        assert_eq!(s1.ejected_at_usec.load(Ordering::Relaxed), at);
        assert_eq!(pool.backends[0].ejected.get(), 0);
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new();
        let pool = metrics.pool("a\"b", &names(&["x\\y\nz"]));
        pool.backends[0].requests.inc();
        let text = metrics.render();
        assert!(
            text.contains(r#"keyway_requests_total{backend="x\\y\nz",pool="a\"b"} 1"#),
            "{text}"
        );
    }
}
