//! The RESP side of a session (RESP2, RESP3 and inline commands): decodes a request, classifies
//! it with the command table and starts its reply: answered here, forwarded to its keys' shard,
//! split across shards, or (keyspace-wide commands) sent to every shard.

use bytes::{Bytes, BytesMut};

use super::local;
use super::pubsub::{self, Placement, PubSub};
use super::session::{Decoded, FanoutReply, Handler, Parts, Pending, Plan};
use crate::backend::pool::Place;
use crate::backend::Expect;
use crate::config::Limits;
use crate::protocol::resp::codec;
use crate::protocol::resp::command::{self, Command, Kind, Merge, Subscription};
use crate::protocol::resp::fanout::{self, Split};
use crate::protocol::resp::keyspace::{self, Action, Gather};
use crate::protocol::resp::{reply, Request, RequestDecoder};

/// A RESP client's request decoder, within the pool's limits.
pub(super) struct Resp {
    decoder: RequestDecoder,
    /// A request that waits until every reply before it is in (it switches to a dedicated
    /// connection, which must not overtake the client's earlier requests).
    waiting: Option<Request>,
}

impl Resp {
    /// A decoder enforcing `limits`' request size and multibulk length.
    pub(super) fn new(limits: &Limits) -> Resp {
        Resp {
            decoder: RequestDecoder::new(codec::Limits {
                max_request_bytes: limits.max_request_bytes,
                max_multibulk_length: limits.max_multibulk_length,
            }),
            waiting: None,
        }
    }

    /// Whether a request waits for the replies before it.
    pub(super) fn has_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Takes the next request off `input` and starts its reply.
    #[inline]
    pub(super) fn decode(&mut self, input: &mut BytesMut, handler: &mut Handler<'_>) -> Decoded {
        let request = match self.waiting.take() {
            Some(request) => request,
            None => match self.decoder.decode(input) {
                Ok(Some(request)) => request,
                Ok(None) => return Decoded::More,
                Err(error) => return Decoded::Fatal(reply::error(&format!("ERR {error}"))),
            },
        };
        match handler.handle(request) {
            Ok(pending) => Decoded::Request(
                match handler.client.pubsub.as_mut().and_then(|p| p.barrier()) {
                    Some(barrier) => Pending::Behind(Box::new((barrier, pending))),
                    None => pending,
                },
            ),
            Err(later) => {
                self.waiting = Some(later);
                Decoded::Wait
            }
        }
    }
}

impl Handler<'_> {
    /// Classifies one RESP request and starts its reply; `Err` gives the request back when
    /// it must wait until every reply before it is in (see [`Handler::idle`]).
    fn handle(&mut self, request: Request) -> Result<Pending, Request> {
        let Some(command) = command::lookup(request.name()) else {
            return Ok(self.rejected(unknown_command(&request)));
        };
        if !command.check_arity(request.argc())
            || (command.kind == Kind::Fanout(Merge::Ok) && request.argc() % 2 == 0)
        {
            return Ok(self.rejected(reply::error(&format!(
                "ERR wrong number of arguments for '{}' command",
                command.name
            ))));
        }
        if !self.client.authenticated && !local::allowed_before_auth(command) {
            if let Some(refusal) = self.unauthenticated(command) {
                return Ok(refusal);
            }
        }
        if let Some(users) = &self.route.pool.config().users {
            if let Some(refusal) = self.acl_refusal(users, command, &request) {
                return Ok(self.refused(command, &refusal));
            }
        }
        if let Some(refusal) = self.subscribed_mode(command, &request) {
            return Ok(Pending::Ready(refusal));
        }
        // Looked up only where it decides something: a cluster pool reading from replicas.
        self.read =
            self.route.pool.cluster().is_some_and(|c| c.replica_reads()) && command.is_read_only();
        if self.client.transaction.is_some() {
            if let Some(lost) = self.lost_transaction() {
                return Ok(lost);
            }
        }
        if matches!(command.kind, Kind::Transaction(_)) || self.client.in_multi() {
            return self.transaction(command, request);
        }
        Ok(match command.kind {
            Kind::Local if command.name == "info" && keyspace::is_info_keyspace(&request) => {
                self.keyspace(command, request)
            }
            Kind::Local => Pending::Ready(local::answer(
                self.client,
                &self.route.pool,
                command,
                &request,
            )),
            Kind::Subscription(kind) => self.subscription(kind, &request),
            Kind::Unsupported => Pending::Ready(unsupported(command.name)),
            Kind::Routed | Kind::Fanout(_) if self.migrating() => {
                self.migrate_resp(command, request)
            }
            Kind::Routed => self.forward(command, request),
            Kind::Fanout(merge) => self.fan_out(merge, request),
            Kind::Keyspace => self.keyspace(command, request),
            Kind::Blocking(_) => return self.blocking(command, request),
            // Taken above.
            Kind::Transaction(_) => Pending::Ready(unsupported(command.name)),
        })
    }

    /// `-NOAUTH` for a client that has not authenticated, unless the pool's default user
    /// needs no password now: Redis asks per command, and a reload may have changed it since
    /// the client connected.
    #[cold]
    #[inline(never)]
    fn unauthenticated(&mut self, command: &Command) -> Option<Pending> {
        let (authenticated, login) = local::initial_login(self.route.pool.config());
        if !authenticated {
            return Some(self.refused(command, "NOAUTH Authentication required."));
        }
        (self.client.authenticated, self.client.login) = (true, login);
        None
    }

    /// A request refused before it ran (`-NOAUTH`, `-NOPERM`): as from Redis, a refused
    /// `EXEC` discards the transaction and says so (`-EXECABORT Transaction discarded because
    /// of: ...`), and a refusal inside `MULTI` makes `EXEC` answer `-EXECABORT`.
    #[cold]
    fn refused(&mut self, command: &Command, message: &str) -> Pending {
        if command.kind == Kind::Transaction(command::Tx::Exec) {
            self.client.end_transaction();
            return Pending::Ready(reply::error(&format!(
                "EXECABORT Transaction discarded because of: {message}"
            )));
        }
        self.rejected(reply::error(message))
    }

    /// The `-NOPERM` reply when the client's ACL user may not run `request` (one check: the
    /// command, its keys, its channels), or `None`. A client authenticated before the pool
    /// had users is its default user; one whose user a reload removed is closed, as Redis
    /// closes the connections of a deleted user. Kept out of line: pools without users never
    /// call it.
    #[inline(never)]
    fn acl_refusal(
        &mut self,
        users: &std::sync::Arc<crate::acl::Users>,
        command: &Command,
        request: &Request,
    ) -> Option<String> {
        if self.client.login.is_none() {
            if !self.client.authenticated {
                // Only the commands allowed before `AUTH` get here, and no rule denies them.
                return None;
            }
            let (index, _) = users.find(crate::acl::DEFAULT_USER.as_bytes())?;
            self.client.login = Some(crate::acl::Login::new(users, index));
        }
        let user = self.client.login.as_mut().and_then(|l| l.refresh(users));
        let Some(user) = user else {
            self.client.quitting = true;
            return Some(
                "ERR the user this connection authenticated as was removed by a reload; closing the connection"
                    .into(),
            );
        };
        user.check(command, request)
            .err()
            .map(|denied| denied.message())
    }

    /// Sends a keyspace-wide request to every shard (merging their replies), to the first, or
    /// for `SCAN` to the shard its cursor names.
    #[inline(never)]
    fn keyspace(&self, command: &Command, request: Request) -> Pending {
        let pool = &self.route.pool;
        let config = pool.config();
        // Scripts go to a cluster's replicas too: a read-only script may run there.
        let shards = pool.keyspace(command.name == "script");
        let context = keyspace::Context {
            shards: shards.len(),
            allow_flush: config.allow_flush,
            db: config.redis_db,
            max_reply_bytes: config.limits.max_reply_bytes,
        };
        let action = match keyspace::plan(command, &request, &context) {
            Ok(action) => action,
            Err(reply) => return Pending::Ready(reply),
        };
        let shard = |index: usize| Place::Shard(shards.get(index).copied().unwrap_or_default());
        match action {
            Action::First => self.send(shard(0), request.into_frame(), Expect::Resp),
            Action::Scan {
                shard: index,
                request,
            } => {
                let gather = Gather::Scan {
                    shard: u32::try_from(index).unwrap_or(u32::MAX),
                    shards: u32::try_from(shards.len()).unwrap_or(u32::MAX),
                };
                let part = self.send(shard(index), request.into_frame(), Expect::Resp);
                Pending::Fanout(Box::new(FanoutReply {
                    plan: Plan::Keyspace(keyspace::Plan::whole(gather, 1)),
                    parts: [part].into_iter().collect(),
                }))
            }
            Action::Every(gather, sent) => {
                let frame = sent.unwrap_or(request).into_frame();
                self.fragments(shards.len());
                Pending::Fanout(Box::new(FanoutReply {
                    plan: Plan::Keyspace(keyspace::Plan::whole(gather, shards.len())),
                    parts: shards
                        .iter()
                        .map(|&node| self.send(Place::Shard(node), frame.clone(), Expect::Resp))
                        .collect(),
                }))
            }
        }
    }

    /// Sends a request whose keys must all live on one shard: the common case, kept inline.
    #[inline]
    pub(super) fn forward(&self, command: &Command, request: Request) -> Pending {
        match self.place_of(command, &request) {
            Ok(place) => self.send(place, request.frame().clone(), Expect::Resp),
            Err(reply) => Pending::Ready(reply),
        }
    }

    /// The one shard (or slot) all of the request's keys map to, or the error reply:
    /// `-CROSSSLOT` when they map to several.
    pub(super) fn place_of(&self, command: &Command, request: &Request) -> Result<Place, Bytes> {
        let keys = match command.keys(request) {
            Ok(keys) => keys,
            Err(command::CommandError::Unsupported(form)) => return Err(unsupported(form)),
            Err(error) => return Err(reply::error(&format!("ERR {error}"))),
        };
        let mut target = None;
        for index in keys {
            let key = request.arg(index).unwrap_or_default();
            let shard = self.route(key)?;
            match target {
                Some(first) if first != shard => return Err(reply::error(CROSSSLOT)),
                _ => target = Some(shard),
            }
        }
        target.ok_or_else(|| {
            reply::error(&format!(
                "ERR '{}' without keys cannot be routed by the proxy",
                command.name
            ))
        })
    }

    /// What a RESP2 client in subscribed mode gets instead of running `command`, as from
    /// Redis: only subscription commands, `PING` (answered `["pong", message]`), `QUIT` and
    /// `RESET` run there.
    #[inline]
    fn subscribed_mode(&self, command: &Command, request: &Request) -> Option<Bytes> {
        if self.client.resp3 || !self.client.pubsub.as_ref().is_some_and(|p| p.subscribed()) {
            return None;
        }
        subscribed_mode_refusal(command, request)
    }

    /// Changes the client's subscriptions: each channel on the backend its name routes to,
    /// patterns on every live backend (one node of a Redis Cluster).
    #[inline(never)]
    fn subscription(&mut self, kind: Subscription, request: &Request) -> Pending {
        let names: Vec<&[u8]> = (1..request.argc())
            .map(|i| request.arg(i).unwrap_or_default())
            .collect();
        let placement = match kind {
            Subscription::Subscribe | Subscription::Ssubscribe => {
                let mut backends = Vec::with_capacity(names.len());
                for name in &names {
                    match self.backend_of(name) {
                        Ok(backend) => backends.push(backend),
                        Err(reply) => return Pending::Ready(reply),
                    }
                }
                Placement::ByName(backends)
            }
            Subscription::Psubscribe => Placement::Every(self.pattern_backends()),
            _ => Placement::Known,
        };
        let pool = &self.route.pool;
        let resp3 = self.client.resp3;
        let pubsub = self
            .client
            .pubsub
            .get_or_insert_with(|| Box::new(PubSub::new(resp3)));
        let target = |backend: usize| {
            let backend = pool
                .backends()
                .get(backend)
                .ok_or("ERR the shard has no backend")?;
            let lease = backend
                .lease()
                .map_err(|refused| format!("ERR {refused}"))?;
            Ok((backend.target(resp3).clone(), lease))
        };
        match pubsub.apply(kind, &names, placement, target) {
            Ok(confirmation) if confirmation.is_ready() => {
                let mut confirmation = confirmation;
                Pending::Ready(confirmation.take().unwrap_or_default())
            }
            Ok(confirmation) => Pending::Subscribed(Box::new(confirmation)),
            Err(error) => Pending::Ready(reply::error(&error)),
        }
    }

    /// The backend a channel's name routes to, as a key would.
    fn backend_of(&self, name: &[u8]) -> Result<usize, Bytes> {
        match self.route(name)? {
            Place::Shard(shard) => Ok(shard),
            Place::Slot(slot) => self
                .route
                .pool
                .cluster()
                .and_then(|cluster| cluster.node_for(slot, false, 0))
                .ok_or_else(|| reply::error("CLUSTERDOWN Hash slot not served")),
        }
    }

    /// Where patterns are subscribed: every live backend; one node of a Redis Cluster (it
    /// forwards every message to all of its nodes, so more would deliver each twice).
    fn pattern_backends(&self) -> Vec<usize> {
        let pool = &self.route.pool;
        match pool.cluster() {
            Some(cluster) => (0..=crate::route::slots::MAX_SLOT)
                .find_map(|slot| cluster.node_for(slot, false, 0))
                .into_iter()
                .collect(),
            None => (0..pool.backends().len())
                .filter(|&shard| !pool.is_ejected(shard))
                .collect(),
        }
    }

    /// Splits a multi-key request by shard.
    pub(super) fn fan_out(&self, merge: Merge, request: Request) -> Pending {
        let route = |key: &[u8]| self.route(key);
        let send = |shard, frame| self.send(shard, frame, Expect::Resp);
        match fanout::split::<_, _, _, Parts>(&request, merge, route, send) {
            Err(reply) => Pending::Ready(reply),
            Ok(Split::Whole(shard)) => self.send(shard, request.into_frame(), Expect::Resp),
            Ok(Split::Parts(parts, plan)) => {
                self.fragments(parts.len());
                Pending::Fanout(Box::new(FanoutReply {
                    plan: Plan::Resp(plan),
                    parts,
                }))
            }
        }
    }
}

/// The reply to keys of one request (or transaction) on several shards.
pub(super) const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same shard";

/// What a RESP2 client in subscribed mode gets for `command` (see `Handler::subscribed_mode`).
#[cold]
fn subscribed_mode_refusal(command: &Command, request: &Request) -> Option<Bytes> {
    match (command.kind, command.name) {
        (Kind::Subscription(_), _) | (_, "quit" | "reset") => None,
        (_, "ping") => Some(pubsub::subscribed_ping(request.arg(1).unwrap_or_default())),
        (_, name) => Some(reply::error(&format!(
            "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
        ))),
    }
}

pub(super) fn unsupported(name: &str) -> Bytes {
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
