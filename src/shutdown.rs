//! Graceful shutdown: one token cancelled on SIGTERM/SIGINT; listeners stop accepting, sessions
//! finish their in-flight requests, workers wait for them up to a grace period.

use std::time::Duration;

pub use tokio_util::sync::CancellationToken as Shutdown;

/// How long workers wait for sessions to finish their in-flight requests after shutdown starts.
pub const GRACE: Duration = Duration::from_secs(10);
