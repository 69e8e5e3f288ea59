//! The data path's clock: one reading of the monotonic clock per batch of requests or replies,
//! kept as whole nanoseconds.
//!
//! `std::time::Instant` keeps seconds and nanoseconds apart, so each difference (a request's
//! latency, twice per request) and each sum (its deadline) normalises a `timespec`: about 40
//! instructions apiece, some 100 per unpipelined GET. A [`Tick`] is one `u64`: a difference
//! is a subtraction, a deadline an addition. It is read from `CLOCK_MONOTONIC`, the clock
//! `Instant` reads, through the vDSO as `Instant::now` is. Timers still take an
//! `Instant` ([`Tick::instant`]), made from the first reading's pair (`Instant`, [`Tick`]).
//!
//! Unit tests read tokio's clock instead, so that tests on paused time move it.

use std::num::NonZeroU64;
use std::sync::LazyLock;
use std::time::Duration;

use tokio::time::Instant;

/// A moment on the monotonic clock, in nanoseconds. Never zero, so an `Option<Tick>` is the
/// size of a `Tick`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(NonZeroU64);

/// The first reading: an `Instant` and the [`Tick`] of the same moment.
static ORIGIN: LazyLock<(Instant, u64)> = LazyLock::new(|| (Instant::now(), read()));

#[cfg(not(test))]
#[inline]
fn read() -> u64 {
    monotonic()
}

/// Under test, tokio's clock (which a paused runtime moves), counted from its first reading.
#[cfg(test)]
fn read() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    nanos(Instant::now().duration_since(start)).saturating_add(1)
}

/// `CLOCK_MONOTONIC` in nanoseconds.
#[inline]
fn monotonic() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Tick {
    /// Now.
    #[inline]
    pub fn now() -> Tick {
        Tick::at(read())
    }

    #[inline]
    fn at(nanos: u64) -> Tick {
        Tick(NonZeroU64::new(nanos).unwrap_or(NonZeroU64::MIN))
    }

    /// The time from `earlier` to this moment, in seconds (zero if `earlier` is later), as
    /// latency histograms take it.
    #[inline]
    pub fn seconds_since(self, earlier: Tick) -> f64 {
        self.0.get().saturating_sub(earlier.0.get()) as f64 * 1e-9
    }

    /// `duration` after this moment, or `None` past what a [`Tick`] holds (some 580 years).
    #[inline]
    pub fn checked_add(self, duration: Duration) -> Option<Tick> {
        let sum = self.0.get().checked_add(nanos(duration))?;
        Some(Tick::at(sum))
    }

    /// This moment as an `Instant`, for a timer; `None` past what an `Instant` holds.
    pub fn instant(self) -> Option<Instant> {
        let (origin, at) = *ORIGIN;
        match self.0.get().checked_sub(at) {
            Some(after) => origin.checked_add(Duration::from_nanos(after)),
            None => origin.checked_sub(Duration::from_nanos(at - self.0.get())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_readings_move_forward_within_what_instants_around_them_saw() {
        let before = std::time::Instant::now();
        let (first, second) = (monotonic(), monotonic());
        let after = std::time::Instant::now();
        assert!(first > 0 && second >= first);
        // Read between two `Instant`s, two readings are no further apart than they are.
        let lapse = nanos(after.duration_since(before));
        assert!(second - first <= lapse);
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_follow_tokio_clock_and_convert_back_to_instants() {
        let start = Tick::now();
        let instant = Instant::now();
        tokio::time::advance(Duration::from_millis(1500)).await;
        let later = Tick::now();
        assert!((later.seconds_since(start) - 1.5).abs() < 1e-9);
        assert_eq!(start.seconds_since(later), 0.0);
        let deadline = start.checked_add(Duration::from_secs(2)).unwrap();
        assert!(deadline > later);
        let at = deadline.instant().unwrap();
        assert_eq!(at.duration_since(instant), Duration::from_secs(2));
        assert_eq!(start.checked_add(Duration::MAX), None);
    }
}
