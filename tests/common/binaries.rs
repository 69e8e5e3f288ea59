//! Where the programs the tests run live: keyway itself, and the Debian-packaged daemons.

use std::path::PathBuf;
use std::process::Command;

/// `python3`, checked to import redis-py 5 or later (scripts/test.sh installs it); fails the
/// test saying how to install it otherwise.
pub fn python_with_redis() -> PathBuf {
    let python = find_binary("python3", "python3");
    let check = Command::new(&python)
        .args([
            "-c",
            "import redis; assert int(redis.__version__.split('.')[0]) >= 5",
        ])
        .output()
        .expect("run python3");
    assert!(
        check.status.success(),
        "python3 cannot import redis >= 5: `pip install 'redis>=5,<6'` (scripts/test.sh does): {}",
        String::from_utf8_lossy(&check.stderr)
    );
    python
}

/// The `keyway` binary under test: cargo's build of it, or `KEYWAY_TEST_BIN` (another build of
/// the same source, e.g. `scripts/build-pgo.sh`'s, run through the same suites).
pub fn keyway_bin() -> PathBuf {
    std::env::var_os("KEYWAY_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_keyway")))
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
