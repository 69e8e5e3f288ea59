//! Routing benches: each hash function over 16- and 64-byte keys, `ShardMap::route` over
//! 100 backends per distribution, and the slot table against a binary search over slot ranges.

// `criterion_group!` defines an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keyway::route::slots::{slot, SlotMap};
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
        .map(|n| ShardSpec::new(format!("10.0.{}.{}:6379", n / 256, n % 256), 1))
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
    // Jedis's ring takes one hash, MurmurHash64A.
    let jedis = Distribution::ShardedJedis(keyway::route::JedisNames::Plain);
    let map = ShardMap::new(HashFn::Murmur64a, jedis, Some(*b"{}"), &shards);
    group.bench_with_input(
        BenchmarkId::new("ShardedJedis", "murmur64a"),
        &keys,
        |b, keys| {
            b.iter(|| {
                keys.iter()
                    .filter_map(|key| map.route(black_box(key)))
                    .fold(0usize, |acc, shard| acc ^ shard)
            })
        },
    );
    // Slots ignore the hash function: one case.
    let map = ShardMap::new(HashFn::Fnv1a_64, Distribution::Slots, None, &shards);
    group.bench_with_input(BenchmarkId::new("Slots", "crc16"), &keys, |b, keys| {
        b.iter(|| {
            keys.iter()
                .filter_map(|key| map.route(black_box(key)))
                .fold(0usize, |acc, shard| acc ^ shard)
        })
    });
    group.finish();
}

/// Slot → shard: `SlotMap`'s 16384-entry table against a binary search over sorted range
/// starts (the alternative it was chosen over), for 3 and 100 shards with several ranges each.
fn slot_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("slot_lookup");
    let slots: Vec<u16> = keys(1024, 16).iter().map(|key| slot(key)).collect();
    group.throughput(Throughput::Elements(slots.len() as u64));
    for (shards, ranges_per_shard) in [(3usize, 1usize), (100, 1), (100, 4)] {
        // `ranges_per_shard` interleaved stripes per shard, as after a few reshardings.
        let stripes = shards * ranges_per_shard;
        let specs: Vec<ShardSpec> = (0..shards)
            .map(|shard| ShardSpec {
                slots: (0..ranges_per_shard)
                    .map(|round| {
                        let stripe = round * shards + shard;
                        let start = (stripe * 16384 / stripes) as u16;
                        let end = ((stripe + 1) * 16384 / stripes - 1) as u16;
                        start..=end
                    })
                    .collect(),
                ..ShardSpec::new(format!("s{shard}"), 1)
            })
            .collect();
        let table = SlotMap::new(&specs, &[]);
        let mut runs: Vec<(u16, usize)> = table
            .ranges()
            .iter()
            .enumerate()
            .flat_map(|(shard, ranges)| ranges.iter().map(move |r| (*r.start(), shard)))
            .collect();
        runs.sort_unstable();
        let (starts, owners): (Vec<u16>, Vec<usize>) = runs.into_iter().unzip();
        let id = format!("{shards}x{ranges_per_shard}");
        group.bench_with_input(BenchmarkId::new("table", &id), &slots, |b, slots| {
            b.iter(|| {
                slots
                    .iter()
                    .filter_map(|&slot| table.dispatch(black_box(slot)))
                    .fold(0usize, |acc, shard| acc ^ shard)
            })
        });
        group.bench_with_input(
            BenchmarkId::new("binary_search", &id),
            &slots,
            |b, slots| {
                b.iter(|| {
                    slots
                        .iter()
                        .filter_map(|&slot| {
                            let at = starts.partition_point(|&start| start <= black_box(slot));
                            owners.get(at.checked_sub(1)?).copied()
                        })
                        .fold(0usize, |acc, shard| acc ^ shard)
                })
            },
        );
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let shards = backends(100);
    c.bench_function("slots_build_100_backends", |b| {
        b.iter(|| {
            ShardMap::new(
                HashFn::Fnv1a_64,
                Distribution::Slots,
                None,
                black_box(&shards),
            )
        })
    });
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

criterion_group!(benches, hash_functions, route, slot_lookup, build);
criterion_main!(benches);
