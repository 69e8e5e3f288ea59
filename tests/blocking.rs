//! Blocking commands through Keyway (4 real shards): each on a dedicated backend connection of
//! its own, woken by other clients through the proxy, never cut short by the pool `timeout`,
//! never slowing the shared connections, bounded by `dedicated_connections`, and released when
//! the client goes away.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking
#![allow(clippy::disallowed_methods)] // a blocking test thread waits past the pool timeout

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::live::connection_ids;
use common::*;

/// Anti-hang bound for anything that should take a moment.
const HANG: Duration = Duration::from_secs(10);

/// `keyway_backend_dedicated_connections` of backend `name`.
fn dedicated_on(proxy: &Proxy, name: &str) -> i64 {
    let label = format!("backend=\"{name}\"");
    proxy.metric("keyway_backend_dedicated_connections", &label) as i64
}

/// `blocked_clients` in a backend's `INFO clients`.
fn blocked_on(server: &RedisServer) -> i64 {
    let info = server.client().cmd(&["INFO", "clients"]);
    let Reply::Bulk(Some(text)) = info else {
        panic!("INFO: {info:?}")
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

/// Waits until `server` has `n` blocked clients.
fn wait_blocked(server: &RedisServer, n: i64) {
    assert!(
        wait_until(HANG, || blocked_on(server) == n),
        "blocked clients on the backend: {} (wanted {n})",
        blocked_on(server)
    );
}

/// Keys grouped by the shard Keyway puts them on (at least a few per shard), absent.
fn keys(setup: &Setup) -> Vec<Vec<String>> {
    let mut c = setup.client();
    let candidates: Vec<String> = (0..400u64)
        .map(|i| format!("bk-{}-{i}", i.wrapping_mul(2_654_435_761) % 99_991))
        .collect();
    let sets: Vec<Vec<u8>> = candidates
        .iter()
        .map(|k| encode(&["SET", k, "1"]))
        .collect();
    c.pipeline(&sets);
    let by_shard: Vec<Vec<String>> = setup
        .shards
        .iter()
        .map(|s| {
            let held = s.keys();
            candidates
                .iter()
                .filter(|k| held.contains(k.as_bytes()))
                .take(12)
                .cloned()
                .collect()
        })
        .collect();
    let dels: Vec<Vec<u8>> = candidates.iter().map(|k| encode(&["DEL", k])).collect();
    c.pipeline(&dels);
    for (i, keys) in by_shard.iter().enumerate() {
        assert!(keys.len() >= 4, "shard {i} has keys {keys:?}");
    }
    by_shard
}

fn setup(options: &[(&str, &str)]) -> Setup {
    let mut all = vec![("hash_tag", "\"{}\"")];
    all.extend_from_slice(options);
    Setup::new(4, &all)
}

#[test]
fn blpop_is_woken_by_another_client_through_keyway() {
    let setup = setup(&[]);
    let keys = keys(&setup);
    let list = &keys[1][0];
    let mut blocked = setup.client();
    blocked.send(&["BLPOP", list, "0"]);
    wait_blocked(&setup.shards[1], 1);
    assert_eq!(setup.proxy.leased(), 1, "one lease while blocked");
    let mut pusher = setup.client();
    assert_eq!(pusher.cmd(&["RPUSH", list, "job"]), Reply::Int(1));
    assert_eq!(
        blocked.read_reply(),
        Reply::Array(Some(vec![Reply::bulk(list), Reply::bulk("job")]))
    );
    // The client goes on, in order, on its usual connections; the lease is given back.
    assert_eq!(blocked.cmd(&["LLEN", list]), Reply::Int(0));
    wait_blocked(&setup.shards[1], 0);
    // Clean once answered: the connection is kept for the worker's next blocking command.
    let conns = connection_ids(&setup.shards[1]).len();
    assert_eq!(blocked.cmd(&["BLPOP", list, "0.1"]), Reply::Array(None));
    assert_eq!(
        connection_ids(&setup.shards[1]).len(),
        conns,
        "reused, not reopened"
    );
    assert_eq!(
        setup.proxy.leased(),
        1,
        "the kept connection holds its lease"
    );
}

#[test]
fn other_clients_of_the_same_shard_keep_answering_while_one_blocks() {
    let setup = setup(&[]);
    let keys = keys(&setup);
    let list = keys[2][0].clone();
    let mut blocked = setup.client();
    blocked.send(&["BLPOP", &list, "0"]);
    wait_blocked(&setup.shards[2], 1);
    let values: Vec<String> = keys[2][1..].to_vec();
    let mut c = setup.client();
    for k in &values {
        assert_eq!(c.cmd(&["SET", k, k]), Reply::ok());
    }
    let started = Instant::now();
    let workers: Vec<_> = (0..50)
        .map(|i| {
            let addr = setup.proxy.addr().to_string();
            let key = values[i % values.len()].clone();
            thread::spawn(move || {
                let mut c = Client::connect(&addr);
                for _ in 0..20 {
                    assert_eq!(c.cmd(&["GET", &key]), Reply::bulk(&key));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a GET client failed");
    }
    // A generous bound: a shared connection stuck behind the BLPOP would never answer.
    assert!(
        started.elapsed() < HANG,
        "GETs took {:?}",
        started.elapsed()
    );
    assert_eq!(blocked_on(&setup.shards[2]), 1, "still blocked meanwhile");
    assert_eq!(c.cmd(&["LPUSH", &list, "x"]), Reply::Int(1));
    assert_eq!(
        blocked.read_reply(),
        Reply::Array(Some(vec![Reply::bulk(&list), Reply::bulk("x")]))
    );
}

#[test]
fn a_block_longer_than_the_pool_timeout_is_not_cut_short() {
    let setup = setup(&[("timeout", "200")]);
    let keys = keys(&setup);
    let mut c = setup.client();
    let started = Instant::now();
    // 1.5 s of blocking, with a 200 ms pool timeout: the timeout comes on top.
    assert_eq!(c.cmd(&["BLPOP", &keys[0][0], "1.5"]), Reply::Array(None));
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let started = Instant::now();
    assert_eq!(
        c.cmd(&["XREAD", "BLOCK", "1200", "STREAMS", &keys[0][1], "$"]),
        Reply::Array(None)
    );
    assert!(started.elapsed() >= Duration::from_millis(1200));
    // BLOCK 0 / timeout 0: no timeout at all (woken here after well past 200 ms).
    let mut blocked = setup.client();
    blocked.send(&["BRPOP", &keys[0][2], "0"]);
    wait_blocked(&setup.shards[0], 1);
    thread::sleep(Duration::from_millis(600));
    assert_eq!(c.cmd(&["RPUSH", &keys[0][2], "late"]), Reply::Int(1));
    assert_eq!(
        blocked.read_reply(),
        Reply::Array(Some(vec![Reply::bulk(&keys[0][2]), Reply::bulk("late")]))
    );
}

#[test]
fn a_client_that_disconnects_while_blocked_releases_its_lease_and_connection() {
    let setup = setup(&[]);
    let keys = keys(&setup);
    let clients_before = connection_ids(&setup.shards[3]).len();
    let mut blocked = setup.client();
    blocked.send(&["BLPOP", &keys[3][0], "0"]);
    wait_blocked(&setup.shards[3], 1);
    assert_eq!(setup.proxy.leased(), 1);
    assert_eq!(connection_ids(&setup.shards[3]).len(), clients_before + 1);
    blocked.close();
    assert!(
        wait_until(HANG, || setup.proxy.leased() == 0),
        "lease released"
    );
    wait_blocked(&setup.shards[3], 0);
    assert!(
        wait_until(HANG, || connection_ids(&setup.shards[3]).len()
            == clients_before),
        "the backend saw the dedicated connection go: {}",
        connection_ids(&setup.shards[3]).len()
    );
    // Nothing was popped by a ghost.
    let mut c = setup.client();
    assert_eq!(c.cmd(&["RPUSH", &keys[3][0], "kept"]), Reply::Int(1));
    assert_eq!(c.cmd(&["LLEN", &keys[3][0]]), Reply::Int(1));
}

#[test]
fn past_dedicated_connections_the_client_gets_an_error_naming_the_limit_then_recovers() {
    let setup = setup(&[("dedicated_connections", "2")]);
    let keys = keys(&setup);
    let list = &keys[1][0];
    let mut first = setup.client();
    first.send(&["BLPOP", list, "0"]);
    let mut second = setup.client();
    second.send(&["BLPOP", list, "0"]);
    wait_blocked(&setup.shards[1], 2);
    let mut third = setup.client();
    let refused = third.cmd(&["BLPOP", list, "0"]);
    let addr = setup.shards[1].addr();
    assert_eq!(
        refused,
        Reply::Error(format!("ERR dedicated_connections (2) reached for {addr}"))
    );
    // The limit is per backend: another shard still has room.
    assert_eq!(
        third.cmd(&["BLPOP", &keys[2][0], "0.1"]),
        Reply::Array(None)
    );
    // And the client's connection works on.
    assert_eq!(third.cmd(&["PING"]), Reply::Simple("PONG".into()));
    first.close();
    assert!(wait_until(HANG, || dedicated_on(&setup.proxy, "s1") == 1));
    assert_eq!(third.cmd(&["BLPOP", list, "0.1"]), Reply::Array(None));
    assert_eq!(third.cmd(&["RPUSH", list, "v"]), Reply::Int(1));
    assert_eq!(
        second.read_reply(),
        Reply::Array(Some(vec![Reply::bulk(list), Reply::bulk("v")]))
    );
    // What is left is kept for reuse (at most half the limit is), never more than leased.
    assert!(dedicated_on(&setup.proxy, "s1") <= 1);
}

#[test]
fn blmove_bzpopmin_and_xread_block_are_woken_like_blpop() {
    let setup = setup(&[]);
    let mut c = setup.client();
    let mut blocked = setup.client();
    blocked.send(&["BLMOVE", "{j}src", "{j}dst", "LEFT", "RIGHT", "0"]);
    let shard = setup.shards.iter().position(|s| blocked_on(s) == 1);
    let shard = shard.unwrap_or_else(|| {
        assert!(wait_until(HANG, || setup
            .shards
            .iter()
            .any(|s| blocked_on(s) == 1)));
        setup
            .shards
            .iter()
            .position(|s| blocked_on(s) == 1)
            .unwrap()
    });
    assert_eq!(c.cmd(&["RPUSH", "{j}src", "a"]), Reply::Int(1));
    assert_eq!(blocked.read_reply(), Reply::bulk("a"));
    assert_eq!(
        c.cmd(&["LRANGE", "{j}dst", "0", "-1"]).items(),
        [Reply::bulk("a")]
    );
    wait_blocked(&setup.shards[shard], 0);

    blocked.send(&["BZPOPMIN", "{j}z", "0"]);
    wait_blocked(&setup.shards[shard], 1);
    assert_eq!(c.cmd(&["ZADD", "{j}z", "3", "m"]), Reply::Int(1));
    assert_eq!(
        blocked.read_reply(),
        Reply::Array(Some(vec![
            Reply::bulk("{j}z"),
            Reply::bulk("m"),
            Reply::bulk("3")
        ]))
    );
    wait_blocked(&setup.shards[shard], 0);

    blocked.send(&["XREAD", "BLOCK", "0", "STREAMS", "{j}s", "$"]);
    wait_blocked(&setup.shards[shard], 1);
    let id = c.cmd(&["XADD", "{j}s", "*", "f", "v"]);
    let reply = blocked.read_reply();
    let stream = &reply.items()[0];
    assert_eq!(stream.items()[0], Reply::bulk("{j}s"));
    assert_eq!(stream.items()[1].items()[0].items()[0], id);

    // BRPOPLPUSH, and the multi-key pops waiting on several keys of one shard.
    blocked.send(&["BRPOPLPUSH", "{j}a", "{j}b", "0"]);
    wait_blocked(&setup.shards[shard], 1);
    assert_eq!(c.cmd(&["LPUSH", "{j}a", "x"]), Reply::Int(1));
    assert_eq!(blocked.read_reply(), Reply::bulk("x"));
    assert_eq!(
        c.cmd(&["BLMPOP", "0.1", "2", "{j}none", "{j}b", "LEFT"]),
        Reply::Array(Some(vec![
            Reply::bulk("{j}b"),
            Reply::Array(Some(vec![Reply::bulk("x")]))
        ]))
    );
    assert_eq!(
        c.cmd(&["BZMPOP", "0.1", "1", "{j}empty", "MIN"]),
        Reply::Array(None)
    );
    // XREAD without BLOCK is an ordinary routed read.
    assert_eq!(
        c.cmd(&["XREAD", "COUNT", "1", "STREAMS", "{j}s", "0"])
            .items()[0]
            .items()[0],
        Reply::bulk("{j}s")
    );
}

#[test]
fn a_blocking_pop_over_keys_of_several_shards_is_crossslot() {
    let setup = setup(&[]);
    let keys = keys(&setup);
    let mut c = setup.client();
    let crossslot = Reply::Error("CROSSSLOT Keys in request don't hash to the same shard".into());
    assert_eq!(c.cmd(&["BLPOP", &keys[0][0], &keys[1][0], "0"]), crossslot);
    assert_eq!(
        c.cmd(&["BLMOVE", &keys[0][0], &keys[2][0], "LEFT", "LEFT", "0"]),
        crossslot
    );
    assert_eq!(
        c.cmd(&[
            "XREAD",
            "BLOCK",
            "0",
            "STREAMS",
            &keys[0][0],
            &keys[3][0],
            "$",
            "$"
        ]),
        crossslot
    );
    assert_eq!(setup.proxy.leased(), 0, "refused before any lease");
    // A bad timeout is the backend's error, at once.
    let bad = c.cmd(&["BLPOP", &keys[0][0], "soon"]);
    assert_eq!(
        bad,
        Reply::Error("ERR timeout is not a float or out of range".into())
    );
}

#[test]
fn replies_keep_request_order_around_a_blocking_command() {
    let setup = setup(&[]);
    let keys = keys(&setup);
    let (list, other) = (&keys[0][0], &keys[1][0]);
    let mut c = setup.client();
    // Pipelined: the push lands before the pop (it was sent first), the GET after it.
    let replies = c.pipeline(&[
        encode(&["RPUSH", list, "a"]),
        encode(&["SET", other, "v"]),
        encode(&["BLPOP", list, "0"]),
        encode(&["GET", other]),
        encode(&["LLEN", list]),
    ]);
    assert_eq!(
        replies,
        [
            Reply::Int(1),
            Reply::ok(),
            Reply::Array(Some(vec![Reply::bulk(list), Reply::bulk("a")])),
            Reply::bulk("v"),
            Reply::Int(0),
        ]
    );
}

#[test]
fn a_cluster_pool_blocks_on_the_slot_owner() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = cluster.keyway("  timeout: 300\n");
    let owner = cluster.master_of_slot(cluster.keyslot("{cq}list"));
    let owner = cluster.node(owner.port);
    let mut blocked = proxy.client();
    blocked.send(&["BLPOP", "{cq}list", "0"]);
    wait_blocked(owner, 1);
    assert_eq!(proxy.leased(), 1);
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["RPUSH", "{cq}list", "v"]), Reply::Int(1));
    assert_eq!(
        blocked.read_reply(),
        Reply::Array(Some(vec![Reply::bulk("{cq}list"), Reply::bulk("v")]))
    );
    // Longer than the pool timeout, and across slots: CROSSSLOT as Redis Cluster says.
    assert_eq!(c.cmd(&["BLPOP", "{cq}list", "0.6"]), Reply::Array(None));
    assert!(c
        .cmd(&["BLPOP", "a", "b", "0"])
        .error_text()
        .starts_with("CROSSSLOT"));
    // Each of the two clients keeps its clean connection for its next blocking command.
    assert_eq!(proxy.leased(), 2);
    drop((blocked, c));
    assert!(
        wait_until(HANG, || proxy.leased() == 0),
        "gone with their clients"
    );
}

#[test]
fn time_spent_blocked_stays_out_of_the_latency_histograms() {
    let setup = setup(&[]);
    let keys = keys(&setup);
    let list = &keys[2][0];
    let sums = || {
        (
            (setup.proxy).metric("keyway_request_duration_seconds_sum", "alpha"),
            (setup.proxy).metric("keyway_backend_request_duration_seconds_sum", "alpha"),
        )
    };
    let (requests_before, backend_before) = sums();
    let mut blocked = setup.client();
    blocked.send(&["BLPOP", list, "0"]);
    wait_blocked(&setup.shards[2], 1);
    // Blocked for at least 1.5 s before it is woken.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(setup.client().cmd(&["RPUSH", list, "x"]), Reply::Int(1));
    assert_eq!(blocked.read_reply().items()[1], Reply::bulk("x"));
    // What was counted meanwhile is the proxy's and the backends' own time: milliseconds.
    let (requests_after, backend_after) = sums();
    let (requests, backend) = (
        requests_after - requests_before,
        backend_after - backend_before,
    );
    assert!(
        requests < 1.0 && backend < 1.0,
        "the 1.5 s block was counted as latency: requests {requests} s, backends {backend} s"
    );
}
