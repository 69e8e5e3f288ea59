//! A fleet of Keyways with one shard map, kept in etcd v3 (`--config-store
//! etcd://HOST:PORT[,HOST:PORT...]/PREFIX`):
//!
//! - `PREFIX/config`: the YAML every instance serves. Its etcd `mod_revision` is *the
//!   revision*: instances watch the key and put each new revision through the reload pipeline
//!   ([`crate::control::Control::apply`]); an invalid one is installed nowhere.
//! - `PREFIX/history/<revision>`: one JSON [`HistoryEntry`] per publish (author, time, SHA-256,
//!   the key-move diff, and the config itself, so a rollback survives etcd compaction).
//! - `PREFIX/instances/<id>`: each live instance's JSON [`Instance`], under a lease that
//!   vanishes with the process (ZooKeeper's ephemeral nodes).
//!
//! [`member`] is the instance's side (watch, install, register), [`command`] the operator's
//! (`keyway publish`, `keyway history`, `keyway fleet`), [`store`] the connection both use.
//! `docs/fleet.md` says what is promised and why.

pub mod command;
pub mod member;
pub mod store;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, ListenOverride};
pub use store::{Store, StoreArgs, StoreError};

/// The membership lease's time to live: a dead instance leaves `keyway fleet` within it.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How long a stopping instance waits for etcd to revoke its lease.
pub const STOP_LIMIT: Duration = Duration::from_secs(2);

/// The instance's `--config-store` flags (flattened into [`crate::cli::Cli`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct InstanceArgs {
    /// Where the config comes from, and who to tell.
    #[command(flatten)]
    pub store: StoreArgs,

    /// With --config-store: the last good config, written on each install; started from when
    /// etcd is unreachable at start (Keyway).
    #[arg(long = "config-cache", value_name = "FILE", requires = "config_store")]
    pub config_cache: Option<PathBuf>,

    /// With --config-store: this instance's name under PREFIX/instances/ (default:
    /// HOST-PID) (Keyway).
    #[arg(long = "instance-id", value_name = "ID", requires = "config_store")]
    pub instance_id: Option<String>,

    /// Listen for pool POOL at ADDR (host:port or /path.sock), whatever the config says;
    /// repeatable (Keyway).
    #[arg(long = "listen", value_name = "POOL=ADDR", action = clap::ArgAction::Append)]
    pub listen: Vec<ListenOverride>,
}

/// What an instance started on from the store, for [`member::run`] to carry on from.
#[derive(Clone, Debug)]
pub struct Member {
    /// The store.
    pub store: Store,
    /// This instance's id under `PREFIX/instances/`.
    pub id: String,
    /// `--config-cache`.
    pub cache: Option<PathBuf>,
    /// The revision served at start and its text's SHA-256 (from etcd or the cache).
    pub served: Revision,
}

/// A config revision and the SHA-256 of its text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// etcd's `mod_revision` of `PREFIX/config`.
    pub revision: i64,
    /// SHA-256 of the YAML text, hex.
    pub sha256: String,
}

/// `PREFIX/instances/<id>`: what one live instance says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Its id (the key's last part).
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Keyway's version.
    pub version: String,
    /// Each pool's listen address, `pool=addr`.
    pub listen: Vec<String>,
    /// The admin server's address, if any.
    pub admin: Option<String>,
    /// The config revision it serves.
    pub revision: i64,
    /// The SHA-256 of the config it serves.
    pub sha256: String,
    /// The last revision it refused to install, if any.
    pub rejected_revision: Option<i64>,
    /// Why.
    pub rejected_error: Option<String>,
}

/// `PREFIX/history/<revision>`: one publish.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The revision the publish made.
    pub revision: i64,
    /// The revision it replaced (0: none).
    pub previous: i64,
    /// Who published (`--author`, default the OS user).
    pub author: String,
    /// When, seconds since the Unix epoch.
    pub time: u64,
    /// SHA-256 of the config text, hex.
    pub sha256: String,
    /// The key-move estimate from the previous config, one line per pool.
    pub diff: Vec<String>,
    /// The earlier revision this one republished (`--rollback`).
    pub rollback_of: Option<i64>,
    /// The config text.
    pub config: String,
}

/// SHA-256 of `text`, lowercase hex.
pub fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first line of a `--config-cache` file: which revision it holds.
const CACHE_HEADER: &str = "# keyway config-store revision ";

/// Writes `text` (revision `revision`) to the cache file atomically: a temp file beside it,
/// then a rename, so a crash leaves the old cache or the new one, never half of one. The file
/// stays a valid `-c` config (the revision is a YAML comment).
///
/// # Errors
/// The file could not be written.
pub fn write_cache(path: &Path, revision: i64, text: &str) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, format!("{CACHE_HEADER}{revision}\n{text}"))?;
    std::fs::rename(&tmp, path)
}

/// Reads a cache file: its revision (0 if the header is missing) and its text.
///
/// # Errors
/// The file could not be read.
pub fn read_cache(path: &Path) -> std::io::Result<(i64, String)> {
    let text = std::fs::read_to_string(path)?;
    let revision = text
        .lines()
        .next()
        .and_then(|line| line.strip_prefix(CACHE_HEADER))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or(0);
    let body = match text.split_once('\n') {
        Some((first, rest)) if first.starts_with(CACHE_HEADER) => rest.to_owned(),
        _ => text,
    };
    Ok((revision, body))
}

/// The cache's revision, text and config.
fn from_cache(path: &Path) -> Result<(i64, String, Config), String> {
    let (revision, text) =
        read_cache(path).map_err(|e| format!("cannot read the cache {}: {e}", path.display()))?;
    let config = Config::parse(&text)
        .map_err(|e| format!("the cache {} is invalid\n{e}", path.display()))?;
    Ok((revision, text, config))
}

/// The config an instance with `--config-store` starts on: the store's `PREFIX/config`, or
/// the `--config-cache` file when etcd cannot be reached or holds an invalid config; with what
/// to carry on watching.
///
/// # Errors
/// Why there is nothing to start on: etcd unreachable and no cache, no config published yet,
/// or the config (from etcd or the cache) is invalid.
pub fn start(args: &InstanceArgs) -> Result<(Config, Member), String> {
    let Some(store) = args.store.store().map_err(|e| e.to_string())? else {
        return Err("no --config-store".into());
    };
    let fetched = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                let mut client = store.connect().await?;
                store.config(&mut client).await
            })
            .map_err(|e| e.to_string())
        });
    let cache = args.config_cache.as_deref().filter(|c| c.exists());
    let (revision, text, config) = match fetched {
        Ok(Some((revision, text))) => match (Config::parse(&text), cache) {
            (Ok(config), _) => {
                if let Some(path) = &args.config_cache {
                    if let Err(error) = write_cache(path, revision, &text) {
                        tracing::warn!("cannot write the cache {}: {error}", path.display());
                    }
                }
                (revision, text, config)
            }
            // The fleet keeps serving its last good map; so does a restarted instance that
            // has it (the watch then reports the latest revision as rejected).
            (Err(error), Some(cache)) => {
                tracing::warn!(
                    "{} (revision {revision}) is invalid; starting from the cache {}: {}",
                    store.config_key(),
                    cache.display(),
                    error.to_string().trim_end().replace('\n', "; ")
                );
                from_cache(cache)?
            }
            (Err(error), None) => {
                return Err(format!(
                    "configuration '{}' (revision {revision}) is invalid (and no --config-cache \
                     to start from)\n{error}",
                    store.config_key()
                ))
            }
        },
        Ok(None) => {
            return Err(format!(
                "config store {store}: nothing published at {} yet (keyway publish)",
                store.config_key()
            ))
        }
        Err(error) => match cache {
            Some(cache) => {
                tracing::warn!(
                    "config store {store} unreachable ({error}); starting from the cache {}",
                    cache.display()
                );
                from_cache(cache)?
            }
            None => {
                return Err(format!(
                    "config store {store} unreachable: {error} (no --config-cache to start from)"
                ))
            }
        },
    };
    let id = args.instance_id.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            crate::metrics::stats::hostname(),
            std::process::id()
        )
    });
    let member = Member {
        store,
        id,
        cache: args.config_cache.clone(),
        served: Revision {
            revision,
            sha256: sha256(&text),
        },
    };
    Ok((config, member))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_round_trips_and_stays_a_valid_config() {
        let dir = std::env::temp_dir().join(format!("keyway-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cache.yml");
        let yaml = "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n    - 127.0.0.1:6379:1\n";
        write_cache(&path, 42, yaml).unwrap();
        assert_eq!(read_cache(&path).unwrap(), (42, yaml.to_owned()));
        assert!(Config::load(&path).is_ok(), "the cache is a -c file");
        write_cache(&path, 43, yaml).unwrap();
        assert_eq!(read_cache(&path).unwrap().0, 43, "replaced");
        assert!(!dir.join("cache.yml.tmp").exists(), "renamed into place");
        // A hand-made file without the header: revision 0, the whole text.
        std::fs::write(&path, yaml).unwrap();
        assert_eq!(read_cache(&path).unwrap(), (0, yaml.to_owned()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sha256_is_hex_of_the_text() {
        assert_eq!(
            sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
