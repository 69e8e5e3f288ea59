//! The stats JSON's per-server `in_queue`, `in_queue_bytes`, `out_queue` and `out_queue_bytes`
//! (nutcracker's names) are true: requests written to a stopped backend show as out, a request
//! too big for the socket buffers shows as in, and everything drains back to 0 once the
//! backend answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// Keyway with its stats read live (`-i 0`) and one worker thread.
struct LiveStats {
    child: Child,
    listen: u16,
    stats: u16,
    _dir: TempDir,
}

impl LiveStats {
    fn start(servers: &[String]) -> LiveStats {
        let dir = TempDir::new("queues");
        let (listen, stats) = (free_port(), free_port());
        let conf = dir.path().join("nutcracker.yml");
        let yaml = pool_yaml(listen, servers, &[("timeout", "30000")]);
        std::fs::write(&conf, yaml).unwrap();
        let child = Command::new(keyway_bin())
            .arg("-c")
            .arg(&conf)
            .args(["-s", &stats.to_string(), "-i", "0", "-v", "3"])
            .args([
                "--threads",
                "1",
                "--admin",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let up = wait_until(START_TIMEOUT, || {
            TcpStream::connect(("127.0.0.1", listen)).is_ok()
                && TcpStream::connect(("127.0.0.1", stats)).is_ok()
        });
        assert!(up, "keyway did not start");
        LiveStats {
            child,
            listen,
            stats,
            _dir: dir,
        }
    }

    fn client(&self) -> Client {
        Client::connect(&format!("127.0.0.1:{}", self.listen))
    }

    /// `in_queue`, `in_queue_bytes`, `out_queue`, `out_queue_bytes` of server `name`.
    fn queues(&self, name: &str) -> [u64; 4] {
        let mut stream = TcpStream::connect(("127.0.0.1", self.stats)).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut json = String::new();
        stream.read_to_string(&mut json).unwrap();
        let at = json
            .find(&format!("\"{name}\":"))
            .unwrap_or_else(|| panic!("server {name} in {json}"));
        let server = &json[at..];
        let server = &server[..server.find('}').unwrap()];
        ["in_queue", "in_queue_bytes", "out_queue", "out_queue_bytes"].map(|field| {
            let key = format!("\"{field}\":");
            let start = server
                .find(&key)
                .unwrap_or_else(|| panic!("{key} in {server}"))
                + key.len();
            let digits: String = server[start..]
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().unwrap()
        })
    }
}

impl Drop for LiveStats {
    fn drop(&mut self) {
        signal(self.child.id(), "KILL");
        let _ = self.child.wait();
    }
}

#[test]
fn requests_held_by_a_stopped_backend_show_in_out_queue_then_drain() {
    let redis = RedisServer::start();
    let proxy = LiveStats::start(&[server_line(&redis, 1, Some("s0"))]);
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(proxy.queues("s0"), [0, 0, 0, 0], "idle");

    redis.pause();
    let frame = encode(&["GET", "k"]);
    for _ in 0..5 {
        c.send_raw(&frame);
    }
    let want = [0, 0, 5, 5 * frame.len() as u64];
    let mut seen = [0; 4];
    let shown = wait_until(Duration::from_secs(10), || {
        seen = proxy.queues("s0");
        seen == want
    });
    redis.resume();
    assert!(
        shown,
        "5 GETs written to a stopped backend: queues {seen:?}, want {want:?}"
    );
    for _ in 0..5 {
        assert_eq!(c.read_reply(), Reply::bulk("v"));
    }
    let drained = wait_until(Duration::from_secs(10), || {
        seen = proxy.queues("s0");
        seen == [0, 0, 0, 0]
    });
    assert!(drained, "after the replies: queues {seen:?}");
}

#[test]
fn a_request_bigger_than_the_socket_buffers_shows_in_in_queue() {
    let redis = RedisServer::start();
    let proxy = LiveStats::start(&[server_line(&redis, 1, Some("s0"))]);
    let mut c = proxy.client();
    redis.pause();
    // 32 MiB cannot all fit in loopback socket buffers: part of it stays unwritten.
    let value = vec![b'v'; 32 * 1024 * 1024];
    let frame = encode(&[b"SET".as_slice(), b"big", &value]);
    let mut writer = c.stream().try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&frame).unwrap();
    });
    let mut seen = [0; 4];
    let shown = wait_until(Duration::from_secs(20), || {
        seen = proxy.queues("s0");
        seen[0] == 1 && seen[1] > 0 && seen[3] > 0
    });
    redis.resume();
    sender.join().unwrap();
    assert!(
        shown,
        "a 32 MiB SET to a stopped backend: in_queue 1 with bytes left, some bytes out: {seen:?}"
    );
    assert_eq!(c.read_reply(), Reply::ok());
    let drained = wait_until(Duration::from_secs(10), || {
        seen = proxy.queues("s0");
        seen == [0, 0, 0, 0]
    });
    assert!(drained, "after the reply: queues {seen:?}");
}
