//! Request framing: RESP2 multibulk and inline commands into [`Request`]s, with size limits.
//!
//! The decoder resumes where an incomplete frame stopped, so a frame split over many reads costs
//! one pass, and a request is kept as the exact bytes the client sent (inline commands are
//! re-encoded once as RESP), so it is forwarded without re-encoding.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::Error;

/// Longest inline command line or length line we wait for, as Redis (`PROTO_INLINE_MAX_SIZE`).
const MAX_LINE: usize = 64 * 1024;

/// Size limits enforced while decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole request frame in bytes.
    pub max_request_bytes: usize,
    /// Most arguments in one request.
    pub max_multibulk_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 64 * 1024 * 1024,
            max_multibulk_length: 1024 * 1024,
        }
    }
}

/// One complete request: its RESP frame and where each argument sits in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    frame: Bytes,
    args: Spans,
}

/// Where each argument sits in a frame. Most requests have at most five arguments (`GET k`,
/// `SET k v EX 60`, and the parts a 10-key `MGET` splits into over four shards), kept inline
/// so that decoding or building them allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Spans {
    Inline {
        len: u8,
        spans: [(u32, u32); INLINE_ARGS],
    },
    Heap(Vec<(u32, u32)>),
}

const INLINE_ARGS: usize = 5;

impl Spans {
    fn with_capacity(argc: usize) -> Spans {
        if argc <= INLINE_ARGS {
            Spans::Inline {
                len: 0,
                spans: [(0, 0); INLINE_ARGS],
            }
        } else {
            Spans::Heap(Vec::with_capacity(argc.min(64)))
        }
    }

    fn len(&self) -> usize {
        match self {
            Spans::Inline { len, .. } => usize::from(*len),
            Spans::Heap(spans) => spans.len(),
        }
    }

    fn get(&self, i: usize) -> Option<(u32, u32)> {
        match self {
            Spans::Inline { len, spans } if i < usize::from(*len) => spans.get(i).copied(),
            Spans::Inline { .. } => None,
            Spans::Heap(spans) => spans.get(i).copied(),
        }
    }

    #[inline]
    fn push(&mut self, span: (u32, u32)) {
        match self {
            Spans::Inline { len, spans } => match spans.get_mut(usize::from(*len)) {
                Some(slot) => {
                    *slot = span;
                    *len += 1;
                }
                None => self.spill(span),
            },
            Spans::Heap(spans) => spans.push(span),
        }
    }

    /// Moves full inline spans to the heap, adding `span`.
    #[cold]
    fn spill(&mut self, span: (u32, u32)) {
        if let Spans::Inline { spans, .. } = self {
            let mut heap = Vec::with_capacity(2 * INLINE_ARGS);
            heap.extend_from_slice(spans);
            heap.push(span);
            *self = Spans::Heap(heap);
        }
    }
}

impl Request {
    /// Encodes a request from its arguments (the command name first) into a frame of exactly
    /// the right size, allocated once.
    pub fn from_arg_slices(args: &[&[u8]]) -> Request {
        Request::from_arg_iter(args.iter().copied())
    }

    /// [`Request::from_arg_slices`] for arguments walked twice (once to size the frame), with
    /// no list of them gathered first.
    pub fn from_arg_iter<'a>(args: impl Iterator<Item = &'a [u8]> + Clone) -> Request {
        let (argc, size) = args
            .clone()
            .fold((0, 0), |(argc, size), arg| (argc + 1, size + bulk_len(arg)));
        // A `Vec` filled to its exact capacity becomes `Bytes` without another allocation.
        let mut frame = Vec::with_capacity(array_header_len(argc) + size);
        put_array_header(&mut frame, argc);
        let mut spans = Spans::with_capacity(argc);
        for arg in args {
            put_bulk(&mut frame, arg);
            let end = frame.len() - 2;
            // Within the frame, at most `MAX_FRAME` bytes: the offsets fit.
            #[allow(clippy::cast_possible_truncation)]
            spans.push(((end - arg.len()) as u32, end as u32));
        }
        Request {
            frame: Bytes::from(frame),
            args: spans,
        }
    }

    /// Encodes a request from its arguments (the command name first).
    pub fn from_args<'a, I>(args: I) -> Request
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let args: Vec<&[u8]> = args.into_iter().collect();
        Request::from_arg_slices(&args)
    }

    /// The RESP bytes to forward to a backend, taken: no clone (a clone of a frame built by
    /// [`Request::from_args`] would allocate to share it).
    pub fn into_frame(self) -> Bytes {
        self.frame
    }

    /// The RESP bytes to forward to a backend.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// Number of arguments, the command name included.
    pub fn argc(&self) -> usize {
        self.args.len()
    }

    /// Argument `i` (0 is the command name).
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        let (start, end) = self.args.get(i)?;
        self.frame.get(start as usize..end as usize)
    }

    /// The command name (empty for an argument-less request, which the decoder never yields).
    pub fn name(&self) -> &[u8] {
        self.arg(0).unwrap_or_default()
    }
}

impl super::command::Args for Request {
    fn argc(&self) -> usize {
        self.argc()
    }

    fn arg(&self, i: usize) -> Option<&[u8]> {
        self.arg(i)
    }
}

/// A multibulk frame whose header has been read but not all its arguments.
#[derive(Debug)]
struct Partial {
    argc: usize,
    pos: usize,
    args: Spans,
}

/// Incremental request decoder for one client stream.
#[derive(Debug, Default)]
pub struct RequestDecoder {
    limits: Limits,
    partial: Option<Partial>,
}

/// The largest frame any limit allows: argument spans are 32-bit offsets into the frame.
pub const MAX_FRAME: usize = u32::MAX as usize;

impl RequestDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestDecoder {
            limits: Limits {
                max_request_bytes: limits.max_request_bytes.min(MAX_FRAME),
                ..limits
            },
            partial: None,
        }
    }

    /// Takes the next complete request off the front of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed. Empty multibulks (`*0`, `*-1`) and empty inline
    /// lines are skipped without a reply, as Redis does.
    ///
    /// # Errors
    /// A malformed or oversized frame; the stream cannot be resynchronised after it.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, Error> {
        loop {
            let mut partial = match self.partial.take() {
                Some(partial) => partial,
                None => match buf.first() {
                    None => return Ok(None),
                    Some(b'*') => match self.header(buf)? {
                        Header::Incomplete => return Ok(None),
                        Header::Empty(len) => {
                            let _ = buf.split_to(len);
                            continue;
                        }
                        Header::Frame(partial) => partial,
                    },
                    Some(_) => match self.inline(buf)? {
                        Inline::Incomplete => return Ok(None),
                        Inline::Empty => continue,
                        Inline::Request(request) => return Ok(Some(request)),
                    },
                },
            };
            let complete = self.bulks(buf, &mut partial)?;
            if !complete {
                self.partial = Some(partial);
                return Ok(None);
            }
            let frame = buf.split_to(partial.pos).freeze();
            return Ok(Some(Request {
                frame,
                args: partial.args,
            }));
        }
    }

    /// Reads `*<argc>\r\n`.
    fn header(&self, buf: &[u8]) -> Result<Header, Error> {
        let Some((count, next)) = length_line(buf, 0)? else {
            return Ok(Header::Incomplete);
        };
        let count = count.ok_or(Error::Protocol("invalid multibulk length"))?;
        if count <= 0 {
            return Ok(Header::Empty(next));
        }
        let argc = usize::try_from(count).unwrap_or(usize::MAX);
        if argc > self.limits.max_multibulk_length {
            return Err(Error::Protocol("invalid multibulk length"));
        }
        Ok(Header::Frame(Partial {
            argc,
            pos: next,
            args: Spans::with_capacity(argc),
        }))
    }

    /// Reads `$<len>\r\n<data>\r\n` arguments until all are in or the buffer runs out.
    fn bulks(&self, buf: &[u8], partial: &mut Partial) -> Result<bool, Error> {
        while partial.args.len() < partial.argc {
            let Some(&kind) = buf.get(partial.pos) else {
                return Ok(false);
            };
            if kind != b'$' {
                return Err(Error::Protocol("expected '$'"));
            }
            let (len, start) = match short_length(buf, partial.pos) {
                Some(header) => header,
                None => {
                    let Some((len, start)) = length_line(buf, partial.pos)? else {
                        return Ok(false);
                    };
                    let len = len
                        .and_then(|len| usize::try_from(len).ok())
                        .ok_or(Error::Protocol("invalid bulk length"))?;
                    (len, start)
                }
            };
            if len > self.limits.max_request_bytes {
                return Err(Error::Protocol("invalid bulk length"));
            }
            let end = start + len;
            if end + 2 > self.limits.max_request_bytes {
                return Err(Error::Protocol("request too large"));
            }
            match buf.get(end..end + 2) {
                None => return Ok(false),
                Some(b"\r\n") => {}
                Some(_) => return Err(Error::Protocol("bulk data not terminated by CRLF")),
            }
            // `end` is within `max_request_bytes`, at most `MAX_FRAME`: the offsets fit.
            #[allow(clippy::cast_possible_truncation)]
            partial.args.push((start as u32, end as u32));
            partial.pos = end + 2;
        }
        Ok(true)
    }

    /// Reads one inline command line (`GET key\r\n`), splitting it as redis-cli's quoting rules.
    fn inline(&self, buf: &mut BytesMut) -> Result<Inline, Error> {
        let Some(newline) = memchr::memchr(b'\n', buf) else {
            return if buf.len() > MAX_LINE {
                Err(Error::Protocol("too big inline request"))
            } else {
                Ok(Inline::Incomplete)
            };
        };
        let line = buf.split_to(newline + 1);
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let args = split_inline(line).ok_or(Error::Protocol("unbalanced quotes in request"))?;
        if args.is_empty() {
            return Ok(Inline::Empty);
        }
        if args.len() > self.limits.max_multibulk_length {
            return Err(Error::Protocol("invalid multibulk length"));
        }
        Ok(Inline::Request(Request::from_args(
            args.iter().map(Vec::as_slice),
        )))
    }
}

enum Header {
    Incomplete,
    Empty(usize),
    Frame(Partial),
}

enum Inline {
    Incomplete,
    Empty,
    Request(Request),
}

/// Parses `<type byte><decimal>\r\n` at `at`: `None` if incomplete, `Some((None, _))` if the
/// number is malformed, else the number and the offset after the line. Runs once per argument,
/// so it parses while it scans instead of searching for the line end first.
///
/// The number follows Redis's own grammar (`string2ll`): an optional `-`, then `0` alone or
/// digits without a leading zero; no `+`, no spaces, no `-0`. A frame is forwarded as the bytes
/// the client sent, so any spelling Redis refuses (`$04`) that got through here would make Redis
/// answer a protocol error and close the backend connection that other clients share.
pub(crate) fn length_line(buf: &[u8], at: usize) -> Result<Option<(Option<i64>, usize)>, Error> {
    let mut i = at + 1;
    let negative = buf.get(i) == Some(&b'-');
    if negative {
        i += 1;
    }
    let digits_start = i;
    let mut value: i64 = 0;
    loop {
        match buf.get(i) {
            None => return Ok(None),
            Some(&d) if d.is_ascii_digit() => {
                // A digit after a leading zero, or more than 18 digits (no overflow).
                if (i > digits_start && value == 0) || i - digits_start >= 18 {
                    return Ok(Some((None, i)));
                }
                value = value * 10 + i64::from(d - b'0');
                i += 1;
            }
            Some(b'\r') => break,
            Some(_) => return Ok(Some((None, i))),
        }
    }
    match buf.get(i + 1) {
        None => Ok(None),
        Some(b'\n') if i > digits_start && !(negative && value == 0) => {
            Ok(Some((Some(if negative { -value } else { value }), i + 2)))
        }
        Some(b'\n') => Ok(Some((None, i + 2))),
        Some(_) => Err(Error::Protocol("length line not terminated by CRLF")),
    }
}

/// Strict decimal parse: optional `-`, 1 to 18 digits.
pub(crate) fn parse_i64(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(d - b'0');
    }
    Some(if negative { -value } else { value })
}

/// Appends `n` in decimal.
// Each digit is `n % 10` (< 10), and a u64 has at most 20 digits: no truncation, no overrun.
#[allow(clippy::cast_possible_truncation, clippy::indexing_slicing)]
#[inline(always)]
pub(crate) fn put_decimal(buf: &mut impl BufMut, mut n: u64) {
    // Lengths and counts are mostly one or two digits.
    if n < 10 {
        buf.put_u8(b'0' + n as u8);
        return;
    }
    if n < 100 {
        buf.put_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]);
        return;
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&digits[at..]);
}

/// The common case of [`length_line`], in a tight loop: a complete `<type byte><1 to 9
/// digits>\r\n` at `at`, in the same grammar, gives `(value, index after \n)`; anything else
/// (a sign, a leading zero, more digits, no digits, incomplete, malformed) gives `None`, for
/// `length_line` to judge. It must never accept what `length_line` refuses.
#[inline(always)]
pub(crate) fn short_length(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    // Two digits (a 16-byte key or value) or one, matched whole; longer ones in the loop.
    match buf.get(at..).and_then(<[u8]>::first_chunk::<5>) {
        Some(&[_, t @ b'1'..=b'9', u @ b'0'..=b'9', b'\r', b'\n']) => {
            Some((usize::from(t - b'0') * 10 + usize::from(u - b'0'), at + 5))
        }
        Some(&[_, d @ b'0'..=b'9', b'\r', b'\n', _]) => Some((usize::from(d - b'0'), at + 4)),
        _ => short_length_loop(buf, at),
    }
}

/// [`short_length`] for any number of digits.
fn short_length_loop(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut i = at + 1;
    let mut value = 0usize;
    loop {
        let d = *buf.get(i)?;
        if d == b'\r' {
            break;
        }
        let digit = d.wrapping_sub(b'0');
        // `value == 0` past the first digit: a leading zero, which Redis refuses.
        if digit > 9 || i - at > 9 || (value == 0 && i > at + 1) {
            return None;
        }
        value = value * 10 + usize::from(digit);
        i += 1;
    }
    if i == at + 1 || buf.get(i + 1) != Some(&b'\n') {
        return None;
    }
    Some((value, i + 2))
}

/// The bytes [`put_array_header`] writes for `n` elements.
#[inline]
pub(crate) fn array_header_len(n: usize) -> usize {
    3 + decimal_len(n as u64)
}

/// Appends an array header `*<n>\r\n` (a request's, or a multi-element reply's).
#[inline(always)]
pub fn put_array_header(buf: &mut impl BufMut, n: usize) {
    buf.put_u8(b'*');
    put_decimal(buf, n as u64);
    buf.put_slice(b"\r\n");
}

/// The bytes [`put_bulk`] writes for `data`.
#[inline]
pub(crate) fn bulk_len(data: &[u8]) -> usize {
    5 + decimal_len(data.len() as u64) + data.len()
}

/// Appends a bulk string (a request's argument, or a reply).
#[inline(always)]
pub fn put_bulk(buf: &mut impl BufMut, data: &[u8]) {
    buf.put_u8(b'$');
    put_decimal(buf, data.len() as u64);
    buf.put_slice(b"\r\n");
    buf.put_slice(data);
    buf.put_slice(b"\r\n");
}

/// How many digits `put_decimal` writes for `n`.
#[inline]
pub(crate) fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// Splits an inline command line like Redis's `sdssplitargs`: spaces separate arguments,
/// `"..."` understands `\n \r \t \b \a \\ \" \xHH`, `'...'` understands `\'`. `None` on
/// unbalanced quotes or a closing quote not followed by a space.
fn split_inline(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while line.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let mut arg = Vec::new();
        match line.get(i) {
            Some(b'"') => i = quoted_double(line, i + 1, &mut arg)?,
            Some(b'\'') => i = quoted_single(line, i + 1, &mut arg)?,
            _ => {
                while let Some(&c) = line.get(i).filter(|c| !c.is_ascii_whitespace()) {
                    arg.push(c);
                    i += 1;
                }
            }
        }
        args.push(arg);
    }
}

fn quoted_double(line: &[u8], mut i: usize, arg: &mut Vec<u8>) -> Option<usize> {
    loop {
        match *line.get(i)? {
            b'\\' => {
                let escaped = *line.get(i + 1)?;
                if escaped == b'x' {
                    if let Some(byte) = line.get(i + 2..i + 4).and_then(hex_byte) {
                        arg.push(byte);
                        i += 4;
                        continue;
                    }
                }
                arg.push(match escaped {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => other,
                });
                i += 2;
            }
            b'"' => return after_quote(line, i + 1),
            c => {
                arg.push(c);
                i += 1;
            }
        }
    }
}

fn quoted_single(line: &[u8], mut i: usize, arg: &mut Vec<u8>) -> Option<usize> {
    loop {
        match *line.get(i)? {
            b'\\' if line.get(i + 1) == Some(&b'\'') => {
                arg.push(b'\'');
                i += 2;
            }
            b'\'' => return after_quote(line, i + 1),
            c => {
                arg.push(c);
                i += 1;
            }
        }
    }
}

/// A closing quote must be followed by a space or the end of the line.
fn after_quote(line: &[u8], i: usize) -> Option<usize> {
    match line.get(i) {
        None => Some(i),
        Some(c) if c.is_ascii_whitespace() => Some(i),
        Some(_) => None,
    }
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    match pair {
        [hi, lo] => u8::try_from(digit(*hi)? * 16 + digit(*lo)?).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, Error> {
        let mut decoder = RequestDecoder::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(request) = decoder.decode(&mut buf)? {
            out.push(args_of(&request));
        }
        Ok(out)
    }

    fn args_of(request: &Request) -> Vec<Vec<u8>> {
        (0..request.argc())
            .map(|i| request.arg(i).unwrap().to_vec())
            .collect()
    }

    fn strs(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_decodes_and_keeps_frame_bytes() {
        let input = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
        let mut buf = BytesMut::from(&input[..]);
        let request = RequestDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(request.frame().as_ref(), input);
        assert_eq!(args_of(&request), strs(&["GET", "key"]));
        assert!(buf.is_empty());
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva\r\nl\r\n";
        for cut in 0..input.len() {
            let mut buf = BytesMut::from(&input[..cut]);
            assert_eq!(
                RequestDecoder::default().decode(&mut buf),
                Ok(None),
                "{cut}"
            );
        }
        assert_eq!(
            decode_all(input).unwrap(),
            vec![strs(&["SET", "k", "va\r\nl"])]
        );
    }

    #[test]
    fn inline_commands_split_like_redis() {
        assert_eq!(
            decode_all(b"set a \"b c\\x41\\n\" 'd\\'e'\r\nPING\n\r\n").unwrap(),
            vec![strs(&["set", "a", "b cA\n", "d'e"]), strs(&["PING"])]
        );
        let request = &decode_all(b"get k\r\n").unwrap()[0];
        assert_eq!(request, &strs(&["get", "k"]));
    }

    #[test]
    fn inline_request_is_reencoded_as_resp() {
        let mut buf = BytesMut::from(&b"get k\r\n"[..]);
        let request = RequestDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(request.frame().as_ref(), b"*2\r\n$3\r\nget\r\n$1\r\nk\r\n");
    }

    #[test]
    fn empty_multibulks_and_lines_are_skipped() {
        assert_eq!(
            decode_all(b"*0\r\n*-1\r\n\r\n*1\r\n$4\r\nPING\r\n").unwrap(),
            vec![strs(&["PING"])]
        );
    }

    #[test]
    fn malformed_frames_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"*x\r\n", "invalid multibulk length"),
            (b"*2000000000\r\n", "invalid multibulk length"),
            (b"*1\r\n+PING\r\n", "expected '$'"),
            (b"*2\r\n$-5\r\n", "invalid bulk length"),
            (b"*1\r\n$99999999999\r\n", "invalid bulk length"),
            (b"*1\r\n$abc\r\n", "invalid bulk length"),
            (b"*1\r\n$4\r\nPINGxx", "bulk data not terminated by CRLF"),
            (b"*1\r\n$4\rxPING\r\n", "length line not terminated by CRLF"),
            (b"set \"a\r\n", "unbalanced quotes in request"),
            (b"set \"a\"b\r\n", "unbalanced quotes in request"),
        ];
        for (input, reason) in cases {
            assert_eq!(decode_all(input), Err(Error::Protocol(reason)), "{input:?}");
        }
    }

    #[test]
    fn lengths_follow_redis_grammar() {
        // What Redis 7 answers each of these (it closes the connection after each).
        let refused: &[(&[u8], &str)] = &[
            (b"*2\r\n$3\r\nGET\r\n$04\r\nfz:a\r\n", "invalid bulk length"),
            (
                b"*02\r\n$3\r\nGET\r\n$4\r\nfz:a\r\n",
                "invalid multibulk length",
            ),
            (b"*2\r\n$3\r\nGET\r\n$+4\r\nfz:a\r\n", "invalid bulk length"),
            (b"*1\r\n$-0\r\n\r\n", "invalid bulk length"),
            (b"*-0\r\n*1\r\n$4\r\nPING\r\n", "invalid multibulk length"),
            (b"*1\r\n$00\r\n\r\n", "invalid bulk length"),
            (b"*1\r\n$0000000004\r\nPING\r\n", "invalid bulk length"),
            (b"*1\r\n$ 4\r\nPING\r\n", "invalid bulk length"),
            (b"*1\r\n$4 \r\nPING\r\n", "invalid bulk length"),
            (b"* 1\r\n$4\r\nPING\r\n", "invalid multibulk length"),
            (b"*1\r\n$\r\nPING\r\n", "invalid bulk length"),
            (b"*\r\n", "invalid multibulk length"),
            (b"*1\n$4\r\nPING\r\n", "invalid multibulk length"),
            (b"*1\r\n$4\nPING\r\n", "invalid bulk length"),
        ];
        for (input, reason) in refused {
            assert_eq!(
                decode_all(input),
                Err(Error::Protocol(reason)),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(
            decode_all(b"*-5\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n*1\r\n$10\r\n0123456789\r\n")
                .unwrap(),
            vec![strs(&["ECHO", ""]), strs(&["0123456789"])]
        );
    }

    /// Frames that must be refused, with the reason a fresh decoder gives.
    const BAD_FRAMES: &[&[u8]] = &[
        b"*2\r\n$3\r\nGET\r\n$04\r\nfz:a\r\n",
        b"*02\r\n$3\r\nGET\r\n$4\r\nfz:a\r\n",
        b"*2\r\n$3\r\nGET\r\n$+4\r\nfz:a\r\n",
        b"*2\r\n$3\r\nGET\r\n$-0\r\n\r\n",
        b"*-0\r\n",
        b"*2\r\n$3\r\nGET\r\n$00\r\n\r\n",
        b"*2\r\n$3\r\nGET\r\n$4 \r\nfz:a\r\n",
        b"*2\r\n$3\r\nGET\r\n$-5\r\n",
        b"*2\r\n$3\r\nGET\r\n$99999999999\r\n",
        b"*2000000000\r\n",
        b"*x\r\n",
        b"*2\r\n$3\r\nGET\r\n$4\r\nfz:axx",
        b"*2\r\n$3\r\nGET\r\n$4\rxfz:a\r\n",
        b"*2\r\n$3\r\nGET\r\n+fz:a\r\n",
        b"*2\r\n$3\r\nGET\r\n$4\nfz:a\r\n",
    ];

    /// Decoder states a stream can leave behind: nothing yet, after small and large frames,
    /// after a frame that arrived in pieces (its partial state resumed and cleared).
    fn warmed_up(value_size: usize, pieces: usize) -> (RequestDecoder, BytesMut) {
        let mut decoder = RequestDecoder::default();
        let mut buf = BytesMut::new();
        let value = vec![b'v'; value_size];
        let mut wire = Vec::new();
        for i in 0..3 {
            let key = format!("warm:{i}");
            wire.extend_from_slice(
                Request::from_args([&b"SET"[..], key.as_bytes(), &value]).frame(),
            );
        }
        let step = (wire.len() / pieces.max(1)).max(1);
        let mut decoded = 0;
        for chunk in wire.chunks(step) {
            buf.extend_from_slice(chunk);
            while let Some(request) = decoder.decode(&mut buf).unwrap() {
                assert_eq!(request.arg(2), Some(&value[..]));
                decoded += 1;
            }
        }
        assert_eq!(decoded, 3);
        assert!(buf.is_empty());
        (decoder, buf)
    }

    #[test]
    fn malformed_frame_split_anywhere_after_a_warm_up_is_refused_the_same() {
        for bad in BAD_FRAMES {
            let shown = String::from_utf8_lossy(bad);
            let expected = decode_all(bad);
            assert!(expected.is_err(), "{shown} is accepted by a fresh decoder");
            for (value_size, pieces) in [(0, 1), (16, 1), (1024, 7), (16 * 1024, 50)] {
                for cut in 0..=bad.len() {
                    let (mut decoder, mut buf) = warmed_up(value_size, pieces);
                    buf.extend_from_slice(&bad[..cut]);
                    let mut given = cut;
                    let outcome = match decoder.decode(&mut buf) {
                        Ok(None) => {
                            buf.extend_from_slice(&bad[cut..]);
                            given = bad.len();
                            decoder.decode(&mut buf)
                        }
                        other => other,
                    };
                    assert_eq!(
                        outcome.map(|_| ()),
                        expected.clone().map(|_| ()),
                        "{shown} cut at {cut} after {value_size}-byte values in {pieces} pieces"
                    );
                    // whatever was received stays unconsumed: nothing of it was accepted
                    assert_eq!(buf.as_ref(), &bad[..given]);
                }
            }
            // behind valid frames in the same read, too
            let mut wire = Request::from_args([&b"GET"[..], b"k"]).frame().to_vec();
            wire.extend_from_slice(bad);
            let mut decoder = RequestDecoder::default();
            let mut buf = BytesMut::from(&wire[..]);
            assert!(decoder.decode(&mut buf).unwrap().is_some());
            assert_eq!(decoder.decode(&mut buf).map(|_| ()), expected.map(|_| ()));
        }
    }

    /// Redis's `string2ll`, for the lengths a request may carry (at most 18 digits here).
    fn redis_number(text: &[u8]) -> Option<i64> {
        let (negative, digits) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, text),
        };
        let canonical = match digits {
            [b'0'] => !negative,
            [first, rest @ ..] => {
                (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit)
            }
            [] => false,
        };
        if !canonical || digits.len() > 18 {
            return None;
        }
        std::str::from_utf8(text).ok()?.parse().ok()
    }

    proptest! {
        #[test]
        fn length_lines_parse_as_redis_does_on_both_paths(
            text in prop_oneof!["-?[0-9]{0,20}", "-?0[0-9]{0,4}", "[-+0-9 x]{0,20}"]
        ) {
            let line = format!("${text}\r\n");
            let buf = line.as_bytes();
            let expected = redis_number(text.as_bytes());
            let slow = length_line(buf, 0).unwrap().and_then(|(n, _)| n);
            prop_assert_eq!(slow, expected);
            if let Some((value, next)) = short_length(buf, 0) {
                prop_assert_eq!(Some(value as i64), expected);
                prop_assert_eq!(next, buf.len());
            }
            // With the data behind it, as in a whole request: the fast patterns see 5 bytes.
            let followed = format!("{line}xy");
            if let Some((value, next)) = short_length(followed.as_bytes(), 0) {
                prop_assert_eq!(Some(value as i64), expected);
                prop_assert_eq!(next, buf.len());
            }
        }
    }

    #[test]
    fn oversized_inline_line_is_an_error_not_a_wait() {
        let line = vec![b'a'; 2 * 1024 * 1024];
        assert_eq!(
            decode_all(&line),
            Err(Error::Protocol("too big inline request"))
        );
    }

    #[test]
    fn request_size_limit_is_enforced_before_buffering() {
        let limits = Limits {
            max_request_bytes: 100,
            max_multibulk_length: 4,
        };
        let mut decoder = RequestDecoder::new(limits);
        let mut buf = BytesMut::from(&b"*1\r\n$200\r\n"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(Error::Protocol("invalid bulk length"))
        );
        let mut decoder = RequestDecoder::new(limits);
        let mut buf = BytesMut::from(&b"*5\r\n"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(Error::Protocol("invalid multibulk length"))
        );
    }

    #[test]
    fn from_args_round_trips() {
        let request = Request::from_args([&b"MGET"[..], b"a", b""]);
        let mut buf = BytesMut::from(request.frame().as_ref());
        let decoded = RequestDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(decoded, request);
    }

    #[test]
    fn decimal_formatting() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut buf = BytesMut::new();
            put_decimal(&mut buf, n);
            assert_eq!(buf.as_ref(), n.to_string().as_bytes());
        }
    }

    fn arb_requests() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
        let arg = proptest::collection::vec(any::<u8>(), 0..40);
        let request = proptest::collection::vec(arg, 1..6);
        proptest::collection::vec(request, 1..8)
    }

    proptest! {
        #[test]
        fn any_chunking_decodes_the_same(requests in arb_requests(), cuts in proptest::collection::vec(1usize..50, 1..30)) {
            let mut wire = Vec::new();
            for args in &requests {
                wire.extend_from_slice(Request::from_args(args.iter().map(Vec::as_slice)).frame());
            }
            let mut decoder = RequestDecoder::default();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut rest = &wire[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap()).min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                while let Some(request) = decoder.decode(&mut buf).unwrap() {
                    out.push(args_of(&request));
                }
            }
            prop_assert_eq!(out, requests);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn frames_agree_with_the_redis_protocol_crate(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 1..8)) {
            use redis_protocol::resp2::{decode::decode, types::OwnedFrame};
            let request = Request::from_args(args.iter().map(Vec::as_slice));
            let (frame, used) = decode(request.frame()).unwrap().unwrap();
            prop_assert_eq!(used, request.frame().len());
            let expected = OwnedFrame::Array(args.iter().cloned().map(OwnedFrame::BulkString).collect());
            prop_assert_eq!(frame, expected);
        }

        #[test]
        fn a_mutated_frame_is_refused_or_decodes_to_canonical_frames(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 1..4),
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select(&b"0019-+ \r\n$*x"[..]),
            insert in any::<bool>(),
        ) {
            let mut wire = Request::from_args(args.iter().map(Vec::as_slice)).frame().to_vec();
            let at = at.index(wire.len());
            if insert {
                wire.insert(at, byte);
            } else {
                wire[at] = byte;
            }
            let mut decoder = RequestDecoder::default();
            let mut buf = BytesMut::from(&wire[..]);
            while let Ok(Some(request)) = decoder.decode(&mut buf) {
                // Forwarded as is, so it must be what Redis reads the same way: canonical.
                let args: Vec<&[u8]> = (0..request.argc()).filter_map(|i| request.arg(i)).collect();
                let canonical = Request::from_arg_slices(&args);
                prop_assert_eq!(request.frame(), canonical.frame());
            }
        }

        #[test]
        fn garbage_never_panics_and_consumes_at_most_its_input(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut decoder = RequestDecoder::default();
            let mut buf = BytesMut::from(&input[..]);
            let mut consumed = 0;
            loop {
                let before = buf.len();
                match decoder.decode(&mut buf) {
                    Ok(Some(request)) => {
                        consumed += before - buf.len();
                        prop_assert!(request.argc() >= 1);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            prop_assert!(consumed <= input.len());
        }
    }
}
