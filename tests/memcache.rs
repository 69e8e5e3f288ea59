//! memcached pools end to end: real `memcached` backends behind the proxy under test.
//!
//! Most tests are differential: the same bytes go to one memcached directly and through the
//! proxy to four memcached shards, and the replies must be byte-for-byte the same (cas uniques
//! and remaining TTLs, which differ between servers by nature, are normalised first).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------------------------
// Differential helpers
// ---------------------------------------------------------------------------------------------

/// One side of a differential run: a connection plus the last cas unique it was shown, which
/// `{cas}` in a request stands for (each server numbers its items itself).
struct Side {
    client: McClient,
    cas: String,
}

impl Side {
    fn new(client: McClient) -> Side {
        Side {
            client,
            cas: "0".into(),
        }
    }

    /// Sends `request` (any number of commands) plus `mn`, returns the replies before `MN`.
    fn run(&mut self, request: &[u8]) -> Vec<Vec<u8>> {
        let request = replace(request, b"{cas}", self.cas.as_bytes());
        let replies = self.client.exchange(&request);
        for r in &replies {
            if let Some(cas) = last_cas(r) {
                self.cas = cas;
            }
        }
        replies
    }
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Splits a reply into its lines and data blocks: `(line, data block)` pairs.
fn reply_parts(reply: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut parts = Vec::new();
    let mut pos = 0;
    while pos < reply.len() {
        let nl = reply[pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("reply without CRLF: {}", show(reply)));
        let line = reply[pos..pos + nl].to_vec();
        pos += nl + 2;
        let tokens: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
        let len = match tokens[0] {
            b"VALUE" if tokens.len() >= 4 => Some(tokens[3]),
            b"VA" => Some(tokens[1]),
            _ => None,
        }
        .map(|t| std::str::from_utf8(t).unwrap().parse::<usize>().unwrap());
        let data = len.map(|len| {
            let d = reply[pos..pos + len].to_vec();
            pos += len + 2;
            d
        });
        parts.push((line, data));
    }
    parts
}

fn is_meta_line(tokens: &[&[u8]]) -> bool {
    matches!(
        tokens[0],
        b"VA" | b"HD" | b"EN" | b"NF" | b"NS" | b"EX" | b"MN"
    )
}

/// The cas unique a reply shows (`VALUE k f n CAS`, or a meta `c<cas>` flag), if any.
fn last_cas(reply: &[u8]) -> Option<String> {
    let mut found = None;
    for (line, _) in reply_parts(reply) {
        let tokens: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
        if tokens[0] == b"VALUE" && tokens.len() == 5 {
            found = Some(String::from_utf8(tokens[4].to_vec()).unwrap());
        } else if is_meta_line(&tokens) {
            for t in &tokens[1..] {
                if t.len() > 1 && t[0] == b'c' && t[1..].iter().all(u8::is_ascii_digit) {
                    found = Some(String::from_utf8(t[1..].to_vec()).unwrap());
                }
            }
        }
    }
    found
}

/// The reply with cas uniques and remaining TTLs (which differ between servers and seconds)
/// replaced by placeholders; `t-1` (no expiry) is kept.
fn normalise(reply: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (line, data) in reply_parts(reply) {
        let mut tokens: Vec<Vec<u8>> = line.split(|&c| c == b' ').map(<[u8]>::to_vec).collect();
        let refs: Vec<&[u8]> = tokens.iter().map(Vec::as_slice).collect();
        if tokens[0] == b"VALUE" && tokens.len() == 5 {
            tokens[4] = b"<cas>".to_vec();
        } else if is_meta_line(&refs) {
            for t in tokens.iter_mut().skip(1) {
                let digits = t.len() > 1 && t[1..].iter().all(u8::is_ascii_digit);
                if digits && t[0] == b'c' {
                    *t = b"c<cas>".to_vec();
                } else if digits && t[0] == b't' {
                    *t = b"t<ttl>".to_vec();
                }
            }
        }
        out.extend_from_slice(&tokens.join(&b' '));
        out.extend_from_slice(b"\r\n");
        if let Some(d) = data {
            out.extend_from_slice(&d);
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn show_all(replies: &[Vec<u8>]) -> String {
    let shown: Vec<String> = replies.iter().map(|r| show(r)).collect();
    format!("{shown:?}")
}

/// Runs each step on one memcached directly and through the proxy (fresh servers on both
/// sides), collecting every difference; fails listing them all.
fn assert_same_as_memcached(setup: &McSetup, direct: &MemcachedServer, steps: &[&[u8]]) {
    let mut proxied = Side::new(setup.client());
    let mut reference = Side::new(direct.client());
    let mut differences = Vec::new();
    for step in steps {
        let want: Vec<Vec<u8>> = reference.run(step).iter().map(|r| normalise(r)).collect();
        let got: Vec<Vec<u8>> = proxied.run(step).iter().map(|r| normalise(r)).collect();
        if want != got {
            differences.push(format!(
                "{}\n    memcached: {}\n    proxy:     {}",
                show(step),
                show_all(&want),
                show_all(&got)
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} steps differ from memcached:\n{}",
        differences.len(),
        steps.len(),
        differences.join("\n")
    );
}

/// Four shards behind the proxy, and one lone memcached to compare with.
fn differential_setup(options: &[(&str, &str)]) -> (McSetup, MemcachedServer) {
    let direct = thread::spawn(MemcachedServer::start);
    let setup = McSetup::new(4, options);
    (setup, direct.join().unwrap())
}

/// The keys in `keys` each shard holds: every key on exactly one shard, and at least
/// `min_used` shards used.
fn assert_spread(setup: &McSetup, keys: &[Vec<u8>], min_used: usize) {
    let held: Vec<HashSet<Vec<u8>>> = setup.shards.iter().map(|s| s.holding(keys)).collect();
    for k in keys {
        let on = held.iter().filter(|h| h.contains(k)).count();
        assert_eq!(on, 1, "key {} is on {on} shards", show(k));
    }
    let used = held.iter().filter(|h| !h.is_empty()).count();
    assert!(used >= min_used, "keys on only {used} shards");
}

/// Key `i` of a family: `{prefix}:{i}:{mixed}`. The mixed tail makes keys differ in more than
/// their last digits, which the default fnv1a_64 on a ketama continuum needs to spread them
/// over all shards (as with nutcracker, keys like `k:1`..`k:300` bunch on one or two).
fn spread_key(prefix: &str, i: usize) -> Vec<u8> {
    let mixed = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{prefix}:{i}:{mixed:016x}").into_bytes()
}

fn set_request(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "set {} 0 0 {}\r\n",
        String::from_utf8_lossy(key),
        value.len()
    )
    .into_bytes();
    r.extend_from_slice(value);
    r.extend_from_slice(b"\r\n");
    r
}

// ---------------------------------------------------------------------------------------------
// Command families
// ---------------------------------------------------------------------------------------------

#[test]
fn storage_commands_reply_like_one_memcached() {
    let (setup, direct) = differential_setup(&[]);
    assert_same_as_memcached(
        &setup,
        &direct,
        &[
            b"set a 5 0 3\r\nabc\r\n",
            b"get a\r\n",
            b"add a 0 0 1\r\nx\r\n",
            b"add b 1 0 2\r\nbb\r\n",
            b"replace c 0 0 1\r\nx\r\n",
            b"replace a 7 0 4\r\nwxyz\r\n",
            b"append a 0 0 2\r\n12\r\n",
            b"prepend a 0 0 2\r\n00\r\n",
            b"append nope 0 0 1\r\nx\r\n",
            b"prepend nope 0 0 1\r\nx\r\n",
            b"get a b c\r\n",
            b"set bin 0 0 8\r\n\r\n\x00\xff get\r\n",
            b"get bin\r\n",
            b"set empty 0 0 0\r\n\r\n",
            b"get empty\r\n",
            b"set f 4294967295 0 1\r\nx\r\n",
            b"get f\r\n",
            b"set gone 0 -1 1\r\nx\r\n",
            b"get gone\r\n",
            b"set a 0 0 1 noreply\r\nq\r\n",
            b"add a 0 0 1 noreply\r\nr\r\n",
            b"get a\r\n",
            // a data block longer than announced
            b"set k 0 0 1\r\nxy\r\n",
            b"GET a\r\n",
            b"bogus\r\n",
        ],
    );
}

#[test]
fn cas_round_trip_via_gets_replies_like_one_memcached() {
    let (setup, direct) = differential_setup(&[]);
    assert_same_as_memcached(
        &setup,
        &direct,
        &[
            b"set a 3 0 3\r\nold\r\n",
            b"gets a\r\n",
            // `{cas}` is the cas unique the previous `gets` showed on that side
            b"cas a 4 0 3 {cas}\r\nnew\r\n",
            b"cas a 0 0 5 {cas}\r\nstale\r\n",
            b"get a\r\n",
            b"gets a\r\n",
            b"cas a 0 0 2 {cas} noreply\r\nnr\r\n",
            b"get a\r\n",
            b"cas missing 0 0 1 1\r\nx\r\n",
            b"set b 0 0 1\r\nb\r\n",
            b"gets a b missing\r\n",
        ],
    );
    // and the cas round trip really changed the value
    let mut c = setup.client();
    assert_eq!(c.request(b"get a\r\n"), b"VALUE a 0 2\r\nnr\r\nEND\r\n");
}

#[test]
fn arithmetic_delete_and_touch_reply_like_one_memcached() {
    let (setup, direct) = differential_setup(&[]);
    assert_same_as_memcached(
        &setup,
        &direct,
        &[
            b"set n 0 0 2\r\n10\r\n",
            b"incr n 5\r\n",
            b"decr n 100\r\n",
            b"incr n 18446744073709551615\r\n",
            b"incr n 1\r\n",
            b"incr n 7 noreply\r\n",
            b"get n\r\n",
            b"set s 0 0 3\r\nabc\r\n",
            b"incr s 1\r\n",
            b"incr missing 1\r\n",
            b"decr missing 1\r\n",
            b"incr n abc\r\n",
            b"incr n -1\r\n",
            b"incr n\r\n",
            b"touch s 3600\r\n",
            b"touch missing 10\r\n",
            b"touch s abc\r\n",
            b"touch s 3600 noreply\r\n",
            b"delete s\r\n",
            b"delete s\r\n",
            b"set d 0 0 1\r\nd\r\n",
            b"delete d 0\r\n",
            b"set d 0 0 1\r\nd\r\n",
            b"delete d noreply\r\n",
            b"get d s n\r\n",
            b"delete d 5\r\n",
            b"delete\r\n",
            b"incr n 18446744073709551616\r\n",
            b"touch n -1\r\n",
            b"get n\r\n",
        ],
    );
}

#[test]
fn retrieval_commands_and_gat_reply_like_one_memcached() {
    let (setup, direct) = differential_setup(&[]);
    assert_same_as_memcached(
        &setup,
        &direct,
        &[
            b"set a 1 0 1\r\nA\r\nset b 2 0 2\r\nBB\r\nset c 3 0 3\r\nCCC\r\n",
            b"get a\r\n",
            b"get missing\r\n",
            b"get c b a missing c\r\n",
            b"gets a b\r\n",
            b"gat 3600 a b missing\r\n",
            b"gats 0 c a\r\n",
            b"gat 3600 missing\r\n",
            b"gat abc a\r\n",
            b"get\r\n",
            b"get  a   b  \r\n",
            b"gat -1 a\r\n",
            b"get a b c\r\n",
        ],
    );
}

#[test]
fn keys_with_control_bytes_are_refused_and_the_connection_goes_on() {
    // protocol.txt: keys must not include control characters or whitespace. memcached itself
    // only splits on spaces, and nutcracker forwards such keys; Keyway enforces the protocol
    // (a deliberate divergence, documented in the README) and answers a clear error.
    let setup = McSetup::new(4, &[]);
    let mut c = setup.client();
    for request in [
        &b"get tab\tkey\r\n"[..],
        b"delete ctl\x01key\r\n",
        b"mg del\x7fkey v\r\n",
    ] {
        let reply = c.request(request);
        assert!(
            reply.starts_with(b"CLIENT_ERROR "),
            "{} -> {}",
            show(request),
            show(&reply)
        );
    }
    assert_eq!(c.request(b"set ok 0 0 1\r\nx\r\n"), b"STORED\r\n");
    assert_eq!(c.request(b"get ok\r\n"), b"VALUE ok 0 1\r\nx\r\nEND\r\n");
}

#[test]
fn version_is_answered_by_the_proxy_as_memcached_1_6() {
    let setup = McSetup::new(4, &[]);
    let mut c = setup.client();
    let reply = c.request(b"version\r\n");
    assert!(
        reply.starts_with(b"VERSION 1.6") && reply.ends_with(b"\r\n"),
        "version -> {}",
        show(&reply)
    );
    // and the connection keeps working
    assert_eq!(c.request(b"set v 0 0 1\r\nx\r\n"), b"STORED\r\n");
}

#[test]
fn meta_commands_reply_like_one_memcached() {
    let (setup, direct) = differential_setup(&[]);
    // "bin key\x01" in base64: a key the text protocol cannot carry
    assert_same_as_memcached(
        &setup,
        &direct,
        &[
            b"ms m1 3 F7 T0\r\nabc\r\n",
            b"mg m1 v f t s k O123\r\n",
            b"mg m1\r\n",
            b"mg m1 k O9 v\r\n",
            b"mg missing v\r\n",
            b"mg missing v k O5\r\n",
            b"mg m1 c v\r\n",
            b"ms m1 3 C{cas}\r\nxyz\r\n",
            b"ms m1 3 C1\r\nbad\r\n",
            b"mg m1 v\r\n",
            b"ms m1 3 c\r\nnew\r\n",
            b"ms m1 2 MA\r\n++\r\n",
            b"ms m1 2 MP\r\n--\r\n",
            b"ms nope 1 MR\r\nx\r\n",
            b"ms m1 1 ME\r\nx\r\n",
            b"mg m1 v s\r\n",
            b"mg m1 T3600 t v\r\n",
            b"ms m2 2 Z\r\nhi\r\n",
            b"md m1\r\n",
            b"md m1\r\n",
            b"md m1 O77 k\r\n",
            b"ma cnt\r\n",
            b"ma cnt N0 J13 v\r\n",
            b"ma cnt v\r\n",
            b"ma cnt MD D4 v\r\n",
            b"ma cnt MI D18446744073709551615 v\r\n",
            b"mg cnt v\r\n",
            b"ms YmluIGtleQE= 2 b\r\nok\r\n",
            b"mg YmluIGtleQE= b v k\r\n",
            b"mg YmluIGtleQE= b s\r\n",
            b"md YmluIGtleQE= b\r\n",
            b"mg YmluIGtleQE= b v\r\n",
            b"mg !!!notbase64 b v\r\n",
            b"mg m1 v v\r\n",
            b"mg\r\n",
            b"mg auto v N30 s\r\n",
            b"mg auto v\r\n",
            b"ms inv 2 T0\r\nhi\r\n",
            b"md inv I T30\r\n",
            b"mg inv v c\r\n",
            b"ms inv 2 I\r\nho\r\n",
            b"mg inv v\r\n",
            b"ma cnt D abc\r\n",
            b"ma nope q O1\r\n",
            b"mg m1 h v\r\nmg m1 h v\r\n",
        ],
    );
}

#[test]
fn meta_quiet_mode_shows_only_failures_and_mn_is_the_barrier() {
    let (setup, direct) = differential_setup(&[]);
    // one step, one write: the quiet replies that are hidden must not shift later replies
    let mut batch = Vec::new();
    for i in 0..50 {
        batch.extend_from_slice(format!("ms q{i} 2 q T0\r\nv{}\r\n", i % 10).as_bytes());
        batch.extend_from_slice(format!("mg q{i} v q k\r\n").as_bytes());
        batch.extend_from_slice(format!("mg miss{i} v q\r\n").as_bytes());
        batch.extend_from_slice(format!("md miss{i} q O{i}\r\n").as_bytes());
        batch.extend_from_slice(format!("ma q{i} q\r\n").as_bytes());
        batch.extend_from_slice(format!("ms q{i} 1 q ME\r\nx\r\n").as_bytes());
        if i % 7 == 0 {
            batch.extend_from_slice(b"mn\r\n");
        }
    }
    assert_same_as_memcached(
        &setup,
        &direct,
        &[
            &batch,
            b"mg q1 v q\r\nmg q2 q\r\nmd q3 q\r\nmd q3 q\r\nmg q3 v q\r\n",
        ],
    );
    // the barrier really comes last: everything before it is answered before MN
    let mut c = setup.client();
    let replies = c.exchange(b"mg q4 v q\r\nmg nothing v q\r\nmd nothing q\r\n");
    assert_eq!(
        replies,
        vec![b"VA 2\r\nv4\r\n".to_vec(), b"NF\r\n".to_vec()]
    );
}

// ---------------------------------------------------------------------------------------------
// Multi-key get, large values, pipelining
// ---------------------------------------------------------------------------------------------

#[test]
fn get_of_1000_keys_over_4_shards_keeps_order_and_drops_misses_like_one_memcached() {
    let (setup, direct) = differential_setup(&[]);
    let keys: Vec<Vec<u8>> = (0..1000).map(|i| spread_key("multi", i)).collect();
    // every third key is never set: it must vanish from the reply, as memcached drops it
    let stored: Vec<Vec<u8>> = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(i, k)| set_request(k, format!("value-{i}-{}", "x".repeat(i % 50)).as_bytes()))
        .collect();
    let sets = stored.concat();
    for side in [setup.client(), direct.client()] {
        let mut side = side;
        let replies = side.exchange(&sets);
        assert_eq!(replies.len(), stored.len());
        assert!(replies.iter().all(|r| r == b"STORED\r\n"));
    }
    let stored_keys: Vec<Vec<u8>> = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, k)| k.clone())
        .collect();
    assert_spread(&setup, &stored_keys, 4);

    // a shuffled order, so that keys of one shard are not adjacent
    let mut order: Vec<usize> = (0..1000).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let line = |cmd: &str, idx: &[usize]| {
        let mut l = cmd.as_bytes().to_vec();
        for &i in idx {
            l.push(b' ');
            l.extend_from_slice(&keys[i]);
        }
        l.extend_from_slice(b"\r\n");
        l
    };
    // repeated keys: memcached answers each occurrence
    let repeats: Vec<usize> = (0..600).map(|i| (i * 7) % 40).collect();
    let requests = [
        line("get", &order),
        line("get", &(0..1000).collect::<Vec<_>>()),
        line("gets", &order),
        line("get", &repeats),
        line("gat 0", &order[..500]),
        line("get", &[0, 3, 6, 9]),
    ];
    let mut proxied = setup.client();
    let mut reference = direct.client();
    for request in &requests {
        let want = reference.request(request);
        let got = proxied.request(request);
        assert_eq!(
            normalise(&got),
            normalise(&want),
            "{}: the proxy's reply differs from memcached's",
            show(&request[..40])
        );
    }
    // the full get really returned the 666 stored keys in the client's order
    let got = parse_values(&proxied.request(&requests[1]));
    let got_keys: Vec<Vec<u8>> = got.into_iter().map(|(k, _)| k).collect();
    assert_eq!(got_keys, stored_keys);
}

/// The largest value memcached (default `-I 1m`) stores under `key`: the limit counts the
/// item header and key, so it is a little under 1 MiB.
fn largest_value_stored(server: &MemcachedServer, key: &str) -> usize {
    let mut c = server.client();
    let (mut lo, mut hi): (usize, usize) = (1024 * 1024 - 4096, 1024 * 1024);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let reply = c.request(&set_request(key.as_bytes(), &vec![b'x'; mid]));
        if reply == b"STORED\r\n" {
            lo = mid;
        } else {
            assert_eq!(reply, b"SERVER_ERROR object too large for cache\r\n");
            hi = mid - 1;
        }
    }
    lo
}

#[test]
fn largest_value_memcached_accepts_round_trips_and_larger_ones_fail_alike() {
    let (setup, direct) = differential_setup(&[]);
    let key = "big";
    let max = largest_value_stored(&direct, key);
    assert!(
        (1024 * 1024 - 4096..1024 * 1024).contains(&max),
        "memcached stores at most {max} bytes"
    );
    // binary, with CRLFs inside, so that the value cannot be mistaken for the protocol
    let value: Vec<u8> = (0..max).map(|i| (i * 31 % 251) as u8).collect();
    let mut proxied = setup.client();
    let mut reference = direct.client();
    let set = set_request(key.as_bytes(), &value);
    assert_eq!(reference.request(&set), b"STORED\r\n");
    assert_eq!(proxied.request(&set), b"STORED\r\n");
    let reply = proxied.request(b"get big\r\n");
    assert_eq!(
        parse_values(&reply),
        vec![(key.as_bytes().to_vec(), value.clone())]
    );
    assert_eq!(reply, reference.request(b"get big\r\n"));
    // also in a pipeline with small commands around it
    let mut batch = b"get big\r\nset small 0 0 1\r\ns\r\n".to_vec();
    batch.extend_from_slice(&set);
    batch.extend_from_slice(b"get small big\r\n");
    assert_eq!(proxied.exchange(&batch), reference.exchange(&batch));

    // one byte more, exactly 1 MiB, just over it, and far over it: the same error, and the
    // data block is swallowed (the next command works)
    for len in [max + 1, 1024 * 1024, 1024 * 1024 + 1, 2 * 1024 * 1024] {
        let mut request = set_request(key.as_bytes(), &vec![b'y'; len]);
        request.extend_from_slice(b"get small\r\n");
        let want = reference.exchange(&request);
        assert_eq!(
            want,
            vec![
                b"SERVER_ERROR object too large for cache\r\n".to_vec(),
                b"VALUE small 0 1\r\ns\r\nEND\r\n".to_vec()
            ]
        );
        assert_eq!(proxied.exchange(&request), want, "set of {len} bytes");
    }
    // memcached drops the old value when a set is too large; it is gone either way
    assert_eq!(
        proxied.request(b"get big\r\n"),
        reference.request(b"get big\r\n")
    );
}

#[test]
fn pipelined_noreply_and_replied_commands_are_answered_in_order() {
    let (setup, direct) = differential_setup(&[]);
    let mut batch = Vec::new();
    for i in 0..400 {
        let k = format!("p{}", i % 97);
        let cmd = match i % 10 {
            0 => format!("set {k} 0 0 2 noreply\r\n{:02}\r\n", i % 100),
            1 => format!("get {k} p{} {k}\r\n", (i + 1) % 97),
            2 => format!("incr {k} 3 noreply\r\n"),
            3 => format!("incr {k} 1\r\n"),
            4 => format!("append {k} 0 0 1 noreply\r\nz\r\n"),
            5 => format!("delete {k} noreply\r\n"),
            6 => format!("add {k} 0 0 1\r\na\r\n"),
            7 => format!("touch {k} 0 noreply\r\n"),
            8 => format!("mg {k} v q\r\nmg {k} s\r\n"),
            _ => format!("set {k} 0 0 1\r\nv\r\nget {k}\r\n"),
        };
        batch.extend_from_slice(cmd.as_bytes());
    }
    let want = direct.client().exchange(&batch);
    assert!(want.len() > 200, "the batch has replies to compare");
    let got = setup.client().exchange(&batch);
    if got != want {
        let at = got.iter().zip(&want).position(|(g, w)| g != w);
        panic!(
            "{} replies from the proxy, {} from memcached; first difference at {at:?}: {:?} vs {:?}",
            got.len(),
            want.len(),
            at.map(|i| show(&got[i])),
            at.map(|i| show(&want[i]))
        );
    }
    // only noreply commands in one write: no reply at all, then everything is stored
    let mut c = setup.client();
    let silent: Vec<u8> = (0..200)
        .flat_map(|i| {
            let mut set = b"set ".to_vec();
            set.extend_from_slice(&spread_key("nr", i));
            set.extend_from_slice(format!(" 0 0 1 noreply\r\n{}\r\n", i % 10).as_bytes());
            set
        })
        .collect();
    assert_eq!(c.exchange(&silent), Vec::<Vec<u8>>::new());
    let keys: Vec<Vec<u8>> = (0..200).map(|i| spread_key("nr", i)).collect();
    assert_spread(&setup, &keys, 4);
}

// ---------------------------------------------------------------------------------------------
// A real client library
// ---------------------------------------------------------------------------------------------

const PYMEMCACHE_SCRIPT: &str = r#"
import os, sys
try:
    from pymemcache.client.base import Client
except ImportError:
    sys.exit("pymemcache is not installed: python3 -m pip install pymemcache")
def k(i):
    # keys that differ in more than their last digits, so that they spread over the shards
    return "py:%d-%08x" % (i, (i * 2654435761) & 0xFFFFFFFF)
c = Client(("127.0.0.1", int(os.environ["KEYWAY_PORT"])), connect_timeout=5, timeout=5)
assert c.set("py:a", b"1", noreply=False) is True
assert c.get("py:a") == b"1"
assert c.add("py:a", b"x", noreply=False) is False
values = {k(i): str(i).encode() for i in range(300)}
assert c.set_many(values, noreply=False) == []
got = c.get_many([k(i) for i in range(400)])
assert got == values, "get_many: %d of 300 keys" % len(got)
assert c.incr(k(5), 10) == 15
assert c.decr(k(5), 20) == 0
assert c.incr("py:missing", 1) is None
value, cas = c.gets(k(7))
assert value == b"7" and cas
assert c.cas(k(7), b"seven", cas, noreply=False) is True
assert c.cas(k(7), b"again", cas, noreply=False) is False
assert c.get(k(7)) == b"seven"
assert c.delete(k(7), noreply=False) is True
assert c.get(k(7)) is None
assert c.delete(k(7), noreply=False) is False
assert c.touch("py:a", 100, noreply=False) is True
assert c.version().startswith(b"1.6")
c.delete_many([k(i) for i in range(100)])
assert c.get_many([k(i) for i in range(100)]) == {}
print("pymemcache ok")
"#;

#[test]
fn pymemcache_works_through_the_proxy() {
    let setup = McSetup::new(4, &[]);
    let python = find_binary("python3", "python3");
    let port = setup.proxy.addr().rsplit(':').next().unwrap().to_string();
    let mut child = Command::new(python)
        .args(["-c", PYMEMCACHE_SCRIPT])
        .env("KEYWAY_PORT", &port)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let finished = wait_until(Duration::from_secs(60), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !finished {
        let _ = child.kill();
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(finished, "the pymemcache script hung; stderr:\n{stderr}");
    assert!(
        output.status.success(),
        "the pymemcache script failed (install it with `python3 -m pip install pymemcache`):\n{stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "pymemcache ok"
    );
    // what the library wrote is really in the shards
    let keys: Vec<Vec<u8>> = (100..300)
        .map(|i: u64| format!("py:{i}-{:08x}", (i * 2_654_435_761) & 0xFFFF_FFFF).into_bytes())
        .collect();
    assert_spread(&setup, &keys, 4);
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

/// What a client got after sending bad input: replies before the connection closed (or the
/// replies so far, if it stayed open), or a hang.
struct Answer {
    replies: Vec<Vec<u8>>,
    closed: bool,
}

/// Sends `input` on a fresh connection and collects what comes back until the proxy closes
/// or stays quiet for a moment after at least `expect` replies; a silent proxy is a hang.
fn send_bad(proxy: &Proxy, input: &[u8], expect: usize) -> Answer {
    let mut c = proxy.mc_client();
    // the proxy may close before reading everything: a failed write is fine
    let _ = c.try_send(input);
    let mut replies = Vec::new();
    loop {
        if replies.len() >= expect {
            c.set_read_timeout(Duration::from_millis(300));
        }
        match c.try_read_reply() {
            Ok(r) => replies.push(r),
            Err(ReadError::Closed) => {
                return Answer {
                    replies,
                    closed: true,
                }
            }
            Err(ReadError::Timeout) if replies.len() >= expect => {
                return Answer {
                    replies,
                    closed: false,
                }
            }
            Err(e) => panic!(
                "{}: no answer ({e:?}) after {}; buffered {}",
                show(input),
                show_all(&replies),
                show(c.buffered())
            ),
        }
    }
}

/// A bad-input case: name, bytes to send, replies to wait for, and the exact replies when
/// they are known.
type BadCase = (&'static str, Vec<u8>, usize, Option<Vec<&'static [u8]>>);

fn is_error_reply(r: &[u8]) -> bool {
    r.starts_with(b"CLIENT_ERROR ") || r == b"ERROR\r\n" || r.starts_with(b"SERVER_ERROR ")
}

#[test]
fn bad_input_gets_an_error_or_a_close_while_other_clients_keep_working() {
    let mut setup = McSetup::new(4, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let healthy_ops = Arc::new(AtomicUsize::new(0));
    let healthy = {
        let (stop, ops) = (stop.clone(), healthy_ops.clone());
        let mut c = setup.client();
        thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = format!("healthy:{}", i % 50);
                let replies = c.exchange(
                    format!("set {k} 0 0 3\r\n{:03}\r\nget {k}\r\n", i % 1000).as_bytes(),
                );
                assert_eq!(
                    replies,
                    vec![
                        b"STORED\r\n".to_vec(),
                        format!("VALUE {k} 0 3\r\n{:03}\r\nEND\r\n", i % 1000).into_bytes()
                    ]
                );
                ops.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };

    let long_key = "k".repeat(300);
    let big = 2 * 1024 * 1024;
    let mut oversized = format!("set big 0 0 {big}\r\n").into_bytes();
    oversized.resize(oversized.len() + big, b'z');
    oversized.extend_from_slice(b"\r\nget big\r\n");
    let binary_get: &[u8] = &[
        0x80, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'a',
    ];
    let mut garbage: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + 3) as u8 | 1).collect();
    garbage.retain(|&b| b != b'\n');
    let cases: Vec<BadCase> = vec![
        (
            "length over the item limit, data sent",
            oversized,
            2,
            Some(vec![
                b"SERVER_ERROR object too large for cache\r\n",
                b"END\r\n",
            ]),
        ),
        (
            "length over i32",
            b"set k 0 0 4294967296\r\n".to_vec(),
            1,
            None,
        ),
        (
            "too many arguments to set",
            b"set k 0 0 1 2 3\r\nx\r\n".to_vec(),
            1,
            None,
        ),
        (
            "negative length",
            b"set k 0 0 -1\r\nx\r\n".to_vec(),
            1,
            None,
        ),
        (
            "non-numeric length",
            b"set k 0 0 ab\r\nx\r\n".to_vec(),
            1,
            None,
        ),
        (
            "data block without its terminator",
            b"set k 0 0 3\r\nabcXYget k\r\n".to_vec(),
            1,
            None,
        ),
        (
            "300-byte key in get",
            format!("get {long_key}\r\n").into_bytes(),
            1,
            Some(vec![b"CLIENT_ERROR bad command line format\r\n"]),
        ),
        (
            "300-byte key in set",
            format!("set {long_key} 0 0 1\r\nx\r\nget k\r\n").into_bytes(),
            1,
            None,
        ),
        (
            "300-byte key in mg",
            format!("mg {long_key} v\r\n").into_bytes(),
            1,
            Some(vec![b"CLIENT_ERROR bad command line format\r\n"]),
        ),
        ("binary protocol magic", binary_get.to_vec(), 1, None),
        (
            "unknown command",
            b"flush_everything now\r\n".to_vec(),
            1,
            Some(vec![b"ERROR\r\n"]),
        ),
        ("empty line", b"\r\n".to_vec(), 1, Some(vec![b"ERROR\r\n"])),
        (
            "get without keys",
            b"get\r\n".to_vec(),
            1,
            Some(vec![b"ERROR\r\n"]),
        ),
        ("ms without length", b"ms k\r\n".to_vec(), 1, None),
        ("garbage without newline", garbage, 1, None),
        (
            "garbage lines",
            b"\x01\x02\x03\r\n\xff\xfe zz\r\n".to_vec(),
            2,
            Some(vec![b"ERROR\r\n", b"ERROR\r\n"]),
        ),
    ];
    let mut failures = Vec::new();
    for (name, input, expect, exact) in &cases {
        let started = Instant::now();
        let answer = send_bad(&setup.proxy, input, *expect);
        let elapsed = started.elapsed();
        let first_ok = answer.replies.first().is_none_or(|r| is_error_reply(r));
        let exact_ok = exact.as_ref().is_none_or(|want| {
            answer.replies.len() == want.len()
                && answer.replies.iter().zip(want).all(|(g, w)| g == w)
        });
        if !first_ok || !exact_ok || (answer.replies.is_empty() && !answer.closed) {
            failures.push(format!(
                "{name}: replies {}, closed {}",
                show_all(&answer.replies),
                answer.closed
            ));
        }
        assert!(
            elapsed < Duration::from_secs(20),
            "{name}: took {elapsed:?}"
        );
        setup.proxy.assert_alive();
    }

    // valid commands written one byte at a time get the right replies
    let mut c = setup.client();
    let input = b"set slow 3 0 5\r\nhel\r\n\r\nget slow\r\nmg slow s v\r\nmn\r\n";
    for b in input {
        c.send(&[*b]);
    }
    assert_eq!(
        c.read_until_mn(),
        vec![
            b"STORED\r\n".to_vec(),
            b"VALUE slow 3 5\r\nhel\r\n\r\nEND\r\n".to_vec(),
            b"VA 5 s5\r\nhel\r\n\r\n".to_vec(),
        ]
    );

    stop.store(true, Ordering::Relaxed);
    healthy
        .join()
        .expect("the healthy client saw a wrong reply");
    assert!(healthy_ops.load(Ordering::Relaxed) > 0);
    setup.proxy.assert_alive();
    assert!(
        failures.is_empty(),
        "bad input answered wrongly:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

/// Sets `count` keys `{prefix}:N` through the proxy and groups them by the shard holding them.
fn keys_by_shard(setup: &McSetup, prefix: &str, count: usize) -> Vec<Vec<Vec<u8>>> {
    let keys: Vec<Vec<u8>> = (0..count).map(|i| spread_key(prefix, i)).collect();
    let sets: Vec<u8> = keys.iter().flat_map(|k| set_request(k, b"v")).collect();
    let replies = setup.client().exchange(&sets);
    assert!(
        replies.iter().all(|r| r == b"STORED\r\n"),
        "{}",
        show_all(&replies)
    );
    let held: Vec<HashSet<Vec<u8>>> = setup.shards.iter().map(|s| s.holding(&keys)).collect();
    let by_shard: Vec<Vec<Vec<u8>>> = held
        .iter()
        .map(|h| keys.iter().filter(|k| h.contains(*k)).cloned().collect())
        .collect();
    assert_eq!(by_shard.iter().map(Vec::len).sum::<usize>(), count);
    assert!(
        by_shard.iter().all(|s| !s.is_empty()),
        "keys on every shard"
    );
    by_shard
}

fn get_line(key: &[u8]) -> Vec<u8> {
    [b"get ".as_slice(), key, b"\r\n"].concat()
}

fn value_reply(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "VALUE {} 0 {}\r\n",
        String::from_utf8_lossy(key),
        value.len()
    )
    .into_bytes();
    r.extend_from_slice(value);
    r.extend_from_slice(b"\r\nEND\r\n");
    r
}

#[test]
fn a_killed_memcached_gives_server_errors_for_its_keys_only_and_comes_back() {
    let mut setup = McSetup::new(4, &[("timeout", "2000")]);
    let by_shard = keys_by_shard(&setup, "kill", 200);
    setup.shards[0].kill();
    let mut c = setup.client();
    for k in by_shard[0].iter().take(5) {
        let reply = c.request(&get_line(k));
        assert!(
            reply.starts_with(b"SERVER_ERROR ") && reply.ends_with(b"\r\n"),
            "get {} on the dead shard -> {}",
            show(k),
            show(&reply)
        );
        let reply = c.request(&set_request(k, b"w"));
        assert!(
            reply.starts_with(b"SERVER_ERROR "),
            "set -> {}",
            show(&reply)
        );
    }
    for shard in &by_shard[1..] {
        for k in shard.iter().take(5) {
            assert_eq!(c.request(&get_line(k)), value_reply(k, b"v"));
        }
    }
    // a multi-key get touching the dead shard fails as a whole (nutcracker does the same)
    let multi = [
        b"get ".as_slice(),
        &by_shard[1][0],
        b" ",
        &by_shard[0][0],
        b"\r\n",
    ]
    .concat();
    let reply = c.request(&multi);
    assert!(reply.starts_with(b"SERVER_ERROR "), "{}", show(&reply));

    setup.shards[0].restart();
    let k = by_shard[0][0].clone();
    let back = wait_until(Duration::from_secs(10), || {
        c.request(&set_request(&k, b"again")) == b"STORED\r\n"
    });
    assert!(back, "the restarted shard is used again");
    assert_eq!(setup.shards[0].get(&k), Some(b"again".to_vec()));
    assert_eq!(c.request(&get_line(&k)), value_reply(&k, b"again"));
}

#[test]
fn a_frozen_memcached_times_out_and_recovers_after_sigcont() {
    let setup = McSetup::new(4, &[("timeout", "500")]);
    let by_shard = keys_by_shard(&setup, "freeze", 200);
    setup.shards[0].pause();
    let mut c = setup.client();
    let frozen = by_shard[0][0].clone();
    let started = Instant::now();
    let reply = c.request(&get_line(&frozen));
    assert_eq!(
        reply,
        b"SERVER_ERROR Connection timed out\r\n",
        "get {}",
        show(&frozen)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a 500 ms timeout took {:?}",
        started.elapsed()
    );
    // the other shards keep answering while one is frozen, also on the same connection
    let other = by_shard[1][0].clone();
    assert_eq!(c.request(&get_line(&other)), value_reply(&other, b"v"));
    let mut c2 = setup.client();
    assert_eq!(
        c2.request(&get_line(&by_shard[2][0])),
        value_reply(&by_shard[2][0], b"v")
    );

    setup.shards[0].resume();
    let recovered = wait_until(Duration::from_secs(10), || {
        c.request(&get_line(&frozen)) == value_reply(&frozen, b"v")
    });
    assert!(recovered, "the shard answers again after SIGCONT");
    // and the connection is in sync: replies still match their requests
    let replies = c.exchange(&[get_line(&other), get_line(&frozen)].concat());
    assert_eq!(
        replies,
        vec![value_reply(&other, b"v"), value_reply(&frozen, b"v")]
    );
}

#[test]
fn auto_eject_moves_a_dead_shards_keys_to_the_others() {
    let mut setup = McSetup::new(
        4,
        &[
            ("auto_eject_hosts", "true"),
            ("server_failure_limit", "1"),
            ("server_retry_timeout", "60000"),
            ("timeout", "1000"),
        ],
    );
    let by_shard = keys_by_shard(&setup, "eject", 200);
    setup.shards[0].kill();
    let mut c = setup.client();
    let moved = by_shard[0][0].clone();
    let mut last = Vec::new();
    let remapped = wait_until(Duration::from_secs(10), || {
        last = c.request(&set_request(&moved, b"moved"));
        last == b"STORED\r\n"
    });
    assert!(
        remapped,
        "set of a dead shard's key never succeeded: {}",
        show(&last)
    );
    let live = &setup.shards[1..];
    let holders: Vec<usize> = live
        .iter()
        .enumerate()
        .filter(|(_, s)| s.get(&moved) == Some(b"moved".to_vec()))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        holders.len(),
        1,
        "the moved key is on live shards {holders:?}"
    );
    assert_eq!(c.request(&get_line(&moved)), value_reply(&moved, b"moved"));
    // every other dead-shard key is served (as a miss) instead of failing
    for k in by_shard[0].iter().skip(1).take(20) {
        assert_eq!(c.request(&get_line(k)), b"END\r\n", "get {}", show(k));
    }
    // keys of the live shards stay where they were (ketama moves only the ejected shard's)
    for (i, shard) in by_shard.iter().enumerate().skip(1) {
        for k in shard.iter().take(10) {
            assert_eq!(c.request(&set_request(k, b"again")), b"STORED\r\n");
            assert_eq!(
                setup.shards[i].get(k),
                Some(b"again".to_vec()),
                "{}",
                show(k)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The example config
// ---------------------------------------------------------------------------------------------

#[test]
fn the_example_memcache_config_runs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/memcache.yml");
    let original = fs::read_to_string(&path).unwrap();
    let servers = start_memcached_servers(3);
    let proxy = Proxy::start_memcache_on_free_port(ProxyKind::under_test(), |port| {
        // the example's own text, with only the addresses moved to this test's processes
        let mut server = servers.iter();
        let mut rewritten = String::new();
        for line in original.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("listen:") {
                rewritten.push_str(&format!("  listen: 127.0.0.1:{port}\n"));
            } else if let Some(entry) = trimmed.strip_prefix("- 127.0.0.1:") {
                let name = entry.split_whitespace().nth(1).unwrap();
                let s = server.next().expect("three servers in the example");
                rewritten.push_str(&format!("   - {}:1 {name}\n", s.addr()));
            } else {
                rewritten.push_str(line);
                rewritten.push('\n');
            }
        }
        assert!(server.next().is_none(), "the example lists three servers");
        rewritten
    });
    let keys: Vec<Vec<u8>> = (0..300).map(|i| spread_key("conf", i)).collect();
    let mut c = proxy.mc_client();
    let sets: Vec<u8> = keys.iter().flat_map(|k| set_request(k, b"ok")).collect();
    assert!(c.exchange(&sets).iter().all(|r| r == b"STORED\r\n"));
    for k in keys.iter().step_by(37) {
        assert_eq!(c.request(&get_line(k)), value_reply(k, b"ok"));
    }
    let per_server: Vec<usize> = servers.iter().map(|s| s.holding(&keys).len()).collect();
    assert_eq!(per_server.iter().sum::<usize>(), keys.len());
    assert!(
        per_server.iter().all(|&n| n > 0),
        "keys spread: {per_server:?}"
    );
}
