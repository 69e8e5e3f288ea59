//! Redis Sentinel: Keyway asks real `redis-sentinel`s where each master is, follows
//! `+switch-master` to the promoted replica after a forced failover and after a master is
//! killed, keeps every key on its shard (the ring is built from master names), counts the
//! switches, and refuses to start when no Sentinel answers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// The Sentinel master names, one per shard.
const MASTERS: [&str; 2] = ["shard-1", "shard-2"];
/// Generous bound for Sentinel to notice a dead master (down after 1 s), elect a leader and
/// promote the replica, and for Keyway to follow.
const FAILOVER_BOUND: Duration = Duration::from_secs(30);

/// Two shards, each a master with one replica, watched by three Sentinels.
struct Ha {
    masters: Vec<RedisServer>,
    replicas: Vec<RedisServer>,
    sentinels: Vec<SentinelServer>,
}

impl Ha {
    fn start() -> Ha {
        let masters = start_redis_servers(2);
        let replicas: Vec<RedisServer> = masters
            .iter()
            .map(|m| RedisServer::start_with(&["--replicaof", "127.0.0.1", &m.port().to_string()]))
            .collect();
        for replica in &replicas {
            let up = wait_until(START_TIMEOUT, || {
                match replica.client().cmd(&["INFO", "replication"]) {
                    Reply::Bulk(Some(info)) => {
                        String::from_utf8_lossy(&info).contains("master_link_status:up")
                    }
                    _ => false,
                }
            });
            assert!(up, "replica {} never linked to its master", replica.addr());
        }
        let monitored: Vec<(&str, u16)> = MASTERS
            .iter()
            .zip(&masters)
            .map(|(name, m)| (*name, m.port()))
            .collect();
        let sentinels: Vec<SentinelServer> =
            (0..3).map(|_| SentinelServer::start(&monitored)).collect();
        // A failover needs each Sentinel to know the replica and (for the vote) the others.
        let ready = wait_until(Duration::from_secs(20), || {
            sentinels
                .iter()
                .all(|s| MASTERS.iter().all(|m| s.known(m) == (1, 2)))
        });
        assert!(
            ready,
            "sentinels never learnt replicas and each other: {:?}",
            sentinels
                .iter()
                .map(|s| MASTERS.map(|m| s.known(m)))
                .collect::<Vec<_>>()
        );
        Ha {
            masters,
            replicas,
            sentinels,
        }
    }

    fn yaml(&self, listen: u16) -> String {
        let sentinels: Vec<u16> = self.sentinels.iter().map(SentinelServer::port).collect();
        sentinel_pool_yaml(listen, &sentinels)
    }

    /// Which shard holds `key` now, asking the masters directly.
    fn shard_holding(&self, key: &str) -> usize {
        let holding: Vec<usize> = (0..2)
            .filter(|&i| self.masters[i].client().cmd(&["EXISTS", key]).int() == 1)
            .collect();
        assert_eq!(holding.len(), 1, "{key} is on shards {holding:?}");
        holding[0]
    }
}

fn sentinel_pool_yaml(listen: u16, sentinels: &[u16]) -> String {
    masters_yaml(listen, sentinels, &MASTERS)
}

/// A Sentinel pool of `masters`, asking the Sentinels on `sentinels`.
fn masters_yaml(listen: u16, sentinels: &[u16], masters: &[&str]) -> String {
    let mut yaml = format!(
        "ha:\n  listen: 127.0.0.1:{listen}\n  redis: true\n  timeout: 1000\n  sentinels:\n"
    );
    for port in sentinels {
        yaml.push_str(&format!("   - 127.0.0.1:{port}\n"));
    }
    yaml.push_str("  servers:\n");
    for master in masters {
        yaml.push_str(&format!("   - {master}:1\n"));
    }
    yaml
}

/// Keyway as a binary on a config file, with its admin port and its log.
struct Live {
    child: Child,
    admin: u16,
    dir: TempDir,
}

impl Live {
    fn spawn(yaml: &str) -> Live {
        let dir = TempDir::new("sentinel-keyway");
        let conf = dir.path().join("keyway.yml");
        std::fs::write(&conf, yaml).unwrap();
        let log = std::fs::File::create(dir.path().join("keyway.log")).unwrap();
        let admin = free_port();
        let child = Command::new(keyway_bin())
            .arg("-c")
            .arg(&conf)
            .args(["--threads", "2", "-s", &free_port().to_string()])
            .args(["-a", "127.0.0.1", "--admin", &format!("127.0.0.1:{admin}")])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Live { child, admin, dir }
    }

    fn start(yaml: &str, listen: u16) -> Live {
        let mut live = Live::spawn(yaml);
        let ready = wait_until(START_TIMEOUT, || {
            matches!(live.child.try_wait(), Ok(Some(_)))
                || (TcpStream::connect(("127.0.0.1", listen)).is_ok()
                    && TcpStream::connect(("127.0.0.1", live.admin)).is_ok())
        });
        assert!(
            ready && matches!(live.child.try_wait(), Ok(None)),
            "keyway did not start:\n{}",
            live.log()
        );
        live
    }

    /// Rewrites the config file and asks for a reload: the status and the report.
    fn reload(&self, yaml: &str) -> (u16, String) {
        std::fs::write(self.dir.path().join("keyway.yml"), yaml).unwrap();
        http(self.admin, "POST", "/reload")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("keyway.log")
    }

    fn get(&self, path: &str) -> String {
        http(self.admin, "GET", path).1
    }

    fn shows_address(&self, addr: &str) -> bool {
        self.get("/pools")
            .contains(&format!("\"address\": \"{addr}\""))
    }

    /// Waits up to `within` for `/pools` to list `addr`; fails with the pools, Keyway's log
    /// and `context` (e.g. a Sentinel's log) if it never does.
    fn await_address(&self, addr: &str, within: Duration, context: &str) {
        assert!(
            wait_until(within, || self.shows_address(addr)),
            "/pools never showed {addr}:\n{}\nkeyway log:\n{}\n{context}",
            self.get("/pools"),
            self.log()
        );
    }

    /// `keyway_sentinel_switches_total` of backend `master`.
    fn switches(&self, master: &str) -> u64 {
        let metrics = self.get("/metrics");
        metrics
            .lines()
            .find(|line| {
                line.starts_with("keyway_sentinel_switches_total{")
                    && line.contains(&format!("backend=\"{master}\""))
            })
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no switch count for {master} in:\n{metrics}"))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // By PID; a no-op when the process has exited (as when start fails).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `count` keys through Keyway; returns each key with its value and shard.
fn write_keys(ha: &Ha, client: &mut Client, count: usize) -> Vec<(String, String, usize)> {
    let keys: Vec<(String, String, usize)> = (0..count)
        .map(|i| {
            let (key, value) = (format!("key:{i}"), format!("value:{i}"));
            assert_eq!(client.cmd(&["SET", &key, &value]), Reply::ok());
            let shard = ha.shard_holding(&key);
            (key, value, shard)
        })
        .collect();
    for shard in 0..2 {
        assert!(
            keys.iter().any(|(_, _, s)| *s == shard),
            "no key landed on shard {shard}"
        );
    }
    keys
}

/// Polls a write of a key of `shard` through Keyway until it succeeds.
fn writes_resume(client: &mut Client, keys: &[(String, String, usize)], shard: usize) -> bool {
    let (key, value, _) = keys
        .iter()
        .find(|(_, _, s)| *s == shard)
        .expect("a key on the shard");
    wait_until(FAILOVER_BOUND, || {
        client.cmd(&["SET", key, value]) == Reply::ok()
    })
}

#[test]
fn forced_failover_repoints_the_shard_and_no_key_moves() {
    let ha = Ha::start();
    let listen = free_port();
    let live = Live::start(&ha.yaml(listen), listen);
    assert!(
        live.shows_address(&ha.masters[0].addr()),
        "{}",
        live.get("/pools")
    );
    let mut client = Client::connect(&format!("127.0.0.1:{listen}"));
    let keys = write_keys(&ha, &mut client, 100);

    let reply = ha.sentinels[0]
        .client()
        .cmd(&["SENTINEL", "FAILOVER", MASTERS[0]]);
    assert_eq!(reply, Reply::ok());
    let promoted = ha.replicas[0].addr();
    live.await_address(
        &promoted,
        FAILOVER_BOUND,
        &format!("sentinel log:\n{}", ha.sentinels[0].log()),
    );
    assert!(
        writes_resume(&mut client, &keys, 0),
        "writes to shard 0 never resumed:\n{}",
        live.log()
    );

    // Every key reads back through Keyway, and a new write of it lands on the same shard,
    // now served by the promoted replica (shard 0) or the untouched master (shard 1).
    let now_serving = [&ha.replicas[0], &ha.masters[1]];
    for (key, value, shard) in &keys {
        assert_eq!(client.cmd(&["GET", key]), Reply::bulk(value), "{key}");
        let rewritten = format!("{value}:after");
        assert_eq!(client.cmd(&["SET", key, &rewritten]), Reply::ok());
        assert_eq!(
            now_serving[*shard].client().cmd(&["GET", key]),
            Reply::bulk(&rewritten),
            "{key} moved off shard {shard}"
        );
    }
    assert!(live.shows_address(&ha.masters[1].addr()));
    // Every Sentinel announces the switch; it is applied once.
    assert_eq!(live.switches(MASTERS[0]), 1);
    assert_eq!(live.switches(MASTERS[1]), 0);
}

#[test]
fn killed_master_is_replaced_by_its_replica_without_losing_replicated_writes() {
    let ha = Ha::start();
    let listen = free_port();
    let live = Live::start(&ha.yaml(listen), listen);
    let mut client = Client::connect(&format!("127.0.0.1:{listen}"));
    let keys = write_keys(&ha, &mut client, 100);
    // Replication is ordered: once the replica acknowledges a marker written after the keys,
    // it has every key.
    for master in &ha.masters {
        let mut direct = master.client();
        assert_eq!(direct.cmd(&["SET", "replicated", "yes"]), Reply::ok());
        assert_eq!(direct.cmd(&["WAIT", "1", "2000"]).int(), 1);
    }

    let mut ha = ha;
    ha.masters[1].kill();
    let promoted = ha.replicas[1].addr();
    live.await_address(
        &promoted,
        FAILOVER_BOUND,
        &format!("sentinel log:\n{}", ha.sentinels[0].log()),
    );
    assert!(
        writes_resume(&mut client, &keys, 1),
        "writes to shard 1 never resumed:\n{}",
        live.log()
    );
    for (key, value, _) in &keys {
        assert_eq!(client.cmd(&["GET", key]), Reply::bulk(value), "{key}");
    }
    assert!(live.shows_address(&ha.masters[0].addr()));
    assert_eq!(live.switches(MASTERS[1]), 1);
    assert_eq!(live.switches(MASTERS[0]), 0);
}

#[test]
fn start_fails_naming_the_master_when_no_sentinel_answers() {
    let dead = [free_port(), free_port()];
    let mut live = Live::spawn(&sentinel_pool_yaml(free_port(), &dead));
    assert!(
        wait_until(START_TIMEOUT, || matches!(
            live.child.try_wait(),
            Ok(Some(_))
        )),
        "keyway kept running without any Sentinel:\n{}",
        live.log()
    );
    let status = live.child.wait().unwrap();
    assert!(!status.success());
    let log = live.log();
    for master in MASTERS {
        assert!(
            log.contains(&format!(
                "pool 'ha': no Sentinel gave the address of master '{master}' (127.0.0.1:{}: cannot connect: ",
                dead[0]
            )),
            "{log}"
        );
    }
}

#[test]
fn reload_asks_the_sentinels_and_the_watchers_follow_the_new_config() {
    let ha = Ha::start();
    let listen = free_port();
    let sentinels: Vec<u16> = ha.sentinels.iter().map(SentinelServer::port).collect();
    let live = Live::start(&masters_yaml(listen, &sentinels, &MASTERS[..1]), listen);
    assert!(!live.get("/pools").contains(MASTERS[1]));

    // No Sentinel answers: the reload fails and nothing changes.
    let (status, body) = live.reload(&sentinel_pool_yaml(listen, &[free_port()]));
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("pool 'ha': no Sentinel gave the address of master 'shard-1'"),
        "{body}"
    );
    assert!(!live.get("/pools").contains(MASTERS[1]));

    // The second master is placed by the Sentinels, and its failover is followed: the watchers
    // started for the first config knew only shard-1.
    let (status, body) = live.reload(&ha.yaml(listen));
    assert_eq!(status, 200, "{body}");
    assert!(
        live.shows_address(&ha.masters[1].addr()),
        "{}",
        live.get("/pools")
    );
    let reply = ha.sentinels[1]
        .client()
        .cmd(&["SENTINEL", "FAILOVER", MASTERS[1]]);
    assert_eq!(reply, Reply::ok());
    let promoted = ha.replicas[1].addr();
    live.await_address(&promoted, FAILOVER_BOUND, "");
    assert_eq!(live.switches(MASTERS[1]), 1);
}

/// A scripted Sentinel that never announces a switch: it places `shard-1` at `first` when asked
/// `get-master-addr-by-name`, and at `later` (config epoch 1) when asked `SENTINEL MASTER`.
struct QuietSentinel {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl QuietSentinel {
    fn start(first: u16, later: u16) -> QuietSentinel {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let stopped = Arc::clone(&stopped);
                        std::thread::spawn(move || quiet_session(stream, first, later, &stopped));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        QuietSentinel { port, stop }
    }
}

impl Drop for QuietSentinel {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn quiet_session(
    mut stream: TcpStream,
    first: u16,
    later: u16,
    stop: &std::sync::atomic::AtomicBool,
) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => return,
        }
        while let Ok(Some((Reply::Array(Some(args)), used))) = parse_reply(&buf, 0) {
            buf.drain(..used);
            let words: Vec<String> = args
                .iter()
                .map(|a| match a {
                    Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).to_lowercase(),
                    _ => String::new(),
                })
                .collect();
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            let fields = |port: u16| {
                let items: Vec<Reply> = [
                    "name",
                    "shard-1",
                    "ip",
                    "127.0.0.1",
                    "port",
                    &port.to_string(),
                    "config-epoch",
                    "1",
                ]
                .iter()
                .map(Reply::bulk)
                .collect();
                Reply::Array(Some(items))
            };
            let reply = match words.as_slice() {
                ["sentinel", "get-master-addr-by-name", "shard-1"] => Reply::Array(Some(vec![
                    Reply::bulk("127.0.0.1"),
                    Reply::bulk(first.to_string()),
                ])),
                ["sentinel", "master", "shard-1"] => fields(later),
                ["subscribe", channel] => Reply::Array(Some(vec![
                    Reply::bulk("subscribe"),
                    Reply::bulk(channel),
                    Reply::Int(1),
                ])),
                ["ping"] => Reply::Array(Some(vec![Reply::bulk("pong"), Reply::bulk("")])),
                _ => Reply::Error("ERR unknown".into()),
            };
            if stream.write_all(&reply.to_bytes()).is_err() {
                return;
            }
        }
    }
}

#[test]
fn a_missed_switch_is_caught_by_the_periodic_check() {
    let (old, new) = (RedisServer::start(), RedisServer::start());
    let sentinel = QuietSentinel::start(old.port(), new.port());
    let listen = free_port();
    let live = Live::start(
        &masters_yaml(listen, &[sentinel.port], &MASTERS[..1]),
        listen,
    );
    assert!(live.shows_address(&old.addr()), "{}", live.get("/pools"));
    // Checked every 5 s.
    live.await_address(&new.addr(), Duration::from_secs(15), "");
    let mut client = Client::connect(&format!("127.0.0.1:{listen}"));
    assert_eq!(client.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(new.client().cmd(&["GET", "k"]), Reply::bulk("v"));
    assert_eq!(live.switches(MASTERS[0]), 1);
}

#[test]
fn sentinel_auth_is_sent_to_the_sentinels() {
    let master = RedisServer::start();
    let sentinel =
        SentinelServer::start_with(&[(MASTERS[0], master.port())], &["requirepass s3cret"]);
    let listen = free_port();
    let pool = masters_yaml(listen, &[sentinel.port()], &MASTERS[..1]);
    let with_auth = pool.replace("  servers:", "  sentinel_auth: s3cret\n  servers:");
    let live = Live::start(&with_auth, listen);
    assert!(live.shows_address(&master.addr()), "{}", live.get("/pools"));
    drop(live);

    let mut wrong = Live::spawn(&pool.replace("  servers:", "  sentinel_auth: wrong\n  servers:"));
    assert!(
        wait_until(START_TIMEOUT, || matches!(
            wrong.child.try_wait(),
            Ok(Some(_))
        )),
        "keyway started with a wrong sentinel_auth:\n{}",
        wrong.log()
    );
    let log = wrong.log();
    assert!(
        log.contains(&format!(
            "no Sentinel gave the address of master 'shard-1' (127.0.0.1:{}: error reply: ",
            sentinel.port()
        )),
        "{log}"
    );
}
