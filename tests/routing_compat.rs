//! Differential routing test: for every hash function and distribution nutcracker supports, the
//! same config through nutcracker and through Keyway must put every key on the same backend.
//! Keys written through one proxy are read back through the other (100% hits, same value), and
//! the placement is checked directly on the backends (KEYS * on each redis).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::collections::{HashMap, HashSet};

use common::*;

const HASHES: [&str; 12] = [
    "one_at_a_time",
    "md5",
    "crc16",
    "crc32",
    "crc32a",
    "fnv1_64",
    "fnv1a_64",
    "fnv1_32",
    "fnv1a_32",
    "hsieh",
    "murmur",
    "jenkins",
];

/// xorshift64*: deterministic keys without a rand dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// ≥ 2,000 distinct keys: plain, binary (bytes ≥ 0x80, CR, LF, NUL, spaces), long, and keys with
/// `{}` and `$$` hash tags in every position, empty tags and unterminated tags.
fn test_keys() -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for i in 0..900 {
        keys.push(format!("key:{i}").into_bytes());
    }
    for i in 0..100 {
        keys.push(format!("user:{i}:profile").into_bytes());
    }
    for _ in 0..400 {
        let len = 1 + rng.below(48) as usize;
        keys.push(rng.bytes(len));
    }
    for i in 0..100u32 {
        let mut k = vec![0x80 + (i % 0x80) as u8, b'\r', b'\n', 0, b' ', 0xff];
        k.extend_from_slice(&i.to_be_bytes());
        keys.push(k);
    }
    for i in 0..100 {
        let len = 200 + rng.below(800) as usize;
        let mut k = format!("long:{i}:").into_bytes();
        k.resize(len, b'x' + (i % 3) as u8);
        keys.push(k);
    }
    for i in 0..80 {
        let t = i % 20;
        keys.push(format!("{{user{t}}}:field:{i}").into_bytes());
        keys.push(format!("obj:{{user{t}}}:{i}").into_bytes());
        keys.push(format!("{{}}empty:{i}").into_bytes());
        keys.push(format!("open{{only:{i}").into_bytes());
        keys.push(format!("$tag{t}$:rest:{i}").into_bytes());
        keys.push(format!("x${t}$y:{i}").into_bytes());
        keys.push(format!("$$empty:{i}").into_bytes());
        keys.push(format!("{{a}}{{b{i}}}").into_bytes());
    }
    let mut seen = HashSet::new();
    keys.retain(|k| !k.is_empty() && seen.insert(k.clone()));
    assert!(keys.len() >= 2000, "only {} distinct keys", keys.len());
    keys
}

fn value_of(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

#[derive(Clone, Copy, Debug)]
enum Naming {
    /// `host:port:weight name`: the ketama point id is the name. The names are deliberately not
    /// in config order: nutcracker sorts its servers by name, which decides modula's order.
    Named,
    /// `host:port:weight`: the ketama point id is `host:port`; the random ports are in no
    /// particular order, so modula's order again comes from nutcracker's sort.
    Unnamed,
}

/// Writes every key through `writer`, returns key index → backend index from the backends.
fn write_and_locate(
    writer: &Proxy,
    shards: &[RedisServer],
    keys: &[Vec<u8>],
) -> Result<Vec<usize>, String> {
    for s in shards {
        s.flushall();
    }
    let cmds: Vec<Vec<u8>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| encode(&[b"SET".as_slice(), k, &value_of(i)]))
        .collect();
    let replies = writer.client().pipeline(&cmds);
    if let Some((i, r)) = replies.iter().enumerate().find(|(_, r)| **r != Reply::ok()) {
        return Err(format!(
            "SET {} through {:?} -> {r:?}",
            show(&keys[i]),
            writer.kind()
        ));
    }
    let index: HashMap<&[u8], usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_slice(), i))
        .collect();
    let mut placement = vec![usize::MAX; keys.len()];
    for (s, server) in shards.iter().enumerate() {
        for k in server.keys() {
            let Some(&i) = index.get(k.as_slice()) else {
                return Err(format!("backend {s} holds unexpected key {}", show(&k)));
            };
            if placement[i] != usize::MAX {
                return Err(format!(
                    "key {} is on backends {} and {s}",
                    show(&k),
                    placement[i]
                ));
            }
            placement[i] = s;
        }
    }
    if let Some(i) = placement.iter().position(|p| *p == usize::MAX) {
        return Err(format!(
            "key {} written through {:?} is on no backend",
            show(&keys[i]),
            writer.kind()
        ));
    }
    Ok(placement)
}

/// Reads every key back through `reader`: all must hit with the value written.
fn read_all(reader: &Proxy, keys: &[Vec<u8>]) -> Result<(), String> {
    let cmds: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| encode(&[b"GET".as_slice(), k]))
        .collect();
    let replies = reader.client().pipeline(&cmds);
    let misses: Vec<String> = replies
        .iter()
        .enumerate()
        .filter(|(i, r)| **r != Reply::bulk(value_of(*i)))
        .map(|(i, r)| format!("{} -> {r:?}", show(&keys[i])))
        .collect();
    if misses.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} GETs through {:?} missed, e.g. {:?}",
            misses.len(),
            keys.len(),
            reader.kind(),
            &misses[..misses.len().min(5)]
        ))
    }
}

/// One config, both directions: nutcracker writes / Keyway reads, Keyway writes / nutcracker reads,
/// and both placements must be identical backend by backend.
fn check_config(
    shards: &[RedisServer],
    keys: &[Vec<u8>],
    min_backends_used: usize,
    yaml_of: impl Fn(u16) -> String,
) -> Result<(), String> {
    let nutcracker = Proxy::start_on_free_port(ProxyKind::Nutcracker, &yaml_of);
    let keyway = Proxy::start_on_free_port(ProxyKind::under_test(), &yaml_of);

    let by_nutcracker = write_and_locate(&nutcracker, shards, keys)?;
    read_all(&keyway, keys)?;
    let by_keyway = write_and_locate(&keyway, shards, keys)?;
    read_all(&nutcracker, keys)?;

    let moved: Vec<String> = (0..keys.len())
        .filter(|&i| by_nutcracker[i] != by_keyway[i])
        .map(|i| {
            format!(
                "{}: nutcracker {} keyway {}",
                show(&keys[i]),
                by_nutcracker[i],
                by_keyway[i]
            )
        })
        .collect();
    let used: HashSet<usize> = by_nutcracker.iter().copied().collect();
    if !moved.is_empty() {
        return Err(format!(
            "{} keys on a different backend, e.g. {:?}",
            moved.len(),
            &moved[..moved.len().min(5)]
        ));
    }
    if used.len() < min_backends_used {
        return Err(format!(
            "all keys on backends {used:?}: the test data does not spread"
        ));
    }
    Ok(())
}

/// Every hash function with `distribution`; hash function `h` gets hash tag setting
/// `(h + tag_offset) % 3` (none, `{}`, `$$`), so that across the four callers each hash function
/// meets every setting.
fn check_all_hashes(distribution: &str, naming: Naming, tag_offset: usize) {
    let shards = start_redis_servers(4);
    let keys = test_keys();
    let weights: [u32; 4] = match naming {
        Naming::Named => [1, 2, 3, 1],
        Naming::Unnamed => [3, 1, 1, 2],
    };
    let mut failures = Vec::new();
    for (h, hash) in HASHES.iter().enumerate() {
        let hash_tag = match (h + tag_offset) % 3 {
            0 => None,
            1 => Some("\"{}\""),
            _ => Some("\"$$\""),
        };
        let lines: Vec<String> = shards
            .iter()
            .zip(weights)
            .enumerate()
            .map(|(i, (s, w))| match naming {
                Naming::Named => {
                    server_line(s, w, Some(&format!("redis-{}", ["c", "a", "d", "b"][i])))
                }
                Naming::Unnamed => server_line(s, w, None),
            })
            .collect();
        let yaml_of = |port: u16| {
            let mut opts = vec![
                ("hash", *hash),
                ("distribution", distribution),
                ("timeout", "5000"),
            ];
            if let Some(t) = hash_tag {
                opts.push(("hash_tag", t));
            }
            pool_yaml(port, &lines, &opts)
        };
        // nutcracker quirk kept by Keyway: crc16 and crc32 (libmemcached's, 15 bits) hash below
        // 2^16, so on a 32-bit ketama continuum nearly every key falls on the first point
        let min_used = if distribution == "ketama" && (*hash == "crc32" || *hash == "crc16") {
            1
        } else {
            3
        };
        if let Err(e) = check_config(&shards, &keys, min_used, yaml_of) {
            failures.push(format!(
                "hash {hash}, {distribution}, {naming:?}, hash_tag {hash_tag:?}: {e}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} configs differ from nutcracker:\n{}",
        failures.len(),
        HASHES.len(),
        failures.join("\n")
    );
}

#[test]
fn ketama_with_named_weighted_servers_places_keys_like_nutcracker_for_every_hash() {
    check_all_hashes("ketama", Naming::Named, 0);
}

#[test]
fn ketama_with_unnamed_weighted_servers_places_keys_like_nutcracker_for_every_hash() {
    check_all_hashes("ketama", Naming::Unnamed, 1);
}

#[test]
fn modula_with_named_weighted_servers_places_keys_like_nutcracker_for_every_hash() {
    check_all_hashes("modula", Naming::Named, 2);
}

#[test]
fn modula_with_unnamed_weighted_servers_places_keys_like_nutcracker_for_every_hash() {
    check_all_hashes("modula", Naming::Unnamed, 1);
}

#[test]
fn default_hash_and_distribution_place_keys_like_nutcracker() {
    // no `hash:` and no `distribution:`: both default (fnv1a_64, ketama) must agree
    let shards = start_redis_servers(4);
    let keys = test_keys();
    let lines: Vec<String> = shards.iter().map(|s| server_line(s, 1, None)).collect();
    check_config(&shards, &keys, 3, |port| pool_yaml(port, &lines, &[])).unwrap();
}

#[test]
fn ketama_with_many_equal_servers_places_keys_like_nutcracker() {
    // 8 backends with equal weights exercise the continuum without weight scaling
    let shards = start_redis_servers(8);
    let keys = test_keys();
    let lines: Vec<String> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| server_line(s, 1, Some(&format!("node{i}"))))
        .collect();
    check_config(&shards, &keys, 3, |port| {
        pool_yaml(
            port,
            &lines,
            &[
                ("hash", "murmur"),
                ("distribution", "ketama"),
                ("hash_tag", "\"{}\""),
            ],
        )
    })
    .unwrap();
}
