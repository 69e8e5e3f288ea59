//! Differential placement test for memcached pools: for every hash function and for ketama and
//! modula, the same config through the real `nutcracker` and through the proxy under test must
//! put every key on the same memcached. Keys written through one proxy are all read back
//! through the other (100% hits, same value), and each backend is checked directly.
//!
//! Some backends listen on `127.0.0.X:11211`: nutcracker names an unnamed server on port 11211
//! by its host alone, which changes both the ketama points and modula's (name-sorted) order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::collections::{HashMap, HashSet};
use std::thread;

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
}

/// 1,000 distinct keys memcached's text protocol can carry (no spaces or control bytes, at
/// most 250 bytes): plain, bytes ≥ 0x80, up to the maximum length, and `{}` / `$$` hash tags.
fn test_keys() -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for i in 0..400 {
        keys.push(format!("key:{i}").into_bytes());
    }
    for i in 0..100 {
        keys.push(format!("user:{i}:profile").into_bytes());
    }
    for _ in 0..200 {
        let len = 1 + rng.below(40) as usize;
        // printable ASCII without space, and bytes 0x80..=0xff
        keys.push(
            (0..len)
                .map(|_| match rng.below(3) {
                    0 => 0x80 + rng.below(0x80) as u8,
                    _ => 0x21 + rng.below(0x7f - 0x21) as u8,
                })
                .collect(),
        );
    }
    for i in 0..50 {
        let len = 200 + rng.below(51) as usize;
        let mut k = format!("long:{i}:").into_bytes();
        k.resize(len, b'x' + (i % 3) as u8);
        keys.push(k);
    }
    for i in 0..40 {
        let t = i % 10;
        keys.push(format!("{{user{t}}}:field:{i}").into_bytes());
        keys.push(format!("obj:{{user{t}}}:{i}").into_bytes());
        keys.push(format!("{{}}empty:{i}").into_bytes());
        keys.push(format!("open{{only:{i}").into_bytes());
        keys.push(format!("$tag{t}$:rest:{i}").into_bytes());
        keys.push(format!("x${t}$y:{i}").into_bytes());
        keys.push(format!("$$empty:{i}").into_bytes());
    }
    let mut seen = HashSet::new();
    keys.retain(|k| !k.is_empty() && seen.insert(k.clone()));
    assert!(keys.len() >= 950, "only {} distinct keys", keys.len());
    keys
}

/// Values differ per round, so that a copy left over from an earlier round on another backend
/// is never mistaken for this round's.
fn value_of(round: usize, i: usize) -> Vec<u8> {
    format!("r{round}-v{i}").into_bytes()
}

fn set_request(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut r = b"set ".to_vec();
    r.extend_from_slice(key);
    r.extend_from_slice(format!(" 0 0 {}\r\n", value.len()).as_bytes());
    r.extend_from_slice(value);
    r.extend_from_slice(b"\r\n");
    r
}

/// Writes every key through `writer`, returns key index → backend index from the backends.
fn write_and_locate(
    writer: &Proxy,
    backends: &[MemcachedServer],
    keys: &[Vec<u8>],
    round: usize,
) -> Result<Vec<usize>, String> {
    let sets: Vec<Vec<u8>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| set_request(k, &value_of(round, i)))
        .collect();
    let replies = writer.mc_client().pipeline(&sets);
    if let Some((i, r)) = replies
        .iter()
        .enumerate()
        .find(|(_, r)| r.as_slice() != b"STORED\r\n")
    {
        return Err(format!(
            "set {} through {:?} -> {}",
            show(&keys[i]),
            writer.kind(),
            show(r)
        ));
    }
    let index: HashMap<&[u8], usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_slice(), i))
        .collect();
    let mut placement = vec![usize::MAX; keys.len()];
    for (b, backend) in backends.iter().enumerate() {
        for (k, v) in backend.values(keys) {
            let i = index[k.as_slice()];
            if v != value_of(round, i) {
                continue; // an earlier round's copy
            }
            if placement[i] != usize::MAX {
                return Err(format!(
                    "key {} is on backends {} and {b}",
                    show(&k),
                    placement[i]
                ));
            }
            placement[i] = b;
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

/// Reads every key back through `reader`: all must hit with this round's value.
fn read_all(reader: &Proxy, keys: &[Vec<u8>], round: usize) -> Result<(), String> {
    let gets: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| [b"get ".as_slice(), k, b"\r\n"].concat())
        .collect();
    let replies = reader.mc_client().pipeline(&gets);
    let misses: Vec<String> = replies
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            let want = vec![(keys[*i].clone(), value_of(round, *i))];
            parse_values(r) != want
        })
        .map(|(i, r)| format!("{} -> {}", show(&keys[i]), show(r)))
        .collect();
    if misses.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} gets through {:?} missed, e.g. {:?}",
            misses.len(),
            keys.len(),
            reader.kind(),
            &misses[..misses.len().min(5)]
        ))
    }
}

/// One config, both directions: nutcracker writes / the proxy reads, the proxy writes /
/// nutcracker reads; both placements must be identical backend by backend.
fn check_config(
    backends: &[MemcachedServer],
    keys: &[Vec<u8>],
    round: usize,
    min_backends_used: usize,
    yaml_of: impl Fn(u16) -> String + Sync,
) -> Result<(), String> {
    let (nutcracker, proxy) = thread::scope(|s| {
        let n = s.spawn(|| Proxy::start_memcache_on_free_port(ProxyKind::Nutcracker, &yaml_of));
        let k = s.spawn(|| Proxy::start_memcache_on_free_port(ProxyKind::under_test(), &yaml_of));
        (n.join().unwrap(), k.join().unwrap())
    });

    let by_nutcracker = write_and_locate(&nutcracker, backends, keys, 2 * round)?;
    read_all(&proxy, keys, 2 * round)?;
    let by_proxy = write_and_locate(&proxy, backends, keys, 2 * round + 1)?;
    read_all(&nutcracker, keys, 2 * round + 1)?;

    let moved: Vec<String> = (0..keys.len())
        .filter(|&i| by_nutcracker[i] != by_proxy[i])
        .map(|i| {
            format!(
                "{}: nutcracker {} proxy {}",
                show(&keys[i]),
                backends[by_nutcracker[i]].addr(),
                backends[by_proxy[i]].addr()
            )
        })
        .collect();
    if !moved.is_empty() {
        return Err(format!(
            "{} keys on a different backend, e.g. {:?}",
            moved.len(),
            &moved[..moved.len().min(5)]
        ));
    }
    let used: HashSet<usize> = by_nutcracker.iter().copied().collect();
    if used.len() < min_backends_used {
        return Err(format!(
            "all keys on backends {used:?}: the test data does not spread"
        ));
    }
    Ok(())
}

/// Five memcached servers: three on `127.0.0.X:11211` and two on random 127.0.0.1 ports,
/// interleaved in the config.
fn start_backends() -> Vec<MemcachedServer> {
    let default_port: Vec<_> = (0..3)
        .map(|_| thread::spawn(start_memcached_on_default_port))
        .collect();
    let mut random_port = start_memcached_servers(2);
    let mut backends: Vec<MemcachedServer> = default_port
        .into_iter()
        .map(|h| h.join().expect("memcached start thread"))
        .collect();
    backends.insert(1, random_port.remove(0));
    backends.insert(3, random_port.remove(0));
    assert_eq!(
        backends.iter().filter(|b| b.port() == 11211).count(),
        3,
        "three backends on port 11211"
    );
    backends
}

#[derive(Clone, Copy, Debug)]
enum Naming {
    /// `host:port:weight name`: the ketama point id is the name. The names are not in config
    /// order: nutcracker sorts servers by name, which decides modula's order.
    Named,
    /// `host:port:weight`: the id is `host:port`, or `host` alone on port 11211.
    Unnamed,
}

/// Every hash function with `distribution`; hash function `h` gets hash tag setting
/// `(h + tag_offset) % 3` (none, `{}`, `$$`).
fn check_all_hashes(distribution: &str, naming: Naming, tag_offset: usize) {
    let backends = start_backends();
    let keys = test_keys();
    let weights: [u32; 5] = match naming {
        Naming::Named => [1, 2, 3, 1, 2],
        Naming::Unnamed => [3, 1, 1, 2, 1],
    };
    let lines: Vec<String> = backends
        .iter()
        .zip(weights)
        .enumerate()
        .map(|(i, (b, w))| match naming {
            Naming::Named => b.server_line(w, Some(["mc-c", "mc-a", "mc-e", "mc-b", "mc-d"][i])),
            Naming::Unnamed => b.server_line(w, None),
        })
        .collect();
    let mut failures = Vec::new();
    for (h, hash) in HASHES.iter().enumerate() {
        let hash_tag = match (h + tag_offset) % 3 {
            0 => None,
            1 => Some("\"{}\""),
            _ => Some("\"$$\""),
        };
        let yaml_of = |port: u16| {
            let mut opts = vec![
                ("hash", *hash),
                ("distribution", distribution),
                ("timeout", "5000"),
            ];
            if let Some(t) = hash_tag {
                opts.push(("hash_tag", t));
            }
            memcache_pool_yaml(port, &lines, &opts)
        };
        // nutcracker quirk kept by Keyway: crc16 and crc32 (libmemcached's, 15 bits) hash below
        // 2^16, so on a 32-bit ketama continuum nearly every key falls on the first point
        let min_used = if distribution == "ketama" && (*hash == "crc32" || *hash == "crc16") {
            1
        } else {
            4
        };
        if let Err(e) = check_config(&backends, &keys, h, min_used, yaml_of) {
            failures.push(format!(
                "hash {hash}, {distribution}, {naming:?}, hash_tag {hash_tag:?}: {e}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} configs differ from nutcracker (servers {lines:?}):\n{}",
        failures.len(),
        HASHES.len(),
        failures.join("\n")
    );
}

#[test]
fn ketama_with_named_weighted_memcached_places_keys_like_nutcracker_for_every_hash() {
    check_all_hashes("ketama", Naming::Named, 0);
}

#[test]
fn ketama_with_unnamed_memcached_on_port_11211_places_keys_like_nutcracker_for_every_hash() {
    check_all_hashes("ketama", Naming::Unnamed, 1);
}

#[test]
fn modula_with_named_weighted_memcached_places_keys_like_nutcracker_for_every_hash() {
    check_all_hashes("modula", Naming::Named, 2);
}

#[test]
fn modula_with_unnamed_memcached_on_port_11211_places_keys_like_nutcracker_for_every_hash() {
    check_all_hashes("modula", Naming::Unnamed, 1);
}

#[test]
fn default_hash_and_distribution_place_keys_like_nutcracker() {
    // no `hash:`, no `distribution:`, no `redis:`: the defaults (fnv1a_64, ketama, memcached)
    let backends = start_backends();
    let keys = test_keys();
    let lines: Vec<String> = backends.iter().map(|b| b.server_line(1, None)).collect();
    check_config(&backends, &keys, 0, 3, |port| {
        memcache_pool_yaml(port, &lines, &[])
    })
    .unwrap();
}
