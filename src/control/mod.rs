//! The only writer of routing state. Every change to what the workers route by — start,
//! reload (SIGHUP, `POST /reload`), a Sentinel switch ([`Control::repoint`]), a Redis Cluster
//! layout change ([`Control::recluster`], [`Control::update`]), an ejection or readmission
//! ([`eject`]) — builds a new immutable [`Pool`] snapshot off the hot path and publishes it on
//! every worker at once. Start is [`prepare_start`] (resolve Sentinels and clusters, build
//! snapshots, bind listeners, over an empty state) then [`Control::start`] (install); a reload
//! ([`Control::apply`]) runs the same two steps over the live state, so a bad file or an
//! unbindable address changes nothing.

pub mod client;
pub mod cluster;
pub mod diff;
pub mod eject;
pub mod migration;
pub mod plan;
pub mod sentinel;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use crate::backend::pool::Pool;
use crate::config::{self, BackendAddr, Config, Listen, ListenOverride, PoolConfig};
use crate::metrics::Metrics;
use crate::proxy::listener::{self, Bound, ClientCount, LocalAddr};
use crate::proxy::worker::Workers;
use crate::shutdown::Shutdown;

/// Why a config could not be applied (at start or on reload); nothing changed. The variant
/// says whose fault it is: the file's ([`ReloadError::Config`]), an unreachable Sentinel or
/// cluster ([`ReloadError::Resolve`]), or this host's ([`ReloadError::Bind`]).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// No config file to re-read (the proxy was started without one).
    #[error("no configuration file to reload (with --config-store: keyway publish)")]
    NoFile,
    /// The file is invalid: every problem, naming pool and key.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// No Sentinel placed a master, or no seed of a cluster pool answered.
    #[error("{}", lines(.0))]
    Resolve(Vec<ResolveError>),
    /// A pool's listener could not be bound.
    #[error("pool '{pool}': cannot listen on {listen}: {source}")]
    Bind {
        /// The pool.
        pool: String,
        /// Its `listen` address.
        listen: Listen,
        /// Why.
        source: io::Error,
    },
    /// The pool (or its backend) a Sentinel or cluster watcher named is gone (a reload
    /// removed it).
    #[error("pool '{pool}' has no {what}")]
    Gone {
        /// The pool.
        pool: String,
        /// What it lacks.
        what: String,
    },
}

/// One backend address a pool could not learn.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No Sentinel gave the address of a master.
    #[error("pool '{pool}': no Sentinel gave the address of master '{master}' ({cause})")]
    Sentinel {
        /// The pool.
        pool: String,
        /// The master's name.
        master: String,
        /// Each Sentinel's failure.
        cause: String,
    },
    /// No seed of a cluster pool answered.
    #[error("pool '{pool}': no cluster seed answered ({cause})")]
    Cluster {
        /// The pool.
        pool: String,
        /// Each seed's failure.
        cause: String,
    },
}

fn lines(errors: &[ResolveError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// A pool's running listener.
struct Running {
    listen: Listen,
    stop: Shutdown,
    task: JoinHandle<()>,
}

/// The live pools and listeners, and the ways to change them.
pub struct Control {
    config_path: Option<PathBuf>,
    /// `--listen POOL=ADDR`: applied to every config this control plane applies.
    overrides: Vec<ListenOverride>,
    workers: Arc<Workers>,
    metrics: Arc<Metrics>,
    /// The live pools, for readers outside the control plane (admin `/pools`).
    live: ArcSwap<Vec<Arc<Pool>>>,
    shutdown: Shutdown,
    state: tokio::sync::Mutex<State>,
    /// Itself, for the watchers it starts (they must not keep it alive).
    this: Weak<Control>,
    /// What the Sentinel watchers watch, and what stops them; replaced when an apply changes
    /// the watched set.
    watchers: Mutex<(sentinel::Watched, Shutdown)>,
    /// What stops the cluster and auto-eject watchers; replaced (and they restarted) on every
    /// apply.
    pool_watchers: Mutex<Shutdown>,
}

/// What the control plane has made live.
#[derive(Default)]
struct State {
    pools: Vec<Arc<Pool>>,
    listeners: HashMap<String, Running>,
    /// Client counts per pool name, kept across reloads so `client_connections` holds.
    counts: HashMap<String, Arc<ClientCount>>,
}

/// A config made ready to install: addresses resolved, snapshots built, new listeners bound.
/// Dropping it changes nothing (its listeners close).
pub struct Prepared {
    pools: Vec<Arc<Pool>>,
    /// The listeners the config needs that are not running yet, by pool.
    fresh: Vec<(PoolConfig, Bound)>,
    /// What changes, one line per pool.
    report: Vec<String>,
}

impl Prepared {
    /// Each newly bound listener's pool and address, in config order.
    pub fn local_addrs(&self) -> Vec<(String, LocalAddr)> {
        self.fresh
            .iter()
            .filter_map(|(pool, bound)| Some((pool.name.clone(), bound.local_addr().ok()?)))
            .collect()
    }
}

/// Makes `config` ready to install over `state` (empty at start): Sentinel pools get their
/// masters' addresses from the Sentinels, cluster pools their nodes and layout from the
/// cluster; changed pools get a new snapshot (keeping every unchanged backend's connections
/// and health), unchanged pools keep theirs; every listener that is new or moved is bound.
async fn prepare(
    state: &State,
    metrics: &Metrics,
    mut config: Config,
) -> Result<Prepared, ReloadError> {
    sentinel::resolve(&mut config).await?;
    let layouts = cluster::resolve(&mut config).await?;
    let old: Vec<PoolConfig> = state.pools.iter().map(|p| p.config().clone()).collect();
    let report = diff::describe(&old, &config.pools);
    let mut fresh = Vec::new();
    for pool in &config.pools {
        let moved = state
            .listeners
            .get(&pool.name)
            .is_none_or(|running| running.listen != pool.listen);
        if moved {
            let bound = listener::bind(pool).map_err(|source| ReloadError::Bind {
                pool: pool.name.clone(),
                listen: pool.listen.clone(),
                source,
            })?;
            fresh.push((pool.clone(), bound));
        }
    }
    let pools = config
        .pools
        .into_iter()
        .map(|new| {
            let previous = state.pools.iter().find(|p| p.config().name == new.name);
            if let Some(same) = previous.filter(|p| p.config() == &new) {
                return Arc::clone(same);
            }
            let name = new.name.clone();
            let pool = Pool::new(new, metrics, previous.map(|p| &**p));
            let pool = migration::begin(pool, previous.map(|p| &**p));
            let pool = match layouts.get(&name) {
                Some(topology) => cluster::with_topology(pool, topology),
                None => pool,
            };
            Arc::new(pool)
        })
        .collect();
    Ok(Prepared {
        pools,
        fresh,
        report,
    })
}

/// Prepares `config` for a proxy that runs nothing yet: resolves its Sentinel masters and
/// cluster layouts, builds its snapshots and binds every listener, as a reload does.
///
/// # Errors
/// No Sentinel placed a master, no seed of a cluster pool answered, or a listener could not
/// be bound.
pub async fn prepare_start(config: Config, metrics: &Metrics) -> Result<Prepared, ReloadError> {
    prepare(&State::default(), metrics, config).await
}

impl Control {
    /// Installs `prepared` (from [`prepare_start`]) on `workers` (running no pool yet) and
    /// starts accepting on its listeners: generation 1. Must run inside the control runtime.
    pub async fn start(
        config_path: Option<PathBuf>,
        overrides: Vec<ListenOverride>,
        prepared: Prepared,
        workers: Arc<Workers>,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> Arc<Control> {
        let watchers = Mutex::new((sentinel::Watched::default(), shutdown.child_token()));
        let pool_watchers = Mutex::new(shutdown.child_token());
        let control = Arc::new_cyclic(|this| Control {
            config_path,
            overrides,
            workers,
            metrics,
            live: ArcSwap::from_pointee(Vec::new()),
            shutdown,
            state: tokio::sync::Mutex::new(State::default()),
            this: this.clone(),
            watchers,
            pool_watchers,
        });
        let mut state = control.state.lock().await;
        control.commit(&mut state, prepared).await;
        drop(state);
        control
    }

    /// (Re)starts the watchers that keep every cluster pool of `pools` current and decide
    /// every auto-eject pool's ejections.
    fn watch_pools(&self, pools: &[Arc<Pool>]) {
        let stop = self.shutdown.child_token();
        let mut current = self
            .pool_watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *current, stop.clone()).cancel();
        cluster::watch(self.this.clone(), pools, &stop);
        eject::watch(self.this.clone(), pools, &stop);
        migration::watch(self.this.clone(), pools, &stop);
    }

    /// The live pool named `name`.
    pub fn pool(&self, name: &str) -> Option<Arc<Pool>> {
        self.pools()
            .iter()
            .find(|pool| pool.config().name == name)
            .cloned()
    }

    /// Publishes `change(current)` as pool `name`'s snapshot, when it gives one: the new
    /// snapshot replaces the current one on every worker. Returns whether it did.
    pub async fn update(&self, name: &str, change: impl FnOnce(&Pool) -> Option<Pool>) -> bool {
        let mut state = self.state.lock().await;
        let Some(index) = state.pools.iter().position(|p| p.config().name == name) else {
            return false;
        };
        let Some(next) = state.pools.get(index).and_then(|current| change(current)) else {
            return false;
        };
        let mut pools = state.pools.clone();
        if let Some(slot) = pools.get_mut(index) {
            *slot = Arc::new(next);
        }
        self.install(&mut state, pools).await;
        true
    }

    /// Rebuilds cluster pool `pool` on the nodes of `topology` (the cluster gained or lost a
    /// node): a new snapshot with those nodes and that layout replaces the old one on every
    /// worker; nodes it keeps keep their connections.
    ///
    /// # Errors
    /// No cluster pool `pool` (a reload removed it).
    pub async fn recluster(
        &self,
        pool: &str,
        topology: &cluster::Topology,
    ) -> Result<(), ReloadError> {
        let metrics = Arc::clone(&self.metrics);
        let rebuilt = self
            .update(pool, |old| {
                old.cluster()?;
                let mut config = old.config().clone();
                config.servers = topology.servers();
                let new = Pool::new(config, &metrics, Some(old));
                Some(cluster::with_topology(new, topology))
            })
            .await;
        if rebuilt {
            Ok(())
        } else {
            Err(ReloadError::Gone {
                pool: pool.to_owned(),
                what: "cluster".into(),
            })
        }
    }

    /// Makes the Sentinel watchers follow `pools`: when the watched pools, Sentinels or masters
    /// differ from the running watchers', stops them and starts new ones. Watchers find pools by
    /// name, so a pool rebuilt with the same Sentinel settings keeps its watchers.
    fn watch_sentinels(&self, pools: &[Arc<Pool>]) {
        let watched = sentinel::Watched::of(pools);
        let mut current = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        if current.0 == watched && !current.1.is_cancelled() {
            return;
        }
        let stop = self.shutdown.child_token();
        let (_, old) = std::mem::replace(&mut *current, (watched, stop.clone()));
        old.cancel();
        sentinel::watch(self.this.clone(), pools, &stop);
    }

    /// Makes `pools` live on every worker and for the admin readers.
    async fn install(&self, state: &mut State, pools: Vec<Arc<Pool>>) {
        self.workers.install(&pools).await;
        self.live.store(Arc::new(pools.clone()));
        state.pools = pools;
    }

    /// Re-points backend `master` of Sentinel pool `pool` to `addr`: a new snapshot, identical
    /// but for that address, replaces the old one on every worker. Only that backend gets new
    /// connections (requests in flight to the old master end in an error reply); the others
    /// keep theirs. The ring position is the master's name, so no key moves; listeners and
    /// other pools are untouched. Returns whether anything changed: a switch every Sentinel
    /// announces is applied once.
    ///
    /// # Errors
    /// No pool `pool`, or it has no Sentinel backend `master` (a reload removed it).
    pub async fn repoint(
        &self,
        pool: &str,
        master: &str,
        addr: BackendAddr,
    ) -> Result<bool, ReloadError> {
        let metrics = Arc::clone(&self.metrics);
        let mut found = false;
        let mut from = None;
        let changed = self
            .update(pool, |old| {
                let mut new = old.config().clone();
                let (shard, server) = new
                    .servers
                    .iter_mut()
                    .enumerate()
                    .find(|(_, s)| s.name.as_deref() == Some(master))
                    .filter(|_| old.config().sentinel.is_some())?;
                found = true;
                if server.addr == addr {
                    return None;
                }
                from = Some(std::mem::replace(&mut server.addr, addr.clone()));
                let replacement = Pool::new(new, &metrics, Some(old));
                if let Some(backend) = replacement.metrics().backend(shard) {
                    backend.sentinel_switches.inc();
                }
                Some(replacement)
            })
            .await;
        if !found {
            return Err(ReloadError::Gone {
                pool: pool.to_owned(),
                what: format!("Sentinel master '{master}'"),
            });
        }
        if let (true, Some(from)) = (changed, from) {
            tracing::info!(pool, master, %from, to = %addr, "backend re-pointed");
        }
        Ok(changed)
    }

    /// The process's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The config generation: 1 at start, +1 per successful reload.
    pub fn generation(&self) -> u64 {
        self.metrics.generation()
    }

    /// The live pools (a snapshot; every change replaces it whole).
    pub fn pools(&self) -> Arc<Vec<Arc<Pool>>> {
        self.live.load_full()
    }

    /// Re-reads the config file and applies it.
    ///
    /// # Errors
    /// Why nothing changed: no file to read, every problem the file has, or why it could not
    /// be applied.
    pub async fn reload(&self) -> Result<String, ReloadError> {
        let Some(path) = &self.config_path else {
            return Err(ReloadError::NoFile);
        };
        let outcome = match Config::load(path) {
            Ok(config) => self.apply(config).await,
            Err(error) => Err(error.into()),
        };
        self.metrics.reload(outcome.is_ok());
        if let Err(error) = &outcome {
            tracing::error!(
                "reload failed, nothing changed: {}",
                error.to_string().trim_end().replace('\n', "; ")
            );
        }
        outcome
    }

    /// The live shard maps as JSON: per pool its settings and backends (address, weight,
    /// shard index, ejected or not).
    pub fn pools_json(&self) -> String {
        let pools = self.pools();
        let mut out = format!("{{\"generation\": {}, \"pools\": [", self.generation());
        for (i, pool) in pools.iter().enumerate() {
            let config = pool.config();
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!(
                "{{\"name\": {}, \"listen\": {}, \"protocol\": \"{}\", \"hash\": \"{}\", \"distribution\": \"{}\", \"backends\": [",
                json_string(&config.name),
                json_string(&config.listen.to_string()),
                if config.redis { "redis" } else { "memcache" },
                config.hash.name(),
                config.distribution.name(),
            ));
            let slots = pool.slot_ranges();
            for (shard, server) in config.servers.iter().enumerate() {
                if shard > 0 {
                    out.push_str(", ");
                }
                let ranges = slots
                    .as_ref()
                    .and_then(|all| all.iter().find(|(s, _)| *s == shard))
                    .map(|(_, ranges)| {
                        let list: Vec<String> = ranges
                            .iter()
                            .map(|r| format!("\"{}-{}\"", r.start(), r.end()))
                            .collect();
                        format!(", \"slots\": [{}]", list.join(", "))
                    })
                    .unwrap_or_default();
                out.push_str(&format!(
                    "{{\"shard\": {shard}, \"name\": {}, \"address\": {}, \"weight\": {}, \"state\": \"{}\"{ranges}}}",
                    json_string(&server.ketama_name()),
                    json_string(&server.addr.to_string()),
                    server.weight,
                    if pool.is_ejected(shard) { "ejected" } else { "live" },
                ));
            }
            out.push(']');
            if let Some(handover) = pool.handover() {
                let left = handover
                    .until()
                    .saturating_duration_since(tokio::time::Instant::now());
                out.push_str(&format!(
                    ", \"migration\": {{\"seconds_left\": {}, \"copy\": {}}}",
                    left.as_secs(),
                    handover.copies()
                ));
            }
            out.push('}');
        }
        out.push_str("]}\n");
        out
    }

    /// Makes `config` live: unchanged pools keep everything; changed pools get a new snapshot
    /// (backends that changed get new connections, in-flight requests finish on the old ones);
    /// added pools start listening, removed pools stop; a moved `listen` moves the listener.
    /// Sentinel pools get their masters' addresses from the Sentinels first, cluster pools
    /// their nodes and layout from the cluster, and the watchers restart on the new config.
    /// `--listen` overrides apply first.
    ///
    /// # Errors
    /// No Sentinel placed a master, no seed of a cluster pool answered, or a new listener
    /// could not be bound; nothing changed.
    pub async fn apply(&self, mut config: Config) -> Result<String, ReloadError> {
        for pool in config.override_listens(&self.overrides) {
            tracing::warn!(
                pool,
                "--listen names a pool this configuration does not have"
            );
        }
        let mut state = self.state.lock().await;
        let prepared = prepare(&state, &self.metrics, config).await?;
        let report = prepared.report.clone();
        let generation = self.commit(&mut state, prepared).await;
        let mut text = format!("reloaded: generation {generation}\n");
        for line in &report {
            text.push_str(line);
            text.push('\n');
        }
        tracing::info!(generation, changes = %report.join("; "), "configuration reloaded");
        Ok(text)
    }

    /// Installs `prepared` over `state`: publishes its snapshots, stops the listeners of
    /// removed or moved pools, starts its fresh ones, restarts the watchers; returns the new
    /// config generation.
    async fn commit(&self, state: &mut State, prepared: Prepared) -> u64 {
        let Prepared { pools, fresh, .. } = prepared;
        let old: Vec<String> = state
            .pools
            .iter()
            .map(|p| p.config().name.clone())
            .collect();
        let names: Vec<String> = pools.iter().map(|p| p.config().name.clone()).collect();
        self.install(state, pools.clone()).await;

        let fresh_names: Vec<String> = fresh.iter().map(|(p, _)| p.name.clone()).collect();
        let retired: Vec<String> = state
            .listeners
            .keys()
            .filter(|name| !names.contains(name) || fresh_names.contains(name))
            .cloned()
            .collect();
        for name in retired {
            if let Some(running) = state.listeners.remove(&name) {
                running.stop.cancel();
                let _ = running.task.await;
            }
        }
        for (pool, bound) in fresh {
            state.listen(&pool, bound, &self.workers, &self.shutdown, &self.metrics);
        }
        state.counts.retain(|name, _| names.contains(name));
        for gone in old.iter().filter(|o| !names.contains(o)) {
            self.metrics.forget_pool(gone);
        }
        self.watch_sentinels(&pools);
        self.watch_pools(&pools);
        // Under the state lock: applies are serialised, so this cannot race another one.
        let generation = self.metrics.generation() + 1;
        self.metrics.set_generation(generation);
        generation
    }

    /// Stops every listener (shutdown).
    pub async fn stop(&self) {
        let mut state = self.state.lock().await;
        for (_, running) in state.listeners.drain() {
            running.stop.cancel();
            let _ = running.task.await;
        }
    }
}

impl State {
    fn listen(
        &mut self,
        pool: &PoolConfig,
        bound: Bound,
        workers: &Arc<Workers>,
        shutdown: &Shutdown,
        metrics: &Metrics,
    ) {
        let stop = shutdown.child_token();
        let count = Arc::clone(self.counts.entry(pool.name.clone()).or_default());
        let name: Arc<str> = Arc::from(pool.name.as_str());
        let task = tokio::spawn(listener::accept_loop(
            name,
            pool.client_connections as usize,
            bound,
            count,
            metrics.client_refused(&pool.name),
            Arc::clone(workers),
            stop.clone(),
        ));
        let task = tokio::spawn(async move {
            match task.await {
                Ok(Err(error)) => tracing::error!(%error, "listener failed"),
                Err(error) => tracing::error!(%error, "listener task failed"),
                Ok(Ok(())) => {}
            }
        });
        self.listeners.insert(
            pool.name.clone(),
            Running {
                listen: pool.listen.clone(),
                stop,
                task,
            },
        );
    }
}

/// A JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    crate::metrics::stats::push_str(&mut out, text);
    out
}
