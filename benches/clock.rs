//! What the data path's clock costs per request: a reading and a latency in seconds (twice
//! per request: the session's and the backend connection's), and a deadline, with
//! `clock::Tick` against `std::time::Instant`.

// `criterion_group!` defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use keyway::clock::Tick;

fn clock(c: &mut Criterion) {
    let timeout = Duration::from_millis(400);
    let mut group = c.benchmark_group("clock");
    group.throughput(Throughput::Elements(1));
    let sent = Tick::now();
    group.bench_function("tick_now", |b| b.iter(Tick::now));
    group.bench_function("tick_latency_and_deadline", |b| {
        b.iter(|| {
            let at = black_box(sent);
            let now = black_box(Tick::now());
            (now.seconds_since(at), at.checked_add(black_box(timeout)))
        })
    });
    let sent = Instant::now();
    group.bench_function("instant_now", |b| b.iter(Instant::now));
    group.bench_function("instant_latency_and_deadline", |b| {
        b.iter(|| {
            let at = black_box(sent);
            let now = black_box(Instant::now());
            let latency = now.saturating_duration_since(at).as_secs_f64();
            (latency, at.checked_add(black_box(timeout)))
        })
    });
    group.finish();
}

criterion_group!(benches, clock);
criterion_main!(benches);
