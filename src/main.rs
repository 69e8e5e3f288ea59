//! The `keyway` binary: flags, logging, config, then `keyway::bind` + `run`.

use std::fs::OpenOptions;
use std::process::ExitCode;
use std::sync::Mutex;

use clap::Parser;
use keyway::cli::Cli;
use keyway::config::Config;
use keyway::shutdown::Shutdown;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.describe_stats {
        print!("{}", STATS_DESCRIPTION);
        return ExitCode::SUCCESS;
    }
    if let Err(error) = init_logging(&cli) {
        eprintln!("keyway: cannot open log file: {error}");
        return ExitCode::FAILURE;
    }
    let path = cli.conf_file.display().to_string();
    let config = match Config::load(&cli.conf_file) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("keyway: configuration file '{path}' syntax is invalid");
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    if cli.test_conf {
        eprintln!("keyway: configuration file '{path}' syntax is ok");
        return match &cli.diff {
            Some(old) => print_diff(old, &config),
            None => ExitCode::SUCCESS,
        };
    }
    if cli.daemonize {
        return daemonize();
    }
    match serve(&cli, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("keyway: {error}");
            ExitCode::FAILURE
        }
    }
}

fn serve(cli: &Cli, config: Config) -> std::io::Result<()> {
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
        config_path: Some(cli.conf_file.clone()),
        signals: true,
        admin: cli.admin(),
        stats: Some(stats),
        stats_interval: cli.stats_interval(),
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
    if let Some(pid_file) = &cli.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))?;
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        threads,
        "keyway started"
    );
    let result = proxy.run(Shutdown::new());
    if let Some(pid_file) = &cli.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    tracing::info!("keyway stopped");
    result
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

/// Maps nutcracker's `-v` levels (0..11, default 5 = notice) onto tracing levels.
fn init_logging(cli: &Cli) -> std::io::Result<()> {
    let level = match cli.log_level() {
        0..=3 => tracing::Level::WARN,
        4..=5 => tracing::Level::INFO,
        6..=7 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false);
    match &cli.output {
        Some(path) => {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            builder.with_writer(Mutex::new(file)).init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

/// `-d`: runs this program again without `-d`, detached in its own process group, and exits.
fn daemonize() -> ExitCode {
    let args = std::env::args_os()
        .skip(1)
        .filter(|a| a != "-d" && a != "--daemonize");
    let spawned = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
    });
    match spawned {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keyway: cannot daemonize: {error}");
            ExitCode::FAILURE
        }
    }
}

use std::os::unix::process::CommandExt;

/// `-D`: the stats nutcracker describes, which Keyway serves under the same names.
const STATS_DESCRIPTION: &str = "\
pool stats:
  client_eof          \"# eof on client connections\"
  client_err          \"# errors on client connections\"
  client_connections  \"# active client connections\"
  server_ejects       \"# times backend server was ejected\"
  forward_error       \"# times we encountered a forwarding error\"
  fragments           \"# fragments created from a multi-vector request\"

server stats:
  server_eof          \"# eof on server connections\"
  server_err          \"# errors on server connections\"
  server_timedout     \"# timeouts on server connections\"
  server_connections  \"# active server connections\"
  server_ejected_at   \"timestamp when server was ejected in usec since epoch\"
  requests            \"# requests\"
  request_bytes       \"total request bytes\"
  responses           \"# responses\"
  response_bytes      \"total response bytes\"
  in_queue            \"# requests in incoming queue\"
  in_queue_bytes      \"current request bytes in incoming queue\"
  out_queue           \"# requests in outgoing queue\"
  out_queue_bytes     \"current request bytes in outgoing queue\"
";
