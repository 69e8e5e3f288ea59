//! TLS on both sides, with rustls (no OpenSSL): a pool's listener (`tls:` cert, key, optional
//! `client_ca` for mutual TLS) and its connections to backends, Sentinels and cluster nodes
//! (`server_tls:` ca, cert, key, server_name; verification always on).
//!
//! Each setting is loaded once, when the config is validated (start, `-t`, reload), into the
//! rustls configuration every handshake then uses: a missing or unreadable file, a file without
//! the PEM it must hold, or a key that is not the certificate's fails validation, naming the
//! file. The loaded settings are part of the pool's config, compared by the SHA-256 of the
//! files' contents: a reload that finds a rotated certificate makes a new snapshot of the pool,
//! so new handshakes use the new certificate while open connections carry on with theirs.
//!
//! Only TLS 1.3 and 1.2 are offered, with rustls's default cipher suites (AEAD only, forward
//! secret key exchange), on the `ring` provider.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::socket::{SocketRead, SocketWrite, TryWrite};

/// How long a client may take over its TLS handshake once connected; it holds a place in
/// `client_connections` meanwhile, and is closed past it.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS versions offered on both sides.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A pool's `tls:` key: the certificate its listener presents, and the CA its clients'
/// certificates must chain to when it asks for them.
#[derive(Clone)]
pub struct ListenTls {
    /// The certificate chain (PEM), the pool's own first.
    pub cert: PathBuf,
    /// The certificate's private key (PEM).
    pub key: PathBuf,
    /// When set, clients must present a certificate issued by one of these CAs (PEM).
    pub client_ca: Option<PathBuf>,
    digest: [u8; 32],
    acceptor: TlsAcceptor,
}

impl ListenTls {
    /// Reads and checks the files and builds the handshake configuration.
    ///
    /// # Errors
    /// A file cannot be read or holds no usable PEM, or the key is not the certificate's; the
    /// message names the file.
    pub fn load(cert: PathBuf, key: PathBuf, client_ca: Option<PathBuf>) -> Result<Self, String> {
        let mut digest = Digest::default();
        let chain = certificates(&cert, &mut digest)?;
        let private = private_key(&key, &mut digest)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| e.to_string())?;
        let builder = match &client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = roots(path, &mut digest)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| format!("'{}': {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, private)
            .map_err(|e| key_problem(&key, &cert, &e))?;
        Ok(ListenTls {
            cert,
            key,
            client_ca,
            digest: digest.finish(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Answers clients' handshakes.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

impl PartialEq for ListenTls {
    fn eq(&self, other: &Self) -> bool {
        self.cert == other.cert
            && self.key == other.key
            && self.client_ca == other.client_ca
            && self.digest == other.digest
    }
}

impl Eq for ListenTls {}

impl fmt::Debug for ListenTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("client_ca", &self.client_ca)
            .finish_non_exhaustive()
    }
}

/// A pool's `server_tls:` key: how its connections to backends, Sentinels and cluster nodes
/// verify the other end (always), and the certificate they present when asked (mutual TLS).
#[derive(Clone)]
pub struct BackendTls {
    /// The CAs the backends' certificates must chain to (PEM); the system's roots when unset.
    pub ca: Option<PathBuf>,
    /// The client certificate chain presented to the backends (PEM).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// The name every backend's certificate must carry; each backend's host when unset (an IP
    /// address then must be in the certificate's IP addresses).
    pub server_name: Option<String>,
    digest: [u8; 32],
    connector: TlsConnector,
}

impl BackendTls {
    /// Reads and checks the files and builds the handshake configuration.
    ///
    /// # Errors
    /// A file cannot be read or holds no usable PEM, only one of `cert` and `key` is given, the
    /// key is not the certificate's, `server_name` is no DNS name or IP address, or (without
    /// `ca`) the system has no root certificates; the message names the file.
    pub fn load(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        server_name: Option<String>,
    ) -> Result<Self, String> {
        let mut digest = Digest::default();
        let roots = match &ca {
            Some(path) => roots(path, &mut digest)?,
            None => system_roots()?,
        };
        if let Some(name) = &server_name {
            ServerName::try_from(name.as_str())
                .map_err(|_| format!("server_name '{name}' is no DNS name or IP address"))?;
            digest.update(name.as_bytes());
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| e.to_string())?
            .with_webpki_verifier(verifier);
        let config = match (&cert, &key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certificates(cert, &mut digest)?;
                let private = private_key(key, &mut digest)?;
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| key_problem(key, cert, &e))?
            }
            (Some(_), None) => return Err("cert is set without its key".into()),
            (None, Some(_)) => return Err("key is set without its cert".into()),
        };
        Ok(BackendTls {
            ca,
            cert,
            key,
            server_name,
            digest: digest.finish(),
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Runs the handshake over `stream` to `host` (a hostname or IP address as written, an
    /// IPv6 one possibly bracketed), verifying the certificate against `server_name` if set,
    /// else against `host`.
    ///
    /// # Errors
    /// The handshake failed: the message says why (e.g. `invalid peer certificate:
    /// UnknownIssuer`).
    pub async fn connect<S>(
        &self,
        host: &str,
        stream: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>, String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = self
            .server_name
            .as_deref()
            .unwrap_or_else(|| host.trim_start_matches('[').trim_end_matches(']'));
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| format!("'{name}' is no DNS name or IP address to verify"))?;
        self.connector
            .connect(name, stream)
            .await
            .map_err(|error| error.to_string())
    }
}

impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca == other.ca
            && self.cert == other.cert
            && self.key == other.key
            && self.server_name == other.server_name
            && self.digest == other.digest
    }
}

impl Eq for BackendTls {}

impl fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendTls")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// SHA-256 over every file a setting read, so that a rotated file makes a different setting.
struct Digest(ring::digest::Context);

impl Default for Digest {
    fn default() -> Self {
        Digest(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl Digest {
    fn update(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn finish(self) -> [u8; 32] {
        let mut out = [0; 32];
        let digest = self.0.finish();
        for (to, from) in out.iter_mut().zip(digest.as_ref()) {
            *to = *from;
        }
        out
    }
}

fn read(path: &Path, digest: &mut Digest) -> Result<Vec<u8>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    digest.update(&bytes);
    Ok(bytes)
}

/// The PEM certificates in `path`, at least one.
fn certificates(path: &Path, digest: &mut Digest) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path, digest)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("'{}' is not valid PEM: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("'{}' holds no PEM certificate", path.display()));
    }
    Ok(chain)
}

/// The PEM private key in `path` (PKCS#8, PKCS#1 or SEC1).
fn private_key(path: &Path, digest: &mut Digest) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path, digest)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("'{}' holds no PEM private key: {e}", path.display()))
}

/// The CA certificates in `path`, each one usable as a trust anchor.
fn roots(path: &Path, digest: &mut Digest) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path, digest)? {
        store
            .add(cert)
            .map_err(|e| format!("'{}' holds an unusable CA certificate: {e}", path.display()))?;
    }
    Ok(store)
}

/// The system's root certificates (as `rustls-native-certs` finds them: `SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, else the distribution's bundle).
fn system_roots() -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err("no ca is set and the system has no root certificates".into());
    }
    Ok(store)
}

fn key_problem(key: &Path, cert: &Path, error: &rustls::Error) -> String {
    match error {
        rustls::Error::InconsistentKeys(_) => format!(
            "the key in '{}' is not the key of the certificate in '{}'",
            key.display(),
            cert.display()
        ),
        other => format!("'{}' / '{}': {other}", cert.display(), key.display()),
    }
}

/// The read half of a TLS stream used by one task, which polls its halves one at a time.
pub struct TlsRead<S>(Rc<RefCell<S>>);

/// The write half of a TLS stream used by one task.
pub struct TlsWrite<S>(Rc<RefCell<S>>);

/// Splits a TLS stream into halves for one task (no lock: the task polls one half at a time).
pub fn split<S>(stream: S) -> (TlsRead<S>, TlsWrite<S>) {
    let shared = Rc::new(RefCell::new(stream));
    (TlsRead(Rc::clone(&shared)), TlsWrite(shared))
}

fn with<S, T>(
    shared: &RefCell<S>,
    f: impl FnOnce(Pin<&mut S>) -> Poll<io::Result<T>>,
) -> Poll<io::Result<T>>
where
    S: Unpin,
{
    match shared.try_borrow_mut() {
        Ok(mut stream) => f(Pin::new(&mut *stream)),
        Err(_) => Poll::Ready(Err(io::Error::other("TLS stream polled re-entrantly"))),
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TlsRead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        with(&self.0, |stream| stream.poll_read(cx, buf))
    }
}

impl<S: AsyncRead + Unpin> SocketRead for TlsRead<S> {
    /// Always: decrypted bytes may wait inside the TLS session with the socket drained.
    fn is_read_ready(&self) -> bool {
        true
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TlsWrite<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        with(&self.0, |stream| stream.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        with(&self.0, |stream| stream.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.0.try_borrow().is_ok_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with(&self.0, |stream| stream.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with(&self.0, |stream| stream.poll_shutdown(cx))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TryWrite
    for TlsWrite<tokio_rustls::server::TlsStream<IO>>
{
    /// Encrypts what the session takes now and sends what the socket takes; what it does not
    /// stays in the session (bounded by rustls's buffer limit) for
    /// [`SocketWrite::needs_flush`].
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        match with(&self.0, |stream| stream.poll_write(&mut cx, bytes)) {
            Poll::Ready(written) => written,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> SocketWrite
    for TlsWrite<tokio_rustls::server::TlsStream<IO>>
{
    fn needs_flush(&self) -> bool {
        self.0
            .try_borrow()
            .is_ok_and(|stream| stream.get_ref().1.wants_write())
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> SocketWrite
    for TlsWrite<tokio_rustls::client::TlsStream<IO>>
{
    fn needs_flush(&self) -> bool {
        self.0
            .try_borrow()
            .is_ok_and(|stream| stream.get_ref().1.wants_write())
    }
}
