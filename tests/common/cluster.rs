//! A real Redis Cluster on loopback, made by `redis-cli --cluster create`.

use std::thread;
use std::time::Duration;

use super::*;

/// One node as `CLUSTER NODES` describes it.
#[derive(Clone, Debug)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    /// The master's id, for a replica.
    pub master_id: Option<String>,
    pub slots: Vec<(u16, u16)>,
}

/// A real Redis Cluster on loopback: `masters` masters with `replicas` replicas each, made by
/// `redis-cli --cluster create`, node timeout 1 s; every node killed by PID on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// A TLS cluster's TLS ports, in `nodes`' order (empty otherwise).
    pub tls_ports: Vec<u16>,
}

impl RedisCluster {
    /// A Keyway pool `cl` in front of the cluster, with `lines` (`  key: value\n` each,
    /// `timeout` among them) before its seeds.
    pub fn keyway(&self, lines: &str) -> Proxy {
        let seeds = self.seeds_yaml();
        Proxy::start_on_free_port(ProxyKind::Keyway, |port| {
            format!("cl:\n  listen: 127.0.0.1:{port}\n  redis: true\n{lines}  cluster:\n{seeds}")
        })
    }

    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        RedisCluster::start_with(masters, replicas, None)
    }

    /// A cluster speaking TLS on each node's TLS port (`tls_ports`), on its bus and for
    /// replication (`tls-cluster yes`, `tls-replication yes`), created over TLS; the plain
    /// ports stay open for the harness to look at the nodes.
    pub fn start_tls(masters: usize, replicas: usize, certs: &Certs) -> RedisCluster {
        RedisCluster::start_with(masters, replicas, Some(certs))
    }

    fn start_with(masters: usize, replicas: usize, certs: Option<&Certs>) -> RedisCluster {
        let count = masters * (1 + replicas);
        // The bus listens 10000 above the port it announces: keep that within range.
        let tls_ports: Vec<u16> = match certs {
            Some(_) => (0..count)
                .map(|_| loop {
                    let port = free_port();
                    if port < 55000 {
                        break port;
                    }
                })
                .collect(),
            None => Vec::new(),
        };
        let handles: Vec<_> = (0..count)
            .map(|i| {
                let mut args: Vec<String> = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    // A replica may take over however long its link was down: tests
                    // kill masters right after the cluster forms.
                    "--cluster-replica-validity-factor",
                    "0",
                ]
                .map(String::from)
                .to_vec();
                if let (Some(certs), Some(port)) = (certs, tls_ports.get(i)) {
                    args.extend(certs.redis_args(*port, false));
                    args.extend(
                        ["--tls-cluster", "yes", "--tls-replication", "yes"].map(String::from),
                    );
                }
                thread::spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    RedisServer::start_with(&args)
                })
            })
            .collect();
        let nodes: Vec<RedisServer> = handles
            .into_iter()
            .map(|h| h.join().expect("cluster node start thread"))
            .collect();
        let addrs: Vec<String> = match certs {
            Some(_) => tls_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            None => nodes.iter().map(RedisServer::addr).collect(),
        };
        let replicas = replicas.to_string();
        let ca = certs.map(|c| c.file("ca.pem"));
        let mut args = match &ca {
            Some(ca) => vec!["--tls", "--cacert", ca],
            None => Vec::new(),
        };
        args.extend(["--cluster", "create"]);
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
        run_redis_cli(&args);
        let cluster = RedisCluster { nodes, tls_ports };
        cluster.wait_converged(masters, count);
        // Until gossip settles, the view may still list a fresh replica as a slot-less master.
        let settled = wait_until(Duration::from_secs(30), || {
            cluster.view().iter().filter(|n| n.master).count() == masters
        });
        assert!(settled, "roles never settled: {:?}", cluster.view());
        cluster
    }

    /// Waits until every live node says the cluster is ok, knows `count` nodes, and sees
    /// `masters` masters serving slots, with every replica attached and in sync.
    pub fn wait_converged(&self, masters: usize, count: usize) {
        let ok = wait_until(Duration::from_secs(60), || {
            self.live().all(|node| {
                let info = node_info(node.port(), &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{count}"))
                    && info.contains(&format!("cluster_size:{masters}"))
            }) && self
                .view()
                .iter()
                .filter(|n| !n.master && !n.failed)
                .all(|n| {
                    n.master_id.is_some()
                        && node_info(n.port, &["INFO", "replication"])
                            .contains("master_link_status:up")
                })
        });
        assert!(ok, "the cluster did not converge: {:?}", self.view());
    }

    fn live(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    /// `CLUSTER NODES` as seen by the first live node.
    pub fn view(&self) -> Vec<ClusterNode> {
        let node = self.live().next().expect("a live node");
        parse_cluster_nodes(&node_info(node.port(), &["CLUSTER", "NODES"]))
    }

    /// The node listening on `port`.
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .expect("a node on that port")
    }

    /// The index in `nodes` of the node on `port`.
    pub fn index(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .expect("a node on that port")
    }

    /// The master serving `slot`, as the first live node sees it.
    pub fn master_of_slot(&self, slot: u16) -> ClusterNode {
        self.view()
            .into_iter()
            .find(|n| n.master && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// `CLUSTER KEYSLOT key` on a live node.
    pub fn keyslot(&self, key: &str) -> u16 {
        let node = self.live().next().expect("a live node");
        match node.client().cmd(&["CLUSTER", "KEYSLOT", key]) {
            Reply::Int(n) => n as u16,
            other => panic!("CLUSTER KEYSLOT -> {other:?}"),
        }
    }

    /// The `cluster:` lines of a pool config: every node as a seed.
    pub fn seeds_yaml(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("   - {}\n", n.addr()))
            .collect()
    }

    /// Empties every live master.
    pub fn flushall(&self) {
        for node in self.view().iter().filter(|n| n.master && !n.failed) {
            if let Some(server) = self
                .nodes
                .iter()
                .find(|s| s.port() == node.port && s.is_running())
            {
                server.flushall();
            }
        }
    }

    /// Kills the node on `port` (SIGKILL, by PID).
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port() == port) {
            node.kill();
        }
    }
}

/// One command's reply on a direct connection, as text (bulk or simple string).
pub fn node_info(port: u16, args: &[&str]) -> String {
    match Client::connect(&format!("127.0.0.1:{port}")).cmd(args) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        Reply::Simple(s) => s,
        other => panic!("{args:?} -> {other:?}"),
    }
}

/// Parses `CLUSTER NODES` output.
pub fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let addr = fields.get(1)?.split('@').next()?;
            let port = addr.rsplit(':').next()?.parse().ok()?;
            let flags = fields.get(2)?;
            let slots = fields
                .iter()
                .skip(8)
                .filter(|f| !f.starts_with('['))
                .filter_map(|f| match f.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => f.parse().ok().map(|s| (s, s)),
                })
                .collect();
            Some(ClusterNode {
                id: fields.first()?.to_string(),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                master_id: fields.get(3).filter(|m| **m != "-").map(|m| m.to_string()),
                slots,
            })
        })
        .collect()
}
