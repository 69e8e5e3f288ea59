//! A real etcd v3 server (Debian `etcd-server`) on free loopback ports, its data in a temp
//! dir; stopped by PID on drop, and restartable on the same ports and data. `etcdctl`
//! (Debian `etcd-client`) writes and reads keys behind Keyway's back.

use std::process::Command;

use super::*;

/// A single-member etcd cluster.
pub struct Etcd {
    daemon: Daemon,
    client_port: u16,
    peer_port: u16,
    dir: TempDir,
    /// Clients must speak TLS and show a certificate from `ca.pem` (see [`Etcd::start_tls`]).
    tls: bool,
}

impl Etcd {
    /// Starts etcd; ready once `etcdctl endpoint health` says so.
    pub fn start() -> Etcd {
        Etcd::launch(false)
    }

    /// Starts etcd serving clients over TLS only, requiring a client certificate: its dir
    /// holds `ca.pem` and, issued by it for 127.0.0.1, `server.pem`/`.key` and
    /// `client.pem`/`.key` (made with the `openssl` CLI).
    pub fn start_tls() -> Etcd {
        Etcd::launch(true)
    }

    fn launch(tls: bool) -> Etcd {
        let mut etcd = Etcd {
            daemon: Daemon::default(),
            client_port: free_port(),
            peer_port: free_port(),
            dir: TempDir::new("etcd"),
            tls,
        };
        if tls {
            make_certs(etcd.dir.path());
        }
        etcd.restart();
        etcd
    }

    /// A file of [`Etcd::start_tls`]'s: `ca.pem`, `client.pem`, `client.key`...
    pub fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Starts the stopped server again, same ports and data (a no-op while it runs).
    pub fn restart(&mut self) {
        if self.daemon.is_running() {
            return;
        }
        let scheme = if self.tls { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(find_binary("etcd", "etcd-server"));
        cmd.arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("test={peer}"));
        if self.tls {
            cmd.args(["--cert-file", &self.file("server.pem")])
                .args(["--key-file", &self.file("server.key")])
                .args(["--trusted-ca-file", &self.file("ca.pem")])
                .arg("--client-cert-auth");
        }
        let log = self.dir.path().join("etcd.log");
        let endpoint = self.endpoint();
        let tls = self.tls.then(|| self.dir.path().to_path_buf());
        let up = self.daemon.start(&mut cmd, &log, || {
            etcdctl(&endpoint, tls.as_deref(), &["endpoint", "health"]).is_ok()
        });
        assert!(up, "etcd did not start:\n{}", tail(&log, 4096));
    }

    /// Kills the server (SIGKILL, by PID): clients see it gone at once.
    pub fn stop(&mut self) {
        self.daemon.kill();
    }

    /// `127.0.0.1:PORT`, its client address.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `etcd://127.0.0.1:PORT/PREFIX`, for `--config-store`.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}/{prefix}", self.endpoint())
    }

    /// Writes `value` at `key` (bypassing Keyway).
    pub fn put(&self, key: &str, value: &str) {
        self.etcdctl(&["put", key, value])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Adds user `root` with `password` and turns authentication on: from then on every client
    /// must log in.
    pub fn enable_auth(&self, password: &str) {
        self.etcdctl(&["user", "add", &format!("root:{password}")])
            .unwrap_or_else(|e| panic!("{e}"));
        self.etcdctl(&["auth", "enable"])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The value at `key`, if any.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self
            .etcdctl(&["get", "--print-value-only", key])
            .unwrap_or_else(|e| panic!("{e}"));
        let value = out.strip_suffix('\n').unwrap_or(&out);
        (!value.is_empty()).then(|| value.to_string())
    }
}

impl Etcd {
    /// Runs `etcdctl ARGS...` against this server; its stdout, or why it failed.
    fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        etcdctl(&self.endpoint(), self.tls.then(|| self.dir.path()), args)
    }
}

/// Runs `etcdctl --endpoints ENDPOINT ARGS...` (API v3; with `tls`, the CA and client
/// certificate in that dir); its stdout, or why it failed.
fn etcdctl(endpoint: &str, tls: Option<&std::path::Path>, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(find_binary("etcdctl", "etcd-client"));
    cmd.env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .arg("--command-timeout=2s");
    if let Some(dir) = tls {
        cmd.arg("--cacert")
            .arg(dir.join("ca.pem"))
            .arg("--cert")
            .arg(dir.join("client.pem"))
            .arg("--key")
            .arg(dir.join("client.key"));
    }
    run_etcdctl(cmd.args(args))
}

fn run_etcdctl(cmd: &mut Command) -> Result<String, String> {
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let out = cmd.output().map_err(|e| format!("run etcdctl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A CA and, issued by it for 127.0.0.1 and localhost, a server and a client certificate
/// (EC P-256, valid two days), written into `dir` by the `openssl` CLI.
fn make_certs(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("run openssl (apt-get install openssl): {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec![
        "req", "-x509", "-days", "2", "-keyout", "ca.key", "-out", "ca.pem",
    ];
    ca.extend(key);
    ca.extend(["-subj", "/CN=Keyway etcd test CA"]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    ca.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(&ca);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    for name in ["server", "client"] {
        let (keyfile, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subject = format!("/CN={name}");
        let mut req = vec!["req", "-keyout", &keyfile, "-out", &csr, "-subj", &subject];
        req.extend(key);
        openssl(&req);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            "ext.cnf",
        ]);
    }
}
