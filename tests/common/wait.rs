//! Hang bounds and polling: how long to wait for a process or a reply, and readiness probes.

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// How long a client waits for any one reply before the test fails: a hang bound, not a timing.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a process may take to accept connections after being started.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `f` every 20 ms until it returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// True when something at `addr` answers a PING with any reply (+PONG, or -NOAUTH...).
pub(crate) fn answers_ping(addr: &str) -> bool {
    let Ok(stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut client = Client::from_stream(stream);
    if client.try_send_raw(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    client.try_read_reply().is_ok()
}
