//! `memcached` processes and a blocking memcached ASCII client.

use std::collections::HashSet;
use std::fs::{self};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use super::*;

/// True when the process is root: memcached then refuses to start without `-u`.
fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// True when something at `addr` answers `version\r\n` with a complete line (memcached, or a
/// memcached pool of either proxy).
pub(crate) fn answers_version(addr: &str) -> bool {
    let Ok(stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut client = McClient::from_stream(stream);
    if client.try_send(b"version\r\n").is_err() {
        return false;
    }
    client.try_read_reply().is_ok()
}

/// A `memcached` on a loopback address, killed by PID on drop.
pub struct MemcachedServer {
    daemon: Daemon,
    host: String,
    port: u16,
    extra: Vec<String>,
    dir: TempDir,
}

impl MemcachedServer {
    /// On 127.0.0.1 and a free port.
    pub fn start() -> MemcachedServer {
        MemcachedServer::start_with(&[])
    }

    /// With extra `memcached` options, e.g. `&["-I", "2m"]`.
    pub fn start_with(extra: &[&str]) -> MemcachedServer {
        let mut last_log = String::new();
        for _ in 0..3 {
            match MemcachedServer::try_start_at("127.0.0.1", free_port(), extra) {
                Ok(server) => return server,
                // most likely the port was taken between free_port() and bind: try another
                Err(log) => last_log = log,
            }
        }
        panic!("memcached did not start after 3 attempts; output:\n{last_log}");
    }

    /// On exactly `host:port` (bound to that address only, not 0.0.0.0); the output on failure.
    pub fn try_start_at(host: &str, port: u16, extra: &[&str]) -> Result<MemcachedServer, String> {
        let mut server = MemcachedServer {
            daemon: Daemon::default(),
            host: host.to_string(),
            port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir: TempDir::new("memcached"),
        };
        if server.spawn() {
            Ok(server)
        } else {
            Err(tail(&server.log_path(), 2000))
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("memcached.log")
    }

    /// Spawns on `host:port` and waits for `version`; false if it exits or never answers.
    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new(memcached_bin());
        cmd.args(["-p", &self.port.to_string(), "-l", &self.host, "-U", "0"]);
        if running_as_root() {
            cmd.args(["-u", "nobody"]);
        }
        cmd.args(&self.extra);
        let addr = self.addr();
        let log = self.log_path();
        self.daemon.start(&mut cmd, &log, || answers_version(&addr))
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// A direct connection to this backend.
    pub fn client(&self) -> McClient {
        McClient::connect(&self.addr())
    }

    /// A `servers:` line: `host:port:weight [name]`.
    pub fn server_line(&self, weight: u32, name: Option<&str>) -> String {
        match name {
            Some(n) => format!("{}:{weight} {n}", self.addr()),
            None => format!("{}:{weight}", self.addr()),
        }
    }

    /// Freezes the process (SIGSTOP): connections are accepted by the kernel, nothing answers.
    pub fn pause(&self) {
        self.daemon.pause();
    }

    pub fn resume(&self) {
        self.daemon.resume();
    }

    /// SIGKILL and reap: the port is closed afterwards.
    pub fn kill(&mut self) {
        self.daemon.kill();
    }

    /// Starts a new (empty) memcached on the same address after `kill`.
    pub fn restart(&mut self) {
        self.kill();
        let ok = wait_until(START_TIMEOUT, || self.spawn());
        assert!(
            ok,
            "memcached did not restart on {}; output:\n{}",
            self.addr(),
            tail(&self.log_path(), 2000)
        );
    }

    /// The value of `key`, read directly from this backend.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let reply = self
            .client()
            .request(&[b"get ".as_slice(), key, b"\r\n"].concat());
        let values = parse_values(&reply);
        assert!(values.len() <= 1, "get {} -> {}", show(key), show(&reply));
        values.into_iter().next().map(|(_, value)| value)
    }

    /// Which of `keys` this backend holds (multi-key `get`s of 100 keys, pipelined).
    pub fn holding(&self, keys: &[Vec<u8>]) -> HashSet<Vec<u8>> {
        self.values(keys).into_iter().map(|(key, _)| key).collect()
    }

    /// The `(key, value)` pairs of `keys` this backend holds, in `keys` order.
    pub fn values(&self, keys: &[Vec<u8>]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let requests: Vec<Vec<u8>> = keys
            .chunks(100)
            .map(|chunk| {
                let mut line = b"get".to_vec();
                for k in chunk {
                    line.push(b' ');
                    line.extend_from_slice(k);
                }
                line.extend_from_slice(b"\r\n");
                line
            })
            .collect();
        let replies = self.client().pipeline(&requests);
        replies.iter().flat_map(|r| parse_values(r)).collect()
    }

    pub fn flush_all(&self) {
        assert_eq!(self.client().request(b"flush_all\r\n"), b"OK\r\n");
    }
}

/// Starts `n` memcached servers on 127.0.0.1 concurrently.
pub fn start_memcached_servers(n: usize) -> Vec<MemcachedServer> {
    let handles: Vec<_> = (0..n)
        .map(|_| thread::spawn(MemcachedServer::start))
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("memcached start thread"))
        .collect()
}

fn handed_out_hosts() -> &'static Mutex<HashSet<u8>> {
    static HOSTS: OnceLock<Mutex<HashSet<u8>>> = OnceLock::new();
    HOSTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A memcached on `127.0.0.X:11211` (Linux routes all of 127/8 to loopback), on an address
/// whose port 11211 is free, never handed out twice in this test binary. Exercises
/// nutcracker's rule that an unnamed server on port 11211 is named by its host alone.
pub fn start_memcached_on_default_port() -> MemcachedServer {
    let mut errors = Vec::new();
    // a per-process starting point, so that concurrent test runs rarely try the same address
    let first = 2 + (std::process::id() % 200) as u8;
    for offset in 0..250u16 {
        let x = 2 + ((u16::from(first) - 2 + offset) % 252) as u8;
        if !handed_out_hosts().lock().unwrap().insert(x) {
            continue;
        }
        let host = format!("127.0.0.{x}");
        if TcpListener::bind((host.as_str(), 11211)).is_err() {
            continue;
        }
        match MemcachedServer::try_start_at(&host, 11211, &[]) {
            Ok(server) => return server,
            Err(log) => errors.push(format!("{host}: {log}")),
        }
        if errors.len() >= 3 {
            break;
        }
    }
    panic!(
        "no memcached could start on 127.0.0.X:11211:\n{}",
        errors.join("\n")
    );
}

/// The `(key, value)` pairs of a `VALUE ... END` reply, in order.
pub fn parse_values(reply: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some((line, next)) = parse_line(reply, pos) {
        if line == b"END" {
            assert_eq!(next, reply.len(), "bytes after END in {}", show(reply));
            return out;
        }
        let tokens: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
        assert!(
            tokens.len() >= 4 && tokens[0] == b"VALUE",
            "not a retrieval reply: {}",
            show(reply)
        );
        let len: usize = parse_int(tokens[3]).expect("VALUE length") as usize;
        out.push((tokens[1].to_vec(), reply[next..next + len].to_vec()));
        pos = next + len + 2;
    }
    panic!("retrieval reply without END: {}", show(reply));
}

/// The end offset of one complete memcached reply starting at `from`, `None` if incomplete:
/// a line; `VALUE` blocks up to `END`; or a meta `VA <len>` line and its data block.
pub fn mc_reply_end(buf: &[u8], from: usize) -> Result<Option<usize>, String> {
    let mut pos = from;
    loop {
        let Some((line, next)) = parse_line(buf, pos) else {
            return Ok(None);
        };
        let tokens: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
        let data = match tokens[0] {
            b"VALUE" if tokens.len() >= 4 => Some(parse_int(tokens[3])?),
            b"VA" if tokens.len() >= 2 => Some(parse_int(tokens[1])?),
            _ => None,
        };
        let end = match data {
            Some(len) => {
                let end = next + len as usize + 2;
                if buf.len() < end {
                    return Ok(None);
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return Err(format!("data block not followed by CRLF: {}", show(buf)));
                }
                end
            }
            None => next,
        };
        if tokens[0] == b"VALUE" {
            pos = end;
            continue;
        }
        return Ok(Some(end));
    }
}

/// A blocking memcached ASCII client with a 10 s read timeout; replies are raw bytes.
pub struct McClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl McClient {
    pub fn connect(addr: &str) -> McClient {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        McClient::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> McClient {
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("set_write_timeout");
        let _ = stream.set_nodelay(true);
        McClient {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream
            .set_read_timeout(Some(t))
            .expect("set_read_timeout");
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("write {} bytes: {e}", bytes.len()));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends one request and reads its one reply.
    pub fn request(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.send(bytes);
        self.try_read_reply()
            .unwrap_or_else(|e| panic!("no reply to {}: {e:?}", show(bytes)))
    }

    pub fn read_reply(&mut self) -> Vec<u8> {
        self.try_read_reply()
            .unwrap_or_else(|e| panic!("reading a reply: {e:?}"))
    }

    /// The exact bytes of the next complete reply.
    pub fn try_read_reply(&mut self) -> Result<Vec<u8>, ReadError> {
        loop {
            match mc_reply_end(&self.buf, 0) {
                Ok(Some(end)) => return Ok(self.buf.drain(..end).collect()),
                Ok(None) => {}
                Err(e) => return Err(ReadError::Protocol(e)),
            }
            self.fill()?;
        }
    }

    /// Reads more bytes into the buffer.
    fn fill(&mut self) -> Result<(), ReadError> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            return match self.stream.read(&mut chunk) {
                Ok(0) => Err(ReadError::Closed),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    Ok(())
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    Err(ReadError::Timeout)
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                    ) =>
                {
                    Err(ReadError::Closed)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(ReadError::Io(e)),
            };
        }
    }

    /// Replies up to and including the next `MN\r\n`, excluding it: send requests followed by
    /// `mn\r\n` to collect however many replies they produce (none for `noreply`).
    pub fn read_until_mn(&mut self) -> Vec<Vec<u8>> {
        let mut replies = Vec::new();
        loop {
            let reply = self
                .try_read_reply()
                .unwrap_or_else(|e| panic!("reading replies up to MN, after {replies:?}: {e:?}"));
            if reply == b"MN\r\n" {
                return replies;
            }
            replies.push(reply);
        }
    }

    /// Sends `bytes` followed by `mn\r\n` in one write (from a helper thread, so that a big
    /// pipeline cannot deadlock on socket buffers) and returns the replies before `MN`.
    pub fn exchange(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let all = [bytes, b"mn\r\n"].concat();
        let mut writer = self.stream.try_clone().expect("clone stream");
        let handle = thread::spawn(move || writer.write_all(&all).and_then(|_| writer.flush()));
        let replies = self.read_until_mn();
        handle
            .join()
            .expect("writer thread")
            .expect("exchange write");
        replies
    }

    /// Sends all `requests` in one write from a helper thread while reading one reply each.
    pub fn pipeline(&mut self, requests: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let all: Vec<u8> = requests.concat();
        let mut writer = self.stream.try_clone().expect("clone stream");
        let handle = thread::spawn(move || writer.write_all(&all).and_then(|_| writer.flush()));
        let mut replies = Vec::with_capacity(requests.len());
        for i in 0..requests.len() {
            match self.try_read_reply() {
                Ok(r) => replies.push(r),
                Err(e) => panic!("pipeline: reply {i} of {} missing: {e:?}", requests.len()),
            }
        }
        handle
            .join()
            .expect("writer thread")
            .expect("pipeline write");
        replies
    }

    /// Everything the peer sends until it closes, or `Err(Timeout)` if it neither closes nor
    /// sends within the read timeout.
    pub fn read_to_close(&mut self) -> Result<Vec<u8>, ReadError> {
        loop {
            match self.fill() {
                Ok(()) => {}
                Err(ReadError::Closed) => return Ok(std::mem::take(&mut self.buf)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Bytes received but not yet returned as a reply.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }
}
