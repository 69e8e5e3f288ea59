//! The signals Keyway acts on, as nutcracker's operators send them.

use std::io;
use std::sync::OnceLock;

use tokio::signal::unix::{signal, Signal, SignalKind};

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
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
    ttin: Signal,
    ttou: Signal,
}

impl Signals {
    /// Installs the handlers; must run inside a runtime.
    pub fn install() -> io::Result<Signals> {
        use rustix::process::Signal as Raw;
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
            ttin: signal(SignalKind::from_raw(Raw::TTIN.as_raw()))?,
            ttou: signal(SignalKind::from_raw(Raw::TTOU.as_raw()))?,
        })
    }

    /// Acts on signals until shutdown.
    pub async fn watch(mut self, control: &Control, shutdown: &Shutdown) -> io::Result<()> {
        loop {
            tokio::select! {
                _ = self.term.recv() => break,
                _ = self.int.recv() => break,
                () = shutdown.cancelled() => break,
                _ = self.hup.recv() => {
                    // Reopen first, so that the reload's report lands in the new file.
                    reopen_log();
                    match control.reload().await {
                        Ok(report) => tracing::info!("SIGHUP: {}", report.trim_end().replace('\n', "; ")),
                        Err(_) => tracing::error!("SIGHUP: reload failed, nothing changed"),
                    }
                }
                _ = self.usr1.recv() => tracing::debug!("SIGUSR1 ignored"),
                _ = self.usr2.recv() => tracing::debug!("SIGUSR2 ignored"),
                _ = self.ttin.recv() => step_log_level(1, "SIGTTIN: up"),
                _ = self.ttou.recv() => step_log_level(-1, "SIGTTOU: down"),
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
