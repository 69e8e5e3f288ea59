//! Every metric, defined once (in the `table` module) on one Prometheus registry. The Prometheus text
//! ([`Metrics::render`]) and nutcracker's stats JSON and `-D` text ([`stats`]) all read the
//! same table.
//!
//! Label values are resolved once, when a pool is (re)built ([`Metrics::pool`]): the request path
//! holds [`PoolMetrics`] / [`BackendMetrics`] handles and increments plain atomics, no lookup.
//! The per-request figures are counted locally and flushed once per poll: a backend
//! connection's traffic and backend latency by its [`Tally`], a session's request latency by
//! its [`Latency`].

pub mod stats;
mod table;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::local::LocalHistogram;
use prometheus::{Histogram, IntCounter, IntGauge, Registry, TextEncoder};

use crate::clock::Tick;

use table::Families;
pub use table::{AuthFailures, BackendMetrics, PoolMetrics};

/// The Prometheus text exposition content type, for `GET /metrics`.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Why a request failed, as counted in `keyway_errors_total{kind}`. Every kind is a backend's
/// (the series carry a `backend` label). A request the client got wrong reaches no backend and
/// is no backend's error: it gets its error reply, and a malformed one that closes the
/// connection counts in the pool's `client_err`.
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
}

impl ErrorKind {
    /// Every kind, in label order.
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::Timeout,
        ErrorKind::Refused,
        ErrorKind::Ejected,
        ErrorKind::Protocol,
    ];

    /// The `kind` label value.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Refused => "refused",
            ErrorKind::Ejected => "ejected",
            ErrorKind::Protocol => "protocol",
        }
    }
}

/// The process's metrics: one per process, shared by every thread.
///
/// ```
/// use std::time::Duration;
/// use keyway::clock::Tick;
/// use keyway::metrics::{ErrorKind, Metrics};
///
/// let metrics = Metrics::new();
/// // Once per pool (at start and on reload), off the request path:
/// let pool = metrics.pool("alpha", &["s0".to_string(), "127.0.0.1:6380".to_string()]);
/// // Per backend connection: traffic and latencies counted locally, flushed per batch.
/// let mut tally = pool.tally(1);
/// tally.request(31);
/// tally.response(5, 0.000_180);
/// tally.flush();
/// // Per client session: arrival to reply ready, counted locally, flushed per poll.
/// let mut latency = pool.latency();
/// let arrived = Tick::now();
/// latency.arrived(arrived);
/// latency.replied(arrived.checked_add(Duration::from_micros(200)).unwrap());
/// latency.flush();
/// // Rare events: plain atomic increments through the handles.
/// if let Some(backend) = pool.backend(1) {
///     backend.errors.of(ErrorKind::Timeout).inc();
/// }
/// assert!(metrics.render().contains(r#"keyway_requests_total{backend="127.0.0.1:6380",pool="alpha"} 1"#));
/// assert!(metrics.render().contains(r#"keyway_request_duration_seconds_count{pool="alpha"} 1"#));
/// assert!(keyway::metrics::stats::render(&metrics).contains(r#""requests":1, "request_bytes":31"#));
/// ```
pub struct Metrics {
    registry: Registry,
    started: Instant,
    /// Live pools in registration order (the stats JSON lists them in this order).
    pools: Mutex<Vec<Arc<PoolMetrics>>>,
    families: Families,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("pools", &self.lock_pools().len())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Every metric, registered on a registry of its own, all series empty.
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let families = Families::new(&registry);
        // Both results exist from the start, so a dashboard's rate() has a series to read.
        families.reloads.with_label_values(&["ok"]);
        families.reloads.with_label_values(&["error"]);
        Arc::new(Metrics {
            registry,
            started: Instant::now(),
            pools: Mutex::new(Vec::new()),
            families,
        })
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
        let handles = backends
            .iter()
            .map(|backend| self.families.backend(pool, backend))
            .collect();
        let metrics = Arc::new(self.families.pool(pool, handles));
        let mut pools = self.lock_pools();
        if let Some(old) = pools.iter_mut().find(|p| p.name == pool) {
            for gone in old.backends.iter().filter(|b| !backends.contains(&b.name)) {
                self.families.remove_backend(pool, &gone.name);
            }
            *old = Arc::clone(&metrics);
        } else {
            pools.push(Arc::clone(&metrics));
        }
        metrics
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
            self.families.remove_backend(pool, &backend.name);
        }
        self.families.remove_pool(pool);
    }

    /// The counter of clients refused at pool `pool`'s `client_connections` limit
    /// (`keyway_client_refused_total`), for its listener; the same series as
    /// [`PoolMetrics::client_refused`], and removed with the pool by [`Metrics::forget_pool`].
    pub fn client_refused(&self, pool: &str) -> IntCounter {
        self.families.client_refused.with_label_values(&[pool])
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
        self.families.reloads.with_label_values(&[result]).inc();
    }

    /// Sets the generation of the configuration in use.
    pub fn set_generation(&self, n: u64) {
        self.families
            .generation
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The generation of the configuration in use.
    pub fn generation(&self) -> u64 {
        u64::try_from(self.families.generation.get()).unwrap_or(0)
    }

    /// Starts the config store's series (`keyway_config_store_up` at 0,
    /// `keyway_config_rejected_total`): only an instance with `--config-store` has them.
    pub fn config_store(&self) {
        self.families
            .config_store_up
            .with_label_values(&[] as &[&str])
            .set(0);
        self.families
            .config_rejected
            .with_label_values(&[] as &[&str]);
    }

    /// Sets whether the config store is reachable and watched.
    pub fn set_config_store_up(&self, up: bool) {
        self.families
            .config_store_up
            .with_label_values(&[] as &[&str])
            .set(i64::from(up));
    }

    /// Sets the config store revision of the configuration in use.
    pub fn set_config_revision(&self, revision: i64) {
        self.families.config_revision.set(revision);
    }

    /// Counts one config store revision rejected (not installed).
    pub fn config_rejected(&self) {
        self.families
            .config_rejected
            .with_label_values(&[] as &[&str])
            .inc();
    }

    /// Time since this `Metrics` was created (process uptime, as it is created at start).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

impl PoolMetrics {
    /// The handles of backend `shard`.
    pub fn backend(&self, shard: usize) -> Option<&BackendMetrics> {
        self.backends.get(shard)
    }

    /// A fresh tally for one connection to backend `shard` (a no-op for a node the pool does
    /// not list).
    pub fn tally(&self, shard: usize) -> Tally {
        Tally {
            backend: self.backend(shard).map(|backend| BackendTally {
                requests: Counted::new(&backend.requests),
                request_bytes: Counted::new(&backend.request_bytes),
                responses: Counted::new(&backend.responses),
                response_bytes: Counted::new(&backend.response_bytes),
                changed: false,
                latency: Observed::new(&backend.request_duration),
                queues: [
                    backend.in_queue.clone(),
                    backend.in_queue_bytes.clone(),
                    backend.out_queue.clone(),
                    backend.out_queue_bytes.clone(),
                ],
                queued: [0; 4],
                published: [0; 4],
            }),
        }
    }

    /// A fresh request-latency count for one client session of this pool.
    pub fn latency(&self) -> Latency {
        Latency {
            arrivals: VecDeque::new(),
            observed: Observed::new(&self.request_duration),
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

/// One backend connection's traffic and backend latencies, counted without atomics and added to
/// the shared metrics in one step per batch of requests and replies ([`Tally::flush`]).
pub struct Tally {
    backend: Option<BackendTally>,
}

struct BackendTally {
    requests: Counted,
    request_bytes: Counted,
    responses: Counted,
    response_bytes: Counted,
    /// Anything counted or set since the last flush: a poll that counted nothing (most of an
    /// unpipelined client's: a write's poll, then the reply's) flushes nothing.
    changed: bool,
    latency: Observed,
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
            backend.requests.add(1);
            backend.request_bytes.add(bytes as u64);
            backend.changed = true;
        }
    }

    /// Counts one reply of `bytes` that arrived `seconds` after its request was queued
    /// (`keyway_backend_request_duration_seconds`).
    pub fn response(&mut self, bytes: usize, seconds: f64) {
        if let Some(backend) = &mut self.backend {
            backend.response(bytes);
            backend.latency.observe(seconds);
        }
    }

    /// Counts the reply of `bytes` to a blocking command: its time is the block's, not the
    /// backend's, so it stays out of the latency histogram.
    pub fn blocked_response(&mut self, bytes: usize) {
        if let Some(backend) = &mut self.backend {
            backend.response(bytes);
        }
    }

    /// Sets what the connection holds now: requests (and their bytes) queued and not yet
    /// written, and written and awaiting a reply. The backend's queue gauges follow at the
    /// next flush.
    pub fn queued(&mut self, queued: usize, queued_bytes: usize, out: usize, out_bytes: usize) {
        if let Some(backend) = &mut self.backend {
            let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            let now = [
                gauge(queued),
                gauge(queued_bytes),
                gauge(out),
                gauge(out_bytes),
            ];
            if now != backend.queued {
                backend.queued = now;
                backend.changed = true;
            }
        }
    }

    /// Adds what was counted since the last flush to the shared metrics.
    pub fn flush(&mut self) {
        if let Some(backend) = &mut self.backend {
            if backend.changed {
                backend.flush();
            }
        }
    }
}

/// A shared counter's increments since the last flush, kept in a plain integer.
struct Counted {
    shared: IntCounter,
    since: u64,
}

impl Counted {
    fn new(shared: &IntCounter) -> Counted {
        Counted {
            shared: shared.clone(),
            since: 0,
        }
    }

    fn add(&mut self, n: u64) {
        self.since = self.since.wrapping_add(n);
    }

    fn flush(&mut self) {
        if self.since != 0 {
            self.shared.inc_by(self.since);
            self.since = 0;
        }
    }
}

impl BackendTally {
    /// Counts one reply of `bytes`.
    fn response(&mut self, bytes: usize) {
        self.responses.add(1);
        self.response_bytes.add(bytes as u64);
        self.changed = true;
    }

    fn flush(&mut self) {
        self.requests.flush();
        self.request_bytes.flush();
        self.responses.flush();
        self.response_bytes.flush();
        self.latency.flush();
        self.publish();
        self.changed = false;
    }

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
        // A connection gone holds nothing: take its share back out of the shared gauges, and
        // what it counted last is not lost.
        self.queued = [0; 4];
        self.flush();
    }
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally").finish_non_exhaustive()
    }
}

/// How many latencies per flush are added to the shared histogram one by one: an unpipelined
/// client has one per poll, and one `observe` costs a fifth of a local histogram's flush (which
/// walks every bucket). Past these, a flush's latencies are counted locally first.
const FEW: usize = 2;

/// Latencies counted between two flushes, for one shared histogram: the first few kept as
/// they are, the rest in a local histogram.
struct Observed {
    few: [f64; FEW],
    /// How many latencies were counted since the last flush: the first `FEW` in `few`, the
    /// rest in `many`.
    taken: usize,
    many: LocalHistogram,
    histogram: Histogram,
}

impl Observed {
    fn new(histogram: &Histogram) -> Observed {
        Observed {
            few: [0.0; FEW],
            taken: 0,
            many: histogram.local(),
            histogram: histogram.clone(),
        }
    }

    fn observe(&mut self, seconds: f64) {
        match self.few.get_mut(self.taken) {
            Some(slot) => *slot = seconds,
            None => self.many.observe(seconds),
        }
        self.taken = self.taken.saturating_add(1);
    }

    /// Adds what was counted since the last flush to the shared histogram.
    fn flush(&mut self) {
        for seconds in self.few.iter().take(self.taken) {
            self.histogram.observe(*seconds);
        }
        if self.taken > FEW {
            self.many.flush();
        }
        self.taken = 0;
    }
}

/// What was counted is not lost with its counter (a session or connection that ends).
impl Drop for Observed {
    fn drop(&mut self) {
        self.flush();
    }
}

/// One client session's request latencies (`keyway_request_duration_seconds`): from each
/// request's arrival to its reply being ready for the client, whatever the reply is (a
/// backend's, a timeout or other error, or one Keyway answers itself). Replies are ready in
/// request order, so the arrival times wait in a FIFO as long as the session's pending
/// replies (bounded by its pipeline limit). [`Latency::flush`] adds a poll's latencies to the
/// pool's histogram, once per session poll (and when dropped): the first few one by one, the
/// rest of a pipeline through a local histogram.
pub struct Latency {
    /// Per request awaited, oldest first: when it arrived, or `None` for one not measured.
    arrivals: VecDeque<Option<Tick>>,
    observed: Observed,
}

impl Latency {
    /// A request arrived at `at` (its reply is the last one to come).
    pub fn arrived(&mut self, at: Tick) {
        self.arrivals.push_back(Some(at));
    }

    /// A request arrived whose reply time is not the proxy's: a blocking command's, which
    /// waits as long as the client asked.
    pub fn unmeasured(&mut self) {
        self.arrivals.push_back(None);
    }

    /// The oldest request's reply is ready at `now`.
    pub fn replied(&mut self, now: Tick) {
        let Some(Some(at)) = self.arrivals.pop_front() else {
            return;
        };
        self.observed.observe(now.seconds_since(at));
    }

    /// When the oldest request awaited arrived, if it is measured.
    pub fn oldest(&self) -> Option<Tick> {
        self.arrivals.front().copied().flatten()
    }

    /// The oldest request's reply was counted elsewhere (see [`Latency::histogram`]).
    pub fn skip(&mut self) {
        self.arrivals.pop_front();
    }

    /// The pool's histogram, for a reply counted where it is written.
    pub fn histogram(&self) -> Histogram {
        self.observed.histogram.clone()
    }

    /// Adds what was counted since the last flush to the pool's histogram.
    pub fn flush(&mut self) {
        self.observed.flush();
    }
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latency")
            .field("waiting", &self.arrivals.len())
            .finish_non_exhaustive()
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
}

impl ErrorCounters {
    /// The counter for `kind`.
    pub fn of(&self, kind: ErrorKind) -> &IntCounter {
        match kind {
            ErrorKind::Timeout => &self.timeout,
            ErrorKind::Refused => &self.refused,
            ErrorKind::Ejected => &self.ejected,
            ErrorKind::Protocol => &self.protocol,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// `duration` after `tick`.
    fn after(tick: Tick, duration: Duration) -> Tick {
        tick.checked_add(duration).unwrap()
    }

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
            ("keyway_backend_dedicated_connections", "gauge"),
            ("keyway_backend_up", "gauge"),
            ("keyway_backend_ejected", "gauge"),
            ("keyway_reloads_total", "counter"),
            ("keyway_config_generation", "gauge"),
            ("keyway_config_revision", "gauge"),
            ("keyway_client_connections_limit", "gauge"),
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
            ("keyway_client_refused_total", "counter"),
            ("keyway_client_tls_handshake_failures_total", "counter"),
            ("keyway_client_output_limit_closed_total", "counter"),
            ("keyway_migration_old_owner_hits_total", "counter"),
            ("keyway_migration_copied_total", "counter"),
            ("keyway_backend_request_duration_seconds", "histogram"),
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

    /// `conf/prometheus/alerts.yml` (the alerting rules operators deploy) names only metrics
    /// that exist, and every rule says what is wrong and what to do (`promtool check rules`
    /// checks the PromQL itself, in scripts/test.sh).
    #[test]
    fn alert_rules_use_only_real_metrics_and_say_what_to_do() {
        let metrics = Metrics::new();
        metrics.pool("alpha", &names(&["s0"]));
        metrics.config_store();
        let (types, _) = parse(&metrics.render());
        let mut known: Vec<String> = Vec::new();
        for (name, kind) in &types {
            known.push(name.clone());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    known.push(format!("{name}{suffix}"));
                }
            }
        }
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/prometheus/alerts.yml");
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut rules = 0;
        let mut used = BTreeSet::new();
        for group in doc["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                let alert = rule["alert"].as_str().unwrap();
                let expr = rule["expr"].as_str().unwrap();
                for key in ["summary", "action"] {
                    let text = rule["annotations"][key].as_str().unwrap_or_default();
                    assert!(text.len() > 20, "{alert}: annotation {key} missing");
                }
                assert!(rule["labels"]["severity"].as_str().is_some(), "{alert}");
                let mut rest = expr;
                while let Some(at) = rest.find("keyway_") {
                    let tail = &rest[at..];
                    let end = tail
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(tail.len());
                    let name = &tail[..end];
                    assert!(known.iter().any(|k| k == name), "{alert}: no metric {name}");
                    used.insert(name.to_string());
                    rest = &tail[end..];
                }
                rules += 1;
            }
        }
        assert!(rules >= 12, "{rules} rules");
        for wanted in [
            "keyway_backend_up",
            "keyway_backend_ejected",
            "keyway_errors_total",
            "keyway_request_duration_seconds_bucket",
            "keyway_client_connections_limit",
            "keyway_config_rejected_total",
            "keyway_config_revision",
            "keyway_config_store_up",
            "keyway_sentinel_switches_total",
            "keyway_cluster_redirects_total",
        ] {
            assert!(used.contains(wanted), "no rule watches {wanted}");
        }
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
        tally.response(7, 0.000_300);
        tally.flush();
        let mut latency = pool.latency();
        let arrived = Tick::now();
        latency.arrived(arrived);
        latency.replied(after(arrived, Duration::from_micros(300)));
        latency.flush();
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
        let backend_count = "keyway_backend_request_duration_seconds_count";
        assert_eq!(value(&after, backend_count, &s1), Some(1.0));
        assert_eq!(value(&after, backend_count, &s0), Some(0.0));
    }

    #[test]
    fn latency_counts_every_reply_in_order_and_flushes_on_drop() {
        let metrics = Metrics::new();
        let pool = metrics.pool("alpha", &names(&["s0"]));
        let start = Tick::now();
        let mut latency = pool.latency();
        latency.arrived(start);
        latency.arrived(after(start, Duration::from_millis(400)));
        // The first reply is ready 1 s after its request, the second 0.6 s after its own.
        latency.replied(after(start, Duration::from_secs(1)));
        latency.replied(after(start, Duration::from_secs(1)));
        // A reply without a request (cannot happen) counts nothing.
        latency.replied(after(start, Duration::from_secs(1)));
        assert_eq!(
            pool.request_duration.get_sample_count(),
            0,
            "not flushed yet"
        );
        drop(latency);
        assert_eq!(pool.request_duration.get_sample_count(), 2);
        let text = metrics.render();
        let bucket = |le| [("pool", "alpha"), ("le", le)];
        let name = "keyway_request_duration_seconds_bucket";
        assert_eq!(value(&text, name, &bucket("0.5")), Some(0.0));
        assert_eq!(value(&text, name, &bucket("1")), Some(2.0));
    }

    #[test]
    fn a_pipeline_of_latencies_is_counted_whole() {
        let metrics = Metrics::new();
        let pool = metrics.pool("alpha", &names(&["s0"]));
        let start = Tick::now();
        let mut latency = pool.latency();
        for _ in 0..(FEW + 5) {
            latency.arrived(start);
        }
        for _ in 0..(FEW + 5) {
            latency.replied(after(start, Duration::from_millis(2)));
        }
        latency.flush();
        assert_eq!(pool.request_duration.get_sample_count(), FEW as u64 + 5);
        // Flushed state starts again from nothing.
        latency.arrived(start);
        latency.replied(after(start, Duration::from_millis(2)));
        latency.flush();
        latency.flush();
        assert_eq!(pool.request_duration.get_sample_count(), FEW as u64 + 6);
        let sum = pool.request_duration.get_sample_sum();
        assert!((sum - 0.002 * (FEW as f64 + 6.0)).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn client_refused_shares_the_pools_series_and_leaves_with_it() {
        let metrics = Metrics::new();
        let pool = metrics.pool("alpha", &names(&["s0"]));
        let alpha = [("pool", "alpha")];
        let name = "keyway_client_refused_total";
        assert_eq!(value(&metrics.render(), name, &alpha), Some(0.0));
        metrics.client_refused("alpha").inc_by(2);
        assert_eq!(pool.client_refused.get(), 2);
        assert_eq!(value(&metrics.render(), name, &alpha), Some(2.0));
        metrics.forget_pool("alpha");
        assert_eq!(value(&metrics.render(), name, &alpha), None);
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
        // No kind without a backend cause (a client error is no backend's).
        let kinds = parse(&text)
            .1
            .into_iter()
            .filter(|(n, _, _)| n == "keyway_errors_total")
            .count();
        assert_eq!(kinds, ErrorKind::ALL.len());
        assert!(!text.contains("kind=\"client\""), "{text}");
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
