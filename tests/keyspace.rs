//! Keyspace-wide commands over 4 shards, compared with one direct Redis holding the same data:
//! `SCAN` walks every shard with one cursor (every key present throughout is returned, even
//! while keys are being added), `MATCH`/`COUNT`/`TYPE` are forwarded, a bad cursor is refused
//! as Redis refuses it; `KEYS` is the union, `DBSIZE` the sum, `RANDOMKEY` a real key;
//! `FLUSHDB`/`FLUSHALL` need `allow_flush`; `SCRIPT LOAD` makes `EVALSHA` work on every shard;
//! `INFO keyspace` is summed; `TIME`, `LASTSAVE`; redis-py's `scan_iter`; a Redis Cluster pool;
//! redis-cli `--scan`; a reload turning `allow_flush` on and off for clients already connected.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test helpers fail by panicking; tests wait on real processes

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use common::live::Live;
use common::*;

/// Sets `keys` through `client`, pipelined, each to its own name.
fn set_all(client: &mut Client, keys: &[String]) {
    for batch in keys.chunks(1000) {
        let cmds: Vec<Vec<u8>> = batch.iter().map(|k| encode(&["SET", k, k])).collect();
        assert!(client.pipeline(&cmds).iter().all(|r| *r == Reply::ok()));
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i}")).collect()
}

fn strings(reply: &Reply) -> Vec<Vec<u8>> {
    reply
        .items()
        .iter()
        .map(|item| match item {
            Reply::Bulk(Some(b)) => b.clone(),
            other => panic!("not a key: {other:?}"),
        })
        .collect()
}

/// One `SCAN` call: the next cursor and the keys.
fn scan_once(client: &mut Client, cursor: &str, options: &[&str]) -> (String, Vec<Vec<u8>>) {
    let mut args = vec!["SCAN", cursor];
    args.extend_from_slice(options);
    let reply = client.cmd(&args);
    let items = reply.items();
    assert_eq!(items.len(), 2, "{reply:?}");
    let Reply::Bulk(Some(next)) = &items[0] else {
        panic!("cursor {:?}", items[0]);
    };
    (String::from_utf8(next.clone()).unwrap(), strings(&items[1]))
}

/// A whole iteration: every key returned (with repeats) and the number of calls.
fn scan_all(client: &mut Client, options: &[&str]) -> (Vec<Vec<u8>>, usize) {
    let (mut cursor, mut keys, mut calls) = ("0".to_string(), Vec::new(), 0);
    loop {
        let (next, mut page) = scan_once(client, &cursor, options);
        keys.append(&mut page);
        calls += 1;
        assert!(calls < 100_000, "SCAN never ended");
        if next == "0" {
            return (keys, calls);
        }
        cursor = next;
    }
}

fn set_of(keys: Vec<Vec<u8>>) -> HashSet<Vec<u8>> {
    keys.into_iter().collect()
}

#[test]
fn scan_visits_all_10000_keys_over_4_shards_while_keys_are_added() {
    let setup = Setup::new(4, &[("hash", "md5")]);
    let mut c = setup.client();
    let keys = names("scan", 10_000);
    set_all(&mut c, &keys);
    for (i, shard) in setup.shards.iter().enumerate() {
        let n = shard.client().cmd(&["DBSIZE"]).int();
        assert!(n > 1000, "shard {i} holds {n} keys: the keys must spread");
    }
    // Another client keeps adding keys during the whole iteration.
    let stop = Arc::new(AtomicBool::new(false));
    let batches = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, batches) = (Arc::clone(&stop), Arc::clone(&batches));
        let mut w = setup.client();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let batch = batches.load(Ordering::Relaxed);
                set_all(&mut w, &names(&format!("added{batch}"), 50));
                batches.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // The writer is under way before the iteration starts, and runs until it ends.
    assert!(wait_until(START_TIMEOUT, || batches
        .load(Ordering::Relaxed)
        > 0));
    let before = batches.load(Ordering::Relaxed);
    let (seen, calls) = scan_all(&mut c, &["COUNT", "100"]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let added = (batches.load(Ordering::Relaxed) - before) * 50;
    let seen = set_of(seen);
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !seen.contains(k.as_bytes()))
        .collect();
    assert!(missing.is_empty(), "{} keys never returned", missing.len());
    // About 10,000 / 100 calls, plus one per shard boundary, far from one key per call.
    assert!((50..1000).contains(&calls), "{calls} calls");
    eprintln!(
        "SCAN: {calls} calls, {} distinct keys, {added} added meanwhile",
        seen.len()
    );
}

/// 4 shards behind the proxy and one direct Redis with the same data: strings, hashes, sets.
struct Twin {
    setup: Setup,
    reference: RedisServer,
    proxy: Client,
    direct: Client,
}

impl Twin {
    /// With `hash: md5`, which spreads short keys that differ in their last digits evenly
    /// (nutcracker's `fnv1a_64`, the default, puts most of 100 such keys on one shard).
    fn new(options: &[(&str, &str)]) -> Twin {
        let mut options = options.to_vec();
        options.push(("hash", "md5"));
        let setup = Setup::new(4, &options);
        let reference = RedisServer::start();
        let proxy = setup.client();
        let direct = reference.client();
        Twin {
            setup,
            reference,
            proxy,
            direct,
        }
    }

    /// `n` each of strings `s:i`, hashes `h:i` and sets `t:i` on both.
    fn populate(&mut self, n: usize) {
        let mut cmds = Vec::new();
        for i in 0..n {
            cmds.push(encode(&["SET", &format!("s:{i}"), "v"]));
            cmds.push(encode(&["HSET", &format!("h:{i}"), "f", "v"]));
            cmds.push(encode(&["SADD", &format!("t:{i}"), "m"]));
        }
        for client in [&mut self.proxy, &mut self.direct] {
            assert!(client.pipeline(&cmds).iter().all(|r| !r.is_error()));
        }
    }

    fn same(&mut self, args: &[&str]) -> Reply {
        let expected = self.direct.cmd(args);
        let got = self.proxy.cmd(args);
        assert_eq!(got, expected, "{args:?}");
        got
    }
}

#[test]
fn scan_keys_and_dbsize_cover_every_shard_under_every_distribution() {
    for distribution in ["ketama", "modula", "random", "slots"] {
        // slots hashes by CRC16 as Redis Cluster does (it takes no `hash`); the others by md5.
        let mut options = vec![("distribution", distribution)];
        if distribution != "slots" {
            options.push(("hash", "md5"));
        }
        let setup = Setup::new(3, &options);
        let mut c = setup.client();
        let keys = names(distribution, 1500);
        set_all(&mut c, &keys);
        let expected: HashSet<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        for (i, shard) in setup.shards.iter().enumerate() {
            assert!(
                !shard.keys().is_empty(),
                "{distribution}: shard {i} is empty"
            );
        }
        let (seen, _) = scan_all(&mut c, &["COUNT", "50"]);
        assert_eq!(set_of(seen), expected, "SCAN under {distribution}");
        assert_eq!(
            set_of(strings(&c.cmd(&["KEYS", "*"]))),
            expected,
            "KEYS under {distribution}"
        );
        assert_eq!(
            c.cmd(&["DBSIZE"]),
            Reply::Int(1500),
            "DBSIZE under {distribution}"
        );
    }
}

#[test]
fn scan_forwards_match_count_and_type() {
    let mut t = Twin::new(&[]);
    t.populate(300);
    for options in [
        &[][..],
        &["MATCH", "h:*"],
        &["MATCH", "s:1*", "COUNT", "7"],
        &["TYPE", "set"],
        &["MATCH", "t:2*", "TYPE", "set", "COUNT", "1000"],
        &["TYPE", "zset"],
    ] {
        let (through, _) = scan_all(&mut t.proxy, options);
        let (direct, _) = scan_all(&mut t.direct, options);
        assert_eq!(set_of(through), set_of(direct), "SCAN {options:?}");
    }
    // COUNT reaches the backend: one call with a large COUNT takes all of shard 0 and moves on
    // to shard 1 (cursor 1).
    let (next, page) = scan_once(&mut t.proxy, "0", &["COUNT", "100000"]);
    assert_eq!(next, "1");
    assert_eq!(set_of(page), t.setup.shards[0].keys());
    // Options the backend rejects are its error, as from one Redis.
    t.same(&["SCAN", "0", "COUNT", "0"]);
    t.same(&["SCAN", "0", "NOSUCH"]);
}

#[test]
fn redis_cli_scan_and_info_keyspace_through_the_proxy() {
    let t = Twin::new(&[]);
    let mut c = t.setup.client();
    set_all(&mut c, &names("cli", 500));
    let port = t.setup.proxy.addr().rsplit(':').next().unwrap().to_string();
    let listed = run_redis_cli(&["-p", &port, "--scan", "--pattern", "cli:*"]);
    let listed: HashSet<&str> = listed.lines().collect();
    let expected = names("cli", 500);
    assert_eq!(listed, expected.iter().map(String::as_str).collect());
    let info = run_redis_cli(&["-p", &port, "info", "keyspace"]);
    assert!(info.contains("db0:keys=500,expires=0"), "{info}");
    assert_eq!(run_redis_cli(&["-p", &port, "dbsize"]).trim(), "500");
}

#[test]
fn an_invalid_cursor_is_refused_as_redis_refuses_it() {
    let mut t = Twin::new(&[]);
    // Past 64 bits: one Redis refuses it, and so does the proxy (its backend part overflows).
    let huge = "340282366920938463463374607431768211455";
    for cursor in ["abc", "-1", "1x", huge] {
        let r = t.proxy.cmd(&["SCAN", cursor]);
        assert_eq!(r, Reply::Error("ERR invalid cursor".into()), "{cursor}");
    }
    t.same(&["SCAN", "abc"]);
    t.same(&["SCAN", huge]);
    assert_eq!(t.proxy.cmd(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn keys_is_the_union_of_every_shard_and_dbsize_the_sum() {
    let mut t = Twin::new(&[]);
    assert_eq!(t.same(&["DBSIZE"]), Reply::Int(0));
    t.same(&["KEYS", "*"]);
    t.populate(200);
    for pattern in ["*", "h:*", "s:1?", "t:[12]*", "nothing*"] {
        let direct = t.direct.cmd(&["KEYS", pattern]).sorted();
        let through = t.proxy.cmd(&["KEYS", pattern]).sorted();
        assert_eq!(through, direct, "KEYS {pattern}");
    }
    assert_eq!(t.same(&["DBSIZE"]), Reply::Int(600));
    t.same(&["KEYS"]);
    t.same(&["DBSIZE", "x"]);
}

#[test]
fn randomkey_is_an_existing_key_from_any_shard_and_nil_when_all_are_empty() {
    let mut t = Twin::new(&[]);
    assert_eq!(t.same(&["RANDOMKEY"]), Reply::nil());
    let keys = names("random", 400);
    set_all(&mut t.proxy, &keys);
    let mut shards = HashSet::new();
    for _ in 0..200 {
        let Reply::Bulk(Some(key)) = t.proxy.cmd(&["RANDOMKEY"]) else {
            panic!("RANDOMKEY gave no key");
        };
        assert!(keys.iter().any(|k| k.as_bytes() == key), "{}", show(&key));
        shards.insert(t.setup.shard_of(&key));
    }
    assert_eq!(shards.len(), 4, "every shard's keys come up");
}

#[test]
fn flushdb_and_flushall_are_refused_without_allow_flush() {
    let mut t = Twin::new(&[]);
    set_all(&mut t.proxy, &names("keep", 100));
    for cmd in [&["FLUSHDB"][..], &["FLUSHALL"], &["FLUSHALL", "ASYNC"]] {
        let r = t.proxy.cmd(cmd);
        let text = r.error_text();
        assert!(text.starts_with("ERR "), "{text}");
        assert!(text.contains("allow_flush: true"), "names the key: {text}");
    }
    assert_eq!(t.proxy.cmd(&["DBSIZE"]), Reply::Int(100));
}

#[test]
fn flushdb_and_flushall_empty_every_shard_with_allow_flush() {
    let mut t = Twin::new(&[("allow_flush", "true")]);
    set_all(&mut t.proxy, &names("gone", 100));
    t.same(&["FLUSHDB"]);
    assert_eq!(t.proxy.cmd(&["DBSIZE"]), Reply::Int(0));
    // FLUSHALL empties the pool's database and leaves the backends' others alone.
    set_all(&mut t.proxy, &names("gone", 100));
    let mut other_db = t.setup.shards[2].client();
    assert_eq!(other_db.cmd(&["SELECT", "1"]), Reply::ok());
    assert_eq!(other_db.cmd(&["SET", "elsewhere", "1"]), Reply::ok());
    t.same(&["FLUSHALL", "ASYNC"]);
    t.same(&["FLUSHALL", "SYNC"]);
    assert_eq!(t.proxy.cmd(&["DBSIZE"]), Reply::Int(0));
    for shard in &t.setup.shards {
        assert!(shard.keys().is_empty());
    }
    assert_eq!(other_db.cmd(&["GET", "elsewhere"]), Reply::bulk("1"));
    t.same(&["FLUSHDB", "NOW"]);
}

#[test]
fn script_load_makes_evalsha_work_on_keys_of_every_shard() {
    let mut t = Twin::new(&[]);
    let script = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
    let sha = t.same(&["SCRIPT", "LOAD", script]);
    let Reply::Bulk(Some(sha)) = sha else {
        panic!("sha {sha:?}");
    };
    let sha = String::from_utf8(sha).unwrap();
    for shard in &t.setup.shards {
        let exists = shard.client().cmd(&["SCRIPT", "EXISTS", &sha]);
        assert_eq!(exists, Reply::Array(Some(vec![Reply::Int(1)])));
    }
    let by_shard = t.setup.keys_by_shard("evalsha", 100);
    for keys in &by_shard {
        let key = String::from_utf8(keys[0].clone()).unwrap();
        assert_eq!(
            t.proxy.cmd(&["EVALSHA", &sha, "1", &key, "5"]),
            Reply::Int(6)
        );
    }
    let unknown = "0000000000000000000000000000000000000000";
    t.same(&["SCRIPT", "EXISTS", &sha, unknown]);
    // A script only one shard has does not exist for the pool.
    let lonely = "return 42";
    let Reply::Bulk(Some(only_one)) = t.setup.shards[1].client().cmd(&["SCRIPT", "LOAD", lonely])
    else {
        panic!("SCRIPT LOAD on one shard");
    };
    let only_one = String::from_utf8(only_one).unwrap();
    assert_eq!(
        t.proxy.cmd(&["SCRIPT", "EXISTS", &sha, &only_one]),
        Reply::Array(Some(vec![Reply::Int(1), Reply::Int(0)]))
    );
    t.same(&["SCRIPT", "FLUSH"]);
    t.same(&["SCRIPT", "EXISTS", &sha]);
    let key = String::from_utf8(by_shard[3][0].clone()).unwrap();
    let noscript = t.proxy.cmd(&["EVALSHA", &sha, "1", &key, "1"]);
    assert!(
        noscript.error_text().starts_with("NOSCRIPT"),
        "{noscript:?}"
    );
    t.same(&["SCRIPT", "FLUSH", "ASYNC"]);
    t.same(&["SCRIPT", "LOAD", "return +"]);
    let kill = t.proxy.cmd(&["SCRIPT", "KILL"]);
    assert_eq!(kill.error_text(), "ERR unsupported command 'script kill'");
    // A script without keys has no shard to run on.
    let keyless = t.proxy.cmd(&["EVAL", "return 1", "0"]);
    assert!(keyless.error_text().starts_with("ERR unsupported command"));
}

/// A field of an `INFO keyspace` db0 line (0 when there is no such line).
fn keyspace_field(reply: &Reply, field: &str) -> u64 {
    let Reply::Bulk(Some(text)) = reply else {
        panic!("INFO keyspace {reply:?}");
    };
    let text = String::from_utf8_lossy(text).into_owned();
    assert!(text.starts_with("# Keyspace\r\n"), "{text:?}");
    text.lines()
        .find_map(|line| line.strip_prefix("db0:"))
        .and_then(|line| {
            line.split(',').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                (name == field).then(|| value.parse().unwrap())
            })
        })
        .unwrap_or(0)
}

#[test]
fn info_keyspace_sums_keys_and_expires_over_the_shards() {
    let mut t = Twin::new(&[]);
    assert_eq!(t.same(&["INFO", "keyspace"]), Reply::bulk("# Keyspace\r\n"));
    t.populate(100);
    let mut cmds = Vec::new();
    for i in 0..120 {
        cmds.push(encode(&["EXPIRE", &format!("s:{i}"), "1000"]));
    }
    for client in [&mut t.proxy, &mut t.direct] {
        client.pipeline(&cmds);
    }
    let direct = t.direct.cmd(&["INFO", "keyspace"]);
    let through = t.proxy.cmd(&["info", "KEYSPACE"]);
    for field in ["keys", "expires"] {
        assert_eq!(
            keyspace_field(&through, field),
            keyspace_field(&direct, field),
            "{field}"
        );
    }
    assert_eq!(keyspace_field(&through, "keys"), 300);
    assert_eq!(keyspace_field(&through, "expires"), 100);
    assert!(keyspace_field(&through, "avg_ttl") <= 1_000_000);
    // Every other INFO stays Keyway's own.
    let Reply::Bulk(Some(info)) = t.proxy.cmd(&["INFO"]) else {
        panic!("INFO");
    };
    assert!(String::from_utf8_lossy(&info).contains("keyway_version:"));
}

#[test]
fn time_comes_from_a_shard_and_lastsave_is_the_oldest() {
    let mut t = Twin::new(&[]);
    let time = t.proxy.cmd(&["TIME"]);
    let parts: Vec<i64> = strings(&time)
        .iter()
        .map(|p| String::from_utf8_lossy(p).parse().unwrap())
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(parts.len(), 2);
    assert!((parts[0] - now).abs() < 5, "{parts:?} vs {now}");
    assert!((0..1_000_000).contains(&parts[1]));
    let oldest = t
        .setup
        .shards
        .iter()
        .map(|s| s.client().cmd(&["LASTSAVE"]).int())
        .min()
        .unwrap();
    assert_eq!(t.proxy.cmd(&["LASTSAVE"]), Reply::Int(oldest));
    t.same(&["TIME", "x"]);
    // WAIT is refused: it would block a shared backend connection.
    let wait = t.proxy.cmd(&["WAIT", "0", "0"]);
    assert!(
        wait.error_text().starts_with("ERR unsupported command"),
        "{wait:?}"
    );
    drop(t.reference);
}

const SCAN_ITER_SCRIPT: &str = r#"
import sys
import redis
host, port, protocol = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = redis.Redis(host=host, port=port, protocol=protocol)
expected = set()
p = r.pipeline(transaction=False)
for i in range(2000):
    key = "py:scan:%d" % i
    expected.add(key.encode())
    p.set(key, i)
    p.hset("py:hash:%d" % i, "f", i)
p.execute()
got = set(r.scan_iter(match="py:scan:*", count=50))
assert got == expected, (len(got), len(expected))
hashes = set(r.scan_iter(_type="HASH", count=500))
assert len(hashes) == 2000 and all(h.startswith(b"py:hash:") for h in hashes), len(hashes)
assert r.dbsize() == 4000, r.dbsize()
sha = r.script_load("return redis.call('GET', KEYS[1])")
assert all(r.evalsha(sha, 1, "py:scan:%d" % i) == str(i).encode() for i in range(0, 2000, 97))
assert r.script_exists(sha) == [True]
assert len(r.keys("py:scan:1*")) == 1111
print("redis-py %s protocol %d scan_iter OK" % (redis.__version__, protocol))
"#;

#[test]
fn redis_py_scan_iter_over_4_shards_in_resp2_and_resp3() {
    for protocol in ["2", "3"] {
        let setup = Setup::new(4, &[("hash", "md5")]);
        let stdout = setup.proxy.run_redis_py(SCAN_ITER_SCRIPT, protocol);
        assert!(
            stdout.contains(&format!("protocol {protocol} scan_iter OK")),
            "{stdout}"
        );
    }
}

#[test]
fn a_cluster_pool_scans_and_counts_its_masters_and_loads_scripts_on_every_node() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = cluster.keyway("  timeout: 5000\n  allow_flush: true\n  read_from: replica\n");
    let mut c = proxy.client();
    let keys = names("cl", 3000);
    set_all(&mut c, &keys);
    let (seen, _) = scan_all(&mut c, &["COUNT", "200"]);
    assert_eq!(
        seen.len(),
        3000,
        "each key once: masters only, no resharding meanwhile"
    );
    assert_eq!(
        set_of(seen),
        keys.iter().map(|k| k.as_bytes().to_vec()).collect()
    );
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(3000));
    assert_eq!(c.cmd(&["KEYS", "cl:1*"]).items().len(), 1111);
    let Reply::Bulk(Some(sha)) = c.cmd(&["SCRIPT", "LOAD", "return {KEYS[1], ARGV[1]}"]) else {
        panic!("SCRIPT LOAD");
    };
    let sha = String::from_utf8(sha).unwrap();
    // EVALSHA goes to the key's master, the read-only EVALSHA_RO to a replica: both find it.
    for key in keys.iter().step_by(101) {
        let expected = Reply::Array(Some(vec![Reply::bulk(key), Reply::bulk("arg")]));
        assert_eq!(
            c.cmd(&["EVALSHA", &sha, "1", key, "arg"]),
            expected,
            "{key}"
        );
        assert_eq!(
            c.cmd(&["EVALSHA_RO", &sha, "1", key, "arg"]),
            expected,
            "{key}"
        );
    }
    let replica_calls: usize = cluster
        .view()
        .iter()
        .filter(|n| !n.master)
        .filter(|n| node_info(n.port, &["INFO", "commandstats"]).contains("cmdstat_evalsha_ro:"))
        .count();
    assert!(replica_calls > 0, "no replica ran EVALSHA_RO");
    assert_eq!(
        c.cmd(&["SCRIPT", "EXISTS", &sha]),
        Reply::Array(Some(vec![Reply::Int(1)]))
    );
    assert_eq!(c.cmd(&["FLUSHDB"]), Reply::ok());
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(0));
    assert_eq!(c.cmd(&["SCAN", "0"]).items()[1], Reply::Array(Some(vec![])));
}

#[test]
fn a_reload_turning_allow_flush_on_lets_connected_clients_flush() {
    let shards = start_redis_servers(2);
    let port = free_port();
    let yaml = |extra: &str| {
        let lines: Vec<String> = shards
            .iter()
            .enumerate()
            .map(|(i, s)| server_line(s, 1, Some(&format!("s{i}"))))
            .collect();
        let mut y = pool_yaml(port, &lines, &[("timeout", "5000")]);
        y.push_str(extra);
        y
    };
    let live = Live::start(&yaml(""), port, 1);
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    set_all(&mut c, &names("reload", 50));
    assert!(c.cmd(&["FLUSHDB"]).error_text().contains("allow_flush"));
    let (status, body) = live.reload(&yaml("  allow_flush: true\n"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("allow_flush"),
        "the reload names the key: {body}"
    );
    assert_eq!(c.cmd(&["FLUSHDB"]), Reply::ok());
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(0));
    let (status, body) = live.reload(&yaml(""));
    assert_eq!(status, 200, "{body}");
    assert!(c.cmd(&["FLUSHALL"]).is_error());
}
