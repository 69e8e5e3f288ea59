//! The metric table: every metric family and every per-pool and per-backend series declared
//! once, as twemproxy's `nc_stats.h` does with its `STATS_*` macros. The table generates the
//! families and their registration, the [`PoolMetrics`] and [`BackendMetrics`] handle structs,
//! the removal of a pool's or backend's series, and nutcracker's stats fields (JSON and `-D`).
//!
//! A family row is `field: Type = constructor("name", "help", labels)`. A series row is
//! `field: Type = family[extra label values]`, optionally `=> "nutcracker_key", "description"`
//! when the series is one of nutcracker's stats: those rows are listed in nutcracker's order,
//! which is the order of the stats JSON and of `-D`.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use super::{ErrorCounters, ErrorKind};

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
const RESULT: &[&str] = &["result"];
const POOL_USER: &[&str] = &["pool", "user"];

/// One of nutcracker's stats: its key in the stats JSON, its `-D` description, and how to read
/// it from the handles.
pub(crate) struct Stat<M> {
    /// The key in the stats JSON (nutcracker's name).
    pub(crate) key: &'static str,
    /// nutcracker's `-D` description.
    pub(crate) description: &'static str,
    /// The current value.
    pub(crate) value: fn(&M) -> u64,
}

/// A family of series: how a row's handle is made from its labels, and how it is removed.
pub(crate) trait Family {
    /// The handle of one series.
    type Series;
    /// The series with label values `labels` (created at 0 if new).
    fn series(&self, labels: &[&str]) -> Self::Series;
    /// Removes the series with label values `labels`, if it exists.
    fn remove(&self, labels: &[&str]);
}

macro_rules! vec_family {
    ($vec:ty, $series:ty) => {
        impl Family for $vec {
            type Series = $series;
            fn series(&self, labels: &[&str]) -> $series {
                self.with_label_values(labels)
            }
            fn remove(&self, labels: &[&str]) {
                // Err only means "no such series": nothing to remove.
                let _ = self.remove_label_values(labels);
            }
        }
    };
}

vec_family!(IntCounterVec, IntCounter);
vec_family!(IntGaugeVec, IntGauge);
vec_family!(HistogramVec, Histogram);

/// Values only the stats JSON shows (nutcracker's `server_ejected_at`): not exported to
/// Prometheus, so nothing to register or remove.
#[derive(Debug)]
pub(crate) struct Unexported;

impl Family for Unexported {
    type Series = AtomicI64;
    fn series(&self, _: &[&str]) -> AtomicI64 {
        AtomicI64::new(0)
    }
    fn remove(&self, _: &[&str]) {}
}

/// `keyway_errors_total`: one series per [`ErrorKind`] under the row's labels.
#[derive(Debug)]
pub(crate) struct ErrorFamily(IntCounterVec);

impl Family for ErrorFamily {
    type Series = ErrorCounters;
    fn series(&self, labels: &[&str]) -> ErrorCounters {
        let counter = |kind: ErrorKind| {
            let mut labels = labels.to_vec();
            labels.push(kind.label());
            self.0.with_label_values(&labels)
        };
        ErrorCounters {
            timeout: counter(ErrorKind::Timeout),
            refused: counter(ErrorKind::Refused),
            ejected: counter(ErrorKind::Ejected),
            protocol: counter(ErrorKind::Protocol),
        }
    }
    fn remove(&self, labels: &[&str]) {
        for kind in ErrorKind::ALL {
            let mut labels = labels.to_vec();
            labels.push(kind.label());
            let _ = self.0.remove_label_values(&labels);
        }
    }
}

/// `keyway_auth_failures_total`: a pool's failed `AUTH`s by user, the series made on the
/// first failure for each user.
#[derive(Debug)]
pub(crate) struct UserFamily(IntCounterVec);

impl Family for UserFamily {
    type Series = AuthFailures;
    fn series(&self, labels: &[&str]) -> AuthFailures {
        AuthFailures {
            family: self.0.clone(),
            pool: labels.first().copied().unwrap_or_default().to_owned(),
        }
    }
    fn remove(&self, labels: &[&str]) {
        let Some(pool) = labels.first() else {
            return;
        };
        let users: Vec<String> = self
            .0
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter(|metric| {
                metric
                    .get_label()
                    .iter()
                    .any(|l| l.name() == "pool" && l.value() == *pool)
            })
            .filter_map(|metric| {
                let user = metric.get_label().iter().find(|l| l.name() == "user")?;
                Some(user.value().to_owned())
            })
            .collect();
        for user in users {
            let _ = self.0.remove_label_values(&[pool, user.as_str()]);
        }
    }
}

/// A pool's failed-`AUTH` counters, by user.
#[derive(Debug)]
pub struct AuthFailures {
    family: IntCounterVec,
    pool: String,
}

impl AuthFailures {
    /// The label of names that are no configured user: one series for all of them, so that
    /// clients guessing names cannot grow the metric without bound. It has a space, which no
    /// user name can.
    pub const UNKNOWN_USER: &'static str = "unknown user";

    /// Counts a failed `AUTH` as `user` (a configured user's name, or [`Self::UNKNOWN_USER`]).
    pub fn inc(&self, user: &str) {
        self.family.with_label_values(&[&self.pool, user]).inc();
    }

    /// The count for `user` so far.
    pub fn get(&self, user: &str) -> u64 {
        self.family.with_label_values(&[&self.pool, user]).get()
    }
}

/// A stats value as nutcracker prints it: unsigned, a gauge never below 0.
pub(crate) trait StatValue {
    /// The value now.
    fn stat(&self) -> u64;
}

impl StatValue for IntCounter {
    fn stat(&self) -> u64 {
        self.get()
    }
}

impl StatValue for IntGauge {
    fn stat(&self) -> u64 {
        u64::try_from(self.get()).unwrap_or(0)
    }
}

impl StatValue for AtomicI64 {
    fn stat(&self) -> u64 {
        u64::try_from(self.load(Ordering::Relaxed)).unwrap_or(0)
    }
}

/// Registers `metric` on `registry`. Names, help texts and label names are constants of the
/// table and each is registered once on a fresh registry, so neither step can fail (the unit
/// tests build a `Metrics`, which exercises every one).
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

fn counters(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(r, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauges(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(r, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn histograms(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec());
    registered(r, HistogramVec::new(opts, labels))
}

fn gauge(r: &Registry, name: &str, help: &str, _: &[&str]) -> IntGauge {
    registered(r, IntGauge::new(name, help))
}

fn users(r: &Registry, name: &str, help: &str, labels: &[&str]) -> UserFamily {
    UserFamily(counters(r, name, help, labels))
}

fn kinds(r: &Registry, name: &str, help: &str, labels: &[&str]) -> ErrorFamily {
    ErrorFamily(counters(r, name, help, labels))
}

macro_rules! metric_table {
    (
        families { $( $family:ident: $fty:ty = $ctor:ident($name:literal, $help:literal, $labels:expr); )* }
        pool { $(
            $(#[$pdoc:meta])*
            $pfield:ident: $pty:ty = $pfam:ident[$($plabel:literal),*] $(=> $pkey:literal, $pdesc:literal)?;
        )* }
        backend { $(
            $(#[$bdoc:meta])*
            $bfield:ident: $bty:ty = $bfam:ident[$($blabel:literal),*] $(=> $bkey:literal, $bdesc:literal)?;
        )* }
    ) => {
        /// Every metric family, registered once.
        #[derive(Debug)]
        pub(crate) struct Families {
            $( pub(crate) $family: $fty, )*
            unexported: Unexported,
        }

        impl Families {
            /// Every family, registered on `registry`, all series empty.
            pub(crate) fn new(registry: &Registry) -> Families {
                Families {
                    $( $family: $ctor(registry, $name, $help, $labels), )*
                    unexported: Unexported,
                }
            }

            /// The handles of pool `pool`'s series, with `backends`' handles.
            pub(crate) fn pool(&self, pool: &str, backends: Vec<BackendMetrics>) -> PoolMetrics {
                PoolMetrics {
                    name: pool.to_string(),
                    $( $pfield: Family::series(&self.$pfam, &[pool, $($plabel),*]), )*
                    backends,
                }
            }

            /// Removes every series of pool `pool` itself (not its backends').
            pub(crate) fn remove_pool(&self, pool: &str) {
                $( Family::remove(&self.$pfam, &[pool, $($plabel),*]); )*
            }

            /// The handles of backend `backend`'s series in pool `pool`.
            pub(crate) fn backend(&self, pool: &str, backend: &str) -> BackendMetrics {
                BackendMetrics {
                    name: backend.to_string(),
                    $( $bfield: Family::series(&self.$bfam, &[pool, backend, $($blabel),*]), )*
                }
            }

            /// Removes every series of backend `backend` in pool `pool`.
            pub(crate) fn remove_backend(&self, pool: &str, backend: &str) {
                $( Family::remove(&self.$bfam, &[pool, backend, $($blabel),*]); )*
            }
        }

        /// One pool's metric handles: increment them directly, no lookup.
        #[derive(Debug)]
        pub struct PoolMetrics {
            /// The pool's name (the `pool` label).
            pub name: String,
            $( $(#[$pdoc])* pub $pfield: $pty, )*
            /// Per backend, in shard order.
            pub backends: Vec<BackendMetrics>,
        }

        /// One backend's metric handles (labels `pool`, `backend`).
        #[derive(Debug)]
        pub struct BackendMetrics {
            /// The backend's stats name (the `backend` label; the server's key in the stats
            /// JSON).
            pub name: String,
            $( $(#[$bdoc])* pub $bfield: $bty, )*
        }

        /// nutcracker's pool stats, in its order.
        pub(crate) const POOL_STATS: &[Stat<PoolMetrics>] = &[
            $( $( Stat { key: $pkey, description: $pdesc, value: |m| m.$pfield.stat() }, )? )*
        ];

        /// nutcracker's server stats, in its order.
        pub(crate) const SERVER_STATS: &[Stat<BackendMetrics>] = &[
            $( $( Stat { key: $bkey, description: $bdesc, value: |m| m.$bfield.stat() }, )? )*
        ];
    };
}

metric_table! {
    families {
        client_connections: IntGaugeVec = gauges(
            "keyway_client_connections",
            "Open client connections (nutcracker: client_connections).",
            POOL);
        client_connections_limit: IntGaugeVec = gauges(
            "keyway_client_connections_limit",
            "The pool's client_connections setting: the most clients it accepts (0: no limit).",
            POOL);
        client_connections_total: IntCounterVec = counters(
            "keyway_client_connections_total",
            "Client connections accepted.",
            POOL);
        client_refused: IntCounterVec = counters(
            "keyway_client_refused_total",
            "Client connections closed on accept because the pool had client_connections open.",
            POOL);
        client_tls_failed: IntCounterVec = counters(
            "keyway_client_tls_handshake_failures_total",
            "Client connections closed because their TLS handshake failed or timed out.",
            POOL);
        client_eof: IntCounterVec = counters(
            "keyway_client_eof_total",
            "Client connections closed by the client (nutcracker: client_eof).",
            POOL);
        client_err: IntCounterVec = counters(
            "keyway_client_errors_total",
            "Client connections closed on an error (nutcracker: client_err).",
            POOL);
        client_output_closed: IntCounterVec = counters(
            "keyway_client_output_limit_closed_total",
            "Clients closed for holding more reply bytes than client_output_hard_limit.",
            POOL);
        forward_error: IntCounterVec = counters(
            "keyway_forward_errors_total",
            "Requests that could not be forwarded to a backend (nutcracker: forward_error).",
            POOL);
        fragments: IntCounterVec = counters(
            "keyway_fragments_total",
            "Sub-requests created by splitting multi-key requests (nutcracker: fragments).",
            POOL);
        migration_hits: IntCounterVec = counters(
            "keyway_migration_old_owner_hits_total",
            "Reads that missed on a key's new owner during a migration window and were served from its old owner.",
            POOL);
        migration_copies: IntCounterVec = counters(
            "keyway_migration_copied_total",
            "Keys copied from their old owner to their new one during a migration window (copy: true).",
            POOL);
        server_ejects: IntCounterVec = counters(
            "keyway_backend_ejects_total",
            "Times a backend of the pool was ejected (nutcracker: server_ejects).",
            POOL);
        request_duration: HistogramVec = histograms(
            "keyway_request_duration_seconds",
            "Time from a request's arrival to its reply being ready for the client.",
            POOL);
        redirects: IntCounterVec = counters(
            "keyway_cluster_redirects_total",
            "Redis Cluster redirects followed for clients, by kind (moved or ask).",
            POOL_KIND);
        cluster_refreshes: IntCounterVec = counters(
            "keyway_cluster_refreshes_total",
            "Redis Cluster slot map refreshes, by result (ok or error).",
            POOL_RESULT);
        requests: IntCounterVec = counters(
            "keyway_requests_total",
            "Requests sent to a backend (nutcracker: requests).",
            BACKEND);
        responses: IntCounterVec = counters(
            "keyway_responses_total",
            "Replies received from a backend (nutcracker: responses).",
            BACKEND);
        request_bytes: IntCounterVec = counters(
            "keyway_request_bytes_total",
            "Request bytes sent to a backend (nutcracker: request_bytes).",
            BACKEND);
        response_bytes: IntCounterVec = counters(
            "keyway_response_bytes_total",
            "Reply bytes received from a backend (nutcracker: response_bytes).",
            BACKEND);
        backend_duration: HistogramVec = histograms(
            "keyway_backend_request_duration_seconds",
            "Time from a request being queued on a backend connection (it is written in the \
             same turn) to the backend's reply.",
            BACKEND);
        errors: ErrorFamily = kinds(
            "keyway_errors_total",
            "Requests answered with an error instead of a backend reply, by kind.",
            BACKEND_KIND);
        server_eof: IntCounterVec = counters(
            "keyway_backend_eof_total",
            "Backend connections closed by the backend (nutcracker: server_eof).",
            BACKEND);
        server_err: IntCounterVec = counters(
            "keyway_backend_errors_total",
            "Backend connections failed or closed on an error (nutcracker: server_err).",
            BACKEND);
        server_timedout: IntCounterVec = counters(
            "keyway_backend_timeouts_total",
            "Backend connections that timed out (nutcracker: server_timedout).",
            BACKEND);
        connections: IntGaugeVec = gauges(
            "keyway_backend_connections",
            "Open shared (pipelined) backend connections, over all workers (nutcracker: \
             server_connections); dedicated ones are keyway_backend_dedicated_connections.",
            BACKEND);
        dedicated: IntGaugeVec = gauges(
            "keyway_backend_dedicated_connections",
            "Dedicated backend connections leased (a blocking command or a transaction each), \
             over all workers; at most dedicated_connections.",
            BACKEND);
        connections_total: IntCounterVec = counters(
            "keyway_backend_connections_total",
            "Backend connection attempts, failed ones included.",
            BACKEND);
        up: IntGaugeVec = gauges(
            "keyway_backend_up",
            "1 while the backend is reachable (its last connection attempt succeeded), else 0.",
            BACKEND);
        ejected: IntGaugeVec = gauges(
            "keyway_backend_ejected",
            "1 while the backend is ejected from its pool's shard map, else 0.",
            BACKEND);
        queue_requests: IntGaugeVec = gauges(
            "keyway_backend_queue_requests",
            "Requests queued for a backend: in = not yet written, out = awaiting a reply \
             (nutcracker: in_queue, out_queue).",
            BACKEND_QUEUE);
        queue_bytes: IntGaugeVec = gauges(
            "keyway_backend_queue_bytes",
            "Request bytes queued for a backend: in = not yet written, out = awaiting a \
             reply (nutcracker: in_queue_bytes, out_queue_bytes).",
            BACKEND_QUEUE);
        sentinel_switches: IntCounterVec = counters(
            "keyway_sentinel_switches_total",
            "Sentinel master switches applied to a backend.",
            BACKEND);
        reloads: IntCounterVec = counters(
            "keyway_reloads_total",
            "Configuration reloads, by result (ok or error).",
            RESULT);
        auth_failures: UserFamily = users(
            "keyway_auth_failures_total",
            "Failed AUTH (and HELLO AUTH) attempts on pools with users, by user; names that are \
             no configured user count as user=\"unknown user\".",
            POOL_USER);
        generation: IntGauge = gauge(
            "keyway_config_generation",
            "Generation of the configuration in use: 1 once started, +1 per applied reload.",
            &[]);
        config_revision: IntGauge = gauge(
            "keyway_config_revision",
            "Config store revision (etcd mod_revision of PREFIX/config) of the configuration \
             in use; 0 without --config-store.",
            &[]);
        config_store_up: IntGaugeVec = gauges(
            "keyway_config_store_up",
            "1 while the config store (etcd) is reachable and watched, else 0; absent \
             without --config-store.",
            &[]);
        config_rejected: IntCounterVec = counters(
            "keyway_config_rejected_total",
            "Config store revisions not installed (invalid, or could not be applied): the \
             last good configuration kept; absent without --config-store.",
            &[]);
    }
    pool {
        /// Clients that closed their connection (nutcracker's `client_eof`).
        client_eof: IntCounter = client_eof[]
            => "client_eof", "# eof on client connections";
        /// Client connections closed on an error (nutcracker's `client_err`).
        client_err: IntCounter = client_err[]
            => "client_err", "# errors on client connections";
        /// Open client connections: `inc` on accept, `dec` on close.
        client_connections: IntGauge = client_connections[]
            => "client_connections", "# active client connections";
        /// Backend ejections in this pool (nutcracker's `server_ejects`); see
        /// [`PoolMetrics::eject`].
        server_ejects: IntCounter = server_ejects[]
            => "server_ejects", "# times backend server was ejected";
        /// Requests that could not be forwarded (nutcracker's `forward_error`).
        forward_error: IntCounter = forward_error[]
            => "forward_error", "# times we encountered a forwarding error";
        /// Sub-requests created by splitting multi-key requests (nutcracker's `fragments`).
        fragments: IntCounter = fragments[]
            => "fragments", "# fragments created from a multi-vector request";
        /// The pool's `client_connections` (0: no limit), set by each snapshot.
        client_connections_limit: IntGauge = client_connections_limit[];
        /// Client connections accepted.
        client_connections_total: IntCounter = client_connections_total[];
        /// Client connections closed on accept: the pool had `client_connections` open.
        client_refused: IntCounter = client_refused[];
        /// Clients of a `tls` pool whose handshake failed or timed out.
        client_tls_failed: IntCounter = client_tls_failed[];
        /// Clients closed for holding more reply bytes than `client_output_hard_limit`.
        client_output_closed: IntCounter = client_output_closed[];
        /// Migration window: reads missed on the new owner, served from the old one.
        migration_hits: IntCounter = migration_hits[];
        /// Migration window: values copied from the old owner to the new one.
        migration_copies: IntCounter = migration_copies[];
        /// Request latency in seconds, arrival to reply ready, observed through
        /// [`PoolMetrics::latency`].
        request_duration: Histogram = request_duration[];
        /// Redis Cluster `-MOVED` redirects followed.
        moved: IntCounter = redirects["moved"];
        /// Redis Cluster `-ASK` redirects followed.
        ask: IntCounter = redirects["ask"];
        /// Redis Cluster slot map refreshes that succeeded.
        refreshed: IntCounter = cluster_refreshes["ok"];
        /// Redis Cluster slot map refreshes that reached no node.
        refresh_failed: IntCounter = cluster_refreshes["error"];
        /// Failed `AUTH`s by user (pools with `users`).
        auth_failures: AuthFailures = auth_failures[];
    }
    backend {
        /// Connections the backend closed (nutcracker's `server_eof`).
        server_eof: IntCounter = server_eof[]
            => "server_eof", "# eof on server connections";
        /// Connections that failed (nutcracker's `server_err`): connect errors, resets, bad
        /// replies.
        server_err: IntCounter = server_err[]
            => "server_err", "# errors on server connections";
        /// Connections that timed out (nutcracker's `server_timedout`).
        server_timedout: IntCounter = server_timedout[]
            => "server_timedout", "# timeouts on server connections";
        /// Open connections, over all workers: `inc` on connect, `dec` on close.
        connections: IntGauge = connections[]
            => "server_connections", "# active server connections";
        /// When the backend was last ejected, µs since the Unix epoch; 0 = never (nutcracker's
        /// `server_ejected_at`). Only in the stats JSON.
        ejected_at_usec: AtomicI64 = unexported[]
            => "server_ejected_at", "timestamp when server was ejected in usec since epoch";
        /// Requests written to the backend.
        requests: IntCounter = requests[]
            => "requests", "# requests";
        /// Request bytes written to the backend.
        request_bytes: IntCounter = request_bytes[]
            => "request_bytes", "total request bytes";
        /// Replies read from the backend.
        responses: IntCounter = responses[]
            => "responses", "# responses";
        /// Reply bytes read from the backend.
        response_bytes: IntCounter = response_bytes[]
            => "response_bytes", "total response bytes";
        /// Requests queued but not yet written (nutcracker's `in_queue`).
        in_queue: IntGauge = queue_requests["in"]
            => "in_queue", "# requests in incoming queue";
        /// Bytes of those requests (nutcracker's `in_queue_bytes`).
        in_queue_bytes: IntGauge = queue_bytes["in"]
            => "in_queue_bytes", "current request bytes in incoming queue";
        /// Requests written and awaiting their reply (nutcracker's `out_queue`).
        out_queue: IntGauge = queue_requests["out"]
            => "out_queue", "# requests in outgoing queue";
        /// Bytes of those requests (nutcracker's `out_queue_bytes`).
        out_queue_bytes: IntGauge = queue_bytes["out"]
            => "out_queue_bytes", "current request bytes in outgoing queue";
        /// Requests that got an error reply instead of the backend's, by kind.
        errors: ErrorCounters = errors[];
        /// Connection attempts, failed ones included (part of the stats JSON's
        /// `total_connections`).
        connections_total: IntCounter = connections_total[];
        /// 1 while reachable (last connection attempt succeeded), else 0.
        up: IntGauge = up[];
        /// 1 while ejected, else 0; see [`PoolMetrics::eject`].
        ejected: IntGauge = ejected[];
        /// Sentinel master switches applied to this backend.
        sentinel_switches: IntCounter = sentinel_switches[];
        /// Dedicated connections leased: `inc` when a lease is granted, `dec` when it ends.
        dedicated: IntGauge = dedicated[];
        /// Backend latency in seconds, request queued on the connection to reply, observed
        /// through the connection's [`super::Tally`].
        request_duration: Histogram = backend_duration[];
    }
}
