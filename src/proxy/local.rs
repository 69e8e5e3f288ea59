//! Commands Keyway answers itself: `PING ECHO QUIT SELECT AUTH HELLO CLIENT COMMAND INFO RESET`,
//! `ACL WHOAMI/CAT`,
//! in Redis's own words so that client libraries' handshakes and ready checks pass.

use bytes::{Bytes, BytesMut};

use super::session::Client;
use crate::acl::{self, AuthError, Login};
use crate::backend::pool::Pool;
use crate::config::PoolConfig;
use crate::metrics::AuthFailures;
use crate::protocol::resp::command::{self, Command, Kind};
use crate::protocol::resp::{reply, Request};

/// The Redis version Keyway presents to clients (the command set it implements).
pub const REDIS_VERSION: &str = "7.0.0";

/// Whether `command` may run before the client has authenticated.
pub fn allowed_before_auth(command: &Command) -> bool {
    matches!(command.name, "auth" | "hello" | "quit" | "reset")
}

/// Whether a new connection (or one after `RESET`) is authenticated, and as which ACL user:
/// without `users`, when the pool has no `redis_auth`; with them, as the default user when it
/// is enabled and needs no password.
pub fn initial_login(pool: &PoolConfig) -> (bool, Option<Login>) {
    match &pool.users {
        None => (pool.redis_auth.is_none(), None),
        Some(users) => match users.initial() {
            Some(index) => (true, Some(Login::new(users, index))),
            None => (false, None),
        },
    }
}

/// The reply to a locally answered command; may change the client's state.
pub fn answer(client: &mut Client, pool: &Pool, command: &Command, request: &Request) -> Bytes {
    let failures = &pool.metrics().auth_failures;
    let pool = pool.config();
    let arg = |i: usize| request.arg(i).unwrap_or_default();
    match command.name {
        "ping" if request.argc() > 1 => reply::bulk(arg(1)),
        "ping" => reply::simple("PONG"),
        "echo" => reply::bulk(arg(1)),
        "quit" => {
            client.quitting = true;
            reply::simple("OK")
        }
        "select" if arg(1) == b"0" => reply::simple("OK"),
        "select" => reply::error("ERR DB index is out of range"),
        "auth" => {
            let (user, password) = match request.argc() {
                2 => (&b"default"[..], arg(1)),
                _ => (arg(1), arg(2)),
            };
            auth(client, pool, failures, user, password, request.argc() == 2)
        }
        "hello" => hello(client, pool, failures, request),
        "acl" => acl_command(client, request),
        "client" => client_command(client, request),
        "command" => command_command(request),
        "info" => info(pool),
        "reset" => {
            // As Redis: subscriptions and transaction ended, RESP2, no name, back to the
            // default user.
            client.pubsub = None;
            client.end_transaction();
            client.resp3 = false;
            client.name = None;
            (client.authenticated, client.login) = initial_login(pool);
            reply::simple("RESET")
        }
        _ => reply::error(&format!("ERR unsupported command '{}'", command.name)),
    }
}

/// `AUTH [user] password` (`bare`: without the user), for `AUTH` and `HELLO ... AUTH`. A
/// failure is counted by user; the [`acl::MAX_AUTH_FAILURES`]th closes the connection after
/// its reply, so that one connection cannot try passwords without end.
fn auth(
    client: &mut Client,
    pool: &PoolConfig,
    failures: &AuthFailures,
    user: &[u8],
    password: &[u8],
    bare: bool,
) -> Bytes {
    let Some(users) = &pool.users else {
        return redis_auth(client, pool, user, password);
    };
    if bare && users.default_has_no_password() {
        return reply::error(NO_DEFAULT_PASSWORD);
    }
    match users.authenticate(user, password) {
        Ok(index) => {
            client.authenticated = true;
            client.login = Some(Login::new(users, index));
            reply::simple("OK")
        }
        Err(AuthError::WrongPass) => {
            let known = users.find(user).map(|(_, u)| u.name());
            failures.inc(known.unwrap_or(AuthFailures::UNKNOWN_USER));
            client.auth_failures += 1;
            tracing::info!(
                client = client.id,
                pool = %pool.name,
                user = known.unwrap_or(AuthFailures::UNKNOWN_USER),
                failures = client.auth_failures,
                "AUTH failed"
            );
            if client.auth_failures >= acl::MAX_AUTH_FAILURES {
                tracing::warn!(client = client.id, pool = %pool.name, "closing a client after {} failed AUTHs", client.auth_failures);
                client.quitting = true;
            }
            reply::error(WRONGPASS)
        }
    }
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NO_DEFAULT_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";

/// `AUTH` on a pool without `users`: nutcracker's `redis_auth`, the default user's password.
fn redis_auth(client: &mut Client, pool: &PoolConfig, user: &[u8], password: &[u8]) -> Bytes {
    let Some(expected) = &pool.redis_auth else {
        return reply::error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        );
    };
    if user.eq_ignore_ascii_case(b"default") && password == expected.as_bytes() {
        client.authenticated = true;
        reply::simple("OK")
    } else {
        reply::error("WRONGPASS invalid username-password pair or user is disabled.")
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`: RESP2 or RESP3. A RESP3 client's
/// requests go over backend connections that said `HELLO 3` too, so every reply (maps, sets,
/// doubles, nulls) is in the protocol the client asked for.
fn hello(
    client: &mut Client,
    pool: &PoolConfig,
    failures: &AuthFailures,
    request: &Request,
) -> Bytes {
    let arg = |i: usize| request.arg(i).unwrap_or_default();
    let mut resp3 = client.resp3;
    if request.argc() > 1 {
        match std::str::from_utf8(arg(1))
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
        {
            Some(2) => resp3 = false,
            Some(3) => resp3 = true,
            Some(_) => return reply::error("NOPROTO unsupported protocol version"),
            None => return reply::error("ERR Protocol version is not an integer or out of range"),
        }
    }
    let mut i = 2;
    while i < request.argc() {
        let option = arg(i);
        if option.eq_ignore_ascii_case(b"auth") && i + 2 < request.argc() {
            let answer = auth(client, pool, failures, arg(i + 1), arg(i + 2), false);
            if answer.first() == Some(&b'-') {
                return answer;
            }
            i += 3;
        } else if option.eq_ignore_ascii_case(b"setname") && i + 1 < request.argc() {
            client.name = Some(Bytes::copy_from_slice(arg(i + 1)));
            i += 2;
        } else {
            return reply::error(&format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(option)
            ));
        }
    }
    if !client.authenticated {
        return reply::error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if resp3 != client.resp3 {
        if client.pubsub.as_ref().is_some_and(|p| p.subscribed()) {
            // Its subscriber connections speak the protocol it subscribed in.
            return reply::error(
                "ERR Keyway cannot switch the protocol of a client with subscriptions: unsubscribe first",
            );
        }
        if client.transaction.is_some() {
            // Its transaction's connection speaks the protocol it was opened in.
            return reply::error(
                "ERR Keyway cannot switch the protocol of a client watching keys: UNWATCH first",
            );
        }
        client.pubsub = None;
    }
    client.resp3 = resp3;
    let mut out = BytesMut::new();
    if resp3 {
        out.extend_from_slice(b"%7\r\n");
    } else {
        reply::put_array_header(&mut out, 14);
    }
    for (field, value) in [("server", "redis"), ("version", REDIS_VERSION)] {
        reply::put_bulk(&mut out, field.as_bytes());
        reply::put_bulk(&mut out, value.as_bytes());
    }
    reply::put_bulk(&mut out, b"proto");
    out.extend_from_slice(&reply::integer(if resp3 { 3 } else { 2 }));
    reply::put_bulk(&mut out, b"id");
    out.extend_from_slice(&reply::integer(client.id as i64));
    for (field, value) in [("mode", "standalone"), ("role", "master")] {
        reply::put_bulk(&mut out, field.as_bytes());
        reply::put_bulk(&mut out, value.as_bytes());
    }
    reply::put_bulk(&mut out, b"modules");
    reply::put_array_header(&mut out, 0);
    out.freeze()
}

/// `CLIENT SETNAME | GETNAME | SETINFO | ID`; other subcommands act on the whole server or on
/// other connections, which a proxy cannot offer.
fn client_command(client: &mut Client, request: &Request) -> Bytes {
    let arg = |i: usize| request.arg(i).unwrap_or_default();
    let sub = String::from_utf8_lossy(arg(1)).to_ascii_lowercase();
    match (sub.as_str(), request.argc()) {
        ("setname", 3) => {
            let name = arg(2);
            if name.iter().any(|&c| c <= b' ' || c > b'~') {
                return reply::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            client.name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
            reply::simple("OK")
        }
        ("getname", 2) => match &client.name {
            Some(name) => reply::bulk(name),
            None => reply::nil(),
        },
        ("setinfo", 4) => {
            let attribute = arg(2);
            if attribute.eq_ignore_ascii_case(b"lib-name")
                || attribute.eq_ignore_ascii_case(b"lib-ver")
            {
                reply::simple("OK")
            } else {
                reply::error(&format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(attribute)
                ))
            }
        }
        ("id", 2) => reply::integer(client.id as i64),
        ("setname" | "getname" | "setinfo" | "id", _) => reply::error(&format!(
            "ERR wrong number of arguments for 'client|{sub}' command"
        )),
        _ => reply::error(&format!("ERR unsupported command 'client {sub}'")),
    }
}

/// `ACL WHOAMI` and `ACL CAT [category]`, answered from the pool's users and the command
/// table. The others are refused: users are the config's to define (`SETUSER`, `DELUSER`,
/// `LOAD`, `SAVE` would not survive a reload nor reach the other workers), and `LIST`,
/// `GETUSER` and `USERS` would show password digests or user names to any client granted them.
fn acl_command(client: &Client, request: &Request) -> Bytes {
    let arg = |i: usize| request.arg(i).unwrap_or_default();
    let sub = String::from_utf8_lossy(arg(1)).to_ascii_lowercase();
    match (sub.as_str(), request.argc()) {
        ("whoami", 2) => reply::bulk(
            client
                .login
                .as_ref()
                .map_or(acl::DEFAULT_USER, Login::name)
                .as_bytes(),
        ),
        ("cat", 2) => names(command::CATEGORY_NAMES.iter().copied()),
        ("cat", 3) => {
            let Some(category) = command::Categories::named(arg(2)) else {
                return reply::error(&format!(
                    "ERR Unknown category '{}'",
                    String::from_utf8_lossy(arg(2))
                ));
            };
            let mut found = Vec::new();
            for command in command::all() {
                if command.categories.intersects(category) {
                    found.push(command.name);
                }
                for (_, sub) in command.subcommands() {
                    if sub.categories.intersects(category) {
                        found.push(sub.full_name);
                    }
                }
            }
            names(found.into_iter())
        }
        ("whoami" | "cat", _) => reply::error(&format!(
            "ERR wrong number of arguments for 'acl|{sub}' command"
        )),
        _ => reply::error(&format!("ERR unsupported command 'acl {sub}'")),
    }
}

/// An array of bulk strings.
fn names<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> Bytes {
    let mut out = BytesMut::new();
    reply::put_array_header(&mut out, names.len());
    for name in names {
        reply::put_bulk(&mut out, name.as_bytes());
    }
    out.freeze()
}

/// `COMMAND`, `COMMAND COUNT | LIST | INFO name... | DOCS`: about the commands Keyway serves.
fn command_command(request: &Request) -> Bytes {
    let arg = |i: usize| request.arg(i).unwrap_or_default();
    let served = || command::all().filter(|c| c.kind != Kind::Unsupported);
    let sub = String::from_utf8_lossy(arg(1)).to_ascii_lowercase();
    let mut out = BytesMut::new();
    match sub.as_str() {
        "" => {
            let commands: Vec<&Command> = served().collect();
            reply::put_array_header(&mut out, commands.len());
            for command in commands {
                put_command_info(&mut out, command);
            }
        }
        "count" => return reply::integer(served().count() as i64),
        "list" => {
            let names: Vec<&str> = served().map(|c| c.name).collect();
            reply::put_array_header(&mut out, names.len());
            for name in names {
                reply::put_bulk(&mut out, name.as_bytes());
            }
        }
        "info" => {
            reply::put_array_header(&mut out, request.argc() - 2);
            for i in 2..request.argc() {
                match command::lookup(arg(i)).filter(|c| c.kind != Kind::Unsupported) {
                    Some(command) => put_command_info(&mut out, command),
                    None => out.extend_from_slice(b"*-1\r\n"),
                }
            }
        }
        "docs" => reply::put_array_header(&mut out, 0),
        _ => return reply::error(&format!("ERR unsupported command 'command {sub}'")),
    }
    out.freeze()
}

/// One `COMMAND INFO` entry in Redis 7's RESP2 shape (name, arity, flags, first/last/step key,
/// ACL categories, tips, key specs, subcommands); Keyway reports no flags or specs.
fn put_command_info(out: &mut BytesMut, command: &Command) {
    reply::put_array_header(out, 10);
    reply::put_bulk(out, command.name.as_bytes());
    out.extend_from_slice(&reply::integer(i64::from(command.arity)));
    reply::put_array_header(out, 0);
    let (first, last, step) = command.key_range();
    for n in [first, last, step] {
        out.extend_from_slice(&reply::integer(n));
    }
    for _ in 0..4 {
        reply::put_array_header(out, 0);
    }
}

fn info(pool: &PoolConfig) -> Bytes {
    let text = format!(
        "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nkeyway_version:{}\r\nkeyway_pool:{}\r\nprocess_id:{}\r\narch_bits:64\r\n",
        env!("CARGO_PKG_VERSION"),
        pool.name,
        std::process::id(),
    );
    reply::bulk(text.as_bytes())
}
