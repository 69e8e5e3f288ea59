//! The instance's side of the fleet: watch `PREFIX/config` and put each new revision through
//! the reload pipeline, and keep `PREFIX/instances/<id>` (under a lease) saying what this
//! instance serves. etcd going away changes nothing served: the instance retries with backoff
//! and, back, re-reads the key (so no change is missed), then watches from there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, PutOptions, WatchOptions};

use super::{sha256, write_cache, Instance, Member, Revision, StoreError, LEASE_TTL};
use crate::config::Config;
use crate::control::{Control, ReloadError};
use crate::shutdown::Shutdown;

/// The first retry's delay after etcd is lost; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// The longest delay between two attempts to reach etcd.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What this instance serves and last refused: its membership value's moving parts.
struct Watcher {
    control: Arc<Control>,
    member: Member,
    admin: Option<SocketAddr>,
    rejected: Option<(i64, String)>,
    /// A refused revision (and its text) that may install later: retried on the keep-alive
    /// tick.
    retry: Option<(i64, String)>,
}

/// Watches the store and keeps this instance registered until `shutdown`; then revokes the
/// lease so the instance leaves `keyway fleet` at once.
pub async fn run(
    control: Arc<Control>,
    member: Member,
    admin: Option<SocketAddr>,
    shutdown: Shutdown,
) {
    let metrics = control.metrics();
    metrics.config_store();
    metrics.set_config_revision(member.served.revision);
    let mut watcher = Watcher {
        control,
        member,
        admin,
        rejected: None,
        retry: None,
    };
    let mut backoff = MIN_BACKOFF;
    loop {
        let outcome = watcher.watch(&mut backoff, &shutdown).await;
        metrics.set_config_store_up(false);
        let Err(error) = outcome else { return };
        tracing::warn!(
            "config store {}: {error}; serving revision {}, retrying in {backoff:?}",
            watcher.member.store,
            watcher.member.served.revision
        );
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = crate::timer::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

impl Watcher {
    /// One connection to etcd: register, read the config, watch it, until shutdown (`Ok`,
    /// the lease revoked) or etcd fails (why).
    async fn watch(
        &mut self,
        backoff: &mut Duration,
        shutdown: &Shutdown,
    ) -> Result<(), StoreError> {
        let store = self.member.store.clone();
        let key = store.config_key();
        let setup = async {
            let mut client = store.connect().await?;
            let ttl = i64::try_from(LEASE_TTL.as_secs()).unwrap_or(10);
            let lease = client.lease_grant(ttl, None).await?.id();
            let (keeper, alive) = client.lease_keep_alive(lease).await?;
            let current = client.get(key.as_str(), None).await?;
            let read_at = current.header().map_or(0, |h| h.revision());
            // Watch from the read on: every later revision arrives, none is missed.
            let options = WatchOptions::new().with_start_revision(read_at + 1);
            let watch = client.watch(key.as_str(), Some(options)).await?;
            Ok::<_, StoreError>((client, lease, keeper, alive, current, watch, read_at))
        };
        let (mut client, lease, mut keeper, mut alive, current, mut watch, read_at) = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            setup = setup => setup?,
        };
        if let Some(kv) = current.kvs().first() {
            self.consider(kv.mod_revision(), kv.value()).await;
        }
        self.register(&mut client, lease).await?;
        let metrics = self.control.metrics();
        metrics.set_config_store_up(true);
        *backoff = MIN_BACKOFF;
        tracing::info!(
            "config store {store}: watching {key} from revision {}, registered as {}",
            read_at + 1,
            self.member.id
        );
        let mut tick = crate::timer::interval(LEASE_TTL / 3);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = client.lease_revoke(lease).await;
                    return Ok(());
                }
                _ = tick.tick() => {
                    keeper.keep_alive().await?;
                    if self.retry().await {
                        self.register(&mut client, lease).await?;
                    }
                }
                message = alive.message() => match message? {
                    Some(response) if response.ttl() > 0 => {}
                    _ => return Err(value(&store.instances_prefix(), "the membership lease expired")),
                },
                message = watch.message() => {
                    let Some(response) = message? else {
                        return Err(value(&key, "etcd closed the watch"));
                    };
                    if response.canceled() {
                        return Err(value(&key, &format!("watch cancelled: {}", response.cancel_reason())));
                    }
                    if response.events().iter().any(|e| e.event_type() == EventType::Delete) {
                        tracing::warn!(
                            "config store: {key} was deleted; keeping revision {}",
                            self.member.served.revision
                        );
                    }
                    // Several revisions in one batch: only the newest matters.
                    let newest = response
                        .events()
                        .iter()
                        .rev()
                        .find(|e| e.event_type() == EventType::Put)
                        .and_then(|e| e.kv());
                    let changed = match newest {
                        Some(kv) => self.consider(kv.mod_revision(), kv.value()).await,
                        None => false,
                    };
                    if changed {
                        self.register(&mut client, lease).await?;
                    }
                }
            }
        }
    }

    /// Puts revision `revision` (`bytes`) through the reload pipeline unless it is the one
    /// served or already refused; true when it installed or refused something.
    async fn consider(&mut self, revision: i64, bytes: &[u8]) -> bool {
        let refused = self.rejected.as_ref().map(|(r, _)| *r);
        if revision == self.member.served.revision || Some(revision) == refused {
            return false;
        }
        self.retry = None;
        tracing::info!(revision, "config store: new revision");
        match std::str::from_utf8(bytes) {
            Ok(text) => self.install(revision, text.to_owned()).await,
            Err(_) => self.refuse(revision, "the value is not UTF-8".into(), None),
        }
        true
    }

    /// Installs `text` as revision `revision`, or refuses it.
    async fn install(&mut self, revision: i64, text: String) {
        let config = match Config::parse(&text) {
            Ok(config) => config,
            Err(error) => return self.refuse(revision, error.to_string(), None),
        };
        match self.control.apply(config).await {
            Ok(_) => {
                self.member.served = Revision {
                    revision,
                    sha256: sha256(&text),
                };
                self.control.metrics().set_config_revision(revision);
                tracing::info!(revision, "config store: revision installed");
                if let Some(cache) = &self.member.cache {
                    if let Err(error) = write_cache(cache, revision, &text) {
                        tracing::warn!("cannot write the cache {}: {error}", cache.display());
                    }
                }
            }
            // Not the config's fault (a Sentinel or cluster unreachable, a port taken): the
            // same revision may install later, so it is retried.
            Err(error @ (ReloadError::Resolve(_) | ReloadError::Bind { .. })) => {
                self.refuse(revision, error.to_string(), Some(text));
            }
            Err(error) => self.refuse(revision, error.to_string(), None),
        }
    }

    /// Records that revision `revision` is not installed, and why; `retry`: its text, when a
    /// later attempt may succeed. Logged and counted once per revision.
    fn refuse(&mut self, revision: i64, error: String, retry: Option<String>) {
        let error = error.trim_end().replace('\n', "; ");
        let again = self.rejected.as_ref().is_some_and(|(r, _)| *r == revision);
        if again {
            tracing::debug!("config store: revision {revision} still not installed: {error}");
        } else {
            self.control.metrics().config_rejected();
            tracing::error!(
                "config store: revision {revision} rejected, keeping revision {}: {error}{}",
                self.member.served.revision,
                if retry.is_some() { " (retrying)" } else { "" }
            );
        }
        self.rejected = Some((revision, error));
        self.retry = retry.map(|text| (revision, text));
    }

    /// Retries a refused revision that may install now; true when it did.
    async fn retry(&mut self) -> bool {
        let Some((revision, text)) = self.retry.take() else {
            return false;
        };
        self.install(revision, text).await;
        self.member.served.revision == revision
    }

    /// Writes this instance's membership value under `lease`.
    async fn register(&self, client: &mut Client, lease: i64) -> Result<(), StoreError> {
        let listen = self
            .control
            .pools()
            .iter()
            .map(|p| format!("{}={}", p.config().name, p.config().listen))
            .collect();
        let instance = Instance {
            id: self.member.id.clone(),
            host: crate::metrics::stats::hostname().to_owned(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            listen,
            admin: self.admin.map(|a| a.to_string()),
            revision: self.member.served.revision,
            sha256: self.member.served.sha256.clone(),
            rejected_revision: self.rejected.as_ref().map(|(r, _)| *r),
            rejected_error: self.rejected.as_ref().map(|(_, e)| e.clone()),
        };
        let key = format!("{}{}", self.member.store.instances_prefix(), self.member.id);
        let json = serde_json::to_string(&instance).map_err(|e| value(&key, &e.to_string()))?;
        client
            .put(key, json, Some(PutOptions::new().with_lease(lease)))
            .await?;
        Ok(())
    }
}

fn value(key: &str, why: &str) -> StoreError {
    StoreError::Value {
        key: key.to_owned(),
        why: why.to_owned(),
    }
}
