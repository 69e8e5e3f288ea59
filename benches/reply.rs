//! The reply hand-off per request (`backend::reply`): a 16 B GET reply taken by the waiting
//! session (register, send, wake, take) against the same reply written through to the
//! client's socket by the connection (arm, register, send, write: no wake). The socket here
//! is a sink that takes everything and the waker a no-op, so only the hand-off is measured:
//! neither the kernel's write nor the scheduling a real wake-up costs the session path.

// `criterion_group!` defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Waker};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use keyway::backend::reply::{channel, WriteThrough};
use keyway::clock::Tick;

/// A client socket that takes every byte.
struct Sink(Cell<usize>);

impl WriteThrough for Sink {
    fn reply_ready(&self, reply: Option<&[u8]>, _now: Tick) -> usize {
        let taken = reply.map_or(0, <[u8]>::len);
        self.0.set(self.0.get() + taken);
        taken
    }
}

fn handoff(c: &mut Criterion) {
    let reply = Bytes::from_static(b"$16\r\nvvvvvvvvvvvvvvvv\r\n");
    let sink = Rc::new(Sink(Cell::new(0)));
    let mut cx = Context::from_waker(Waker::noop());
    let now = Tick::now();
    let mut group = c.benchmark_group("reply_handoff");
    group.throughput(Throughput::Elements(1));
    group.bench_function("taken_by_session", |b| {
        b.iter(|| {
            let (sender, mut receiver) = channel();
            let waiting = Pin::new(&mut receiver).poll(&mut cx).is_pending();
            sender.send_at(Ok(reply.clone()), now);
            black_box((waiting, Pin::new(&mut receiver).poll(&mut cx)))
        })
    });
    group.bench_function("written_through", |b| {
        b.iter(|| {
            let (sender, mut receiver) = channel();
            receiver.arm(Rc::clone(&sink) as Rc<dyn WriteThrough>);
            let waiting = Pin::new(&mut receiver).poll(&mut cx).is_pending();
            sender.send_at(Ok(reply.clone()), now);
            black_box((waiting, Pin::new(&mut receiver).poll(&mut cx)))
        })
    });
    group.finish();
}

criterion_group!(benches, handoff);
criterion_main!(benches);
