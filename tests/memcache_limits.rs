//! A memcached pool's `max_request_bytes`, `max_multibulk_length` and `max_key_bytes` apply to
//! its requests, answered in memcached's words: a request over a limit gets the reply memcached
//! gives a request over its own (an item too large, a bad command line), its data block is
//! skipped, and the connection stays usable; only a line longer than the whole request limit,
//! after which the stream cannot be followed, closes it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use common::*;

const TOO_LARGE: &[u8] = b"SERVER_ERROR object too large for cache\r\n";
const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";

fn set(key: &str, value: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!("set {key} 0 0 {}{extra}\r\n", value.len()).into_bytes();
    r.extend_from_slice(value);
    r.extend_from_slice(b"\r\n");
    r
}

/// `set`'s line for a value of `len` bytes is this long (CRLF included) with a 2-byte key.
fn set_line_len(len: usize) -> usize {
    format!("set kk 0 0 {len}\r\n").len()
}

#[test]
fn max_request_bytes_bounds_a_whole_memcached_request() {
    let setup = McSetup::new(2, &[("max_request_bytes", "1000")]);
    let mut c = setup.client();
    // line + data block + CRLF = exactly 1000 bytes: stored
    let fits = 1000 - set_line_len(980) - 2;
    assert_eq!(set_line_len(fits), set_line_len(980));
    let value = vec![b'v'; fits];
    assert_eq!(c.request(&set("kk", &value, "")), b"STORED\r\n");
    assert_eq!(
        parse_values(&c.request(b"get kk\r\n")),
        vec![(b"kk".to_vec(), value.clone())]
    );
    // one byte over: the reply memcached gives an item over its size, the data block is
    // skipped (the next command on the same write is answered), nothing reaches a backend
    let mut over = set("ov", &vec![b'o'; fits + 1], "");
    over.extend_from_slice(b"get kk\r\n");
    let replies = c.exchange(&over);
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0], TOO_LARGE);
    assert_eq!(parse_values(&replies[1]), vec![(b"kk".to_vec(), value)]);
    assert!(setup.shards_holding(b"ov").is_empty());
    // noreply: silent, as memcached is on a too large item with noreply
    let mut quiet = set("ov", &vec![b'o'; 2000], " noreply");
    quiet.extend_from_slice(b"version\r\n");
    let replies = c.exchange(&quiet);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].starts_with(b"VERSION "), "{}", show(&replies[0]));
    // meta set, whose `q` flag does not hide this error
    let mut meta = b"ms ov 2000 q\r\n".to_vec();
    meta.extend_from_slice(&[b'm'; 2000]);
    meta.extend_from_slice(b"\r\n");
    assert_eq!(c.exchange(&meta), vec![TOO_LARGE.to_vec()]);
    assert!(setup.shards_holding(b"ov").is_empty());
    // the connection is still fine
    assert_eq!(c.request(&set("kk", b"after", "")), b"STORED\r\n");

    // a command line longer than the whole limit: answered, then the connection closes
    let mut long = setup.client();
    let keys: Vec<String> = (0..200).map(|i| format!("key{i}")).collect();
    long.send(format!("get {}\r\n", keys.join(" ")).as_bytes());
    assert_eq!(
        long.try_read_reply().unwrap(),
        b"CLIENT_ERROR line too long\r\n"
    );
    assert!(matches!(long.try_read_reply(), Err(ReadError::Closed)));
    setup.proxy.mc_client().request(b"version\r\n");
}

#[test]
fn max_multibulk_length_bounds_the_keys_of_one_get() {
    let setup = McSetup::new(2, &[("max_multibulk_length", "3")]);
    let mut c = setup.client();
    for (i, key) in ["a", "b", "c", "d"].iter().enumerate() {
        assert_eq!(
            c.request(&set(key, format!("{i}").as_bytes(), "")),
            b"STORED\r\n"
        );
    }
    let three = c.request(b"get a b c\r\n");
    assert_eq!(parse_values(&three).len(), 3, "{}", show(&three));
    for command in ["get", "gets"] {
        assert_eq!(
            c.request(format!("{command} a b c d\r\n").as_bytes()),
            b"CLIENT_ERROR too many keys\r\n"
        );
    }
    assert_eq!(
        c.request(b"gat 0 a b c d\r\n"),
        b"CLIENT_ERROR too many keys\r\n"
    );
    // the connection stays usable
    assert_eq!(
        parse_values(&c.request(b"get d\r\n")),
        vec![(b"d".to_vec(), b"3".to_vec())]
    );
}

#[test]
fn max_key_bytes_bounds_memcached_keys_and_never_passes_memcacheds_own_250() {
    let setup = McSetup::new(2, &[("max_key_bytes", "8")]);
    let mut c = setup.client();
    assert_eq!(c.request(&set("12345678", b"x", "")), b"STORED\r\n");
    // a longer key: the reply memcached gives a key over its own limit
    assert_eq!(c.request(b"get 123456789\r\n"), BAD_FORMAT);
    assert_eq!(c.request(b"mg 123456789 v\r\n"), BAD_FORMAT);
    assert_eq!(c.request(b"delete 123456789\r\n"), BAD_FORMAT);
    // a storage command's data block is skipped, never run as a command
    let mut stored = set("123456789", b"get 12345678", "");
    stored.extend_from_slice(b"get 12345678\r\n");
    let replies = c.exchange(&stored);
    assert_eq!(
        replies,
        vec![
            BAD_FORMAT.to_vec(),
            b"VALUE 12345678 0 1\r\nx\r\nEND\r\n".to_vec()
        ]
    );
    assert!(setup.shards_holding(b"123456789").is_empty());

    // a limit above memcached's own: a 251-byte key is refused as memcached refuses it
    let generous = McSetup::new(1, &[("max_key_bytes", "100000")]);
    let direct = MemcachedServer::start();
    let key250 = "k".repeat(250);
    let key251 = "k".repeat(251);
    let mut proxied = generous.client();
    let mut reference = direct.client();
    assert_eq!(proxied.request(&set(&key250, b"v", "")), b"STORED\r\n");
    assert_eq!(reference.request(&set(&key250, b"v", "")), b"STORED\r\n");
    for request in [
        format!("get {key251}\r\n").into_bytes(),
        format!("mg {key251} v\r\n").into_bytes(),
        format!("get {key250}\r\n").into_bytes(),
    ] {
        let want = reference.request(&request);
        assert_eq!(proxied.request(&request), want, "{}", show(&request[..20]));
    }
    assert_eq!(
        proxied.request(format!("mg {key251} v\r\n").as_bytes()),
        BAD_FORMAT
    );
}
