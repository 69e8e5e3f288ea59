//! A fleet of Keyways on one shard map in a real etcd: instances started from one prefix route
//! alike, take a published change together without dropping a client, refuse an invalid one
//! together (and say so in `keyway fleet`), survive etcd going away, and leave the fleet when
//! they die; `keyway publish` refuses a stale revision, and a rollback restores the earlier map.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::live::pipelining_load;
use common::*;

/// Hang bound for every instance to serve a published revision (the issue asks for 2 s; this
/// is a bound against hangs, the measured time is printed).
const CONVERGE: Duration = Duration::from_secs(10);
/// Generous bound for a killed instance's key to vanish: the lease TTL is 10 s.
const LEASE_GONE: Duration = Duration::from_secs(25);

/// One etcd, one prefix, and a temp dir for the files the test publishes.
struct Fleet {
    etcd: Etcd,
    prefix: String,
    dir: TempDir,
}

/// A Keyway instance reading its config from the fleet's prefix.
struct Member {
    proxy: Proxy,
    admin: u16,
}

impl Fleet {
    fn new() -> Fleet {
        Fleet::on(Etcd::start())
    }

    fn on(etcd: Etcd) -> Fleet {
        Fleet {
            etcd,
            prefix: "keyway/test".into(),
            dir: TempDir::new("fleet"),
        }
    }

    fn url(&self) -> String {
        self.etcd.url(&self.prefix)
    }

    fn config_key(&self) -> String {
        format!("/{}/config", self.prefix)
    }

    /// `keyway COMMAND --config-store URL ARGS...`.
    fn keyway(&self, command: &str, args: &[&str]) -> Output {
        Command::new(keyway_bin())
            .arg(command)
            .arg("--config-store")
            .arg(self.url())
            .args(args)
            .output()
            .unwrap()
    }

    /// `keyway publish -c FILE ARGS...` with `yaml` in FILE; the output.
    fn try_publish(&self, yaml: &str, args: &[&str]) -> Output {
        let file = self.dir.path().join("publish.yml");
        std::fs::write(&file, yaml).unwrap();
        let file = file.display().to_string();
        let mut all = vec!["-c", file.as_str()];
        all.extend_from_slice(args);
        self.keyway("publish", &all)
    }

    /// Publishes `yaml`, which must succeed; the revision made.
    fn publish(&self, yaml: &str, args: &[&str]) -> i64 {
        revision_published(&self.try_publish(yaml, args))
    }

    /// `keyway fleet`'s table.
    fn table(&self) -> String {
        let out = self.keyway("fleet", &[]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts instance `id`; `listen` overrides pool alpha's address when given.
    fn member(&self, id: &str, listen: u16, override_listen: bool, extra: &[&str]) -> Member {
        let admin = free_port();
        let mut args: Vec<String> = [
            "--config-store",
            &self.url(),
            "--instance-id",
            id,
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "-s",
            &free_port().to_string(),
            "-a",
            "127.0.0.1",
            "--threads",
            "2",
            "-v",
            "5",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        if override_listen {
            args.push("--listen".into());
            args.push(format!("alpha=127.0.0.1:{listen}"));
        }
        args.extend(extra.iter().map(ToString::to_string));
        let proxy = Proxy::try_start_keyway_at(
            TempDir::new("member"),
            &format!("127.0.0.1:{listen}"),
            &args,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let member = Member { proxy, admin };
        // Ready once it reached etcd (registered) or gave up for now (started from a cache).
        let ready = wait_until(START_TIMEOUT, || {
            std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok()
                && match member.gauge("keyway_config_store_up") {
                    Some(up) => up == 1.0 || extra.contains(&"--config-cache"),
                    None => false,
                }
        });
        assert!(ready, "{id} did not register: {}", member.proxy.stderr());
        member
    }
}

impl Member {
    /// An unlabelled metric's value (absent: `None`).
    fn gauge(&self, name: &str) -> Option<f64> {
        let (status, body) = http(self.admin, "GET", "/metrics");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
    }

    fn revision(&self) -> i64 {
        self.gauge("keyway_config_revision").unwrap_or(-1.0) as i64
    }

    fn client(&self) -> Client {
        self.proxy.client()
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The revision in `published revision N (...)`; fails unless the publish succeeded.
fn revision_published(out: &Output) -> i64 {
    assert!(out.status.success(), "publish failed: {}", text(out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("published revision "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no revision in: {}", text(out)))
}

/// Pool alpha on `port` (every instance overrides it or shares it), over `servers`.
fn alpha(port: u16, servers: &[&RedisServer], extra: &str) -> String {
    let lines: Vec<String> = servers.iter().map(|s| server_line(s, 1, None)).collect();
    pool_yaml(port, &lines, &[]).replace("  servers:\n", &format!("{extra}  servers:\n"))
}

/// How long until every member serves `revision` (its metric polled every 20 ms: a coarse
/// upper bound), within [`CONVERGE`].
fn converge(members: &[&Member], revision: i64) -> Duration {
    let started = Instant::now();
    let mut done = vec![None; members.len()];
    let all = wait_until(CONVERGE, || {
        for (i, m) in members.iter().enumerate() {
            if done[i].is_none() && m.revision() == revision {
                done[i] = Some(started.elapsed());
            }
        }
        done.iter().all(Option::is_some)
    });
    assert!(
        all,
        "not every instance serves revision {revision}: {done:?}"
    );
    done.into_iter().flatten().max().unwrap_or_default()
}

/// Seconds since midnight UTC (for comparing with log timestamps; reporting only).
fn time_of_day(t: std::time::SystemTime) -> f64 {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    secs % 86_400.0
}

/// When the log says `what` about `revision`, in seconds since midnight UTC.
fn logged_at(log: &str, what: &str, revision: i64) -> Option<f64> {
    let line = log
        .lines()
        .find(|l| l.contains(what) && l.ends_with(&format!("revision={revision}")))?;
    let clock = line
        .split_whitespace()
        .next()?
        .split('T')
        .nth(1)?
        .trim_end_matches('Z');
    let mut parts = clock.split(':');
    let (h, m, s): (f64, f64, f64) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

fn keys_on(server: &RedisServer) -> usize {
    server.keys().len()
}

#[test]
fn two_instances_route_alike_and_take_a_published_backend_without_dropping_a_client() {
    let fleet = Fleet::new();
    let shards = start_redis_servers(3);
    let (a, b, c) = (&shards[0], &shards[1], &shards[2]);
    // murmur spreads these similar keys well over three backends (fnv1a_64 does not).
    let murmur = "  hash: murmur\n";
    let first = fleet.publish(
        &alpha(free_port(), &[a, b], murmur),
        &["--author", "tester"],
    );
    let (p1, p2) = (free_port(), free_port());
    let one = fleet.member("one", p1, true, &[]);
    let two = fleet.member("two", p2, true, &[]);
    assert_eq!((one.revision(), two.revision()), (first, first));

    // Same map: what one writes, two reads, and the key is on one backend only.
    let (mut w, mut r) = (one.client(), two.client());
    for i in 0..100 {
        let key = format!("same:{i}");
        assert_eq!(w.cmd(&["SET", key.as_str(), "v"]), Reply::ok());
        assert_eq!(r.cmd(&["GET", key.as_str()]), Reply::bulk("v"), "{key}");
    }
    assert_eq!(keys_on(a) + keys_on(b), 100);
    assert_eq!(keys_on(c), 0);

    // 20 pipelining clients, 10 on each instance, while a backend is added.
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..20)
        .map(|id| {
            let port = if id % 2 == 0 { p1 } else { p2 };
            let (stop, errors) = (Arc::clone(&stop), Arc::clone(&errors));
            std::thread::spawn(move || pipelining_load(port, id, stop, errors))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let published = Instant::now();
    let second = fleet.publish(&alpha(free_port(), &[a, b, c], murmur), &[]);
    let wrote = published.elapsed();
    let returned = time_of_day(std::time::SystemTime::now());
    let served = converge(&[&one, &two], second);
    // Finer than the metric poll: each instance logs the install with a timestamp.
    let logged = |what: &str| -> Vec<String> {
        [&one, &two]
            .iter()
            .map(|m| match logged_at(&m.proxy.stderr(), what, second) {
                Some(at) => format!("{:.1} ms", (at - returned) * 1000.0),
                None => "?".into(),
            })
            .collect()
    };
    eprintln!(
        "publish-to-served: `keyway publish` ran {wrote:?}; after it returned, each instance \
         logged revision {second} received at {:?} and installed at {:?}; metrics polled show \
         both on it within {served:?}",
        logged("new revision"),
        logged("revision installed"),
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for (id, client) in clients.into_iter().enumerate() {
        let rounds = client
            .join()
            .unwrap_or_else(|_| panic!("client {id} lost a reply or its connection"));
        assert!(rounds > 0, "client {id} did nothing");
    }
    eprintln!(
        "explicit error replies during the change: {}",
        errors.load(Ordering::Relaxed)
    );

    // The new map on both: c takes keys, and both instances agree on where each key is.
    for s in &shards {
        s.flushall();
    }
    for i in 0..300 {
        let key = format!("after:{i}");
        assert_eq!(w.cmd(&["SET", key.as_str(), "v"]), Reply::ok());
        assert_eq!(r.cmd(&["GET", key.as_str()]), Reply::bulk("v"), "{key}");
    }
    assert!(keys_on(c) > 0, "the published backend takes no key");
    assert_eq!(keys_on(a) + keys_on(b) + keys_on(c), 300);
    let table = fleet.table();
    assert!(table.contains("2 of 2 instances serve it"), "{table}");
}

#[test]
fn an_invalid_config_written_into_etcd_is_refused_by_every_instance() {
    let fleet = Fleet::new();
    let backend = RedisServer::start();
    let first = fleet.publish(&alpha(free_port(), &[&backend], ""), &[]);
    let one = fleet.member("one", free_port(), true, &[]);
    let two = fleet.member("two", free_port(), true, &[]);
    assert_eq!(one.gauge("keyway_config_rejected_total"), Some(0.0));

    // Straight into etcd, bypassing publish's validation.
    let bad = alpha(free_port(), &[&backend], "  distribution: nope\n");
    fleet.etcd.put(&fleet.config_key(), &bad);
    let both_refused = wait_until(CONVERGE, || {
        one.gauge("keyway_config_rejected_total") == Some(1.0)
            && two.gauge("keyway_config_rejected_total") == Some(1.0)
    });
    assert!(
        both_refused,
        "{}\n{}",
        one.proxy.stderr(),
        two.proxy.stderr()
    );
    assert_eq!((one.revision(), two.revision()), (first, first));
    for m in [&one, &two] {
        let mut client = m.client();
        assert_eq!(client.cmd(&["SET", "k", "v"]), Reply::ok());
        assert_eq!(client.cmd(&["GET", "k"]), Reply::bulk("v"));
    }
    let mut table = String::new();
    let shown = wait_until(CONVERGE, || {
        table = fleet.table();
        table.matches("REJECTED").count() == 2
    });
    assert!(shown, "{table}");
    assert!(
        table.contains("'distribution'"),
        "the reason is shown: {table}"
    );
    assert!(table.contains("0 of 2 instances serve it"), "{table}");
    assert!(one.proxy.stderr().contains("rejected, keeping revision"));

    // publish refuses the same file up front.
    let out = fleet.try_publish(&bad, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("'distribution'"), "{}", text(&out));
}

#[test]
fn a_revision_refused_for_a_taken_port_installs_once_the_port_is_free() {
    let fleet = Fleet::new();
    let backend = RedisServer::start();
    let first = fleet.publish(&alpha(free_port(), &[&backend], ""), &[]);
    let one = fleet.member("one", free_port(), true, &[]);
    // A second pool on a port something else holds: valid config, but not bindable here.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let beta = pool_yaml(port, &[server_line(&backend, 1, None)], &[]).replace("alpha:", "beta:");
    let second = fleet.publish(
        &format!("{}{beta}", alpha(free_port(), &[&backend], "")),
        &[],
    );
    let refused = wait_until(CONVERGE, || {
        one.gauge("keyway_config_rejected_total") == Some(1.0)
    });
    assert!(refused, "{}", one.proxy.stderr());
    assert_eq!(one.revision(), first);
    let table = fleet.table();
    assert!(table.contains(&format!("REJECTED {second}")), "{table}");
    assert!(table.contains("cannot listen"), "{table}");

    drop(taken);
    // Retried on the keep-alive tick (~3 s): no new publish needed.
    converge(&[&one], second);
    let mut client = Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(client.cmd(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(
        one.gauge("keyway_config_rejected_total"),
        Some(1.0),
        "counted once"
    );
    let table = fleet.table();
    assert!(table.contains("1 of 1 instances serve it"), "{table}");
}

#[test]
fn a_stale_publish_is_refused_and_a_rollback_restores_the_earlier_map() {
    let fleet = Fleet::new();
    let shards = start_redis_servers(2);
    let (a, b) = (&shards[0], &shards[1]);
    let on_a = alpha(free_port(), &[a], "");
    let first = fleet.publish(&on_a, &[]);
    let one = fleet.member("one", free_port(), true, &[]);
    let two = fleet.member("two", free_port(), true, &[]);

    let expect = first.to_string();
    let second = fleet.publish(
        &alpha(free_port(), &[b], ""),
        &["--expect-revision", &expect],
    );
    converge(&[&one, &two], second);
    // Someone published since `first`: refused, nothing written.
    let stale = fleet.try_publish(
        &alpha(free_port(), &[a, b], ""),
        &["--expect-revision", &expect],
    );
    assert!(!stale.status.success(), "{}", text(&stale));
    assert!(text(&stale).contains("refused"), "{}", text(&stale));
    // A dry run prints the estimate and writes nothing either.
    let dry = fleet.try_publish(&alpha(free_port(), &[a, b], ""), &["--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(text(&dry).contains("keys move"), "{}", text(&dry));
    assert!(text(&dry).contains("dry run"), "{}", text(&dry));
    assert!(fleet
        .etcd
        .get(&fleet.config_key())
        .unwrap()
        .contains(&b.port().to_string()));

    let rollback = fleet.keyway("publish", &["--rollback", &expect, "--author", "oncall"]);
    let third = revision_published(&rollback);
    converge(&[&one, &two], third);
    for m in [&one, &two] {
        let mut client = m.client();
        for i in 0..20 {
            let key = format!("{}:{i}", m.proxy.addr());
            assert_eq!(client.cmd(&["SET", key.as_str(), "v"]), Reply::ok());
        }
    }
    assert_eq!(
        (keys_on(a), keys_on(b)),
        (40, 0),
        "the rollback's map is a alone"
    );

    let out = fleet.keyway("history", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let history = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{history}");
    let revisions: Vec<String> = rows
        .iter()
        .map(|r| r.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(revisions, [first, second, third].map(|r| r.to_string()));
    assert!(rows[2].contains("oncall"), "{history}");
    assert!(
        rows[2].contains(&format!("rollback to revision {first}")),
        "{history}"
    );
    let sha = |row: &str| {
        let sha = row
            .split_whitespace()
            .find(|w| w.len() == 12 && w.bytes().all(|b| b.is_ascii_hexdigit()));
        sha.unwrap().to_string()
    };
    assert_eq!(sha(rows[0]), sha(rows[2]), "the same config: {history}");
    assert_ne!(sha(rows[0]), sha(rows[1]), "{history}");
}

#[test]
fn an_instance_leaves_the_fleet_when_it_dies_and_reuseport_shares_one_listen() {
    let fleet = Fleet::new();
    let backend = RedisServer::start();
    let port = free_port();
    fleet.publish(&alpha(port, &[&backend], "  reuseport: true\n"), &[]);
    // Both on the published address, no --listen: SO_REUSEPORT lets them share it.
    let mut one = fleet.member("one", port, false, &[]);
    let mut two = fleet.member("two", port, false, &[]);
    one.proxy.assert_alive();
    two.proxy.assert_alive();
    let table = fleet.table();
    assert!(table.contains("2 of 2 instances serve it"), "{table}");

    signal(one.proxy.pid(), "KILL");
    one.proxy.wait_exit(Duration::from_secs(5));
    let started = Instant::now();
    let mut table = String::new();
    let gone = wait_until(LEASE_GONE, || {
        table = fleet.table();
        !table.lines().any(|l| l.starts_with("one "))
    });
    assert!(gone, "a killed instance stays listed: {table}");
    eprintln!(
        "killed instance left the fleet after {:?}",
        started.elapsed()
    );
    assert!(table.lines().any(|l| l.starts_with("two ")), "{table}");
    let mut client = Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(client.cmd(&["PING"]), Reply::Simple("PONG".into()));

    // A clean stop revokes the lease: gone at once, not after the TTL.
    signal(two.proxy.pid(), "TERM");
    assert!(two.proxy.wait_exit(Duration::from_secs(10)).is_some());
    let table = fleet.table();
    assert!(table.contains("0 of 0 instances"), "{table}");
}

#[test]
fn etcd_lost_and_back_with_a_publish_in_between_ends_every_instance_on_it() {
    let mut fleet = Fleet::new();
    let shards = start_redis_servers(2);
    let (a, b) = (&shards[0], &shards[1]);
    let first = fleet.publish(&alpha(free_port(), &[a], ""), &[]);
    let one = fleet.member("one", free_port(), true, &[]);
    let two = fleet.member("two", free_port(), true, &[]);
    assert_eq!(one.gauge("keyway_config_store_up"), Some(1.0));

    fleet.etcd.stop();
    let down = wait_until(CONVERGE, || {
        one.gauge("keyway_config_store_up") == Some(0.0)
            && two.gauge("keyway_config_store_up") == Some(0.0)
    });
    assert!(down, "keyway_config_store_up stays 1 with etcd gone");
    for m in [&one, &two] {
        let mut client = m.client();
        assert_eq!(
            client.cmd(&["SET", "k", "v"]),
            Reply::ok(),
            "serves without etcd"
        );
    }
    let refused = fleet.try_publish(&alpha(free_port(), &[b], ""), &[]);
    assert!(
        !refused.status.success(),
        "publish without etcd: {}",
        text(&refused)
    );

    fleet.etcd.restart();
    // Published before the instances are back (their backoff): they must read it on return.
    let second = fleet.publish(&alpha(free_port(), &[b], ""), &[]);
    assert!(second > first);
    let took = converge(&[&one, &two], second);
    eprintln!("after etcd came back, both on revision {second} within {took:?}");
    assert_eq!(one.gauge("keyway_config_store_up"), Some(1.0));
    a.flushall();
    let mut client = one.client();
    assert_eq!(client.cmd(&["SET", "k2", "v"]), Reply::ok());
    assert_eq!(b.client().cmd(&["GET", "k2"]), Reply::bulk("v"));
}

#[test]
fn an_instance_starts_from_its_cache_when_etcd_is_down_and_fails_clearly_without_one() {
    let mut fleet = Fleet::new();
    let backend = RedisServer::start();
    let port = free_port();
    let first = fleet.publish(&alpha(port, &[&backend], ""), &[]);
    let cache = fleet.dir.path().join("cache.yml");
    let cache_arg = cache.display().to_string();
    let one = fleet.member("one", port, false, &["--config-cache", &cache_arg]);
    assert!(cache.exists(), "the cache is written on install");
    drop(one);
    fleet.etcd.stop();

    let one = fleet.member("one", port, false, &["--config-cache", &cache_arg]);
    assert_eq!(one.revision(), first, "the cache's revision");
    assert_eq!(one.gauge("keyway_config_store_up"), Some(0.0));
    let mut client = one.client();
    assert_eq!(client.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(backend.client().cmd(&["GET", "k"]), Reply::bulk("v"));

    // No cache, no etcd: a clear error, no serving.
    let out = Command::new(keyway_bin())
        .args(["--config-store", &fleet.url(), "--admin", "off", "-s"])
        .arg(free_port().to_string())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unreachable") && text(&out).contains("--config-cache"),
        "{}",
        text(&out)
    );

    // etcd back: the cached instance catches up with what is published.
    fleet.etcd.restart();
    let second = fleet.publish(&alpha(port, &[&backend], "  hash: murmur\n"), &[]);
    converge(&[&one], second);
    assert_eq!(cache_revision(&cache), second, "rewritten on install");

    // An invalid latest revision: a restarted instance starts from its cache (the last good
    // map) and reports the rejection; without a cache it fails, saying why.
    fleet.etcd.put(
        &fleet.config_key(),
        &alpha(port, &[&backend], "  hash: nope\n"),
    );
    wait_until(CONVERGE, || {
        one.gauge("keyway_config_rejected_total") == Some(1.0)
    });
    let copy = fleet.dir.path().join("copy.yml");
    std::fs::copy(&cache, &copy).unwrap();
    let copy_arg = copy.display().to_string();
    let other = free_port();
    let two = fleet.member("two", other, true, &["--config-cache", &copy_arg]);
    assert_eq!(two.revision(), second);
    let mut table = String::new();
    let shown = wait_until(CONVERGE, || {
        table = fleet.table();
        table.matches("REJECTED").count() == 2
    });
    assert!(shown, "{table}");
    let out = Command::new(keyway_bin())
        .args(["--config-store", &fleet.url(), "--admin", "off", "-s"])
        .arg(free_port().to_string())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("'hash'"), "{}", text(&out));
}

/// The revision in a `--config-cache` file's first line.
fn cache_revision(path: &std::path::Path) -> i64 {
    let text = std::fs::read_to_string(path).unwrap();
    let first = text.lines().next().unwrap();
    first
        .strip_prefix("# keyway config-store revision ")
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no revision header: {first}"))
}

#[test]
fn an_etcd_with_users_takes_the_password_from_the_environment_or_the_flag() {
    let fleet = Fleet::new();
    let backend = RedisServer::start();
    fleet.etcd.enable_auth("s3cret-pw");
    let yaml = alpha(free_port(), &[&backend], "");
    let anonymous = fleet.try_publish(&yaml, &[]);
    assert!(!anonymous.status.success(), "{}", text(&anonymous));

    let file = fleet.dir.path().join("auth.yml");
    std::fs::write(&file, &yaml).unwrap();
    let out = Command::new(keyway_bin())
        .args([
            "publish",
            "--config-store",
            &fleet.url(),
            "--etcd-user",
            "root",
            "-c",
        ])
        .arg(&file)
        .env("KEYWAY_ETCD_PASSWORD", "s3cret-pw")
        .output()
        .unwrap();
    let revision = revision_published(&out);
    let one = fleet.member(
        "one",
        free_port(),
        true,
        &["--etcd-user", "root", "--etcd-password", "s3cret-pw"],
    );
    assert_eq!(one.revision(), revision);
    assert_eq!(one.gauge("keyway_config_store_up"), Some(1.0));
    let table = fleet.keyway(
        "fleet",
        &["--etcd-user", "root", "--etcd-password", "s3cret-pw"],
    );
    assert!(
        text(&table).contains("1 of 1 instances serve it"),
        "{}",
        text(&table)
    );
}

#[test]
fn listen_overrides_hold_for_a_file_config_and_its_reloads_and_name_real_pools() {
    let shards = start_redis_servers(2);
    let (in_file, overridden) = (free_port(), free_port());
    let dir = TempDir::new("listen");
    let conf = dir.path().join("keyway.yml");
    std::fs::write(&conf, alpha(in_file, &[&shards[0]], "")).unwrap();
    let conf_arg = conf.display().to_string();
    let listen = format!("alpha=127.0.0.1:{overridden}");
    let args: Vec<String> = ["-c", &conf_arg, "--listen", &listen, "--admin", "off", "-s"]
        .iter()
        .map(ToString::to_string)
        .chain([free_port().to_string()])
        .collect();
    let mut proxy = Proxy::try_start_keyway_at(
        TempDir::new("listen-proxy"),
        &format!("127.0.0.1:{overridden}"),
        &args,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(std::net::TcpStream::connect(("127.0.0.1", in_file)).is_err());

    // A reload (SIGHUP) of a changed file keeps the override.
    std::fs::write(&conf, alpha(in_file, &[&shards[1]], "")).unwrap();
    signal(proxy.pid(), "HUP");
    let moved = wait_until(CONVERGE, || {
        let mut client = proxy.client();
        client.cmd(&["SET", "k", "v"]) == Reply::ok() && shards[1].keys().contains(&b"k"[..])
    });
    assert!(moved, "{}", proxy.stderr());
    assert!(std::net::TcpStream::connect(("127.0.0.1", in_file)).is_err());
    proxy.assert_alive();

    // An override for a pool the config lacks fails the start, naming it.
    let out = Command::new(keyway_bin())
        .args([
            "-c",
            &conf_arg,
            "--listen",
            "nosuch=127.0.0.1:1",
            "--admin",
            "off",
            "-s",
        ])
        .arg(free_port().to_string())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("nosuch"), "{}", text(&out));
}

#[test]
fn an_etcd_over_tls_with_client_certificates_is_reached_with_the_tls_flags() {
    let fleet = Fleet::on(Etcd::start_tls());
    let backend = RedisServer::start();
    let (ca, cert, key) = (
        fleet.etcd.file("ca.pem"),
        fleet.etcd.file("client.pem"),
        fleet.etcd.file("client.key"),
    );
    let tls = ["--etcd-ca", &ca, "--etcd-cert", &cert, "--etcd-key", &key];
    let yaml = alpha(free_port(), &[&backend], "");
    // Without TLS, or with TLS but no client certificate: refused.
    let plain = fleet.try_publish(&yaml, &[]);
    assert!(!plain.status.success(), "{}", text(&plain));
    let no_cert = fleet.try_publish(&yaml, &["--etcd-ca", &ca]);
    assert!(!no_cert.status.success(), "{}", text(&no_cert));

    let revision = fleet.publish(&yaml, &tls);
    let one = fleet.member("one", free_port(), true, &tls);
    assert_eq!(one.revision(), revision);
    let mut client = one.client();
    assert_eq!(client.cmd(&["SET", "k", "v"]), Reply::ok());
    let table = fleet.keyway("fleet", &tls);
    assert!(
        text(&table).contains("1 of 1 instances serve it"),
        "{}",
        text(&table)
    );
    // A change published over TLS reaches the instance's TLS watch.
    let second = fleet.publish(&alpha(free_port(), &[&backend], "  hash: murmur\n"), &tls);
    converge(&[&one], second);
}
