//! A malformed frame never reaches a backend: the proxy judges every frame by Redis's own
//! grammar (lengths included: `$04`, `*02`, `$+4`, `$-0` are errors to Redis), so a frame it
//! accepts is one Redis accepts. A frame Redis would refuse, forwarded on a shared backend
//! connection, makes Redis close that connection under every other client's requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::thread;

use common::*;

/// Frames that Redis answers `-ERR Protocol error: ...` (and closes), or that are malformed
/// in a way that leaves the stream unframed; with a name for the failure message.
const BATTERY: &[(&str, &[u8])] = &[
    (
        "leading zero in a bulk length",
        b"*2\r\n$3\r\nGET\r\n$04\r\nfz:a\r\n",
    ),
    (
        "leading zero in a multibulk length",
        b"*02\r\n$3\r\nGET\r\n$4\r\nfz:b\r\n",
    ),
    (
        "plus sign in a bulk length",
        b"*2\r\n$3\r\nGET\r\n$+4\r\nfz:c\r\n",
    ),
    ("bulk length -0", b"*2\r\n$3\r\nGET\r\n$-0\r\n\r\n"),
    (
        "multibulk length -0",
        b"*-0\r\n*2\r\n$3\r\nGET\r\n$4\r\nfz:d\r\n",
    ),
    ("bulk length 00", b"*2\r\n$3\r\nGET\r\n$00\r\n\r\n"),
    (
        "zero-padded bulk length",
        b"*2\r\n$3\r\nGET\r\n$0000000004\r\nfz:e\r\n",
    ),
    (
        "space before a bulk length",
        b"*2\r\n$3\r\nGET\r\n$ 4\r\nfz:f\r\n",
    ),
    (
        "space after a bulk length",
        b"*2\r\n$3\r\nGET\r\n$4 \r\nfz:g\r\n",
    ),
    (
        "space in a multibulk length",
        b"* 2\r\n$3\r\nGET\r\n$4\r\nfz:h\r\n",
    ),
    ("empty bulk length", b"*2\r\n$3\r\nGET\r\n$\r\nfz:i\r\n"),
    ("empty multibulk length", b"*\r\n$3\r\nGET\r\n"),
    ("LF-only multibulk line", b"*2\n$3\r\nGET\r\n$4\r\nfz:j\r\n"),
    ("LF-only bulk line", b"*2\r\n$3\r\nGET\r\n$4\nfz:k\r\n"),
    (
        "nil bulk as an argument",
        b"*3\r\n$3\r\nSET\r\n$4\r\nfz:l\r\n$-1\r\n",
    ),
    ("negative bulk length", b"*2\r\n$-5\r\n"),
    ("huge bulk length", b"*2\r\n$3\r\nGET\r\n$99999999999\r\n"),
    ("huge multibulk length", b"*2000000000\r\n"),
    ("non-numeric multibulk length", b"*x\r\n"),
    ("non-numeric bulk length", b"*1\r\n$abc\r\nPING\r\n"),
    (
        "missing CRLF after a bulk",
        b"*2\r\n$3\r\nGET\r\n$4\r\nfz:mxx",
    ),
    (
        "CR without LF after a length",
        b"*2\r\n$3\r\nGET\r\n$4\rxfz:n\r\n",
    ),
    (
        "not a bulk inside a multibulk",
        b"*2\r\n$3\r\nGET\r\n+fz:o\r\n",
    ),
    (
        "garbage bytes",
        b"\x00\xff\x13\x37garbage\x01\x02\r\n\xfe\xfd",
    ),
];

/// Value sizes of the warm-up pipelines: they leave the backend connections' buffers in
/// different states (grown, partly filled) when the malformed frame arrives.
const WARM_UP_VALUES: &[usize] = &[16, 1024, 16 * 1024];

/// How many times the whole battery runs: the failure this guards against showed in about two
/// of three tries, so a single pass could miss it.
const ROUNDS: usize = 4;

/// Errors a backend has answered so far (`total_error_replies`): a malformed frame that
/// reached it is answered with a protocol error, so any growth means the proxy forwarded one.
fn error_replies(server: &RedisServer) -> u64 {
    let info = match server.client().cmd(&["INFO", "stats"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO stats -> {other:?}"),
    };
    info.lines()
        .find_map(|l| l.strip_prefix("total_error_replies:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total_error_replies in INFO stats:\n{info}"))
}

/// One client pipelines 300 SETs of `value_size`-byte values, reads them all, and closes.
fn warm_up(addr: &str, value_size: usize, round: usize) {
    let value = vec![b'w'; value_size];
    let requests: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            encode(&[
                b"SET".as_slice(),
                format!("warm:{round}:{i}").as_bytes(),
                &value,
            ])
        })
        .collect();
    let mut c = Client::connect(addr);
    for (i, reply) in c.pipeline(&requests).into_iter().enumerate() {
        assert_eq!(
            reply,
            Reply::ok(),
            "warm-up SET {i} of {value_size}-byte values"
        );
    }
    c.close();
}

#[test]
fn malformed_frames_never_disturb_other_clients_or_reach_redis() {
    let setup = Setup::new(3, &[]);
    let addr = setup.proxy.addr().to_string();
    let innocent: &Vec<Vec<u8>> = &(0..60)
        .map(|i| encode(&["SET", &format!("innocent:{i}"), "v"]))
        .collect();
    let errors_before: Vec<u64> = setup.shards.iter().map(error_replies).collect();
    for round in 0..ROUNDS {
        for (i, (name, frame)) in BATTERY.iter().enumerate() {
            let size = WARM_UP_VALUES[(round + i) % WARM_UP_VALUES.len()];
            warm_up(&addr, size, round);
            let mut bad = Client::connect(&addr);
            // Two innocent clients connected one after the other: clients are dealt to the
            // worker threads in turn, so one of them shares the bad client's worker (and its
            // backend connections).
            let innocents = [Client::connect(&addr), Client::connect(&addr)];
            // The proxy may close as soon as it has read the frame; that is allowed.
            let _ = bad.try_send_raw(frame);
            let replies: Vec<Vec<Reply>> = thread::scope(|scope| {
                let running: Vec<_> = innocents
                    .into_iter()
                    .map(|mut c| scope.spawn(move || c.pipeline(innocent)))
                    .collect();
                running.into_iter().map(|t| t.join().unwrap()).collect()
            });
            bad.close();
            for replies in replies {
                let failed: Vec<String> = replies
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| **r != Reply::ok())
                    .map(|(n, r)| format!("SET {n} -> {r:?}"))
                    .collect();
                let shown: Vec<&String> = failed.iter().take(3).collect();
                assert!(
                    failed.is_empty(),
                    "round {round}, after a {size}-byte warm-up, {name} ({}) sent by another \
                     client broke {} of 60 pipelined SETs, as {shown:?}...",
                    show(frame),
                    failed.len()
                );
            }
            let errors: Vec<u64> = setup.shards.iter().map(error_replies).collect();
            assert_eq!(
                errors,
                errors_before,
                "round {round}: {name} ({}) reached a backend, which answered it with an error",
                show(frame)
            );
        }
    }
}

#[test]
fn malformed_frames_get_the_protocol_error_redis_would_send() {
    let setup = Setup::new(3, &[]);
    let errors_before: Vec<u64> = setup.shards.iter().map(error_replies).collect();
    let cases: &[(&[u8], &str)] = &[
        (
            b"*2\r\n$3\r\nGET\r\n$04\r\nfz:a\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*02\r\n$3\r\nGET\r\n$4\r\nfz:a\r\n",
            "ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n$+4\r\nfz:a\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*-0\r\n*1\r\n$4\r\nPING\r\n",
            "ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*1\r\n$-0\r\n\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
    ];
    for (frame, expected) in cases {
        let mut c = setup.client();
        c.send_raw(frame);
        match c.try_read_reply() {
            Ok(Reply::Error(text)) => assert_eq!(text, *expected, "{}", show(frame)),
            other => panic!("{} -> {other:?}", show(frame)),
        }
        assert!(
            matches!(c.try_read_reply(), Err(ReadError::Closed)),
            "{}: the connection should close after a protocol error",
            show(frame)
        );
    }
    let errors: Vec<u64> = setup.shards.iter().map(error_replies).collect();
    assert_eq!(errors, errors_before, "a malformed frame reached a backend");
    // the canonical spellings still work
    let mut c = setup.client();
    c.send_raw(b"*-5\r\n*3\r\n$3\r\nSET\r\n$2\r\nfz\r\n$0\r\n\r\n");
    assert_eq!(c.read_reply(), Reply::ok());
    assert_eq!(c.cmd(&["GET", "fz"]), Reply::bulk(""));
}
