//! The signals Keyway acts on, as nutcracker's operators send them.

use std::io;

use crate::control::Control;
use crate::shutdown::Shutdown;

/// The signals Keyway acts on: SIGTERM and SIGINT start a graceful shutdown; SIGHUP reloads
/// the config.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; must run inside a runtime.
    pub fn install() -> io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Acts on signals until shutdown: SIGHUP reloads, SIGTERM/SIGINT start a graceful stop.
    pub async fn watch(mut self, control: &Control, shutdown: &Shutdown) -> io::Result<()> {
        loop {
            tokio::select! {
                _ = self.term.recv() => break,
                _ = self.int.recv() => break,
                () = shutdown.cancelled() => break,
                _ = self.hup.recv() => match control.reload().await {
                    Ok(report) => tracing::info!("SIGHUP: {}", report.trim_end().replace('\n', "; ")),
                    Err(_) => tracing::error!("SIGHUP: reload failed, nothing changed"),
                },
            }
        }
        tracing::info!("shutting down: finishing in-flight requests");
        shutdown.cancel();
        Ok(())
    }
}
