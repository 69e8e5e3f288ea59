//! What one unpipelined request costs in metrics (`metrics::Tally`, `metrics::Latency`): the
//! backend connection's counts over its two polls (the request written, then its reply), each
//! poll ending in a flush, and the session's request latency, observed and flushed. Nothing
//! else contends for the shared metrics here, so only their instructions are measured.

// `criterion_group!` defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use keyway::clock::Tick;
use keyway::metrics::Metrics;

fn per_request(c: &mut Criterion) {
    let metrics = Metrics::new();
    let pool = metrics.pool("bench", &["s0".to_string()]);
    let mut tally = pool.tally(0);
    let mut latency = pool.latency();
    let start = Tick::now();
    let replied = start
        .checked_add(Duration::from_micros(60))
        .unwrap_or(start);
    let mut group = c.benchmark_group("metrics_per_request");
    group.throughput(Throughput::Elements(1));
    group.bench_function("backend_tally", |b| {
        b.iter(|| {
            // The poll that takes the job and writes it.
            tally.request(black_box(30));
            tally.queued(0, 0, 1, 30);
            tally.flush();
            // The poll that reads the reply: flushed before it is written through, then at
            // the poll's end with nothing left to add.
            tally.response(black_box(23), 0.000_040);
            tally.queued(0, 0, 0, 0);
            tally.flush();
            tally.flush();
        })
    });
    group.bench_function("request_latency", |b| {
        b.iter(|| {
            latency.arrived(start);
            latency.replied(black_box(replied));
            latency.flush();
        })
    });
    group.finish();
}

criterion_group!(benches, per_request);
criterion_main!(benches);
