//! One task per client: decode requests → classify → route → dispatch to backend
//! connections → write replies strictly in request order.
//!
//! Replies are kept in a FIFO of [`Pending`] entries, one per request; the head is written as
//! soon as it is ready, and everything ready behind it goes out in the same write.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::local;
use crate::backend::pool::Pool;
use crate::backend::{self, BackendPool, Outcome};
use crate::config::Limits;
use crate::protocol::resp::codec;
use crate::protocol::resp::command::{self, Command, Kind, Merge};
use crate::protocol::resp::fanout::{self, Plan, Split};
use crate::protocol::resp::{reply, Request, RequestDecoder};
use crate::shutdown::Shutdown;

/// Initial read buffer: small, so that idle clients cost little; it grows with the traffic.
const INITIAL_READ_BUFFER: usize = 4 * 1024;
/// Spare room asked for before each read.
const READ_CHUNK: usize = 16 * 1024;

/// What the connection knows about its client.
#[derive(Debug)]
pub struct Client {
    /// Unique per process; also picks the backend connection, keeping per-client order.
    pub id: u64,
    /// Whether the client passed `AUTH` (or the pool needs none).
    pub authenticated: bool,
    /// Set by `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// Set by `QUIT`: reply, then close.
    pub quitting: bool,
}

/// A client session on one pool.
pub struct Session {
    client: Client,
    pool: Arc<Pool>,
    backends: Arc<BackendPool>,
    limits: Limits,
}

/// The reply to one request, in request order.
enum Pending {
    Ready(Bytes),
    Backend(oneshot::Receiver<Outcome>),
    Fanout(Box<FanoutReply>),
}

/// A split request: its parts' replies, merged once all are in.
struct FanoutReply {
    plan: Plan,
    parts: Vec<Pending>,
}

impl Session {
    /// A session for client `id` on `pool`, using this worker's `backends`.
    pub fn new(id: u64, pool: Arc<Pool>, backends: Arc<BackendPool>) -> Session {
        let config = pool.config();
        let limits = config.limits;
        Session {
            client: Client {
                id,
                authenticated: config.redis_auth.is_none(),
                name: None,
                quitting: false,
            },
            pool,
            backends,
            limits,
        }
    }

    /// Serves the client until it closes, sends `QUIT`, sends a malformed frame, or shutdown
    /// starts; in-flight requests are answered first in every case but a broken connection.
    pub async fn run<R, W>(mut self, mut rd: R, mut wr: W, shutdown: Shutdown)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut input = BytesMut::with_capacity(INITIAL_READ_BUFFER);
        let mut output = BytesMut::new();
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut decoder = RequestDecoder::new(codec::Limits {
            max_request_bytes: self.limits.max_request_bytes,
            max_multibulk_length: self.limits.max_multibulk_length,
        });
        let max_pipeline = self.limits.max_pipeline.max(1);
        let mut reading = true;
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            while reading && pending.len() < max_pipeline {
                match decoder.decode(&mut input) {
                    Ok(Some(request)) => {
                        pending.push_back(self.handle(request));
                        reading = !self.client.quitting;
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::debug!(client = self.client.id, %error, "closing client after malformed request");
                        pending.push_back(Pending::Ready(reply::error(&format!("ERR {error}"))));
                        reading = false;
                    }
                }
            }
            while let Some(bytes) = pending.front_mut().and_then(Pending::try_take) {
                output.extend_from_slice(&bytes);
                pending.pop_front();
            }
            if !output.is_empty() {
                if wr.write_all(&output).await.is_err() {
                    return;
                }
                output.clear();
                continue;
            }
            if !reading && pending.is_empty() {
                break;
            }
            if input.capacity() - input.len() < READ_CHUNK / 2 {
                input.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                () = wait_front(&mut pending) => {}
                read = rd.read_buf(&mut input), if reading && pending.len() < max_pipeline => {
                    if !matches!(read, Ok(n) if n > 0) {
                        reading = false;
                    }
                }
                () = &mut cancelled, if reading => reading = false,
            }
        }
        let _ = wr.shutdown().await;
    }

    /// Classifies one request and starts its reply.
    fn handle(&mut self, request: Request) -> Pending {
        let Some(command) = command::lookup(request.name()) else {
            return Pending::Ready(unknown_command(&request));
        };
        if !command.check_arity(request.argc())
            || (command.kind == Kind::Fanout(Merge::Ok) && request.argc() % 2 == 0)
        {
            return Pending::Ready(reply::error(&format!(
                "ERR wrong number of arguments for '{}' command",
                command.name
            )));
        }
        if !self.client.authenticated && !local::allowed_before_auth(command) {
            return Pending::Ready(reply::error("NOAUTH Authentication required."));
        }
        match command.kind {
            Kind::Local => Pending::Ready(local::answer(
                &mut self.client,
                self.pool.config(),
                command,
                &request,
            )),
            Kind::Unsupported => Pending::Ready(unsupported(command.name)),
            Kind::Routed => self.forward(command, request),
            Kind::Fanout(merge) => self.fan_out(merge, request),
        }
    }

    /// Sends a request whose keys must all live on one shard.
    fn forward(&self, command: &Command, request: Request) -> Pending {
        let keys = match command.keys(&request) {
            Ok(keys) => keys,
            Err(command::CommandError::Unsupported(form)) => {
                return Pending::Ready(unsupported(form));
            }
            Err(error) => return Pending::Ready(reply::error(&format!("ERR {error}"))),
        };
        let mut target = None;
        for index in keys {
            let key = request.arg(index).unwrap_or_default();
            let shard = match self.route(key) {
                Ok(shard) => shard,
                Err(reply) => return Pending::Ready(reply),
            };
            match target {
                Some(first) if first != shard => {
                    return Pending::Ready(reply::error(
                        "CROSSSLOT Keys in request don't hash to the same shard",
                    ));
                }
                _ => target = Some(shard),
            }
        }
        match target {
            Some(shard) => self.send(shard, request.frame().clone()),
            None => Pending::Ready(reply::error(&format!(
                "ERR '{}' without keys cannot be routed by the proxy",
                command.name
            ))),
        }
    }

    /// Splits a multi-key request by shard.
    fn fan_out(&self, merge: Merge, request: Request) -> Pending {
        match fanout::split(&request, merge, |key| self.route(key)) {
            Err(reply) => Pending::Ready(reply),
            Ok(Split::Whole(shard)) => self.send(shard, request.frame().clone()),
            Ok(Split::Parts(parts, plan)) => Pending::Fanout(Box::new(FanoutReply {
                plan,
                parts: parts
                    .into_iter()
                    .map(|part| self.send(part.shard, part.request.frame().clone()))
                    .collect(),
            })),
        }
    }

    /// The shard for `key`, or the error reply to give instead.
    fn route(&self, key: &[u8]) -> Result<usize, Bytes> {
        if key.len() > self.limits.max_key_bytes {
            return Err(reply::error("ERR key too long"));
        }
        self.pool.route(key).map_err(|error| backend_error(&error))
    }

    fn send(&self, shard: usize, frame: Bytes) -> Pending {
        Pending::Backend(self.backends.send(shard, self.client.id, frame))
    }
}

impl Pending {
    /// The reply, if it is complete; never waits.
    fn try_take(&mut self) -> Option<Bytes> {
        match self {
            Pending::Ready(bytes) => Some(std::mem::take(bytes)),
            Pending::Backend(receiver) => match receiver.try_recv() {
                Ok(outcome) => Some(outcome_reply(outcome)),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => {
                    Some(backend_error(&backend::Error::Closed))
                }
            },
            Pending::Fanout(fanout) => {
                for part in &mut fanout.parts {
                    if let Some(bytes) = part.try_take() {
                        *part = Pending::Ready(bytes);
                    } else {
                        return None;
                    }
                }
                let replies: Vec<Bytes> = fanout
                    .parts
                    .iter_mut()
                    .filter_map(Pending::try_take)
                    .collect();
                Some(fanout::merge(&fanout.plan, &replies))
            }
        }
    }

    /// Waits until the reply is complete.
    async fn ready(&mut self) {
        match self {
            Pending::Ready(_) => {}
            Pending::Backend(receiver) => {
                let outcome = receiver.await.unwrap_or(Err(backend::Error::Closed));
                *self = Pending::Ready(outcome_reply(outcome));
            }
            Pending::Fanout(fanout) => {
                for part in &mut fanout.parts {
                    Box::pin(part.ready()).await;
                }
            }
        }
    }
}

/// Waits for the oldest reply; never completes when there is none.
async fn wait_front(pending: &mut VecDeque<Pending>) {
    match pending.front_mut() {
        Some(front) => front.ready().await,
        None => std::future::pending().await,
    }
}

fn outcome_reply(outcome: Outcome) -> Bytes {
    outcome.unwrap_or_else(|error| backend_error(&error))
}

fn backend_error(error: &backend::Error) -> Bytes {
    reply::error(&format!("ERR {error}"))
}

fn unsupported(name: &str) -> Bytes {
    reply::error(&format!("ERR unsupported command '{name}'"))
}

/// Redis's own wording, so that clients that match on it keep working.
fn unknown_command(request: &Request) -> Bytes {
    let mut message = format!(
        "ERR unknown command '{}', with args beginning with: ",
        printable(request.name())
    );
    for i in 1..request.argc() {
        let arg = printable(request.arg(i).unwrap_or_default());
        if message.len() + arg.len() > 256 {
            break;
        }
        message.push_str(&format!("'{arg}' "));
    }
    reply::error(&message)
}

fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes.get(..128).unwrap_or(bytes));
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
