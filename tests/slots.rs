//! `distribution: slots` over standalone Redis backends (presharding): every key written
//! through Keyway lands on the backend owning its Redis Cluster slot, per the even split and per
//! an explicit `slots` assignment; and Keyway's slot of a key is what `CLUSTER KEYSLOT` answers
//! on a real cluster-enabled Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;

use common::*;
use keyway::config::{BackendAddr, Config};
use keyway::route::slots::slot;
use keyway::route::ShardMap;

/// Deterministic keys: plain, hash-tagged (edge cases included) and binary.
fn keys(count: usize) -> Vec<Vec<u8>> {
    let mut state: u32 = 0x9e37_79b9;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    (0..count)
        .map(|n| match n % 8 {
            0 => format!("key:{n}").into_bytes(),
            1 => format!("{{user:{}}}:name", n / 8).into_bytes(),
            2 => format!("{{user:{}}}:email", n / 16).into_bytes(),
            3 => format!("a{{}}b{{{n}}}").into_bytes(),
            4 => format!("{{{{{n}}}}}").into_bytes(),
            5 => format!("{{{n}").into_bytes(),
            _ => {
                let len = 1 + (next() % 24) as usize;
                let mut key: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                key.extend_from_slice(format!(":{n}").as_bytes());
                key
            }
        })
        .collect()
}

/// Sends `requests` pipelined in batches (so neither side's buffers fill up) and returns the
/// replies in order.
fn pipeline(client: &mut Client, requests: &[Vec<Vec<u8>>]) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(requests.len());
    for batch in requests.chunks(500) {
        for request in batch {
            client.send(request);
        }
        for _ in batch {
            replies.push(client.read_reply());
        }
    }
    replies
}

/// Starts 3 backends named `names` and Keyway over them with `options`; writes `count` keys
/// through Keyway and checks that each is on exactly the backend its slot maps to in the
/// `ShardMap` built from the same config, and that the backends hold nothing else. Returns
/// the keys each backend (in `names` order) holds.
fn keys_land_on_their_slot_owner(
    names: &[&str],
    options: &[(&str, &str)],
    count: usize,
) -> Vec<HashSet<Vec<u8>>> {
    let backends = start_redis_servers(names.len());
    let lines: Vec<String> = backends
        .iter()
        .zip(names)
        .map(|(backend, name)| server_line(backend, 1, Some(name)))
        .collect();
    let mut opts = vec![("distribution", "slots"), ("timeout", "5000")];
    opts.extend_from_slice(options);
    let yaml = pool_yaml(22000, &lines, &opts);
    let config = Config::parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let pool = &config.pools[0];
    let specs: Vec<_> = pool.servers.iter().map(|s| s.shard_spec()).collect();
    let map = ShardMap::new(pool.hash, pool.distribution, pool.hash_tag, &specs);
    let port_of_shard: Vec<u16> = pool
        .servers
        .iter()
        .map(|s| match &s.addr {
            BackendAddr::Tcp { port, .. } => *port,
            other => panic!("{other:?}"),
        })
        .collect();

    let proxy = Proxy::start_on_free_port(ProxyKind::Keyway, |port| pool_yaml(port, &lines, &opts));
    let keys = keys(count);
    let requests: Vec<Vec<Vec<u8>>> = keys
        .iter()
        .map(|key| vec![b"SET".to_vec(), key.clone(), key.clone()])
        .collect();
    let mut client = proxy.client();
    for (key, reply) in keys.iter().zip(pipeline(&mut client, &requests)) {
        assert_eq!(reply, Reply::ok(), "SET {}", show(key));
    }

    let mut expected: HashMap<u16, Vec<Vec<u8>>> = HashMap::new();
    for key in &keys {
        let shard = map
            .route(key)
            .unwrap_or_else(|| panic!("no shard for {}", show(key)));
        expected
            .entry(port_of_shard[shard])
            .or_default()
            .push(key.clone());
    }
    let mut held = Vec::new();
    for backend in &backends {
        let on_backend = backend.keys();
        let wanted: HashSet<Vec<u8>> = expected
            .remove(&backend.port())
            .unwrap_or_default()
            .into_iter()
            .collect();
        let misplaced: Vec<String> = on_backend
            .symmetric_difference(&wanted)
            .map(|k| show(k))
            .take(5)
            .collect();
        assert!(
            misplaced.is_empty(),
            "backend {} holds {} keys, expected {}; first differences: {misplaced:?}",
            backend.port(),
            on_backend.len(),
            wanted.len()
        );
        held.push(on_backend);
    }
    held
}

/// Asserts, independently of `ShardMap`, that every key a backend holds has a slot in that
/// backend's `ranges`, and that it holds some keys.
fn assert_slots_within(held: &[HashSet<Vec<u8>>], ranges: &[&[RangeInclusive<u16>]]) {
    for (backend, (keys, ranges)) in held.iter().zip(ranges).enumerate() {
        assert!(!keys.is_empty(), "backend {backend} holds no key");
        for key in keys {
            let slot = slot(key);
            assert!(
                ranges.iter().any(|range| range.contains(&slot)),
                "backend {backend} holds {} of slot {slot}, outside {ranges:?}",
                show(key)
            );
        }
    }
}

#[test]
fn keys_land_on_the_owner_of_their_slot_with_the_even_split() {
    let held = keys_land_on_their_slot_owner(&["s0", "s1", "s2"], &[], 10_000);
    // redis-cli --cluster create's split over 3 masters.
    assert_slots_within(&held, &[&[0..=5460], &[5461..=10922], &[10923..=16383]]);
    // Each backend owns a third of the slots; distinct keys spread roughly evenly.
    assert!(
        held.iter().all(|keys| keys.len() > 2500),
        "{:?}",
        held.iter().map(HashSet::len).collect::<Vec<_>>()
    );
}

#[test]
fn even_split_follows_the_sorted_server_order() {
    // nutcracker's order: shorter names first, so b, zz, aaa.
    let held = keys_land_on_their_slot_owner(&["aaa", "zz", "b"], &[], 3_000);
    assert_slots_within(&held, &[&[10923..=16383], &[5461..=10922], &[0..=5460]]);
}

#[test]
fn keys_land_on_the_owner_of_their_slot_with_an_explicit_assignment() {
    let slots = "\n    aaa: 0-99, 9000-16383\n    b: 100-3999\n    zz: 4000-8999";
    let held = keys_land_on_their_slot_owner(&["zz", "b", "aaa"], &[("slots", slots)], 5_000);
    assert_slots_within(
        &held,
        &[&[4000..=8999], &[100..=3999], &[0..=99, 9000..=16383]],
    );
}

#[test]
fn slot_matches_cluster_keyslot_of_a_real_redis() {
    let node = RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
    ]);
    let mut keys = keys(2_000);
    keys.extend(
        [
            &b""[..],
            b"123456789",
            b"{}",
            b"{a",
            b"a}",
            b"a{}b{c}",
            b"{{a}}",
            b"}{a}",
            b"{}{a}",
            b"{\x00\xff}",
            b"\xff\xfe\xfd",
        ]
        .map(<[u8]>::to_vec),
    );
    let requests: Vec<Vec<Vec<u8>>> = keys
        .iter()
        .map(|key| vec![b"CLUSTER".to_vec(), b"KEYSLOT".to_vec(), key.clone()])
        .collect();
    let replies = pipeline(&mut node.client(), &requests);
    for (key, reply) in keys.iter().zip(replies) {
        assert_eq!(
            reply,
            Reply::Int(i64::from(slot(key))),
            "CLUSTER KEYSLOT {}",
            show(key)
        );
    }
}
