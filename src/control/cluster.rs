//! Redis Cluster: learns each cluster pool's nodes and slot layout from its seeds (at start and
//! on every reload), then keeps the layout current: every [`REFRESH`], and soon after the data
//! path asks (a `-MOVED` reply, a failing node). A new layout over the same nodes is published
//! as a new snapshot of the pool ([`Control::update`]); a changed set of nodes rebuilds the
//! pool through [`Control::recluster`] (nodes it keeps keep their connections).

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::client::{unexpected, Access, Connection, Error, Value};
use super::{Control, ReloadError, ResolveError};
use crate::backend::pool::{Pool, Signal};
use crate::config::{BackendAddr, BackendConfig, Config, HostPort, PoolConfig};
use crate::route::cluster::{Group, Layout};
use crate::route::slots::MAX_SLOT;
use crate::shutdown::Shutdown;

/// Bound on connecting to a node and on each of its replies.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Largest layout reply accepted (a 1,000-node cluster's `CLUSTER SHARDS` is ~1 MiB).
const MAX_REPLY: usize = 16 * 1024 * 1024;
/// How often the layout is read again when nothing asks for it sooner.
pub const REFRESH: Duration = Duration::from_secs(5);
/// Least time between two reads of the layout, however often the data path asks.
const MIN_GAP: Duration = Duration::from_millis(100);

/// One master's slots and nodes, as a cluster node describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The slots the master serves, sorted.
    pub slots: Vec<RangeInclusive<u16>>,
    /// The master.
    pub master: BackendAddr,
    /// Its replicas that are not failing.
    pub replicas: Vec<BackendAddr>,
}

/// A cluster's layout as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topology {
    /// Every master serving slots, with its replicas.
    pub shards: Vec<Shard>,
    /// Every node named, failing ones included (a pool keeps connections to all of them, so
    /// a failover changes only the layout), sorted by address.
    pub nodes: Vec<BackendAddr>,
}

impl Topology {
    /// The topology in a `CLUSTER SHARDS` reply (Redis 7+): per shard a field list with
    /// `slots` (flat start/end pairs) and `nodes` (field lists with `endpoint`/`ip`, `port`,
    /// `role`, `health`). Asked over TLS (`tls`), a node's `tls-port` is its port where the
    /// reply lists one.
    ///
    /// # Errors
    /// The reply is not of that shape.
    pub fn from_shards(reply: &Value, tls: bool) -> Result<Topology, String> {
        let shards = reply.items().ok_or("CLUSTER SHARDS: not an array")?;
        let mut topology = Topology::default();
        for shard in shards {
            let shard = fields(shard).ok_or("CLUSTER SHARDS: a shard is not a field list")?;
            let slots = match shard.get("slots").and_then(|v| v.items()) {
                Some(bounds) => slot_pairs(bounds)?,
                None => return Err("CLUSTER SHARDS: a shard has no slots list".into()),
            };
            let nodes = shard
                .get("nodes")
                .and_then(|v| v.items())
                .ok_or("CLUSTER SHARDS: a shard has no nodes list")?;
            let mut master = None;
            let mut replicas = Vec::new();
            for node in nodes {
                let node = fields(node).ok_or("CLUSTER SHARDS: a node is not a field list")?;
                let text = |key: &str| node.get(key).and_then(|v| v.text()).unwrap_or_default();
                let host = match text("endpoint").as_str() {
                    "" | "?" => text("ip"),
                    endpoint => endpoint.to_owned(),
                };
                // A cluster with `tls-cluster yes` lists both ports: over TLS, the TLS one.
                let port = |name: &str| node.get(name).and_then(|v| v.int());
                let port = if tls {
                    port("tls-port").or_else(|| port("port"))
                } else {
                    port("port")
                };
                let Some(addr) = node_addr(&host, port) else {
                    continue;
                };
                topology.nodes.push(addr.clone());
                let healthy = text("health") != "fail";
                match text("role").as_str() {
                    "master" => master = Some(addr),
                    _ if healthy => replicas.push(addr),
                    _ => {}
                }
            }
            if let (Some(master), false) = (master, slots.is_empty()) {
                topology.shards.push(Shard {
                    slots,
                    master,
                    replicas,
                });
            }
        }
        topology.finish();
        Ok(topology)
    }

    /// The topology in a `CLUSTER SLOTS` reply (any Redis Cluster): per range `start`, `end`,
    /// the master `[ip, port, id, ...]`, then its replicas likewise.
    ///
    /// # Errors
    /// The reply is not of that shape.
    pub fn from_slots(reply: &Value) -> Result<Topology, String> {
        let ranges = reply.items().ok_or("CLUSTER SLOTS: not an array")?;
        let mut topology = Topology::default();
        let mut by_master: HashMap<BackendAddr, usize> = HashMap::new();
        for range in ranges {
            let items = range
                .items()
                .ok_or("CLUSTER SLOTS: an entry is not an array")?;
            let [start, end, nodes @ ..] = items else {
                return Err("CLUSTER SLOTS: an entry is too short".into());
            };
            let slots = slot_pairs(&[start.clone(), end.clone()])?;
            let mut addrs = nodes.iter().filter_map(|node| {
                let node = node.items()?;
                let host = node.first()?.text()?;
                node_addr(&host, node.get(1)?.int())
            });
            let Some(master) = addrs.next() else {
                continue;
            };
            let replicas: Vec<BackendAddr> = addrs.collect();
            topology.nodes.push(master.clone());
            topology.nodes.extend(replicas.iter().cloned());
            match by_master
                .get(&master)
                .and_then(|&i| topology.shards.get_mut(i))
            {
                Some(shard) => shard.slots.extend(slots),
                None => {
                    by_master.insert(master.clone(), topology.shards.len());
                    topology.shards.push(Shard {
                        slots,
                        master,
                        replicas,
                    });
                }
            }
        }
        topology.finish();
        Ok(topology)
    }

    fn finish(&mut self) {
        self.nodes.sort_by_cached_key(ToString::to_string);
        self.nodes.dedup();
        for shard in &mut self.shards {
            shard.slots.sort_by_key(|range| *range.start());
        }
    }

    /// The pool's `servers` for these nodes.
    pub fn servers(&self) -> Vec<BackendConfig> {
        self.nodes
            .iter()
            .map(|addr| BackendConfig {
                addr: addr.clone(),
                weight: 1,
                name: None,
                slots: Vec::new(),
            })
            .collect()
    }

    /// The layout over `servers` (a pool's nodes, index = node); nodes it does not list are
    /// left out (a shard whose master is unknown serves nothing until the pool is rebuilt).
    pub fn layout(&self, servers: &[BackendConfig]) -> Layout {
        let index = |addr: &BackendAddr| servers.iter().position(|s| &s.addr == addr);
        Layout::new(
            self.shards
                .iter()
                .filter_map(|shard| {
                    let group = Group {
                        master: index(&shard.master)?,
                        replicas: shard.replicas.iter().filter_map(index).collect(),
                    };
                    Some((shard.slots.clone(), group))
                })
                .collect(),
        )
    }
}

/// A field list (`[name, value, name, value, ...]`) as a map from name to value.
fn fields(value: &Value) -> Option<HashMap<String, &Value>> {
    let items = value.items()?;
    Some(
        items
            .chunks(2)
            .filter_map(|pair| match pair {
                [name, value] => Some((name.text()?, value)),
                _ => None,
            })
            .collect(),
    )
}

/// Flat `start, end` pairs as slot ranges.
fn slot_pairs(bounds: &[Value]) -> Result<Vec<RangeInclusive<u16>>, String> {
    let slot = |value: &Value| {
        value
            .int()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&n| n <= MAX_SLOT)
            .ok_or_else(|| format!("not a slot: {value:?}"))
    };
    bounds
        .chunks(2)
        .map(|pair| match pair {
            [start, end] => {
                let (start, end) = (slot(start)?, slot(end)?);
                if start <= end {
                    Ok(start..=end)
                } else {
                    Err(format!("empty slot range {start}-{end}"))
                }
            }
            _ => Err("an odd number of slot bounds".into()),
        })
        .collect()
}

/// A node's address as the cluster gives it; `None` without a usable host or port.
fn node_addr(host: &str, port: Option<i64>) -> Option<BackendAddr> {
    let port = u16::try_from(port?).ok().filter(|&p| p != 0)?;
    (!host.is_empty() && host != "?").then(|| BackendAddr::Tcp {
        host: host.to_owned(),
        port,
    })
}

/// Asks one node for the layout: `CLUSTER SHARDS`, or `CLUSTER SLOTS` where that is unknown.
///
/// # Errors
/// The node could not be reached, refused, or gave something else.
pub async fn ask(addr: &HostPort, access: &Access) -> Result<Topology, Error> {
    let mut connection = Connection::open(addr, access, TIMEOUT, MAX_REPLY).await?;
    match connection.call(&[b"CLUSTER", b"SHARDS"]).await? {
        Value::Error(text) if text.contains("nknown") || text.contains("wrong number") => {
            let reply = connection.call(&[b"CLUSTER", b"SLOTS"]).await?;
            if let Value::Error(_) = reply {
                return Err(unexpected(reply));
            }
            Topology::from_slots(&reply).map_err(Error::Protocol)
        }
        reply @ Value::Error(_) => Err(unexpected(reply)),
        reply => Topology::from_shards(&reply, access.tls.is_some()).map_err(Error::Protocol),
    }
}

/// Asks `candidates` in turn until one answers.
///
/// # Errors
/// Every candidate's failure, one per `; `.
async fn ask_any(candidates: &[HostPort], access: &Access) -> Result<Topology, String> {
    let mut failures = Vec::new();
    for addr in candidates {
        match ask(addr, access).await {
            Ok(topology) => return Ok(topology),
            Err(error) => failures.push(format!("{addr}: {error}")),
        }
    }
    Err(failures.join("; "))
}

/// Where to ask for `config`'s layout: its known nodes first, then its seeds.
fn candidates(config: &PoolConfig) -> Vec<HostPort> {
    let mut out: Vec<HostPort> = config
        .servers
        .iter()
        .filter_map(|server| match &server.addr {
            BackendAddr::Tcp { host, port } => Some(HostPort {
                host: host.clone(),
                port: *port,
            }),
            BackendAddr::Unix(_) => None,
        })
        .collect();
    for seed in config.cluster.iter().flat_map(|c| &c.seeds) {
        if !out.contains(seed) {
            out.push(seed.clone());
        }
    }
    out
}

/// The layouts learnt by [`resolve`], by pool name.
pub type Layouts = HashMap<String, Topology>;

/// Fills in every cluster pool's nodes (its `servers`) from the first seed that answers, and
/// returns what each said, for [`with_topology`] once the snapshots are built.
///
/// # Errors
/// Every cluster pool no seed answered for; `config` must then not be used.
pub async fn resolve(config: &mut Config) -> Result<Layouts, ReloadError> {
    let mut layouts = Layouts::new();
    let mut problems = Vec::new();
    for pool in &mut config.pools {
        let Some(cluster) = &pool.cluster else {
            continue;
        };
        let access = Access::of(pool, pool.redis_auth.as_deref());
        match ask_any(&cluster.seeds, &access).await {
            Ok(topology) => {
                tracing::info!(pool = %pool.name, nodes = topology.nodes.len(), masters = topology.shards.len(), "Redis Cluster: layout learnt");
                pool.servers = topology.servers();
                layouts.insert(pool.name.clone(), topology);
            }
            Err(cause) => problems.push(ResolveError::Cluster {
                pool: pool.name.clone(),
                cause,
            }),
        }
    }
    if problems.is_empty() {
        Ok(layouts)
    } else {
        Err(ReloadError::Resolve(problems))
    }
}

/// `pool` (a new cluster pool snapshot) with the layout `topology` gives over its nodes.
pub fn with_topology(pool: Pool, topology: &Topology) -> Pool {
    let layout = topology.layout(&pool.config().servers);
    if !layout.covers_all() {
        tracing::warn!(pool = %pool.config().name, "Redis Cluster: some slots are served by no node");
    }
    pool.with_layout(layout).unwrap_or(pool)
}

/// Starts keeping every cluster pool of `pools` current, until `stop`.
pub fn watch(control: Weak<Control>, pools: &[Arc<Pool>], stop: &Shutdown) {
    for pool in pools.iter().filter(|pool| pool.cluster().is_some()) {
        let name = pool.config().name.clone();
        let signal = Arc::clone(pool.signal());
        tokio::spawn(keep_current(control.clone(), name, signal, stop.clone()));
    }
}

/// Refreshes pool `name`'s layout every [`REFRESH`] or when asked, at most once per
/// [`MIN_GAP`].
async fn keep_current(control: Weak<Control>, name: String, signal: Arc<Signal>, stop: Shutdown) {
    let mut last = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = crate::timer::sleep(REFRESH) => {}
            () = signal.refresh_requested() => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = crate::timer::sleep_until(last + MIN_GAP) => {}
        }
        last = Instant::now();
        let Some(control) = control.upgrade() else {
            return;
        };
        refresh(&control, &name).await;
    }
}

/// Reads pool `name`'s layout again and applies it.
async fn refresh(control: &Control, name: &str) {
    let Some(pool) = control.pool(name) else {
        return;
    };
    let config = pool.config();
    let access = Access::of(config, config.redis_auth.as_deref());
    let topology = match ask_any(&candidates(config), &access).await {
        Ok(topology) => topology,
        Err(why) => {
            pool.metrics().refresh_failed.inc();
            tracing::warn!(pool = name, %why, "Redis Cluster: no node answered");
            return;
        }
    };
    pool.metrics().refreshed.inc();
    let servers = topology.servers();
    if servers != config.servers {
        match control.recluster(name, &topology).await {
            Ok(()) => {
                tracing::info!(
                    pool = name,
                    nodes = servers.len(),
                    "Redis Cluster: nodes changed, pool rebuilt"
                );
            }
            Err(error) => tracing::warn!(pool = name, %error, "Redis Cluster: cannot rebuild"),
        }
        return;
    }
    let changed = control
        .update(name, |current| {
            let layout = topology.layout(&current.config().servers);
            let cluster = current.cluster()?;
            if current.config().servers != servers || *cluster.layout() == layout {
                return None;
            }
            current.with_layout(layout)
        })
        .await;
    if changed {
        tracing::info!(pool = name, "Redis Cluster: slot layout changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::client::parse_value;

    fn tcp(host: &str, port: u16) -> BackendAddr {
        BackendAddr::Tcp {
            host: host.into(),
            port,
        }
    }

    fn bulk(text: &str) -> String {
        format!("${}\r\n{text}\r\n", text.len())
    }

    fn node(port: u16, role: &str, health: &str) -> String {
        let fields = [
            bulk("id"),
            bulk("abc"),
            bulk("port"),
            format!(":{port}\r\n"),
            bulk("ip"),
            bulk("127.0.0.1"),
            bulk("endpoint"),
            bulk("127.0.0.1"),
            bulk("role"),
            bulk(role),
            bulk("replication-offset"),
            ":10\r\n".into(),
            bulk("health"),
            bulk(health),
        ];
        format!("*{}\r\n{}", fields.len(), fields.concat())
    }

    fn shard(slots: &[u16], nodes: &[String]) -> String {
        let slots: String = slots.iter().map(|s| format!(":{s}\r\n")).collect();
        format!(
            "*4\r\n{}*{}\r\n{slots}{}*{}\r\n{}",
            bulk("slots"),
            slots.matches(':').count(),
            bulk("nodes"),
            nodes.len(),
            nodes.concat()
        )
    }

    fn value(text: &str) -> Value {
        let (value, used) = parse_value(text.as_bytes()).unwrap();
        assert_eq!(used, text.len());
        value
    }

    #[test]
    fn over_tls_a_node_is_reached_on_its_tls_port() {
        // `tls-cluster yes` with the plain port open too: both are listed.
        let plain = node(7000, "master", "online");
        let both = plain.replacen("*14\r\n", "*16\r\n", 1) + &bulk("tls-port") + ":17000\r\n";
        let reply = format!("*1\r\n{}", shard(&[0, 16383], &[both]));
        let over_tls = Topology::from_shards(&value(&reply), true).unwrap();
        assert_eq!(over_tls.nodes, vec![tcp("127.0.0.1", 17000)]);
        let plain = Topology::from_shards(&value(&reply), false).unwrap();
        assert_eq!(plain.nodes, vec![tcp("127.0.0.1", 7000)]);
    }

    #[test]
    fn cluster_shards_gives_masters_healthy_replicas_and_every_node() {
        let reply = format!(
            "*3\r\n{}{}{}",
            shard(
                &[0, 5460, 10000, 10001],
                &[
                    node(7000, "master", "online"),
                    node(7003, "replica", "online")
                ]
            ),
            shard(
                &[5461, 9999],
                &[
                    node(7001, "master", "online"),
                    node(7004, "replica", "fail")
                ]
            ),
            // A failed master that lost its slots: a node, but no shard.
            shard(&[], &[node(7002, "master", "fail")]),
        );
        let topology = Topology::from_shards(&value(&reply), false).unwrap();
        assert_eq!(
            topology.shards,
            vec![
                Shard {
                    slots: vec![0..=5460, 10000..=10001],
                    master: tcp("127.0.0.1", 7000),
                    replicas: vec![tcp("127.0.0.1", 7003)],
                },
                Shard {
                    slots: vec![5461..=9999],
                    master: tcp("127.0.0.1", 7001),
                    replicas: vec![],
                },
            ]
        );
        let ports: Vec<String> = topology.nodes.iter().map(ToString::to_string).collect();
        assert_eq!(
            ports,
            [
                "127.0.0.1:7000",
                "127.0.0.1:7001",
                "127.0.0.1:7002",
                "127.0.0.1:7003",
                "127.0.0.1:7004"
            ]
        );
        let servers = topology.servers();
        let layout = topology.layout(&servers);
        assert_eq!(layout.master(0), Some(0));
        assert_eq!(layout.replicas(0), &[3]);
        assert_eq!(layout.master(10001), Some(0));
        assert_eq!(layout.master(9999), Some(1));
        assert!(layout.replicas(9999).is_empty());
        assert_eq!(layout.master(10002), None);
    }

    #[test]
    fn cluster_slots_gives_the_same_shape() {
        let entry = |start: u16, end: u16, ports: &[u16]| {
            let nodes: String = ports
                .iter()
                .map(|p| format!("*3\r\n{}:{p}\r\n{}", bulk("127.0.0.1"), bulk("id")))
                .collect();
            format!("*{}\r\n:{start}\r\n:{end}\r\n{nodes}", 2 + ports.len())
        };
        let reply = format!(
            "*3\r\n{}{}{}",
            entry(0, 99, &[7000, 7003]),
            entry(100, 16383, &[7001]),
            entry(200, 300, &[7000, 7003]),
        );
        let topology = Topology::from_slots(&value(&reply)).unwrap();
        assert_eq!(topology.shards.len(), 2);
        assert_eq!(topology.shards[0].slots, vec![0..=99, 200..=300]);
        assert_eq!(topology.shards[0].replicas, vec![tcp("127.0.0.1", 7003)]);
        assert_eq!(topology.nodes.len(), 3);
    }

    #[test]
    fn malformed_layouts_are_refused() {
        for reply in [
            "+OK\r\n",
            "*1\r\n:1\r\n",
            "*1\r\n*2\r\n$5\r\nslots\r\n*1\r\n:1\r\n",
        ] {
            assert!(
                Topology::from_shards(&value(reply), false).is_err(),
                "{reply:?}"
            );
        }
        let bad_slot = format!(
            "*1\r\n{}",
            shard(&[0, 16384], &[node(1, "master", "online")])
        );
        assert!(Topology::from_shards(&value(&bad_slot), false).is_err());
        let backwards = format!("*1\r\n{}", shard(&[9, 3], &[node(1, "master", "online")]));
        assert!(Topology::from_shards(&value(&backwards), false).is_err());
        assert!(Topology::from_slots(&value("*1\r\n*1\r\n:0\r\n")).is_err());
    }
}
