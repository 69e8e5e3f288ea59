//! The RESP request decoder's contract on any input, fed in two chunks: it never panics, never
//! consumes more than it was given, yields only requests within the limits, each request's
//! frame is the canonical encoding of its arguments, and it decodes again to the same request.
#![no_main]

use bytes::BytesMut;
use keyway::protocol::resp::codec::Limits;
use keyway::protocol::resp::{Request, RequestDecoder};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_request_bytes: 4096,
    max_multibulk_length: 64,
};

fuzz_target!(|input: &[u8]| {
    let split = input.first().map_or(0, |&b| b as usize).min(input.len());
    let mut decoder = RequestDecoder::new(LIMITS);
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    for chunk in [&input[..split], &input[split..]] {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(request)) => {
                    consumed += before - buf.len();
                    assert!(request.argc() >= 1 && request.argc() <= LIMITS.max_multibulk_length);
                    assert!(request.frame().len() <= LIMITS.max_request_bytes.max(64 * 1024 * 4));
                    // What is forwarded is exactly the canonical encoding of the arguments:
                    // no spelling a backend could read differently (`$04`) gets through.
                    let args: Vec<&[u8]> = (0..request.argc()).filter_map(|i| request.arg(i)).collect();
                    assert_eq!(request.frame(), Request::from_arg_slices(&args).frame());
                    let mut again = BytesMut::from(request.frame().as_ref());
                    let decoded = RequestDecoder::new(LIMITS).decode(&mut again);
                    assert_eq!(decoded, Ok(Some(request)));
                    assert!(again.is_empty());
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    assert!(consumed <= input.len());
});
