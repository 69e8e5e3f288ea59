//! Request framing: memcached ASCII command lines (and the data blocks of storage commands)
//! into [`Request`]s, validated as memcached validates them, with size limits.
//!
//! A request is kept as the bytes the client sent, minus `noreply` or the meta `q` flag (cut
//! out in place, without copying a data block), so that every forwarded request gets exactly
//! one reply and a backend connection's FIFO of waiting requests can never slip.

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};

use super::command::{Command, ReplyPolicy, Shape};
use super::reply::ReplyKind;
use super::{Error, Limits};

/// memcached reads at most this many tokens of a meta command line (`MFLAG_MAX_OPT_LENGTH`,
/// counting its end-of-line token): more flags are an error.
const MAX_META_TOKENS: usize = 19;

const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";
const BAD_CHUNK: &str = "CLIENT_ERROR bad data chunk";
const TOO_LARGE: &str = "SERVER_ERROR object too large for cache";
const BAD_EXPTIME: &str = "CLIENT_ERROR invalid exptime argument";
const BAD_DELTA: &str = "CLIENT_ERROR invalid numeric delta argument";
const BAD_DELETE: &str = "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]";

/// One complete request, ready to route and forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    command: Command,
    frame: Bytes,
    /// Where the first key sits in `frame` (empty for keyless commands).
    key: (u32, u32),
    /// Where the other keys of a multi-key retrieval sit in `frame`.
    more_keys: Vec<(u32, u32)>,
    /// The decoded key of a meta command with the `b` (base64 key) flag.
    binary_key: Option<Bytes>,
    policy: ReplyPolicy,
}

impl Request {
    /// Builds a retrieval request (`get`, `gets`, `gat`, `gats`) from the bytes before its
    /// keys (`get ` or `gat <exptime> `) and its keys.
    pub(crate) fn retrieval<'a>(
        command: Command,
        prefix: &[u8],
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Request {
        let mut frame = BytesMut::with_capacity(prefix.len() + 64);
        frame.extend_from_slice(prefix);
        let mut spans = Vec::new();
        for key in keys {
            if !spans.is_empty() {
                frame.extend_from_slice(b" ");
            }
            let start = frame.len();
            frame.extend_from_slice(key);
            // Keys of one request, at most `MAX_FRAME` bytes: the offsets fit.
            #[allow(clippy::cast_possible_truncation)]
            spans.push((start as u32, frame.len() as u32));
        }
        frame.extend_from_slice(b"\r\n");
        let key = spans.first().copied().unwrap_or_default();
        let more_keys = spans.get(1..).map(<[_]>::to_vec).unwrap_or_default();
        Request {
            command,
            frame: frame.freeze(),
            key,
            more_keys,
            binary_key: None,
            policy: ReplyPolicy::Always,
        }
    }

    /// The command.
    pub fn command(&self) -> Command {
        self.command
    }

    /// The bytes to forward to a backend: the client's request without `noreply` or `q`.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The routing keys, in request order (repeats included); a base64 meta key (`b` flag)
    /// is decoded. Empty for `version`, `quit` and `mn`.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let binary = self.binary_key.as_deref();
        let spans = self.key_spans().filter(move |_| binary.is_none());
        binary
            .into_iter()
            .chain(spans.map(move |(start, end)| self.slice(start, end)))
    }

    /// Number of keys.
    pub fn key_count(&self) -> usize {
        self.key_spans().count()
    }

    /// Which of the backend's replies the client sees.
    pub fn reply_policy(&self) -> ReplyPolicy {
        self.policy
    }

    /// What the backend's reply looks like (for [`super::ReplyScanner::scan`]).
    pub fn expect(&self) -> ReplyKind {
        self.command.expect()
    }

    /// The frame up to the first key: `get `, `gat <exptime> `, ...
    pub(crate) fn prefix(&self) -> &[u8] {
        self.frame.get(..self.key.0 as usize).unwrap_or_default()
    }

    /// The keys exactly as sent (still base64 with the `b` flag).
    pub(crate) fn raw_keys(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.key_spans()
            .map(move |(start, end)| self.slice(start, end))
    }

    fn key_spans(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let first = (self.key.1 > self.key.0).then_some(self.key);
        first.into_iter().chain(self.more_keys.iter().copied())
    }

    fn slice(&self, start: u32, end: u32) -> &[u8] {
        self.frame
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }
}

/// Incremental request decoder for one client stream.
///
/// ```
/// use bytes::BytesMut;
/// use keyway::protocol::memcache::{Command, ReplyPolicy, RequestDecoder};
///
/// let mut decoder = RequestDecoder::default();
/// let mut buf = BytesMut::from(&b"set k 0 0 2 noreply\r\nhi\r\nmg a"[..]);
/// let set = decoder.decode(&mut buf).unwrap().unwrap();
/// assert_eq!(set.command(), Command::Set);
/// assert_eq!(set.frame().as_ref(), b"set k 0 0 2\r\nhi\r\n");
/// assert_eq!(set.reply_policy(), ReplyPolicy::Never);
/// assert_eq!(decoder.decode(&mut buf), Ok(None));
/// buf.extend_from_slice(b" v\r\n");
/// let mg = decoder.decode(&mut buf).unwrap().unwrap();
/// assert!(mg.keys().eq([&b"a"[..]]));
/// ```
#[derive(Debug, Default)]
pub struct RequestDecoder {
    limits: Limits,
    /// Bytes of a rejected data block still to discard.
    skip: usize,
    /// Bytes at the front of the buffer already searched for the end of the line.
    scanned: usize,
    /// Length of a storage request whose data block is still arriving.
    wait: usize,
}

impl RequestDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        let max = crate::protocol::resp::codec::MAX_FRAME;
        RequestDecoder {
            limits: Limits {
                max_item_bytes: limits.max_item_bytes.min(max),
                max_request_bytes: limits.max_request_bytes.min(max),
                ..limits
            },
            ..RequestDecoder::default()
        }
    }

    /// Takes the next complete request off the front of `buf`. `Ok(None)` means more bytes
    /// are needed; after it the caller must only append to `buf`.
    ///
    /// # Errors
    /// A request Keyway rejects: see [`Error`] for what each variant consumed and what the
    /// client gets. After anything but [`Error::Fatal`] decoding may continue.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, Error> {
        if !self.discard(buf) || buf.is_empty() || buf.len() < self.wait {
            return Ok(None);
        }
        if buf.first() == Some(&0x80) {
            return Err(Error::Fatal("binary protocol is not supported"));
        }
        let Some(line_len) = self.line(buf)? else {
            return Ok(None);
        };
        let parsed =
            match Parser::new(&self.limits, buf.get(..line_len).unwrap_or_default()).parse() {
                Ok(parsed) => parsed,
                Err(Reject { error, data }) => {
                    buf.advance(line_len);
                    self.skip = data;
                    self.discard(buf);
                    return Err(error);
                }
            };
        let total = line_len + parsed.data.map_or(0, |len| len + 2);
        if buf.len() < total {
            self.wait = total;
            return Ok(None);
        }
        self.wait = 0;
        if parsed.data.is_some() && buf.get(total - 2..total) != Some(b"\r\n") {
            buf.advance(total);
            return Err(Error::Client {
                reply: BAD_CHUNK,
                silent: parsed.policy == ReplyPolicy::Never,
            });
        }
        // Cut the dropped token out by moving the line's head over it: the data block stays.
        let shift = match parsed.drop {
            Some((start, end)) => {
                buf.copy_within(..start, end - start);
                buf.advance(end - start);
                end - start
            }
            None => 0,
        };
        let frame = buf.split_to(total - shift).freeze();
        // Offsets within a frame of at most `MAX_FRAME` bytes: they fit.
        #[allow(clippy::cast_possible_truncation)]
        let to_u32 = |(start, end): (usize, usize)| (start as u32, end as u32);
        Ok(Some(Request {
            command: parsed.command,
            frame,
            key: parsed.keys.first().copied().map(to_u32).unwrap_or_default(),
            more_keys: parsed.keys.iter().skip(1).copied().map(to_u32).collect(),
            binary_key: parsed.binary_key.map(Bytes::from),
            policy: parsed.policy,
        }))
    }

    /// Drops what is left of a rejected data block; `true` once none is left.
    fn discard(&mut self, buf: &mut BytesMut) -> bool {
        let n = self.skip.min(buf.len());
        buf.advance(n);
        self.skip -= n;
        self.skip == 0
    }

    /// The length of the first line, `\n` included, if it is all there.
    fn line(&mut self, buf: &[u8]) -> Result<Option<usize>, Error> {
        // Spans are u32 offsets into a line.
        let max = self
            .limits
            .max_line_bytes
            .min(self.limits.max_request_bytes)
            .min(u32::MAX as usize - 2);
        let from = self.scanned.min(buf.len());
        match memchr::memchr(b'\n', buf.get(from..).unwrap_or_default()) {
            // `max` bounds the whole line, its `\n` included.
            Some(at) if from + at < max => {
                self.scanned = 0;
                Ok(Some(from + at + 1))
            }
            None if buf.len() < max => {
                self.scanned = buf.len();
                Ok(None)
            }
            _ => Err(Error::Fatal("line too long")),
        }
    }
}

/// A request line that passed validation.
struct Parsed {
    command: Command,
    /// Key spans in the line.
    keys: Vec<(usize, usize)>,
    /// Length of the data block that follows the line.
    data: Option<usize>,
    /// Bytes of the line to cut out before forwarding (` noreply`, ` q`).
    drop: Option<(usize, usize)>,
    binary_key: Option<Vec<u8>>,
    policy: ReplyPolicy,
}

/// A rejected request line, and the length of its data block (CRLF included) to skip.
struct Reject {
    error: Error,
    data: usize,
}

impl From<Error> for Reject {
    fn from(error: Error) -> Self {
        Reject { error, data: 0 }
    }
}

/// Validates one command line, as memcached 1.6 does, and finds its keys.
struct Parser<'a> {
    limits: &'a Limits,
    /// The line without its line end.
    line: &'a [u8],
    /// The line's length with its line end: a data block comes on top of it.
    line_len: usize,
    /// Token spans: the command name first.
    tokens: Vec<(usize, usize)>,
}

impl<'a> Parser<'a> {
    fn new(limits: &'a Limits, line: &'a [u8]) -> Self {
        let line_len = line.len();
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // memcached separates tokens by spaces only; a tab is part of a token.
        let mut tokens = Vec::with_capacity(8);
        let mut at = 0;
        for piece in line.split(|&c| c == b' ') {
            if !piece.is_empty() {
                tokens.push((at, at + piece.len()));
            }
            at += piece.len() + 1;
        }
        Parser {
            limits,
            line,
            line_len,
            tokens,
        }
    }

    /// Whether a data block of `len` bytes (CRLF excluded) is over the limits.
    fn too_large(&self, len: usize) -> bool {
        len > self.limits.max_item_bytes
            || self.line_len.saturating_add(len).saturating_add(2) > self.limits.max_request_bytes
    }

    fn token(&self, i: usize) -> &'a [u8] {
        self.tokens
            .get(i)
            .and_then(|&(start, end)| self.line.get(start..end))
            .unwrap_or_default()
    }

    /// Number of arguments after the command name.
    fn argc(&self) -> usize {
        self.tokens.len().saturating_sub(1)
    }

    /// Bytes to cut to remove token `i` with the spaces before it.
    fn cut(&self, i: usize) -> Option<(usize, usize)> {
        let start = self.tokens.get(i.checked_sub(1)?)?.1;
        Some((start, self.tokens.get(i)?.1))
    }

    fn is_key(&self, key: &[u8]) -> bool {
        !key.is_empty()
            && key.len() <= self.limits.max_key_bytes
            && key.iter().all(|&c| c > b' ' && c != 0x7f)
    }

    fn parse(self) -> Result<Parsed, Reject> {
        let command = Command::parse(self.token(0)).ok_or(Error::Unknown)?;
        let mut parsed = Parsed {
            command,
            keys: Vec::new(),
            data: None,
            drop: None,
            binary_key: None,
            policy: ReplyPolicy::Always,
        };
        match command.shape() {
            Shape::Retrieval => self.retrieval(&mut parsed, 1)?,
            Shape::RetrievalTouch => {
                if self.argc() < 2 {
                    // memcached answers a keyless `gat <exptime>` with a bare `END`; Keyway,
                    // with nothing to route, treats it as the keyless `get`.
                    return Err(Error::Unknown.into());
                }
                if parse_i32(self.token(1)).is_none() {
                    return Err(client(BAD_EXPTIME, false).into());
                }
                self.retrieval(&mut parsed, 2)?;
            }
            Shape::Storage { with_cas } => self.storage(&mut parsed, with_cas)?,
            Shape::Arithmetic => {
                self.noreply(&mut parsed, 2, 3)?;
                let silent = parsed.policy == ReplyPolicy::Never;
                if parse_u64(self.token(2)).is_none() {
                    return Err(client(BAD_DELTA, silent).into());
                }
                self.key(&mut parsed, silent)?;
            }
            Shape::Delete => {
                self.noreply(&mut parsed, 1, 3)?;
                let noreply = parsed.policy == ReplyPolicy::Never;
                let zero = self.token(2) == b"0";
                let valid = match self.argc() {
                    2 => zero || noreply,
                    3 => zero && noreply,
                    _ => true,
                };
                if !valid {
                    return Err(client(BAD_DELETE, noreply).into());
                }
                self.key(&mut parsed, noreply)?;
            }
            Shape::Touch => {
                self.noreply(&mut parsed, 2, 3)?;
                let silent = parsed.policy == ReplyPolicy::Never;
                self.key(&mut parsed, silent)?;
                if parse_i32(self.token(2)).is_none() {
                    return Err(client(BAD_EXPTIME, silent).into());
                }
            }
            Shape::Bare => {}
            Shape::Meta => self.meta(&mut parsed)?,
        }
        Ok(parsed)
    }

    /// `get`-like keys from token `first` on.
    fn retrieval(&self, parsed: &mut Parsed, first: usize) -> Result<(), Reject> {
        let keys = self.tokens.get(first..).unwrap_or_default();
        if keys.is_empty() {
            return Err(Error::Unknown.into());
        }
        if keys.len() > self.limits.max_keys {
            return Err(client("CLIENT_ERROR too many keys", false).into());
        }
        for &(start, end) in keys {
            if !self.is_key(self.line.get(start..end).unwrap_or_default()) {
                return Err(client(BAD_FORMAT, false).into());
            }
        }
        parsed.keys = keys.to_vec();
        Ok(())
    }

    /// Validates the key (token 1), as memcached would before answering anything else.
    fn key(&self, parsed: &mut Parsed, silent: bool) -> Result<(), Reject> {
        if !self.is_key(self.token(1)) {
            return Err(client(BAD_FORMAT, silent).into());
        }
        parsed.keys = self.tokens.get(1).copied().into_iter().collect();
        Ok(())
    }

    /// Checks the argument count (`ERROR` outside `min..=max`) and a final `noreply`.
    fn noreply(&self, parsed: &mut Parsed, min: usize, max: usize) -> Result<(), Reject> {
        if !(min..=max).contains(&self.argc()) {
            return Err(Error::Unknown.into());
        }
        let last = self.tokens.len() - 1;
        if last > 1 && self.token(last) == b"noreply" {
            parsed.policy = ReplyPolicy::Never;
            parsed.drop = self.cut(last);
        }
        Ok(())
    }

    /// `set`-like: `<key> <flags> <exptime> <bytes> [<cas>] [noreply]` and a data block.
    fn storage(&self, parsed: &mut Parsed, with_cas: bool) -> Result<(), Reject> {
        let argc = if with_cas { 5 } else { 4 };
        // Without a trustworthy length the data block cannot be found: memcached would read
        // it as commands, Keyway closes the connection.
        let len = (self.argc() == argc || self.argc() == argc + 1)
            .then(|| parse_i32(self.token(4)))
            .flatten()
            .and_then(|len| usize::try_from(len).ok())
            .filter(|&len| len <= i32::MAX as usize - 2)
            .ok_or(Error::Fatal("bad command line format"))?;
        self.noreply(parsed, argc, argc + 1)?;
        let silent = parsed.policy == ReplyPolicy::Never;
        // memcached leaves the data block of a malformed line to be read as commands;
        // Keyway skips it, so that data never runs as commands.
        let reject = |reply| Reject {
            error: client(reply, silent),
            data: len + 2,
        };
        let valid = self.is_key(self.token(1))
            && parse_u32(self.token(2)).is_some()
            && parse_i32(self.token(3)).is_some()
            && (!with_cas || parse_u64(self.token(5)).is_some());
        if !valid {
            return Err(reject(BAD_FORMAT));
        }
        if self.too_large(len) {
            return Err(reject(TOO_LARGE));
        }
        parsed.keys = vec![self.tokens.get(1).copied().unwrap_or_default()];
        parsed.data = Some(len);
        Ok(())
    }

    /// Meta commands: `<key> [<datalen>] <flag>*`; errors are never silent.
    fn meta(&self, parsed: &mut Parsed) -> Result<(), Reject> {
        let command = parsed.command;
        if self.argc() == 0 {
            return Err(match command {
                Command::MetaDebug => client(BAD_FORMAT, false),
                _ => Error::Unknown,
            }
            .into());
        }
        let mut data = 0;
        let mut flags_from = 2;
        if command == Command::MetaSet {
            let len = parse_i32(self.token(2))
                .and_then(|len| usize::try_from(len).ok())
                .filter(|&len| len <= i32::MAX as usize - 2)
                .ok_or(Error::Fatal("bad command line format"))?;
            parsed.data = Some(len);
            data = len + 2;
            flags_from = 3;
        }
        let reject = |reply| Reject {
            error: client(reply, false),
            data,
        };
        let (invalid, duplicate, bad_key) = match command {
            Command::MetaGet | Command::MetaSet => (
                "CLIENT_ERROR invalid flag",
                "CLIENT_ERROR duplicate flag",
                "CLIENT_ERROR error decoding key",
            ),
            Command::MetaDebug => (BAD_FORMAT, BAD_FORMAT, BAD_FORMAT),
            _ => (
                "CLIENT_ERROR invalid or duplicate flag",
                "CLIENT_ERROR invalid or duplicate flag",
                "CLIENT_ERROR invalid or duplicate flag",
            ),
        };
        if !self.is_key(self.token(1)) {
            return Err(reject(BAD_FORMAT));
        }
        if self.tokens.len() > MAX_META_TOKENS && command != Command::MetaDebug {
            return Err(reject(match command {
                Command::MetaGet => "CLIENT_ERROR options flags are too long",
                _ => "CLIENT_ERROR options flags too long",
            }));
        }
        let mut seen = 0u64;
        let mut binary = false;
        for i in flags_from..self.tokens.len() {
            let flag = self.token(i).first().copied().unwrap_or_default();
            if command == Command::MetaDebug {
                binary |= self.token(i) == b"b";
                continue;
            }
            if !flag.is_ascii_alphabetic() {
                return Err(reject(invalid));
            }
            let bit = 1u64 << (flag & 0x3f);
            if seen & bit != 0 {
                return Err(reject(duplicate));
            }
            seen |= bit;
            match flag {
                b'b' => binary = true,
                b'q' => {
                    parsed.policy = ReplyPolicy::Quiet(command.quiet_codes());
                    parsed.drop = self.cut(i);
                }
                _ => {}
            }
        }
        if binary {
            let key = base64::engine::general_purpose::STANDARD
                .decode(self.token(1))
                .map_err(|_| reject(bad_key))?;
            parsed.binary_key = Some(key);
        }
        // memcached checks the size last, once the line is known good; `q` does not hide it.
        if parsed.data.is_some_and(|len| self.too_large(len)) {
            return Err(reject(TOO_LARGE));
        }
        parsed.keys = self.tokens.get(1).copied().into_iter().collect();
        Ok(())
    }
}

fn client(reply: &'static str, silent: bool) -> Error {
    Error::Client { reply, silent }
}

/// Strict unsigned decimal.
pub(crate) fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        value.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn parse_u32(digits: &[u8]) -> Option<u32> {
    u32::try_from(parse_u64(digits)?).ok()
}

/// Strict signed decimal (`-` allowed), as memcached's 32-bit `safe_strtol` accepts.
fn parse_i32(digits: &[u8]) -> Option<i32> {
    match digits.split_first() {
        Some((b'-', rest)) => i32::try_from(-i64::try_from(parse_u64(rest)?).ok()?).ok(),
        _ => i32::try_from(parse_u64(digits)?).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_one(input: &[u8]) -> Result<Option<Request>, Error> {
        RequestDecoder::default().decode(&mut BytesMut::from(input))
    }

    fn request(input: &[u8]) -> Request {
        let mut buf = BytesMut::from(input);
        let request = RequestDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty(), "{input:?} left {buf:?}");
        request
    }

    fn keys(request: &Request) -> Vec<&[u8]> {
        request.keys().collect()
    }

    fn client_error(reply: &'static str) -> Error {
        Error::Client {
            reply,
            silent: false,
        }
    }

    /// Input, command, routing keys, reply policy, forwarded frame.
    type Case<'a> = (&'a [u8], Command, &'a [&'a [u8]], ReplyPolicy, &'a [u8]);

    #[test]
    fn decodes_every_command_form() {
        use Command::*;
        use ReplyPolicy::*;
        let cases: &[Case] = &[
            (b"get a\r\n", Get, &[b"a"], Always, b"get a\r\n"),
            (
                b"get a b a\r\n",
                Get,
                &[b"a", b"b", b"a"],
                Always,
                b"get a b a\r\n",
            ),
            (
                b"gets  a  b \n",
                Gets,
                &[b"a", b"b"],
                Always,
                b"gets  a  b \n",
            ),
            (
                b"gat 10 a b\r\n",
                Gat,
                &[b"a", b"b"],
                Always,
                b"gat 10 a b\r\n",
            ),
            (b"gats -1 a\r\n", Gats, &[b"a"], Always, b"gats -1 a\r\n"),
            (
                b"set k 1 2 3\r\nabc\r\n",
                Set,
                &[b"k"],
                Always,
                b"set k 1 2 3\r\nabc\r\n",
            ),
            (
                b"add k 0 0 0\r\n\r\n",
                Add,
                &[b"k"],
                Always,
                b"add k 0 0 0\r\n\r\n",
            ),
            (
                b"replace k 0 0 2 noreply\r\n\r\n\r\n",
                Replace,
                &[b"k"],
                Never,
                b"replace k 0 0 2\r\n\r\n\r\n",
            ),
            (
                b"append k 0 0 1 other\r\nx\r\n",
                Append,
                &[b"k"],
                Always,
                b"append k 0 0 1 other\r\nx\r\n",
            ),
            (
                b"prepend k 0 0 1\nx\r\n",
                Prepend,
                &[b"k"],
                Always,
                b"prepend k 0 0 1\nx\r\n",
            ),
            (
                b"cas k 0 0 1 99 noreply\r\nx\r\n",
                Cas,
                &[b"k"],
                Never,
                b"cas k 0 0 1 99\r\nx\r\n",
            ),
            (b"incr k 5\r\n", Incr, &[b"k"], Always, b"incr k 5\r\n"),
            (
                b"decr k 5 noreply\r\n",
                Decr,
                &[b"k"],
                Never,
                b"decr k 5\r\n",
            ),
            (b"delete k\r\n", Delete, &[b"k"], Always, b"delete k\r\n"),
            (
                b"delete k 0\r\n",
                Delete,
                &[b"k"],
                Always,
                b"delete k 0\r\n",
            ),
            (
                b"delete k noreply\r\n",
                Delete,
                &[b"k"],
                Never,
                b"delete k\r\n",
            ),
            (
                b"delete k 0  noreply\r\n",
                Delete,
                &[b"k"],
                Never,
                b"delete k 0\r\n",
            ),
            (
                b"touch k 10 noreply\r\n",
                Touch,
                &[b"k"],
                Never,
                b"touch k 10\r\n",
            ),
            (b"version\r\n", Version, &[], Always, b"version\r\n"),
            (b"quit\r\n", Quit, &[], Always, b"quit\r\n"),
            (b"mn\r\n", MetaNoop, &[], Always, b"mn\r\n"),
            (b"mg k v t\r\n", MetaGet, &[b"k"], Always, b"mg k v t\r\n"),
            (
                b"mg k q v\r\n",
                MetaGet,
                &[b"k"],
                Quiet(Command::MetaGet.quiet_codes()),
                b"mg k v\r\n",
            ),
            (
                b"mg YWI= b v q\r\n",
                MetaGet,
                &[b"ab"],
                Quiet(Command::MetaGet.quiet_codes()),
                b"mg YWI= b v\r\n",
            ),
            (
                b"ms k 2 T10 q\r\nhi\r\n",
                MetaSet,
                &[b"k"],
                Quiet(Command::MetaSet.quiet_codes()),
                b"ms k 2 T10\r\nhi\r\n",
            ),
            (
                b"md k q\r\n",
                MetaDelete,
                &[b"k"],
                Quiet(Command::MetaDelete.quiet_codes()),
                b"md k\r\n",
            ),
            (
                b"ma k D5 MD\r\n",
                MetaArithmetic,
                &[b"k"],
                Always,
                b"ma k D5 MD\r\n",
            ),
            (b"me k\r\n", MetaDebug, &[b"k"], Always, b"me k\r\n"),
            (
                b"me YQ== b\r\n",
                MetaDebug,
                &[b"a"],
                Always,
                b"me YQ== b\r\n",
            ),
        ];
        for &(input, command, expected_keys, policy, frame) in cases {
            let request = request(input);
            assert_eq!(request.command(), command, "{input:?}");
            assert_eq!(keys(&request), expected_keys, "{input:?}");
            assert_eq!(request.reply_policy(), policy, "{input:?}");
            assert_eq!(request.frame().as_ref(), frame, "{input:?}");
            assert_eq!(request.expect(), command.expect());
        }
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        let frames: &[&[u8]] = &[
            b"get a b\r\n",
            b"set k 0 0 5 noreply\r\nab\r\nc\r\n",
            b"cas k 0 0 1 7\r\nx\r\n",
            b"ms k 3 q\r\nabc\r\n",
            b"mg k v\r\n",
        ];
        for frame in frames {
            for cut in 0..frame.len() {
                assert_eq!(decode_one(&frame[..cut]), Ok(None), "{frame:?} at {cut}");
            }
            assert!(decode_one(frame).unwrap().is_some());
        }
    }

    #[test]
    fn errors_use_memcached_wording() {
        let long_key = format!("get {}\r\n", "k".repeat(251));
        let cases: &[(&[u8], Error)] = &[
            (b"bogus\r\n", Error::Unknown),
            (b"GET a\r\n", Error::Unknown),
            (b"\r\n", Error::Unknown),
            (b"get\r\n", Error::Unknown),
            (b"incr k\r\n", Error::Unknown),
            (b"touch k\r\n", Error::Unknown),
            (b"mg\r\n", Error::Unknown),
            (long_key.as_bytes(), client_error(BAD_FORMAT)),
            (b"get a\x01b\r\n", client_error(BAD_FORMAT)),
            (b"gat x k\r\n", client_error(BAD_EXPTIME)),
            (b"touch k x\r\n", client_error(BAD_EXPTIME)),
            (b"incr k -1\r\n", client_error(BAD_DELTA)),
            (b"delete k 5\r\n", client_error(BAD_DELETE)),
            (b"me\r\n", client_error(BAD_FORMAT)),
            (b"mg k 1\r\n", client_error("CLIENT_ERROR invalid flag")),
            (b"mg k q q\r\n", client_error("CLIENT_ERROR duplicate flag")),
            (
                b"mg !!! b\r\n",
                client_error("CLIENT_ERROR error decoding key"),
            ),
            (
                b"md !!! b\r\n",
                client_error("CLIENT_ERROR invalid or duplicate flag"),
            ),
            (
                b"mg k a b c d e f g h i j k l m n o p q r\r\n",
                client_error("CLIENT_ERROR options flags are too long"),
            ),
            (b"set k 0 0 x\r\n", Error::Fatal("bad command line format")),
            (b"set k 0 0 -1\r\n", Error::Fatal("bad command line format")),
            (b"set k 0 0\r\n", Error::Fatal("bad command line format")),
            (
                b"set k 0 0 1 2 3\r\n",
                Error::Fatal("bad command line format"),
            ),
            (b"ms k\r\n", Error::Fatal("bad command line format")),
            (
                b"\x80\x01\x00\x00",
                Error::Fatal("binary protocol is not supported"),
            ),
        ];
        for (input, error) in cases {
            assert_eq!(decode_one(input).as_ref(), Err(error), "{input:?}");
        }
        assert_eq!(
            Error::Client {
                reply: BAD_DELETE,
                silent: false
            }
            .reply()
            .unwrap()
            .as_ref(),
            b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
        );
        assert_eq!(Error::Unknown.reply().unwrap().as_ref(), b"ERROR\r\n");
        assert_eq!(
            Error::Fatal("line too long").reply().unwrap().as_ref(),
            b"CLIENT_ERROR line too long\r\n"
        );
    }

    #[test]
    fn rejected_storage_skips_its_data_block() {
        let cases: &[(&[u8], Error)] = &[
            (b"set k x 0 3\r\nabc\r\n", client_error(BAD_FORMAT)),
            (
                b"set k 0 0 3 noreply\r\nabcXY",
                Error::Client {
                    reply: BAD_CHUNK,
                    silent: true,
                },
            ),
            (b"set k 0 0 3\r\nab\r\n\n", client_error(BAD_CHUNK)),
            (b"cas k 0 0 3 x\r\nabc\r\n", client_error(BAD_FORMAT)),
            (b"set k 0 0 2000000\r\nabc\r\n", client_error(TOO_LARGE)),
            (
                b"set k 0 0 2000000 noreply\r\nabc\r\n",
                Error::Client {
                    reply: TOO_LARGE,
                    silent: true,
                },
            ),
            (
                b"ms k 3 T1 T1\r\nabc\r\n",
                client_error("CLIENT_ERROR duplicate flag"),
            ),
            (
                b"ms k 3 q q\r\nabc\r\n",
                client_error("CLIENT_ERROR duplicate flag"),
            ),
            (
                b"ms !!! 3 b q\r\nabc\r\n",
                client_error("CLIENT_ERROR error decoding key"),
            ),
            (
                b"ms k 3 a b c d e f g h i j k l m n o p q\r\nabc\r\n",
                client_error("CLIENT_ERROR options flags too long"),
            ),
        ];
        for (input, error) in cases {
            let mut decoder = RequestDecoder::default();
            let mut buf = BytesMut::from(*input);
            assert_eq!(decoder.decode(&mut buf).as_ref(), Err(error), "{input:?}");
            assert!(buf.is_empty(), "{input:?} left {buf:?}");
            buf.extend_from_slice(b"get after\r\n");
            if let Ok(Some(next)) = decoder.decode(&mut buf) {
                assert_eq!(keys(&next), vec![b"after"]);
            } else {
                // The 2 MB block is still being skipped.
                assert!(input.len() < 2_000_000);
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn too_large_block_is_skipped_as_it_arrives() {
        let limits = Limits {
            max_item_bytes: 4,
            ..Limits::default()
        };
        let mut decoder = RequestDecoder::new(limits);
        let mut buf = BytesMut::from(&b"set k 0 0 10\r\n0123"[..]);
        assert_eq!(decoder.decode(&mut buf), Err(client_error(TOO_LARGE)));
        assert!(buf.is_empty());
        buf.extend_from_slice(b"456789");
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"\r\nget a\r\n");
        assert_eq!(
            keys(&decoder.decode(&mut buf).unwrap().unwrap()),
            vec![b"a"]
        );
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_key_bytes: 3,
            max_item_bytes: 8,
            max_keys: 2,
            max_line_bytes: 16,
            ..Limits::default()
        };
        let decode = |input: &[u8]| RequestDecoder::new(limits).decode(&mut BytesMut::from(input));
        assert!(decode(b"get abc\r\n").unwrap().is_some());
        assert_eq!(decode(b"get abcd\r\n"), Err(client_error(BAD_FORMAT)));
        assert_eq!(
            decode(b"get a b c\r\n"),
            Err(client_error("CLIENT_ERROR too many keys"))
        );
        assert_eq!(
            decode(b"get a b c d e f g h"),
            Err(Error::Fatal("line too long"))
        );
        assert_eq!(
            decode(b"get a b c d e f g h\r\n"),
            Err(Error::Fatal("line too long"))
        );
        assert!(decode(b"get a b c d e f").unwrap().is_none());
        assert_eq!(decode(b"set k 0 0 9\r\n"), Err(client_error(TOO_LARGE)));
    }

    #[test]
    fn request_limit_counts_the_line_and_the_data_block() {
        let limits = Limits {
            max_request_bytes: 32,
            ..Limits::default()
        };
        let decode = |input: &[u8]| {
            let mut decoder = RequestDecoder::new(limits);
            let mut buf = BytesMut::from(input);
            let first = decoder.decode(&mut buf);
            (
                first,
                decoder
                    .decode(&mut buf)
                    .map(|r| r.map(|r| r.keys().count())),
            )
        };
        // 14 + 16 + 2 = 32 bytes: fits exactly
        let (fits, _) = decode(b"set k 0 0 16\r\n0123456789012345\r\n");
        assert!(fits.unwrap().is_some());
        // one byte more: refused as memcached refuses an item over its size, data skipped
        let (over, next) = decode(b"set k 0 0 17\r\n01234567890123456\r\nget a\r\n");
        assert_eq!(over, Err(client_error(TOO_LARGE)));
        assert_eq!(next, Ok(Some(1)));
        let (silent, next) = decode(b"set k 0 0 17 noreply\r\n01234567890123456\r\nget a\r\n");
        assert_eq!(
            silent,
            Err(Error::Client {
                reply: TOO_LARGE,
                silent: true
            })
        );
        assert_eq!(next, Ok(Some(1)));
        // meta set too, and its `q` flag does not hide the error (as memcached)
        let (meta, next) = decode(b"ms k 30 q\r\n012345678901234567890123456789\r\nget a\r\n");
        assert_eq!(meta, Err(client_error(TOO_LARGE)));
        assert_eq!(next, Ok(Some(1)));
        // a line longer than the whole limit cannot be a request: the stream is lost
        let (line, _) = decode(b"get aaaaaaaaaa bbbbbbbbbb cccccccccc\r\n");
        assert_eq!(line, Err(Error::Fatal("line too long")));
    }

    /// Found by the `memcache` fuzz target (seed `line_one_over_the_request_limit`): a line
    /// one byte over the limit was accepted, as the limit was checked against the index of
    /// its `\n` instead of its length.
    #[test]
    fn line_limit_counts_the_whole_line() {
        let limits = Limits {
            max_request_bytes: 10,
            ..Limits::default()
        };
        let decode = |input: &[u8]| RequestDecoder::new(limits).decode(&mut BytesMut::from(input));
        let exact = decode(b"get abcd\r\n").unwrap().unwrap();
        assert_eq!(exact.frame().len(), 10);
        assert_eq!(decode(b"get abcde\r\n"), Err(Error::Fatal("line too long")));
        assert_eq!(decode(b"get abcdef"), Err(Error::Fatal("line too long")));
        assert_eq!(decode(b"get abcde"), Ok(None));
        let mut meta = b"mg YWI= b ".to_vec();
        meta.resize(199, b'\xff');
        meta.extend_from_slice(b"\r\n");
        let limits = Limits {
            max_request_bytes: 200,
            ..Limits::default()
        };
        assert_eq!(
            RequestDecoder::new(limits).decode(&mut BytesMut::from(&meta[..])),
            Err(Error::Fatal("line too long"))
        );
    }

    #[test]
    fn numbers_are_strict() {
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_i32(b"-2147483648"), Some(i32::MIN));
        assert_eq!(parse_i32(b"2147483648"), None);
        assert_eq!(parse_i32(b"-"), None);
        assert_eq!(parse_i32(b"1x"), None);
    }

    /// Pieces of valid and invalid requests, for random request soups.
    const WORDS: &[&[u8]] = &[
        b"get", b"gat", b"set", b"cas", b"incr", b"delete", b"touch", b"mg", b"ms", b"md", b"ma",
        b"me", b"mn", b"noreply", b"q", b"b", b"v", b"0", b"1", b"2", b"k", b"YQ==", b" ", b"  ",
        b"\r\n", b"\n", b"\r", b"\x80", b"\t",
    ];

    proptest! {
        #[test]
        fn any_chunking_decodes_the_same(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8),
            step in 1usize..23,
        ) {
            let mut wire = Vec::new();
            for (i, value) in values.iter().enumerate() {
                match i % 4 {
                    0 => wire.extend_from_slice(format!("set k{i} 0 0 {} noreply\r\n", value.len()).as_bytes()),
                    1 => wire.extend_from_slice(format!("ms k{i} {} q T9\r\n", value.len()).as_bytes()),
                    2 => wire.extend_from_slice(format!("get k{i} x{i}\r\nset k{i} 0 0 {}\r\n", value.len()).as_bytes()),
                    // A bad data chunk: memcached resynchronises after len + 2 bytes.
                    _ => wire.extend_from_slice(format!("bogus\r\nset k{i} 0 0 {}\r\n{}", value.len() + 1, "\r\n").as_bytes()),
                }
                wire.extend_from_slice(value);
                wire.extend_from_slice(b"\r\n");
            }
            let run = |step: usize| {
                let mut decoder = RequestDecoder::default();
                let mut buf = BytesMut::new();
                let mut out = Vec::new();
                for chunk in wire.chunks(step) {
                    buf.extend_from_slice(chunk);
                    loop {
                        match decoder.decode(&mut buf) {
                            Ok(Some(request)) => out.push(Ok(request)),
                            Ok(None) => break,
                            Err(error) => out.push(Err(error)),
                        }
                    }
                }
                (out, buf.len())
            };
            let whole = run(wire.len());
            prop_assert_eq!(&run(step), &whole);
            prop_assert_eq!(whole.1, 0);
        }

        #[test]
        fn forwarded_frames_decode_to_themselves(
            words in proptest::collection::vec(proptest::sample::select(WORDS), 0..40),
            split in 0usize..200,
        ) {
            let input: Vec<u8> = words.concat();
            let limits = Limits { max_key_bytes: 4, max_item_bytes: 8, max_keys: 3, max_line_bytes: 48, max_request_bytes: 40 };
            let mut decoder = RequestDecoder::new(limits);
            let mut buf = BytesMut::new();
            let mut consumed = 0;
            'chunks: for chunk in [&input[..split.min(input.len())], &input[split.min(input.len())..]] {
                buf.extend_from_slice(chunk);
                loop {
                    let before = buf.len();
                    let result = decoder.decode(&mut buf);
                    consumed += before - buf.len();
                    match result {
                        Ok(Some(request)) => {
                            prop_assert!(request.key_count() <= limits.max_keys);
                            prop_assert!(request.keys().all(|key| key.len() <= limits.max_key_bytes));
                            let mut again = BytesMut::from(request.frame().as_ref());
                            let decoded = RequestDecoder::new(limits).decode(&mut again).unwrap().unwrap();
                            prop_assert!(again.is_empty());
                            prop_assert_eq!(decoded.frame(), request.frame());
                            prop_assert!(decoded.keys().eq(request.keys()));
                            prop_assert_eq!(decoded.reply_policy(), ReplyPolicy::Always);
                        }
                        Ok(None) => break,
                        Err(error) if error.is_fatal() => break 'chunks,
                        Err(_) => prop_assert!(before > buf.len()),
                    }
                }
            }
            prop_assert!(consumed <= input.len());
        }

        #[test]
        fn garbage_never_panics_nor_overreads(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut decoder = RequestDecoder::new(Limits { max_line_bytes: 64, ..Limits::default() });
            let mut buf = BytesMut::from(&input[..]);
            let mut consumed = 0;
            loop {
                let before = buf.len();
                match decoder.decode(&mut buf) {
                    Ok(Some(request)) => prop_assert!(request.frame().len() <= before),
                    Ok(None) | Err(Error::Fatal(_)) => break,
                    Err(_) => {}
                }
                consumed += before - buf.len();
                prop_assert!(before - buf.len() > 0);
            }
            prop_assert!(consumed <= input.len());
        }
    }
}
