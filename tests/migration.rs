//! Growing a pool without losing the cache: a pool of 3 real backends holding 20,000 cached
//! keys is reloaded to 4 under a 50-client read-mostly workload. With `migration: {
//! read_through: true }` reads that miss on a key's new owner are served from its old one
//! (hit rate ≥ 99%); without it about a quarter of the keys are lost (hit rate markedly
//! lower). In both, no read returns a value that a write acknowledged before the read began
//! had replaced. Redis and memcached alike; the hit-rate curve is printed (`--nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::live::Live;
use common::*;

const KEYS: usize = 20_000;
const CLIENTS: usize = 50;
/// Operations per client: 20,000 in all, one in 20 a write.
const OPS: usize = 400;
const WRITE_EVERY: u64 = 20;
/// Generous bound on the whole workload, against hangs.
const WORKLOAD_LIMIT: Duration = Duration::from_secs(120);

/// A protocol's client as the workload uses it.
trait Cache: Send {
    fn set(&mut self, key: &str, value: &str);
    fn get(&mut self, key: &str) -> Option<String>;
}

impl Cache for Client {
    fn set(&mut self, key: &str, value: &str) {
        assert_eq!(self.cmd(&["SET", key, value]), Reply::ok());
    }
    fn get(&mut self, key: &str) -> Option<String> {
        match self.cmd(&["GET", key]) {
            Reply::Bulk(Some(value)) => Some(String::from_utf8(value).unwrap()),
            Reply::Bulk(None) => None,
            other => panic!("GET {key}: {other:?}"),
        }
    }
}

impl Cache for McClient {
    fn set(&mut self, key: &str, value: &str) {
        let request = format!("set {key} 5 0 {}\r\n{value}\r\n", value.len());
        assert_eq!(self.request(request.as_bytes()), b"STORED\r\n");
    }
    fn get(&mut self, key: &str) -> Option<String> {
        let reply = self.request(format!("get {key}\r\n").as_bytes());
        let values = parse_values(&reply);
        assert!(
            reply == b"END\r\n" || reply.starts_with(format!("VALUE {key} 5 ").as_bytes()),
            "get {key}: {}",
            show(&reply)
        );
        values
            .into_iter()
            .next()
            .map(|(_, v)| String::from_utf8(v).unwrap())
    }
}

/// xorshift64*: deterministic keys without a rand dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn key(n: usize) -> String {
    format!("mig:{n}")
}

/// The version a value carries: `v<version>:<key>`.
fn version(value: &str) -> u64 {
    value[1..value.find(':').unwrap()].parse().unwrap()
}

/// What the workload saw.
struct Run {
    reads: usize,
    hits: usize,
    /// Hit rate in ten equal spans of the run's time.
    curve: Vec<f64>,
}

/// 50 clients, 400 operations each (one in 20 a write of a newer version), right after the
/// reload. Each read checks that it sees at least the version acknowledged before it began.
fn workload<C: Cache + 'static>(connect: impl Fn() -> C) -> Run {
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let clock = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|thread| {
            let mut client = connect();
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (thread as u64 + 1);
                let mut reads = Vec::with_capacity(OPS);
                for op in 0..OPS {
                    if clock.elapsed() > WORKLOAD_LIMIT {
                        break;
                    }
                    let n = (next(&mut rng) % KEYS as u64) as usize;
                    let key = key(n);
                    if next(&mut rng) % WRITE_EVERY == 0 {
                        // Versions are unique per writer and op, and grow.
                        let version = (op as u64 + 1) * 1000 + thread as u64 + 1;
                        client.set(&key, &format!("v{version}:{key}"));
                        acked[n].fetch_max(version, Ordering::SeqCst);
                    } else {
                        let floor = acked[n].load(Ordering::SeqCst);
                        let value = client.get(&key);
                        if let Some(value) = &value {
                            assert!(value.ends_with(&key), "{key} read {value}");
                            assert!(
                                version(value) >= floor,
                                "{key}: read {value} after version {floor} was acknowledged"
                            );
                        }
                        reads.push((clock.elapsed(), value.is_some()));
                    }
                }
                reads
            })
        })
        .collect();
    let reads: Vec<(Duration, bool)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let end = reads.iter().map(|r| r.0).max().unwrap_or_default();
    let span = end.as_secs_f64() / 10.0;
    let curve = (0..10)
        .map(|bucket| {
            let within: Vec<bool> = reads
                .iter()
                .filter(|(at, _)| {
                    let b = ((at.as_secs_f64() / span.max(1e-9)) as usize).min(9);
                    b == bucket
                })
                .map(|r| r.1)
                .collect();
            within.iter().filter(|h| **h).count() as f64 / within.len().max(1) as f64
        })
        .collect();
    Run {
        reads: reads.len(),
        hits: reads.iter().filter(|r| r.1).count(),
        curve,
    }
}

impl Run {
    fn rate(&self) -> f64 {
        self.hits as f64 / self.reads.max(1) as f64
    }

    fn show(&self, what: &str) {
        let curve: Vec<String> = self
            .curve
            .iter()
            .map(|r| format!("{:.1}", r * 100.0))
            .collect();
        eprintln!(
            "{what}: {} reads, hit rate {:.2}%; by tenth of the run: {}",
            self.reads,
            self.rate() * 100.0,
            curve.join(" ")
        );
    }
}

fn pool(port: u16, redis: bool, servers: &[String], migration: Option<&str>) -> String {
    // md5 spreads the test's similar keys evenly (fnv1a_64, the default, bunches `mig:N`).
    let mut yaml = format!("alpha:\n  listen: 127.0.0.1:{port}\n  hash: md5\n  timeout: 5000\n");
    if redis {
        yaml.push_str("  redis: true\n");
    }
    if let Some(migration) = migration {
        yaml.push_str(&format!("  migration: {migration}\n"));
    }
    yaml.push_str("  servers:\n");
    for server in servers {
        yaml.push_str(&format!("   - {server}\n"));
    }
    yaml
}

fn metric(live: &Live, name: &str) -> f64 {
    live.get("/metrics")
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}{{pool=\"alpha\"}} ")))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// Fills 3 backends through Keyway, reloads to 4 (`migration` or none), runs the workload.
fn grow<C: Cache + 'static>(
    redis: bool,
    lines: &[String],
    migration: Option<&str>,
    connect: impl Fn(&str) -> C,
) -> (Run, Live) {
    let (live, port) =
        Live::start_on_free_port(|port| pool(port, redis, &lines[..3], migration), 2);
    let addr = format!("127.0.0.1:{port}");
    let mut filler = connect(&addr);
    for n in 0..KEYS {
        let key = key(n);
        filler.set(&key, &format!("v0:{key}"));
    }
    let (status, body) = live.reload(&pool(port, redis, lines, migration));
    assert_eq!(status, 200, "{body}");
    let run = workload(|| connect(&addr));
    (run, live)
}

/// Named servers: their ring points, hence which keys move, are the same whatever the ports.
fn redis_lines(backends: &[RedisServer]) -> Vec<String> {
    backends
        .iter()
        .enumerate()
        .map(|(i, b)| server_line(b, 1, Some(&format!("cache-{i}"))))
        .collect()
}

fn memcached_lines(backends: &[MemcachedServer]) -> Vec<String> {
    backends
        .iter()
        .enumerate()
        .map(|(i, b)| b.server_line(1, Some(&format!("cache-{i}"))))
        .collect()
}

#[test]
fn redis_pool_grown_from_3_to_4_keeps_its_hit_rate_with_read_through() {
    let backends = start_redis_servers(4);
    let lines = redis_lines(&backends);
    let mode = "{ read_through: true, window: 30m, copy: true }";
    let (run, live) = grow(true, &lines, Some(mode), Client::connect);
    run.show("redis, read-through + copy");
    assert!(run.rate() >= 0.99, "hit rate {:.4}", run.rate());
    let served = metric(&live, "keyway_migration_old_owner_hits_total");
    let copied = metric(&live, "keyway_migration_copied_total");
    assert!(served > 1000.0, "served from old owners: {served}");
    assert!(
        copied > 1000.0 && copied <= served,
        "copied {copied} of {served}"
    );
    // The copies are on the new backend, with the TTL they had (none here).
    let moved = backends[3].keys();
    assert!(
        moved.len() as f64 >= copied * 0.99,
        "{} on the new backend",
        moved.len()
    );
    let some = moved.iter().next().unwrap().clone();
    assert_eq!(
        backends[3].client().cmd(&[b"PTTL".as_slice(), &some]),
        Reply::Int(-1)
    );
}

#[test]
fn redis_pool_grown_from_3_to_4_loses_a_quarter_of_its_keys_without_read_through() {
    let backends = start_redis_servers(4);
    let lines = redis_lines(&backends);
    let (run, _live) = grow(true, &lines, None, Client::connect);
    run.show("redis, no migration mode");
    assert!(
        (0.5..0.92).contains(&run.rate()),
        "hit rate {:.4}",
        run.rate()
    );
}

#[test]
fn memcached_pool_grown_from_3_to_4_keeps_its_hit_rate_with_read_through() {
    let backends = start_memcached_servers(4);
    let lines = memcached_lines(&backends);
    let mode = "{ read_through: true, window: 30m, copy: true }";
    let (run, live) = grow(false, &lines, Some(mode), McClient::connect);
    run.show("memcached, read-through + copy");
    assert!(run.rate() >= 0.99, "hit rate {:.4}", run.rate());
    let copied = metric(&live, "keyway_migration_copied_total");
    assert!(copied > 1000.0, "copied {copied}");
    // A copy keeps the value's flags (5, set by the workload's writes and the fill).
    let keys: Vec<Vec<u8>> = (0..KEYS).map(|n| key(n).into_bytes()).collect();
    let held = backends[3].values(&keys);
    assert!(
        held.len() as f64 >= copied * 0.99,
        "{} on the new backend",
        held.len()
    );
    let reply = backends[3]
        .client()
        .request(&[b"get ".as_slice(), &held[0].0, b"\r\n"].concat());
    assert!(
        reply.starts_with(format!("VALUE {} 5 ", show(&held[0].0)).as_bytes()),
        "{}",
        show(&reply)
    );
}

#[test]
fn memcached_pool_grown_from_3_to_4_loses_a_quarter_of_its_keys_without_read_through() {
    let backends = start_memcached_servers(4);
    let lines = memcached_lines(&backends);
    let (run, _live) = grow(false, &lines, None, McClient::connect);
    run.show("memcached, no migration mode");
    assert!(
        (0.5..0.92).contains(&run.rate()),
        "hit rate {:.4}",
        run.rate()
    );
}

/// Reloads `lines[..3]` → `lines` under `mode` with `count` keys written first; the keys a
/// Keyway on the new servers (without the mode) misses are the ones that moved.
fn grown_with_moved_keys(
    backends: &[RedisServer],
    mode: &str,
    count: usize,
) -> (Live, Client, Vec<String>, Vec<String>) {
    let lines = redis_lines(backends);
    let (live, port) =
        Live::start_on_free_port(|port| pool(port, true, &lines[..3], Some(mode)), 2);
    let mut client = Client::connect(&format!("127.0.0.1:{port}"));
    let keys: Vec<String> = (0..count).map(key).collect();
    for key in &keys {
        client.set(key, &format!("v0:{key}"));
    }
    let probe = Proxy::start_on_free_port(ProxyKind::Keyway, |p| {
        pool_yaml(p, &lines, &[("hash", "md5")])
    });
    let mut probe = probe.client();
    let moved: Vec<String> = keys
        .iter()
        .filter(|k| probe.cmd(&["GET", k.as_str()]) == Reply::nil())
        .cloned()
        .collect();
    let (status, body) = live.reload(&pool(port, true, &lines, Some(mode)));
    assert_eq!(status, 200, "{body}");
    (live, client, keys, moved)
}

/// Writes and deletes during the window delete the old copy (so it cannot come back), and a
/// `DEL` counts the copy it deleted.
#[test]
fn writes_and_deletes_remove_the_old_copy() {
    let backends = start_redis_servers(4);
    let mode = "{ read_through: true, window: 30m }";
    let (live, mut client, keys, moved) = grown_with_moved_keys(&backends, mode, 1000);
    assert!(moved.len() > 41, "{} keys moved", moved.len());
    // Every key reads through; nothing is copied (copy is off).
    for key in &keys {
        assert_eq!(client.get(key), Some(format!("v0:{key}")));
    }
    assert!(backends[3].keys().is_empty());
    let served = metric(&live, "keyway_migration_old_owner_hits_total") as usize;
    assert_eq!(served, moved.len());
    let pools = live.get("/pools");
    assert!(
        pools.contains("\"migration\": {\"seconds_left\": "),
        "{pools}"
    );
    let holders = |key: &str| -> Vec<usize> {
        (0..4)
            .filter(|&b| backends[b].client().cmd(&["EXISTS", key]) == Reply::Int(1))
            .collect()
    };
    for key in &moved[..20] {
        client.set(key, &format!("v1:{key}"));
        assert_eq!(holders(key), [3], "{key}: the old copy is gone");
        assert_eq!(client.get(key), Some(format!("v1:{key}")));
    }
    for key in &moved[20..40] {
        assert_eq!(client.cmd(&["DEL", key.as_str()]), Reply::Int(1), "{key}");
        assert!(holders(key).is_empty(), "{key}");
        assert_eq!(client.get(key), None, "{key} came back after DEL");
    }
}

/// A write that depends on what the key holds moves the key to its new owner first: a
/// counter goes on from its value, an append appends, a hash keeps its fields, `EXPIRE` finds
/// the key, `SET NX` sees it; each leaves the key on its new owner only. Pipelined behind
/// such a write, a read sees it.
#[test]
fn writes_that_depend_on_the_value_move_the_key_first() {
    let backends = start_redis_servers(4);
    let mode = "{ read_through: true, window: 30m }";
    let (_live, mut client, _keys, moved) = grown_with_moved_keys(&backends, mode, 1000);
    assert!(moved.len() > 60, "{} keys moved", moved.len());
    let holders = |key: &str| -> Vec<usize> {
        (0..4)
            .filter(|&b| backends[b].client().cmd(&["EXISTS", key]) == Reply::Int(1))
            .collect()
    };
    // Counters and hashes are set up on the old owner itself, as before the change.
    let on_old_owner = |key: &str, args: &[&str]| {
        let old = holders(key);
        assert_eq!(old.len(), 1, "{key} on {old:?}");
        let mut direct = backends[old[0]].client();
        direct.cmd(&["DEL", key]);
        assert!(!direct.cmd(args).is_error(), "{args:?}");
    };
    for key in &moved[..10] {
        on_old_owner(key, &["SET", key, "41"]);
        assert_eq!(client.cmd(&["INCR", key.as_str()]), Reply::Int(42), "{key}");
        assert_eq!(holders(key), [3], "{key}: moved, the old copy gone");
        assert_eq!(client.get(key), Some("42".into()));
    }
    for key in &moved[10..20] {
        let appended = client.cmd(&["APPEND", key.as_str(), "+"]);
        assert_eq!(appended, Reply::Int(format!("v0:{key}+").len() as i64));
        assert_eq!(client.get(key), Some(format!("v0:{key}+")));
        assert_eq!(holders(key), [3]);
    }
    for key in &moved[20..30] {
        on_old_owner(key, &["HSET", key, "a", "1"]);
        assert_eq!(client.cmd(&["HSET", key.as_str(), "b", "2"]), Reply::Int(1));
        let all = client.cmd(&["HGETALL", key.as_str()]);
        assert_eq!(all.items().len(), 4, "{key}: {all:?}");
    }
    for key in &moved[30..40] {
        assert_eq!(client.cmd(&["EXPIRE", key.as_str(), "600"]), Reply::Int(1));
        assert_eq!(client.get(key), Some(format!("v0:{key}")));
        let ttl = client.cmd(&["TTL", key.as_str()]).int();
        assert!((1..=600).contains(&ttl), "{key}: TTL {ttl}");
    }
    for key in &moved[40..50] {
        let set = client.cmd(&["SET", key.as_str(), "new", "NX"]);
        assert_eq!(set, Reply::nil(), "{key}: SET NX saw no key");
        assert_eq!(client.get(key), Some(format!("v0:{key}")));
    }
    for key in &moved[50..60] {
        on_old_owner(key, &["SET", key, "7"]);
        let replies = client.pipeline(&[encode(&["INCR", key]), encode(&["GET", key])]);
        assert_eq!(replies, [Reply::Int(8), Reply::bulk("8")], "{key}");
    }
}

/// The same for memcached: `incr`, `append`, `add` and `touch` of a key still on its old
/// owner act on its value there, moved first.
#[test]
fn memcached_writes_that_depend_on_the_value_move_the_key_first() {
    let backends = start_memcached_servers(4);
    let lines = memcached_lines(&backends);
    let mode = Some("{ read_through: true, window: 30m }");
    let (live, port) = Live::start_on_free_port(|port| pool(port, false, &lines[..3], mode), 2);
    let mut client = McClient::connect(&format!("127.0.0.1:{port}"));
    let keys: Vec<String> = (0..600).map(key).collect();
    for key in &keys {
        client.set(key, "10");
    }
    let (_probe, probe_port) = Live::start_on_free_port(|p| pool(p, false, &lines, None), 1);
    let mut probe = McClient::connect(&format!("127.0.0.1:{probe_port}"));
    let moved: Vec<String> = keys
        .iter()
        .filter(|k| probe.get(k).is_none())
        .cloned()
        .collect();
    assert!(moved.len() > 40, "{} keys moved", moved.len());
    let (status, body) = live.reload(&pool(port, false, &lines, mode));
    assert_eq!(status, 200, "{body}");
    let only_on_new = |key: &str| {
        let holding: Vec<usize> = (0..4)
            .filter(|&b| backends[b].get(key.as_bytes()).is_some())
            .collect();
        assert_eq!(holding, [3], "{key}");
    };
    for key in &moved[..10] {
        let reply = client.request(format!("incr {key} 5\r\n").as_bytes());
        assert_eq!(show(&reply), "15\\r\\n", "{key}");
        only_on_new(key);
    }
    for key in &moved[10..20] {
        let reply = client.request(format!("append {key} 0 0 1\r\n+\r\n").as_bytes());
        assert_eq!(reply, b"STORED\r\n", "{key}");
        assert_eq!(client.get(key), Some("10+".into()));
        only_on_new(key);
    }
    for key in &moved[20..30] {
        let reply = client.request(format!("add {key} 0 0 1\r\nx\r\n").as_bytes());
        assert_eq!(reply, b"NOT_STORED\r\n", "{key}: add saw no key");
        assert_eq!(client.get(key), Some("10".into()));
    }
    for key in &moved[30..40] {
        let reply = client.request(format!("touch {key} 600\r\n").as_bytes());
        assert_eq!(reply, b"TOUCHED\r\n", "{key}");
        assert_eq!(client.get(key), Some("10".into()));
        only_on_new(key);
    }
}

/// When the window ends the old owners are no longer read (nor their map kept).
#[test]
fn the_window_ends_on_time() {
    let backends = start_redis_servers(4);
    let mode = "{ read_through: true, window: 5s }";
    let (live, mut client, _keys, moved) = grown_with_moved_keys(&backends, mode, 300);
    let untouched = &moved[0];
    // Read right after the reload (well within the window), then until the window ends.
    assert_eq!(client.get(untouched), Some(format!("v0:{untouched}")));
    let ended = wait_until(Duration::from_secs(30), || client.get(untouched).is_none());
    assert!(ended, "the window of 5s did not end");
    assert!(!live.get("/pools").contains("\"migration\""));
    let on_old =
        (0..3).any(|b| backends[b].client().cmd(&["EXISTS", untouched.as_str()]) == Reply::Int(1));
    assert!(on_old, "the old copy is left where it was");
}

/// Shrinking: the backend a reload removes stays readable through the window (its keys are
/// served from it), and a write moves a key off it.
#[test]
fn a_removed_backend_is_read_through_until_the_window_ends() {
    let backends = start_redis_servers(4);
    let lines = redis_lines(&backends);
    let mode = Some("{ read_through: true, window: 30m, copy: true }");
    let (live, port) = Live::start_on_free_port(|port| pool(port, true, &lines, mode), 2);
    let mut client = Client::connect(&format!("127.0.0.1:{port}"));
    let keys: Vec<String> = (0..1000).map(key).collect();
    for key in &keys {
        client.set(key, &format!("v0:{key}"));
    }
    let on_removed: Vec<Vec<u8>> = backends[3].keys().into_iter().collect();
    assert!(
        on_removed.len() > 20,
        "{} keys on the 4th",
        on_removed.len()
    );
    // One of them expires: its copy keeps the TTL.
    let expiring = on_removed[1].clone();
    let ttl = [b"PEXPIRE".as_slice(), &expiring, b"600000"];
    assert_eq!(backends[3].client().cmd(&ttl), Reply::Int(1));
    let (status, body) = live.reload(&pool(port, true, &lines[..3], mode));
    assert_eq!(status, 200, "{body}");
    for key in &keys {
        assert_eq!(client.get(key), Some(format!("v0:{key}")), "{key}");
    }
    let served = metric(&live, "keyway_migration_old_owner_hits_total") as usize;
    assert!(
        served >= on_removed.len(),
        "{served} served from old owners"
    );
    // Each read copied its key off the removed backend (which keeps its copy until written).
    let copied = wait_until(Duration::from_secs(10), || {
        on_removed.iter().all(|k| {
            backends[..3]
                .iter()
                .any(|b| b.client().cmd(&[b"EXISTS".as_slice(), k]) == Reply::Int(1))
        })
    });
    assert!(
        copied,
        "the removed backend's keys were copied to the remaining ones"
    );
    let copy_ttl = backends[..3]
        .iter()
        .map(|b| b.client().cmd(&[b"PTTL".as_slice(), &expiring]))
        .find(|r| *r != Reply::Int(-2))
        .unwrap()
        .int();
    assert!(
        (1..=600_000).contains(&copy_ttl),
        "the copy's TTL: {copy_ttl} ms"
    );
    let key = String::from_utf8(on_removed[0].clone()).unwrap();
    client.set(&key, &format!("v1:{key}"));
    assert_eq!(
        backends[3].client().cmd(&["EXISTS", key.as_str()]),
        Reply::Int(0)
    );
    assert_eq!(client.get(&key), Some(format!("v1:{key}")));
}
