//! A client that switches protocol (`HELLO 3`, `HELLO 2`) mid-pipeline keeps its order: its
//! requests after the switch travel over other backend connections (RESP3 ones) than those
//! before it, and still never overtake them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;

/// Where `HELLO`'s reply ends, in RESP2 and RESP3 alike: its last field.
const HELLO_END: &[u8] = b"$7\r\nmodules\r\n*0\r\n";

/// Reads until `HELLO`'s reply and one integer reply after it are in; returns that integer.
fn integer_after_hello(stream: &mut TcpStream, got: &mut Vec<u8>) -> i64 {
    let mut buf = [0u8; 64 * 1024];
    loop {
        if let Some(at) = got.windows(HELLO_END.len()).position(|w| w == HELLO_END) {
            let rest = &got[at + HELLO_END.len()..];
            if let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&rest[..end]).into_owned();
                let value = line
                    .strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("not an integer reply after HELLO: {line:?}"));
                assert!(
                    got.starts_with(b"+OK\r\n%7\r\n") || got.starts_with(b"+OK\r\n*14\r\n"),
                    "SET then HELLO, in order: {}",
                    show(&got[..at])
                );
                got.clear();
                return value;
            }
        }
        let n = stream.read(&mut buf).expect("read replies");
        assert!(n > 0, "proxy closed the connection: {}", show(got));
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_read_after_hello_never_overtakes_a_large_write_before_it() {
    let setup = Setup::new(1, &[]);
    let mut stream = TcpStream::connect(setup.proxy.addr()).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut got = Vec::new();
    for round in 0..30 {
        // A fresh key each round: a STRLEN that overtook its SET would answer 0.
        let key = format!("switch:{round}");
        let len = 8 * 1024 * 1024 + round;
        let protocol = if round % 2 == 0 { "3" } else { "2" };
        let value = vec![b'v'; len];
        let pipeline = [
            encode(&[b"SET".as_slice(), key.as_bytes(), &value]),
            encode(&["HELLO", protocol]),
            encode(&["STRLEN", key.as_str()]),
        ]
        .concat();
        // Written from a thread while the replies are read here: 8 MiB may not fit in the
        // sockets' buffers at once.
        let sent = std::thread::spawn(move || {
            writer.write_all(&pipeline).unwrap();
            writer
        });
        let strlen = integer_after_hello(&mut stream, &mut got);
        writer = sent.join().unwrap();
        assert_eq!(
            strlen, len as i64,
            "round {round}: STRLEN after HELLO {protocol} saw the value before the SET"
        );
    }
    assert_eq!(
        setup.shards[0].client().cmd(&["STRLEN", "switch:29"]),
        Reply::Int(8 * 1024 * 1024 + 29)
    );
}
