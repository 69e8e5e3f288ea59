//! Replies: finding where a backend's reply ends without building it (RESP2 and RESP3), and
//! building the replies Keyway writes itself.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{length_line, parse_i64, put_decimal, short_length};
pub use super::codec::{put_array_header, put_bulk};
use crate::protocol::Error;

/// Longest reply header line accepted from a backend (a simple string or error reply can be long).
const MAX_LINE: usize = 1024 * 1024;
/// Deepest reply nesting accepted from a backend.
const MAX_DEPTH: usize = 64;
/// Largest reply a [`ReplyScanner::default`] accepts: Redis's own `proto-max-bulk-len`.
const DEFAULT_MAX_REPLY: usize = 512 * 1024 * 1024;

/// Finds reply boundaries in a backend's byte stream, resuming where the last call stopped.
#[derive(Debug)]
pub struct ReplyScanner {
    pos: usize,
    /// Elements still missing in each open aggregate, innermost last.
    open: Vec<u64>,
    /// Largest reply accepted, in bytes.
    max_bytes: usize,
}

impl Default for ReplyScanner {
    fn default() -> Self {
        ReplyScanner::new(DEFAULT_MAX_REPLY)
    }
}

impl ReplyScanner {
    /// A scanner refusing replies longer than `max_bytes`. A bulk string is refused from its
    /// header, before its data arrives, so a hostile length costs no memory.
    pub fn new(max_bytes: usize) -> Self {
        ReplyScanner {
            pos: 0,
            open: Vec::new(),
            max_bytes,
        }
    }

    /// The length of the first complete reply in `buf`, or `None` if it is not all there yet.
    /// After `Some(n)` the caller must remove those `n` bytes before calling again; after
    /// `None` it must only append.
    ///
    /// # Errors
    /// The bytes are not RESP, or the reply is longer than the scanner's limit; the
    /// connection cannot be trusted afterwards.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, Error> {
        // The commonest reply, a whole bulk string (a GET's), without the general path.
        if self.open.is_empty() {
            if let Some(len) = bulk_end(buf, self.pos).filter(|&len| len <= self.max_bytes) {
                self.pos = 0;
                return Ok(Some(len));
            }
        }
        loop {
            // Large replies are mostly arrays of bulk strings: walk runs of them in a tight
            // loop, leaving anything else to the general path below.
            if let Some(missing) = self.open.last_mut() {
                let (mut pos, mut left) = (self.pos, *missing);
                while left > 0 {
                    let Some(next) = bulk_end(buf, pos) else {
                        break;
                    };
                    pos = next;
                    left -= 1;
                }
                (self.pos, *missing) = (pos, left);
                if left == 0 {
                    // The aggregate is complete: one element done of the one around it.
                    self.open.pop();
                    if self.pos > self.max_bytes {
                        return Err(Error::Protocol("reply too large"));
                    }
                    if let Some(len) = self.element_done() {
                        return Ok(Some(len));
                    }
                    continue;
                }
            }
            // An aggregate of many small elements grows past the limit one element at a time.
            if self.pos > self.max_bytes {
                return Err(Error::Protocol("reply too large"));
            }
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            // Length-prefixed types parse their number while scanning for the line end (one
            // pass, no search call): an array of many bulk strings is mostly such lines.
            let number = |buf: &[u8], at: usize| match length_line(buf, at)? {
                None => Ok(None),
                Some((Some(n), next)) => Ok(Some((n, next))),
                Some((None, _)) => Err(Error::Protocol("invalid length in reply")),
            };
            match kind {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                    let Some((_, next)) = line(buf, self.pos)? else {
                        return Ok(None);
                    };
                    self.pos = next;
                }
                b'$' | b'!' | b'=' => {
                    let Some((len, next)) = number(buf, self.pos)? else {
                        return Ok(None);
                    };
                    if len < 0 {
                        self.pos = next;
                    } else {
                        let end = usize::try_from(len)
                            .ok()
                            .and_then(|len| next.checked_add(len))
                            .filter(|end| end.saturating_add(2) <= self.max_bytes)
                            .ok_or(Error::Protocol("reply too large"))?;
                        match buf.get(end..end + 2) {
                            None => return Ok(None),
                            Some(b"\r\n") => self.pos = end + 2,
                            Some(_) => return Err(Error::Protocol("bulk reply not terminated")),
                        }
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let Some((count, next)) = number(buf, self.pos)? else {
                        return Ok(None);
                    };
                    self.pos = next;
                    let count = match kind {
                        b'%' => count.saturating_mul(2),
                        // An attribute map is followed by the reply it annotates.
                        b'|' => count.saturating_mul(2).saturating_add(1),
                        _ => count,
                    };
                    if count > 0 {
                        if self.open.len() >= MAX_DEPTH {
                            return Err(Error::Protocol("reply nested too deeply"));
                        }
                        self.open.push(count as u64);
                        continue;
                    }
                }
                _ => return Err(Error::Protocol("unknown reply type")),
            }
            if let Some(len) = self.element_done() {
                return Ok(Some(len));
            }
        }
    }

    /// Records one finished element; returns the reply length when the outermost one finished.
    fn element_done(&mut self) -> Option<usize> {
        while let Some(missing) = self.open.last_mut() {
            *missing -= 1;
            if *missing > 0 {
                return None;
            }
            self.open.pop();
        }
        let len = self.pos;
        self.pos = 0;
        Some(len)
    }
}

/// Where the bulk string `$<len>\r\n<data>\r\n` starting at `at` ends, for a complete one
/// with a length of 1 to 9 digits; `None` for anything else (incomplete, nil, another type,
/// malformed), which the general scan then handles.
#[inline(always)]
fn bulk_end(buf: &[u8], at: usize) -> Option<usize> {
    if *buf.get(at)? != b'$' {
        return None;
    }
    let (len, start) = short_length(buf, at)?;
    let end = start + len;
    match buf.get(end..)? {
        [b'\r', b'\n', ..] => Some(end + 2),
        _ => None,
    }
}

/// The length of the complete reply at the start of `buf` (an element of an aggregate, say),
/// or `None` if it is incomplete or not RESP. A bulk string is measured here, without a
/// scanner: through [`ReplyScanner::scan`]'s own fast path an MGET's merge counted ~450
/// instructions more.
#[inline]
pub fn element_len(buf: &[u8]) -> Option<usize> {
    bulk_end(buf, 0).or_else(|| ReplyScanner::default().scan(buf).ok().flatten())
}

/// Finds the `\r\n` ending the line that starts at `at`: `(index of \r, index after \n)`.
fn line(buf: &[u8], at: usize) -> Result<Option<(usize, usize)>, Error> {
    let rest = buf.get(at..).unwrap_or_default();
    match memchr::memchr(b'\n', rest) {
        Some(nl) if nl > 0 && rest.get(nl - 1) == Some(&b'\r') => {
            Ok(Some((at + nl - 1, at + nl + 1)))
        }
        Some(_) => Err(Error::Protocol("reply line not terminated by CRLF")),
        None if rest.len() > MAX_LINE => Err(Error::Protocol("reply line too long")),
        None => Ok(None),
    }
}

/// The element count of an array reply and where its first element starts; `None` if `reply`
/// is not an array (an error, or a nil array).
pub fn array_start(reply: &[u8]) -> Option<(usize, usize)> {
    if reply.first() != Some(&b'*') {
        return None;
    }
    if let Some(short) = short_length(reply, 0) {
        return Some(short);
    }
    let (line_end, at) = line(reply, 0).ok()??;
    let count = usize::try_from(parse_i64(reply.get(1..line_end)?)?).ok()?;
    Some((count, at))
}

/// Reads an integer reply (`:<n>\r\n`).
pub fn integer_value(reply: &[u8]) -> Option<i64> {
    let digits = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    parse_i64(digits)
}

/// `+<text>\r\n`.
pub fn simple(text: &str) -> Bytes {
    line_reply(b'+', text.as_bytes())
}

/// `-<message>\r\n`; line breaks in the message are replaced by spaces.
pub fn error(message: &str) -> Bytes {
    line_reply(b'-', message.as_bytes())
}

/// `:<n>\r\n`.
pub fn integer(n: i64) -> Bytes {
    let mut buf = BytesMut::with_capacity(24);
    buf.put_u8(b':');
    if n < 0 {
        buf.put_u8(b'-');
    }
    put_decimal(&mut buf, n.unsigned_abs());
    buf.put_slice(b"\r\n");
    buf.freeze()
}

/// `$<len>\r\n<data>\r\n`.
pub fn bulk(data: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + 16);
    put_bulk(&mut buf, data);
    buf.freeze()
}

/// The nil bulk string `$-1\r\n`.
pub fn nil() -> Bytes {
    Bytes::from_static(b"$-1\r\n")
}

fn line_reply(kind: u8, text: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(text.len() + 3);
    buf.put_u8(kind);
    buf.extend(
        text.iter()
            .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c }),
    );
    buf.put_slice(b"\r\n");
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scan_all(input: &[u8]) -> Result<Vec<usize>, Error> {
        let mut scanner = ReplyScanner::default();
        let mut lens = Vec::new();
        let mut at = 0;
        while let Some(len) = scanner.scan(&input[at..])? {
            lens.push(len);
            at += len;
        }
        Ok(lens)
    }

    #[test]
    fn scans_every_reply_type() {
        let cases: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR no\r\n",
            b":-12\r\n",
            b"$3\r\nfoo\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
            b"$12\r\nhello world!\r\n",
            b"*2\r\n*2\r\n$1\r\na\r\n$2\r\nbc\r\n$10\r\n0123456789\r\n",
            b"*3\r\n*1\r\n$1\r\na\r\n*2\r\n$1\r\nb\r\n$0\r\n\r\n:1\r\n",
            b"%1\r\n+k\r\n+v\r\n",
            b"~2\r\n_\r\n,1.5\r\n",
            b"|1\r\n+a\r\n+b\r\n#t\r\n",
            b">2\r\n+message\r\n(123\r\n",
            b"=7\r\ntxt:abc\r\n",
        ];
        for case in cases {
            assert_eq!(scan_all(case).unwrap(), vec![case.len()], "{case:?}");
        }
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        let reply = b"*3\r\n$3\r\nabc\r\n*2\r\n:1\r\n$-1\r\n+x\r\n";
        for cut in 0..reply.len() {
            assert_eq!(
                ReplyScanner::default().scan(&reply[..cut]),
                Ok(None),
                "{cut}"
            );
        }
    }

    #[test]
    fn resumes_across_calls() {
        let reply = b"*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n";
        let mut scanner = ReplyScanner::default();
        for cut in 1..reply.len() {
            assert_eq!(scanner.scan(&reply[..cut]), Ok(None));
        }
        assert_eq!(scanner.scan(reply), Ok(Some(reply.len())));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(scan_all(b"?\r\n").is_err());
        assert!(scan_all(b"$x\r\n").is_err());
        assert!(scan_all(b"$3\r\nfooxx").is_err());
        assert!(scan_all(b"+OK\n").is_err());
    }

    #[test]
    fn a_reply_over_the_limit_is_refused_from_its_header() {
        // 600 MiB announced, none of it sent: refused before any data.
        assert!(scan_all(b"$629145600\r\n").is_err());
        let mut scanner = ReplyScanner::new(16);
        assert_eq!(scanner.scan(b"$9\r\n123456789\r\n"), Ok(Some(15)));
        assert!(ReplyScanner::new(16).scan(b"$10\r\n").is_err());
        assert!(ReplyScanner::new(16).scan(b"*1\r\n$10\r\n").is_err());
        // Many small elements: refused once the reply has grown past the limit.
        let mut scanner = ReplyScanner::new(16);
        assert!(scanner.scan(b"*100\r\n:1\r\n:2\r\n:3\r\n:4\r\n").is_err());
        assert!(ReplyScanner::new(16)
            .scan(b"*100\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n")
            .is_err());
        // A complete aggregate of bulk strings, one byte over the limit.
        assert!(ReplyScanner::new(17)
            .scan(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n")
            .is_err());
        assert_eq!(
            ReplyScanner::new(18).scan(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
            Ok(Some(18))
        );
        assert!(ReplyScanner::new(14).scan(b"$9\r\n123456789\r\n").is_err());
    }

    #[test]
    fn finds_the_start_of_array_elements() {
        let reply = b"*3\r\n$1\r\na\r\n$-1\r\n:5\r\n";
        assert_eq!(array_start(reply), Some((3, 4)));
        assert_eq!(array_start(b"-ERR x\r\n"), None);
        assert_eq!(array_start(b"*-1\r\n"), None);
    }

    #[test]
    fn builds_replies() {
        assert_eq!(error("ERR a\r\nb").as_ref(), b"-ERR a  b\r\n");
        assert_eq!(integer(-42).as_ref(), b":-42\r\n");
        assert_eq!(integer_value(b":-42\r\n"), Some(-42));
        assert_eq!(bulk(b"").as_ref(), b"$0\r\n\r\n");
        assert_eq!(simple("OK").as_ref(), b"+OK\r\n");
    }

    proptest! {
        #[test]
        fn garbage_never_panics(input in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut scanner = ReplyScanner::default();
            if let Ok(Some(len)) = scanner.scan(&input) {
                prop_assert!(len <= input.len());
            }
        }

        #[test]
        fn chunked_scan_of_bulk_arrays_finds_the_same_boundaries(replies in proptest::collection::vec(proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)), 0..8), 1..6), step in 1usize..24) {
            let mut wire = BytesMut::new();
            let mut lengths = Vec::new();
            for elements in &replies {
                let start = wire.len();
                put_array_header(&mut wire, elements.len());
                for element in elements {
                    match element {
                        Some(value) => put_bulk(&mut wire, value),
                        None => wire.put_slice(b"$-1\r\n"),
                    }
                }
                lengths.push(wire.len() - start);
            }
            let mut scanner = ReplyScanner::default();
            let mut buf = Vec::new();
            let mut found = Vec::new();
            for chunk in wire.chunks(step) {
                buf.extend_from_slice(chunk);
                while let Some(len) = scanner.scan(&buf).unwrap() {
                    buf.drain(..len);
                    found.push(len);
                }
            }
            prop_assert_eq!(found, lengths);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn chunked_scan_finds_the_same_boundaries(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..10), step in 1usize..16) {
            let mut wire = BytesMut::new();
            for value in &values {
                put_array_header(&mut wire, 2);
                put_bulk(&mut wire, value);
                wire.put_slice(b":7\r\n");
            }
            let mut scanner = ReplyScanner::default();
            let mut buf = Vec::new();
            let mut found = 0;
            for chunk in wire.chunks(step) {
                buf.extend_from_slice(chunk);
                while let Some(len) = scanner.scan(&buf).unwrap() {
                    buf.drain(..len);
                    found += 1;
                }
            }
            prop_assert_eq!(found, values.len());
            prop_assert!(buf.is_empty());
        }
    }
}
