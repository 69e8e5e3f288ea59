//! `tls` and `server_tls`: each setting a file path (or a name), every file read and checked
//! here, so that start, `-t` and reload refuse a missing file, bad PEM or a key that is not
//! the certificate's, naming the pool, the key and the file.

use std::path::PathBuf;

use super::PoolChecker;
use crate::config::keys::Key;
use crate::config::raw::RawMap;
use crate::config::{BackendAddr, BackendConfig};
use crate::security::tls::{BackendTls, ListenTls};

/// The settings of one [`Key`], taken by name.
struct Settings(Vec<(String, String)>);

impl Settings {
    fn take(&mut self, name: &str) -> Option<String> {
        let at = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(at).1)
    }
}

impl PoolChecker<'_> {
    /// `tls`: `Some(None)` when absent, `None` when wrong (recorded).
    pub(super) fn tls(&mut self, fields: Option<RawMap>) -> Option<Option<ListenTls>> {
        let Some(RawMap(fields)) = fields else {
            return Some(None);
        };
        let mut settings = Settings(fields);
        let cert = self.path(Key::Tls, "cert", settings.take("cert"), true)?;
        let key = self.path(Key::Tls, "key", settings.take("key"), true)?;
        let client_ca = self.path(Key::Tls, "client_ca", settings.take("client_ca"), false)?;
        let (Some(cert), Some(key)) = (cert, key) else {
            return None;
        };
        let loaded = ListenTls::load(cert, key, client_ca);
        self.value(Key::Tls, loaded).map(Some)
    }

    /// `server_tls` for a pool with `servers`: `Some(None)` when absent, `None` when wrong.
    pub(super) fn server_tls(
        &mut self,
        fields: Option<RawMap>,
        servers: Option<&Vec<BackendConfig>>,
    ) -> Option<Option<BackendTls>> {
        let Some(RawMap(fields)) = fields else {
            return Some(None);
        };
        let mut settings = Settings(fields);
        let ca = self.path(Key::ServerTls, "ca", settings.take("ca"), false)?;
        let cert = self.path(Key::ServerTls, "cert", settings.take("cert"), false)?;
        let key = self.path(Key::ServerTls, "key", settings.take("key"), false)?;
        let server_name = match settings.take("server_name") {
            Some(name) if name.is_empty() => {
                self.problem(
                    Key::ServerTls,
                    "'server_name' must not be empty (leave it out to verify each host)".into(),
                );
                return None;
            }
            name => name,
        };
        if let Some(unix) = servers
            .into_iter()
            .flatten()
            .find(|s| matches!(s.addr, BackendAddr::Unix(_)))
        {
            self.problem(
                Key::ServerTls,
                format!(
                    "applies to TCP backends only: '{}' is a unix socket",
                    unix.addr
                ),
            );
            return None;
        }
        let loaded = BackendTls::load(ca, cert, key, server_name);
        self.value(Key::ServerTls, loaded).map(Some)
    }

    /// A file setting: `Some(None)` when absent and optional, `None` when wrong (recorded).
    fn path(
        &mut self,
        key: Key,
        name: &str,
        value: Option<String>,
        required: bool,
    ) -> Option<Option<PathBuf>> {
        match value {
            Some(text) if text.is_empty() => {
                self.problem(key, format!("'{name}' must not be empty"));
                None
            }
            Some(text) => Some(Some(PathBuf::from(text))),
            None if required => {
                self.problem(key, format!("'{name}' is missing"));
                Some(None)
            }
            None => Some(None),
        }
    }
}
