//! The only writer of the live pools: reload (SIGHUP, `POST /reload`) builds the new pools off
//! the hot path, binds new listeners, then installs the pools on every worker at once. A bad
//! file or an unbindable address changes nothing. Sentinel failovers re-point one shard through
//! the same install path ([`Control::repoint`]), and a Redis Cluster whose nodes change gets a
//! rebuilt pool likewise ([`Control::recluster`]).

pub mod client;
pub mod cluster;
pub mod diff;
pub mod sentinel;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use crate::backend::pool::Pool;
use crate::config::{BackendAddr, Config, Listen, PoolConfig};
use crate::metrics::Metrics;
use crate::proxy::listener::{self, Bound, ClientCount};
use crate::proxy::worker::Workers;
use crate::shutdown::Shutdown;

/// A pool's running listener.
struct Running {
    listen: Listen,
    stop: Shutdown,
    task: JoinHandle<()>,
}

/// The live pools and listeners, and the ways to change them.
pub struct Control {
    config_path: Option<PathBuf>,
    workers: Arc<Workers>,
    metrics: Arc<Metrics>,
    /// The live pools, for readers outside the reload path (admin `/pools`).
    live: ArcSwap<Vec<Arc<Pool>>>,
    shutdown: Shutdown,
    state: tokio::sync::Mutex<State>,
    /// Itself, for the Sentinel watchers it starts (they must not keep it alive).
    this: Weak<Control>,
    /// What the Sentinel watchers watch, and what stops them; replaced when an apply changes
    /// the watched set.
    watchers: Mutex<(sentinel::Watched, Shutdown)>,
    /// What stops the cluster watchers; replaced (and they restarted) on every apply.
    cluster_watchers: Mutex<Shutdown>,
}

struct State {
    pools: Vec<Arc<Pool>>,
    listeners: HashMap<String, Running>,
    /// Client counts per pool name, kept across reloads so `client_connections` holds.
    counts: HashMap<String, Arc<ClientCount>>,
}

impl Control {
    /// Takes over running `pools` (already installed on `workers`) and starts accepting on
    /// their bound listeners. Must run inside the control runtime.
    pub fn start(
        config_path: Option<PathBuf>,
        pools: Vec<Arc<Pool>>,
        bound: Vec<Bound>,
        workers: Arc<Workers>,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> Arc<Control> {
        let mut state = State {
            pools: Vec::new(),
            listeners: HashMap::new(),
            counts: HashMap::new(),
        };
        for (pool, bound) in pools.iter().zip(bound) {
            state.listen(pool.config(), bound, &workers, &shutdown, &metrics);
        }
        state.pools = pools.clone();
        metrics.set_generation(1);
        let watchers = Mutex::new((sentinel::Watched::default(), shutdown.child_token()));
        let cluster_watchers = Mutex::new(shutdown.child_token());
        let control = Arc::new_cyclic(|this| Control {
            config_path,
            workers,
            metrics,
            live: ArcSwap::from_pointee(pools.clone()),
            shutdown,
            state: tokio::sync::Mutex::new(state),
            this: this.clone(),
            watchers,
            cluster_watchers,
        });
        control.watch_sentinels(&pools);
        control.watch_clusters(&pools);
        control
    }

    /// (Re)starts the watchers that keep every cluster pool of `pools` current.
    fn watch_clusters(&self, pools: &[Arc<Pool>]) {
        let stop = self.shutdown.child_token();
        let mut current = self
            .cluster_watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *current, stop.clone()).cancel();
        cluster::watch(self.this.clone(), pools, &stop);
    }

    /// The live pool named `name`.
    pub fn pool(&self, name: &str) -> Option<Arc<Pool>> {
        self.pools()
            .iter()
            .find(|pool| pool.config().name == name)
            .cloned()
    }

    /// Rebuilds cluster pool `pool` on the nodes of `topology` (the cluster gained or lost a
    /// node): a new pool with those nodes and that layout replaces the old one on every worker,
    /// as [`Control::repoint`] does; requests in flight finish on the old connections.
    ///
    /// # Errors
    /// No cluster pool `pool` (a reload removed it).
    pub async fn recluster(&self, pool: &str, topology: &cluster::Topology) -> Result<(), String> {
        let mut state = self.state.lock().await;
        let Some(index) = state
            .pools
            .iter()
            .position(|p| p.config().name == pool && p.config().cluster.is_some())
        else {
            return Err(format!("no cluster pool '{pool}'"));
        };
        let mut pools = state.pools.clone();
        if let Some(slot) = pools.get_mut(index) {
            let mut config = slot.config().clone();
            config.servers = topology.servers();
            let replacement = Arc::new(Pool::new(config, &self.metrics));
            topology.install(&replacement);
            *slot = replacement;
        }
        self.install(&mut state, pools).await;
        Ok(())
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

    /// Re-points backend `master` of Sentinel pool `pool` to `addr`: a new pool, identical but
    /// for that address, replaces the old one on every worker (so every shard of the pool gets
    /// new connections; requests in flight finish on the old ones, and those to a dead or
    /// demoted master end in an error reply). The ring position is the master's name, so no key
    /// moves; listeners and other pools are untouched. Returns whether anything changed: a
    /// switch every Sentinel announces is applied once.
    ///
    /// # Errors
    /// No pool `pool`, or it has no Sentinel backend `master` (a reload removed it).
    pub async fn repoint(
        &self,
        pool: &str,
        master: &str,
        addr: BackendAddr,
    ) -> Result<bool, String> {
        let mut state = self.state.lock().await;
        let Some((index, old)) = state
            .pools
            .iter()
            .enumerate()
            .find(|(_, p)| p.config().name == pool)
        else {
            return Err(format!("no pool '{pool}'"));
        };
        let mut new = old.config().clone();
        let Some((shard, server)) = new
            .servers
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.name.as_deref() == Some(master))
            .filter(|_| old.config().sentinel.is_some())
        else {
            return Err(format!("pool '{pool}' has no Sentinel master '{master}'"));
        };
        if server.addr == addr {
            return Ok(false);
        }
        let from = std::mem::replace(&mut server.addr, addr.clone());
        let replacement = Arc::new(Pool::new(new, &self.metrics));
        if let Some(backend) = replacement.metrics().backend(shard) {
            backend.sentinel_switches.inc();
        }
        let mut pools = state.pools.clone();
        if let Some(slot) = pools.get_mut(index) {
            *slot = replacement;
        }
        self.install(&mut state, pools).await;
        tracing::info!(pool, master, %from, to = %addr, "backend re-pointed");
        Ok(true)
    }

    /// The config generation: 1 at start, +1 per successful reload.
    pub fn generation(&self) -> u64 {
        self.metrics.generation()
    }

    /// The live pools (a snapshot; reloads replace it whole).
    pub fn pools(&self) -> Arc<Vec<Arc<Pool>>> {
        self.live.load_full()
    }

    /// Re-reads the config file and applies it.
    ///
    /// # Errors
    /// Why nothing changed: no file to read, or every problem the file has.
    pub async fn reload(&self) -> Result<String, String> {
        let Some(path) = &self.config_path else {
            return Err("no configuration file to reload".into());
        };
        let outcome = match Config::load(path) {
            Ok(config) => self.apply(config).await,
            Err(error) => Err(error.to_string()),
        };
        self.metrics.reload(outcome.is_ok());
        if let Err(error) = &outcome {
            tracing::error!(
                "reload failed, nothing changed: {}",
                error.trim_end().replace('\n', "; ")
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
                format!("{:?}", config.distribution).to_lowercase(),
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
            out.push_str("]}");
        }
        out.push_str("]}\n");
        out
    }

    /// Makes `config` live: unchanged pools keep everything; changed pools get a new map and
    /// new backend connections (in-flight requests finish on the old ones); added pools start
    /// listening, removed pools stop; a moved `listen` moves the listener. Sentinel pools get
    /// their masters' addresses from the Sentinels first, cluster pools their nodes and layout
    /// from the cluster, and the watchers restart on the new config.
    ///
    /// # Errors
    /// No Sentinel placed a master, no seed of a cluster pool answered, or a new listener
    /// could not be bound; nothing changed.
    pub async fn apply(&self, mut config: Config) -> Result<String, String> {
        sentinel::resolve(&mut config).await?;
        let layouts = cluster::resolve(&mut config).await?;
        let mut state = self.state.lock().await;
        let old: Vec<PoolConfig> = state.pools.iter().map(|p| p.config().clone()).collect();
        let report = diff::describe(&old, &config.pools);

        // Bind every listener the new config needs before anything changes.
        let mut fresh = Vec::new();
        for pool in &config.pools {
            let moved = state
                .listeners
                .get(&pool.name)
                .is_none_or(|running| running.listen != pool.listen);
            if moved {
                let bound = listener::bind(pool).map_err(|error| {
                    format!(
                        "pool '{}': cannot listen on {}: {error}",
                        pool.name, pool.listen
                    )
                })?;
                fresh.push((pool.clone(), bound));
            }
        }

        let pools: Vec<Arc<Pool>> = config
            .pools
            .into_iter()
            .map(
                |new| match state.pools.iter().find(|p| p.config() == &new) {
                    Some(same) => Arc::clone(same),
                    None => Arc::new(Pool::new(new, &self.metrics)),
                },
            )
            .collect();
        cluster::install_layouts(&pools, &layouts);
        let names: Vec<String> = pools.iter().map(|p| p.config().name.clone()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.install(&mut state, pools.clone()).await;

        let fresh_names: Vec<String> = fresh.iter().map(|(p, _)| p.name.clone()).collect();
        let retired: Vec<String> = state
            .listeners
            .keys()
            .filter(|name| !names.contains(&name.as_str()) || fresh_names.contains(name))
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
        state
            .counts
            .retain(|name, _| names.contains(&name.as_str()));
        for gone in old.iter().filter(|o| !names.contains(&o.name.as_str())) {
            self.metrics.forget_pool(&gone.name);
        }
        self.watch_sentinels(&pools);
        self.watch_clusters(&pools);
        // Under the state lock: applies are serialised, so this cannot race another one.
        let generation = self.metrics.generation() + 1;
        self.metrics.set_generation(generation);
        let mut text = format!("reloaded: generation {generation}\n");
        for line in &report {
            text.push_str(line);
            text.push('\n');
        }
        tracing::info!(generation, changes = %report.join("; "), "configuration reloaded");
        Ok(text)
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
