//! TLS fixtures: certificates made by the `openssl` CLI for each test (a CA, certificates it
//! issues for 127.0.0.1 / localhost, and an unrelated CA), `redis-server` on a TLS port, and a
//! blocking RESP client over rustls that can show the certificate it was served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::*;

/// A test's certificates, in a temp dir: `ca.pem`, and what [`Certs::issue`] made.
pub struct Certs {
    dir: TempDir,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run openssl {args:?} (apt-get install openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    /// A new CA (`ca.pem`, `ca.key`) and, issued by it, `server` (for 127.0.0.1, localhost and
    /// redis.test) and `client`; and an unrelated CA, `other-ca.pem`.
    pub fn generate() -> Certs {
        let certs = Certs {
            dir: TempDir::new("tls"),
        };
        certs.ca("ca", "Keyway Test CA");
        certs.ca("other-ca", "Unrelated CA");
        certs.issue("server", "server", 1);
        certs.issue("client", "client", 2);
        certs
    }

    fn ca(&self, name: &str, subject: &str) {
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-subj",
                &format!("/CN={subject}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            self.dir.path(),
        );
    }

    /// Issues `name.pem` / `name.key` (CN `cn`, serial `serial`) from `ca.pem`, good for
    /// 127.0.0.1, localhost and redis.test, as a server and as a client. Issuing again under
    /// the same name replaces the files (a rotation).
    pub fn issue(&self, name: &str, cn: &str, serial: u32) {
        let dir = self.dir.path();
        std::fs::write(
            dir.join(format!("{name}.ext")),
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:redis.test\n\
             basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key.new"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
            dir,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial.to_string(),
                "-days",
                "2",
                "-out",
                &format!("{name}.pem.new"),
                "-extfile",
                &format!("{name}.ext"),
            ],
            dir,
        );
        // Renamed into place, so that a reader sees the old pair or the new one.
        std::fs::rename(
            dir.join(format!("{name}.key.new")),
            dir.join(format!("{name}.key")),
        )
        .unwrap();
        std::fs::rename(
            dir.join(format!("{name}.pem.new")),
            dir.join(format!("{name}.pem")),
        )
        .unwrap();
    }

    /// The path of file `name` (e.g. `ca.pem`, `server.key`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `path(name)` as text, for configs and command lines.
    pub fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// The DER of the first certificate in `name`.
    pub fn der(&self, name: &str) -> Vec<u8> {
        CertificateDer::pem_file_iter(self.path(name))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    /// `redis-server` options serving TLS on `port` with `server.pem`, trusting `ca.pem` for
    /// client certificates, which it requires when `auth_clients`.
    pub fn redis_args(&self, port: u16, auth_clients: bool) -> Vec<String> {
        vec![
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            self.file("server.pem"),
            "--tls-key-file".into(),
            self.file("server.key"),
            "--tls-ca-cert-file".into(),
            self.file("ca.pem"),
            "--tls-auth-clients".into(),
            if auth_clients { "yes" } else { "no" }.into(),
        ]
    }
}

/// A `redis-server` with a TLS port beside its plain one (which the test uses to look at the
/// data; Keyway is pointed at the TLS port).
pub struct TlsRedis {
    pub server: RedisServer,
    pub tls_port: u16,
}

impl TlsRedis {
    pub fn start(certs: &Certs, auth_clients: bool) -> TlsRedis {
        let tls_port = free_port();
        let args = certs.redis_args(tls_port, auth_clients);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TlsRedis {
            server: RedisServer::start_with(&args),
            tls_port,
        }
    }

    /// `127.0.0.1:<tls port>`.
    pub fn tls_addr(&self) -> String {
        format!("127.0.0.1:{}", self.tls_port)
    }
}

/// A blocking RESP client over TLS (rustls), verifying the server against a CA file.
pub struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    /// Connects to `addr`, verifying its certificate against `ca` for `name`, presenting
    /// `identity` (cert, key) when given.
    pub fn connect(
        addr: &str,
        ca: &Path,
        name: &str,
        identity: Option<(&Path, &Path)>,
    ) -> Result<TlsClient, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                let key = PrivateKeyDer::from_pem_file(key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        // Drive the handshake now, so that a refusal shows here.
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        }
        Ok(TlsClient {
            stream,
            buf: Vec::new(),
        })
    }

    /// The DER of the certificate the server presented.
    pub fn served_cert(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// Sends one command and reads its reply; `Err` when the connection fails.
    pub fn try_cmd(&mut self, args: &[&str]) -> Result<Reply, String> {
        self.stream
            .write_all(&encode(args))
            .map_err(|e| e.to_string())?;
        self.stream.flush().map_err(|e| e.to_string())?;
        loop {
            if let Some((reply, used)) = parse_reply(&self.buf, 0)? {
                self.buf.drain(..used);
                return Ok(reply);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("closed".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    pub fn cmd(&mut self, args: &[&str]) -> Reply {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }
}

/// True when something listens at `addr` (a TLS listener answers no plain PING).
pub(crate) fn accepts_tcp(addr: &str) -> bool {
    TcpStream::connect(addr).is_ok()
}
