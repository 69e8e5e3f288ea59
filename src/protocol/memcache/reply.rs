//! Replies: finding where a backend's reply ends without building it, and building the
//! replies Keyway writes itself.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::parse_u64;
use super::Error;

/// Longest reply line accepted from a backend (data blocks excluded).
const MAX_LINE: usize = 64 * 1024;
/// Largest data block in a reply: memcached's item sizes are `int`s.
const MAX_BLOCK: u64 = i32::MAX as u64;

/// What a backend's reply to a request looks like. An error line (`ERROR`,
/// `CLIENT_ERROR ...`, `SERVER_ERROR ...`) ends a reply of any kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// One line: `STORED`, `NOT_STORED`, `EXISTS`, `NOT_FOUND`, `DELETED`, `TOUCHED`, a
    /// number (incr/decr), `VERSION ...`.
    Line,
    /// Retrievals: `VALUE <key> <flags> <bytes> [<cas>]\r\n<data>\r\n`, repeated, then `END`.
    Values,
    /// Meta commands: `HD NF NS EX EN MN ME` lines, or `VA <size> <flag>*\r\n<data>\r\n`.
    Meta,
}

/// Largest reply a [`ReplyScanner::default`] accepts (as the RESP scanner's default).
const DEFAULT_MAX_REPLY: usize = 512 * 1024 * 1024;

/// Finds reply boundaries in a backend's byte stream, resuming where the last call stopped.
#[derive(Debug)]
pub struct ReplyScanner {
    /// Start of the first element (line, or line and data block) not yet complete.
    pos: usize,
    /// Largest reply accepted, in bytes.
    max_bytes: usize,
}

impl Default for ReplyScanner {
    fn default() -> Self {
        ReplyScanner::new(DEFAULT_MAX_REPLY)
    }
}

impl ReplyScanner {
    /// A scanner refusing replies longer than `max_bytes`. A data block is refused from its
    /// header line, before its data arrives, so a hostile length costs no memory.
    pub fn new(max_bytes: usize) -> Self {
        ReplyScanner { pos: 0, max_bytes }
    }

    /// The length of the first complete reply of `kind` in `buf`, or `None` if it is not all
    /// there yet. After `Some(n)` the caller removes those `n` bytes before calling again;
    /// after `None` it only appends, and calls again with the same `kind`.
    ///
    /// # Errors
    /// [`Error::Backend`]: the bytes are not a reply of that kind, or the reply is longer than
    /// the scanner's limit; the connection cannot be trusted afterwards.
    pub fn scan(&mut self, buf: &[u8], kind: ReplyKind) -> Result<Option<usize>, Error> {
        loop {
            let Some((text, next)) = next_line(buf, self.pos)? else {
                return Ok(None);
            };
            let block = match element(text, kind)? {
                Element::Last => None,
                Element::Block { len, last } => Some((len, last)),
            };
            let (end, last) = match block {
                None => (next, true),
                Some((len, last)) => {
                    let end = next + len + 2;
                    if end > self.max_bytes {
                        return Err(Error::Backend("reply too large"));
                    }
                    match buf.get(end - 2..end) {
                        None => return Ok(None),
                        Some(b"\r\n") => (end, last),
                        Some(_) => return Err(Error::Backend("data block not terminated")),
                    }
                }
            };
            self.pos = end;
            if last {
                self.pos = 0;
                return Ok(Some(end));
            }
        }
    }
}

enum Element {
    /// A line ending the reply.
    Last,
    /// A line announcing a data block of `len` bytes; `last` if the reply ends after it.
    Block { len: usize, last: bool },
}

/// Classifies one reply line (without CRLF).
fn element(text: &[u8], kind: ReplyKind) -> Result<Element, Error> {
    if is_error(text) {
        return Ok(Element::Last);
    }
    let valid = match kind {
        ReplyKind::Line => {
            matches!(
                text,
                b"STORED" | b"NOT_STORED" | b"EXISTS" | b"NOT_FOUND" | b"DELETED" | b"TOUCHED"
            ) || text.starts_with(b"VERSION ")
                // incr/decr may pad the number with spaces.
                || text.first().is_some_and(u8::is_ascii_digit)
                    && text.iter().all(|&c| c.is_ascii_digit() || c == b' ')
        }
        ReplyKind::Values if text == b"END" => true,
        ReplyKind::Values => {
            let (_, len) = value_header(text).ok_or(Error::Backend("bad VALUE line"))?;
            return Ok(Element::Block { len, last: false });
        }
        ReplyKind::Meta => match text.get(..2) {
            Some(b"VA") => {
                let len = text
                    .get(2..)
                    .and_then(|rest| rest.strip_prefix(b" "))
                    .and_then(|rest| rest.split(|&c| c == b' ').next())
                    .and_then(block_len)
                    .ok_or(Error::Backend("bad VA line"))?;
                return Ok(Element::Block { len, last: true });
            }
            Some(b"HD" | b"NF" | b"NS" | b"EX" | b"EN" | b"MN" | b"ME") => {
                matches!(text.get(2), None | Some(b' '))
            }
            _ => false,
        },
    };
    if valid {
        Ok(Element::Last)
    } else {
        Err(Error::Backend("unexpected reply line"))
    }
}

fn is_error(text: &[u8]) -> bool {
    text.starts_with(b"CLIENT_ERROR")
        || text.starts_with(b"SERVER_ERROR")
        || text
            .strip_prefix(b"ERROR")
            .is_some_and(|rest| matches!(rest.first(), None | Some(b' ')))
}

/// The line starting at `at`, without its CRLF, and the offset after it.
fn next_line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, Error> {
    let rest = buf.get(at..).unwrap_or_default();
    match memchr::memchr(b'\n', rest) {
        Some(nl) if nl > MAX_LINE => Err(Error::Backend("reply line too long")),
        Some(nl) => match rest.get(..nl).and_then(|text| text.strip_suffix(b"\r")) {
            Some(text) => Ok(Some((text, at + nl + 1))),
            None => Err(Error::Backend("reply line not terminated by CRLF")),
        },
        None if rest.len() > MAX_LINE => Err(Error::Backend("reply line too long")),
        None => Ok(None),
    }
}

fn block_len(digits: &[u8]) -> Option<usize> {
    usize::try_from(parse_u64(digits).filter(|&len| len <= MAX_BLOCK)?).ok()
}

/// Parses `VALUE <key> <flags> <bytes> [<cas>]`: the key's range in `text`, the block length.
fn value_header(text: &[u8]) -> Option<(Range<usize>, usize)> {
    let rest = text.strip_prefix(b"VALUE ")?;
    let mut fields = rest.split(|&c| c == b' ');
    let key = fields.next().filter(|key| !key.is_empty())?;
    parse_u64(fields.next()?)?;
    let len = block_len(fields.next()?)?;
    match (fields.next(), fields.next()) {
        (None, _) => {}
        (Some(cas), None) => {
            parse_u64(cas)?;
        }
        _ => return None,
    }
    Some((6..6 + key.len(), len))
}

/// One `VALUE` line and its data block in a complete retrieval reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ValueBlock {
    /// The key, inside the reply.
    pub key: Range<usize>,
    /// The whole block: `VALUE` line, data, CRLF.
    pub block: Range<usize>,
}

/// Splits a complete retrieval reply into its value blocks; `None` if it is not one that
/// ends with `END` (an error reply, or garbage).
pub(crate) fn value_blocks(reply: &[u8]) -> Option<Vec<ValueBlock>> {
    let mut blocks = Vec::new();
    let mut at = 0;
    loop {
        let (text, next) = next_line(reply, at).ok()??;
        if text == b"END" {
            return (next == reply.len()).then_some(blocks);
        }
        let (key, len) = value_header(text)?;
        let end = next.checked_add(len)?.checked_add(2)?;
        if reply.get(end - 2..end)? != b"\r\n" {
            return None;
        }
        blocks.push(ValueBlock {
            key: at + key.start..at + key.end,
            block: at..end,
        });
        at = end;
    }
}

/// The last line of a reply, CRLF included (the error line that ended it).
pub(crate) fn last_line(reply: &[u8]) -> &[u8] {
    let body = reply.strip_suffix(b"\r\n").unwrap_or(reply);
    let start = memchr::memrchr(b'\n', body).map_or(0, |nl| nl + 1);
    reply.get(start..).unwrap_or(reply)
}

/// `VERSION 1.6.0 keyway/<version>`: Keyway speaks memcached 1.6's protocol (meta commands
/// included), and clients that parse the number stop at the space.
pub fn version_reply() -> Bytes {
    Bytes::from_static(
        concat!("VERSION 1.6.0 keyway/", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes(),
    )
}

/// `MN\r\n`, the reply to `mn`.
pub fn noop_reply() -> Bytes {
    Bytes::from_static(b"MN\r\n")
}

/// `ERROR\r\n`: an unknown command.
pub fn error() -> Bytes {
    Bytes::from_static(b"ERROR\r\n")
}

/// `CLIENT_ERROR <message>\r\n`; line breaks in the message become spaces.
pub fn client_error(message: &str) -> Bytes {
    line(&format!("CLIENT_ERROR {message}"))
}

/// `SERVER_ERROR <message>\r\n` (e.g. `Connection timed out`); line breaks become spaces.
pub fn server_error(message: &str) -> Bytes {
    line(&format!("SERVER_ERROR {message}"))
}

/// `<text>\r\n`, with line breaks in `text` replaced by spaces.
pub(crate) fn line(text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(text.len() + 2);
    buf.extend(
        text.bytes()
            .map(|c| if c == b'\r' || c == b'\n' { b' ' } else { c }),
    );
    buf.put_slice(b"\r\n");
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scan_all(input: &[u8], kind: ReplyKind) -> Result<Vec<usize>, Error> {
        let mut scanner = ReplyScanner::default();
        let mut lens = Vec::new();
        let mut at = 0;
        while let Some(len) = scanner.scan(&input[at..], kind)? {
            lens.push(len);
            at += len;
        }
        Ok(lens)
    }

    #[test]
    fn a_reply_over_the_limit_is_refused_from_its_header() {
        let mut scanner = ReplyScanner::new(32);
        let ok = b"VALUE k 0 3\r\nabc\r\nEND\r\n";
        assert_eq!(scanner.scan(ok, ReplyKind::Values), Ok(Some(ok.len())));
        let mut scanner = ReplyScanner::new(32);
        assert!(scanner
            .scan(b"VALUE k 0 629145600\r\n", ReplyKind::Values)
            .is_err());
        // Blocks that fit one by one but not together.
        let mut scanner = ReplyScanner::new(32);
        let two = b"VALUE a 0 3\r\nabc\r\nVALUE b 0 3\r\nabc\r\n";
        assert!(scanner.scan(two, ReplyKind::Values).is_err());
        let mut scanner = ReplyScanner::new(16);
        assert!(scanner.scan(b"VA 20 v\r\n", ReplyKind::Meta).is_err());
    }

    #[test]
    fn scans_every_reply_form() {
        use ReplyKind::*;
        let cases: &[(&[u8], ReplyKind)] = &[
            (b"STORED\r\n", Line),
            (b"NOT_STORED\r\n", Line),
            (b"EXISTS\r\n", Line),
            (b"NOT_FOUND\r\n", Line),
            (b"DELETED\r\n", Line),
            (b"TOUCHED\r\n", Line),
            (b"12 \r\n", Line),
            (b"VERSION 1.6.18\r\n", Line),
            (b"ERROR\r\n", Line),
            (b"CLIENT_ERROR bad data chunk\r\n", Line),
            (b"END\r\n", Values),
            (
                b"VALUE a 0 1\r\nx\r\nVALUE b 5 3 99\r\n\r\n\r\r\nEND\r\n",
                Values,
            ),
            (b"SERVER_ERROR out of memory\r\n", Values),
            (b"VALUE a 0 1\r\nx\r\nSERVER_ERROR oops\r\n", Values),
            (b"HD\r\n", Meta),
            (b"HD c5 Oab kfoo b\r\n", Meta),
            (b"EN\r\n", Meta),
            (b"NF\r\n", Meta),
            (b"NS\r\n", Meta),
            (b"EX\r\n", Meta),
            (b"MN\r\n", Meta),
            (b"ME a exp=-1 la=2 cas=8 fetch=yes cls=1 size=61\r\n", Meta),
            (b"VA 2 f0 t-1\r\nhi\r\n", Meta),
            (b"VA 0\r\n\r\n", Meta),
            (b"CLIENT_ERROR invalid flag\r\n", Meta),
        ];
        for &(case, kind) in cases {
            assert_eq!(scan_all(case, kind).unwrap(), vec![case.len()], "{case:?}");
        }
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        let cases: &[(&[u8], ReplyKind)] = &[
            (
                b"VALUE a 0 5\r\nEND\r\n\r\nVALUE b 0 0 1\r\n\r\nEND\r\n",
                ReplyKind::Values,
            ),
            (b"VA 3 k\r\n\r\n\n\r\n", ReplyKind::Meta),
            (b"NOT_STORED\r\n", ReplyKind::Line),
        ];
        for &(reply, kind) in cases {
            let mut resumed = ReplyScanner::default();
            for cut in 0..reply.len() {
                assert_eq!(ReplyScanner::default().scan(&reply[..cut], kind), Ok(None));
                assert_eq!(resumed.scan(&reply[..cut], kind), Ok(None), "{cut}");
            }
            assert_eq!(resumed.scan(reply, kind), Ok(Some(reply.len())));
        }
    }

    #[test]
    fn garbage_is_a_backend_error() {
        let cases: &[(&[u8], ReplyKind)] = &[
            (b"STORED\n", ReplyKind::Line),
            (b"VALUE a 0 1\r\n", ReplyKind::Line),
            (b"HD\r\n", ReplyKind::Values),
            (b"VALUE a 0 x\r\n", ReplyKind::Values),
            (b"VALUE a 0 1\r\nxyz\r\n", ReplyKind::Values),
            (b"STORED\r\n", ReplyKind::Meta),
            (b"VA x\r\n", ReplyKind::Meta),
            (b"ERRORS\r\n", ReplyKind::Meta),
        ];
        for &(case, kind) in cases {
            assert!(
                matches!(scan_all(case, kind), Err(Error::Backend(_))),
                "{case:?}"
            );
        }
    }

    #[test]
    fn splits_value_blocks() {
        let reply = b"VALUE a 0 1\r\nx\r\nVALUE bc 0 2 7\r\nyz\r\nEND\r\n";
        let blocks = value_blocks(reply).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(&reply[blocks[1].key.clone()], b"bc");
        assert_eq!(&reply[blocks[1].block.clone()], b"VALUE bc 0 2 7\r\nyz\r\n");
        assert_eq!(value_blocks(b"SERVER_ERROR x\r\n"), None);
        assert_eq!(value_blocks(b"END\r\nEND\r\n"), None);
        assert_eq!(
            last_line(b"VALUE a 0 1\r\nx\r\nSERVER_ERROR y\r\n"),
            b"SERVER_ERROR y\r\n"
        );
        assert_eq!(last_line(b"ERROR\r\n"), b"ERROR\r\n");
    }

    #[test]
    fn builds_replies() {
        assert_eq!(
            server_error("Connection timed out").as_ref(),
            b"SERVER_ERROR Connection timed out\r\n"
        );
        assert_eq!(client_error("a\r\nb").as_ref(), b"CLIENT_ERROR a  b\r\n");
        assert_eq!(error().as_ref(), b"ERROR\r\n");
        assert_eq!(noop_reply().as_ref(), b"MN\r\n");
        assert!(version_reply().starts_with(b"VERSION 1.6.0 keyway/"));
        assert_eq!(
            scan_all(&version_reply(), ReplyKind::Line).unwrap().len(),
            1
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(input in proptest::collection::vec(any::<u8>(), 0..100), kind in 0..3u8) {
            let kind = [ReplyKind::Line, ReplyKind::Values, ReplyKind::Meta][kind as usize];
            if let Ok(Some(len)) = ReplyScanner::default().scan(&input, kind) {
                prop_assert!(len <= input.len());
            }
        }

        #[test]
        fn chunked_scan_finds_the_same_boundaries(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..10),
            step in 1usize..16,
        ) {
            let mut wire = Vec::new();
            for (i, value) in values.iter().enumerate() {
                wire.extend_from_slice(format!("VALUE k{i} 0 {}\r\n", value.len()).as_bytes());
                wire.extend_from_slice(value);
                wire.extend_from_slice(b"\r\nEND\r\n");
            }
            let mut scanner = ReplyScanner::default();
            let mut buf = Vec::new();
            let mut found = 0;
            for chunk in wire.chunks(step) {
                buf.extend_from_slice(chunk);
                while let Some(len) = scanner.scan(&buf, ReplyKind::Values).unwrap() {
                    prop_assert!(value_blocks(&buf[..len]).is_some());
                    buf.drain(..len);
                    found += 1;
                }
            }
            prop_assert_eq!(found, values.len());
            prop_assert!(buf.is_empty());
        }
    }
}
