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
                    () = crate::timer::sleep_until(due.unwrap_or_else(|| Instant::now() + IDLE)) => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;

    fn pool(servers: &[&str], metrics: &Metrics, previous: Option<&Pool>) -> Pool {
        let mut text = String::from(
            "p:\n  listen: 127.0.0.1:22121\n  redis: true\n  auto_eject_hosts: true\n  server_failure_limit: 2\n  server_retry_timeout: 1000\n  servers:\n",
        );
        for s in servers {
            text.push_str(&format!("   - {s}\n"));
        }
        let config = Config::parse(&text).unwrap().pools.remove(0);
        Pool::new(config, metrics, previous)
    }

    const SERVERS: [&str; 3] = ["127.0.0.1:7001:1", "127.0.0.1:7002:1", "127.0.0.1:7003:1"];

    fn routes_to(pool: &Pool, shard: usize) -> bool {
        (0..2000).any(|i| {
            pool.route(format!("key:{i}").as_bytes())
                == Ok(crate::backend::pool::Place::Shard(shard))
        })
    }

    #[test]
    fn a_backend_is_ejected_at_its_failure_limit_and_readmitted_after_the_retry_timeout() {
        let metrics = Metrics::new();
        let live = pool(&SERVERS, &metrics, None);
        let now = Instant::now();
        live.backends()[1].rearm(1);
        assert!(
            decide(&live, now).is_none(),
            "one failure short of the limit"
        );
        live.backends()[1].rearm(2);
        let ejected = decide(&live, now).expect("ejected at the limit");
        assert!(ejected.is_ejected(1) && !ejected.is_ejected(0));
        assert!(!routes_to(&ejected, 1) && routes_to(&ejected, 0));
        assert!(
            decide(&ejected, now + Duration::from_millis(999)).is_none(),
            "stays out until its retry time"
        );
        let back = decide(&ejected, now + Duration::from_millis(1000)).expect("readmitted");
        assert!(!back.is_ejected(1) && routes_to(&back, 1));
        // nutcracker keeps counting: one more failure ejects it again at once.
        assert_eq!(back.backends()[1].failures(), 1);
        assert!(decide(&back, now + Duration::from_millis(1000)).is_none());
        back.backends()[1].rearm(2);
        assert!(decide(&back, now + Duration::from_millis(1001)).is_some_and(|p| p.is_ejected(1)));
    }

    #[test]
    fn a_new_snapshot_keeps_the_backends_that_did_not_change() {
        let metrics = Metrics::new();
        let old = pool(&SERVERS, &metrics, None);
        old.backends()[0].rearm(2);
        let old = decide(&old, Instant::now()).unwrap();
        let moved = ["127.0.0.1:7001:1", "127.0.0.1:7002:1", "127.0.0.1:7004:1"];
        let new = pool(&moved, &metrics, Some(&old));
        for shard in 0..2 {
            assert!(Arc::ptr_eq(&old.backends()[shard], &new.backends()[shard]));
        }
        assert!(!Arc::ptr_eq(&old.backends()[2], &new.backends()[2]));
        assert!(new.is_ejected(0), "an unchanged backend stays ejected");
        assert!(Arc::ptr_eq(old.signal(), new.signal()));
    }
}
