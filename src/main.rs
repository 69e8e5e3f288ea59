//! The `keyway` binary: flags, logging, config, then `keyway::bind` + `run`.
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::cast_possible_truncation)
)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use keyway::cli::{Cli, MAX_LOG_LEVEL};
use keyway::config::Config;
use keyway::shutdown::Shutdown;
use keyway::signals::LogControl;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Set by `-d` in the daemon's environment: the unix socket on which the daemon tells its parent
/// that it listens (`ready`) or why it could not start. Its presence also tells the re-executed
/// program that it is the daemon, so it does not daemonize again whatever its flags say.
const DAEMON_READY_ENV: &str = "KEYWAY_DAEMON_READY";

/// What the daemon sends its parent once every listener is bound and the pid file written.
const READY: &str = "ready";

/// How long the parent waits for the daemon to listen: a hang bound (Sentinel and cluster
/// pools ask their seeds first).
const DAEMON_START_LIMIT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "plan") {
        return plan(std::env::args_os().skip(2));
    }
    if let Some(code) = keyway::fleet::command::run_if_asked() {
        return code;
    }
    let cli = Cli::parse();
    if cli.describe_stats {
        print!("{}", keyway::metrics::stats::describe());
        return ExitCode::SUCCESS;
    }
    let ready_path = std::env::var_os(DAEMON_READY_ENV).map(PathBuf::from);
    let mut ready = ready_path.as_deref().map(Ready::connect);
    if ready.is_some() {
        // The daemon: a new session, away from the terminal that started its parent.
        if let Err(error) = rustix::process::setsid() {
            return fail(&mut ready, format!("cannot daemonize: setsid: {error}"));
        }
    }
    if let Err(error) = init_logging(&cli) {
        return fail(&mut ready, format!("cannot open log file: {error}"));
    }
    let path = cli.conf_file.display().to_string();
    let (config, member) = if cli.fleet.store.config_store.is_some() {
        match keyway::fleet::start(&cli.fleet) {
            Ok((config, member)) => (config, Some(member)),
            Err(error) => return fail(&mut ready, error),
        }
    } else {
        match Config::load(&cli.conf_file) {
            Ok(config) => (config, None),
            Err(error) => {
                return fail(
                    &mut ready,
                    format!("configuration file '{path}' syntax is invalid\n{error}"),
                );
            }
        }
    };
    let path = match &member {
        Some(member) => member.store.config_key(),
        None => path,
    };
    if cli.test_conf {
        eprintln!("keyway: configuration file '{path}' syntax is ok");
        return match &cli.diff {
            Some(old) => print_diff(old, &config),
            None => ExitCode::SUCCESS,
        };
    }
    if cli.daemonize && ready.is_none() {
        return daemonize();
    }
    match serve(&cli, config, member, &mut ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            fail(&mut ready, error.to_string())
        }
    }
}

/// Reports a start error: to the parent when this is the daemon (whose stderr is gone), else to
/// stderr. The exit code to return.
fn fail(ready: &mut Option<Ready>, message: String) -> ExitCode {
    match ready.take() {
        Some(ready) => ready.report(&message),
        None => eprintln!("keyway: {message}"),
    }
    ExitCode::FAILURE
}

fn serve(
    cli: &Cli,
    config: Config,
    member: Option<keyway::fleet::Member>,
    ready: &mut Option<Ready>,
) -> std::io::Result<()> {
    let threads = cli.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n.get(),
    );
    let stats =
        std::net::ToSocketAddrs::to_socket_addrs(&(cli.stats_addr.as_str(), cli.stats_port))
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("invalid stats address '{}'", cli.stats_addr),
                )
            })?;
    let options = keyway::server::Options {
        threads,
        io: cli.io,
        // With a config store the store is the config: a reload has no file to re-read.
        config_path: member.is_none().then(|| cli.conf_file.clone()),
        signals: true,
        admin: cli.admin(),
        admin_token: cli.admin_token.clone(),
        admin_insecure: cli.admin_insecure,
        stats: Some(stats),
        stats_interval: cli.stats_interval(),
        listen: cli.fleet.listen.clone(),
        store: member,
    };
    let proxy = keyway::bind(config, options)?;
    for (pool, addr) in proxy.local_addrs() {
        tracing::info!(pool, ?addr, "listening");
    }
    if let Some(addr) = proxy.admin_addr() {
        tracing::info!(%addr, "admin server: /metrics /healthz /pools, POST /reload");
    }
    if let Some(addr) = proxy.stats_addr() {
        tracing::info!(%addr, "stats server (nutcracker JSON)");
    }
    // Written by the serving process itself (the daemon, with -d), and removed when this guard
    // drops: on a normal stop, on an error after start, and after SIGTERM/SIGINT.
    let _pid_file = cli.pid_file.as_deref().map(PidFile::write).transpose()?;
    if let Some(ready) = ready.take() {
        ready.report(READY);
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        threads,
        "keyway started"
    );
    let result = proxy.run(Shutdown::new());
    tracing::info!("keyway stopped");
    result
}

/// The pid file, removed on drop.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: &Path) -> std::io::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("cannot write pid file '{}': {error}", path.display()),
            )
        })?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `-t --diff OLD`: what a reload from `old` to `new` would change, without touching a proxy.
fn print_diff(old: &std::path::Path, new: &Config) -> ExitCode {
    match Config::load(old) {
        Ok(old) => {
            for line in keyway::control::diff::describe(&old.pools, &new.pools) {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "keyway: old configuration file '{}' is invalid",
                old.display()
            );
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// How long `keyway plan --sample-from` waits for each connect and `SCAN` reply.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);

/// `keyway plan -c OLD --to NEW [--sample-from HOST:PORT]...`: per pool, the share of keys
/// that move and between which backends.
fn plan(args: impl Iterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = keyway::cli::PlanCli::parse_from(std::iter::once("keyway plan".into()).chain(args));
    let load = |path: &std::path::Path| {
        Config::load(path).map_err(|error| {
            eprintln!("keyway: configuration file '{}' is invalid", path.display());
            eprintln!("{error}");
        })
    };
    let (Ok(old), Ok(new)) = (load(&cli.old), load(&cli.new)) else {
        return ExitCode::FAILURE;
    };
    let (keys, source) = if cli.sample_from.is_empty() {
        (keyway::control::plan::synthetic_keys(), "synthetic")
    } else {
        let sampled = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| error.to_string())
            .and_then(|runtime| {
                runtime
                    .block_on(keyway::control::plan::sample(
                        &cli.sample_from,
                        cli.sample_auth.as_deref(),
                        cli.sample_size,
                        SAMPLE_TIMEOUT,
                    ))
                    .map_err(|error| error.to_string())
            });
        match sampled {
            Ok(keys) => (keys, "sampled"),
            Err(error) => {
                eprintln!("keyway: cannot sample keys: {error}");
                return ExitCode::FAILURE;
            }
        }
    };
    for line in keyway::control::plan::report(&old.pools, &new.pools, &keys, source) {
        println!("{line}");
    }
    ExitCode::SUCCESS
}

/// Maps nutcracker's `-v` levels (0..11, default 5 = notice) onto tracing levels.
fn level_filter(level: u8) -> LevelFilter {
    match level {
        0..=3 => LevelFilter::WARN,
        4..=5 => LevelFilter::INFO,
        6..=7 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Sets up logging to stderr or `-o FILE`, with the level and the file reachable from the
/// signals: SIGTTIN/SIGTTOU move the level (a reload layer), SIGHUP reopens the file (a writer
/// whose file can be swapped, for logrotate).
fn init_logging(cli: &Cli) -> std::io::Result<()> {
    let level = Arc::new(AtomicU8::new(cli.log_level()));
    let (filter, filter_handle) =
        tracing_subscriber::reload::Layer::new(level_filter(cli.log_level()));
    let format = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(false);
    let reopen: Box<dyn Fn() -> std::io::Result<()> + Send + Sync> = match &cli.output {
        Some(path) => {
            let file = Arc::new(Mutex::new(open_log(path)?));
            let swapped = Arc::clone(&file);
            let path = path.clone();
            tracing_subscriber::registry()
                .with(filter)
                .with(format.with_writer(move || LogFile(Arc::clone(&file))))
                .init();
            Box::new(move || {
                let new = open_log(&path)?;
                // A poisoned lock only means a writer panicked mid-line; the file is still fine.
                *swapped.lock().unwrap_or_else(|p| p.into_inner()) = new;
                Ok(())
            })
        }
        None => {
            tracing_subscriber::registry()
                .with(filter)
                .with(format.with_writer(std::io::stderr))
                .init();
            Box::new(|| Ok(()))
        }
    };
    keyway::signals::set_log_control(LogControl {
        reopen,
        step_level: Box::new(move |step| {
            let old = level.load(Ordering::Relaxed);
            let new = old.saturating_add_signed(step).min(MAX_LOG_LEVEL);
            level.store(new, Ordering::Relaxed);
            if let Err(error) = filter_handle.reload(level_filter(new)) {
                tracing::error!("cannot change the log level: {error}");
            }
            new
        }),
    });
    Ok(())
}

/// The `-o` file as the log layer writes it; SIGHUP swaps the file behind the lock.
struct LogFile(Arc<Mutex<File>>);

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

fn open_log(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `-d`: runs this program again with the same flags, marked as the daemon by
/// [`DAEMON_READY_ENV`], and exits once the daemon listens (0) or has failed (1, with its error).
fn daemonize() -> ExitCode {
    match spawn_daemon() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keyway: {error}");
            ExitCode::FAILURE
        }
    }
}

fn spawn_daemon() -> Result<(), String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let socket =
        std::env::temp_dir().join(format!("keyway-daemon-{}-{nanos}.sock", std::process::id()));
    let listener = UnixListener::bind(&socket)
        .map_err(|e| format!("cannot daemonize: {}: {e}", socket.display()))?;
    let result = std::env::current_exe()
        .and_then(|exe| {
            std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .env(DAEMON_READY_ENV, &socket)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
        })
        .map_err(|e| format!("cannot daemonize: {e}"))
        .and_then(|child| await_daemon(&listener, child));
    let _ = std::fs::remove_file(&socket);
    result
}

/// Waits for the daemon's report on `listener`, or its early exit.
fn await_daemon(listener: &UnixListener, mut child: Child) -> Result<(), String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot daemonize: {e}"))?;
    let deadline = Instant::now() + DAEMON_START_LIMIT;
    loop {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(DAEMON_START_LIMIT));
            let mut report = String::new();
            let _ = stream.read_to_string(&mut report);
            return match report.as_str() {
                READY => Ok(()),
                "" => Err(format!("the daemon exited: {:?}", child.wait().ok())),
                error => Err(error.to_string()),
            };
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the daemon exited before listening: {status}"));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the daemon did not listen within {DAEMON_START_LIMIT:?}; stopped it"
            ));
        }
        // Control plane, once at start: a short poll keeps this free of threads and signals.
        #[allow(clippy::disallowed_methods)] // the parent has nothing else to do meanwhile
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The daemon's line to its parent (see [`DAEMON_READY_ENV`]).
struct Ready(Option<UnixStream>);

impl Ready {
    fn connect(path: &Path) -> Ready {
        // Without the parent there is nobody to tell; the daemon still runs.
        Ready(UnixStream::connect(path).ok())
    }

    /// Sends `ready` or an error, once; the parent then exits.
    fn report(self, message: &str) {
        if let Some(mut stream) = self.0 {
            let _ = stream.write_all(message.as_bytes());
        }
    }
}
