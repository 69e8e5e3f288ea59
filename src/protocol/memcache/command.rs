//! The command table: what each memcached command looks like on the wire and in reply.

use super::reply::ReplyKind;

/// A memcached command Keyway understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// `get <key>*`
    Get,
    /// `gets <key>*`
    Gets,
    /// `gat <exptime> <key>*`
    Gat,
    /// `gats <exptime> <key>*`
    Gats,
    /// `set <key> <flags> <exptime> <bytes> [noreply]` + data
    Set,
    /// `add ...` as `set`
    Add,
    /// `replace ...` as `set`
    Replace,
    /// `append ...` as `set`
    Append,
    /// `prepend ...` as `set`
    Prepend,
    /// `cas <key> <flags> <exptime> <bytes> <cas unique> [noreply]` + data
    Cas,
    /// `incr <key> <value> [noreply]`
    Incr,
    /// `decr <key> <value> [noreply]`
    Decr,
    /// `delete <key> [0] [noreply]`
    Delete,
    /// `touch <key> <exptime> [noreply]`
    Touch,
    /// `version`: answered by Keyway ([`super::reply::version_reply`]).
    Version,
    /// `quit`: Keyway closes the client connection, without a reply.
    Quit,
    /// `mg <key> <flag>*`
    MetaGet,
    /// `ms <key> <datalen> <flag>*` + data
    MetaSet,
    /// `md <key> <flag>*`
    MetaDelete,
    /// `ma <key> <flag>*`
    MetaArithmetic,
    /// `mn`: answered by Keyway ([`super::reply::noop_reply`]); replies are already in
    /// request order when it is written, which is all `mn` promises.
    MetaNoop,
    /// `me <key> [b]`
    MetaDebug,
}

/// Whether the client sees the backend's reply to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyPolicy {
    /// Forward the reply.
    Always,
    /// `noreply`: drop the reply, even an error (memcached would have been silent, or the
    /// client is not reading).
    Never,
    /// Meta `q`: drop a reply starting with one of these codes (the "nothing interesting"
    /// ones, per command, as memcached 1.6 hides them); forward any other, errors included.
    Quiet(&'static [[u8; 2]]),
}

impl ReplyPolicy {
    /// Whether the client must see `reply`, a complete backend reply.
    pub fn forwards(self, reply: &[u8]) -> bool {
        match self {
            ReplyPolicy::Always => true,
            ReplyPolicy::Never => false,
            ReplyPolicy::Quiet(hidden) => !hidden
                .iter()
                .any(|code| reply.starts_with(code) && matches!(reply.get(2), Some(b' ' | b'\r'))),
        }
    }
}

/// Where a command's keys sit and what follows its line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `get`-like: keys from the first argument.
    Retrieval,
    /// `gat`-like: an exptime, then keys.
    RetrievalTouch,
    /// `set`-like: a data block follows; `with_cas` adds the cas unique argument.
    Storage { with_cas: bool },
    /// `incr`/`decr`.
    Arithmetic,
    /// `delete`.
    Delete,
    /// `touch`.
    Touch,
    /// No key, no argument that matters (`version`, `quit`, `mn`).
    Bare,
    /// A meta command: key, then flags (`ms`: key, datalen, flags, then a data block).
    Meta,
}

impl Command {
    /// Looks up a command by its (case-sensitive) name.
    pub fn parse(name: &[u8]) -> Option<Command> {
        Some(match name {
            b"get" => Command::Get,
            b"gets" => Command::Gets,
            b"gat" => Command::Gat,
            b"gats" => Command::Gats,
            b"set" => Command::Set,
            b"add" => Command::Add,
            b"replace" => Command::Replace,
            b"append" => Command::Append,
            b"prepend" => Command::Prepend,
            b"cas" => Command::Cas,
            b"incr" => Command::Incr,
            b"decr" => Command::Decr,
            b"delete" => Command::Delete,
            b"touch" => Command::Touch,
            b"version" => Command::Version,
            b"quit" => Command::Quit,
            b"mg" => Command::MetaGet,
            b"ms" => Command::MetaSet,
            b"md" => Command::MetaDelete,
            b"ma" => Command::MetaArithmetic,
            b"mn" => Command::MetaNoop,
            b"me" => Command::MetaDebug,
            _ => return None,
        })
    }

    /// The command's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Command::Get => "get",
            Command::Gets => "gets",
            Command::Gat => "gat",
            Command::Gats => "gats",
            Command::Set => "set",
            Command::Add => "add",
            Command::Replace => "replace",
            Command::Append => "append",
            Command::Prepend => "prepend",
            Command::Cas => "cas",
            Command::Incr => "incr",
            Command::Decr => "decr",
            Command::Delete => "delete",
            Command::Touch => "touch",
            Command::Version => "version",
            Command::Quit => "quit",
            Command::MetaGet => "mg",
            Command::MetaSet => "ms",
            Command::MetaDelete => "md",
            Command::MetaArithmetic => "ma",
            Command::MetaNoop => "mn",
            Command::MetaDebug => "me",
        }
    }

    /// What a backend's reply to this command looks like.
    pub fn expect(self) -> ReplyKind {
        match self.shape() {
            Shape::Retrieval | Shape::RetrievalTouch => ReplyKind::Values,
            Shape::Meta => ReplyKind::Meta,
            _ if self == Command::MetaNoop => ReplyKind::Meta,
            _ => ReplyKind::Line,
        }
    }

    pub(crate) fn shape(self) -> Shape {
        match self {
            Command::Get | Command::Gets => Shape::Retrieval,
            Command::Gat | Command::Gats => Shape::RetrievalTouch,
            Command::Set | Command::Add | Command::Replace | Command::Append | Command::Prepend => {
                Shape::Storage { with_cas: false }
            }
            Command::Cas => Shape::Storage { with_cas: true },
            Command::Incr | Command::Decr => Shape::Arithmetic,
            Command::Delete => Shape::Delete,
            Command::Touch => Shape::Touch,
            Command::Version | Command::Quit | Command::MetaNoop => Shape::Bare,
            Command::MetaGet
            | Command::MetaSet
            | Command::MetaDelete
            | Command::MetaArithmetic
            | Command::MetaDebug => Shape::Meta,
        }
    }

    /// The reply codes a meta command's `q` flag hides, as memcached 1.6 does: a miss for
    /// `mg`, success for `ms`/`md`, success with or without a value for `ma`.
    pub(crate) fn quiet_codes(self) -> &'static [[u8; 2]] {
        const MISS: &[[u8; 2]] = &[*b"EN"];
        const STORED: &[[u8; 2]] = &[*b"HD"];
        const COUNTED: &[[u8; 2]] = &[*b"HD", *b"VA"];
        match self {
            Command::MetaGet => MISS,
            Command::MetaSet | Command::MetaDelete => STORED,
            Command::MetaArithmetic => COUNTED,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "get", "gets", "gat", "gats", "set", "add", "replace", "append", "prepend", "cas",
            "incr", "decr", "delete", "touch", "version", "quit", "mg", "ms", "md", "ma", "mn",
            "me",
        ] {
            let command = Command::parse(name.as_bytes()).unwrap();
            assert_eq!(command.name(), name);
        }
        assert_eq!(Command::parse(b"GET"), None);
        assert_eq!(Command::parse(b"flush_all"), None);
    }

    #[test]
    fn quiet_policy_hides_only_nominal_codes() {
        let mg = ReplyPolicy::Quiet(Command::MetaGet.quiet_codes());
        assert!(!mg.forwards(b"EN\r\n"));
        assert!(mg.forwards(b"HD\r\n"));
        assert!(mg.forwards(b"VA 1\r\nx\r\n"));
        assert!(mg.forwards(b"CLIENT_ERROR bad\r\n"));
        let ms = ReplyPolicy::Quiet(Command::MetaSet.quiet_codes());
        assert!(!ms.forwards(b"HD O1 k2\r\n"));
        assert!(ms.forwards(b"NS\r\n"));
        assert!(ms.forwards(b"HDX\r\n"));
        let ma = ReplyPolicy::Quiet(Command::MetaArithmetic.quiet_codes());
        assert!(!ma.forwards(b"VA 1\r\n5\r\n"));
        assert!(ma.forwards(b"NF\r\n"));
        assert!(!ReplyPolicy::Never.forwards(b"SERVER_ERROR x\r\n"));
        assert!(ReplyPolicy::Always.forwards(b"EN\r\n"));
    }
}
