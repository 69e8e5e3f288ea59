//! Operating Keyway live: `POST /reload` and SIGHUP swap the shard maps without dropping a
//! client; a bad file changes nothing; `/metrics` counts the traffic.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::live::pipelining_load as load;
use common::*;

/// Keyway started on a config file the test rewrites, with its admin port.
struct Live {
    child: Child,
    conf: PathBuf,
    admin: u16,
    _dir: TempDir,
}

impl Live {
    fn start(yaml: &str, first_listen: u16) -> Live {
        let dir = TempDir::new("reload");
        let conf = dir.path().join("keyway.yml");
        std::fs::write(&conf, yaml).unwrap();
        let admin = free_port();
        let child = Command::new(keyway_bin())
            .arg("-c")
            .arg(&conf)
            .args(["--threads", "2", "-v", "4", "-s", &free_port().to_string()])
            .args(["-a", "127.0.0.1", "--admin", &format!("127.0.0.1:{admin}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let live = Live {
            child,
            conf,
            admin,
            _dir: dir,
        };
        let ready = wait_until(START_TIMEOUT, || {
            TcpStream::connect(("127.0.0.1", first_listen)).is_ok()
                && TcpStream::connect(("127.0.0.1", admin)).is_ok()
        });
        assert!(ready, "keyway did not start");
        live
    }

    fn rewrite(&self, yaml: &str) {
        std::fs::write(&self.conf, yaml).unwrap();
    }

    fn http(&self, method: &str, path: &str) -> (u16, String) {
        http(self.admin, method, path)
    }

    fn reload(&self, yaml: &str) -> (u16, String) {
        self.rewrite(yaml);
        self.http("POST", "/reload")
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        signal(self.child.id(), "TERM");
        let _ = self.child.wait();
    }
}

fn pool(name: &str, port: u16, servers: &[&RedisServer], extra: &str) -> String {
    let mut y = format!(
        "{name}:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 2000\n{extra}  servers:\n"
    );
    for (i, s) in servers.iter().enumerate() {
        y.push_str(&format!("   - 127.0.0.1:{}:1 s{i}\n", s.port()));
    }
    y
}

fn keys_on(server: &RedisServer) -> usize {
    server.keys().len()
}

#[test]
fn post_reload_adds_a_backend_and_the_new_map_is_in_force_when_it_answers() {
    let shards = start_redis_servers(2);
    let port = free_port();
    let live = Live::start(&pool("alpha", port, &[&shards[0]], ""), port);
    let mut client = Client::connect(&format!("127.0.0.1:{port}"));
    for i in 0..200 {
        assert_eq!(
            client.cmd(&["SET", &format!("before:{i}"), "v"]),
            Reply::ok()
        );
    }
    assert_eq!(keys_on(&shards[1]), 0);

    let (status, body) = live.reload(&pool("alpha", port, &[&shards[0], &shards[1]], ""));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("pool 'alpha': changed (servers)"), "{body}");
    assert!(body.contains("% of keys move"), "{body}");
    // The same client connection, right after the reply: the new backend takes its share.
    for i in 0..200 {
        assert_eq!(
            client.cmd(&["SET", &format!("after:{i}"), "v"]),
            Reply::ok()
        );
    }
    let moved = keys_on(&shards[1]);
    assert!(moved > 20, "the new backend got {moved} of 200 new keys");
    let (_, pools) = live.http("GET", "/pools");
    assert!(
        pools.contains(&format!("127.0.0.1:{}", shards[1].port())),
        "{pools}"
    );
}

#[test]
fn a_bad_file_answers_422_and_changes_nothing() {
    let shards = start_redis_servers(1);
    let port = free_port();
    let good = pool("alpha", port, &[&shards[0]], "");
    let live = Live::start(&good, port);
    let (status, body) = live.reload(&format!("{good}  hash: fnv9\n"));
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("pool 'alpha'") && body.contains("'hash'"),
        "{body}"
    );
    let mut client = Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(client.cmd(&["SET", "k", "v"]), Reply::ok());
    let (_, metrics) = live.http("GET", "/metrics");
    assert!(
        metrics.contains("keyway_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("keyway_config_generation 1"), "{metrics}");
}

#[test]
fn sighup_reloads_the_file() {
    let shards = start_redis_servers(1);
    let port = free_port();
    let second = free_port();
    let live = Live::start(&pool("alpha", port, &[&shards[0]], ""), port);
    live.rewrite(&format!(
        "{}{}",
        pool("alpha", port, &[&shards[0]], ""),
        pool("beta", second, &[&shards[0]], "")
    ));
    signal(live.child.id(), "HUP");
    let listening = wait_until(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", second)).is_ok()
    });
    assert!(listening, "SIGHUP should start pool beta's listener");
    let mut client = Client::connect(&format!("127.0.0.1:{second}"));
    assert_eq!(client.cmd(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn five_reloads_under_load_drop_no_client_and_mismatch_no_reply() {
    let shards = start_redis_servers(3);
    let (a, b, c) = (&shards[0], &shards[1], &shards[2]);
    let port = free_port();
    let extra_port = free_port();
    let live = Live::start(&pool("alpha", port, &[a, b], ""), port);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..50)
        .map(|id| {
            let (stop, errors) = (Arc::clone(&stop), Arc::clone(&errors));
            std::thread::spawn(move || load(port, id, stop, errors))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    let steps = [
        // gains a backend
        pool("alpha", port, &[a, b, c], ""),
        // loses one
        pool("alpha", port, &[a, c], ""),
        // changes hash
        pool("alpha", port, &[a, c], "  hash: murmur\n"),
        // adds a pool
        format!(
            "{}{}",
            pool("alpha", port, &[a, c], "  hash: murmur\n"),
            pool("extra", extra_port, &[b], "")
        ),
        // removes it again
        pool("alpha", port, &[a, c], "  hash: murmur\n"),
    ];
    for (i, yaml) in steps.iter().enumerate() {
        let (status, body) = live.reload(yaml);
        assert_eq!(status, 200, "reload {i}: {body}");
        if i == 3 {
            let mut extra = Client::connect(&format!("127.0.0.1:{extra_port}"));
            assert_eq!(extra.cmd(&["SET", "x", "1"]), Reply::ok());
            assert_eq!(b.client().cmd(&["GET", "x"]), Reply::bulk("1"));
        }
        if i == 1 {
            // A bad file mid-run changes nothing and says why.
            let (status, body) = live.reload(&format!("{yaml}  distribution: nope\n"));
            assert_eq!(status, 422, "{body}");
            assert!(body.contains("'distribution'"), "{body}");
            live.rewrite(yaml);
        }
        if i == 4 {
            assert!(
                TcpStream::connect(("127.0.0.1", extra_port)).is_err(),
                "the removed pool must stop listening"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The last map is in force: keys written now land only on a and c.
    let before_b = keys_on(b);
    let mut probe = Client::connect(&format!("127.0.0.1:{port}"));
    for i in 0..100 {
        assert_eq!(probe.cmd(&["SET", &format!("probe:{i}"), "v"]), Reply::ok());
    }
    assert_eq!(keys_on(b), before_b, "backend b left the pool");

    stop.store(true, Ordering::Relaxed);
    let mut rounds = 0;
    for client in clients {
        rounds += client.join().expect("a client thread failed");
    }
    assert!(
        rounds > 50,
        "the clients made little progress: {rounds} rounds"
    );
    let (_, metrics) = live.http("GET", "/metrics");
    assert!(metrics.contains("keyway_config_generation 6"), "{metrics}");
    assert!(
        metrics.contains("keyway_reloads_total{result=\"ok\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyway_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
    eprintln!(
        "{rounds} rounds of 30 commands, {} explicit errors or map-crossing misses",
        errors.load(Ordering::Relaxed)
    );
}

/// Reads `name{labels} value` from Prometheus text.
fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name_and_labels} in:\n{metrics}"))
}

#[test]
fn metrics_count_requests_per_backend_and_latency_per_pool() {
    let shards = start_redis_servers(2);
    let port = free_port();
    let live = Live::start(&pool("alpha", port, &[&shards[0], &shards[1]], ""), port);
    let (_, before) = live.http("GET", "/metrics");
    for line in before
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("series value");
        assert!(series.starts_with("keyway_"), "{line}");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
    }
    let mut client = Client::connect(&format!("127.0.0.1:{port}"));
    for i in 0..100 {
        client.cmd(&["SET", &format!("k{i}"), "v"]);
    }
    // Short similar keys crowd together under nutcracker's fnv1a_64: spread them.
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    client.cmd(&mget);
    let (_, after) = live.http("GET", "/metrics");
    let requests: f64 = ["s0", "s1"]
        .iter()
        .map(|b| {
            sample(
                &after,
                &format!("keyway_requests_total{{backend=\"{b}\",pool=\"alpha\"}}"),
            )
        })
        .sum();
    assert!(requests >= 101.0, "requests {requests}");
    assert!(sample(&after, "keyway_fragments_total{pool=\"alpha\"}") >= 2.0);
    assert!(
        sample(
            &after,
            "keyway_request_duration_seconds_count{pool=\"alpha\"}"
        ) >= 101.0
    );
    assert_eq!(
        sample(&after, "keyway_client_connections{pool=\"alpha\"}"),
        1.0
    );
}
