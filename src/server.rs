//! The composition root: binds the pools' listeners and the admin and stats servers, starts
//! the workers and the control plane, and runs until shutdown. Threads: one control thread
//! (signals, accept loops, reloads) and `--threads` workers.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::{self, Admin, Rejected, Token};
use crate::config::{Config, ListenOverride};
use crate::control::{self, Control, Prepared, ReloadError};
use crate::fleet;
use crate::metrics::{stats, Metrics};
use crate::proxy::listener::LocalAddr;
use crate::proxy::worker::{Io, Workers};
use crate::shutdown::Shutdown;
use crate::signals::Signals;

/// How to run the proxy.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker threads (at least 1).
    pub threads: usize,
    /// How workers do client I/O (`--io`).
    pub io: Io,
    /// The config file, re-read on reload (SIGHUP); `None` disables reload.
    pub config_path: Option<PathBuf>,
    /// Whether `run` handles SIGTERM/SIGINT (shutdown) and SIGHUP (reload) itself.
    pub signals: bool,
    /// Where the HTTP admin server (`/metrics`, `/healthz`, `/pools`, `POST /reload`) listens;
    /// `None`: nowhere.
    pub admin: Option<AdminBind>,
    /// The file holding the admin server's bearer token (`--admin-token`); `None`: open.
    pub admin_token: Option<PathBuf>,
    /// Serve the admin API on a non-loopback address without a token (`--admin-insecure`).
    pub admin_insecure: bool,
    /// nutcracker's stats port (`-a`:`-s`), serving the stats JSON.
    pub stats: Option<SocketAddr>,
    /// nutcracker's `-i`: how old the stats JSON's pool figures may be.
    pub stats_interval: Duration,
    /// `--listen POOL=ADDR`: listen addresses that override the config's, on every apply.
    pub listen: Vec<ListenOverride>,
    /// `--config-store`: where the config comes from and is watched, with what this
    /// instance started on; `None`: the file alone.
    pub store: Option<fleet::Member>,
}

/// Where the admin server binds, and whether failing to is fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminBind {
    /// Asked for explicitly: not binding stops the start.
    Required(SocketAddr),
    /// A default: taken when free, else a warning and no admin server, so that several
    /// instances started with nutcracker's flags alone share a host.
    IfFree(SocketAddr),
}

impl AdminBind {
    /// The address asked for.
    pub fn addr(self) -> SocketAddr {
        match self {
            AdminBind::Required(addr) | AdminBind::IfFree(addr) => addr,
        }
    }
}

/// Refuses an admin API reachable from other hosts with no token, unless the operator said
/// `--admin-insecure`: `POST /reload` and `/pools` are not for the network at large.
fn check_admin_exposure(addr: SocketAddr, token: bool, insecure: bool) -> io::Result<()> {
    if addr.ip().is_loopback() || token || insecure {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "refusing to serve the admin API on {addr}, which is not a loopback address, \
             without a token: give --admin-token FILE (or --admin-insecure to serve it open)"
        ),
    ))
}

/// A proxy with its listeners bound, ready to [`run`](Proxy::run).
pub struct Proxy {
    /// The control thread's runtime, made at bind time so signal handlers are in place before
    /// any listener accepts.
    runtime: tokio::runtime::Runtime,
    signals: Option<Signals>,
    /// The config resolved, its snapshots built and its listeners bound, for
    /// [`Control::start`] to install.
    prepared: Prepared,
    metrics: Arc<Metrics>,
    admin: Option<std::net::TcpListener>,
    admin_token: Option<Token>,
    stats: Option<std::net::TcpListener>,
    options: Options,
}

/// Binds a TCP listener for the admin or stats server, ready for a runtime to take over.
fn bind_tcp(addr: SocketAddr, what: &str) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot listen on {addr} for the {what}: {error}"),
        )
    })?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Binds every pool's listener. Binding is apart from running so that callers (and tests,
/// with port 0) learn the addresses before traffic starts. It is the control plane's
/// [`control::prepare_start`]: Sentinel pools learn their masters' addresses here, and cluster
/// pools their nodes and slot layout, before anything is served, exactly as on a reload.
///
/// # Errors
/// A listener could not be bound, no Sentinel placed a master, or no seed of a cluster pool
/// answered.
pub fn bind(mut config: Config, options: Options) -> io::Result<Proxy> {
    let missing = config.override_listens(&options.listen);
    if !missing.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--listen names pools the configuration lacks: {}",
                missing.join(", ")
            ),
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let metrics = Metrics::new();
    let prepared = runtime
        .block_on(control::prepare_start(config, &metrics))
        .map_err(|error| match error {
            ReloadError::Bind { ref source, .. } => {
                io::Error::new(source.kind(), error.to_string())
            }
            error => io::Error::other(error.to_string()),
        })?;
    let signals = if options.signals {
        Some(Signals::install()?)
    } else {
        None
    };
    let admin_token = options
        .admin_token
        .as_deref()
        .map(Token::load)
        .transpose()?;
    if let Some(bind) = options.admin {
        check_admin_exposure(bind.addr(), admin_token.is_some(), options.admin_insecure)?;
    }
    let admin = match options.admin {
        None => None,
        Some(AdminBind::Required(addr)) => Some(bind_tcp(addr, "admin server")?),
        Some(AdminBind::IfFree(addr)) => match bind_tcp(addr, "admin server") {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!("{error}; running without it (use --admin ADDR to choose one)");
                None
            }
        },
    };
    let stats = options
        .stats
        .map(|a| bind_tcp(a, "stats server"))
        .transpose()?;
    Ok(Proxy {
        runtime,
        signals,
        prepared,
        metrics,
        admin,
        admin_token,
        stats,
        options,
    })
}

impl Proxy {
    /// The admin server's bound address, if it has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The stats server's bound address, if it has one.
    pub fn stats_addr(&self) -> Option<SocketAddr> {
        self.stats.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Each pool's name and bound address, in config order.
    pub fn local_addrs(&self) -> Vec<(String, LocalAddr)> {
        self.prepared.local_addrs()
    }

    /// Serves until `shutdown` is cancelled, then drains: stops accepting, lets sessions finish
    /// their in-flight requests (up to the grace period), and returns. Blocks the calling thread.
    ///
    /// # Errors
    /// A runtime, thread or signal handler could not be created.
    pub fn run(self, shutdown: Shutdown) -> io::Result<()> {
        let (workers, threads) =
            Workers::start(self.options.threads, self.options.io, &[], &shutdown)?;
        let admin_addr = self.admin_addr();
        let signals = self.signals;
        let result = self.runtime.block_on(async {
            let control = Control::start(
                self.options.config_path.clone(),
                self.options.listen.clone(),
                self.prepared,
                workers,
                Arc::clone(&self.metrics),
                shutdown.clone(),
            )
            .await;
            if let Some(listener) = self.stats {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let metrics = Arc::clone(&self.metrics);
                let interval = self.options.stats_interval;
                tokio::spawn(stats::serve_stats(
                    listener,
                    metrics,
                    interval,
                    shutdown.clone(),
                ));
            }
            if let Some(listener) = self.admin {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                tokio::spawn(admin::serve(
                    listener,
                    admin_of(&control, &self.metrics, self.admin_token),
                    shutdown.clone(),
                ));
            }
            // Membership and the config watch; awaited at the end, so a stopping instance
            // revokes its lease (its key vanishes at once, not after the TTL).
            let member = self.options.store.clone().map(|member| {
                tokio::spawn(fleet::member::run(
                    Arc::clone(&control),
                    member,
                    admin_addr,
                    shutdown.clone(),
                ))
            });
            let outcome = match signals {
                Some(signals) => signals.watch(&control, &shutdown).await,
                None => {
                    shutdown.cancelled().await;
                    Ok(())
                }
            };
            control.stop().await;
            if let Some(member) = member {
                let _ = crate::timer::timeout(fleet::STOP_LIMIT, member).await;
            }
            outcome
        });
        shutdown.cancel();
        for thread in threads {
            let _ = thread.join();
        }
        result
    }
}

/// The admin server's view of the proxy: metrics, live pools, reload.
fn admin_of(control: &Arc<Control>, metrics: &Arc<Metrics>, token: Option<Token>) -> Admin {
    let pools = Arc::clone(control);
    let reload = Arc::clone(control);
    Admin {
        metrics: Arc::clone(metrics),
        pools: Arc::new(move || pools.pools_json()),
        reload: Arc::new(move || {
            let control = Arc::clone(&reload);
            Box::pin(async move { control.reload().await.map_err(|error| rejected(&error)) })
        }),
        token,
    }
}

/// How the admin server words a failed reload: whose fault it was, and why.
fn rejected(error: &ReloadError) -> Rejected {
    let reason = error.to_string();
    match error {
        ReloadError::NoFile | ReloadError::Config(_) => Rejected::Invalid(reason),
        ReloadError::Resolve(_) => Rejected::Unavailable(reason),
        ReloadError::Bind { .. } | ReloadError::Gone { .. } => Rejected::Failed(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reachable_admin_needs_a_token_or_an_explicit_insecure() {
        let at = |addr: &str| addr.parse::<SocketAddr>().unwrap();
        for loopback in ["127.0.0.1:22223", "127.9.9.9:1", "[::1]:22223"] {
            assert!(
                check_admin_exposure(at(loopback), false, false).is_ok(),
                "{loopback}"
            );
        }
        for exposed in ["0.0.0.0:22223", "10.1.2.3:22223", "[::]:22223"] {
            let error = check_admin_exposure(at(exposed), false, false).unwrap_err();
            assert!(error.to_string().contains("--admin-token FILE"), "{error}");
            assert!(check_admin_exposure(at(exposed), true, false).is_ok());
            assert!(check_admin_exposure(at(exposed), false, true).is_ok());
        }
    }
}
