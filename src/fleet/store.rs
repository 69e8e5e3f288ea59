//! The config store: `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`, its TLS and user options, the
//! keys under the prefix, and a connected etcd v3 client.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

/// How long connecting to an etcd endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one etcd request may take (not the watch and keep-alive streams).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on an idle etcd connection, and how long an answer may take: a vanished etcd
/// (no reset, just silence) is noticed within both.
const PING_INTERVAL: Duration = Duration::from_secs(2);
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// The flags that say where the config store is and how to talk to it; shared by the
/// instance and by `keyway publish`, `history` and `fleet`.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct StoreArgs {
    /// Read the config from etcd v3 and watch it, instead of -c:
    /// etcd://HOST:PORT[,HOST:PORT...]/PREFIX; the config is PREFIX/config (Keyway).
    #[arg(long = "config-store", value_name = "URL")]
    pub config_store: Option<String>,

    /// CA certificate (PEM) to verify etcd's TLS certificate; turns TLS on (Keyway).
    #[arg(long = "etcd-ca", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,

    /// Client certificate (PEM) for etcd's TLS client authentication, with --etcd-key
    /// (Keyway).
    #[arg(long = "etcd-cert", value_name = "FILE", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM) (Keyway).
    #[arg(long = "etcd-key", value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,

    /// etcd user name, with the password from $KEYWAY_ETCD_PASSWORD or --etcd-password
    /// (Keyway).
    #[arg(long = "etcd-user", value_name = "NAME")]
    pub etcd_user: Option<String>,

    /// etcd password (prefer $KEYWAY_ETCD_PASSWORD: a flag shows in `ps`) (Keyway).
    #[arg(
        long = "etcd-password",
        value_name = "PASSWORD",
        env = "KEYWAY_ETCD_PASSWORD",
        hide_env_values = true
    )]
    pub etcd_password: Option<String>,
}

/// Why the config store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `--config-store` is not `etcd://HOST:PORT[,...]/PREFIX`.
    #[error("--config-store '{0}': expected etcd://HOST:PORT[,HOST:PORT...]/PREFIX")]
    Url(String),
    /// A TLS file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// etcd refused or could not be reached.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A value under the prefix is not what Keyway writes there.
    #[error("{key}: {why}")]
    Value {
        /// The key.
        key: String,
        /// What is wrong with it.
        why: String,
    },
}

/// A parsed `--config-store` with its connection options.
#[derive(Clone)]
pub struct Store {
    endpoints: Vec<String>,
    prefix: String,
    options: ConnectOptions,
    url: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the options: they hold the password.
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl StoreArgs {
    /// The store these flags name; `None` without `--config-store`.
    ///
    /// # Errors
    /// The URL is malformed, or a TLS file cannot be read.
    pub fn store(&self) -> Result<Option<Store>, StoreError> {
        let Some(url) = &self.config_store else {
            return Ok(None);
        };
        let bad = || StoreError::Url(url.clone());
        let rest = url.strip_prefix("etcd://").ok_or_else(bad)?;
        let (hosts, prefix) = rest.split_once('/').ok_or_else(bad)?;
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() || hosts.is_empty() {
            return Err(bad());
        }
        let tls = self.etcd_ca.is_some() || self.etcd_cert.is_some();
        let scheme = if tls { "https" } else { "http" };
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            if !host.contains(':') {
                return Err(bad());
            }
            endpoints.push(format!("{scheme}://{host}"));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(PING_INTERVAL, PING_TIMEOUT)
            .with_keep_alive_while_idle(true);
        if tls {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.etcd_ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(cert), Some(key)) = (&self.etcd_cert, &self.etcd_key) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(tls);
        }
        if let Some(user) = &self.etcd_user {
            let password = self.etcd_password.clone().unwrap_or_default();
            options = options.with_user(user.clone(), password);
        }
        Ok(Some(Store {
            endpoints,
            prefix: format!("/{}", prefix.trim_start_matches('/')),
            options,
            url: url.clone(),
        }))
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|source| StoreError::File {
        path: path.display().to_string(),
        source,
    })
}

impl Store {
    /// Connects to the endpoints (any that answers).
    ///
    /// # Errors
    /// No endpoint answered, or etcd refused the user.
    pub async fn connect(&self) -> Result<Client, StoreError> {
        Ok(Client::connect(&self.endpoints, Some(self.options.clone())).await?)
    }

    /// `PREFIX/config`: the YAML every instance serves.
    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// `PREFIX/history/`: the publish history, one key per revision.
    pub fn history_prefix(&self) -> String {
        format!("{}/history/", self.prefix)
    }

    /// `PREFIX/instances/`: the live instances, one key each, under their leases.
    pub fn instances_prefix(&self) -> String {
        format!("{}/instances/", self.prefix)
    }

    /// The current config: its revision (`mod_revision`) and text; `None` if nothing is
    /// published.
    ///
    /// # Errors
    /// etcd could not be asked, or the value is not UTF-8.
    pub async fn config(&self, client: &mut Client) -> Result<Option<(i64, String)>, StoreError> {
        let key = self.config_key();
        let response = client.get(key.as_str(), None).await?;
        let Some(kv) = response.kvs().first() else {
            return Ok(None);
        };
        let text = kv.value_str().map_err(|_| StoreError::Value {
            key,
            why: "not UTF-8".into(),
        })?;
        Ok(Some((kv.mod_revision(), text.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str) -> Result<Option<Store>, StoreError> {
        StoreArgs {
            config_store: Some(url.into()),
            ..StoreArgs::default()
        }
        .store()
    }

    #[test]
    fn urls_name_endpoints_and_a_prefix() {
        let s = store("etcd://10.0.0.1:2379,10.0.0.2:2379/keyway/prod/")
            .unwrap()
            .unwrap();
        assert_eq!(
            s.endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(s.config_key(), "/keyway/prod/config");
        assert_eq!(s.history_prefix(), "/keyway/prod/history/");
        assert_eq!(s.instances_prefix(), "/keyway/prod/instances/");
        assert_eq!(
            s.to_string(),
            "etcd://10.0.0.1:2379,10.0.0.2:2379/keyway/prod/"
        );
        assert!(StoreArgs::default().store().unwrap().is_none());
    }

    #[test]
    fn malformed_urls_are_refused() {
        for bad in [
            "http://127.0.0.1:2379/k",
            "etcd://127.0.0.1:2379",
            "etcd://127.0.0.1:2379/",
            "etcd:///k",
            "etcd://127.0.0.1/k",
            "etcd://a:1,,b:2/k",
        ] {
            assert!(matches!(store(bad), Err(StoreError::Url(_))), "{bad}");
        }
    }

    #[test]
    fn a_ca_turns_tls_on_and_a_missing_file_is_named() {
        let args = StoreArgs {
            config_store: Some("etcd://127.0.0.1:2379/k".into()),
            etcd_ca: Some("/nonexistent/ca.pem".into()),
            ..StoreArgs::default()
        };
        match args.store() {
            Err(StoreError::File { path, .. }) => assert_eq!(path, "/nonexistent/ca.pem"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let args = StoreArgs {
            config_store: Some("etcd://127.0.0.1:2379/k".into()),
            etcd_user: Some("root".into()),
            etcd_password: Some("hunter2-secret".into()),
            ..StoreArgs::default()
        };
        let s = args.store().unwrap().unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
