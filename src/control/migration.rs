//! Migration windows (`migration: { read_through: true, window: ... }`), decided here: a
//! reload that changes a pool's servers keeps the previous placement in the new snapshot
//! ([`begin`]); when the window ends, [`watch`] publishes the pool without it.

use std::sync::{Arc, Weak};

use super::Control;
use crate::backend::pool::Pool;
use crate::shutdown::Shutdown;

/// `pool` (just built for a reload) with a migration window from `previous`, when its config
/// asks for one and the reload changed where keys live; else `pool` as it is.
pub fn begin(pool: Pool, previous: Option<&Pool>) -> Pool {
    let (Some(previous), Some(migration)) = (previous, pool.config().migration) else {
        return pool;
    };
    match pool.with_handover(previous, migration.window, migration.copy) {
        Some(migrating) => {
            tracing::info!(
                pool = %pool.config().name,
                window = %humantime::format_duration(migration.window),
                copy = migration.copy,
                "servers changed: reading misses through from the old owners"
            );
            migrating
        }
        // A window carried over from `previous` maps its servers, not these.
        None if previous.config().servers != pool.config().servers => pool.without_handover(),
        None => pool,
    }
}

/// Ends every migration window of `pools` when it is due (until `stop`): the pool's snapshot
/// is republished without it, if the window is still the one this watcher saw.
pub fn watch(control: Weak<Control>, pools: &[Arc<Pool>], stop: &Shutdown) {
    for pool in pools {
        let Some(handover) = pool.handover_state().cloned() else {
            continue;
        };
        let name = pool.config().name.clone();
        let stop = stop.clone();
        let control = control.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => return,
                () = crate::timer::sleep_until(handover.until()) => {}
            }
            let Some(live) = control.upgrade() else {
                return;
            };
            let ended = live
                .update(&name, |pool| {
                    pool.handover_state()
                        .is_some_and(|current| Arc::ptr_eq(current, &handover))
                        .then(|| pool.without_handover())
                })
                .await;
            if ended {
                tracing::info!(pool = %name, "migration window ended: old owners dropped");
            }
        });
    }
}
