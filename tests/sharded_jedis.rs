//! `distribution: sharded_jedis` places keys where Jedis's `ShardedJedis` does: keys written
//! straight to the backends by this test's own implementation of Jedis's ring (its own
//! MurmurHash64A, a `BTreeMap` filled as Jedis fills its `TreeMap`, its own key-tag matcher)
//! are all read back through Keyway, for both ways Jedis versions name a named shard's points.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::collections::BTreeMap;

use common::*;

/// MurmurHash64A as in Austin Appleby's reference (`MurmurHash2_64.cpp`), with Jedis's seed:
/// written here from the reference's switch on the tail length, apart from Keyway's code.
fn murmur64a(data: &[u8]) -> i64 {
    let m: u64 = 0xc6a4a7935bd1e995;
    let r = 47;
    let mut h: u64 = 0x1234ABCD ^ (data.len() as u64).wrapping_mul(m);
    let blocks = data.len() / 8;
    for i in 0..blocks {
        let mut k = 0u64;
        for b in 0..8 {
            k |= (data[i * 8 + b] as u64) << (8 * b);
        }
        k = k.wrapping_mul(m);
        k ^= k >> r;
        k = k.wrapping_mul(m);
        h ^= k;
        h = h.wrapping_mul(m);
    }
    let tail = &data[blocks * 8..];
    if !tail.is_empty() {
        for (b, byte) in tail.iter().enumerate().rev() {
            h ^= (*byte as u64) << (8 * b);
        }
        h = h.wrapping_mul(m);
    }
    h ^= h >> r;
    h = h.wrapping_mul(m);
    h ^= h >> r;
    h as i64
}

/// One shard as the application gave it to Jedis.
struct Shard {
    name: Option<&'static str>,
    weight: u32,
}

/// Jedis's `Sharded.initialize`: a sorted map, later points overwriting earlier equal ones.
fn ring(shards: &[Shard], weighted: bool) -> BTreeMap<i64, usize> {
    let mut nodes = BTreeMap::new();
    for (i, shard) in shards.iter().enumerate() {
        for n in 0..160 * shard.weight {
            let point = match (shard.name, weighted) {
                (None, _) => format!("SHARD-{i}-NODE-{n}"),
                (Some(name), true) => format!("{name}*{}{n}", shard.weight),
                (Some(name), false) => format!("{name}*{n}"),
            };
            nodes.insert(murmur64a(point.as_bytes()), i);
        }
    }
    nodes
}

/// `Pattern.compile("\\{(.+?)\\}").matcher(key).find() ? group(1) : key`, for keys without
/// line terminators.
fn key_tag(key: &str) -> &str {
    for (open, _) in key.match_indices('{') {
        let inside = &key[open + 1..];
        if let Some(close) = inside.char_indices().skip(1).find(|&(_, c)| c == '}') {
            return &inside[..close.0];
        }
    }
    key
}

fn owner(ring: &BTreeMap<i64, usize>, key: &str) -> usize {
    let hash = murmur64a(key_tag(key).as_bytes());
    *ring
        .range(hash..)
        .next()
        .or_else(|| ring.iter().next())
        .unwrap()
        .1
}

/// 10,000 keys, a third tagged in various spots, some with tags Jedis reads oddly.
fn keys() -> Vec<String> {
    (0..10_000)
        .map(|n| match n % 6 {
            0 => format!("user:{n}"),
            1 => format!("{{account:{}}}:balance:{n}", n % 97),
            2 => format!("session:{{{}}}:{n}", n % 31),
            3 => format!("k{{}}}}{n}"),
            4 => format!("item-{n}-ключ"),
            _ => format!("a{{}}b{{c{}}}:{n}", n % 7),
        })
        .collect()
}

fn placement_matches_jedis(jedis_names: &str, weighted: bool) {
    let backends = start_redis_servers(4);
    let shards = [
        Shard {
            name: None,
            weight: 1,
        },
        Shard {
            name: Some("cache-b"),
            weight: 2,
        },
        Shard {
            name: None,
            weight: 3,
        },
        Shard {
            name: Some("cache-a"),
            weight: 1,
        },
    ];
    // Listed out of address order: Jedis takes the list as given, and so must Keyway.
    let order = [2usize, 0, 3, 1];
    let lines: Vec<String> = order
        .iter()
        .zip(&shards)
        .map(|(&b, shard)| server_line(&backends[b], shard.weight, shard.name))
        .collect();
    let options = [
        ("distribution", "sharded_jedis"),
        ("hash", "murmur64a"),
        ("hash_tag", "\"{}\""),
        ("jedis_names", jedis_names),
        ("timeout", "5000"),
    ];
    let proxy =
        Proxy::start_on_free_port(ProxyKind::Keyway, |port| pool_yaml(port, &lines, &options));
    let ring = ring(&shards, weighted);
    let keys = keys();
    let mut per_shard: Vec<Vec<Vec<u8>>> = vec![Vec::new(); shards.len()];
    for key in &keys {
        let shard = owner(&ring, key);
        per_shard[shard].push(encode(&[b"SET".as_slice(), key.as_bytes(), key.as_bytes()]));
    }
    for (shard, writes) in per_shard.iter().enumerate() {
        assert!(
            writes.len() > 500,
            "shard {shard} got {} keys",
            writes.len()
        );
        let mut direct = backends[order[shard]].client();
        for reply in direct.pipeline(writes) {
            assert_eq!(reply, Reply::ok());
        }
    }
    let reads: Vec<Vec<u8>> = keys
        .iter()
        .map(|key| encode(&[b"GET".as_slice(), key.as_bytes()]))
        .collect();
    let replies = proxy.client().pipeline(&reads);
    let hits = keys
        .iter()
        .zip(&replies)
        .filter(|(key, reply)| **reply == Reply::bulk(key.as_bytes()))
        .count();
    assert_eq!(hits, keys.len(), "hits through Keyway");
}

#[test]
fn keys_placed_by_jedis_2_10_plain_names_are_all_found() {
    placement_matches_jedis("plain", false);
}

#[test]
fn keys_placed_by_jedis_2_9_weighted_names_are_all_found() {
    placement_matches_jedis("weighted", true);
}
