//! Replies come back complete and in request order, for one deep pipeline and for many
//! concurrent clients whose requests interleave on the same backend connections.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::collections::HashMap;
use std::thread;

use common::*;

#[test]
fn ten_thousand_commands_sent_in_one_write_get_every_reply_in_order() {
    let setup = Setup::new(4, &[]);
    let mut c = setup.client();
    // a model of what Redis must answer, command by command
    let mut model: HashMap<String, i64> = HashMap::new();
    let mut strings: HashMap<String, String> = HashMap::new();
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for i in 0..10_000u64 {
        let n = (i * 2_654_435_761) % 10_007;
        match n % 3 {
            0 => {
                let key = format!("pipe:s:{}", n % 500);
                let v = format!("v{i}");
                requests.push(encode(&["SET", &key, &v]));
                expected.push(Reply::ok());
                strings.insert(key, v);
            }
            1 => {
                let key = format!("pipe:s:{}", n % 500);
                requests.push(encode(&["GET", &key]));
                expected.push(strings.get(&key).map_or(Reply::nil(), Reply::bulk));
            }
            _ => {
                let key = format!("pipe:n:{}", n % 300);
                let count = model.entry(key.clone()).or_insert(0);
                *count += 1;
                requests.push(encode(&["INCR", &key]));
                expected.push(Reply::Int(*count));
            }
        }
    }
    // Client::pipeline sends all 10,000 in one write_all from a helper thread
    let replies = c.pipeline(&requests);
    assert_eq!(replies.len(), expected.len());
    for (i, (got, want)) in replies.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "reply {i} of 10,000 out of order or wrong");
    }
    // the connection is still in step afterwards
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn two_hundred_concurrent_clients_only_ever_see_their_own_replies() {
    let setup = Setup::new(4, &[]);
    let addr = setup.proxy.addr().to_string();
    let handles: Vec<_> = (0..200)
        .map(|client| {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut c = Client::connect(&addr);
                for i in 0..200 {
                    // keys shared by no other client; values unique per client and step
                    let key = format!("conc:{client}:{}", i % 10);
                    let value = format!("client {client} step {i}");
                    assert_eq!(
                        c.cmd(&["SET", &key, &value]),
                        Reply::ok(),
                        "client {client} step {i}"
                    );
                    assert_eq!(
                        c.cmd(&["GET", &key]),
                        Reply::bulk(&value),
                        "client {client} step {i}"
                    );
                }
                // one more check with replies pipelined two at a time
                let replies = c.pipeline(&[
                    encode(&["INCR", &format!("conc:{client}:n")]),
                    encode(&["PING"]),
                ]);
                assert_eq!(replies, vec![Reply::Int(1), Reply::Simple("PONG".into())]);
            })
        })
        .collect();
    let mut failures = 0;
    for h in handles {
        if h.join().is_err() {
            failures += 1;
        }
    }
    assert_eq!(failures, 0, "{failures} of 200 clients saw a wrong reply");
}

/// GET calls a backend has served (INFO commandstats).
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
fn replies_stay_in_request_order_when_an_earlier_shard_answers_later() {
    let setup = Setup::new(4, &[]);
    let by_shard = setup.keys_by_shard("order", 100);
    let mut with_keys = (0..4).filter(|&i| !by_shard[i].is_empty());
    let (slow, fast) = (with_keys.next().unwrap(), with_keys.next().unwrap());
    let (slow_key, fast_key) = (by_shard[slow][0].clone(), by_shard[fast][0].clone());
    let mut c = setup.client();
    assert_eq!(c.cmd(&[b"SET".as_slice(), &slow_key, b"slow"]), Reply::ok());
    assert_eq!(c.cmd(&[b"SET".as_slice(), &fast_key, b"fast"]), Reply::ok());
    let fast_gets = gets_served(&setup.shards[fast]);

    setup.shards[slow].pause();
    let mut wire = encode(&[b"GET".as_slice(), &slow_key]);
    wire.extend_from_slice(&encode(&[b"GET".as_slice(), &fast_key]));
    wire.extend_from_slice(&encode(&["PING"]));
    wire.extend_from_slice(&encode(&[b"MGET".as_slice(), &fast_key, &slow_key]));
    c.send_raw(&wire);
    // the later request has reached its (fast) backend while the first one is stuck
    let fast_done = wait_until(std::time::Duration::from_secs(5), || {
        gets_served(&setup.shards[fast]) > fast_gets
    });
    setup.shards[slow].resume();
    assert!(
        fast_done,
        "the GET on the fast backend was forwarded while the slow one was frozen"
    );
    assert_eq!(c.read_reply(), Reply::bulk("slow"));
    assert_eq!(c.read_reply(), Reply::bulk("fast"));
    assert_eq!(c.read_reply(), Reply::Simple("PONG".into()));
    assert_eq!(
        c.read_reply(),
        Reply::Array(Some(vec![Reply::bulk("fast"), Reply::bulk("slow")]))
    );
}

#[test]
fn pipeline_mixing_local_forwarded_and_fanout_commands_keeps_order() {
    let setup = Setup::new(4, &[]);
    let mut c = setup.client();
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for i in 0..1000 {
        let (a, b) = (format!("mix:{i}:a"), format!("mix:{i}:b"));
        requests.push(encode(&["SET", &a, &format!("{i}")]));
        expected.push(Reply::ok());
        requests.push(encode(&["PING"]));
        expected.push(Reply::Simple("PONG".into()));
        // the previous round's `c` exists, its `a` and `b` were deleted
        let prev = if i == 0 {
            "mix:none".to_string()
        } else {
            format!("mix:{}:c", i - 1)
        };
        requests.push(encode(&[
            "MGET",
            &a,
            &b,
            &prev,
            &format!("mix:{}:a", i.max(1) - 1),
        ]));
        let prev_c = if i == 0 {
            Reply::nil()
        } else {
            Reply::bulk("y")
        };
        let prev_a = if i == 0 {
            Reply::bulk("0")
        } else {
            Reply::nil()
        };
        expected.push(Reply::Array(Some(vec![
            Reply::bulk(format!("{i}")),
            Reply::nil(),
            prev_c,
            prev_a,
        ])));
        requests.push(encode(&["MSET", &b, "x", &format!("mix:{i}:c"), "y"]));
        expected.push(Reply::ok());
        requests.push(encode(&["DEL", &a, &b, "mix:none"]));
        expected.push(Reply::Int(2));
        requests.push(encode(&["GET", &format!("mix:{i}:c")]));
        expected.push(Reply::bulk("y"));
    }
    let replies = c.pipeline(&requests);
    for (i, (got, want)) in replies.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "reply {i}");
    }
}

#[test]
fn pipeline_mixing_errors_and_local_replies_keeps_order() {
    // Keyway answers these itself or with an error, without closing: each in its place
    let setup = Setup::new(4, &[]);
    let mut c = setup.client();
    let mut requests = Vec::new();
    let mut expected: Vec<Option<Reply>> = Vec::new();
    for i in 0..300 {
        let key = format!("errmix:{i}");
        requests.push(encode(&["SET", &key, &format!("{i}")]));
        expected.push(Some(Reply::ok()));
        requests.push(encode(&["ECHO", &format!("echo {i}")]));
        expected.push(Some(Reply::bulk(format!("echo {i}"))));
        requests.push(encode(&["MONITOR"]));
        expected.push(None); // some error
        requests.push(encode(&["GET", &key]));
        expected.push(Some(Reply::bulk(format!("{i}"))));
        requests.push(encode(&["GET"]));
        expected.push(None);
        requests.push(encode(&["INCR", &key]));
        expected.push(Some(Reply::Int(i + 1)));
    }
    let replies = c.pipeline(&requests);
    for (i, (got, want)) in replies.iter().zip(&expected).enumerate() {
        match want {
            Some(w) => assert_eq!(got, w, "reply {i}"),
            None => assert!(got.is_error(), "reply {i}: want an error, got {got:?}"),
        }
    }
}

#[test]
fn a_reply_larger_than_the_client_socket_takes_arrives_whole_and_in_order() {
    // An unpipelined GET's reply is written to the client by the backend connection that
    // reads it; a reply past what the client's socket buffers (a few MiB on loopback) makes
    // that write partial, and the session sends the rest, ahead of the replies behind it.
    let setup = Setup::new(1, &[]);
    let mut c = setup.client();
    let big: Vec<u8> = (0..24 << 20).map(|i: u32| b'a' + (i % 26) as u8).collect();
    let mut set = encode(&[b"SET".as_slice(), b"big", &big]);
    c.send_raw(&set);
    assert_eq!(c.read_reply(), Reply::ok());
    set.clear();
    for round in 0..3 {
        // Alone: the backend connection writes what the socket takes.
        assert!(
            c.cmd(&["GET", "big"]) == Reply::bulk(&big),
            "round {round}: damaged"
        );
        // With replies behind it, which must wait for all of it.
        c.send(&["GET", "big"]);
        c.send(&["GET", "small"]);
        c.send(&["PING"]);
        assert!(
            c.read_reply() == Reply::bulk(&big),
            "round {round}: damaged"
        );
        assert_eq!(c.read_reply(), Reply::nil(), "round {round}");
        assert_eq!(
            c.read_reply(),
            Reply::Simple("PONG".into()),
            "round {round}"
        );
    }
    assert_eq!(c.cmd(&["SET", "small", "s"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "small"]), Reply::bulk("s"));
}
