//! A tiny blocking RESP2 client that can talk to the proxy and to a backend alike.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use super::*;

/// A RESP2 reply.
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    pub fn bulk(b: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(Some(b.as_ref().to_vec()))
    }

    pub fn nil() -> Reply {
        Reply::Bulk(None)
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The error text (without `-`), or panics.
    pub fn error_text(&self) -> &str {
        match self {
            Reply::Error(e) => e,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    pub fn int(&self) -> i64 {
        match self {
            Reply::Int(i) => *i,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }

    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) => items,
            other => panic!("expected an array reply, got {other:?}"),
        }
    }

    /// The wire form of this reply.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }

    fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            Reply::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
            Reply::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(b)) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(Some(items)) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for i in items {
                    i.write_to(out);
                }
            }
        }
    }

    /// Same reply with arrays sorted recursively: for replies whose order Redis leaves undefined.
    pub fn sorted(&self) -> Reply {
        match self {
            Reply::Array(Some(items)) => {
                let mut items: Vec<Reply> = items.iter().map(Reply::sorted).collect();
                items.sort_by_key(Reply::to_bytes);
                Reply::Array(Some(items))
            }
            other => other.clone(),
        }
    }
}

/// Printable form of binary data.
pub fn show(b: &[u8]) -> String {
    if b.len() > 200 {
        return format!("{}...({} bytes)", show(&b[..200]), b.len());
    }
    b.escape_ascii().to_string()
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Simple(s) => write!(f, "+{s}"),
            Reply::Error(s) => write!(f, "-{s}"),
            Reply::Int(i) => write!(f, ":{i}"),
            Reply::Bulk(None) => write!(f, "(nil)"),
            Reply::Bulk(Some(b)) => write!(f, "\"{}\"", show(b)),
            Reply::Array(None) => write!(f, "(nil array)"),
            Reply::Array(Some(items)) => f.debug_list().entries(items).finish(),
        }
    }
}

/// A multibulk request.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Why a reply could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed (EOF or reset): an acceptable answer to garbage.
    Closed,
    /// No complete reply within the read timeout: a hang.
    Timeout,
    /// Bytes that are not RESP.
    Protocol(String),
    Io(io::Error),
}

pub(crate) fn parse_line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = &buf[from..];
    let nl = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..nl], from + nl + 2))
}

pub(crate) fn parse_int(line: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad integer {:?}", show(line)))
}

/// Parses one reply at `from`: Ok(None) if incomplete, else the reply and the end offset.
pub fn parse_reply(buf: &[u8], from: usize) -> Result<Option<(Reply, usize)>, String> {
    if from >= buf.len() {
        return Ok(None);
    }
    let Some((line, next)) = parse_line(buf, from + 1) else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    match buf[from] {
        b'+' => Ok(Some((Reply::Simple(text()), next))),
        b'-' => Ok(Some((Reply::Error(text()), next))),
        b':' => Ok(Some((Reply::Int(parse_int(line)?), next))),
        b'$' => {
            let len = parse_int(line)?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), next)));
            }
            let end = next + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err("bulk string not followed by CRLF".into());
            }
            Ok(Some((Reply::Bulk(Some(buf[next..end].to_vec())), end + 2)))
        }
        // RESP3, read into the RESP2 shapes (tests compare raw bytes where the type matters):
        // null as nil, booleans as integers, doubles and big numbers as simple strings.
        b'_' => Ok(Some((Reply::Bulk(None), next))),
        b'#' => Ok(Some((Reply::Int(i64::from(line == b"t")), next))),
        b',' | b'(' => Ok(Some((Reply::Simple(text()), next))),
        // Arrays, pushes, sets, and maps (their keys and values in turn).
        b'*' | b'>' | b'~' | b'%' => {
            let mut len = parse_int(line)?;
            if len < 0 {
                return Ok(Some((Reply::Array(None), next)));
            }
            if buf[from] == b'%' {
                len *= 2;
            }
            let mut items = Vec::with_capacity(len.min(1024) as usize);
            let mut pos = next;
            for _ in 0..len {
                match parse_reply(buf, pos)? {
                    Some((r, p)) => {
                        items.push(r);
                        pos = p;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), pos)))
        }
        other => Err(format!("unexpected reply type byte {:?}", show(&[other]))),
    }
}

/// A blocking RESP client with a 10 s read timeout; panics (failing the test) on hangs.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    last_raw: Option<Vec<u8>>,
}

impl Client {
    pub fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("set_write_timeout");
        let _ = stream.set_nodelay(true);
        Client {
            stream,
            buf: Vec::new(),
            pos: 0,
            last_raw: None,
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

    /// Sends one command and reads its reply.
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        self.send(args);
        match self.try_read_reply() {
            Ok(r) => r,
            Err(e) => {
                let shown: Vec<String> = args.iter().map(|a| show(a.as_ref())).collect();
                panic!("no reply to {shown:?}: {e:?}")
            }
        }
    }

    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        self.send_raw(&encode(args));
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes)
            .unwrap_or_else(|e| panic!("write {} bytes: {e}", bytes.len()));
    }

    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    pub fn read_reply(&mut self) -> Reply {
        self.try_read_reply()
            .unwrap_or_else(|e| panic!("reading a reply: {e:?}"))
    }

    /// The exact bytes of the next reply.
    pub fn read_reply_raw(&mut self) -> Vec<u8> {
        let _ = self.read_reply();
        self.last_raw
            .take()
            .expect("read_reply stores the raw bytes")
    }

    pub fn try_read_reply(&mut self) -> Result<Reply, ReadError> {
        loop {
            match parse_reply(&self.buf, self.pos) {
                Ok(Some((reply, end))) => {
                    self.last_raw = Some(self.buf[self.pos..end].to_vec());
                    self.pos = end;
                    if self.pos == self.buf.len() {
                        self.buf.clear();
                        self.pos = 0;
                    }
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(ReadError::Protocol(e)),
            }
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ReadError::Timeout)
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return Err(ReadError::Closed)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// Sends all `requests` in one write from a helper thread while reading their replies here,
    /// so that neither side's socket buffer can deadlock a big pipeline.
    pub fn pipeline(&mut self, requests: &[Vec<u8>]) -> Vec<Reply> {
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

    /// Half-closes and drops the connection.
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
