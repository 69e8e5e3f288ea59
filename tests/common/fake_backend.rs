//! A scripted fake Redis backend for faults a real `redis-server` cannot produce: garbage,
//! replies split into single bytes, cut replies and resets, extra replies, huge headers,
//! silence, trickles.
//!
//! It listens on a free loopback port. Each request it reads (a RESP array of bulk strings)
//! gets its normal reply — the request's last argument as a bulk string, so `GET k` answers
//! `$1\r\nk\r\n` and every reply shows which request it belongs to — unless a script was queued
//! with [`FakeBackend::next`]: the next request, on whichever connection it arrives, plays
//! that script instead. Threads only, bounded: every loop checks the stop flag, and dropping
//! the fake stops it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often a blocked connection thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Most bytes one connection buffers of requests it has not parsed yet.
const MAX_BUFFERED: usize = 1024 * 1024;

/// One step of a script played in answer to a request.
#[derive(Clone, Debug)]
pub enum Step {
    /// Writes these bytes in one write.
    Write(Vec<u8>),
    /// Writes these bytes `chunk` bytes at a time, pausing `pause` after each chunk.
    Trickle {
        /// The bytes.
        bytes: Vec<u8>,
        /// Bytes per write.
        chunk: usize,
        /// Pause after each write.
        pause: Duration,
    },
    /// Waits.
    Sleep(Duration),
    /// Closes the connection with a TCP reset (`SO_LINGER` 0); the script ends.
    Reset,
    /// Closes the connection normally; the script ends.
    Close,
    /// Answers nothing more on this connection: reads and drops until the peer closes.
    Silence,
}

/// Shared between the test and the fake's threads.
#[derive(Default)]
struct State {
    stop: AtomicBool,
    scripts: Mutex<VecDeque<Vec<Step>>>,
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// A running fake backend; stopped on drop.
pub struct FakeBackend {
    port: u16,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeBackend {
    /// Starts the fake on a free loopback port.
    pub fn start() -> FakeBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake backend");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let acceptor = thread::spawn(move || accept(listener, shared));
        FakeBackend {
            port,
            state,
            acceptor: Some(acceptor),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A `servers:` line for it.
    pub fn server_line(&self, name: &str) -> String {
        format!("127.0.0.1:{}:1 {name}", self.port)
    }

    /// The next request the fake reads plays `steps` instead of getting its normal reply.
    pub fn next(&self, steps: Vec<Step>) {
        self.state.scripts.lock().unwrap().push_back(steps);
    }

    /// Scripts queued and not yet played.
    pub fn pending_scripts(&self) -> usize {
        self.state.scripts.lock().unwrap().len()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Requests read so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept(listener: TcpListener, state: Arc<State>) {
    for stream in listener.incoming() {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let state = Arc::clone(&state);
        thread::spawn(move || serve(stream, &state));
    }
}

/// What a script left the connection as.
enum After {
    Open,
    Closed,
    Silent,
}

fn serve(mut stream: TcpStream, state: &State) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(POLL));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut silent = false;
    while !state.stop.load(Ordering::SeqCst) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(_) if silent => continue,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        loop {
            let request = match parse_request(&buf) {
                Ok(Some((args, used))) => {
                    buf.drain(..used);
                    args
                }
                Ok(None) if buf.len() > MAX_BUFFERED => return,
                Ok(None) => break,
                Err(()) => return,
            };
            state.requests.fetch_add(1, Ordering::SeqCst);
            let script = state.scripts.lock().unwrap().pop_front();
            let after = match script {
                Some(steps) => play(&mut stream, &steps, state),
                None => {
                    let last = request.last().cloned().unwrap_or_default();
                    match stream.write_all(&bulk(&last)) {
                        Ok(()) => After::Open,
                        Err(_) => After::Closed,
                    }
                }
            };
            match after {
                After::Open => {}
                After::Closed => return,
                After::Silent => {
                    silent = true;
                    buf.clear();
                    break;
                }
            }
        }
    }
}

fn play(stream: &mut TcpStream, steps: &[Step], state: &State) -> After {
    for step in steps {
        if state.stop.load(Ordering::SeqCst) {
            return After::Closed;
        }
        match step {
            Step::Write(bytes) => {
                if stream.write_all(bytes).is_err() {
                    return After::Closed;
                }
            }
            Step::Trickle {
                bytes,
                chunk,
                pause,
            } => {
                for piece in bytes.chunks((*chunk).max(1)) {
                    if state.stop.load(Ordering::SeqCst) || stream.write_all(piece).is_err() {
                        return After::Closed;
                    }
                    thread::sleep(*pause);
                }
            }
            Step::Sleep(pause) => thread::sleep(*pause),
            Step::Reset => {
                let _ = socket2::SockRef::from(&*stream).set_linger(Some(Duration::ZERO));
                return After::Closed;
            }
            Step::Close => {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return After::Closed;
            }
            Step::Silence => return After::Silent,
        }
    }
    After::Open
}

/// `$<len>\r\n<data>\r\n`.
pub fn bulk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A request's arguments and its length in bytes.
type Parsed = (Vec<Vec<u8>>, usize);

/// One RESP request (an array of bulk strings) at the start of `buf`; `Ok(None)` while
/// incomplete; `Err` on anything else.
fn parse_request(buf: &[u8]) -> Result<Option<Parsed>, ()> {
    let Some((count, mut at)) = number_line(buf, 0, b'*')? else {
        return Ok(None);
    };
    let mut args = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let Some((len, start)) = number_line(buf, at, b'$')? else {
            return Ok(None);
        };
        let end = start + len;
        match buf.get(end..end + 2) {
            None => return Ok(None),
            Some(b"\r\n") => {}
            Some(_) => return Err(()),
        }
        args.push(buf[start..end].to_vec());
        at = end + 2;
    }
    Ok(Some((args, at)))
}

/// `<kind><digits>\r\n` at `at`: the number and the offset after the line.
fn number_line(buf: &[u8], at: usize, kind: u8) -> Result<Option<(usize, usize)>, ()> {
    let Some(&first) = buf.get(at) else {
        return Ok(None);
    };
    if first != kind {
        return Err(());
    }
    let rest = &buf[at + 1..];
    let Some(nl) = rest.iter().position(|&c| c == b'\n') else {
        return if rest.len() > 32 { Err(()) } else { Ok(None) };
    };
    let digits = rest[..nl].strip_suffix(b"\r").ok_or(())?;
    let n = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or(())?;
    Ok(Some((n, at + 1 + nl + 1)))
}
