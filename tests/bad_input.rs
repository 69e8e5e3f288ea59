//! Malformed or hostile input on one connection: that connection gets an error reply or is
//! closed (never a hang), a concurrent healthy client keeps working throughout, and the proxy
//! process stays alive with bounded memory.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test helpers fail by panicking

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A client doing SET/GET round trips with unique values on its own thread until stopped.
struct HealthyClient {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<usize>,
}

impl HealthyClient {
    fn start(addr: &str) -> HealthyClient {
        HealthyClient::with_keys(addr, (0..50).map(|i| format!("healthy:{i}")).collect())
    }

    fn with_keys(addr: &str, keys: Vec<String>) -> HealthyClient {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let mut c = Client::connect(addr);
        let handle = thread::spawn(move || {
            let mut n = 0usize;
            // at least 20 round trips, so that "kept working" always means something
            while !flag.load(Ordering::Relaxed) || n < 20 {
                let key = &keys[n % keys.len()];
                let value = format!("value {n}");
                assert_eq!(c.cmd(&["SET", key, &value]), Reply::ok(), "healthy SET {n}");
                assert_eq!(c.cmd(&["GET", key]), Reply::bulk(&value), "healthy GET {n}");
                n += 1;
            }
            n
        });
        HealthyClient { stop, handle }
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let done = self.handle.join();
        assert!(
            done.is_ok(),
            "the healthy client failed while another connection sent bad input"
        );
    }
}

/// Sends `payload` on a fresh connection and reads: an error reply or a close is fine; a
/// non-error reply, a protocol violation or no answer within the read timeout fails.
fn send_bad(addr: &str, payload: &[u8]) {
    let mut c = Client::connect(addr);
    if c.try_send_raw(payload).is_err() {
        return; // the proxy closed while we were still writing
    }
    match c.try_read_reply() {
        Ok(Reply::Error(_)) | Err(ReadError::Closed) => {}
        Ok(other) => panic!("{} -> non-error reply {other:?}", show(payload)),
        Err(ReadError::Timeout) => panic!(
            "{} -> no reply and no close within {READ_TIMEOUT:?}: a hang",
            show(payload)
        ),
        Err(e) => panic!("{} -> {e:?}", show(payload)),
    }
}

/// The whole check for one payload.
fn bad_input_is_refused(payload: &[u8]) {
    let mut setup = Setup::new(4, &[]);
    let healthy = HealthyClient::start(setup.proxy.addr());
    send_bad(setup.proxy.addr(), payload);
    healthy.finish();
    setup.proxy.assert_alive();
    let mut fresh = setup.client();
    assert_eq!(fresh.cmd(&["SET", "after", "bad input"]), Reply::ok());
    assert_eq!(fresh.cmd(&["GET", "after"]), Reply::bulk("bad input"));
}

#[test]
fn garbage_bytes_get_an_error_or_a_close() {
    bad_input_is_refused(b"\x00\xff\x13\x37garbage\x01\x02\r\n\xfe\xfd");
}

#[test]
fn negative_bulk_length_in_a_request_gets_an_error_or_a_close() {
    bad_input_is_refused(b"*2\r\n$-5\r\n");
}

#[test]
fn huge_bulk_length_gets_an_error_or_a_close() {
    bad_input_is_refused(b"$99999999999\r\n");
}

#[test]
fn huge_bulk_length_inside_a_multibulk_gets_an_error_or_a_close() {
    bad_input_is_refused(b"*2\r\n$3\r\nGET\r\n$99999999999\r\n");
}

#[test]
fn huge_multibulk_length_gets_an_error_or_a_close() {
    bad_input_is_refused(b"*2000000000\r\n");
}

#[test]
fn non_numeric_multibulk_length_gets_an_error_or_a_close() {
    bad_input_is_refused(b"*x\r\n");
}

#[test]
fn non_numeric_bulk_length_gets_an_error_or_a_close() {
    bad_input_is_refused(b"*1\r\n$abc\r\nPING\r\n");
}

#[test]
fn missing_crlf_after_a_bulk_string_gets_an_error_or_a_close() {
    bad_input_is_refused(b"*1\r\n$4\r\nPINGxx");
}

#[test]
fn two_mib_inline_line_without_newline_gets_an_error_or_a_close() {
    let mut line = b"GET ".to_vec();
    line.resize(2 * 1024 * 1024, b'a');
    bad_input_is_refused(&line);
}

#[test]
fn valid_commands_sent_one_byte_per_write_get_the_right_replies() {
    let mut setup = Setup::new(4, &[]);
    let healthy = HealthyClient::start(setup.proxy.addr());
    let mut stream = TcpStream::connect(setup.proxy.addr()).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut wire = encode(&["SET", "bytewise:key", "byte\r\nby byte"]);
    wire.extend_from_slice(&encode(&["GET", "bytewise:key"]));
    wire.extend_from_slice(&encode(&["INCR", "bytewise:n"]));
    for b in &wire {
        stream.write_all(&[*b]).expect("one-byte write");
        stream.flush().expect("flush");
    }
    let mut c = Client::from_stream(stream);
    assert_eq!(c.read_reply(), Reply::ok());
    assert_eq!(c.read_reply(), Reply::bulk("byte\r\nby byte"));
    assert_eq!(c.read_reply(), Reply::Int(1));
    healthy.finish();
    setup.proxy.assert_alive();
}

/// GET calls a backend has served (INFO commandstats, which our own INFO calls do not touch).
fn gets_served(server: &RedisServer) -> u64 {
    let info = match server.client().cmd(&["INFO", "commandstats"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO commandstats -> {other:?}"),
    };
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn client_that_pipelines_100k_gets_and_never_reads_keeps_proxy_memory_bounded() {
    let mut setup = Setup::new(4, &[]);
    let value = vec![b'x'; 4096];
    let mut c = setup.client();
    assert_eq!(c.cmd(&[b"SET".as_slice(), b"fat", &value]), Reply::ok());
    let fat_shard = setup.shard_of(b"fat");
    // the healthy client keeps off the fat key's backend, so that its GETs there can be counted
    let healthy_keys: Vec<String> = setup
        .keys_by_shard("healthy", 100)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != fat_shard)
        .flat_map(|(_, keys)| keys)
        .map(|k| String::from_utf8(k).unwrap())
        .collect();
    let rss_before = setup.proxy.rss_kib();
    let gets_before = gets_served(&setup.shards[fat_shard]);

    // 100k GETs of a 4 KiB value: ~400 MiB of replies if the proxy buffered them all
    let requests: Vec<u8> = encode(&["GET", "fat"]).repeat(100_000);
    let mut writer = TcpStream::connect(setup.proxy.addr()).expect("connect");
    writer
        .set_write_timeout(Some(Duration::from_secs(30)))
        .expect("write timeout");
    let keep_open = writer.try_clone().expect("clone");
    let write_thread = thread::spawn(move || {
        // blocks once the proxy stops reading: that is the point; a write error ends it
        let _ = writer.write_all(&requests);
    });

    let healthy = HealthyClient::with_keys(setup.proxy.addr(), healthy_keys);
    // watch until the backend stops receiving GETs (the proxy stopped reading the client) or
    // all 100k went through; RSS is sampled throughout
    let mut max_rss = rss_before;
    let mut last = (gets_before, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        max_rss = max_rss.max(setup.proxy.rss_kib());
        if max_rss.saturating_sub(rss_before) / 1024 >= 200 {
            break; // already failed: no need to watch it grow further
        }
        let now = gets_served(&setup.shards[fat_shard]);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(1500) {
            break;
        }
    }
    let served = last.0 - gets_before;
    assert!(
        served > 100,
        "only {served} of the GETs reached the backend: the test exercised nothing"
    );
    let growth_mib = max_rss.saturating_sub(rss_before) / 1024;
    eprintln!("{served} GETs served while the client did not read; proxy RSS +{growth_mib} MiB");
    assert!(
        growth_mib < 200,
        "proxy RSS grew by {growth_mib} MiB for a client that never reads"
    );
    healthy.finish();
    setup.proxy.assert_alive();
    // unblocks the writer thread if the proxy stopped reading
    let _ = keep_open.shutdown(std::net::Shutdown::Both);
    let _ = write_thread.join();
    assert_eq!(c.cmd(&["GET", "fat"]), Reply::bulk(&value));
}
