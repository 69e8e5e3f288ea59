//! A real Redis Cluster (3 masters + 3 replicas, `redis-cli --cluster create`) behind a Keyway
//! cluster pool: every command family replies as one Redis does, keys land on their slot's
//! master, `-MOVED` and `-ASK` are followed without the client seeing them, resharding and a
//! master's failover under load lose nothing, replicas serve reads when asked to, and the admin
//! server shows the slot ranges and counts the redirects.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test helpers fail by panicking

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

mod families {
    use super::common::*;
    include!("suites/command_families.rs");
}

/// A Keyway cluster pool on `cluster`, with extra pool lines.
fn proxy(cluster: &RedisCluster, extra: &str) -> Proxy {
    cluster.keyway(&format!("  timeout: 5000\n{extra}"))
}

/// A node's id, from the cluster's view.
fn id_of(cluster: &RedisCluster, port: u16) -> String {
    cluster
        .view()
        .into_iter()
        .find(|n| n.port == port)
        .expect("node in view")
        .id
}

#[test]
fn every_command_family_replies_as_one_redis_through_a_cluster_pool() {
    let cluster = RedisCluster::start(3, 1);
    let keyway = proxy(&cluster, "");
    let reference = RedisServer::start();
    let mut d = families::Diff::new(keyway.client(), reference.client(), Vec::new());
    for (name, family) in families::FAMILIES {
        cluster.flushall();
        reference.flushall();
        eprintln!("family {name}");
        family(&mut d);
    }
}

#[test]
fn keys_land_on_their_slot_master_and_multi_key_commands_split_by_slot() {
    let cluster = RedisCluster::start(3, 1);
    let keyway = proxy(&cluster, "");
    let mut c = keyway.client();
    let keys: Vec<String> = (0..1000).map(|i| format!("key:{i}")).collect();
    for batch in keys.chunks(100) {
        let mut args = vec!["MSET".to_string()];
        for key in batch {
            args.push(key.clone());
            args.push(format!("v-{key}"));
        }
        assert_eq!(c.cmd(&args), Reply::ok());
    }
    // Each key is on the master `CLUSTER KEYSLOT` and the slot table name, read directly.
    let view = cluster.view();
    let mut per_master: HashMap<u16, usize> = HashMap::new();
    for key in keys.iter().take(200) {
        let slot = cluster.keyslot(key);
        let master = view
            .iter()
            .find(|n| n.master && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .expect("slot owner");
        let direct = cluster.node(master.port).client().cmd(&["GET", key]);
        assert_eq!(
            direct,
            Reply::bulk(format!("v-{key}")),
            "{key} on :{}",
            master.port
        );
        *per_master.entry(master.port).or_default() += 1;
    }
    assert_eq!(per_master.len(), 3, "keys spread over every master");
    let total: i64 = view
        .iter()
        .filter(|n| n.master)
        .map(|n| cluster.node(n.port).client().cmd(&["DBSIZE"]).int())
        .sum();
    assert_eq!(total, 1000);

    // MGET across every slot merges in order; DEL and EXISTS sum.
    let mut mget = vec!["MGET".to_string()];
    mget.extend(keys.iter().take(50).cloned());
    mget.push("missing".into());
    let mut expected: Vec<Reply> = keys
        .iter()
        .take(50)
        .map(|k| Reply::bulk(format!("v-{k}")))
        .collect();
    expected.push(Reply::nil());
    assert_eq!(c.cmd(&mget), Reply::Array(Some(expected)));
    assert_eq!(c.cmd(&["EXISTS", "key:1", "key:2", "nope"]), Reply::Int(2));
    assert_eq!(c.cmd(&["DEL", "key:1", "key:2", "nope"]), Reply::Int(2));

    // Co-located commands need one slot, as Redis Cluster itself requires, even when two
    // slots share a master; a hash tag puts keys in one slot.
    let crossslot = c.cmd(&["SUNIONSTORE", "key:3", "key:4", "key:5"]);
    assert!(
        crossslot.error_text().starts_with("CROSSSLOT"),
        "{crossslot:?}"
    );
    assert_eq!(c.cmd(&["SADD", "{s}a", "1", "2"]), Reply::Int(2));
    assert_eq!(c.cmd(&["SADD", "{s}b", "2", "3"]), Reply::Int(2));
    assert_eq!(
        c.cmd(&["SINTERSTORE", "{s}c", "{s}a", "{s}b"]),
        Reply::Int(1)
    );
}

/// Moves `slot` from master `from` to master `to` the way `redis-cli --cluster reshard` does:
/// `IMPORTING`/`MIGRATING`, `keys` migrated first, `during` called while the slot is half-moved,
/// then every key left, then `SETSLOT NODE` on the target, the source and the other masters.
fn move_slot(
    cluster: &RedisCluster,
    slot: u16,
    from: u16,
    to: u16,
    keys: &[&str],
    during: impl FnOnce(),
) {
    let (from_id, to_id) = (id_of(cluster, from), id_of(cluster, to));
    let slot = slot.to_string();
    let mut src = cluster.node(from).client();
    let mut dst = cluster.node(to).client();
    let migrate = |src: &mut Client, key: &str| {
        let moved = src.cmd(&["MIGRATE", "127.0.0.1", &to.to_string(), key, "0", "5000"]);
        assert_eq!(moved, Reply::ok(), "MIGRATE {key}");
    };
    assert_eq!(
        dst.cmd(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]),
        Reply::ok()
    );
    assert_eq!(
        src.cmd(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]),
        Reply::ok()
    );
    for key in keys {
        migrate(&mut src, key);
    }
    during();
    let left = src.cmd(&["CLUSTER", "GETKEYSINSLOT", &slot, "1000"]);
    for key in left.items() {
        let Reply::Bulk(Some(key)) = key else {
            panic!("GETKEYSINSLOT item {key:?}");
        };
        migrate(&mut src, &String::from_utf8_lossy(key));
    }
    let mut order = vec![to, from];
    order.extend(
        cluster
            .view()
            .iter()
            .filter(|n| n.master && n.port != to && n.port != from)
            .map(|n| n.port),
    );
    for port in order {
        let reply = cluster
            .node(port)
            .client()
            .cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        assert_eq!(reply, Reply::ok(), "SETSLOT NODE on :{port}");
    }
}

#[test]
fn moved_and_ask_are_followed_without_the_client_seeing_them() {
    let cluster = RedisCluster::start(3, 1);
    let keyway = proxy(&cluster, "");
    let mut c = keyway.client();
    let slot = cluster.keyslot("{mv}");
    let from = cluster.master_of_slot(slot).port;
    let to = cluster
        .view()
        .into_iter()
        .find(|n| n.master && n.port != from)
        .expect("another master")
        .port;
    assert_eq!(c.cmd(&["SET", "{mv}old", "1"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "{mv}moving", "2"]), Reply::ok());

    move_slot(&cluster, slot, from, to, &["{mv}moving"], || {
        // Half-moved: the source answers `-ASK` for the migrated key and for new keys.
        assert_eq!(c.cmd(&["GET", "{mv}moving"]), Reply::bulk("2"));
        assert_eq!(c.cmd(&["SET", "{mv}new", "3"]), Reply::ok());
        assert_eq!(c.cmd(&["GET", "{mv}old"]), Reply::bulk("1"));
    });
    let ask = keyway.metric("keyway_cluster_redirects_total", "kind=\"ask\"");
    assert!(ask >= 2.0, "ASK redirects counted: {ask}");
    let mut direct = cluster.node(to).client();
    assert_eq!(
        direct.cmd(&["GET", "{mv}new"]),
        Reply::bulk("3"),
        "written on the target"
    );

    // Moved for good, `{mv}old` with it: the proxy's stale map gets `-MOVED` and follows it.
    let mut src = cluster.node(from).client();
    let stale = src.cmd(&["GET", "{mv}old"]);
    assert!(
        stale.error_text().starts_with("MOVED"),
        "the source now redirects: {stale:?}"
    );
    assert_eq!(c.cmd(&["GET", "{mv}old"]), Reply::bulk("1"));
    assert_eq!(c.cmd(&["GET", "{mv}moving"]), Reply::bulk("2"));
    assert_eq!(c.cmd(&["SET", "{mv}old", "4"]), Reply::ok());
    assert_eq!(direct.cmd(&["GET", "{mv}old"]), Reply::bulk("4"));
    let moved = keyway.metric("keyway_cluster_redirects_total", "kind=\"moved\"");
    assert!(moved >= 1.0, "MOVED redirects counted: {moved}");

    // The MOVED asked for a refresh: the map soon names the new owner, and redirects stop.
    let ok = wait_until(Duration::from_secs(10), || {
        let (_, body) = http(keyway.admin_port(), "GET", "/pools");
        body.contains(&format!("\"address\": \"127.0.0.1:{to}\""))
            && body.contains(&format!("\"{slot}-{slot}\""))
    });
    assert!(ok, "/pools shows the moved slot on its new master");
    let before = keyway.metric("keyway_cluster_redirects_total", "");
    for i in 0..20 {
        assert_eq!(c.cmd(&["SET", &format!("{{mv}}{i}"), "x"]), Reply::ok());
    }
    assert_eq!(keyway.metric("keyway_cluster_redirects_total", ""), before);
}

#[test]
fn admin_shows_slot_ranges_per_master_and_refresh_metrics() {
    let cluster = RedisCluster::start(3, 1);
    let keyway = proxy(&cluster, "");
    let (status, body) = http(keyway.admin_port(), "GET", "/pools");
    assert_eq!(status, 200);
    for master in cluster.view().iter().filter(|n| n.master) {
        let &(a, b) = master.slots.first().expect("a master has slots");
        let backend = body
            .split("{\"shard\"")
            .find(|b| b.contains(&format!("\"address\": \"127.0.0.1:{}\"", master.port)))
            .expect("every node is a backend");
        assert!(backend.contains(&format!("\"{a}-{b}\"")), "{backend}");
    }
    assert_eq!(body.matches("{\"shard\"").count(), 6, "{body}");
    assert!(body.contains("\"distribution\": \"slots\""), "{body}");
    let ok = wait_until(Duration::from_secs(15), || {
        keyway.metric("keyway_cluster_refreshes_total", "result=\"ok\"") >= 1.0
    });
    assert!(ok, "a periodic refresh happened and was counted");
}

/// Clients that write then read back their own keys until stopped, counting errors and
/// remembering each key's last written value.
struct Load {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<(Instant, String)>>>,
    threads: Vec<thread::JoinHandle<HashMap<String, u64>>>,
}

impl Load {
    fn start(proxy: &Proxy, clients: usize, keys_each: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|t| {
                let (stop, ops, errors) = (stop.clone(), ops.clone(), errors.clone());
                let addr = proxy.addr().to_string();
                thread::spawn(move || {
                    let mut c = Client::connect(&addr);
                    let mut last: HashMap<String, u64> = HashMap::new();
                    let deadline = Instant::now() + Duration::from_secs(120);
                    let mut n: u64 = 0;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let key = format!("load:{t}:{}", n % keys_each as u64);
                        n += 1;
                        let value = n.to_string();
                        let set = c.cmd(&["SET", &key, &value]);
                        if set != Reply::ok() {
                            errors
                                .lock()
                                .unwrap()
                                .push((Instant::now(), format!("SET {key}: {set:?}")));
                            // The write may or may not have happened: its value is unknown.
                            last.remove(&key);
                            continue;
                        }
                        last.insert(key.clone(), n);
                        let get = c.cmd(&["GET", &key]);
                        if get != Reply::bulk(&value) {
                            errors.lock().unwrap().push((
                                Instant::now(),
                                format!("GET {key}: {get:?} (wrote {value})"),
                            ));
                        }
                        ops.fetch_add(2, Ordering::Relaxed);
                    }
                    last
                })
            })
            .collect();
        Load {
            stop,
            ops,
            errors,
            threads,
        }
    }

    /// Stops the clients; each key's last acknowledged value.
    fn finish(self) -> (HashMap<String, u64>, Vec<(Instant, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut last = HashMap::new();
        for thread in self.threads {
            last.extend(thread.join().expect("load thread"));
        }
        let errors = std::mem::take(&mut *self.errors.lock().unwrap());
        (last, errors)
    }
}

#[test]
fn resharding_under_load_loses_no_write_and_shows_no_error() {
    let cluster = RedisCluster::start(3, 1);
    let keyway = proxy(&cluster, "");
    // Keys in every slot range, so the reshard has keys to move.
    let mut c = keyway.client();
    for batch in 0..20 {
        let mut args = vec!["MSET".to_string()];
        for i in 0..100 {
            args.push(format!("pre:{batch}:{i}"));
            args.push(format!("{batch}:{i}"));
        }
        assert_eq!(c.cmd(&args), Reply::ok());
    }
    let load = Load::start(&keyway, 20, 50);
    thread::sleep(Duration::from_millis(500));
    let masters: Vec<ClusterNode> = cluster.view().into_iter().filter(|n| n.master).collect();
    let (from, to) = (&masters[0], &masters[1]);
    run_redis_cli(&[
        "--cluster",
        "reshard",
        &format!("127.0.0.1:{}", from.port),
        "--cluster-from",
        &from.id,
        "--cluster-to",
        &to.id,
        "--cluster-slots",
        "1200",
        "--cluster-yes",
    ]);
    thread::sleep(Duration::from_millis(500));
    let ops_before_stop = load.ops.load(Ordering::Relaxed);
    let (last, errors) = load.finish();
    eprintln!(
        "reshard moved 1200 slots; {} requests during the run, {} errors",
        ops_before_stop,
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "clients saw errors: {:?}",
        &errors[..errors.len().min(10)]
    );
    assert!(
        ops_before_stop > 1000,
        "the load ran: {ops_before_stop} requests"
    );
    let moved_slots: usize = cluster
        .view()
        .iter()
        .filter(|n| n.port == to.port)
        .flat_map(|n| n.slots.iter().map(|&(a, b)| usize::from(b - a) + 1))
        .sum();
    assert!(
        moved_slots >= 5461 + 1200,
        "the target serves {moved_slots} slots"
    );
    // Every key reads back its last acknowledged value, through the proxy.
    let mut c = keyway.client();
    for (key, value) in &last {
        assert_eq!(
            c.cmd(&["GET", key]),
            Reply::bulk(value.to_string()),
            "{key}"
        );
    }
    for batch in 0..20 {
        for i in (0..100).step_by(7) {
            let key = format!("pre:{batch}:{i}");
            assert_eq!(
                c.cmd(&["GET", &key]),
                Reply::bulk(format!("{batch}:{i}")),
                "{key}"
            );
        }
    }
    let redirects = keyway.metric("keyway_cluster_redirects_total", "");
    eprintln!("redirects followed: {redirects}");
}

#[test]
fn a_master_failover_under_load_is_followed_within_seconds() {
    let mut cluster = RedisCluster::start(3, 1);
    let keyway = proxy(&cluster, "");
    let load = Load::start(&keyway, 20, 50);
    thread::sleep(Duration::from_millis(500));
    let victim = cluster
        .view()
        .into_iter()
        .find(|n| n.master)
        .expect("a master");
    let killed_at = Instant::now();
    cluster.kill(victim.port);
    // The victim's replica takes its slots over.
    let promoted = wait_until(Duration::from_secs(30), || {
        cluster
            .view()
            .iter()
            .any(|n| n.master && !n.failed && n.port != victim.port && n.slots == victim.slots)
    });
    assert!(promoted, "the replica was promoted: {:?}", cluster.view());
    let promoted_at = Instant::now();
    // Keep the load on for a while after the promotion.
    thread::sleep(Duration::from_secs(6));
    let ops_at_end = load.ops.load(Ordering::Relaxed);
    let (last, errors) = load.finish();
    let settled = promoted_at + Duration::from_secs(3);
    let late: Vec<&(Instant, String)> = errors.iter().filter(|(at, _)| *at > settled).collect();
    eprintln!(
        "failover: promoted {:.1} s after the kill; {} requests; {} errors in all, {} more than 3 s after the promotion",
        (promoted_at - killed_at).as_secs_f64(),
        ops_at_end,
        errors.len(),
        late.len()
    );
    for (at, what) in errors.iter().take(5) {
        eprintln!("  +{:.2}s {what}", (*at - killed_at).as_secs_f64());
    }
    assert!(
        late.is_empty(),
        "errors after the failover settled: {late:?}"
    );
    // At most the requests in flight at the kill fail: one per client.
    assert!(
        errors.len() <= 20,
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    let mut c = keyway.client();
    for (key, value) in last.iter().take(200) {
        assert_eq!(
            c.cmd(&["GET", key]),
            Reply::bulk(value.to_string()),
            "{key}"
        );
    }
}

#[test]
fn replicas_serve_reads_when_read_from_says_so() {
    let cluster = RedisCluster::start(3, 1);
    let keyway = proxy(&cluster, "  read_from: replica\n");
    let mut c = keyway.client();
    for i in 0..100 {
        assert_eq!(
            c.cmd(&["SET", &format!("r:{i}"), &i.to_string()]),
            Reply::ok()
        );
    }
    // Wait until the replicas hold every key (WAIT on a fresh connection would not wait: it
    // counts that connection's own writes, and it made none).
    let replicas: Vec<u16> = cluster
        .view()
        .iter()
        .filter(|n| !n.master)
        .map(|n| n.port)
        .collect();
    let synced = wait_until(Duration::from_secs(10), || {
        replicas
            .iter()
            .map(|&port| cluster.node(port).client().cmd(&["DBSIZE"]).int())
            .sum::<i64>()
            == 100
    });
    assert!(synced, "the replicas caught up");
    for i in 0..100 {
        assert_eq!(
            c.cmd(&["GET", &format!("r:{i}")]),
            Reply::bulk(i.to_string())
        );
    }
    let gets = |port: u16| -> u64 {
        let stats = node_info(port, &["INFO", "commandstats"]);
        stats
            .lines()
            .find(|l| l.starts_with("cmdstat_get:"))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|l| l.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    };
    let view = cluster.view();
    let on_replicas: u64 = view
        .iter()
        .filter(|n| !n.master)
        .map(|n| gets(n.port))
        .sum();
    let on_masters: u64 = view.iter().filter(|n| n.master).map(|n| gets(n.port)).sum();
    assert_eq!(
        (on_replicas, on_masters),
        (100, 0),
        "GETs went to the replicas"
    );
    // Writes still go to the masters.
    assert_eq!(c.cmd(&["INCR", "r:counter"]), Reply::Int(1));
}

#[test]
fn keyway_reads_only_the_commands_redis_flags_readonly() {
    let server = RedisServer::start();
    let mut c = server.client();
    let Reply::Array(Some(commands)) = c.cmd(&["COMMAND"]) else {
        panic!("COMMAND did not give an array");
    };
    let mut readonly: Vec<String> = commands
        .iter()
        .filter_map(|command| {
            let items = command.items();
            let name = match items.first()? {
                Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => return None,
            };
            let flags: Vec<String> = items
                .get(2)?
                .items()
                .iter()
                .filter_map(|f| match f {
                    Reply::Simple(s) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            let keyed =
                items.get(3).map(Reply::int) != Some(0) || flags.iter().any(|f| f == "movablekeys");
            (flags.iter().any(|f| f == "readonly") && keyed).then_some(name)
        })
        .collect();
    readonly.sort();
    let ours: Vec<String> = keyway::protocol::resp::command::read_only_names()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ours, readonly);
}

#[test]
fn start_fails_clearly_when_no_seed_answers() {
    let port = free_port();
    let started = Proxy::try_start(
        ProxyKind::Keyway,
        &format!(
            "cl:\n  listen: 127.0.0.1:{}\n  redis: true\n  cluster:\n   - 127.0.0.1:{port}\n",
            free_port()
        ),
    );
    let error = match started {
        Ok(_) => panic!("started without a cluster"),
        Err(error) => error,
    };
    assert!(
        error.contains(&format!(
            "pool 'cl': no cluster seed answered (127.0.0.1:{port}: cannot connect"
        )),
        "{error}"
    );
}

#[test]
fn a_node_added_to_the_cluster_is_reached_before_and_after_the_pool_learns_it() {
    let mut cluster = RedisCluster::start(3, 0);
    let keyway = proxy(&cluster, "");
    let mut c = keyway.client();
    assert_eq!(c.cmd(&["SET", "{nw}a", "1"]), Reply::ok());
    let node = RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "1000",
    ]);
    run_redis_cli(&[
        "--cluster",
        "add-node",
        &node.addr(),
        &cluster.nodes[0].addr(),
    ]);
    let new_port = node.port();
    cluster.nodes.push(node);
    cluster.wait_converged(3, 4);
    let slot = cluster.keyslot("{nw}");
    let from = cluster.master_of_slot(slot).port;
    move_slot(&cluster, slot, from, new_port, &["{nw}a"], || {});
    // The proxy's map still says `from`, which answers -MOVED to a node the pool has no
    // connection to yet: reached directly, then the refresh rebuilds the pool with it.
    assert_eq!(c.cmd(&["GET", "{nw}a"]), Reply::bulk("1"));
    assert_eq!(c.cmd(&["SET", "{nw}b", "2"]), Reply::ok());
    assert_eq!(
        cluster.node(new_port).client().cmd(&["GET", "{nw}b"]),
        Reply::bulk("2")
    );
    let learnt = wait_until(Duration::from_secs(10), || {
        let (_, body) = http(keyway.admin_port(), "GET", "/pools");
        body.contains(&format!("\"address\": \"127.0.0.1:{new_port}\", \"weight\": 1, \"state\": \"live\", \"slots\": [\"{slot}-{slot}\"]"))
    });
    assert!(learnt, "/pools lists the new node with its slot");
    let before = keyway.metric("keyway_cluster_redirects_total", "");
    for i in 0..20 {
        assert_eq!(c.cmd(&["SET", &format!("{{nw}}{i}"), "x"]), Reply::ok());
    }
    assert_eq!(keyway.metric("keyway_cluster_redirects_total", ""), before);
}
