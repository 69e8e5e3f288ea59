//! The Redis command table: for every command, its arity, where its keys are, and how Keyway
//! treats it (answered locally, routed by its keys, fanned out and merged, or unsupported).
//! Key positions follow Redis 7.0's `COMMAND GETKEYS`, which the tests compare against.

use std::fmt;

/// Read access to a request's arguments; argument 0 is the command name.
pub trait Args {
    /// The number of arguments, the command name included.
    fn argc(&self) -> usize;
    /// Argument `i`, or `None` past the end.
    fn arg(&self, i: usize) -> Option<&[u8]>;
}

impl Args for [&[u8]] {
    fn argc(&self) -> usize {
        self.len()
    }
    fn arg(&self, i: usize) -> Option<&[u8]> {
        self.get(i).copied()
    }
}

impl Args for Vec<Vec<u8>> {
    fn argc(&self) -> usize {
        self.len()
    }
    fn arg(&self, i: usize) -> Option<&[u8]> {
        self.get(i).map(Vec::as_slice)
    }
}

/// How Keyway treats a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Answered by Keyway itself: `PING ECHO QUIT SELECT AUTH HELLO CLIENT COMMAND INFO RESET
    /// ACL`.
    Local,
    /// Forwarded to the one shard owning all its keys; keys on several shards are a
    /// `-CROSSSLOT` error. [`Command::keys`] never returns an empty list for these.
    Routed,
    /// Split into one request per shard and the replies merged in the client's key order.
    Fanout(Merge),
    /// A command that may block its connection (`BLPOP`, `XREAD ... BLOCK`...): sent, on a
    /// dedicated backend connection, to the one shard owning all its keys.
    /// [`Command::block_time`] reads how long it may block.
    Blocking(Block),
    /// A transaction command: `WATCH MULTI EXEC DISCARD UNWATCH`, pinning the client to a
    /// dedicated backend connection to one shard.
    Transaction(Tx),
    /// Speaks for the whole keyspace (`SCAN KEYS DBSIZE RANDOMKEY FLUSHDB FLUSHALL SCRIPT
    /// LASTSAVE TIME PUBSUB`): sent to every shard and gathered, or for `SCAN` to the shard its
    /// cursor names ([`super::keyspace::plan`] says which, per command and subcommand).
    Keyspace,
    /// Changes the client's subscriptions: answered with Keyway's own confirmations once
    /// the subscriber connections to the shards concerned have confirmed theirs.
    Subscription(Subscription),
    /// Answered `-ERR unsupported command '<name>'`: db-scoped and administrative commands.
    Unsupported,
}

/// Where a blocking command says how long it may block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// The last argument, in seconds (`BLPOP BRPOP BZPOPMIN BZPOPMAX`).
    LastSeconds,
    /// Argument `n`, in seconds (`BLMOVE BRPOPLPUSH BLMPOP BZMPOP`).
    Seconds(u8),
    /// The `BLOCK ms` option before `STREAMS` (`XREAD XREADGROUP`); without it the command
    /// does not block.
    Option,
}

/// A transaction command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tx {
    /// `WATCH key...`
    Watch,
    /// `UNWATCH`
    Unwatch,
    /// `MULTI`
    Multi,
    /// `EXEC`
    Exec,
    /// `DISCARD`
    Discard,
}

/// How long a blocking request may block, as it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockTime {
    /// It does not block (`XREAD` without `BLOCK`).
    No,
    /// Up to this long.
    For(std::time::Duration),
    /// Until woken (a timeout of 0).
    Forever,
    /// The timeout is not a valid one: the backend answers with an error at once.
    Invalid,
}

/// A command changing a client's subscriptions; its channels (or patterns) are its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscription {
    /// `SUBSCRIBE channel...`
    Subscribe,
    /// `UNSUBSCRIBE [channel...]`
    Unsubscribe,
    /// `PSUBSCRIBE pattern...`
    Psubscribe,
    /// `PUNSUBSCRIBE [pattern...]`
    Punsubscribe,
    /// `SSUBSCRIBE shardchannel...`
    Ssubscribe,
    /// `SUNSUBSCRIBE [shardchannel...]`
    Sunsubscribe,
}

/// How the replies of a fanned-out command are merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// `MGET`: one value per key, in the client's key order.
    Values,
    /// `MSET`: key/value pairs; `+OK` once every part said `+OK`.
    Ok,
    /// `DEL UNLINK EXISTS TOUCH`: the integer replies summed.
    Sum,
}

/// Why the keys of a request could not be found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// The argument count breaks the command's (or subcommand's) arity.
    WrongArity,
    /// `numkeys` is not a number or out of range, or the keys are missing
    /// (e.g. `XREAD` without `STREAMS` or with an unbalanced list of streams).
    BadNumkeys,
    /// This form of the command is not supported. It carries the form, lowercase, for the
    /// reply `-ERR unsupported command '<form>'` (e.g. `xread block`, `object help`).
    Unsupported(&'static str),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::WrongArity => f.write_str("wrong number of arguments"),
            CommandError::BadNumkeys => f.write_str("syntax error: bad numkeys or missing keys"),
            CommandError::Unsupported(form) => write!(f, "unsupported command '{form}'"),
        }
    }
}

impl std::error::Error for CommandError {}

/// One entry of the command table.
#[derive(Debug)]
pub struct Command {
    /// The command name, lowercase.
    pub name: &'static str,
    /// Redis's arity: `n > 0` is exactly `n` arguments (name included), `-n` at least `n`.
    pub arity: i32,
    /// How Keyway treats the command.
    pub kind: Kind,
    keys: Spec,
    /// Its ACL categories, as Redis 7.0's command table gives them.
    pub categories: Categories,
    /// What it does to its keys, for `%R~`/`%W~` key patterns.
    access: KeyAccess,
}

/// Where a command's keys are.
#[derive(Clone, Copy, Debug)]
enum Spec {
    /// No keys.
    None,
    /// Redis's legacy `(first, last, step)`; a negative `last` counts from the end.
    Range(u8, i8, u8),
    /// `MSET`/`MSETNX`: `key value` pairs from argument 1.
    Pairs,
    /// `numkeys` at argument `at`, then the keys; `dest`: one more key at argument 1.
    Numkeys { at: u8, dest: bool },
    /// `EVAL`-like: `script numkeys key...`; `numkeys` 0 leaves nothing to route by, so that
    /// form (named here) is refused.
    Script(&'static str),
    /// `COPY src dst`, refused with the `DB` option.
    Copy,
    /// The key at 1, and every `STORE`/`STOREDIST` key searched from argument `from`.
    Georadius(u8),
    /// `SORT key`, its `BY`/`GET` patterns naming keys, and with `store` the `STORE` key.
    Sort { store: bool },
    /// `XREAD`/`XREADGROUP`: the first half of the arguments after `STREAMS`.
    XRead,
    /// A container (`OBJECT`, `MEMORY`, `XGROUP`, `XINFO`): the subcommands taking a key at
    /// argument 2; the others are refused, with the form named here when unknown.
    Sub(&'static [Sub], &'static str),
}

/// A subcommand of a keyed container.
#[derive(Debug)]
struct Sub {
    name: &'static str,
    arity: i32,
    /// Its key is argument 2; otherwise it has none, and is refused as `form`.
    keyed: bool,
    form: &'static str,
}

/// The argument indices of a request's keys, in order. Allocates only for `SORT` with key
/// patterns and `GEORADIUS` with several `STORE` options.
#[derive(Clone, Debug)]
pub struct KeyIndices(Repr);

#[derive(Clone, Debug)]
enum Repr {
    /// `head`, then `next, next + step, ...` below `end`.
    Range {
        head: Option<usize>,
        next: usize,
        end: usize,
        step: usize,
    },
    List(std::vec::IntoIter<usize>),
}

impl KeyIndices {
    fn range(head: Option<usize>, next: usize, end: usize, step: usize) -> Self {
        KeyIndices(Repr::Range {
            head,
            next,
            end,
            step: step.max(1),
        })
    }

    fn empty() -> Self {
        Self::range(None, 0, 0, 1)
    }

    fn one(i: usize) -> Self {
        Self::range(Some(i), 0, 0, 1)
    }

    /// True when there are no (more) keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Iterator for KeyIndices {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match &mut self.0 {
            Repr::Range {
                head,
                next,
                end,
                step,
            } => {
                if let Some(i) = head.take() {
                    return Some(i);
                }
                if *next >= *end {
                    return None;
                }
                let i = *next;
                *next = next.saturating_add(*step);
                Some(i)
            }
            Repr::List(list) => list.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.0 {
            Repr::Range {
                head,
                next,
                end,
                step,
            } => usize::from(head.is_some()) + end.saturating_sub(*next).div_ceil(*step),
            Repr::List(list) => list.len(),
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for KeyIndices {}

impl std::iter::FusedIterator for KeyIndices {}

/// A set of Redis ACL categories (`@read`, `@write`, ...), one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Categories(u32);

impl Categories {
    /// Whether the sets share a category.
    pub fn intersects(self, other: Categories) -> bool {
        self.0 & other.0 != 0
    }

    /// The category named `name` (without the `@`), case-insensitively; `all` is every one.
    pub fn named(name: &[u8]) -> Option<Categories> {
        if name.eq_ignore_ascii_case(b"all") {
            return Some(Categories(u32::MAX));
        }
        CATEGORY_NAMES
            .iter()
            .position(|n| n.as_bytes().eq_ignore_ascii_case(name))
            .map(|bit| Categories(1 << bit))
    }

    /// The names of its categories, in Redis's order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        CATEGORY_NAMES
            .iter()
            .enumerate()
            .filter(move |(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, name)| *name)
    }
}

/// Redis 7.0's ACL categories (`ACL CAT`), in its order; bit `i` of [`Categories`] is the
/// `i`-th.
pub const CATEGORY_NAMES: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// The category bits, named as in Redis, for the tables below.
mod category {
    pub const KEYSPACE: u32 = 1;
    pub const READ: u32 = 1 << 1;
    pub const WRITE: u32 = 1 << 2;
    pub const SET: u32 = 1 << 3;
    pub const SORTEDSET: u32 = 1 << 4;
    pub const LIST: u32 = 1 << 5;
    pub const HASH: u32 = 1 << 6;
    pub const STRING: u32 = 1 << 7;
    pub const BITMAP: u32 = 1 << 8;
    pub const HYPERLOGLOG: u32 = 1 << 9;
    pub const GEO: u32 = 1 << 10;
    pub const STREAM: u32 = 1 << 11;
    pub const PUBSUB: u32 = 1 << 12;
    pub const ADMIN: u32 = 1 << 13;
    pub const FAST: u32 = 1 << 14;
    pub const SLOW: u32 = 1 << 15;
    pub const BLOCKING: u32 = 1 << 16;
    pub const DANGEROUS: u32 = 1 << 17;
    pub const CONNECTION: u32 = 1 << 18;
    pub const TRANSACTION: u32 = 1 << 19;
    pub const SCRIPTING: u32 = 1 << 20;
}
use category::*;

/// What a command does to a key, as Redis's ACL reads its key specs: `access` (the value is
/// read or returned) needs a read pattern (`~` or `%R~`); `insert`, `delete` or `update`
/// needs a write pattern (`~` or `%W~`). A key that is only looked at (`EXISTS`, `TYPE`)
/// needs either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access(u8);

impl Access {
    /// Neither read nor written (`EXISTS`): any pattern that matches will do.
    pub const NONE: Access = Access(0);
    /// Read.
    pub const READ: Access = Access(1);
    /// Written.
    pub const WRITE: Access = Access(2);
    /// Read and written.
    pub const READ_WRITE: Access = Access(3);

    /// Whether a pattern granting `granted` covers this access.
    pub fn is_within(self, granted: Access) -> bool {
        self.0 & granted.0 == self.0
    }

    /// Both accesses.
    pub fn union(self, other: Access) -> Access {
        Access(self.0 | other.0)
    }
}

/// How a command treats its first key and the others (the destination of `SUNIONSTORE dest
/// src...` is written, its sources read).
#[derive(Clone, Copy, Debug)]
struct KeyAccess {
    first: Access,
    rest: Access,
}

const N: Access = Access::NONE;
const RW: Access = Access::READ_WRITE;
const W: Access = Access::WRITE;
/// Read (`R` is `Kind::Routed`).
const RD: Access = Access::READ;
const A0: KeyAccess = ka(N, N);
const AR: KeyAccess = ka(RD, RD);
const AW: KeyAccess = ka(W, W);
const ARW: KeyAccess = ka(RW, RW);

const fn ka(first: Access, rest: Access) -> KeyAccess {
    KeyAccess { first, rest }
}

/// A subcommand of a container command (`CLIENT ID`, `XGROUP CREATE`...), for the ACL: Redis
/// gives each its own categories and permission bit.
#[derive(Debug)]
pub struct Subcommand {
    /// `container|name`, lowercase, as Redis names it in `-NOPERM` replies and ACL rules.
    pub full_name: &'static str,
    /// Its categories.
    pub categories: Categories,
    access: Access,
}

impl Subcommand {
    /// The subcommand's own name (after the `|`).
    pub fn name(&self) -> &'static str {
        self.full_name
            .split_once('|')
            .map_or(self.full_name, |(_, name)| name)
    }

    /// The container's name (before the `|`).
    pub fn container(&self) -> &'static str {
        self.full_name
            .split_once('|')
            .map_or(self.full_name, |(container, _)| container)
    }
}

/// What the ACL checks a request against: the command (or subcommand) it runs.
#[derive(Clone, Copy, Debug)]
pub struct AclTarget {
    /// Its position among [`acl_ids`]: the bit of a user's permission set.
    pub id: usize,
    /// Its name in `-NOPERM` replies: `get`, `client|id`.
    pub full_name: &'static str,
}

/// Per command (by position in the table): where its subcommands start in [`SUBCOMMANDS`] and
/// how many there are, so that finding a request's subcommand is one lookup, not a search.
static SUBCOMMAND_RANGES: std::sync::LazyLock<Box<[(u16, u16)]>> = std::sync::LazyLock::new(|| {
    TABLE
        .iter()
        .map(|command| {
            let start = SUBCOMMANDS.partition_point(|s| s.container() < command.name);
            let len = SUBCOMMANDS
                .iter()
                .skip(start)
                .take_while(|s| s.container() == command.name)
                .count();
            (
                u16::try_from(start).unwrap_or(0),
                u16::try_from(len).unwrap_or(0),
            )
        })
        .collect()
});

/// How many permission bits the command table needs: one per command and subcommand.
pub fn acl_ids() -> usize {
    TABLE.len() + SUBCOMMANDS.len()
}

/// Every subcommand Redis 7.0 knows (plus `CLIENT SETINFO` and `CLIENT NO-TOUCH` of 7.2),
/// sorted by full name.
pub fn subcommands() -> &'static [Subcommand] {
    SUBCOMMANDS
}

impl Command {
    /// The command's position in the table (its permission bit).
    pub fn id(&self) -> usize {
        let offset = (self as *const Command as usize).wrapping_sub(TABLE.as_ptr() as usize);
        offset / std::mem::size_of::<Command>()
    }

    /// The container's subcommands (empty for other commands), with their permission bits.
    #[inline]
    pub fn subcommands(&self) -> impl Iterator<Item = (usize, &'static Subcommand)> {
        let (start, len) = SUBCOMMAND_RANGES
            .get(self.id())
            .copied()
            .unwrap_or_default();
        let (start, len) = (usize::from(start), usize::from(len));
        SUBCOMMANDS
            .iter()
            .enumerate()
            .skip(start)
            .take(len)
            .map(|(i, s)| (TABLE.len() + i, s))
    }

    /// What the ACL checks a request for this command against: its subcommand, for a
    /// container whose argument 1 names one; else the command itself (an unknown
    /// subcommand is held to the container's own bit, which only `+<container>`, `+@all`
    /// and the container's categories grant).
    pub fn acl_target<A: Args + ?Sized>(&self, args: &A) -> AclTarget {
        if let Some(sub) = args.arg(1) {
            if let Some((id, found)) = self
                .subcommands()
                .find(|(_, s)| s.name().as_bytes().eq_ignore_ascii_case(sub))
            {
                return AclTarget {
                    id,
                    full_name: found.full_name,
                };
            }
        }
        AclTarget {
            id: self.id(),
            full_name: self.name,
        }
    }

    /// What the request does to its first key and to the others (in [`Command::keys`]
    /// order), as Redis's ACL sees it: `SET ... GET` reads its key, and so does `BITFIELD`
    /// with only `GET` operations; a keyed subcommand's access is its own.
    pub fn key_access<A: Args + ?Sized>(&self, args: &A) -> (Access, Access) {
        let both = |access| (access, access);
        match self.name {
            "set" => {
                let get = (3..args.argc()).any(|i| is(args, i, b"get"));
                both(if get { RW } else { W })
            }
            "bitfield" => {
                let writes =
                    (2..args.argc()).any(|i| is(args, i, b"set") || is(args, i, b"incrby"));
                both(if writes { RW } else { RD })
            }
            _ if matches!(self.keys, Spec::Sub(..)) => {
                let sub = args.arg(1).unwrap_or_default();
                both(
                    self.subcommands()
                        .find(|(_, s)| s.name().as_bytes().eq_ignore_ascii_case(sub))
                        .map_or(RW, |(_, s)| s.access),
                )
            }
            _ => (self.access.first, self.access.rest),
        }
    }

    /// Whether the ACL checks the command's keys: `PUBLISH` and `SPUBLISH` route by their
    /// channel, which the ACL checks as a channel instead.
    pub fn acl_has_keys(&self) -> bool {
        !matches!(self.name, "publish" | "spublish")
    }
}

const fn s(full_name: &'static str, categories: u32, access: KeyAccess) -> Subcommand {
    Subcommand {
        full_name,
        categories: Categories(categories),
        access: access.first,
    }
}

/// Names longer than this are no command.
const MAX_NAME: usize = 32;

/// Finds a command by name, case-insensitively, without allocating.
///
/// ```
/// use keyway::protocol::resp::command::{lookup, Kind};
/// let get = lookup(b"GeT").ok_or("no get")?;
/// assert_eq!(get.kind, Kind::Routed);
/// let args: &[&[u8]] = &[b"GET", b"k"];
/// assert_eq!(get.keys(args)?.collect::<Vec<_>>(), [1]);
/// assert!(lookup(b"nosuchcommand").is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn lookup(name: &[u8]) -> Option<&'static Command> {
    let key = Key::of(name)?;
    let Index { slots, keys } = &*INDEX;
    let mask = slots.len() - 1;
    let mut slot = key.hash() & mask;
    loop {
        let position = usize::from(slots.get(slot)?.checked_sub(1)?);
        if keys.get(position) == Some(&key) {
            return TABLE.get(position);
        }
        slot = (slot + 1) & mask;
    }
}

/// A command name folded to lower case (ASCII letters only) and packed into words, with its
/// length: two names are equal ignoring ASCII case exactly when their keys are. Comparing
/// keys is a few word compares, where a byte-by-byte case-insensitive compare cost more
/// than the rest of the lookup (it runs once per request).
#[derive(Clone, Copy, Debug)]
struct Key {
    words: [u64; MAX_NAME / 8],
    len: usize,
}

impl PartialEq for Key {
    /// The length first, then word by word: they settle nearly every probe.
    #[inline(always)]
    fn eq(&self, other: &Key) -> bool {
        let ([a, b, c, d], [e, f, g, h]) = (self.words, other.words);
        self.len == other.len && a == e && b == f && c == g && d == h
    }
}

impl Eq for Key {}

impl Key {
    /// The key of `name`, `None` if it is longer than any command's.
    #[inline(always)]
    fn of(name: &[u8]) -> Option<Key> {
        if name.len() > MAX_NAME {
            return None;
        }
        // Built in registers, word by word: a key stored to memory a word at a time and read
        // back whole stalls on store forwarding (3 ns more per lookup of `GET`).
        let word = |at: usize| {
            name.get(at..)
                .map_or(0, |rest| lower_case(load(rest.get(..8).unwrap_or(rest))))
        };
        let words = [word(0), word(8), word(16), word(24)];
        Some(Key {
            words,
            len: name.len(),
        })
    }

    /// A multiplicative hash of the words: its high bits spread well enough over the index.
    fn hash(&self) -> usize {
        let [a, b, c, d] = self.words;
        let mixed = a ^ b.rotate_left(17) ^ c.rotate_left(31) ^ d.rotate_left(47) ^ self.len as u64;
        // The top 32 bits of a 64-bit product: they fit in a usize on every 64-bit target.
        #[allow(clippy::cast_possible_truncation)]
        let hash = (mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize;
        hash
    }
}

/// Up to 8 bytes as a little-endian word, zero above them, in at most three loads (two that
/// overlap where the length is no power of two: the bytes they share are the same).
#[inline(always)]
fn load(bytes: &[u8]) -> u64 {
    let byte = |i: usize| u64::from(bytes.get(i).copied().unwrap_or(0));
    let len = bytes.len();
    if let Some(word) = bytes.first_chunk::<8>() {
        return u64::from_le_bytes(*word);
    }
    match (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        (Some(&first), Some(&last)) => {
            u64::from(u32::from_le_bytes(first))
                | u64::from(u32::from_le_bytes(last)) << (8 * (len - 4))
        }
        _ if len == 0 => 0,
        _ => byte(0) | byte(len / 2) << (8 * (len / 2)) | byte(len - 1) << (8 * (len - 1)),
    }
}

/// Every ASCII capital letter among a word's bytes made small, the other bytes left as they
/// are (bytes from 0x80 up included), eight at a time.
#[inline(always)]
fn lower_case(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let low7 = word & (0x7f * ONES);
    // Bit 7 of each byte: its low 7 bits are at least `A`, and more than `Z`.
    let from_a = low7 + (0x80 - u64::from(b'A')) * ONES;
    let past_z = low7 + (0x80 - u64::from(b'Z') - 1) * ONES;
    let capital = from_a & !past_z & !word & (0x80 * ONES);
    word | (capital >> 2)
}

/// Open-addressing index over [`TABLE`] by [`Key::hash`]: slot → table position + 1 (0 =
/// empty), with every command's [`Key`] by table position. Four times as many slots as
/// commands keep probe chains short; it runs once per request, so it must cost a hash and
/// one comparison, not a binary search of string comparisons.
static INDEX: std::sync::LazyLock<Index> = std::sync::LazyLock::new(|| {
    let size = (TABLE.len() * 4).next_power_of_two();
    let mut slots = vec![0u16; size];
    // By table position; a name too long for a key (a test rules them out) matches nothing.
    let never = Key {
        words: [0; MAX_NAME / 8],
        len: usize::MAX,
    };
    let keys: Box<[Key]> = TABLE
        .iter()
        .map(|command| Key::of(command.name.as_bytes()).unwrap_or(never))
        .collect();
    for (position, key) in keys.iter().enumerate() {
        let mut slot = key.hash() & (size - 1);
        while slots.get(slot).is_some_and(|&s| s != 0) {
            slot = (slot + 1) & (size - 1);
        }
        if let Some(entry) = slots.get_mut(slot) {
            *entry = u16::try_from(position + 1).unwrap_or(0);
        }
    }
    Index {
        slots: slots.into_boxed_slice(),
        keys,
    }
});

/// See [`INDEX`].
struct Index {
    slots: Box<[u16]>,
    keys: Box<[Key]>,
}

/// Every command in the table, sorted by name (for `COMMAND`, `COMMAND COUNT`, ...).
pub fn all() -> impl Iterator<Item = &'static Command> {
    TABLE.iter()
}

/// The keyed commands Redis 7.0 flags `readonly` in `COMMAND`, sorted: a cluster pool with
/// `read_from: replica` (or `prefer_replica`) may send these to a replica.
const READ_ONLY: &[&str] = &[
    "bitcount",
    "bitfield_ro",
    "bitpos",
    "dump",
    "eval_ro",
    "evalsha_ro",
    "exists",
    "expiretime",
    "fcall_ro",
    "geodist",
    "geohash",
    "geopos",
    "georadius_ro",
    "georadiusbymember_ro",
    "geosearch",
    "get",
    "getbit",
    "getrange",
    "hexists",
    "hget",
    "hgetall",
    "hkeys",
    "hlen",
    "hmget",
    "hrandfield",
    "hscan",
    "hstrlen",
    "hvals",
    "lcs",
    "lindex",
    "llen",
    "lpos",
    "lrange",
    "mget",
    "pexpiretime",
    "pfcount",
    "pttl",
    "scard",
    "sdiff",
    "sinter",
    "sintercard",
    "sismember",
    "smembers",
    "smismember",
    "sort_ro",
    "srandmember",
    "sscan",
    "strlen",
    "substr",
    "sunion",
    "touch",
    "ttl",
    "type",
    "xlen",
    "xpending",
    "xrange",
    "xread",
    "xrevrange",
    "zcard",
    "zcount",
    "zdiff",
    "zinter",
    "zintercard",
    "zlexcount",
    "zmscore",
    "zrandmember",
    "zrange",
    "zrangebylex",
    "zrangebyscore",
    "zrank",
    "zrevrange",
    "zrevrangebylex",
    "zrevrangebyscore",
    "zrevrank",
    "zscan",
    "zscore",
    "zunion",
];

/// The names of the commands [`Command::is_read_only`] accepts, sorted.
pub fn read_only_names() -> &'static [&'static str] {
    READ_ONLY
}

impl Command {
    /// Whether Redis flags the command `readonly` (it never writes).
    pub fn is_read_only(&self) -> bool {
        READ_ONLY.binary_search(&self.name).is_ok()
    }

    /// Redis's legacy `(first key, last key, step)` for `COMMAND INFO`: a negative last key
    /// counts from the end; `(0, 0, 0)` when the keys move with the arguments (`EVAL`,
    /// `XREAD`, `ZUNION`...) or there are none. As Redis reports it, except that unsupported
    /// commands Keyway does not locate keys for (`MIGRATE`, sharded pub/sub) report none.
    pub fn key_range(&self) -> (i64, i64, i64) {
        match self.keys {
            Spec::Range(first, last, step) => (first.into(), last.into(), step.into()),
            Spec::Pairs => (1, -1, 2),
            Spec::Copy => (1, 2, 1),
            Spec::Numkeys { dest: true, .. } | Spec::Georadius(_) | Spec::Sort { .. } => (1, 1, 1),
            Spec::None
            | Spec::Numkeys { dest: false, .. }
            | Spec::Script(_)
            | Spec::XRead
            | Spec::Sub(..) => (0, 0, 0),
        }
    }

    /// Whether `argc` arguments (the name included) satisfy the arity, by Redis's rule.
    pub fn check_arity(&self, argc: usize) -> bool {
        arity_ok(self.arity, argc)
    }

    /// The argument indices of the request's keys, in order (as `COMMAND GETKEYS` reports
    /// them, but see `SORT` below). Every index is below `args.argc()`. For `Routed` and
    /// `Fanout` commands an `Ok` list is never empty.
    ///
    /// `SORT`/`SORT_RO` also list their `BY`/`GET` patterns that name keys (those with a `*`),
    /// so that, as in Redis Cluster, they must hash (by their hash tag) to the key's shard.
    ///
    /// # Errors
    /// [`CommandError::WrongArity`] when the command or its subcommand has the wrong number of
    /// arguments (`MSET`/`MSETNX` need complete pairs), [`CommandError::BadNumkeys`] when
    /// `numkeys` or `STREAMS` do not give a valid list of keys, and
    /// [`CommandError::Unsupported`] for forms Keyway cannot serve: scripts with `numkeys` 0,
    /// `COPY ... DB`, and the keyless or unknown subcommands of `OBJECT`, `MEMORY`, `XGROUP`
    /// and `XINFO`.
    pub fn keys<A: Args + ?Sized>(&self, args: &A) -> Result<KeyIndices, CommandError> {
        let argc = args.argc();
        if !self.check_arity(argc) {
            return Err(CommandError::WrongArity);
        }
        match self.keys {
            Spec::None => Ok(KeyIndices::empty()),
            Spec::Range(first, last, step) => Ok(range_keys(argc, first, last, step)),
            Spec::Pairs => {
                if argc % 2 == 0 {
                    return Err(CommandError::WrongArity);
                }
                Ok(KeyIndices::range(None, 1, argc, 2))
            }
            Spec::Numkeys { at, dest } => {
                let at = usize::from(at);
                let keys = numkeys_keys(args, at)?;
                if keys.is_empty() {
                    return Err(CommandError::BadNumkeys);
                }
                Ok(KeyIndices::range(
                    dest.then_some(1),
                    at + 1,
                    at + 1 + keys.len(),
                    1,
                ))
            }
            Spec::Script(keyless) => {
                let keys = numkeys_keys(args, 2)?;
                if keys.is_empty() {
                    return Err(CommandError::Unsupported(keyless));
                }
                Ok(keys)
            }
            Spec::Copy => {
                // The proxy presents one database; `redis_db` picks the backend's.
                if (3..argc).any(|i| is(args, i, b"db")) {
                    return Err(CommandError::Unsupported("copy db"));
                }
                Ok(KeyIndices::range(None, 1, 3, 1))
            }
            Spec::Georadius(from) => Ok(georadius_keys(args, usize::from(from))),
            Spec::Sort { store } => Ok(sort_keys(args, store)),
            Spec::XRead => xread_keys(args),
            Spec::Sub(subs, unknown) => sub_keys(args, subs, unknown),
        }
    }
}

impl Command {
    /// How long a [`Kind::Blocking`] request may block, read from its timeout argument
    /// (seconds, fractions allowed; `BLOCK` in milliseconds); [`BlockTime::No`] for other
    /// commands and for `XREAD`/`XREADGROUP` without `BLOCK`.
    ///
    /// ```
    /// use keyway::protocol::resp::command::{lookup, BlockTime};
    /// use std::time::Duration;
    /// let blpop = lookup(b"blpop").ok_or("no blpop")?;
    /// let args: &[&[u8]] = &[b"BLPOP", b"a", b"b", b"0.5"];
    /// assert_eq!(blpop.block_time(args), BlockTime::For(Duration::from_millis(500)));
    /// let args: &[&[u8]] = &[b"BLPOP", b"a", b"0"];
    /// assert_eq!(blpop.block_time(args), BlockTime::Forever);
    /// let xread = lookup(b"xread").ok_or("no xread")?;
    /// let args: &[&[u8]] = &[b"XREAD", b"STREAMS", b"s", b"0"];
    /// assert_eq!(xread.block_time(args), BlockTime::No);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn block_time<A: Args + ?Sized>(&self, args: &A) -> BlockTime {
        let Kind::Blocking(block) = self.kind else {
            return BlockTime::No;
        };
        let argc = args.argc();
        match block {
            Block::LastSeconds => seconds(args.arg(argc.saturating_sub(1))),
            Block::Seconds(at) => seconds(args.arg(usize::from(at))),
            Block::Option => {
                let mut i = 1;
                while i < argc && !is(args, i, b"streams") {
                    if is(args, i, b"block") {
                        return millis(args.arg(i + 1));
                    }
                    i += 1;
                }
                BlockTime::No
            }
        }
    }
}

/// Blocking longer than this is blocking forever (and keeps deadlines representable).
const MAX_BLOCK: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 24 * 3600);

/// A timeout in seconds, as Redis reads it (`getTimeoutFromObjectOrReply`).
fn seconds(arg: Option<&[u8]>) -> BlockTime {
    let value = arg
        .and_then(|a| std::str::from_utf8(a).ok())
        .and_then(|t| t.parse::<f64>().ok());
    match value {
        Some(0.0) => BlockTime::Forever,
        Some(s) => match std::time::Duration::try_from_secs_f64(s) {
            Ok(d) if d > MAX_BLOCK => BlockTime::Forever,
            Ok(d) => BlockTime::For(d),
            Err(_) => BlockTime::Invalid,
        },
        None => BlockTime::Invalid,
    }
}

/// `BLOCK ms`.
fn millis(arg: Option<&[u8]>) -> BlockTime {
    match arg
        .and_then(|a| std::str::from_utf8(a).ok())
        .and_then(|t| t.parse::<i64>().ok())
        .map(u64::try_from)
    {
        Some(Ok(0)) => BlockTime::Forever,
        Some(Ok(ms)) => {
            let d = std::time::Duration::from_millis(ms);
            if d > MAX_BLOCK {
                BlockTime::Forever
            } else {
                BlockTime::For(d)
            }
        }
        Some(Err(_)) | None => BlockTime::Invalid,
    }
}

fn arity_ok(arity: i32, argc: usize) -> bool {
    match usize::try_from(arity.unsigned_abs()) {
        Ok(n) if arity >= 0 => argc == n,
        Ok(n) => argc >= n,
        Err(_) => false,
    }
}

/// Whether argument `i` is `word` (lowercase), ignoring case.
fn is<A: Args + ?Sized>(args: &A, i: usize, word: &[u8]) -> bool {
    args.arg(i).is_some_and(|a| a.eq_ignore_ascii_case(word))
}

fn range_keys(argc: usize, first: u8, last: i8, step: u8) -> KeyIndices {
    let last = if last >= 0 {
        Some(usize::from(last.unsigned_abs()))
    } else {
        argc.checked_sub(usize::from(last.unsigned_abs()))
    };
    let end = last.map_or(0, |l| l.saturating_add(1).min(argc));
    KeyIndices::range(None, usize::from(first), end, usize::from(step))
}

/// The `numkeys` keys following argument `at`.
fn numkeys_keys<A: Args + ?Sized>(args: &A, at: usize) -> Result<KeyIndices, CommandError> {
    let n = args
        .arg(at)
        .and_then(parse_count)
        .ok_or(CommandError::BadNumkeys)?;
    let first = at + 1;
    let end = first.checked_add(n).ok_or(CommandError::BadNumkeys)?;
    if end > args.argc() {
        return Err(CommandError::BadNumkeys);
    }
    Ok(KeyIndices::range(None, first, end, 1))
}

/// A non-negative decimal count, as `numkeys` must be.
fn parse_count(s: &[u8]) -> Option<usize> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0usize, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(usize::from(b - b'0'))
        } else {
            None
        }
    })
}

/// The key, then every `STORE`/`STOREDIST` key. GEORADIUS writes only the last one, but Redis
/// Cluster requires all of them to live with the key, and so does Keyway.
fn georadius_keys<A: Args + ?Sized>(args: &A, from: usize) -> KeyIndices {
    let argc = args.argc();
    let is_store = |i: usize| i + 1 < argc && (is(args, i, b"store") || is(args, i, b"storedist"));
    let mut stores = (from..argc).filter(|&i| is_store(i));
    let Some(first) = stores.next() else {
        return KeyIndices::one(1);
    };
    if !(first + 2..argc).any(is_store) {
        return KeyIndices::range(Some(1), first + 1, first + 2, 1);
    }
    let mut keys = vec![1];
    let mut i = from;
    while i < argc {
        if is_store(i) {
            keys.push(i + 1);
            i += 1;
        }
        i += 1;
    }
    KeyIndices(Repr::List(keys.into_iter()))
}

/// `SORT key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC] [ALPHA]
/// [STORE dest]`. A pattern without `*` names no key (`BY nosort`, `GET #`).
fn sort_keys<A: Args + ?Sized>(args: &A, with_store: bool) -> KeyIndices {
    let argc = args.argc();
    let mut patterns = Vec::new();
    let mut store = None;
    let mut i = 2;
    while i < argc {
        if is(args, i, b"limit") {
            i += 2;
        } else if is(args, i, b"by") || is(args, i, b"get") {
            if args.arg(i + 1).is_some_and(|p| p.contains(&b'*')) {
                patterns.push(i + 1);
            }
            i += 1;
        } else if with_store && i + 1 < argc && is(args, i, b"store") {
            store = Some(i + 1);
            i += 1;
        }
        i += 1;
    }
    if patterns.is_empty() {
        return match store {
            Some(s) => KeyIndices::range(Some(1), s, s + 1, 1),
            None => KeyIndices::one(1),
        };
    }
    let mut keys = Vec::with_capacity(patterns.len() + 2);
    keys.push(1);
    keys.append(&mut patterns);
    keys.extend(store);
    KeyIndices(Repr::List(keys.into_iter()))
}

/// `XREAD [COUNT n] [BLOCK ms] STREAMS key... id...` and `XREADGROUP GROUP g c [COUNT n]
/// [BLOCK ms] [NOACK] STREAMS key... id...`.
fn xread_keys<A: Args + ?Sized>(args: &A) -> Result<KeyIndices, CommandError> {
    let argc = args.argc();
    let mut i = 1;
    let streams = loop {
        if i >= argc {
            return Err(CommandError::BadNumkeys);
        } else if is(args, i, b"streams") {
            break i;
        } else if is(args, i, b"count") || is(args, i, b"block") {
            i += 2;
        } else if is(args, i, b"group") {
            i += 3;
        } else if is(args, i, b"noack") {
            i += 1;
        } else {
            return Err(CommandError::BadNumkeys);
        }
    };
    let rest = argc - streams - 1;
    if rest == 0 || rest % 2 != 0 {
        return Err(CommandError::BadNumkeys);
    }
    Ok(KeyIndices::range(
        None,
        streams + 1,
        streams + 1 + rest / 2,
        1,
    ))
}

/// A keyed subcommand's key at argument 2; other subcommands are refused.
fn sub_keys<A: Args + ?Sized>(
    args: &A,
    subs: &[Sub],
    unknown: &'static str,
) -> Result<KeyIndices, CommandError> {
    let name = args.arg(1).unwrap_or_default();
    let Some(sub) = subs
        .iter()
        .find(|sub| name.eq_ignore_ascii_case(sub.name.as_bytes()))
    else {
        return Err(CommandError::Unsupported(unknown));
    };
    if !sub.keyed {
        Err(CommandError::Unsupported(sub.form))
    } else if !arity_ok(sub.arity, args.argc()) {
        Err(CommandError::WrongArity)
    } else {
        Ok(KeyIndices::one(2))
    }
}

/// `sub!(container, name, arity, keyed)`.
macro_rules! sub {
    ($container:literal, $name:literal, $arity:literal, $keyed:literal) => {
        Sub {
            name: $name,
            arity: $arity,
            keyed: $keyed,
            form: concat!($container, " ", $name),
        }
    };
}

#[rustfmt::skip]
const OBJECT: &[Sub] = &[
    sub!("object", "encoding", 3, true),
    sub!("object", "freq", 3, true),
    sub!("object", "help", 2, false),
    sub!("object", "idletime", 3, true),
    sub!("object", "refcount", 3, true),
];
#[rustfmt::skip]
const MEMORY: &[Sub] = &[
    sub!("memory", "doctor", 2, false),
    sub!("memory", "help", 2, false),
    sub!("memory", "malloc-stats", 2, false),
    sub!("memory", "purge", 2, false),
    sub!("memory", "stats", 2, false),
    sub!("memory", "usage", -3, true),
];
#[rustfmt::skip]
const XGROUP: &[Sub] = &[
    sub!("xgroup", "create", -5, true),
    sub!("xgroup", "createconsumer", 5, true),
    sub!("xgroup", "delconsumer", 5, true),
    sub!("xgroup", "destroy", 4, true),
    sub!("xgroup", "help", 2, false),
    sub!("xgroup", "setid", -5, true),
];
#[rustfmt::skip]
const XINFO: &[Sub] = &[
    sub!("xinfo", "consumers", 4, true),
    sub!("xinfo", "groups", 3, true),
    sub!("xinfo", "help", 2, false),
    sub!("xinfo", "stream", -3, true),
];

const L: Kind = Kind::Local;
const R: Kind = Kind::Routed;
const U: Kind = Kind::Unsupported;
const SUM: Kind = Kind::Fanout(Merge::Sum);
/// Blocking, the timeout in seconds last.
const BL: Kind = Kind::Blocking(Block::LastSeconds);
/// Blocking with `BLOCK ms`.
const XR: Kind = Kind::Blocking(Block::Option);
const KS: Kind = Kind::Keyspace;

const NO: Spec = Spec::None;
/// The one key at argument 1: by far the most common spec.
const K1: Spec = Spec::Range(1, 1, 1);
/// Two keys at arguments 1 and 2 (`RENAME src dst`).
const K12: Spec = Spec::Range(1, 2, 1);
/// Every argument from 1 is a key.
const ALL: Spec = Spec::Range(1, -1, 1);
/// `numkeys` at 1, then the keys.
const NK1: Spec = Spec::Numkeys { at: 1, dest: false };
/// `dest numkeys key...`.
const DNK: Spec = Spec::Numkeys { at: 2, dest: true };

const fn c(
    name: &'static str,
    arity: i32,
    kind: Kind,
    keys: Spec,
    categories: u32,
    access: KeyAccess,
) -> Command {
    Command {
        name,
        arity,
        kind,
        keys,
        categories: Categories(categories),
        access,
    }
}

/// Every Redis 7.0 command, plus the keyed additions of 7.2 and 7.4; sorted by name for
/// binary search (a test keeps it sorted).
#[rustfmt::skip]
static TABLE: &[Command] = &[
    c("acl", -2, L, NO, SLOW, A0),
    c("append", 3, R, K1, WRITE | STRING | FAST, AW),
    c("asking", 1, U, NO, FAST | CONNECTION, A0),
    c("auth", -2, L, NO, FAST | CONNECTION, A0),
    c("bgrewriteaof", 1, U, NO, ADMIN | SLOW | DANGEROUS, A0),
    c("bgsave", -1, U, NO, ADMIN | SLOW | DANGEROUS, A0),
    c("bitcount", -2, R, K1, READ | BITMAP | SLOW, AR),
    c("bitfield", -2, R, K1, WRITE | BITMAP | SLOW, ARW),
    c("bitfield_ro", -2, R, K1, READ | BITMAP | FAST, AR),
    c("bitop", -4, R, Spec::Range(2, -1, 1), WRITE | BITMAP | SLOW, ka(W, RD)),
    c("bitpos", -3, R, K1, READ | BITMAP | SLOW, AR),
    c("blmove", 6, Kind::Blocking(Block::Seconds(5)), K12, WRITE | LIST | SLOW | BLOCKING, ka(RW, W)),
    c("blmpop", -5, Kind::Blocking(Block::Seconds(1)), Spec::Numkeys { at: 2, dest: false }, WRITE | LIST | SLOW | BLOCKING, ARW),
    c("blpop", -3, BL, Spec::Range(1, -2, 1), WRITE | LIST | SLOW | BLOCKING, ARW),
    c("brpop", -3, BL, Spec::Range(1, -2, 1), WRITE | LIST | SLOW | BLOCKING, ARW),
    c("brpoplpush", 4, Kind::Blocking(Block::Seconds(3)), K12, WRITE | LIST | SLOW | BLOCKING, ka(RW, W)),
    c("bzmpop", -5, Kind::Blocking(Block::Seconds(1)), Spec::Numkeys { at: 2, dest: false }, WRITE | SORTEDSET | SLOW | BLOCKING, ARW),
    c("bzpopmax", -3, BL, Spec::Range(1, -2, 1), WRITE | SORTEDSET | FAST | BLOCKING, ARW),
    c("bzpopmin", -3, BL, Spec::Range(1, -2, 1), WRITE | SORTEDSET | FAST | BLOCKING, ARW),
    c("client", -2, L, NO, SLOW, A0),
    c("cluster", -2, U, NO, SLOW, A0),
    c("command", -1, L, NO, SLOW | CONNECTION, A0),
    c("config", -2, U, NO, SLOW, A0),
    c("copy", -3, R, Spec::Copy, KEYSPACE | WRITE | SLOW, ka(RD, W)),
    c("dbsize", 1, KS, NO, KEYSPACE | READ | FAST, A0),
    c("debug", -2, U, NO, ADMIN | SLOW | DANGEROUS, A0),
    c("decr", 2, R, K1, WRITE | STRING | FAST, ARW),
    c("decrby", 3, R, K1, WRITE | STRING | FAST, ARW),
    c("del", -2, SUM, ALL, KEYSPACE | WRITE | SLOW, AW),
    c("discard", 1, Kind::Transaction(Tx::Discard), NO, FAST | TRANSACTION, A0),
    c("dump", 2, R, K1, KEYSPACE | READ | SLOW, AR),
    c("echo", 2, L, NO, FAST | CONNECTION, A0),
    c("eval", -3, R, Spec::Script("eval without keys"), SLOW | SCRIPTING, ARW),
    c("eval_ro", -3, R, Spec::Script("eval_ro without keys"), SLOW | SCRIPTING, AR),
    c("evalsha", -3, R, Spec::Script("evalsha without keys"), SLOW | SCRIPTING, ARW),
    c("evalsha_ro", -3, R, Spec::Script("evalsha_ro without keys"), SLOW | SCRIPTING, AR),
    c("exec", 1, Kind::Transaction(Tx::Exec), NO, SLOW | TRANSACTION, A0),
    c("exists", -2, SUM, ALL, KEYSPACE | READ | FAST, A0),
    c("expire", -3, R, K1, KEYSPACE | WRITE | FAST, AW),
    c("expireat", -3, R, K1, KEYSPACE | WRITE | FAST, AW),
    c("expiretime", 2, R, K1, KEYSPACE | READ | FAST, AR),
    c("failover", -1, U, NO, ADMIN | SLOW | DANGEROUS, A0),
    c("fcall", -3, R, Spec::Script("fcall without keys"), SLOW | SCRIPTING, ARW),
    c("fcall_ro", -3, R, Spec::Script("fcall_ro without keys"), SLOW | SCRIPTING, AR),
    c("flushall", -1, KS, NO, KEYSPACE | WRITE | SLOW | DANGEROUS, A0),
    c("flushdb", -1, KS, NO, KEYSPACE | WRITE | SLOW | DANGEROUS, A0),
    c("function", -2, U, NO, SLOW, A0),
    c("geoadd", -5, R, K1, WRITE | GEO | SLOW, AW),
    c("geodist", -4, R, K1, READ | GEO | SLOW, AR),
    c("geohash", -2, R, K1, READ | GEO | SLOW, AR),
    c("geopos", -2, R, K1, READ | GEO | SLOW, AR),
    c("georadius", -6, R, Spec::Georadius(6), WRITE | GEO | SLOW, ka(RD, W)),
    c("georadius_ro", -6, R, K1, READ | GEO | SLOW, AR),
    c("georadiusbymember", -5, R, Spec::Georadius(5), WRITE | GEO | SLOW, ka(RD, W)),
    c("georadiusbymember_ro", -5, R, K1, READ | GEO | SLOW, AR),
    c("geosearch", -7, R, K1, READ | GEO | SLOW, AR),
    c("geosearchstore", -8, R, K12, WRITE | GEO | SLOW, ka(W, RD)),
    c("get", 2, R, K1, READ | STRING | FAST, AR),
    c("getbit", 3, R, K1, READ | BITMAP | FAST, AR),
    c("getdel", 2, R, K1, WRITE | STRING | FAST, ARW),
    c("getex", -2, R, K1, WRITE | STRING | FAST, ARW),
    c("getrange", 4, R, K1, READ | STRING | SLOW, AR),
    c("getset", 3, R, K1, WRITE | STRING | FAST, ARW),
    c("hdel", -3, R, K1, WRITE | HASH | FAST, AW),
    c("hello", -1, L, NO, FAST | CONNECTION, A0),
    c("hexists", 3, R, K1, READ | HASH | FAST, A0),
    c("hexpire", -6, R, K1, WRITE | HASH | FAST, AW),        // 7.4
    c("hexpireat", -6, R, K1, WRITE | HASH | FAST, AW),      // 7.4
    c("hexpiretime", -5, R, K1, READ | HASH | FAST, AR),    // 7.4
    c("hget", 3, R, K1, READ | HASH | FAST, AR),
    c("hgetall", 2, R, K1, READ | HASH | SLOW, AR),
    c("hincrby", 4, R, K1, WRITE | HASH | FAST, ARW),
    c("hincrbyfloat", 4, R, K1, WRITE | HASH | FAST, ARW),
    c("hkeys", 2, R, K1, READ | HASH | SLOW, AR),
    c("hlen", 2, R, K1, READ | HASH | FAST, A0),
    c("hmget", -3, R, K1, READ | HASH | FAST, AR),
    c("hmset", -4, R, K1, WRITE | HASH | FAST, AW),
    c("hpersist", -5, R, K1, WRITE | HASH | FAST, AW),       // 7.4
    c("hpexpire", -6, R, K1, WRITE | HASH | FAST, AW),       // 7.4
    c("hpexpireat", -6, R, K1, WRITE | HASH | FAST, AW),     // 7.4
    c("hpexpiretime", -5, R, K1, READ | HASH | FAST, AR),   // 7.4
    c("hpttl", -5, R, K1, READ | HASH | FAST, AR),          // 7.4
    c("hrandfield", -2, R, K1, READ | HASH | SLOW, AR),
    c("hscan", -3, R, K1, READ | HASH | SLOW, AR),
    c("hset", -4, R, K1, WRITE | HASH | FAST, AW),
    c("hsetnx", 4, R, K1, WRITE | HASH | FAST, AW),
    c("hstrlen", 3, R, K1, READ | HASH | FAST, A0),
    c("httl", -5, R, K1, READ | HASH | FAST, AR),           // 7.4
    c("hvals", 2, R, K1, READ | HASH | SLOW, AR),
    c("incr", 2, R, K1, WRITE | STRING | FAST, ARW),
    c("incrby", 3, R, K1, WRITE | STRING | FAST, ARW),
    c("incrbyfloat", 3, R, K1, WRITE | STRING | FAST, ARW),
    c("info", -1, L, NO, SLOW | DANGEROUS, A0),
    c("keys", 2, KS, NO, KEYSPACE | READ | SLOW | DANGEROUS, A0),
    c("lastsave", 1, KS, NO, ADMIN | FAST | DANGEROUS, A0),
    c("latency", -2, U, NO, SLOW, A0),
    c("lcs", -3, R, K12, READ | STRING | SLOW, AR),
    c("lindex", 3, R, K1, READ | LIST | SLOW, AR),
    c("linsert", 5, R, K1, WRITE | LIST | SLOW, AW),
    c("llen", 2, R, K1, READ | LIST | FAST, A0),
    c("lmove", 5, R, K12, WRITE | LIST | SLOW, ka(RW, W)),
    c("lmpop", -4, R, NK1, WRITE | LIST | SLOW, ARW),
    c("lolwut", -1, U, NO, READ | FAST, A0),
    c("lpop", -2, R, K1, WRITE | LIST | FAST, ARW),
    c("lpos", -3, R, K1, READ | LIST | SLOW, AR),
    c("lpush", -3, R, K1, WRITE | LIST | FAST, AW),
    c("lpushx", -3, R, K1, WRITE | LIST | FAST, AW),
    c("lrange", 4, R, K1, READ | LIST | SLOW, AR),
    c("lrem", 4, R, K1, WRITE | LIST | SLOW, AW),
    c("lset", 4, R, K1, WRITE | LIST | SLOW, AW),
    c("ltrim", 4, R, K1, WRITE | LIST | SLOW, AW),
    c("memory", -2, R, Spec::Sub(MEMORY, "memory subcommand"), SLOW, A0),
    c("mget", -2, Kind::Fanout(Merge::Values), ALL, READ | STRING | FAST, AR),
    c("migrate", -6, U, NO, KEYSPACE | WRITE | SLOW | DANGEROUS, ARW),
    c("module", -2, U, NO, SLOW, A0),
    c("monitor", 1, U, NO, ADMIN | SLOW | DANGEROUS, A0),
    c("move", 3, U, K1, KEYSPACE | WRITE | FAST, ARW),
    c("mset", -3, Kind::Fanout(Merge::Ok), Spec::Pairs, WRITE | STRING | SLOW, AW),
    c("msetnx", -3, R, Spec::Pairs, WRITE | STRING | SLOW, AW),
    c("multi", 1, Kind::Transaction(Tx::Multi), NO, FAST | TRANSACTION, A0),
    c("object", -2, R, Spec::Sub(OBJECT, "object subcommand"), SLOW, A0),
    c("persist", 2, R, K1, KEYSPACE | WRITE | FAST, AW),
    c("pexpire", -3, R, K1, KEYSPACE | WRITE | FAST, AW),
    c("pexpireat", -3, R, K1, KEYSPACE | WRITE | FAST, AW),
    c("pexpiretime", 2, R, K1, KEYSPACE | READ | FAST, AR),
    c("pfadd", -2, R, K1, WRITE | HYPERLOGLOG | FAST, AW),
    c("pfcount", -2, R, ALL, READ | HYPERLOGLOG | SLOW, AR),
    c("pfdebug", 3, U, Spec::Range(2, 2, 1), WRITE | HYPERLOGLOG | ADMIN | SLOW | DANGEROUS, AR),
    c("pfmerge", -2, R, ALL, WRITE | HYPERLOGLOG | SLOW, ka(RW, RD)),
    c("pfselftest", 1, U, NO, HYPERLOGLOG | ADMIN | SLOW | DANGEROUS, A0),
    c("ping", -1, L, NO, FAST | CONNECTION, A0),
    c("psetex", 4, R, K1, WRITE | STRING | SLOW, AW),
    c("psubscribe", -2, Kind::Subscription(Subscription::Psubscribe), NO, PUBSUB | SLOW, A0),
    c("psync", -3, U, NO, ADMIN | SLOW | DANGEROUS, A0),
    c("pttl", 2, R, K1, KEYSPACE | READ | FAST, AR),
    c("publish", 3, R, K1, PUBSUB | FAST, A0),
    c("pubsub", -2, KS, NO, SLOW, A0),
    c("punsubscribe", -1, Kind::Subscription(Subscription::Punsubscribe), NO, PUBSUB | SLOW, A0),
    c("quit", -1, L, NO, FAST | CONNECTION, A0),
    c("randomkey", 1, KS, NO, KEYSPACE | READ | SLOW, A0),
    c("readonly", 1, U, NO, FAST | CONNECTION, A0),
    c("readwrite", 1, U, NO, FAST | CONNECTION, A0),
    c("rename", 3, R, K12, KEYSPACE | WRITE | SLOW, ka(RW, W)),
    c("renamenx", 3, R, K12, KEYSPACE | WRITE | FAST, ka(RW, W)),
    c("replconf", -1, U, NO, ADMIN | SLOW | DANGEROUS, A0),
    c("replicaof", 3, U, NO, ADMIN | SLOW | DANGEROUS, A0),
    c("reset", 1, L, NO, FAST | CONNECTION, A0),
    c("restore", -4, R, K1, KEYSPACE | WRITE | SLOW | DANGEROUS, AW),
    c("restore-asking", -4, U, K1, KEYSPACE | WRITE | SLOW | DANGEROUS, AW),
    c("role", 1, U, NO, ADMIN | FAST | DANGEROUS, A0),
    c("rpop", -2, R, K1, WRITE | LIST | FAST, ARW),
    c("rpoplpush", 3, R, K12, WRITE | LIST | SLOW, ka(RW, W)),
    c("rpush", -3, R, K1, WRITE | LIST | FAST, AW),
    c("rpushx", -3, R, K1, WRITE | LIST | FAST, AW),
    c("sadd", -3, R, K1, WRITE | SET | FAST, AW),
    c("save", 1, U, NO, ADMIN | SLOW | DANGEROUS, A0),
    c("scan", -2, KS, NO, KEYSPACE | READ | SLOW, A0),
    c("scard", 2, R, K1, READ | SET | FAST, A0),
    c("script", -2, KS, NO, SLOW, A0),
    c("sdiff", -2, R, ALL, READ | SET | SLOW, AR),
    c("sdiffstore", -3, R, ALL, WRITE | SET | SLOW, ka(W, RD)),
    c("select", 2, L, NO, FAST | CONNECTION, A0),
    c("set", -3, R, K1, WRITE | STRING | SLOW, ARW),
    c("setbit", 4, R, K1, WRITE | BITMAP | SLOW, ARW),
    c("setex", 4, R, K1, WRITE | STRING | SLOW, AW),
    c("setnx", 3, R, K1, WRITE | STRING | FAST, AW),
    c("setrange", 4, R, K1, WRITE | STRING | SLOW, AW),
    c("shutdown", -1, U, NO, ADMIN | SLOW | DANGEROUS, A0),
    c("sinter", -2, R, ALL, READ | SET | SLOW, AR),
    c("sintercard", -3, R, NK1, READ | SET | SLOW, AR),
    c("sinterstore", -3, R, ALL, WRITE | SET | SLOW, ka(W, RD)),
    c("sismember", 3, R, K1, READ | SET | FAST, A0),
    c("slaveof", 3, U, NO, ADMIN | SLOW | DANGEROUS, A0),
    c("slowlog", -2, U, NO, SLOW, A0),
    c("smembers", 2, R, K1, READ | SET | SLOW, AR),
    c("smismember", -3, R, K1, READ | SET | FAST, AR),
    c("smove", 4, R, K12, WRITE | SET | FAST, ka(RW, W)),
    c("sort", -2, R, Spec::Sort { store: true }, WRITE | SET | SORTEDSET | LIST | SLOW | DANGEROUS, ka(RD, RW)),
    c("sort_ro", -2, R, Spec::Sort { store: false }, READ | SET | SORTEDSET | LIST | SLOW | DANGEROUS, AR),
    c("spop", -2, R, K1, WRITE | SET | FAST, ARW),
    c("spublish", 3, R, K1, PUBSUB | FAST, A0),
    c("srandmember", -2, R, K1, READ | SET | SLOW, AR),
    c("srem", -3, R, K1, WRITE | SET | FAST, AW),
    c("sscan", -3, R, K1, READ | SET | SLOW, AR),
    c("ssubscribe", -2, Kind::Subscription(Subscription::Ssubscribe), NO, PUBSUB | SLOW, A0),
    c("strlen", 2, R, K1, READ | STRING | FAST, A0),
    c("subscribe", -2, Kind::Subscription(Subscription::Subscribe), NO, PUBSUB | SLOW, A0),
    c("substr", 4, R, K1, READ | STRING | SLOW, AR),
    c("sunion", -2, R, ALL, READ | SET | SLOW, AR),
    c("sunionstore", -3, R, ALL, WRITE | SET | SLOW, ka(W, RD)),
    c("sunsubscribe", -1, Kind::Subscription(Subscription::Sunsubscribe), NO, PUBSUB | SLOW, A0),
    c("swapdb", 3, U, NO, KEYSPACE | WRITE | FAST | DANGEROUS, A0),
    c("sync", 1, U, NO, ADMIN | SLOW | DANGEROUS, A0),
    c("time", 1, KS, NO, FAST, A0),
    c("touch", -2, SUM, ALL, KEYSPACE | READ | FAST, A0),
    c("ttl", 2, R, K1, KEYSPACE | READ | FAST, AR),
    c("type", 2, R, K1, KEYSPACE | READ | FAST, A0),
    c("unlink", -2, SUM, ALL, KEYSPACE | WRITE | FAST, AW),
    c("unsubscribe", -1, Kind::Subscription(Subscription::Unsubscribe), NO, PUBSUB | SLOW, A0),
    c("unwatch", 1, Kind::Transaction(Tx::Unwatch), NO, FAST | TRANSACTION, A0),
    c("wait", 3, U, NO, SLOW | CONNECTION, A0),
    c("waitaof", 4, U, NO, SLOW | CONNECTION, A0),         // 7.2
    c("watch", -2, Kind::Transaction(Tx::Watch), ALL, FAST | TRANSACTION, A0),
    c("xack", -4, R, K1, WRITE | STREAM | FAST, AW),
    c("xadd", -5, R, K1, WRITE | STREAM | FAST, AW),
    c("xautoclaim", -6, R, K1, WRITE | STREAM | FAST, AW),
    c("xclaim", -6, R, K1, WRITE | STREAM | FAST, AW),
    c("xdel", -3, R, K1, WRITE | STREAM | FAST, AW),
    c("xgroup", -2, R, Spec::Sub(XGROUP, "xgroup subcommand"), SLOW, A0),
    c("xinfo", -2, R, Spec::Sub(XINFO, "xinfo subcommand"), SLOW, A0),
    c("xlen", 2, R, K1, READ | STREAM | FAST, A0),
    c("xpending", -3, R, K1, READ | STREAM | SLOW, AR),
    c("xrange", -4, R, K1, READ | STREAM | SLOW, AR),
    c("xread", -4, XR, Spec::XRead, READ | STREAM | SLOW | BLOCKING, AR),
    c("xreadgroup", -7, XR, Spec::XRead, WRITE | STREAM | SLOW | BLOCKING, AR),
    c("xrevrange", -4, R, K1, READ | STREAM | SLOW, AR),
    c("xsetid", -3, R, K1, WRITE | STREAM | FAST, AW),
    c("xtrim", -4, R, K1, WRITE | STREAM | SLOW, AW),
    c("zadd", -4, R, K1, WRITE | SORTEDSET | FAST, AW),
    c("zcard", 2, R, K1, READ | SORTEDSET | FAST, A0),
    c("zcount", 4, R, K1, READ | SORTEDSET | FAST, AR),
    c("zdiff", -3, R, NK1, READ | SORTEDSET | SLOW, AR),
    c("zdiffstore", -4, R, DNK, WRITE | SORTEDSET | SLOW, ka(W, RD)),
    c("zincrby", 4, R, K1, WRITE | SORTEDSET | FAST, ARW),
    c("zinter", -3, R, NK1, READ | SORTEDSET | SLOW, AR),
    c("zintercard", -3, R, NK1, READ | SORTEDSET | SLOW, AR),
    c("zinterstore", -4, R, DNK, WRITE | SORTEDSET | SLOW, ka(W, RD)),
    c("zlexcount", 4, R, K1, READ | SORTEDSET | FAST, AR),
    c("zmpop", -4, R, NK1, WRITE | SORTEDSET | SLOW, ARW),
    c("zmscore", -3, R, K1, READ | SORTEDSET | FAST, AR),
    c("zpopmax", -2, R, K1, WRITE | SORTEDSET | FAST, ARW),
    c("zpopmin", -2, R, K1, WRITE | SORTEDSET | FAST, ARW),
    c("zrandmember", -2, R, K1, READ | SORTEDSET | SLOW, AR),
    c("zrange", -4, R, K1, READ | SORTEDSET | SLOW, AR),
    c("zrangebylex", -4, R, K1, READ | SORTEDSET | SLOW, AR),
    c("zrangebyscore", -4, R, K1, READ | SORTEDSET | SLOW, AR),
    c("zrangestore", -5, R, K12, WRITE | SORTEDSET | SLOW, ka(W, RD)),
    c("zrank", 3, R, K1, READ | SORTEDSET | FAST, AR),
    c("zrem", -3, R, K1, WRITE | SORTEDSET | FAST, AW),
    c("zremrangebylex", 4, R, K1, WRITE | SORTEDSET | SLOW, AW),
    c("zremrangebyrank", 4, R, K1, WRITE | SORTEDSET | SLOW, AW),
    c("zremrangebyscore", 4, R, K1, WRITE | SORTEDSET | SLOW, AW),
    c("zrevrange", -4, R, K1, READ | SORTEDSET | SLOW, AR),
    c("zrevrangebylex", -4, R, K1, READ | SORTEDSET | SLOW, AR),
    c("zrevrangebyscore", -4, R, K1, READ | SORTEDSET | SLOW, AR),
    c("zrevrank", 3, R, K1, READ | SORTEDSET | FAST, AR),
    c("zscan", -3, R, K1, READ | SORTEDSET | SLOW, AR),
    c("zscore", 3, R, K1, READ | SORTEDSET | FAST, AR),
    c("zunion", -3, R, NK1, READ | SORTEDSET | SLOW, AR),
    c("zunionstore", -4, R, DNK, WRITE | SORTEDSET | SLOW, ka(W, RD)),
];

/// Every subcommand of Redis 7.0's containers, with its ACL categories and what it does to
/// its key (argument 2), sorted by full name (a test keeps it sorted and compares it with
/// `COMMAND INFO`).
#[rustfmt::skip]
static SUBCOMMANDS: &[Subcommand] = &[
    s("acl|cat", SLOW, A0),
    s("acl|deluser", ADMIN | SLOW | DANGEROUS, A0),
    s("acl|dryrun", ADMIN | SLOW | DANGEROUS, A0),
    s("acl|genpass", SLOW, A0),
    s("acl|getuser", ADMIN | SLOW | DANGEROUS, A0),
    s("acl|help", SLOW, A0),
    s("acl|list", ADMIN | SLOW | DANGEROUS, A0),
    s("acl|load", ADMIN | SLOW | DANGEROUS, A0),
    s("acl|log", ADMIN | SLOW | DANGEROUS, A0),
    s("acl|save", ADMIN | SLOW | DANGEROUS, A0),
    s("acl|setuser", ADMIN | SLOW | DANGEROUS, A0),
    s("acl|users", ADMIN | SLOW | DANGEROUS, A0),
    s("acl|whoami", SLOW, A0),
    s("client|caching", SLOW | CONNECTION, A0),
    s("client|getname", SLOW | CONNECTION, A0),
    s("client|getredir", SLOW | CONNECTION, A0),
    s("client|help", SLOW | CONNECTION, A0),
    s("client|id", SLOW | CONNECTION, A0),
    s("client|info", SLOW | CONNECTION, A0),
    s("client|kill", ADMIN | SLOW | DANGEROUS | CONNECTION, A0),
    s("client|list", ADMIN | SLOW | DANGEROUS | CONNECTION, A0),
    s("client|no-evict", ADMIN | SLOW | DANGEROUS | CONNECTION, A0),
    s("client|no-touch", SLOW | CONNECTION, A0),
    s("client|pause", ADMIN | SLOW | DANGEROUS | CONNECTION, A0),
    s("client|reply", SLOW | CONNECTION, A0),
    s("client|setinfo", SLOW | CONNECTION, A0),
    s("client|setname", SLOW | CONNECTION, A0),
    s("client|tracking", SLOW | CONNECTION, A0),
    s("client|trackinginfo", SLOW | CONNECTION, A0),
    s("client|unblock", ADMIN | SLOW | DANGEROUS | CONNECTION, A0),
    s("client|unpause", ADMIN | SLOW | DANGEROUS | CONNECTION, A0),
    s("cluster|addslots", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|addslotsrange", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|bumpepoch", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|count-failure-reports", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|countkeysinslot", SLOW, A0),
    s("cluster|delslots", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|delslotsrange", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|failover", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|flushslots", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|forget", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|getkeysinslot", SLOW, A0),
    s("cluster|help", SLOW, A0),
    s("cluster|info", SLOW, A0),
    s("cluster|keyslot", SLOW, A0),
    s("cluster|links", SLOW, A0),
    s("cluster|meet", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|myid", SLOW, A0),
    s("cluster|nodes", SLOW, A0),
    s("cluster|replicas", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|replicate", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|reset", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|saveconfig", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|set-config-epoch", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|setslot", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|shards", SLOW, A0),
    s("cluster|slaves", ADMIN | SLOW | DANGEROUS, A0),
    s("cluster|slots", SLOW, A0),
    s("command|count", SLOW | CONNECTION, A0),
    s("command|docs", SLOW | CONNECTION, A0),
    s("command|getkeys", SLOW | CONNECTION, A0),
    s("command|getkeysandflags", SLOW | CONNECTION, A0),
    s("command|help", SLOW | CONNECTION, A0),
    s("command|info", SLOW | CONNECTION, A0),
    s("command|list", SLOW | CONNECTION, A0),
    s("config|get", ADMIN | SLOW | DANGEROUS, A0),
    s("config|help", SLOW, A0),
    s("config|resetstat", ADMIN | SLOW | DANGEROUS, A0),
    s("config|rewrite", ADMIN | SLOW | DANGEROUS, A0),
    s("config|set", ADMIN | SLOW | DANGEROUS, A0),
    s("function|delete", WRITE | SLOW | SCRIPTING, A0),
    s("function|dump", SLOW | SCRIPTING, A0),
    s("function|flush", WRITE | SLOW | SCRIPTING, A0),
    s("function|help", SLOW | SCRIPTING, A0),
    s("function|kill", SLOW | SCRIPTING, A0),
    s("function|list", SLOW | SCRIPTING, A0),
    s("function|load", WRITE | SLOW | SCRIPTING, A0),
    s("function|restore", WRITE | SLOW | SCRIPTING, A0),
    s("function|stats", SLOW | SCRIPTING, A0),
    s("latency|doctor", ADMIN | SLOW | DANGEROUS, A0),
    s("latency|graph", ADMIN | SLOW | DANGEROUS, A0),
    s("latency|help", SLOW, A0),
    s("latency|histogram", ADMIN | SLOW | DANGEROUS, A0),
    s("latency|history", ADMIN | SLOW | DANGEROUS, A0),
    s("latency|latest", ADMIN | SLOW | DANGEROUS, A0),
    s("latency|reset", ADMIN | SLOW | DANGEROUS, A0),
    s("memory|doctor", SLOW, A0),
    s("memory|help", SLOW, A0),
    s("memory|malloc-stats", SLOW, A0),
    s("memory|purge", SLOW, A0),
    s("memory|stats", SLOW, A0),
    s("memory|usage", READ | SLOW, A0),
    s("module|help", SLOW, A0),
    s("module|list", ADMIN | SLOW | DANGEROUS, A0),
    s("module|load", ADMIN | SLOW | DANGEROUS, A0),
    s("module|loadex", ADMIN | SLOW | DANGEROUS, A0),
    s("module|unload", ADMIN | SLOW | DANGEROUS, A0),
    s("object|encoding", KEYSPACE | READ | SLOW, A0),
    s("object|freq", KEYSPACE | READ | SLOW, A0),
    s("object|help", KEYSPACE | SLOW, A0),
    s("object|idletime", KEYSPACE | READ | SLOW, A0),
    s("object|refcount", KEYSPACE | READ | SLOW, A0),
    s("pubsub|channels", PUBSUB | SLOW, A0),
    s("pubsub|help", SLOW, A0),
    s("pubsub|numpat", PUBSUB | SLOW, A0),
    s("pubsub|numsub", PUBSUB | SLOW, A0),
    s("pubsub|shardchannels", PUBSUB | SLOW, A0),
    s("pubsub|shardnumsub", PUBSUB | SLOW, A0),
    s("script|debug", SLOW | SCRIPTING, A0),
    s("script|exists", SLOW | SCRIPTING, A0),
    s("script|flush", SLOW | SCRIPTING, A0),
    s("script|help", SLOW | SCRIPTING, A0),
    s("script|kill", SLOW | SCRIPTING, A0),
    s("script|load", SLOW | SCRIPTING, A0),
    s("slowlog|get", ADMIN | SLOW | DANGEROUS, A0),
    s("slowlog|help", SLOW, A0),
    s("slowlog|len", ADMIN | SLOW | DANGEROUS, A0),
    s("slowlog|reset", ADMIN | SLOW | DANGEROUS, A0),
    s("xgroup|create", WRITE | STREAM | SLOW, AW),
    s("xgroup|createconsumer", WRITE | STREAM | SLOW, AW),
    s("xgroup|delconsumer", WRITE | STREAM | SLOW, AW),
    s("xgroup|destroy", WRITE | STREAM | SLOW, AW),
    s("xgroup|help", STREAM | SLOW, A0),
    s("xgroup|setid", WRITE | STREAM | SLOW, AW),
    s("xinfo|consumers", READ | STREAM | SLOW, AR),
    s("xinfo|groups", READ | STREAM | SLOW, AR),
    s("xinfo|help", STREAM | SLOW, A0),
    s("xinfo|stream", READ | STREAM | SLOW, AR),
];

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests wait on a real redis-server
mod tests {
    use super::*;

    #[test]
    fn read_only_commands_are_sorted_and_known() {
        assert!(READ_ONLY.windows(2).all(|pair| pair[0] < pair[1]));
        for name in READ_ONLY {
            let command = lookup(name.as_bytes()).unwrap();
            assert!(command.is_read_only(), "{name}");
            assert!(
                matches!(
                    command.kind,
                    Kind::Routed | Kind::Fanout(_) | Kind::Blocking(_)
                ),
                "{name}"
            );
        }
        assert!(!lookup(b"set").unwrap().is_read_only());
        assert!(!lookup(b"sort").unwrap().is_read_only());
    }
    use proptest::prelude::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::path::PathBuf;
    use std::process::{Child, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// A `redis-server` on a private Unix socket, killed by PID on drop.
    struct RedisServer {
        child: Child,
        socket: PathBuf,
    }

    impl RedisServer {
        fn start() -> RedisServer {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let socket = std::env::temp_dir().join(format!(
                "keyway-command-{}-{}.sock",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_file(&socket);
            let child = std::process::Command::new("redis-server")
                .arg("--port")
                .arg("0")
                .arg("--unixsocket")
                .arg(&socket)
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match child {
                Ok(child) => child,
                Err(e) => panic!(
                    "cannot run redis-server ({e}): install the Debian package `redis-server`"
                ),
            };
            let server = RedisServer { child, socket };
            let deadline = Instant::now() + Duration::from_secs(10);
            while UnixStream::connect(&server.socket).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(10));
            }
            server
        }

        fn connect(&self) -> Client {
            let stream = UnixStream::connect(&self.socket).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            Client(BufReader::new(stream))
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_file(&self.socket);
        }
    }

    #[derive(Debug)]
    enum Reply {
        Status(String),
        Error(String),
        Int(i64),
        Bulk(Option<Vec<u8>>),
        Array(Vec<Reply>),
    }

    impl Reply {
        fn array(&self) -> &[Reply] {
            match self {
                Reply::Array(items) => items,
                other => panic!("not an array: {other:?}"),
            }
        }
        fn int(&self) -> i64 {
            match self {
                Reply::Int(n) => *n,
                other => panic!("not an integer: {other:?}"),
            }
        }
        fn text(&self) -> String {
            match self {
                Reply::Status(s) => s.clone(),
                Reply::Bulk(Some(b)) => String::from_utf8(b.clone()).unwrap(),
                other => panic!("not a string: {other:?}"),
            }
        }
    }

    /// A minimal RESP2 client.
    struct Client(BufReader<UnixStream>);

    impl Client {
        fn call<T: AsRef<[u8]>>(&mut self, args: &[T]) -> Reply {
            let mut out = format!("*{}\r\n", args.len()).into_bytes();
            for arg in args {
                let arg = arg.as_ref();
                out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                out.extend_from_slice(arg);
                out.extend_from_slice(b"\r\n");
            }
            self.0.get_mut().write_all(&out).unwrap();
            self.read()
        }

        fn read(&mut self) -> Reply {
            let mut line = String::new();
            self.0.read_line(&mut line).unwrap();
            let line = line.trim_end_matches("\r\n");
            let (kind, rest) = line.split_at(1);
            match kind {
                "+" => Reply::Status(rest.to_owned()),
                "-" => Reply::Error(rest.to_owned()),
                ":" => Reply::Int(rest.parse().unwrap()),
                "$" => {
                    let Ok(n) = usize::try_from(rest.parse::<i64>().unwrap()) else {
                        return Reply::Bulk(None);
                    };
                    let mut buf = vec![0; n + 2];
                    self.0.read_exact(&mut buf).unwrap();
                    buf.truncate(n);
                    Reply::Bulk(Some(buf))
                }
                "*" => {
                    let n = rest.parse::<i64>().unwrap().max(0);
                    Reply::Array((0..n).map(|_| self.read()).collect())
                }
                _ => panic!("unexpected reply line {line:?}"),
            }
        }

        /// `COMMAND GETKEYS`: the key names, or Redis's error.
        fn getkeys(&mut self, args: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
            let mut request: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYS"];
            request.extend(args.iter().map(Vec::as_slice));
            match self.call(&request) {
                Reply::Array(keys) => Ok(keys
                    .into_iter()
                    .map(|k| match k {
                        Reply::Bulk(Some(k)) => k,
                        other => panic!("not a key: {other:?}"),
                    })
                    .collect()),
                Reply::Error(e) => Err(e),
                other => panic!("unexpected GETKEYS reply {other:?}"),
            }
        }
    }

    fn words(line: &str) -> Vec<Vec<u8>> {
        line.split_whitespace()
            .map(|w| w.as_bytes().to_vec())
            .collect()
    }

    fn key_names(cmd: &Command, args: &Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, CommandError> {
        let keys = cmd.keys(args)?;
        let n = keys.len();
        let names: Vec<Vec<u8>> = keys.map(|i| args[i].clone()).collect();
        assert_eq!(names.len(), n, "len() of {:?}", cmd.name);
        Ok(names)
    }

    /// Compares our keys with Redis's for one request. Redis errors where there are no keys
    /// (or the form is invalid); then we must not route: no keys, or an error.
    fn compare(redis: &mut Client, line: &str, args: &Vec<Vec<u8>>) {
        let cmd = lookup(&args[0]).unwrap_or_else(|| panic!("{line:?}: unknown command"));
        let ours = key_names(cmd, args);
        // Redis 7.0 reports no keys for `PFMERGE dest` (no source): a quirk of its key specs.
        if cmd.name == "pfmerge" && args.len() == 2 {
            assert_eq!(ours, Ok(vec![args[1].clone()]), "{line:?}");
            return;
        }
        if routes_by_channel(cmd.name) {
            if cmd.kind == Kind::Routed {
                assert_eq!(ours, Ok(vec![args[1].clone()]), "{line:?}");
            }
            return;
        }
        let theirs = redis.getkeys(args);
        match (&theirs, &ours) {
            (Ok(theirs), Ok(ours)) if theirs == ours => {}
            // Redis reports keys for unsupported commands we do not bother to locate.
            (Ok(_), Ok(ours)) if cmd.kind == Kind::Unsupported && ours.is_empty() => {}
            (Err(_), Ok(ours)) => assert!(
                ours.is_empty()
                    && matches!(
                        cmd.kind,
                        Kind::Local
                            | Kind::Keyspace
                            | Kind::Unsupported
                            | Kind::Transaction(_)
                            | Kind::Subscription(_)
                    ),
                "{line:?}: Redis finds no keys, we found {ours:?}"
            ),
            (Err(_), Err(_)) => {}
            _ => panic!("{line:?}: Redis {theirs:?}, ours {ours:?}"),
        }
        if let (Kind::Routed | Kind::Fanout(_) | Kind::Blocking(_), Ok(ours)) = (cmd.kind, &ours) {
            assert!(!ours.is_empty(), "{line:?}: routed without keys");
        }
    }

    /// Concrete requests of every family. `!U ` marks a form we refuse although Redis has keys.
    const REQUESTS: &[&str] = &[
        // strings
        "get k",
        "set k v",
        "set k v EX 10 NX GET",
        "setnx k v",
        "setex k 10 v",
        "psetex k 100 v",
        "getset k v",
        "getdel k",
        "getex k PERSIST",
        "getex k EX 5",
        "getrange k 0 -1",
        "substr k 0 1",
        "setrange k 0 v",
        "append k v",
        "strlen k",
        "incr k",
        "incrby k 2",
        "incrbyfloat k 1.5",
        "decr k",
        "decrby k 2",
        "mget a b c",
        "mget a",
        "mset a 1 b 2",
        "mset a 1",
        "msetnx a 1 b 2 c 3",
        "lcs a b",
        "lcs a b LEN IDX",
        // generic keyspace
        "del a b c",
        "del a",
        "unlink a b",
        "exists a b",
        "touch a b",
        "expire k 10",
        "expire k 10 NX",
        "expireat k 100",
        "pexpire k 10",
        "pexpireat k 10",
        "expiretime k",
        "pexpiretime k",
        "ttl k",
        "pttl k",
        "persist k",
        "type k",
        "dump k",
        "restore k 0 payload REPLACE",
        "rename a b",
        "renamenx a b",
        "copy a b",
        "copy a b REPLACE",
        "!U copy a b DB 1",
        "!U copy a b REPLACE db 2",
        "move k 1",
        "object encoding k",
        "object freq k",
        "object idletime k",
        "object refcount k",
        "!U object help",
        "memory usage k",
        "memory usage k SAMPLES 5",
        "!U memory doctor",
        "!U memory stats",
        "sort k",
        "sort k LIMIT 0 10 ALPHA DESC",
        "sort k BY nosort GET # STORE dst",
        "sort k STORE d1 STORE d2",
        "sort k ASC STORE d",
        "sort_ro k ALPHA",
        "sort_ro k BY nosort LIMIT 0 1",
        // hashes
        "hset h f v",
        "hset h f v g w",
        "hsetnx h f v",
        "hget h f",
        "hmget h f g",
        "hmset h f v",
        "hdel h f g",
        "hexists h f",
        "hgetall h",
        "hkeys h",
        "hvals h",
        "hlen h",
        "hincrby h f 1",
        "hincrbyfloat h f 1.5",
        "hstrlen h f",
        "hrandfield h 2 WITHVALUES",
        "hscan h 0 MATCH * COUNT 10",
        // lists
        "lpush l a b",
        "rpush l a",
        "lpushx l a",
        "rpushx l a",
        "lpop l",
        "rpop l 2",
        "llen l",
        "lrange l 0 -1",
        "lindex l 0",
        "lset l 0 v",
        "linsert l BEFORE a b",
        "lrem l 0 a",
        "ltrim l 0 1",
        "lpos l a RANK 1",
        "rpoplpush a b",
        "lmove a b LEFT RIGHT",
        "lmpop 2 a b LEFT COUNT 2",
        "lmpop 1 a RIGHT",
        "blpop a b 0",
        "brpop a 0",
        "brpoplpush a b 0",
        "blmove a b LEFT LEFT 0",
        "blmpop 0 2 a b LEFT",
        // sets
        "sadd s a b",
        "srem s a",
        "smembers s",
        "sismember s a",
        "smismember s a b",
        "scard s",
        "spop s",
        "srandmember s 2",
        "smove a b m",
        "sinter a b",
        "sinterstore d a b",
        "sunion a b c",
        "sunionstore d a",
        "sdiff a b",
        "sdiffstore d a b",
        "sintercard 2 a b LIMIT 1",
        "sintercard 1 a",
        "sscan s 0",
        // sorted sets
        "zadd z 1 a",
        "zadd z NX GT CH 1 a 2 b",
        "zincrby z 1 a",
        "zrem z a",
        "zcard z",
        "zcount z 0 1",
        "zlexcount z - +",
        "zscore z a",
        "zmscore z a b",
        "zrank z a",
        "zrevrank z a",
        "zrange z 0 -1 WITHSCORES",
        "zrange z 0 1 BYSCORE REV LIMIT 0 1",
        "zrangebyscore z 0 1",
        "zrangebylex z - +",
        "zrevrange z 0 1",
        "zrevrangebyscore z 1 0",
        "zrevrangebylex z + -",
        "zremrangebyrank z 0 1",
        "zremrangebyscore z 0 1",
        "zremrangebylex z - +",
        "zpopmin z",
        "zpopmax z 2",
        "zrandmember z",
        "zrangestore d z 0 -1",
        "zunion 2 a b WEIGHTS 1 2",
        "zinter 2 a b",
        "zdiff 2 a b WITHSCORES",
        "zintercard 3 a b c LIMIT 2",
        "zunionstore d 2 a b AGGREGATE MAX",
        "zinterstore d 1 a",
        "zdiffstore d 2 a b",
        "zmpop 2 a b MIN COUNT 1",
        "zscan z 0",
        "bzpopmin a b 0",
        "bzpopmax a 0",
        "bzmpop 0 1 a MIN",
        // HyperLogLog
        "pfadd p a b",
        "pfcount p",
        "pfcount p q r",
        "pfmerge d p q",
        "pfmerge d",
        // bitmaps
        "setbit b 0 1",
        "getbit b 0",
        "bitcount b 0 -1 BIT",
        "bitpos b 1",
        "bitop AND d a b",
        "bitop NOT d a",
        "bitfield b GET u8 0",
        "bitfield_ro b GET u8 0",
        // geo
        "geoadd g 13.3 38.1 Palermo",
        "geodist g a b km",
        "geopos g a b",
        "geohash g a",
        "georadius g 15 37 200 km",
        "georadius g 15 37 200 km WITHDIST STORE d",
        "georadius g 15 37 200 km STOREDIST d",
        "georadius g 15 37 200 km STORE d1 STOREDIST d2",
        "georadius_ro g 15 37 200 km",
        "georadiusbymember g m 100 km",
        "georadiusbymember g m 100 km STORE d",
        "georadiusbymember_ro g m 100 km ASC",
        "geosearch g FROMMEMBER m BYRADIUS 10 km",
        "geosearchstore d g FROMLONLAT 15 37 BYBOX 400 400 km",
        // streams
        "xadd x * f v",
        "xadd x MAXLEN ~ 10 * f v",
        "xlen x",
        "xrange x - +",
        "xrevrange x + - COUNT 1",
        "xdel x 1-0",
        "xtrim x MAXLEN 10",
        "xack x g 1-0",
        "xclaim x g c 10 1-0",
        "xautoclaim x g c 10 0-0",
        "xpending x g",
        "xpending x g - + 10 c",
        "xsetid x 1-0",
        "xgroup create x g $ MKSTREAM",
        "xgroup createconsumer x g c",
        "xgroup delconsumer x g c",
        "xgroup destroy x g",
        "xgroup setid x g 0",
        "!U xgroup help",
        "xinfo stream x",
        "xinfo stream x FULL",
        "xinfo groups x",
        "xinfo consumers x g",
        "!U xinfo help",
        "xread STREAMS a 0",
        "xread COUNT 2 STREAMS a b 0 0",
        "xreadgroup GROUP g c STREAMS a 0",
        "xreadgroup GROUP g c COUNT 1 NOACK STREAMS a b > >",
        "xread BLOCK 0 STREAMS a 0",
        "xread COUNT 1 BLOCK 10 STREAMS a b 0 0",
        "xreadgroup GROUP g c BLOCK 10 STREAMS a >",
        // scripts and functions
        "eval s 2 a b x",
        "eval s 1 a",
        "evalsha 0123 1 a",
        "eval_ro s 1 a",
        "evalsha_ro s 2 a b",
        "fcall f 1 a",
        "fcall_ro f 2 a b x",
        "!U eval s 0",
        "!U fcall f 0 x",
        // answered by the proxy
        "ping",
        "ping hi",
        "echo x",
        "select 0",
        "auth pw",
        "hello 3",
        "client setname n",
        "command count",
        "info",
        "quit",
        "reset",
        // pub/sub: published by channel, subscriptions kept per client
        "subscribe c",
        "psubscribe c*",
        "publish c m",
        "spublish c m",
        "ssubscribe c",
        // transactions
        "multi",
        "exec",
        "discard",
        "watch a b",
        "unwatch",
        // unsupported
        "pubsub channels",
        "keys *",
        "scan 0",
        "randomkey",
        "dbsize",
        "flushall",
        "flushdb",
        "config get x",
        "swapdb 0 1",
        "script load x",
        "function list",
        "wait 0 0",
        "migrate h 1 k 0 1000",
        "restore-asking k 0 p",
        "pfdebug GETREG k",
        "monitor",
        "slowlog get",
        "time",
        "role",
        "lastsave",
        "debug sleep 0",
    ];

    #[test]
    fn keys_match_command_getkeys_for_representative_requests() {
        let server = RedisServer::start();
        let mut redis = server.connect();
        for line in REQUESTS {
            let (refused, request) = match line.strip_prefix("!U ") {
                Some(request) => (true, request),
                None => (false, *line),
            };
            let args = words(request);
            if refused {
                let cmd = lookup(&args[0]).unwrap();
                assert!(
                    matches!(cmd.keys(&args), Err(CommandError::Unsupported(_))),
                    "{line:?} must be refused"
                );
            } else {
                compare(&mut redis, line, &args);
            }
        }
        assert!(REQUESTS.len() >= 150, "{} requests", REQUESTS.len());
    }

    /// The commands `redis-server` 7.0 lacks: newer keyed commands.
    const NEWER_THAN_7_0: &[&str] = &[
        "hexpire",
        "hexpireat",
        "hexpiretime",
        "hpersist",
        "hpexpire",
        "hpexpireat",
        "hpexpiretime",
        "hpttl",
        "httl",
        "waitaof",
    ];

    /// Commands Keyway places by channel, not by key: Redis calls a channel no key (and a
    /// sharded channel a key in `COMMAND` but not in `COMMAND GETKEYS`).
    fn routes_by_channel(name: &str) -> bool {
        matches!(name, "publish" | "spublish" | "ssubscribe" | "sunsubscribe")
    }

    /// `@read @string @fast` from a `COMMAND INFO` entry's categories (its 7th element).
    fn categories_of(entry: &Reply) -> Vec<String> {
        entry.array()[6].array().iter().map(Reply::text).collect()
    }

    fn ours(categories: Categories) -> Vec<String> {
        categories.names().map(|n| format!("@{n}")).collect()
    }

    /// Sorted the way Redis lists them (the order of [`CATEGORY_NAMES`]).
    fn in_redis_order(mut names: Vec<String>) -> Vec<String> {
        let rank = |n: &String| CATEGORY_NAMES.iter().position(|c| format!("@{c}") == *n);
        names.sort_by_key(rank);
        names
    }

    /// Every command and subcommand the table knows has the ACL categories a real Redis 7.0
    /// reports in `COMMAND INFO`, and the subcommand table lists exactly Redis's subcommands.
    #[test]
    fn acl_categories_match_command_info_for_every_command_and_subcommand() {
        let server = RedisServer::start();
        let mut redis = server.connect();
        let mut request = vec!["COMMAND".to_string(), "INFO".into()];
        request.extend(all().map(|c| c.name.to_string()));
        let infos = redis.call(&request);
        let mut checked = 0;
        let mut subs_seen = Vec::new();
        for (cmd, entry) in all().zip(infos.array()) {
            if matches!(entry, Reply::Array(items) if items.is_empty())
                || matches!(entry, Reply::Bulk(None))
            {
                assert!(
                    NEWER_THAN_7_0.contains(&cmd.name),
                    "{} unknown to Redis",
                    cmd.name
                );
                continue;
            }
            assert_eq!(entry.array()[0].text(), cmd.name);
            assert_eq!(
                ours(cmd.categories),
                in_redis_order(categories_of(entry)),
                "categories of {}",
                cmd.name
            );
            checked += 1;
            for sub in entry.array()[9].array() {
                let full = sub.array()[0].text();
                let (id, ours_sub) = cmd
                    .subcommands()
                    .find(|(_, s)| s.full_name == full)
                    .unwrap_or_else(|| panic!("{full} is missing from the subcommand table"));
                assert!(id >= TABLE.len() && id < acl_ids());
                assert_eq!(
                    ours(ours_sub.categories),
                    in_redis_order(categories_of(sub)),
                    "categories of {full}"
                );
                subs_seen.push(full);
                checked += 1;
            }
        }
        let newer = ["client|no-touch", "client|setinfo"];
        for sub in SUBCOMMANDS {
            assert!(
                subs_seen.iter().any(|s| s == sub.full_name) || newer.contains(&sub.full_name),
                "{} is not a Redis 7.0 subcommand",
                sub.full_name
            );
        }
        assert!(SUBCOMMANDS
            .windows(2)
            .all(|p| p[0].full_name < p[1].full_name));
        assert!(checked > 350, "{checked} checked");
    }

    #[test]
    fn every_server_command_is_in_the_table_with_its_arity() {
        let server = RedisServer::start();
        let mut redis = server.connect();
        let commands = redis.call(&["COMMAND"]);
        let mut names = Vec::new();
        for entry in commands.array() {
            let name = entry.array()[0].text();
            let arity = entry.array()[1].int();
            let cmd = lookup(name.as_bytes())
                .unwrap_or_else(|| panic!("{name} is missing from the table"));
            assert_eq!(cmd.name, name);
            assert_eq!(i64::from(cmd.arity), arity, "arity of {name}");
            if cmd.kind != Kind::Unsupported && !routes_by_channel(cmd.name) {
                let range = (
                    entry.array()[3].int(),
                    entry.array()[4].int(),
                    entry.array()[5].int(),
                );
                assert_eq!(cmd.key_range(), range, "first, last, step of {name}");
            }
            names.push(name);
        }
        assert_eq!(names.len(), 240);
        for cmd in all() {
            assert!(
                names.iter().any(|n| n == cmd.name) || NEWER_THAN_7_0.contains(&cmd.name),
                "{} is not a Redis 7.0 command",
                cmd.name
            );
        }
        assert_eq!(TABLE.len(), names.len() + NEWER_THAN_7_0.len());
    }

    /// Every command and subcommand with fixed key positions, at its minimum argument count
    /// and a few more, against `COMMAND GETKEYS`.
    #[test]
    fn keys_match_command_getkeys_for_every_fixed_position_command() {
        let server = RedisServer::start();
        let mut redis = server.connect();
        let commands = redis.call(&["COMMAND"]);
        let mut checked = 0;
        for entry in commands.array() {
            let fields = entry.array();
            let name = fields[0].text();
            let cmd = lookup(name.as_bytes()).unwrap();
            let subcommands = fields.get(9).map_or(&[][..], Reply::array);
            let mut variants = Vec::new();
            if subcommands.is_empty() {
                variants.push((vec![name.clone()], fields));
            }
            for sub in subcommands {
                let sub = sub.array();
                let full = sub[0].text();
                let (_, subname) = full.split_once('|').unwrap();
                variants.push((vec![name.clone(), subname.to_owned()], sub));
            }
            for (prefix, fields) in variants {
                let arity = fields[1].int();
                let movable = fields[2].array().iter().any(|f| f.text() == "movablekeys");
                let first = fields[3].int();
                if movable {
                    continue;
                }
                let min = usize::try_from(arity.unsigned_abs()).unwrap();
                let extra = if arity < 0 { 0..4 } else { 0..1 };
                for extra in extra {
                    let mut args: Vec<Vec<u8>> =
                        prefix.iter().map(|p| p.as_bytes().to_vec()).collect();
                    while args.len() < min + extra {
                        args.push(format!("a{}", args.len()).into_bytes());
                    }
                    let line = String::from_utf8_lossy(&args.join(&b' ')).into_owned();
                    if first == 0 && cmd.kind == Kind::Routed && !routes_by_channel(cmd.name) {
                        // A keyless subcommand of a keyed container.
                        assert!(
                            matches!(cmd.keys(&args), Err(CommandError::Unsupported(_))),
                            "{line:?}"
                        );
                        continue;
                    }
                    if cmd.keys.is_pairs() && args.len() % 2 == 0 {
                        assert_eq!(cmd.keys(&args).err(), Some(CommandError::WrongArity));
                        continue;
                    }
                    compare(&mut redis, &line, &args);
                    checked += 1;
                }
            }
        }
        assert!(checked > 400, "{checked} requests checked");
    }

    impl Spec {
        fn is_pairs(&self) -> bool {
            matches!(self, Spec::Pairs)
        }
    }

    fn keys_of(line: &str) -> Result<Vec<usize>, CommandError> {
        let args = words(line);
        Ok(lookup(&args[0]).unwrap().keys(&args)?.collect())
    }

    #[test]
    fn table_is_sorted_lowercase_and_unique() {
        for pair in TABLE.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} / {}",
                pair[0].name,
                pair[1].name
            );
        }
        for cmd in TABLE {
            assert!(cmd.name.len() <= MAX_NAME);
            assert_eq!(cmd.name, cmd.name.to_ascii_lowercase());
            assert!(cmd.arity != 0);
        }
    }

    #[test]
    fn words_are_loaded_and_lower_cased_byte_for_byte() {
        let bytes: Vec<u8> = (1..=8).collect();
        for len in 0..=8 {
            let naive = bytes[..len]
                .iter()
                .enumerate()
                .fold(0u64, |word, (i, &b)| word | u64::from(b) << (8 * i));
            assert_eq!(load(&bytes[..len]), naive, "{len}");
        }
        for b in 0..=255u8 {
            let lower = u64::from(b.to_ascii_lowercase());
            assert_eq!(lower_case(u64::from(b) << 24), lower << 24, "{b:#x}");
            let mixed = u64::from_le_bytes([b, b'Q', 0xc1, b, b'@', b'[', b'z', b]);
            let expected = u64::from_le_bytes([
                b.to_ascii_lowercase(),
                b'q',
                0xc1,
                b.to_ascii_lowercase(),
                b'@',
                b'[',
                b'z',
                b.to_ascii_lowercase(),
            ]);
            assert_eq!(lower_case(mixed), expected, "{b:#x}");
        }
    }

    #[test]
    fn lookup_ignores_case_and_rejects_unknown_names() {
        assert_eq!(lookup(b"GET").unwrap().name, "get");
        assert_eq!(lookup(b"gEtRaNgE").unwrap().name, "getrange");
        assert_eq!(lookup(b"RESTORE-ASKING").unwrap().name, "restore-asking");
        assert_eq!(lookup(b"Eval_RO").unwrap().name, "eval_ro");
        assert_eq!(lookup(b"RESTORE-ASKING\0").map(|c| c.name), None);
        for name in [
            &b""[..],
            b"nosuch",
            b"ge",
            b"gett",
            b"get ",
            b"\xffget",
            &[b'a'; 33],
        ] {
            assert!(lookup(name).is_none(), "{name:?}");
        }
        assert_eq!(lookup(&[b'a'; 300]).map(|c| c.name), None);
    }

    #[test]
    fn kinds_follow_the_design() {
        let kind = |name: &str| lookup(name.as_bytes()).unwrap().kind;
        for name in [
            "ping", "echo", "quit", "select", "auth", "hello", "client", "command", "info", "acl",
        ] {
            assert_eq!(kind(name), Kind::Local, "{name}");
        }
        assert_eq!(kind("mget"), Kind::Fanout(Merge::Values));
        assert_eq!(kind("mset"), Kind::Fanout(Merge::Ok));
        for name in ["del", "unlink", "exists", "touch"] {
            assert_eq!(kind(name), Kind::Fanout(Merge::Sum), "{name}");
        }
        for (name, tx) in [
            ("multi", Tx::Multi),
            ("exec", Tx::Exec),
            ("discard", Tx::Discard),
            ("watch", Tx::Watch),
            ("unwatch", Tx::Unwatch),
        ] {
            assert_eq!(kind(name), Kind::Transaction(tx), "{name}");
        }
        for name in [
            "blpop",
            "brpop",
            "blmove",
            "brpoplpush",
            "bzpopmin",
            "bzpopmax",
            "blmpop",
            "bzmpop",
            "xread",
            "xreadgroup",
        ] {
            assert!(matches!(kind(name), Kind::Blocking(_)), "{name}");
        }
        for name in [
            "monitor", "config", "function", "wait", "swapdb", "move", "latency", "slowlog",
            "module", "migrate",
        ] {
            assert_eq!(kind(name), Kind::Unsupported, "{name}");
        }
        for name in [
            "scan",
            "keys",
            "dbsize",
            "randomkey",
            "flushdb",
            "flushall",
            "script",
            "lastsave",
            "time",
            "pubsub",
        ] {
            assert_eq!(kind(name), Kind::Keyspace, "{name}");
        }
        for name in [
            "get", "msetnx", "pfcount", "eval", "object", "memory", "sort", "publish", "spublish",
        ] {
            assert_eq!(kind(name), Kind::Routed, "{name}");
        }
        assert_eq!(
            kind("subscribe"),
            Kind::Subscription(Subscription::Subscribe)
        );
        assert_eq!(
            kind("sunsubscribe"),
            Kind::Subscription(Subscription::Sunsubscribe)
        );
    }

    #[test]
    fn block_times_are_read_where_each_command_has_them() {
        use std::time::Duration;
        let time = |line: &str| {
            let args = words(line);
            lookup(&args[0]).unwrap().block_time(&args)
        };
        let secs = |s: f64| BlockTime::For(Duration::from_secs_f64(s));
        assert_eq!(time("blpop a b 2"), secs(2.0));
        assert_eq!(time("brpop a 0.25"), secs(0.25));
        assert_eq!(time("bzpopmin z 0"), BlockTime::Forever);
        assert_eq!(time("bzpopmax z 0.0"), BlockTime::Forever);
        assert_eq!(time("blmove a b LEFT RIGHT 1.5"), secs(1.5));
        assert_eq!(time("brpoplpush a b 3"), secs(3.0));
        assert_eq!(time("blmpop 4 2 a b LEFT COUNT 2"), secs(4.0));
        assert_eq!(time("bzmpop 0 1 z MIN"), BlockTime::Forever);
        assert_eq!(time("xread COUNT 1 BLOCK 250 STREAMS s 0"), secs(0.25));
        assert_eq!(time("xread BLOCK 0 STREAMS s $"), BlockTime::Forever);
        assert_eq!(
            time("xreadgroup GROUP g c BLOCK 10 STREAMS s >"),
            secs(0.01)
        );
        assert_eq!(time("xreadgroup GROUP g c STREAMS s >"), BlockTime::No);
        // A stream named "block" is no option.
        assert_eq!(time("xread STREAMS block 0"), BlockTime::No);
        assert_eq!(time("get k"), BlockTime::No);
        // Redis answers these with an error at once; a huge one blocks for good.
        for bad in [
            "blpop a -1",
            "blpop a soon",
            "blpop a nan",
            "xread BLOCK x STREAMS s 0",
        ] {
            assert_eq!(time(bad), BlockTime::Invalid, "{bad}");
        }
        assert_eq!(time("blpop a 1e300"), BlockTime::Invalid);
        assert_eq!(time("xread BLOCK -1 STREAMS s 0"), BlockTime::Invalid);
        assert_eq!(
            time("xread BLOCK 18446744073709551615 STREAMS s 0"),
            BlockTime::Invalid
        );
        assert_eq!(time("blpop a 1e9"), BlockTime::Forever);
        assert_eq!(
            time("xread BLOCK 9223372036854775807 STREAMS s 0"),
            BlockTime::Forever
        );
    }

    #[test]
    fn arity_is_checked_before_keys() {
        let get = lookup(b"get").unwrap();
        assert!(get.check_arity(2));
        assert!(!get.check_arity(1) && !get.check_arity(3));
        let del = lookup(b"del").unwrap();
        assert!(!del.check_arity(1) && del.check_arity(2) && del.check_arity(100));
        assert_eq!(keys_of("get"), Err(CommandError::WrongArity));
        assert_eq!(keys_of("get a b"), Err(CommandError::WrongArity));
        assert_eq!(keys_of("mset a 1 b"), Err(CommandError::WrongArity));
        assert_eq!(keys_of("msetnx a 1 b"), Err(CommandError::WrongArity));
        assert_eq!(keys_of("object encoding"), Err(CommandError::WrongArity));
        assert_eq!(
            keys_of("object encoding a b"),
            Err(CommandError::WrongArity)
        );
        assert_eq!(keys_of("xgroup destroy x"), Err(CommandError::WrongArity));
    }

    #[test]
    fn bad_numkeys_is_an_error() {
        for line in [
            "zunion x a",
            "zunion 0 a",
            "zunion 3 a b",
            "zunion -1 a",
            "zunionstore d 0 a",
            "eval s -1 a",
            "eval s 2 a",
            "eval s 99999999999999999999999 a",
            "lmpop 0 a LEFT",
            "sintercard +1 a",
            "xread STREAMS a b c",
            "xread STREAMS a b 0",
            "xread COUNT 1 a 0",
            "xread COUNT 1 STREAMS",
            "xreadgroup GROUP g c STREAMS a b c",
        ] {
            let args = words(line);
            let result = lookup(&args[0])
                .unwrap()
                .keys(&args)
                .map(Iterator::collect::<Vec<_>>);
            assert_eq!(result, Err(CommandError::BadNumkeys), "{line}");
        }
    }

    #[test]
    fn sort_patterns_must_live_with_the_key() {
        assert_eq!(
            keys_of("sort k BY w_* GET o_*->f GET # STORE d"),
            Ok(vec![1, 3, 5, 9])
        );
        assert_eq!(
            keys_of("sort k GET o_* LIMIT 0 1 by nosort"),
            Ok(vec![1, 3])
        );
        assert_eq!(keys_of("sort_ro k BY w_{t}*"), Ok(vec![1, 3]));
        assert_eq!(keys_of("sort_ro k STORE d"), Ok(vec![1]));
        assert_eq!(keys_of("sort k BY nosort GET #"), Ok(vec![1]));
    }

    #[test]
    fn georadius_stores_must_all_live_with_the_key() {
        assert_eq!(
            keys_of("georadius g 1 2 3 km STORE a STORE b"),
            Ok(vec![1, 7, 9])
        );
        assert_eq!(
            keys_of("georadiusbymember g m 3 km STOREDIST a STORE b"),
            Ok(vec![1, 6, 8])
        );
        assert_eq!(keys_of("georadiusbymember g m 3 km STORE"), Ok(vec![1]));
        assert_eq!(keys_of("georadius g 1 2 3 km ASC STORE a"), Ok(vec![1, 8]));
    }

    #[test]
    fn unsupported_forms_say_why() {
        let unsupported = |line| match keys_of(line) {
            Err(CommandError::Unsupported(form)) => form,
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(unsupported("EVALSHA s 0"), "evalsha without keys");
        assert_eq!(unsupported("copy a b REPLACE DB 1"), "copy db");
        assert_eq!(unsupported("object HELP"), "object help");
        assert_eq!(unsupported("memory doctor"), "memory doctor");
        assert_eq!(unsupported("xinfo help"), "xinfo help");
        assert_eq!(unsupported("xgroup nosuch x"), "xgroup subcommand");
        assert_eq!(
            CommandError::Unsupported("copy db").to_string(),
            "unsupported command 'copy db'"
        );
        assert!(matches!(
            keys_of("eval s 0"),
            Err(CommandError::Unsupported(_))
        ));
        assert!(matches!(
            keys_of("copy a b db 0"),
            Err(CommandError::Unsupported(_))
        ));
        assert!(matches!(
            keys_of("object nosuch k"),
            Err(CommandError::Unsupported(_))
        ));
        assert!(matches!(
            keys_of("memory malloc-stats"),
            Err(CommandError::Unsupported(_))
        ));
        assert_eq!(
            CommandError::WrongArity.to_string(),
            "wrong number of arguments"
        );
    }

    #[test]
    fn key_indices_know_their_length() {
        let mut keys = lookup(b"zunionstore")
            .unwrap()
            .keys(&words("zunionstore d 3 a b c WEIGHTS 1 2 3"))
            .unwrap();
        assert_eq!(keys.len(), 4);
        assert_eq!(keys.next(), Some(1));
        assert_eq!(keys.len(), 3);
        assert_eq!(keys.by_ref().collect::<Vec<_>>(), [3, 4, 5]);
        assert!(keys.is_empty());
        assert_eq!(keys.next(), None);
        assert_eq!(keys_of("mset a 1 b 2 c 3"), Ok(vec![1, 3, 5]));
        let slice: &[&[u8]] = &[b"MGET", b"a", b"b"];
        assert_eq!(lookup(b"mget").unwrap().keys(slice).unwrap().len(), 2);
    }

    fn arb_arg() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::sample::select(vec![
                "0",
                "1",
                "2",
                "3",
                "-1",
                "x",
                "*",
                "store",
                "STOREDIST",
                "streams",
                "block",
                "count",
                "group",
                "noack",
                "limit",
                "by",
                "get",
                "db",
                "encoding",
                "usage",
                "create",
                "stream",
                "help",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..4),
        ]
    }

    /// A name spelled from a command's, each byte in either case or swapped for a byte that
    /// differs from it only in bit 5 (`_` and DEL, `-` and CR, `@` and `` ` ``...), with bytes
    /// added or dropped at the end.
    fn arb_name() -> impl Strategy<Value = Vec<u8>> {
        // Half of them from the names with a byte that is no letter.
        let odd: Vec<usize> = (0..TABLE.len())
            .filter(|&i| !TABLE[i].name.bytes().all(|b| b.is_ascii_alphabetic()))
            .collect();
        (
            prop_oneof![0..TABLE.len(), prop::sample::select(odd)],
            prop::collection::vec(0..4u8, MAX_NAME),
            prop::option::weighted(0.2, prop::collection::vec(any::<u8>(), 1..3)),
            prop::option::weighted(0.2, 1..3usize),
        )
            .prop_map(|(cmd, flips, tail, cut)| {
                let (tail, cut) = (tail.unwrap_or_default(), cut.unwrap_or(0));
                let mut name: Vec<u8> = TABLE[cmd]
                    .name
                    .bytes()
                    .zip(flips)
                    .map(|(b, flip)| match flip {
                        0 => b.to_ascii_uppercase(),
                        1 => b ^ 0x20,
                        _ => b,
                    })
                    .collect();
                name.truncate(name.len().saturating_sub(cut));
                name.extend(tail);
                name
            })
    }

    proptest! {
        #[test]
        fn lookup_finds_what_a_case_insensitive_scan_finds(name in arb_name()) {
            let scanned = TABLE.iter().find(|c| c.name.as_bytes().eq_ignore_ascii_case(&name));
            prop_assert_eq!(lookup(&name).map(|c| c.name), scanned.map(|c| c.name));
        }

        #[test]
        fn keys_stay_within_the_arguments(
            cmd in 0..TABLE.len(),
            rest in prop::collection::vec(arb_arg(), 0..10),
        ) {
            let cmd = &TABLE[cmd];
            let mut args = vec![cmd.name.as_bytes().to_vec()];
            args.extend(rest);
            if let Ok(keys) = cmd.keys(&args) {
                let n = keys.len();
                let keys: Vec<usize> = keys.collect();
                prop_assert_eq!(keys.len(), n);
                prop_assert!(keys.iter().all(|&i| i > 0 && i < args.len()));
                if matches!(cmd.kind, Kind::Routed | Kind::Fanout(_) | Kind::Blocking(_)) {
                    prop_assert!(!keys.is_empty());
                }
            }
        }
    }
}
