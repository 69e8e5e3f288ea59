//! Protocol hot paths: request decoding per command shape (ours against the `redis-protocol`
//! crate's decoder on the same bytes), reply scanning, and MGET (and memcached `get`) split + merge.

#![allow(missing_docs)] // criterion_group! generates undocumented items
use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keyway::protocol::resp::command::{lookup, Merge};
use keyway::protocol::resp::fanout::{self, Split};
use keyway::protocol::resp::{reply, ReplyScanner, Request, RequestDecoder};

/// Request shapes a proxy sees most, as wire bytes.
fn shapes() -> Vec<(&'static str, Bytes)> {
    let value_1k = vec![b'v'; 1024];
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    let keys: Vec<String> = (0..10).map(|i| format!("key:{i:08}")).collect();
    mget.extend(keys.iter().map(|k| k.as_bytes()));
    vec![
        (
            "get",
            Request::from_args([&b"GET"[..], b"key:00000001"])
                .frame()
                .clone(),
        ),
        (
            "set_16b",
            Request::from_args([&b"SET"[..], b"key:00000001", &[b'v'; 16]])
                .frame()
                .clone(),
        ),
        (
            "set_1k",
            Request::from_args([&b"SET"[..], b"key:00000001", &value_1k])
                .frame()
                .clone(),
        ),
        ("mget_10", Request::from_args(mget).frame().clone()),
        ("inline_get", Bytes::from_static(b"GET key:00000001\r\n")),
    ]
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_request");
    for (name, wire) in shapes() {
        // 64 pipelined copies, as one read would bring them.
        let mut batch = BytesMut::new();
        for _ in 0..64 {
            batch.extend_from_slice(&wire);
        }
        group.throughput(Throughput::Elements(64));
        group.bench_with_input(BenchmarkId::new("keyway", name), &batch, |b, batch| {
            b.iter(|| {
                let mut buf = batch.clone();
                let mut decoder = RequestDecoder::default();
                while let Ok(Some(request)) = decoder.decode(&mut buf) {
                    black_box(request);
                }
            })
        });
        if name.starts_with("inline") {
            continue;
        }
        group.bench_with_input(
            BenchmarkId::new("redis_protocol", name),
            &batch,
            |b, batch| {
                b.iter(|| {
                    let mut buf = batch.clone();
                    while let Ok(Some(frame)) =
                        redis_protocol::resp2::decode::decode_bytes_mut(&mut buf)
                    {
                        black_box(frame);
                    }
                })
            },
        );
    }
    group.finish();
}

fn scan_replies(c: &mut Criterion) {
    let mut group = c.benchmark_group("scan_reply");
    let mut lrange_100 = BytesMut::new();
    reply::put_array_header(&mut lrange_100, 100);
    for _ in 0..100 {
        reply::put_bulk(&mut lrange_100, b"xxx");
    }
    // `scripts/bench.sh`'s list: 600 elements of 16 bytes.
    let mut lrange_600 = BytesMut::new();
    reply::put_array_header(&mut lrange_600, 600);
    for i in 1..=600 {
        reply::put_bulk(&mut lrange_600, format!("element-{i:08}").as_bytes());
    }
    let cases = [
        ("ok", Bytes::from_static(b"+OK\r\n")),
        ("bulk_16b", reply::bulk(&[b'v'; 16])),
        ("bulk_1k", reply::bulk(&[b'v'; 1024])),
        ("lrange_100", lrange_100.freeze()),
        ("lrange_600", lrange_600.freeze()),
    ];
    for (name, wire) in cases {
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &wire, |b, wire| {
            b.iter(|| black_box(ReplyScanner::default().scan(wire)))
        });
    }
    group.finish();
}

fn mget_split_merge(c: &mut Criterion) {
    let keys: Vec<String> = (0..10).map(|i| format!("key:{i:08}")).collect();
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(keys.iter().map(|k| k.as_bytes()));
    let request = Request::from_args(args);
    let route = |key: &[u8]| Ok::<usize, ()>(key.last().map_or(0, |b| (b % 4) as usize));
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(10));
    // The parts' frames, collected as they would be sent.
    let split = || {
        fanout::split::<_, _, _, Vec<(usize, Bytes)>>(&request, Merge::Values, route, |s, f| (s, f))
    };
    group.bench_function("mget_10_split_4_shards", |b| b.iter(|| black_box(split())));
    let Ok(Split::Parts(parts, plan)) = split() else {
        return;
    };
    let replies: Vec<Bytes> = (0..parts.len())
        .map(|part| {
            let keys = plan.order().iter().filter(|&&(p, _)| p as usize == part);
            let keys = keys.count();
            let mut out = BytesMut::new();
            reply::put_array_header(&mut out, keys);
            for _ in 0..keys {
                reply::put_bulk(&mut out, &[b'v'; 16]);
            }
            out.freeze()
        })
        .collect();
    group.bench_function("mget_10_merge_4_shards", |b| {
        b.iter(|| black_box(fanout::merge(&plan, &replies)))
    });
    group.finish();
}

fn memcache_get_split_merge(c: &mut Criterion) {
    use keyway::protocol::memcache;
    let keys: Vec<String> = (0..10).map(|i| format!("key:{i:08}")).collect();
    let line = format!("get {}\r\n", keys.join(" "));
    let mut buf = BytesMut::from(line.as_bytes());
    let Ok(Some(request)) = memcache::RequestDecoder::default().decode(&mut buf) else {
        return;
    };
    let route = |key: &[u8]| Ok::<usize, ()>(key.last().map_or(0, |b| (b % 4) as usize));
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(10));
    group.bench_function("memcache_get_10_split_4_shards", |b| {
        b.iter(|| black_box(memcache::fanout::split(&request, route)))
    });
    let Ok(memcache::fanout::Split::Parts(parts, plan)) = memcache::fanout::split(&request, route)
    else {
        return;
    };
    let replies: Vec<Bytes> = parts
        .iter()
        .map(|part| {
            let mut out = Vec::new();
            for key in part.request.keys() {
                out.extend_from_slice(b"VALUE ");
                out.extend_from_slice(key);
                out.extend_from_slice(b" 0 16\r\nvvvvvvvvvvvvvvvv\r\n");
            }
            out.extend_from_slice(b"END\r\n");
            Bytes::from(out)
        })
        .collect();
    group.bench_function("memcache_get_10_merge_4_shards", |b| {
        b.iter(|| black_box(memcache::fanout::merge(&plan, &replies)))
    });
    group.finish();
}

/// Finding a command by name, as every request does: short, long and unknown names.
fn command_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("command_lookup");
    for name in [
        "GET",
        "mget",
        "ZRangeByScore",
        "GEORADIUSBYMEMBER_RO",
        "nosuchcmd",
    ] {
        group.bench_with_input(
            BenchmarkId::from_parameter(name),
            name.as_bytes(),
            |b, name| {
                b.iter(|| lookup(black_box(name)).map(|command| command.arity));
            },
        );
    }
    group.finish();
}

criterion_group!(
    benches,
    decode,
    command_lookup,
    scan_replies,
    mget_split_merge,
    memcache_get_split_merge
);
criterion_main!(benches);
