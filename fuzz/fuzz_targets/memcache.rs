//! The memcache parsers' contract on any input. Request decoder, fed in two chunks: never
//! panics, never consumes more than it was given, yields only requests within the limits,
//! and a forwarded frame decodes again to itself (no `noreply` or `q` left to strip). Reply
//! scanner, for each reply kind: a reply length never exceeds the input, and scanning in
//! two chunks finds the same first reply.
#![no_main]

use bytes::BytesMut;
use keyway::protocol::memcache::{Limits, ReplyKind, ReplyPolicy, ReplyScanner, RequestDecoder};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_key_bytes: 16,
    max_item_bytes: 64,
    max_keys: 8,
    max_line_bytes: 256,
    max_request_bytes: 200,
};

fuzz_target!(|input: &[u8]| {
    decode(input);
    for kind in [ReplyKind::Line, ReplyKind::Values, ReplyKind::Meta] {
        scan(input, kind);
    }
});

fn decode(input: &[u8]) {
    let split = input.first().map_or(0, |&b| b as usize).min(input.len());
    let mut decoder = RequestDecoder::new(LIMITS);
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    for chunk in [&input[..split], &input[split..]] {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            let result = decoder.decode(&mut buf);
            consumed += before - buf.len();
            match result {
                Ok(Some(request)) => {
                    assert!(request.key_count() <= LIMITS.max_keys);
                    assert!(request.frame().len() <= LIMITS.max_line_bytes + LIMITS.max_item_bytes + 3);
                    assert!(request.frame().len() <= LIMITS.max_request_bytes);
                    let mut again = BytesMut::from(request.frame().as_ref());
                    let decoded = RequestDecoder::new(LIMITS).decode(&mut again);
                    let Ok(Some(decoded)) = decoded else {
                        panic!("{:?} does not decode again: {decoded:?}", request.frame());
                    };
                    assert!(again.is_empty());
                    assert_eq!(decoded.frame(), request.frame());
                    assert_eq!(decoded.command(), request.command());
                    assert!(decoded.keys().eq(request.keys()));
                    assert_eq!(decoded.reply_policy(), ReplyPolicy::Always);
                }
                Ok(None) => break,
                Err(error) if error.is_fatal() => return,
                Err(_) => assert!(before > buf.len(), "an error consumes its line"),
            }
        }
    }
    assert!(consumed <= input.len());
}

fn scan(input: &[u8], kind: ReplyKind) {
    let whole = ReplyScanner::default().scan(input, kind);
    if let Ok(Some(len)) = whole {
        assert!(len <= input.len());
    }
    let split = input.len() / 2;
    let mut scanner = ReplyScanner::default();
    let chunked = match scanner.scan(&input[..split], kind) {
        Ok(None) => scanner.scan(input, kind),
        other => other,
    };
    if let (Ok(Some(a)), Ok(Some(b))) = (&whole, &chunked) {
        assert_eq!(a, b);
    }
}
