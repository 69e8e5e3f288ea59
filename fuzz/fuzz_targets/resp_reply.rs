//! The reply scanner's contract: never panics, a reply length never exceeds the input, and
//! scanning the same bytes in two chunks finds the same first reply.
#![no_main]

use keyway::protocol::resp::ReplyScanner;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let whole = ReplyScanner::default().scan(input);
    if let Ok(Some(len)) = whole {
        assert!(len <= input.len());
    }
    let split = input.len() / 2;
    let mut scanner = ReplyScanner::default();
    let chunked = match scanner.scan(&input[..split]) {
        Ok(None) => scanner.scan(input),
        other => other,
    };
    if let (Ok(Some(a)), Ok(Some(b))) = (&whole, &chunked) {
        assert_eq!(a, b);
    }
});
