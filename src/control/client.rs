//! A small RESP client for the control plane: one connection to a Sentinel or a cluster node,
//! one command at a time (or a subscription), every step under a time bound.

use std::io;
use std::time::Duration;

use crate::timer::timeout;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{HostPort, PoolConfig};
use crate::protocol::resp::{ReplyScanner, Request};
use crate::security::tls::BackendTls;

/// How the control plane reaches a pool's Sentinels or cluster nodes: the password it sends
/// and the pool's `server_tls`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// Sent with `AUTH` after connecting.
    pub auth: Option<String>,
    /// TLS over the connection, verifying the server.
    pub tls: Option<BackendTls>,
}

impl Access {
    /// `pool`'s TLS with `auth` as the password.
    pub fn of(pool: &PoolConfig, auth: Option<&str>) -> Access {
        Access {
            auth: auth.map(str::to_owned),
            tls: pool.server_tls.clone(),
        }
    }
}

/// A control connection's byte stream: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why a server could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    /// The TLS handshake failed (the server's certificate did not verify, or it refused ours).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The connection broke while talking.
    #[error("connection failed: {0}")]
    Io(io::Error),
    /// No answer within the bound.
    #[error("timed out")]
    Timeout,
    /// The server closed the connection.
    #[error("connection closed")]
    Closed,
    /// The server sent something that is not the expected RESP reply.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The server answered with an error (e.g. a wrong password).
    #[error("error reply: {0}")]
    Refused(String),
}

/// One reply, as much of RESP2 as the control plane's questions need (RESP3's null too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+text`
    Simple(String),
    /// `-text`
    Error(String),
    /// `:n`
    Int(i64),
    /// `$n` bulk string; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*n` array; `None` for the null array.
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The value as text: a bulk or simple string (lossy UTF-8), or an integer's digits.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Simple(text) => Some(text.clone()),
            Value::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            Value::Int(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The value as an integer: an integer, or a string of digits.
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            other => other.text()?.parse().ok(),
        }
    }

    /// The items of a non-null array.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Array(Some(items)) => Some(items),
            _ => None,
        }
    }
}

/// A connection to one server.
pub struct Connection {
    stream: Box<dyn Io>,
    buf: BytesMut,
    scanner: ReplyScanner,
    timeout: Duration,
    max_reply: usize,
}

impl Connection {
    /// Connects (under `limit`, TLS included), and authenticates when `access` has a
    /// password. Each later call is bound by `limit` too, and a reply longer than `max_reply`
    /// bytes is refused.
    ///
    /// # Errors
    /// The server could not be reached in time, failed TLS verification, or refused the
    /// password.
    pub async fn open(
        addr: &HostPort,
        access: &Access,
        limit: Duration,
        max_reply: usize,
    ) -> Result<Connection, Error> {
        let host = addr.host.trim_start_matches('[').trim_end_matches(']');
        let connect = async {
            let stream = TcpStream::connect((host, addr.port))
                .await
                .map_err(Error::Connect)?;
            let _ = stream.set_nodelay(true);
            let stream: Box<dyn Io> = match &access.tls {
                None => Box::new(stream),
                Some(tls) => match tls.connect(&addr.host, stream).await {
                    Ok(stream) => Box::new(stream),
                    Err(reason) => {
                        tracing::warn!(server = %addr, %reason, "TLS handshake failed");
                        return Err(Error::Tls(reason));
                    }
                },
            };
            Ok(stream)
        };
        let stream = timeout(limit, connect)
            .await
            .map_err(|_| Error::Timeout)??;
        let mut connection = Connection {
            stream,
            buf: BytesMut::with_capacity(512),
            scanner: ReplyScanner::default(),
            timeout: limit,
            max_reply,
        };
        if let Some(password) = &access.auth {
            match connection.call(&[b"AUTH", password.as_bytes()]).await? {
                Value::Simple(_) => {}
                other => return Err(unexpected(other)),
            }
        }
        Ok(connection)
    }

    /// Sends one command.
    ///
    /// # Errors
    /// The write failed or timed out.
    pub async fn send(&mut self, args: &[&[u8]]) -> Result<(), Error> {
        let request = Request::from_args(args.iter().copied());
        let write = async {
            self.stream.write_all(request.frame()).await?;
            self.stream.flush().await
        };
        timeout(self.timeout, write)
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(Error::Io)
    }

    /// Sends one command and reads its reply.
    ///
    /// # Errors
    /// The exchange failed, timed out, or the reply is not RESP.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Value, Error> {
        self.send(args).await?;
        timeout(self.timeout, self.read())
            .await
            .map_err(|_| Error::Timeout)?
    }

    /// The next reply, however long it takes. Cancel-safe: a partly read reply stays buffered.
    ///
    /// # Errors
    /// The connection failed or closed, or the reply is not RESP or too long.
    pub async fn read(&mut self) -> Result<Value, Error> {
        loop {
            let scanned = self
                .scanner
                .scan(&self.buf)
                .map_err(|e| Error::Protocol(e.to_string()))?;
            if let Some(len) = scanned {
                let frame = self.buf.split_to(len);
                self.scanner = ReplyScanner::default();
                return match parse_value(&frame) {
                    Some((value, _)) => Ok(value),
                    None => Err(Error::Protocol("malformed reply".into())),
                };
            }
            if self.buf.len() > self.max_reply {
                return Err(Error::Protocol(format!(
                    "reply longer than {} bytes",
                    self.max_reply
                )));
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err(Error::Closed),
                Ok(_) => {}
                Err(error) => return Err(Error::Io(error)),
            }
        }
    }
}

/// The error for a reply of the wrong shape: the server's own error text when it sent one.
pub fn unexpected(value: Value) -> Error {
    match value {
        Value::Error(text) => Error::Refused(text),
        other => Error::Protocol(format!("{other:?}")),
    }
}

/// Parses one complete RESP2 reply at the start of `frame` (RESP3's null too): the value and
/// the bytes it took. `None` when the bytes are not a reply of that shape.
pub fn parse_value(frame: &[u8]) -> Option<(Value, usize)> {
    let kind = *frame.first()?;
    let line_end = memchr::memmem::find(frame, b"\r\n")?;
    let line = std::str::from_utf8(frame.get(1..line_end)?).ok()?;
    let next = line_end + 2;
    match kind {
        b'+' => Some((Value::Simple(line.to_owned()), next)),
        b'-' => Some((Value::Error(line.to_owned()), next)),
        b':' => Some((Value::Int(line.parse().ok()?), next)),
        b'_' => Some((Value::Bulk(None), next)),
        b'$' => {
            let len: i64 = line.parse().ok()?;
            let Ok(len) = usize::try_from(len) else {
                return Some((Value::Bulk(None), next));
            };
            let end = next.checked_add(len)?;
            let data = frame.get(next..end)?;
            if frame.get(end..end + 2)? != b"\r\n" {
                return None;
            }
            Some((Value::Bulk(Some(data.to_vec())), end + 2))
        }
        b'*' => {
            let len: i64 = line.parse().ok()?;
            let Ok(len) = usize::try_from(len) else {
                return Some((Value::Array(None), next));
            };
            let mut items = Vec::with_capacity(len.min(16));
            let mut at = next;
            for _ in 0..len {
                let (item, used) = parse_value(frame.get(at..)?)?;
                items.push(item);
                at += used;
            }
            Some((Value::Array(Some(items)), at))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        assert_eq!(
            parse_value(b"+OK\r\n"),
            Some((Value::Simple("OK".into()), 5))
        );
        assert_eq!(
            parse_value(b"-ERR no\r\n"),
            Some((Value::Error("ERR no".into()), 9))
        );
        assert_eq!(parse_value(b":12\r\n"), Some((Value::Int(12), 5)));
        assert_eq!(parse_value(b"*-1\r\n"), Some((Value::Array(None), 5)));
        assert_eq!(parse_value(b"$-1\r\n"), Some((Value::Bulk(None), 5)));
        assert_eq!(
            parse_value(b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n").map(|(v, _)| v),
            Some(Value::Array(Some(vec![
                Value::Bulk(Some(b"127.0.0.1".to_vec())),
                Value::Bulk(Some(b"6379".to_vec()))
            ])))
        );
        assert_eq!(parse_value(b"*2\r\n$9\r\n127.0.0.1\r\n"), None);
        assert_eq!(parse_value(b"$3\r\nabcd\r\n"), None);
        assert_eq!(parse_value(b"?x\r\n"), None);
    }
}
