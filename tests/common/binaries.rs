//! Where the programs the tests run live: keyway itself, and the Debian-packaged daemons.

use std::path::PathBuf;
use std::process::Command;

/// The built `keyway` binary.
pub fn keyway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keyway"))
}

/// Finds `name` on `PATH` or in the sbin directories Debian installs daemons into; fails the test
/// naming the Debian package to install when it is missing (never skips).
pub fn find_binary(name: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/sbin",
        "/usr/local/sbin",
        "/sbin",
        "/usr/bin",
        "/usr/local/bin",
    ] {
        dirs.push(PathBuf::from(d));
    }
    for d in dirs {
        let candidate = d.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("`{name}` not found on PATH or in /usr/sbin: install the Debian package `{package}` (apt-get install {package})");
}

pub fn redis_server_bin() -> PathBuf {
    find_binary("redis-server", "redis-server")
}

/// Runs `redis-cli` with `args`; fails the test (showing its output) unless it succeeds.
/// Its standard output.
pub fn run_redis_cli(args: &[&str]) -> String {
    let out = Command::new(redis_cli_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run redis-cli {args:?}: {e}"));
    assert!(
        out.status.success(),
        "redis-cli {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn redis_cli_bin() -> PathBuf {
    find_binary("redis-cli", "redis-tools")
}

pub fn nutcracker_bin() -> PathBuf {
    find_binary("nutcracker", "nutcracker")
}

pub fn memcached_bin() -> PathBuf {
    find_binary("memcached", "memcached")
}

pub fn redis_sentinel_bin() -> PathBuf {
    find_binary("redis-sentinel", "redis-sentinel")
}
