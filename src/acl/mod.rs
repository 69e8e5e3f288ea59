//! ACL users written in Redis's own `ACL SETUSER` rule syntax (the pool key `users`), compiled
//! at config load: passwords as SHA-256 digests, commands as one permission bit per command
//! and subcommand of the command table, key and channel patterns as [`glob::Glob`]s. A request
//! is checked once, before it is routed ([`User::check`]), with Redis's exact `-NOPERM`
//! replies; `AUTH` and `HELLO ... AUTH` go through [`Users::authenticate`] (constant-time
//! comparison). What is checked and what Keyway decided where Redis and a proxy differ is in
//! `docs/security.md`.

pub mod glob;
mod rules;

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::protocol::resp::command::{Access, Args, Command, Kind, Subscription};
use glob::Glob;

/// The name of the user an unauthenticated connection is.
pub const DEFAULT_USER: &str = "default";

/// Failed `AUTH`s one connection may make; the next failure closes it (after its reply).
pub const MAX_AUTH_FAILURES: u32 = 5;

/// The user a connection authenticated as, in the users it was found in. After a reload the
/// connection is the user of the same name in the new users ([`Login::refresh`]).
#[derive(Clone, Debug)]
pub struct Login {
    users: Arc<Users>,
    index: usize,
}

impl Login {
    /// User `index` of `users`.
    pub fn new(users: &Arc<Users>, index: usize) -> Login {
        Login {
            users: Arc::clone(users),
            index,
        }
    }

    /// The connection's user in `users` (the pool's current ones): at once when they are the
    /// ones it logged in with, else found again by name. `None` when the user is gone.
    #[inline]
    pub fn refresh(&mut self, users: &Arc<Users>) -> Option<&User> {
        if !Arc::ptr_eq(&self.users, users) {
            let name = self.users.user(self.index)?.name.clone();
            let (index, _) = users.find(name.as_bytes())?;
            *self = Login::new(users, index);
        }
        self.users.user(self.index)
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        self.users.user(self.index).map_or(DEFAULT_USER, User::name)
    }
}

/// A pool's users: every `users` line, plus the `default` user when no line names it.
#[derive(Clone, PartialEq, Eq)]
pub struct Users {
    /// Sorted by name.
    users: Vec<User>,
}

/// One user, compiled.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    name: String,
    enabled: bool,
    /// `nopass`: any password authenticates.
    nopass: bool,
    /// SHA-256 digests of the passwords.
    passwords: Vec<[u8; 32]>,
    /// One bit per command and subcommand ([`crate::protocol::resp::command::acl_ids`]).
    commands: Box<[u64]>,
    /// Every bit set and none cleared since (`+@all`): the check is skipped.
    all_commands: bool,
    all_keys: bool,
    keys: Vec<KeyPattern>,
    all_channels: bool,
    channels: Vec<Glob>,
}

/// A key pattern and what it grants (`~`: read and write, `%R~`, `%W~`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeyPattern {
    glob: Glob,
    access: Access,
}

/// Why a request is refused: each is one of Redis 7.0's `-NOPERM` replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The user may not run the command (named as Redis names it: `get`, `client|id`).
    Command(&'static str),
    /// A key is outside the user's key patterns (or not with the access asked).
    Key,
    /// A channel is outside the user's channel patterns.
    Channel,
}

impl Denied {
    /// The error reply's text, without the leading `-`, as Redis 7.0 words it.
    pub fn message(self) -> String {
        match self {
            Denied::Command(name) => {
                format!("NOPERM this user has no permissions to run the '{name}' command")
            }
            Denied::Key => {
                "NOPERM this user has no permissions to access one of the keys used as arguments"
                    .into()
            }
            Denied::Channel => {
                "NOPERM this user has no permissions to access one of the channels used as arguments"
                    .into()
            }
        }
    }
}

/// Why `AUTH` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No such user, a disabled one, or a wrong password: Redis does not tell which.
    WrongPass,
}

impl Users {
    /// Compiles the `users` lines. Without a `default` line, the default user is disabled —
    /// unless the pool has `redis_auth`, which keeps its nutcracker meaning: the default
    /// user's password, with every command, key and channel.
    ///
    /// # Errors
    /// The first bad line: its number (from 1), the user's name and the rule, and what is
    /// wrong with it; a password is never part of it.
    pub fn parse(lines: &[String], redis_auth: Option<&str>) -> Result<Users, String> {
        let mut users: Vec<User> = Vec::with_capacity(lines.len() + 1);
        for (number, line) in lines.iter().enumerate() {
            let number = number + 1;
            let mut words = line.split_whitespace();
            let Some(name) = words.next() else {
                return Err(format!("user line {number} is empty"));
            };
            if users.iter().any(|u| u.name == name) {
                return Err(format!(
                    "user line {number}: user '{name}' is already defined by an earlier line"
                ));
            }
            let mut user = User::new(name);
            let mut previous = "";
            for rule in words {
                rules::apply(&mut user, rule).map_err(|why| {
                    format!(
                        "user line {number} ('{name}'): rule {}: {why}",
                        rules::shown(rule, previous)
                    )
                })?;
                previous = rule;
            }
            users.push(user);
        }
        if !users.iter().any(|u| u.name == DEFAULT_USER) {
            let mut default = User::new(DEFAULT_USER);
            if let Some(password) = redis_auth {
                default.enabled = true;
                default.passwords.push(digest(password.as_bytes()));
                default.allow_everything();
            }
            users.push(default);
        }
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Users { users })
    }

    /// The user named `name` and its index.
    pub fn find(&self, name: &[u8]) -> Option<(usize, &User)> {
        let index = self
            .users
            .binary_search_by(|u| u.name.as_bytes().cmp(name))
            .ok()?;
        Some((index, self.users.get(index)?))
    }

    /// The user at `index` (from [`Users::find`] or [`Users::authenticate`]).
    #[inline]
    pub fn user(&self, index: usize) -> Option<&User> {
        self.users.get(index)
    }

    /// The users, sorted by name.
    pub fn all(&self) -> &[User] {
        &self.users
    }

    /// The user a new connection is, before any `AUTH`: the default user when it is enabled
    /// and needs no password (as Redis); otherwise none, and every command but `AUTH`,
    /// `HELLO`, `QUIT` and `RESET` is answered `-NOAUTH`.
    pub fn initial(&self) -> Option<usize> {
        let (index, user) = self.find(DEFAULT_USER.as_bytes())?;
        (user.enabled && user.nopass).then_some(index)
    }

    /// Whether the default user takes no password (`AUTH <password>` is then an error, as in
    /// Redis).
    pub fn default_has_no_password(&self) -> bool {
        self.find(DEFAULT_USER.as_bytes())
            .is_some_and(|(_, user)| user.nopass)
    }

    /// The index of user `name` if it is enabled and `password` is one of its passwords (or
    /// it has `nopass`). Every password digest of the user is compared, in constant time.
    ///
    /// # Errors
    /// [`AuthError::WrongPass`], whatever the reason.
    pub fn authenticate(&self, name: &[u8], password: &[u8]) -> Result<usize, AuthError> {
        let offered = digest(password);
        let Some((index, user)) = self.find(name) else {
            return Err(AuthError::WrongPass);
        };
        let matched = user
            .passwords
            .iter()
            .fold(subtle::Choice::from(0), |found, stored| {
                found | stored.ct_eq(&offered)
            });
        if user.enabled && (user.nopass || bool::from(matched)) {
            Ok(index)
        } else {
            Err(AuthError::WrongPass)
        }
    }
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.users).finish()
    }
}

impl User {
    /// A user as `ACL SETUSER name` creates it: off, no password, no command, key or channel.
    fn new(name: &str) -> User {
        User {
            name: name.to_owned(),
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            commands: vec![0; crate::protocol::resp::command::acl_ids().div_ceil(64)]
                .into_boxed_slice(),
            all_commands: false,
            all_keys: false,
            keys: Vec::new(),
            all_channels: false,
            channels: Vec::new(),
        }
    }

    /// `on allkeys allchannels allcommands`, for the default user of `redis_auth`.
    fn allow_everything(&mut self) {
        self.all_keys = true;
        self.all_channels = true;
        self.set_all_commands(true);
    }

    fn set_all_commands(&mut self, allowed: bool) {
        self.commands.fill(if allowed { u64::MAX } else { 0 });
        self.all_commands = allowed;
    }

    fn set_bit(&mut self, id: usize, allowed: bool) {
        if let Some(word) = self.commands.get_mut(id / 64) {
            if allowed {
                *word |= 1 << (id % 64);
            } else {
                *word &= !(1 << (id % 64));
                self.all_commands = false;
            }
        }
    }

    #[inline]
    fn allows(&self, id: usize) -> bool {
        self.commands
            .get(id / 64)
            .is_some_and(|word| word & (1 << (id % 64)) != 0)
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the user may run `command` with `args` (argument 0 is the name) on its keys and
    /// channels, checked as Redis 7.0 does: the command (or subcommand) bit, then every key
    /// the command names against the key patterns (with the access the command needs), then
    /// the channels of `PUBLISH` and the subscribe commands. `AUTH`, `HELLO`, `QUIT` and
    /// `RESET` are always allowed. Allocates nothing (but for `SORT` with key patterns).
    ///
    /// # Errors
    /// The first [`Denied`] reason.
    #[inline]
    pub fn check<A: Args + ?Sized>(&self, command: &Command, args: &A) -> Result<(), Denied> {
        if !self.all_commands && !is_no_auth(command) {
            let target = command.acl_target(args);
            if !self.allows(target.id) {
                return Err(Denied::Command(target.full_name));
            }
        }
        if !self.all_keys && command.acl_has_keys() {
            self.check_keys(command, args)?;
        }
        if !self.all_channels {
            self.check_channels(command, args)?;
        }
        Ok(())
    }

    fn check_keys<A: Args + ?Sized>(&self, command: &Command, args: &A) -> Result<(), Denied> {
        // A request whose keys cannot be found is refused before it is routed.
        let Ok(keys) = command.keys(args) else {
            return Ok(());
        };
        let (first, rest) = command.key_access(args);
        for (nth, index) in keys.enumerate() {
            let key = args.arg(index).unwrap_or_default();
            let access = if nth == 0 { first } else { rest };
            if !self
                .keys
                .iter()
                .any(|p| access.is_within(p.access) && p.glob.matches(key))
            {
                return Err(Denied::Key);
            }
        }
        Ok(())
    }

    fn check_channels<A: Args + ?Sized>(&self, command: &Command, args: &A) -> Result<(), Denied> {
        let (from, to, pattern) = match command.kind {
            Kind::Subscription(Subscription::Subscribe | Subscription::Ssubscribe) => {
                (1, args.argc(), false)
            }
            Kind::Subscription(Subscription::Psubscribe) => (1, args.argc(), true),
            _ if matches!(command.name, "publish" | "spublish") => (1, 2.min(args.argc()), false),
            _ => return Ok(()),
        };
        for i in from..to {
            let channel = args.arg(i).unwrap_or_default();
            // A pattern subscription must be one of the user's patterns, literally (Redis's
            // `ACLCheckChannelAgainstList`); a channel must match one.
            let allowed = self.channels.iter().any(|g| {
                if pattern {
                    g.source() == channel
                } else {
                    g.matches(channel)
                }
            });
            if !allowed {
                return Err(Denied::Channel);
            }
        }
        Ok(())
    }
}

/// Redis's `no_auth` commands: they run before authentication, and no ACL rule denies them.
#[inline]
fn is_no_auth(command: &Command) -> bool {
    command.kind == Kind::Local && matches!(command.name, "auth" | "hello" | "quit" | "reset")
}

impl fmt::Debug for User {
    /// Never shows a password digest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("enabled", &self.enabled)
            .field("nopass", &self.nopass)
            .field("passwords", &self.passwords.len())
            .field("all_commands", &self.all_commands)
            .field("all_keys", &self.all_keys)
            .field("keys", &self.keys)
            .field("all_channels", &self.all_channels)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a password, as Redis stores it.
fn digest(password: &[u8]) -> [u8; 32] {
    Sha256::digest(password).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::resp::command::lookup;

    fn users(lines: &[&str]) -> Users {
        let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        Users::parse(&lines, None).unwrap()
    }

    fn check(users: &Users, name: &str, request: &str) -> Result<(), Denied> {
        let args: Vec<Vec<u8>> = request
            .split_whitespace()
            .map(|w| w.as_bytes().to_vec())
            .collect();
        let command = lookup(&args[0]).unwrap();
        let (_, user) = users.find(name.as_bytes()).unwrap();
        user.check(command, &args)
    }

    #[test]
    fn passwords_authenticate_in_every_form() {
        let hash = "4d5bcb59f4d8b9e8e0b1d9e0b0d6c3b0c4c0a6f4b8b4f3e2d1c0b9a8f7e6d5c4";
        let u = users(&[
            "app on >s3cret >other",
            &format!("hashed on #{}", hex(&digest(b"pw"))),
            &format!("odd on #{hash}"),
            "open on nopass",
            "shut off >pw",
        ]);
        assert!(u.authenticate(b"app", b"s3cret").is_ok());
        assert!(u.authenticate(b"app", b"other").is_ok());
        assert_eq!(u.authenticate(b"app", b"nope"), Err(AuthError::WrongPass));
        assert!(u.authenticate(b"hashed", b"pw").is_ok());
        assert!(u.authenticate(b"open", b"anything").is_ok());
        assert_eq!(u.authenticate(b"shut", b"pw"), Err(AuthError::WrongPass));
        assert_eq!(u.authenticate(b"nobody", b"pw"), Err(AuthError::WrongPass));
        assert_eq!(u.authenticate(b"APP", b"s3cret"), Err(AuthError::WrongPass));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_default_user_follows_redis_auth_unless_a_line_names_it() {
        let lines = vec!["app on nopass".to_string()];
        let with_auth = Users::parse(&lines, Some("pw")).unwrap();
        assert!(with_auth.authenticate(b"default", b"pw").is_ok());
        assert_eq!(with_auth.initial(), None);
        assert!(check(&with_auth, "default", "flushall").is_ok());
        let without = Users::parse(&lines, None).unwrap();
        assert!(without.authenticate(b"default", b"").is_err());
        assert_eq!(without.initial(), None);
        let open = users(&["default on nopass +@all ~*"]);
        assert!(open.initial().is_some());
        assert!(open.default_has_no_password());
    }

    #[test]
    fn commands_categories_and_subcommands() {
        let u = users(&[
            "app on nopass ~* +@read +@write -@dangerous",
            "one on nopass ~* +get +client|id",
            "most on nopass ~* +@all -flushall -client|kill",
            "slow on nopass ~* +@slow",
        ]);
        assert!(check(&u, "app", "get k").is_ok());
        assert!(check(&u, "app", "set k v").is_ok());
        assert_eq!(check(&u, "app", "ping"), Err(Denied::Command("ping")));
        assert_eq!(check(&u, "app", "keys *"), Err(Denied::Command("keys")));
        assert_eq!(
            check(&u, "app", "client id"),
            Err(Denied::Command("client|id"))
        );
        assert!(check(&u, "app", "auth x").is_ok());
        assert!(check(&u, "one", "get k").is_ok());
        assert!(check(&u, "one", "client id").is_ok());
        assert!(check(&u, "one", "CLIENT ID").is_ok());
        assert_eq!(
            check(&u, "one", "client getname"),
            Err(Denied::Command("client|getname"))
        );
        assert!(check(&u, "most", "set k v").is_ok());
        assert_eq!(
            check(&u, "most", "flushall"),
            Err(Denied::Command("flushall"))
        );
        assert!(check(&u, "most", "client id").is_ok());
        assert_eq!(
            check(&u, "most", "client kill x"),
            Err(Denied::Command("client|kill"))
        );
        // Redis: a container's own category grants all of its subcommands.
        assert!(check(&u, "slow", "client kill x").is_ok());
    }

    #[test]
    fn keys_with_read_and_write_patterns() {
        let u = users(&["u on nopass +@all ~app:* %R~ro:* %W~wo:*"]);
        assert!(check(&u, "u", "get app:1").is_ok());
        assert!(check(&u, "u", "get ro:1").is_ok());
        assert_eq!(check(&u, "u", "set ro:1 v"), Err(Denied::Key));
        assert!(check(&u, "u", "set wo:1 v").is_ok());
        assert_eq!(check(&u, "u", "set wo:1 v get"), Err(Denied::Key));
        assert_eq!(check(&u, "u", "get wo:1"), Err(Denied::Key));
        assert!(check(&u, "u", "exists wo:1").is_ok());
        assert!(check(&u, "u", "mget app:1 ro:2").is_ok());
        assert_eq!(check(&u, "u", "mget app:1 other"), Err(Denied::Key));
        assert!(check(&u, "u", "sunionstore wo:d ro:a app:b").is_ok());
        assert_eq!(check(&u, "u", "sunionstore ro:d ro:a"), Err(Denied::Key));
        assert!(check(&u, "u", "eval s 1 app:x").is_ok());
        assert_eq!(check(&u, "u", "eval s 1 other"), Err(Denied::Key));
        // Keyspace-wide commands name no key: Redis does not check them.
        assert!(check(&u, "u", "keys *").is_ok());
        // A new user has no channel (`resetchannels`, Redis 7's default).
        assert_eq!(check(&u, "u", "publish other m"), Err(Denied::Channel));
    }

    #[test]
    fn channels_literal_patterns_and_allchannels() {
        let u = users(&[
            "c on nopass +@all &news.*",
            "none on nopass +@all",
            "every on nopass +@all allchannels",
        ]);
        assert!(check(&u, "c", "publish news.a m").is_ok());
        assert_eq!(check(&u, "c", "publish other m"), Err(Denied::Channel));
        assert!(check(&u, "c", "subscribe news.a news.b").is_ok());
        assert_eq!(check(&u, "c", "subscribe news.a x"), Err(Denied::Channel));
        assert!(check(&u, "c", "psubscribe news.*").is_ok());
        assert_eq!(check(&u, "c", "psubscribe news.a"), Err(Denied::Channel));
        assert!(check(&u, "c", "unsubscribe x").is_ok());
        assert_eq!(check(&u, "none", "publish a m"), Err(Denied::Channel));
        assert!(check(&u, "every", "psubscribe *").is_ok());
    }

    #[test]
    fn errors_name_the_line_and_rule_but_never_a_password() {
        let bad = |line: &str| {
            Users::parse(&[line.to_string()], None)
                .map(|_| ())
                .unwrap_err()
        };
        assert_eq!(
            bad("app on +nosuch"),
            "user line 1 ('app'): rule '+nosuch': unknown command or category name"
        );
        assert!(bad("app #abc").contains("64"));
        let removed = bad("app <hunter2");
        assert!(removed.contains("does not exist"), "{removed}");
        assert!(!removed.contains("hunter2"), "{removed}");
        assert!(!bad("app >hunter2 bogus").contains("hunter2"));
        // A password with a space: its second word is no rule, and is not shown either.
        let split = bad("app on >hunter2 part2");
        assert!(!split.contains("part2"), "{split}");
        assert!(split.contains("follows a password"), "{split}");
        assert!(bad("app ~* ~x").contains("resetkeys"));
        assert!(bad("app allchannels &x").contains("resetchannels"));
        assert!(bad("app %X~k").contains("syntax"));
        assert!(bad("app +client|nosuch").contains("unknown"));
        assert!(bad("app +select|0").contains("not supported"));
        assert!(bad("app (~x +get)").contains("selectors"));
        let twice = Users::parse(&["a on".to_string(), "a off".to_string()], None).unwrap_err();
        assert!(twice.contains("user line 2"), "{twice}");
        let debug = format!("{:?}", users(&["app on >hunter2"]));
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn keywords_are_case_insensitive_and_shorthands_mean_what_redis_says() {
        let u = users(&[
            "a ON NOPASS ~* +GET +@READ",
            "b on nopass %RW~* &* allcommands -get",
            "c on nopass ~k ~k %R~k",
            "d on nopass ~* nocommands +@all",
        ]);
        let (_, a) = u.find(b"a").unwrap();
        assert!(a.enabled && a.nopass && a.all_keys);
        assert!(check(&u, "a", "hget h f").is_ok());
        let (_, b) = u.find(b"b").unwrap();
        assert!(b.all_keys && b.all_channels && !b.all_commands);
        assert_eq!(check(&u, "b", "get k"), Err(Denied::Command("get")));
        assert!(check(&u, "b", "set k v").is_ok());
        let (_, c) = u.find(b"c").unwrap();
        assert_eq!(c.keys.len(), 1, "a repeated pattern is kept once");
        let (_, d) = u.find(b"d").unwrap();
        assert!(d.all_commands);
        // `%R~*` is a pattern, not allkeys: writes need another.
        let r = users(&["r on nopass %R~* +@all"]);
        assert_eq!(check(&r, "r", "set k v"), Err(Denied::Key));
        assert!(check(&r, "r", "get k").is_ok());
    }

    #[test]
    fn reset_and_resets() {
        let u = users(&[
            "a on >pw ~* &* +@all reset",
            "b on >pw resetpass nopass",
            "c on >pw <pw",
            "d on ~x* resetkeys ~y*",
        ]);
        assert!(u.authenticate(b"a", b"pw").is_err());
        assert!(u.authenticate(b"b", b"zz").is_ok());
        assert!(u.authenticate(b"c", b"pw").is_err());
        let (_, a) = u.find(b"a").unwrap();
        assert!(!a.all_keys && !a.all_channels && !a.all_commands);
        let (_, d) = u.find(b"d").unwrap();
        assert_eq!(d.keys.len(), 1);
    }
}
