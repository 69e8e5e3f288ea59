//! Command-line flags: every nutcracker flag with its meaning and default, plus Keyway's own
//! long options.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::proxy::worker::Io;
use crate::server::AdminBind;

/// The highest log level nutcracker knows (`LOG_PVERB`); higher `-v` values are clamped to it.
pub const MAX_LOG_LEVEL: u8 = 11;

/// Keyway's command line: nutcracker's flags, same letters, meanings and defaults.
#[derive(Clone, Debug, PartialEq, Eq, Parser)]
#[command(
    name = "keyway",
    version,
    // getopt semantics, as in nutcracker: a repeated flag overrides the earlier one.
    args_override_self = true,
    about = "A Redis/memcached sharding proxy, drop-in for twemproxy (nutcracker)"
)]
pub struct Cli {
    /// Test the configuration for syntax errors and exit.
    #[arg(short = 't', long = "test-conf")]
    pub test_conf: bool,

    /// Run as a daemon.
    #[arg(short = 'd', long = "daemonize")]
    pub daemonize: bool,

    /// Print stats description and exit.
    #[arg(short = 'D', long = "describe-stats")]
    pub describe_stats: bool,

    /// Set logging level (0..=11; higher values are clamped to 11, as nutcracker does).
    #[arg(short = 'v', long = "verbose", value_name = "N", default_value_t = 5)]
    pub verbose: u32,

    /// Set logging file (default: stderr).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Set configuration file.
    #[arg(
        short = 'c',
        long = "conf-file",
        value_name = "FILE",
        default_value = "conf/nutcracker.yml"
    )]
    pub conf_file: PathBuf,

    /// Set stats monitoring port.
    #[arg(
        short = 's',
        long = "stats-port",
        value_name = "N",
        default_value_t = 22222,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub stats_port: u16,

    /// Set stats monitoring ip.
    #[arg(
        short = 'a',
        long = "stats-addr",
        value_name = "ADDR",
        default_value = "0.0.0.0"
    )]
    pub stats_addr: String,

    /// Set stats aggregation interval in msec.
    #[arg(
        short = 'i',
        long = "stats-interval",
        value_name = "MS",
        default_value_t = 30_000
    )]
    pub stats_interval: u32,

    /// Set pid file.
    #[arg(short = 'p', long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Set size of mbuf chunk in bytes (accepted for compatibility and ignored; nutcracker's
    /// range 512..=16777216 is still enforced so the same command lines fail).
    #[arg(
        short = 'm',
        long = "mbuf-size",
        value_name = "N",
        default_value_t = 16_384,
        value_parser = clap::value_parser!(u32).range(512..=16_777_216)
    )]
    pub mbuf_size: u32,

    /// Worker threads (Keyway; default: the cores this process may use).
    #[arg(long = "threads", value_name = "N")]
    pub threads: Option<NonZeroUsize>,

    /// HTTP admin address: /metrics, /healthz, /pools, POST /reload, or `off` (Keyway).
    /// Without it the admin server takes 127.0.0.1:22223 only if that port is free (else a
    /// warning), so several instances run side by side with nutcracker's flags alone; an
    /// address given here must bind, or Keyway exits.
    #[arg(long = "admin", value_name = "ADDR|off", value_parser = parse_admin)]
    pub admin: Option<AdminFlag>,

    /// A file holding the admin server's bearer token: every endpoint but /healthz then wants
    /// `Authorization: Bearer <token>`; the file is re-read per request (Keyway).
    #[arg(long = "admin-token", value_name = "FILE")]
    pub admin_token: Option<PathBuf>,

    /// Serve the admin API on a non-loopback address without a token; without this flag
    /// Keyway refuses to (Keyway).
    #[arg(long = "admin-insecure")]
    pub admin_insecure: bool,

    /// Client socket I/O: `epoll`, or `uring` (one io_uring per worker, epoll where the
    /// kernel refuses it); the environment's KEYWAY_IO when not given (Keyway).
    #[arg(
        long = "io",
        env = "KEYWAY_IO",
        value_name = "epoll|uring",
        default_value = "epoll",
        value_parser = parse_io
    )]
    pub io: Io,

    /// With `-t`: also print what changes from this (old) config to `-c`'s, with the
    /// estimated share of keys that move per pool (Keyway).
    #[arg(long = "diff", value_name = "OLD")]
    pub diff: Option<PathBuf>,

    /// The fleet: `--config-store` (config from etcd, membership), `--config-cache`,
    /// `--instance-id`, `--listen` (Keyway).
    #[command(flatten)]
    pub fleet: crate::fleet::InstanceArgs,
}

/// `keyway plan -c OLD --to NEW`: what a change of config does to the keys, per pool: the
/// share that moves and from which backend to which (Keyway).
#[derive(Clone, Debug, PartialEq, Eq, Parser)]
#[command(
    name = "keyway plan",
    about = "Per pool, the share of keys a config change moves, from which backend to which"
)]
pub struct PlanCli {
    /// The config in force now.
    #[arg(short = 'c', long = "conf-file", value_name = "OLD")]
    pub old: PathBuf,

    /// The config to move to.
    #[arg(long = "to", value_name = "NEW")]
    pub new: PathBuf,

    /// Route keys sampled with `SCAN` from this live Redis server or Keyway pool (all of its
    /// backends) instead of synthetic keys; repeat it for several. Redis pools only.
    #[arg(long = "sample-from", value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub sample_from: Vec<crate::config::HostPort>,

    /// Most keys taken from each `--sample-from` server.
    #[arg(long = "sample-size", value_name = "N", default_value_t = 100_000)]
    pub sample_size: usize,

    /// Password sent with `AUTH` to the `--sample-from` servers.
    #[arg(long = "sample-auth", value_name = "PASSWORD")]
    pub sample_auth: Option<String>,
}

fn parse_host_port(value: &str) -> Result<crate::config::HostPort, String> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| format!("'{value}' is not host:port"))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|&port| port != 0)
        .ok_or_else(|| format!("'{port}' is not a port (1-65535)"))?;
    if host.is_empty() {
        return Err(format!("'{value}' has no host"));
    }
    Ok(crate::config::HostPort {
        host: host.to_owned(),
        port,
    })
}

/// The default admin address, used only when it is free and `--admin` was not given.
pub const DEFAULT_ADMIN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    22223,
));

/// What `--admin` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminFlag {
    /// `--admin off`: no admin server.
    Off,
    /// `--admin ADDR`: listen there, or fail to start.
    At(SocketAddr),
}

fn parse_io(value: &str) -> Result<Io, String> {
    match value {
        "epoll" => Ok(Io::Epoll),
        "uring" => Ok(Io::Uring),
        _ => Err(format!("'{value}' is neither epoll nor uring")),
    }
}

fn parse_admin(value: &str) -> Result<AdminFlag, String> {
    if value == "off" {
        return Ok(AdminFlag::Off);
    }
    value
        .parse()
        .map(AdminFlag::At)
        .map_err(|_| format!("'{value}' is neither host:port nor 'off'"))
}

impl Cli {
    /// Where the admin server listens: an explicit `--admin ADDR` must bind; without the flag,
    /// the default address is taken only if free (nutcracker has no admin port, so its command
    /// lines must never fail on one); `--admin off` disables it.
    pub fn admin(&self) -> Option<AdminBind> {
        match self.admin {
            None => Some(AdminBind::IfFree(DEFAULT_ADMIN)),
            Some(AdminFlag::Off) => None,
            Some(AdminFlag::At(addr)) => Some(AdminBind::Required(addr)),
        }
    }

    /// The log level, `-v` clamped to 0..=11 as nutcracker's `log_init` does.
    pub fn log_level(&self) -> u8 {
        u8::try_from(self.verbose.min(u32::from(MAX_LOG_LEVEL))).unwrap_or(MAX_LOG_LEVEL)
    }

    /// The stats aggregation interval (`-i`).
    pub fn stats_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.stats_interval))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    #[test]
    fn plan_takes_old_new_and_samples() {
        let argv = [
            "keyway plan",
            "-c",
            "old.yml",
            "--to",
            "new.yml",
            "--sample-from",
            "127.0.0.1:6379",
            "--sample-from",
            "cache:6380",
        ];
        let plan = PlanCli::try_parse_from(argv).unwrap();
        assert_eq!(
            (plan.old.to_str(), plan.new.to_str()),
            (Some("old.yml"), Some("new.yml"))
        );
        assert_eq!(plan.sample_from.len(), 2);
        assert_eq!(plan.sample_from[1].to_string(), "cache:6380");
        assert_eq!(plan.sample_size, 100_000);
        let bad = PlanCli::try_parse_from(["p", "-c", "a", "--to", "b", "--sample-from", "x"]);
        assert!(bad.is_err());
        assert!(PlanCli::try_parse_from(["p", "-c", "a"]).is_err());
    }

    fn parse(args: &[&str]) -> Cli {
        let argv = std::iter::once("keyway").chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    fn error(args: &[&str]) -> ErrorKind {
        let argv = std::iter::once("keyway").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap_err().kind()
    }

    #[test]
    fn defaults_match_nutcracker() {
        let cli = parse(&[]);
        assert!(!cli.test_conf && !cli.daemonize && !cli.describe_stats);
        assert_eq!(cli.verbose, 5);
        assert_eq!(cli.log_level(), 5);
        assert_eq!(cli.output, None);
        assert_eq!(cli.conf_file, PathBuf::from("conf/nutcracker.yml"));
        assert_eq!(cli.stats_port, 22222);
        assert_eq!(cli.stats_addr, "0.0.0.0");
        assert_eq!(cli.stats_interval(), Duration::from_secs(30));
        assert_eq!(cli.pid_file, None);
        assert_eq!(cli.mbuf_size, 16384);
        assert_eq!(cli.threads, None);
        assert_eq!(cli.admin, None);
        assert_eq!(
            cli.admin(),
            Some(AdminBind::IfFree("127.0.0.1:22223".parse().unwrap()))
        );
    }

    #[test]
    fn explicit_admin_must_bind_and_off_disables_it() {
        let cli = parse(&["--admin", "127.0.0.1:22223"]);
        assert_eq!(
            cli.admin(),
            Some(AdminBind::Required("127.0.0.1:22223".parse().unwrap()))
        );
        assert_eq!(parse(&["--admin", "off"]).admin(), None);
        assert_eq!(parse(&["--admin=off"]).admin, Some(AdminFlag::Off));
    }

    #[test]
    fn short_flags() {
        let cli = parse(&[
            "-t",
            "-d",
            "-D",
            "-v",
            "7",
            "-o",
            "/tmp/k.log",
            "-c",
            "a.yml",
            "-s",
            "2000",
            "-a",
            "127.0.0.1",
            "-i",
            "1000",
            "-p",
            "/tmp/k.pid",
            "-m",
            "512",
        ]);
        assert!(cli.test_conf && cli.daemonize && cli.describe_stats);
        assert_eq!(cli.verbose, 7);
        assert_eq!(cli.output, Some(PathBuf::from("/tmp/k.log")));
        assert_eq!(cli.conf_file, PathBuf::from("a.yml"));
        assert_eq!(cli.stats_port, 2000);
        assert_eq!(cli.stats_addr, "127.0.0.1");
        assert_eq!(cli.stats_interval, 1000);
        assert_eq!(cli.pid_file, Some(PathBuf::from("/tmp/k.pid")));
        assert_eq!(cli.mbuf_size, 512);
    }

    #[test]
    fn long_flags_with_equals_and_space() {
        let cli = parse(&[
            "--test-conf",
            "--daemonize",
            "--describe-stats",
            "--verbose=4",
            "--output=/tmp/k.log",
            "--conf-file",
            "b.yml",
            "--stats-port=3000",
            "--stats-addr=::1",
            "--stats-interval=500",
            "--pid-file=/tmp/p",
            "--mbuf-size=1024",
        ]);
        assert!(cli.test_conf && cli.daemonize && cli.describe_stats);
        assert_eq!(cli.verbose, 4);
        assert_eq!(cli.conf_file, PathBuf::from("b.yml"));
        assert_eq!(cli.stats_port, 3000);
        assert_eq!(cli.stats_addr, "::1");
        assert_eq!(cli.stats_interval, 500);
        assert_eq!(cli.mbuf_size, 1024);
    }

    #[test]
    fn attached_short_values() {
        let cli = parse(&["-v4", "-cconf/x.yml", "-tv", "6"]);
        assert!(cli.test_conf);
        assert_eq!(cli.verbose, 6);
        assert_eq!(cli.conf_file, PathBuf::from("conf/x.yml"));
    }

    #[test]
    fn combined_short_flags_as_getopt() {
        let cli = parse(&["-dc", "conf.yml"]);
        assert!(cli.daemonize);
        assert_eq!(cli.conf_file, PathBuf::from("conf.yml"));
        let cli = parse(&["-dv", "6"]);
        assert!(cli.daemonize);
        assert_eq!(cli.verbose, 6);
        let cli = parse(&["-tdp", "/tmp/k.pid"]);
        assert!(cli.test_conf && cli.daemonize);
        assert_eq!(cli.pid_file, Some(PathBuf::from("/tmp/k.pid")));
    }

    #[test]
    fn verbose_above_eleven_is_clamped() {
        assert_eq!(parse(&["-v", "0"]).log_level(), 0);
        assert_eq!(parse(&["-v", "11"]).log_level(), 11);
        assert_eq!(parse(&["-v", "99"]).log_level(), 11);
    }

    #[test]
    fn keyway_long_options() {
        let cli = parse(&["--threads", "4", "--admin", "0.0.0.0:9000"]);
        assert_eq!(cli.threads, NonZeroUsize::new(4));
        assert_eq!(
            cli.admin,
            Some(AdminFlag::At("0.0.0.0:9000".parse().unwrap()))
        );
        let cli = parse(&["--threads=2", "--admin=[::1]:9000"]);
        assert_eq!(cli.threads, NonZeroUsize::new(2));
    }

    #[test]
    fn rejects_bad_values() {
        assert_eq!(error(&["-v", "-1"]), ErrorKind::UnknownArgument);
        assert_eq!(error(&["-v", "x"]), ErrorKind::ValueValidation);
        assert_eq!(error(&["-s", "0"]), ErrorKind::ValueValidation);
        assert_eq!(error(&["-s", "65536"]), ErrorKind::ValueValidation);
        assert_eq!(error(&["-i", "-5"]), ErrorKind::UnknownArgument);
        assert_eq!(error(&["-m", "511"]), ErrorKind::ValueValidation);
        assert_eq!(error(&["-m", "16777217"]), ErrorKind::ValueValidation);
        assert_eq!(error(&["--threads", "0"]), ErrorKind::ValueValidation);
        assert_eq!(error(&["--admin", "nowhere"]), ErrorKind::ValueValidation);
        assert_eq!(error(&["-x"]), ErrorKind::UnknownArgument);
        assert_eq!(error(&["extra"]), ErrorKind::UnknownArgument);
    }

    #[test]
    fn fleet_options() {
        let cli = parse(&[
            "--config-store",
            "etcd://127.0.0.1:2379/kw",
            "--config-cache",
            "/tmp/c.yml",
            "--listen",
            "alpha=127.0.0.1:7000",
            "--listen=beta=/tmp/b.sock",
        ]);
        assert_eq!(
            cli.fleet.store.config_store.as_deref(),
            Some("etcd://127.0.0.1:2379/kw")
        );
        assert_eq!(cli.fleet.config_cache, Some(PathBuf::from("/tmp/c.yml")));
        let pools: Vec<&str> = cli.fleet.listen.iter().map(|l| l.pool.as_str()).collect();
        assert_eq!(pools, ["alpha", "beta"], "--listen repeats");
        assert_eq!(
            error(&["--config-cache", "/tmp/c.yml"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(error(&["--listen", "alpha"]), ErrorKind::ValueValidation);
    }

    #[test]
    fn help_and_version() {
        assert_eq!(error(&["-h"]), ErrorKind::DisplayHelp);
        assert_eq!(error(&["--help"]), ErrorKind::DisplayHelp);
        assert_eq!(error(&["-V"]), ErrorKind::DisplayVersion);
        assert_eq!(error(&["--version"]), ErrorKind::DisplayVersion);
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
