//! Keyway run on a config file the test rewrites and reloads through the admin port, and what
//! a backend says about the connections it has from the proxy.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers fail by panicking

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::{
    encode, free_port, http, keyway_bin, signal, wait_until, Client, RedisServer, Reply, TempDir,
    START_TIMEOUT,
};

/// Keyway (`--threads threads`) started on a config file the test rewrites, with its admin
/// port; SIGTERM on drop.
pub struct Live {
    child: Child,
    conf: PathBuf,
    admin: u16,
    _dir: TempDir,
}

impl Live {
    /// Starts Keyway on `yaml_of(listen port)`, on a free port: ready once it listens there
    /// and its `/pools` shows that address, so a port another process took meanwhile (its
    /// listener would answer instead) is detected and another port tried.
    pub fn start_on_free_port(yaml_of: impl Fn(u16) -> String, threads: usize) -> (Live, u16) {
        for _ in 0..5 {
            let port = free_port();
            let live = Live::start(&yaml_of(port), port, threads);
            let mine = format!("\"listen\": \"127.0.0.1:{port}\"");
            if live.get("/pools").contains(&mine) {
                return (live, port);
            }
        }
        panic!("keyway did not start on any of 5 free ports");
    }

    /// Starts Keyway on `yaml`; ready once `first_listen` and the admin port accept.
    pub fn start(yaml: &str, first_listen: u16, threads: usize) -> Live {
        let dir = TempDir::new("live");
        let conf = dir.path().join("keyway.yml");
        std::fs::write(&conf, yaml).unwrap();
        let admin = free_port();
        let child = Command::new(keyway_bin())
            .arg("-c")
            .arg(&conf)
            .args(["--threads", &threads.to_string(), "-v", "4"])
            .args(["-s", &free_port().to_string(), "-a", "127.0.0.1"])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
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

    /// Writes `yaml` as the config file and asks for a reload: the status and the body.
    pub fn reload(&self, yaml: &str) -> (u16, String) {
        std::fs::write(&self.conf, yaml).unwrap();
        http(self.admin, "POST", "/reload")
    }

    /// `GET path` on the admin port.
    pub fn get(&self, path: &str) -> String {
        http(self.admin, "GET", path).1
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        signal(self.child.id(), "TERM");
        let _ = self.child.wait();
    }
}

/// The ids of `server`'s client connections other than the one asking (`CLIENT LIST`): the
/// proxy's connections, when only the proxy talks to it.
pub fn connection_ids(server: &RedisServer) -> BTreeSet<u64> {
    let reply = server.client().cmd(&["CLIENT", "LIST"]);
    let text = match reply {
        super::Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        other => panic!("CLIENT LIST answered {other:?}"),
    };
    text.lines()
        .filter(|line| !line.contains("cmd=client|list") && !line.contains("cmd=client "))
        .filter_map(|line| {
            line.split(' ')
                .find_map(|field| field.strip_prefix("id="))
                .and_then(|id| id.parse().ok())
        })
        .collect()
}

/// One client's load until `stop` (at most 100,000 rounds): pipelines of SET, GET, ECHO on its
/// own keys, every reply checked to be its own; explicit errors are counted in `errors`. The
/// rounds done.
pub fn pipelining_load(port: u16, id: usize, stop: Arc<AtomicBool>, errors: Arc<AtomicU64>) -> u64 {
    let mut client = Client::connect(&format!("127.0.0.1:{port}"));
    let mut rounds = 0u64;
    while !stop.load(Ordering::Relaxed) && rounds < 100_000 {
        let mut batch = Vec::new();
        for j in 0..10 {
            let key = format!("{{c{id}}}:{j}");
            let value = format!("{id}:{rounds}:{j}");
            batch.push(encode(&["SET", key.as_str(), value.as_str()]));
            batch.push(encode(&["GET", key.as_str()]));
            batch.push(encode(&["ECHO", value.as_str()]));
        }
        let replies = client.pipeline(&batch);
        assert_eq!(replies.len(), batch.len(), "client {id}: replies lost");
        for (j, triple) in replies.chunks(3).enumerate() {
            let value = format!("{id}:{rounds}:{j}");
            // ECHO is answered by the proxy itself: any other reply is someone else's.
            assert_eq!(
                triple[2],
                Reply::bulk(&value),
                "client {id}: mismatched reply"
            );
            match (&triple[0], &triple[1]) {
                (Reply::Simple(ok), Reply::Bulk(Some(v))) if ok == "OK" => {
                    // A GET may only see this client's own values.
                    assert!(
                        String::from_utf8_lossy(v).starts_with(&format!("{id}:")),
                        "client {id}: foreign value {v:?}"
                    );
                }
                (set, get) => {
                    // Explicit errors (and a GET that crossed a map change) are allowed.
                    assert!(
                        set.is_error() || get.is_error() || *get == Reply::nil(),
                        "client {id}: unexpected {set:?} / {get:?}"
                    );
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        rounds += 1;
    }
    rounds
}
