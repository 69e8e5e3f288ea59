//! The signals Keyway acts on, as nutcracker's operators send them.

use std::io;
use std::sync::OnceLock;

use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2};
use tokio::sync::mpsc;

use crate::control::Control;
use crate::shutdown::Shutdown;

/// What the signals may do to logging: reopen the log file (SIGHUP, for logrotate) and move the
/// level up or down (SIGTTIN / SIGTTOU). The binary sets it up; the library only calls it.
pub struct LogControl {
    /// Reopens the `-o` file at its path (a no-op when logging to stderr).
    pub reopen: Box<dyn Fn() -> io::Result<()> + Send + Sync>,
    /// Moves nutcracker's log level (0..=11) by the given step, clamped; the new level.
    pub step_level: Box<dyn Fn(i8) -> u8 + Send + Sync>,
}

/// The process's logging, which is process-global (tracing's global subscriber), hence a global
/// handle rather than a field threaded through `server::Options`.
static LOG_CONTROL: OnceLock<LogControl> = OnceLock::new();

/// Hands the signals the process's logging; only the first call counts.
pub fn set_log_control(control: LogControl) {
    let _ = LOG_CONTROL.set(control);
}

/// The signals Keyway acts on: SIGTERM and SIGINT start a graceful shutdown; SIGHUP reopens the
/// log file and reloads the config; SIGTTIN / SIGTTOU raise / lower the log level; SIGUSR1 and
/// SIGUSR2 are ignored (nutcracker survives them, so scripts send them freely).
///
/// They are caught by `signal-hook` and handed over by a thread of their own, not by tokio's
/// signal driver: that driver would sit in every runtime, the workers' too, and look for
/// signals at each park of the thread (twice per request for a lone client).
pub struct Signals {
    caught: mpsc::Receiver<i32>,
}

impl Signals {
    /// Installs the handlers and starts the thread that hands the signals over.
    pub fn install() -> io::Result<Signals> {
        let mut raw = signal_hook::iterator::Signals::new([
            SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU,
        ])?;
        // A few pending are plenty: the thread waits for room, and signals coalesce meanwhile.
        let (tx, caught) = mpsc::channel(8);
        std::thread::Builder::new()
            .name("keyway-signals".into())
            .spawn(move || {
                // The handlers stay installed to the end, as tokio's would: a second SIGTERM
                // during the drain is swallowed, not the default action that kills.
                for signal in raw.forever() {
                    let _ = tx.blocking_send(signal);
                }
            })?;
        Ok(Signals { caught })
    }

    /// Acts on signals until shutdown.
    pub async fn watch(mut self, control: &Control, shutdown: &Shutdown) -> io::Result<()> {
        loop {
            let signal = tokio::select! {
                signal = self.caught.recv() => signal,
                () = shutdown.cancelled() => break,
            };
            match signal {
                Some(SIGTERM | SIGINT) | None => break,
                Some(SIGHUP) => {
                    // Reopen first, so that the reload's report lands in the new file.
                    reopen_log();
                    match control.reload().await {
                        Ok(report) => {
                            tracing::info!("SIGHUP: {}", report.trim_end().replace('\n', "; "))
                        }
                        Err(_) => tracing::error!("SIGHUP: reload failed, nothing changed"),
                    }
                }
                Some(SIGTTIN) => step_log_level(1, "SIGTTIN: up"),
                Some(SIGTTOU) => step_log_level(-1, "SIGTTOU: down"),
                Some(SIGUSR1) => tracing::debug!("SIGUSR1 ignored"),
                Some(SIGUSR2) => tracing::debug!("SIGUSR2 ignored"),
                Some(other) => tracing::debug!("signal {other} ignored"),
            }
        }
        tracing::info!("shutting down: finishing in-flight requests");
        shutdown.cancel();
        Ok(())
    }
}

fn reopen_log() {
    if let Some(log) = LOG_CONTROL.get() {
        if let Err(error) = (log.reopen)() {
            tracing::error!("SIGHUP: cannot reopen the log file: {error}");
        }
    }
}

fn step_log_level(step: i8, what: &str) {
    if let Some(log) = LOG_CONTROL.get() {
        let level = (log.step_level)(step);
        // Warn so that the change shows at every level, as nutcracker's `loga` does.
        tracing::warn!("{what} log level to {level}");
    }
}
