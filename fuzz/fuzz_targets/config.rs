//! The config loader's contract on any text: `Config::parse` returns a config or an error that
//! names at least one problem, never panics, and gives the same answer twice.
//!
//! `listen` hostnames are resolved while parsing: `scripts/fuzz.sh` runs this target in a
//! network namespace of its own (`unshare -n`), so that no name lookup leaves the machine.
#![no_main]

use keyway::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let first = Config::parse(&text);
    let second = Config::parse(&text);
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the same text parsed to two configs"),
        (Err(a), Err(b)) => {
            let message = a.to_string();
            assert!(!message.trim().is_empty(), "an error that names no problem");
            assert_eq!(message, b.to_string(), "the same text gave two errors");
        }
        _ => panic!("the same text parsed once and failed once: {first:?} / {second:?}"),
    }
});
