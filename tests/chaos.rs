//! Chaos under load: 50 clients SET then GET-verify their own keys (the two pipelined in one
//! write) through Keyway while 4 real
//! redis-servers are killed (-9), frozen (SIGSTOP), resumed and restarted at random and the
//! config is reloaded (SIGHUP, POST /reload). Every reply is checked: it must be the right one
//! or an explicit error reply — never another request's reply (a mismatch), never missing, never
//! of the wrong type — and afterwards every acknowledged write on a backend that never died
//! must read back from that backend.
//!
//! The same chaos runs a second time with one client, whose lone requests its session writes
//! to the backend socket itself (the first of each pair; the second is queued behind it).
//!
//! `KEYWAY_CHAOS_SECS` sets the duration (default 12 s here, 6 s for the one client;
//! `scripts/chaos.sh` runs 60 s each).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test helpers fail by panicking

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const BACKENDS: usize = 4;
/// Backends the chaos only freezes, never kills: their acknowledged writes must all survive.
const NEVER_KILLED: std::ops::Range<usize> = 2..4;

/// What one client's key has seen.
#[derive(Default)]
struct KeyState {
    /// The last value whose SET was acknowledged (`+OK`), and the kill count of the key's
    /// backend when it was sent.
    acked: Option<(String, u64)>,
    /// Values whose SET got an error reply: they may or may not have been applied, even
    /// after a later acknowledged one (a frozen backend runs a recycled connection's
    /// requests when it resumes).
    uncertain: Vec<String>,
    /// Every acknowledged value so far (to tell a stale reply from a foreign one).
    history: Vec<String>,
}

/// Counts of one run.
#[derive(Default, Debug)]
struct Tally {
    requests: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    /// A reply that belongs to another request (a value this client never wrote to this key).
    mismatched: Vec<String>,
    /// An older acknowledged value where a newer one was acknowledged.
    stale: Vec<String>,
    /// Nil where an acknowledged write should be and the backend was never killed since.
    lost: Vec<String>,
    /// A reply neither right nor an error (wrong type), or none at all.
    unexpected: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.requests += other.requests;
        self.ok += other.ok;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.mismatched.extend(other.mismatched);
        self.stale.extend(other.stale);
        self.lost.extend(other.lost);
        self.unexpected.extend(other.unexpected);
    }

    fn error(&mut self, text: &str) {
        *self.errors.entry(text.to_string()).or_default() += 1;
    }
}

/// A small deterministic generator: no dependency, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One client's loop: SET a fresh value on one of its keys, GET it back, check both replies.
fn client_loop(
    addr: String,
    id: usize,
    keys: Vec<(Vec<u8>, usize)>,
    kills: Arc<Vec<AtomicU64>>,
    stop: Arc<AtomicBool>,
) -> (Tally, HashMap<Vec<u8>, KeyState>) {
    let mut tally = Tally::default();
    let mut states: HashMap<Vec<u8>, KeyState> = HashMap::new();
    let mut c = Client::connect(&addr);
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let (key, shard) = &keys[seq as usize % keys.len()];
        seq += 1;
        let value = format!("{id}:{seq}");
        let epoch = kills[*shard].load(Ordering::SeqCst);
        let state = states.entry(key.clone()).or_default();
        // SET and GET in one write: two requests in flight per client, so a reply paired with
        // the wrong request would show.
        tally.requests += 2;
        let mut pair = encode(&[b"SET".as_slice(), key, value.as_bytes()]);
        pair.extend(encode(&[b"GET".as_slice(), key]));
        c.send_raw(&pair);
        let mut failed = false;
        match c.try_read_reply() {
            Ok(Reply::Simple(s)) if s == "OK" => {
                tally.ok += 1;
                state.acked = Some((value.clone(), epoch));
                state.history.push(value.clone());
            }
            Ok(Reply::Error(e)) => {
                tally.error(&e);
                state.uncertain.push(value.clone());
                failed = true;
            }
            Ok(other) => tally
                .unexpected
                .push(format!("SET {} -> {other:?}", show(key))),
            Err(e) => {
                tally
                    .unexpected
                    .push(format!("SET {}: no reply: {e:?}", show(key)));
                return (tally, states);
            }
        }
        match c.try_read_reply() {
            Ok(Reply::Error(e)) => {
                tally.error(&e);
                failed = true;
            }
            Ok(Reply::Bulk(got)) => {
                tally.ok += 1;
                let current = states.get(key).expect("inserted above");
                judge(
                    &mut tally,
                    key,
                    got,
                    current,
                    kills[*shard].load(Ordering::SeqCst),
                );
            }
            Ok(other) => tally
                .unexpected
                .push(format!("GET {} -> {other:?}", show(key))),
            Err(e) => {
                tally
                    .unexpected
                    .push(format!("GET {}: no reply: {e:?}", show(key)));
                return (tally, states);
            }
        }
        if failed {
            // A down backend answers at once: don't spin on it.
            thread::sleep(Duration::from_millis(10));
        }
    }
    (tally, states)
}

/// Checks a GET's bulk reply against what the client knows of the key.
fn judge(tally: &mut Tally, key: &[u8], got: Option<Vec<u8>>, state: &KeyState, kills: u64) {
    let shown = show(key);
    let Some(got) = got else {
        match &state.acked {
            // No SET deletes: nil is right only if the backend lost its data since.
            Some((value, epoch)) if *epoch == kills => tally
                .lost
                .push(format!("GET {shown} -> nil, {value} was acknowledged")),
            _ => {}
        }
        return;
    };
    let got = String::from_utf8_lossy(&got).into_owned();
    if state.acked.as_ref().is_some_and(|(value, _)| *value == got)
        || state.uncertain.contains(&got)
    {
        return;
    }
    if state.history.contains(&got) {
        tally.stale.push(format!(
            "GET {shown} -> {got}, newer acknowledged: {:?}",
            state.acked
        ));
    } else {
        tally
            .mismatched
            .push(format!("GET {shown} -> {got:?}: never written to this key"));
    }
}

/// What the chaos thread did.
#[derive(Default, Debug)]
struct Actions {
    kills: u64,
    pauses: u64,
    restarts: u64,
    reloads: u64,
    failed_reloads: Vec<String>,
}

fn chaos(
    shards: &mut [RedisServer],
    proxy_pid: u32,
    admin_port: u16,
    kills: &[AtomicU64],
    until: Instant,
    seed: u64,
) -> Actions {
    let mut rng = Rng(seed | 1);
    let mut actions = Actions::default();
    // When each frozen or killed backend comes back.
    let mut paused: Vec<Option<Instant>> = vec![None; shards.len()];
    let mut dead: Vec<Option<Instant>> = vec![None; shards.len()];
    while Instant::now() < until {
        thread::sleep(Duration::from_millis(200 + rng.below(300) as u64));
        let now = Instant::now();
        for i in 0..shards.len() {
            if paused[i].is_some_and(|at| at <= now) {
                shards[i].resume();
                paused[i] = None;
            }
            if dead[i].is_some_and(|at| at <= now) {
                shards[i].restart();
                actions.restarts += 1;
                dead[i] = None;
            }
        }
        let i = rng.below(shards.len());
        let back = now + Duration::from_millis(300 + rng.below(1500) as u64);
        match rng.below(4) {
            0 if paused[i].is_none() && dead[i].is_none() => {
                shards[i].pause();
                actions.pauses += 1;
                paused[i] = Some(back);
            }
            1 if !NEVER_KILLED.contains(&i) && paused[i].is_none() && dead[i].is_none() => {
                // Counted first: a GET that sees the loss already knows of it.
                kills[i].fetch_add(1, Ordering::SeqCst);
                shards[i].kill();
                actions.kills += 1;
                dead[i] = Some(back);
            }
            2 => {
                signal(proxy_pid, "HUP");
                actions.reloads += 1;
            }
            3 => {
                let (status, body) = http(admin_port, "POST", "/reload");
                actions.reloads += 1;
                if status != 200 {
                    actions.failed_reloads.push(format!("{status} {body}"));
                }
            }
            _ => {}
        }
    }
    for i in 0..shards.len() {
        if paused[i].is_some() {
            shards[i].resume();
        }
        if dead[i].is_some() {
            shards[i].restart();
            actions.restarts += 1;
        }
    }
    actions
}

/// `KEYWAY_CHAOS_SECS`, else `default` seconds.
fn duration(default: u64) -> Duration {
    let secs = std::env::var("KEYWAY_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    Duration::from_secs(secs)
}

#[test]
fn chaos_under_load_never_mismatches_a_reply_nor_loses_an_acknowledged_write() {
    chaos_with(50, 1000, duration(12));
}

#[test]
fn chaos_with_one_client_never_mismatches_a_reply_nor_loses_an_acknowledged_write() {
    // As many keys as it takes to have some on every backend.
    chaos_with(1, 200, duration(6));
}

/// `clients` clients writing `keys` keys between them under the chaos for `run_for`, and
/// every check.
fn chaos_with(clients: usize, keys: usize, run_for: Duration) {
    let mut setup = Setup::new(BACKENDS, &[("timeout", "1000")]);
    let by_shard = setup.keys_by_shard("chaos", keys);
    let mut keys: Vec<Vec<(Vec<u8>, usize)>> = vec![Vec::new(); clients];
    let mut n = 0;
    for (shard, held) in by_shard.iter().enumerate() {
        for key in held {
            keys[n % clients].push((key.clone(), shard));
            n += 1;
        }
    }
    let seed = std::env::var("KEYWAY_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!(
        "chaos: {clients} client(s), {run_for:?}, seed {seed} (KEYWAY_CHAOS_SEED to replay the \
         chaos)"
    );

    let kills: Arc<Vec<AtomicU64>> = Arc::new((0..BACKENDS).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let addr = setup.proxy.addr().to_string();
    let workers: Vec<_> = keys
        .into_iter()
        .enumerate()
        .map(|(id, keys)| {
            let (addr, kills, stop) = (addr.clone(), Arc::clone(&kills), Arc::clone(&stop));
            thread::spawn(move || client_loop(addr, id, keys, kills, stop))
        })
        .collect();

    let mut shards = std::mem::take(&mut setup.shards);
    let (pid, admin) = (setup.proxy.pid(), setup.proxy.admin_port());
    let until = Instant::now() + run_for;
    let actions = chaos(&mut shards, pid, admin, &kills, until, seed);
    // A little calm at the end: every backend is back, requests succeed again.
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);

    let mut total = Tally::default();
    let states = Arc::new(Mutex::new(Vec::new()));
    for worker in workers {
        let (tally, keys) = worker.join().expect("a client thread panicked");
        total.add(tally);
        states.lock().unwrap().push(keys);
    }

    // Every acknowledged write on a backend that was never killed reads back from it (or a
    // write that got an error reply and may have run after it).
    let mut unreadable = Vec::new();
    let mut checked = 0;
    let mut direct: Vec<Client> = shards.iter().map(RedisServer::client).collect();
    for (shard, held) in by_shard.iter().enumerate() {
        if !NEVER_KILLED.contains(&shard) {
            continue;
        }
        for key in held {
            let states = states.lock().unwrap();
            let Some(state) = states.iter().find_map(|s| s.get(key)) else {
                continue;
            };
            let Some((value, _)) = &state.acked else {
                continue;
            };
            checked += 1;
            let got = direct[shard].cmd(&[b"GET".as_slice(), key]);
            let fine = match &got {
                Reply::Bulk(Some(v)) => {
                    let v = String::from_utf8_lossy(v).into_owned();
                    v == *value || state.uncertain.contains(&v)
                }
                _ => false,
            };
            if !fine {
                unreadable.push(format!(
                    "{} on s{shard}: {got:?}, acknowledged {value}",
                    show(key)
                ));
            }
        }
    }

    println!("chaos actions: {actions:?}");
    println!(
        "requests {}, right replies {}, error replies {:?}",
        total.requests, total.ok, total.errors
    );
    println!(
        "mismatched {}, stale {}, lost {}, unexpected {}, acknowledged writes checked {checked}, \
         unreadable {}",
        total.mismatched.len(),
        total.stale.len(),
        total.lost.len(),
        total.unexpected.len(),
        unreadable.len()
    );
    setup.proxy.assert_alive();
    let first = |v: &Vec<String>| v.iter().take(5).cloned().collect::<Vec<_>>();
    assert!(
        total.mismatched.is_empty(),
        "mismatched replies: {:?}",
        first(&total.mismatched)
    );
    assert!(
        total.unexpected.is_empty(),
        "unexpected replies: {:?}",
        first(&total.unexpected)
    );
    assert!(
        total.stale.is_empty(),
        "stale replies: {:?}",
        first(&total.stale)
    );
    assert!(
        total.lost.is_empty(),
        "lost writes: {:?}",
        first(&total.lost)
    );
    assert!(
        unreadable.is_empty(),
        "acknowledged writes missing: {:?}",
        first(&unreadable)
    );
    assert!(
        actions.failed_reloads.is_empty(),
        "reloads: {:?}",
        actions.failed_reloads
    );
    assert!(
        checked > 0,
        "some acknowledged writes on never-killed backends were checked"
    );
    assert!(
        total.ok > total.requests / 4,
        "the workload made progress: {total:?}"
    );
    setup.shards = shards;
}
