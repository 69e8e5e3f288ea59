//! Differential tests against a real memcached 1.6: the scanner finds exactly its reply
//! boundaries, the decoder's error replies are worded as memcached words them, forwarded
//! frames get exactly one reply each, and a split `get` merges into memcached's own reply.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use keyway::protocol::memcache::fanout::{merge, split, Split};
use keyway::protocol::memcache::{
    Command, Error, ReplyKind, ReplyScanner, Request, RequestDecoder,
};

use common::MemcachedServer;

/// A raw connection to `memcached`, reads bounded by a 10 s timeout.
fn connect(memcached: &MemcachedServer) -> TcpStream {
    let stream = TcpStream::connect(memcached.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads until `done(bytes read so far)`.
fn read_until(stream: &mut TcpStream, mut done: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while !done(&out) {
        let n = stream.read(&mut chunk).expect("memcached replies in time");
        assert!(n > 0, "memcached closed the connection after {out:?}");
        out.extend_from_slice(&chunk[..n]);
    }
    out
}

fn decode(input: &[u8]) -> Request {
    let mut buf = BytesMut::from(input);
    let request = RequestDecoder::default().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty(), "{input:?}");
    request
}

#[test]
fn scanner_finds_exactly_memcacheds_reply_boundaries() {
    let memcached = MemcachedServer::start();
    let tricky: Vec<u8> = b"END\r\nVALUE x 0 1\r\nEN\r\n\0\xff".repeat(40);
    let mut inputs: Vec<Vec<u8>> = vec![
        b"set a 5 0 1\r\nx\r\n".to_vec(),
        [
            format!("set tricky 7 0 {}\r\n", tricky.len()).as_bytes(),
            &tricky,
            b"\r\n",
        ]
        .concat(),
        b"add a 0 0 1 noreply\r\ny\r\n".to_vec(),
        b"get a tricky nope a\r\n".to_vec(),
        b"gets tricky\r\n".to_vec(),
        b"gat 100 a tricky\r\n".to_vec(),
        b"gats 100 nope\r\n".to_vec(),
        b"set n 0 0 2\r\n10\r\n".to_vec(),
        b"incr n 5\r\n".to_vec(),
        b"decr n 100\r\n".to_vec(),
        b"incr a 1\r\n".to_vec(),
        b"incr n 1 noreply\r\n".to_vec(),
        b"touch a 10\r\n".to_vec(),
        b"touch nope 10 noreply\r\n".to_vec(),
        b"append a 0 0 2\r\nyz\r\n".to_vec(),
        b"prepend nope 0 0 2\r\nyz\r\n".to_vec(),
        b"replace nope 0 0 0\r\n\r\n".to_vec(),
        b"cas a 0 0 1 1\r\nq\r\n".to_vec(),
        b"delete a\r\n".to_vec(),
        b"delete a 0 noreply\r\n".to_vec(),
        b"version\r\n".to_vec(),
        b"ms m 3 T0 F9 c\r\nabc\r\n".to_vec(),
        b"ms m 3 q ME\r\nabc\r\n".to_vec(),
        b"ms m 3 q\r\nabc\r\n".to_vec(),
        b"mg m v f t s k c O42\r\n".to_vec(),
        b"mg m q\r\n".to_vec(),
        b"mg nope q v\r\n".to_vec(),
        b"mg bm9wZQ== b v k\r\n".to_vec(),
        b"mg m zzz\r\n".to_vec(),
        b"me m\r\n".to_vec(),
        b"ma cnt N0 J7 v\r\n".to_vec(),
        b"ma cnt q v\r\n".to_vec(),
        b"ma cnt MD q\r\n".to_vec(),
        b"ma nope q\r\n".to_vec(),
        b"md m q\r\n".to_vec(),
        b"md m q\r\n".to_vec(),
        b"mn\r\n".to_vec(),
    ];
    inputs.push(
        [
            &b"set big 0 0 300000\r\n"[..],
            &vec![b'\n'; 300_000],
            b"\r\n",
        ]
        .concat(),
    );
    inputs.push(b"get big tricky big\r\n".to_vec());
    let requests: Vec<Request> = inputs.iter().map(|input| decode(input)).collect();

    // Each request is followed by `mn`, so the reply stream alternates reply, `MN\r\n`:
    // a boundary found one byte off shows up as a missing or misplaced `MN`.
    let mut stream = connect(&memcached);
    let mut wire = Vec::new();
    for request in &requests {
        wire.extend_from_slice(request.frame());
        wire.extend_from_slice(b"mn\r\n");
    }
    stream.write_all(&wire).unwrap();
    let mut scanner = ReplyScanner::default();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let mut step = 1;
    for request in &requests {
        let len = loop {
            if let Some(len) = scanner.scan(&buf, request.expect()).unwrap() {
                break len;
            }
            // Feed the scanner in uneven pieces to exercise resumption.
            step = step % 997 + 13;
            let n = stream.read(&mut chunk[..step]).unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        };
        let reply: Vec<u8> = buf.drain(..len).collect();
        if request.command() == Command::MetaNoop {
            assert_eq!(reply, b"MN\r\n");
        }
        while buf.len() < 4 {
            let n = stream.read(&mut chunk).unwrap();
            buf.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(
            &buf[..4],
            b"MN\r\n",
            "after {:?} -> {:?}",
            request.frame(),
            String::from_utf8_lossy(&reply[..reply.len().min(200)])
        );
        buf.drain(..4);
    }
    assert!(buf.is_empty());
}

#[test]
fn decoder_errors_are_worded_as_memcached_words_them() {
    let memcached = MemcachedServer::start();
    let long_key = "k".repeat(251);
    let cases: Vec<Vec<u8>> = vec![
        b"bogus\r\n".to_vec(),
        b"GET a\r\n".to_vec(),
        b"get\r\n".to_vec(),
        b"incr k\r\n".to_vec(),
        b"incr k 1 2 3\r\n".to_vec(),
        b"touch k\r\n".to_vec(),
        b"mg\r\n".to_vec(),
        b"md\r\n".to_vec(),
        b"ms\r\n".to_vec(),
        format!("get a {long_key}\r\n").into_bytes(),
        format!("incr {long_key} 1\r\n").into_bytes(),
        format!("touch {long_key} 1\r\n").into_bytes(),
        format!("delete {long_key}\r\n").into_bytes(),
        format!("mg {long_key} v\r\n").into_bytes(),
        b"gat x k\r\n".to_vec(),
        b"touch k x\r\n".to_vec(),
        b"touch k x noreply\r\n".to_vec(),
        b"incr k -1\r\n".to_vec(),
        b"incr k x noreply\r\n".to_vec(),
        b"delete k 5\r\n".to_vec(),
        b"delete k 5 noreply\r\n".to_vec(),
        b"me\r\n".to_vec(),
        b"me a b\r\n".to_vec(),
        b"mg k 1\r\n".to_vec(),
        b"mg k q q\r\n".to_vec(),
        b"mg YQ b\r\n".to_vec(),
        b"md !!! b\r\n".to_vec(),
        b"ma !!! b\r\n".to_vec(),
        b"md k 1\r\n".to_vec(),
        b"mg k a b c d e f g h i j k l m n o p q r\r\n".to_vec(),
        b"md k a b c d e f g h i j k l m n o p q r\r\n".to_vec(),
        // Storage errors whose data block memcached swallows too.
        b"set k 0 0 2000000\r\n".to_vec(),
        b"set k 0 0 1\r\nxy\r\n".to_vec(),
        b"ms k 1 T1 T1\r\nx\r\n".to_vec(),
        b"ms !!! 1 b\r\nx\r\n".to_vec(),
    ];
    let mut stream = connect(&memcached);
    for input in cases {
        // memcached may answer more than once (a bad data chunk leaves a bare `\n`).
        let mut buf = BytesMut::from(&input[..]);
        let mut decoder = RequestDecoder::default();
        let mut expected = Vec::new();
        loop {
            match decoder.decode(&mut buf) {
                Ok(None) => break,
                Ok(Some(request)) => panic!("{input:?} decoded as {request:?}"),
                Err(Error::Fatal(reason)) => panic!("{input:?}: fatal {reason}"),
                Err(error) => expected.extend_from_slice(&error.reply().unwrap_or_default()),
            }
        }
        assert!(!expected.is_empty() || input.contains(&b'n'), "{input:?}");
        expected.extend_from_slice(b"MN\r\n");
        if input.starts_with(b"set k 0 0 2000000") {
            // memcached skips the 2 MB it was promised; send them.
            stream.write_all(&input).unwrap();
            stream.write_all(&vec![b'x'; 2_000_002]).unwrap();
        } else {
            stream.write_all(&input).unwrap();
        }
        stream.write_all(b"mn\r\n").unwrap();
        let got = read_until(&mut stream, |out| out.ends_with(b"MN\r\n"));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected),
            "{}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn split_get_merges_into_memcacheds_own_reply() {
    let memcached = MemcachedServer::start();
    let mut stream = connect(&memcached);
    for (i, key) in ["a", "b", "c", "dd", "e"].iter().enumerate() {
        let value = format!("value-{i}\r\nEND\r\n");
        write!(stream, "set {key} {i} 0 {}\r\n{value}\r\n", value.len()).unwrap();
        read_until(&mut stream, |out| out.ends_with(b"STORED\r\n"));
    }
    for line in [
        &b"get a b nope c dd a e a\r\n"[..],
        b"gets e dd c b a nope nope2\r\n",
        b"gat 0 a a b b dd\r\n",
        b"get nope x y z\r\n",
    ] {
        let request = decode(line);
        let scan = |stream: &mut TcpStream, frame: &[u8]| {
            stream.write_all(frame).unwrap();
            let mut scanner = ReplyScanner::default();
            let reply = read_until(
                stream,
                |out| matches!(scanner.scan(out, ReplyKind::Values), Ok(Some(len)) if len == out.len()),
            );
            Bytes::from(reply)
        };
        let direct = scan(&mut stream, request.frame());
        let route = |key: &[u8]| Ok::<_, ()>(usize::from(key.first().copied().unwrap_or(0) % 3));
        let Split::Parts(parts, plan) = split(&request, route).unwrap() else {
            panic!("{line:?} should span shards");
        };
        let replies: Vec<Bytes> = parts
            .iter()
            .map(|part| scan(&mut stream, part.request.frame()))
            .collect();
        let merged = merge(&plan, &replies);
        // gets' cas values and gat's do not change between the two reads.
        assert_eq!(
            String::from_utf8_lossy(&merged),
            String::from_utf8_lossy(&direct),
            "{line:?}"
        );
    }
}
