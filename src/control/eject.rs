//! Auto-eject (`auto_eject_hosts`), decided here and nowhere else: the data path only counts
//! each backend's failed requests and wakes this watcher once one reaches
//! `server_failure_limit`; the watcher ejects it for `server_retry_timeout` (its keys remap),
//! readmits it when that passes, and publishes each change as a new snapshot of the pool.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::Control;
use crate::backend::pool::Pool;
use crate::shutdown::Shutdown;

/// How long the watcher sleeps when no ejected backend is due back (a failure report wakes
/// it sooner).
const IDLE: Duration = Duration::from_secs(3600);

/// Starts deciding the ejections of every auto-eject pool of `pools`, until `stop`.
pub fn watch(control: Weak<Control>, pools: &[Arc<Pool>], stop: &Shutdown) {
    for pool in pools {
        if !pool.config().auto_eject_hosts || pool.cluster().is_some() {
            continue;
        }
        let name = pool.config().name.clone();
        let signal = Arc::clone(pool.signal());
        let stop = stop.clone();
        let control = control.clone();
        tokio::spawn(async move {
            loop {
                let Some(live) = control.upgrade() else {
                    return;
                };
                live.update(&name, |pool| decide(pool, Instant::now()))
                    .await;
                let due = live
                    .pool(&name)
                    .and_then(|pool| pool.ejections().iter().flatten().min().copied());
                drop(live);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = signal.failure_reported() => {}
                    () = tokio::time::sleep_until(due.unwrap_or_else(|| Instant::now() + IDLE)) => {}
                }
            }
        });
    }
}

/// The snapshot `pool` becomes at `now`, if any backend changes: backends whose retry time
/// has come are readmitted, live backends with `server_failure_limit` failures are ejected.
///
/// A readmitted backend's count is left one short of the limit, as nutcracker keeps counting:
/// a backend that fails again right after its retry is ejected again at once.
fn decide(pool: &Pool, now: Instant) -> Option<Pool> {
    let config = pool.config();
    let limit = config.server_failure_limit.max(1);
    let mut ejected = pool.ejections().to_vec();
    let mut changed = false;
    for (shard, (backend, until)) in pool.backends().iter().zip(ejected.iter_mut()).enumerate() {
        let name = config
            .servers
            .get(shard)
            .map(|s| s.display_name())
            .unwrap_or_default();
        match *until {
            Some(at) if at <= now => {
                *until = None;
                changed = true;
                backend.rearm(limit - 1);
                pool.metrics().readmit(shard);
                tracing::info!(pool = %config.name, backend = %name, "backend readmitted");
            }
            Some(_) => {}
            None if backend.failures() >= limit => {
                *until = Some(now + config.server_retry_timeout.max(Duration::from_millis(1)));
                changed = true;
                pool.metrics().eject(shard);
                tracing::warn!(pool = %config.name, backend = %name, failures = backend.failures(), "backend ejected");
            }
            None => {}
        }
    }
    changed.then(|| pool.with_ejected(ejected))
}
