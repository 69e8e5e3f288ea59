//! Timers, made on a runtime that serves them.
//!
//! A worker's runtime has no time driver. With one, every park of the thread locks and walks
//! the timer wheel and reads the clock, timers or not: with one client, whose request and
//! reply each park the worker, that was about 600 instructions per request (7%; with fifty
//! clients parks are 1 in 20 requests). The workers' timers live on one thread of their own
//! instead, `keyway-timers`, whose runtime has the time driver alone: a timer made on a worker
//! is registered there and wakes its task from there (the worker's I/O driver is woken, as for
//! any wake from another thread). Timers are few and long on the request path (a connection's
//! deadline timer is re-armed when it fires, not per request), so the hop costs nothing per
//! request. Every other thread (the control plane, the admin server, tests on paused time)
//! keeps its runtime's own timers.
//!
//! Every timer in the crate is made through this module: clippy's `disallowed-methods` holds
//! the rest of the crate to it, as a timer made on a worker any other way would panic.
#![allow(clippy::disallowed_methods)] // the one place that makes tokio's timers

use std::cell::Cell;
use std::future::IntoFuture;
use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::{Handle, LocalOptions, LocalRuntime};
use tokio::time::{Instant, Interval, Sleep, Timeout};

thread_local! {
    /// This thread's runtime has no timers: they are made on the timer thread's.
    static ELSEWHERE: Cell<bool> = const { Cell::new(false) };
}

/// The timer thread's runtime, started on first use; `None` if it could not be.
static TIMERS: OnceLock<Option<Handle>> = OnceLock::new();

fn timers() -> Option<&'static Handle> {
    TIMERS
        .get_or_init(|| match start() {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(%error, "cannot start the timer thread: workers keep their own");
                None
            }
        })
        .as_ref()
}

fn start() -> io::Result<Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("keyway-timers".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

/// The runtime for a worker thread, built on that thread: I/O only, its timers made on the
/// timer thread (or all of its own, if that thread cannot start). A `LocalRuntime`: its
/// tasks need not be `Send`, and the runtime schedules them itself, with no `LocalSet` (its
/// own queue, waker and tick inside `block_on`) in between.
pub fn worker_runtime() -> io::Result<LocalRuntime> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    let elsewhere = timers().is_some();
    if elsewhere {
        builder.enable_io();
    } else {
        builder.enable_all();
    }
    let runtime = builder.build_local(LocalOptions::default())?;
    ELSEWHERE.set(elsewhere);
    Ok(runtime)
}

/// Runs `make` where this thread's timers are made.
fn made<T>(make: impl FnOnce() -> T) -> T {
    match ELSEWHERE.get().then(timers).flatten() {
        Some(handle) => {
            let _timers = handle.enter();
            make()
        }
        None => make(),
    }
}

/// [`tokio::time::sleep`].
pub fn sleep(duration: Duration) -> Sleep {
    made(|| tokio::time::sleep(duration))
}

/// [`tokio::time::sleep_until`].
pub fn sleep_until(deadline: Instant) -> Sleep {
    made(|| tokio::time::sleep_until(deadline))
}

/// [`tokio::time::timeout`].
pub fn timeout<F: IntoFuture>(duration: Duration, future: F) -> Timeout<F::IntoFuture> {
    made(|| tokio::time::timeout(duration, future))
}

/// [`tokio::time::interval`].
pub fn interval(period: Duration) -> Interval {
    made(|| tokio::time::interval(period))
}

/// [`tokio::time::interval_at`].
pub fn interval_at(start: Instant, period: Duration) -> Interval {
    made(|| tokio::time::interval_at(start, period))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker's runtime has no timers of its own, yet its tasks sleep, time out and tick.
    #[test]
    fn a_worker_runtime_serves_timers_from_the_timer_thread() {
        let outcome = std::thread::spawn(|| {
            let runtime = worker_runtime()?;
            // Made directly, a timer would find no time driver here.
            let direct = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _enter = runtime.enter();
                drop(tokio::time::sleep(Duration::from_millis(1)));
            }));
            let served = runtime.block_on(async {
                sleep(Duration::from_millis(5)).await;
                sleep_until(Instant::now() + Duration::from_millis(5)).await;
                let mut ticks = interval_at(Instant::now(), Duration::from_millis(1));
                ticks.tick().await;
                ticks.tick().await;
                let pending = std::future::pending::<()>();
                timeout(Duration::from_millis(5), pending).await.is_err()
            });
            io::Result::Ok((direct.is_err(), served))
        })
        .join();
        assert!(matches!(outcome, Ok(Ok((true, true)))), "{outcome:?}");
    }

    /// Off the workers, timers are the runtime's own: paused time moves them.
    #[tokio::test(start_paused = true)]
    async fn elsewhere_timers_follow_the_runtimes_clock() {
        let before = Instant::now();
        sleep(Duration::from_secs(3600)).await;
        assert!(Instant::now() - before >= Duration::from_secs(3600));
    }
}
