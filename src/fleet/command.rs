//! The operator's commands: `keyway publish` (validate, show the key-move estimate, write with
//! compare-and-swap, leave a history entry; `--rollback REV`), `keyway history` and
//! `keyway fleet` (live instances, the revision each serves, drift).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::{sha256, HistoryEntry, Instance, Store, StoreArgs, StoreError};
use crate::config::Config;

/// The subcommands; `keyway` without one is the proxy ([`crate::cli::Cli`]).
#[derive(Debug, Parser)]
#[command(name = "keyway", version)]
struct FleetCli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a config and publish it to the config store (compare-and-swap), leaving a
    /// history entry.
    Publish(PublishArgs),
    /// List the config store's publish history.
    History {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the live instances, the revision each serves, and drift.
    Fleet {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["conf_file", "rollback"])))]
struct PublishArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The config file to publish.
    #[arg(short = 'c', long = "conf-file", value_name = "FILE")]
    conf_file: Option<PathBuf>,
    /// Republish the config of an earlier revision (from `keyway history`), validated again.
    #[arg(long = "rollback", value_name = "REV")]
    rollback: Option<i64>,
    /// Write only if the config is still at revision N (default: the revision read now).
    #[arg(long = "expect-revision", value_name = "N")]
    expect_revision: Option<i64>,
    /// Validate and print the estimate; write nothing.
    #[arg(long = "dry-run")]
    dry_run: bool,
    /// Who publishes, for the history (default: the OS user).
    #[arg(long = "author", value_name = "NAME")]
    author: Option<String>,
}

/// The subcommands' names: the first argument that makes `keyway` a command, not the proxy.
const COMMANDS: [&str; 3] = ["publish", "history", "fleet"];

/// Runs `keyway publish|history|fleet ...` when the first argument names one; `None`: the
/// arguments are the proxy's.
pub fn run_if_asked() -> Option<ExitCode> {
    let first = std::env::args().nth(1)?;
    if !COMMANDS.contains(&first.as_str()) {
        return None;
    }
    let cli = FleetCli::parse();
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| runtime.block_on(run(cli.command)));
    Some(match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("keyway: {error}");
            ExitCode::FAILURE
        }
    })
}

async fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Publish(args) => {
            let store = store_of(&args.store)?;
            let mut client = store.connect().await.map_err(text)?;
            publish(&store, &mut client, &args).await
        }
        Command::History { store } => {
            let store = store_of(&store)?;
            let mut client = store.connect().await.map_err(text)?;
            print!("{}", history_table(&history(&store, &mut client).await?));
            Ok(ExitCode::SUCCESS)
        }
        Command::Fleet { store } => {
            let store = store_of(&store)?;
            let mut client = store.connect().await.map_err(text)?;
            let latest = store.config(&mut client).await.map_err(text)?;
            let instances = instances(&store, &mut client).await?;
            print!("{}", fleet_table(latest.as_ref(), &instances));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn text(error: StoreError) -> String {
    error.to_string()
}

fn store_of(args: &StoreArgs) -> Result<Store, String> {
    args.store()
        .map_err(text)?
        .ok_or_else(|| "--config-store etcd://HOST:PORT/PREFIX is required".to_owned())
}

async fn publish(
    store: &Store,
    client: &mut Client,
    args: &PublishArgs,
) -> Result<ExitCode, String> {
    let (yaml, source, rollback_of) = match (&args.conf_file, args.rollback) {
        (Some(path), _) => {
            let yaml = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
            (yaml, path.display().to_string(), None)
        }
        (None, Some(rev)) => {
            let entry = history(store, client)
                .await?
                .into_iter()
                .find(|e| e.revision == rev)
                .ok_or_else(|| format!("no revision {rev} in {}", store.history_prefix()))?;
            (entry.config, format!("revision {rev}"), Some(rev))
        }
        (None, None) => return Err("nothing to publish: -c FILE or --rollback REV".into()),
    };
    let new = match Config::parse(&yaml) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("keyway: configuration '{source}' syntax is invalid\n{error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    eprintln!("keyway: configuration '{source}' syntax is ok");
    let key = store.config_key();
    let current = store.config(client).await.map_err(text)?;
    let at = current.as_ref().map_or(0, |(rev, _)| *rev);
    let expected = args.expect_revision.unwrap_or(at);
    if expected != at {
        return Err(format!(
            "refused: {key} is at revision {at}, not {expected}: someone published since \
             (see keyway history); review and retry"
        ));
    }
    let old = current
        .as_ref()
        .and_then(|(_, yaml)| Config::parse(yaml).ok());
    if current.is_some() && old.is_none() {
        println!("revision {at} is invalid (no instance serves it): estimating from nothing");
    }
    let old = old.map(|c| c.pools).unwrap_or_default();
    let diff = crate::control::diff::describe(&old, &new.pools);
    if current
        .as_ref()
        .is_some_and(|(_, yaml_now)| *yaml_now == yaml)
    {
        println!("the same text as revision {at}: publishing makes a new revision of it");
    }
    println!("from revision {at}:");
    for line in &diff {
        println!("  {line}");
    }
    if args.dry_run {
        println!("dry run: nothing written");
        return Ok(ExitCode::SUCCESS);
    }
    // Compare-and-swap: written only while the key is still at the revision read (0: absent).
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key.as_str(),
            CompareOp::Equal,
            expected,
        )])
        .and_then([TxnOp::put(key.as_str(), yaml.as_str(), None)]);
    let response = client.txn(txn).await.map_err(|e| e.to_string())?;
    if !response.succeeded() {
        return Err(format!(
            "refused: {key} changed since revision {expected} (someone published meanwhile); \
             nothing written"
        ));
    }
    let revision = response.header().map_or(0, |h| h.revision());
    let entry = HistoryEntry {
        revision,
        previous: at,
        author: args.author.clone().unwrap_or_else(os_user),
        time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        sha256: sha256(&yaml),
        diff,
        rollback_of,
        config: yaml,
    };
    let json = serde_json::to_string(&entry).map_err(|e| e.to_string())?;
    let history_key = format!("{}{revision}", store.history_prefix());
    client
        .put(history_key.as_str(), json, None)
        .await
        .map_err(|e| format!("published revision {revision}, but {history_key}: {e}"))?;
    println!("published revision {revision} (sha256 {})", entry.sha256);
    Ok(ExitCode::SUCCESS)
}

/// The OS user: `$USER`, `$LOGNAME`, else the uid.
fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("uid-{}", rustix::process::getuid().as_raw()))
}

/// Every value under `prefix`, parsed as `T`; a value that does not parse is an error naming
/// its key.
async fn values<T: serde::de::DeserializeOwned>(
    client: &mut Client,
    prefix: &str,
) -> Result<Vec<T>, String> {
    let response = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| e.to_string())?;
    response
        .kvs()
        .iter()
        .map(|kv| {
            serde_json::from_slice(kv.value())
                .map_err(|e| format!("{}: {e}", String::from_utf8_lossy(kv.key())))
        })
        .collect()
}

async fn history(store: &Store, client: &mut Client) -> Result<Vec<HistoryEntry>, String> {
    let mut entries: Vec<HistoryEntry> = values(client, &store.history_prefix()).await?;
    entries.sort_by_key(|e| e.revision);
    Ok(entries)
}

async fn instances(store: &Store, client: &mut Client) -> Result<Vec<Instance>, String> {
    let mut instances: Vec<Instance> = values(client, &store.instances_prefix()).await?;
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(instances)
}

/// `keyway history`: one line per publish, oldest first.
fn history_table(entries: &[HistoryEntry]) -> String {
    let mut out = format!(
        "{:<9} {:<20} {:<12} {:<12} CHANGES\n",
        "REVISION", "TIME (UTC)", "AUTHOR", "SHA256"
    );
    for e in entries {
        let mut changes = e.diff.join("; ");
        if let Some(rev) = e.rollback_of {
            changes = format!("rollback to revision {rev}; {changes}");
        }
        out.push_str(&format!(
            "{:<9} {:<20} {:<12} {:<12} {changes}\n",
            e.revision,
            utc(e.time),
            e.author,
            e.sha256.get(..12).unwrap_or(&e.sha256),
        ));
    }
    out
}

/// `keyway fleet`: the latest revision, then one line per live instance with its state: `ok`
/// (serves the latest), `REJECTED` (refused the latest, serves an older one) or `DRIFT`
/// (serves another revision without having refused the latest: still catching up, or cut off
/// from etcd).
fn fleet_table(latest: Option<&(i64, String)>, instances: &[Instance]) -> String {
    let (rev, sha) = latest.map_or((0, String::new()), |(r, y)| (*r, sha256(y)));
    let on_latest = instances.iter().filter(|i| i.revision == rev).count();
    let mut out = format!(
        "latest revision {rev} (sha256 {}): {on_latest} of {} instances serve it\n",
        sha.get(..12).unwrap_or("-"),
        instances.len()
    );
    out.push_str(&format!(
        "{:<24} {:<9} {:<22} {:<22} STATE\n",
        "INSTANCE", "REVISION", "LISTEN", "ADMIN"
    ));
    for i in instances {
        let state = if i.revision == rev {
            "ok".to_owned()
        } else if i.rejected_revision == Some(rev) {
            format!(
                "REJECTED {rev}: {}",
                i.rejected_error.as_deref().unwrap_or("")
            )
        } else {
            format!("DRIFT: serves {}, latest {rev}", i.revision)
        };
        out.push_str(&format!(
            "{:<24} {:<9} {:<22} {:<22} {state}\n",
            i.id,
            i.revision,
            if i.listen.is_empty() {
                "-".to_owned()
            } else {
                i.listen.join(",")
            },
            i.admin.as_deref().unwrap_or("-"),
        ));
    }
    out
}

/// `secs` since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC; the civil-from-days algorithm).
fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_764_750_123), "2025-12-03 08:22:03");
    }

    fn instance(id: &str, revision: i64, rejected: Option<i64>) -> Instance {
        Instance {
            id: id.into(),
            revision,
            rejected_revision: rejected,
            rejected_error: rejected.map(|_| "bad".into()),
            ..Instance::default()
        }
    }

    #[test]
    fn fleet_table_flags_drift_and_rejection() {
        let latest = (7, "x".to_owned());
        let table = fleet_table(
            Some(&latest),
            &[
                instance("a", 7, None),
                instance("b", 5, Some(7)),
                instance("c", 5, None),
            ],
        );
        assert!(table.starts_with("latest revision 7 "), "{table}");
        assert!(table.contains("1 of 3 instances serve it"), "{table}");
        let state = |id: &str| {
            table
                .lines()
                .find(|l| l.starts_with(id))
                .and_then(|l| l.split_whitespace().nth(4))
                .map(str::to_owned)
        };
        assert_eq!(state("a ").as_deref(), Some("ok"));
        assert_eq!(state("b ").as_deref(), Some("REJECTED"));
        assert_eq!(state("c ").as_deref(), Some("DRIFT:"));
    }
}
