//! Routing benches: each hash function over 16- and 64-byte keys, and `ShardMap::route` over
//! 100 backends per distribution.

// `criterion_group!` defines an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keyway::route::{Distribution, HashFn, ShardMap, ShardSpec};

/// Deterministic keys of `len` bytes, binary included.
fn keys(count: usize, len: usize) -> Vec<Vec<u8>> {
    let mut state: u32 = 0x1234_5678;
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect()
        })
        .collect()
}

fn backends(count: usize) -> Vec<ShardSpec> {
    (0..count)
        .map(|n| ShardSpec {
            name: format!("10.0.{}.{}:6379", n / 256, n % 256),
            weight: 1,
        })
        .collect()
}

fn hash_functions(c: &mut Criterion) {
    let mut group = c.benchmark_group("hash");
    for len in [16, 64] {
        let keys = keys(64, len);
        group.throughput(Throughput::Elements(keys.len() as u64));
        for hash in HashFn::ALL {
            group.bench_with_input(BenchmarkId::new(hash.name(), len), &keys, |b, keys| {
                b.iter(|| {
                    keys.iter()
                        .fold(0u32, |acc, key| acc ^ hash.hash(black_box(key)))
                })
            });
        }
    }
    group.finish();
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_100_backends");
    let shards = backends(100);
    let keys = keys(1024, 16);
    group.throughput(Throughput::Elements(keys.len() as u64));
    for distribution in [
        Distribution::Ketama,
        Distribution::Modula,
        Distribution::Random,
    ] {
        for hash in [HashFn::Fnv1a_64, HashFn::Murmur, HashFn::Md5] {
            let map = ShardMap::new(hash, distribution, Some(*b"{}"), &shards);
            let id = BenchmarkId::new(format!("{distribution:?}"), hash.name());
            group.bench_with_input(id, &keys, |b, keys| {
                b.iter(|| {
                    keys.iter()
                        .filter_map(|key| map.route(black_box(key)))
                        .fold(0usize, |acc, shard| acc ^ shard)
                })
            });
        }
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let shards = backends(100);
    c.bench_function("ketama_build_100_backends", |b| {
        b.iter(|| {
            ShardMap::new(
                HashFn::Fnv1a_64,
                Distribution::Ketama,
                None,
                black_box(&shards),
            )
        })
    });
}

criterion_group!(benches, hash_functions, route, build);
criterion_main!(benches);
