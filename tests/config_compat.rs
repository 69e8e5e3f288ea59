//! Differential test: for each config snippet, `nutcracker -t -c FILE` and
//! `keyway::config::Config::parse` must agree on accept/reject, except for the deliberate
//! divergences listed in the table, whose exact direction is asserted too.
//!
//! Needs the `nutcracker` binary (Debian/Ubuntu package `nutcracker`); a missing binary fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use keyway::config::Config;

/// What the two programs do with a snippet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Both accept.
    Accept,
    /// Both reject.
    Reject,
    /// Keyway accepts what nutcracker 0.5 rejects, on purpose; the reason is given.
    KeywayOnly(&'static str),
    /// Keyway rejects what nutcracker 0.5 accepts, on purpose; the reason is given.
    NutcrackerOnly(&'static str),
}

use Expect::*;

const BASE: &str = "a:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1\n";

fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

fn servers(lines: &[&str]) -> String {
    let mut text = String::from("a:\n  listen: 127.0.0.1:22121\n  servers:\n");
    for line in lines {
        text.push_str(&format!("   - \"{line}\"\n"));
    }
    text
}

fn listen(addr: &str) -> String {
    format!("a:\n  listen: \"{addr}\"\n  servers:\n   - 127.0.0.1:6379:1\n")
}

fn cases() -> Vec<(&'static str, String, Expect)> {
    let every_key = with(
        "  hash: md5\n  hash_tag: \"{}\"\n  distribution: modula\n  timeout: 400\n  backlog: 1024\n  \
         client_connections: 10\n  redis: true\n  tcpkeepalive: true\n  redis_auth: pw\n  \
         redis_db: 2\n  preconnect: true\n  auto_eject_hosts: true\n  server_connections: 3\n  \
         server_retry_timeout: 2000\n  server_failure_limit: 4\n",
    );
    let mut every_hash = String::new();
    let hashes = [
        "one_at_a_time",
        "md5",
        "crc16",
        "crc32",
        "crc32a",
        "fnv1_64",
        "fnv1a_64",
        "fnv1_32",
        "fnv1a_32",
        "hsieh",
        "murmur",
        "jenkins",
    ];
    for (i, hash) in hashes.iter().enumerate() {
        let dist = ["ketama", "modula", "random"][i % 3];
        every_hash.push_str(&format!(
            "p{i}:\n  listen: 127.0.0.1:{}\n  hash: {hash}\n  distribution: {dist}\n  servers:\n   - 127.0.0.1:6379:1\n",
            30000 + i
        ));
    }
    let long_path = format!("/tmp/{}.sock", "a".repeat(98));
    let longest_path = format!("/tmp/{}.sock", "a".repeat(97));
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/nutcracker.yml"))
            .unwrap();

    vec![
        // --- accepted by both ---
        ("minimal", BASE.into(), Accept),
        ("every nutcracker 0.5 key", every_key, Accept),
        ("every hash and distribution", every_hash, Accept),
        ("shipped conf/nutcracker.yml", shipped, Accept),
        ("comment before pools", format!("# hello\n{BASE}"), Accept),
        ("unix listen", listen("/tmp/keyway-compat.sock"), Accept),
        ("unix listen with perm", listen("/tmp/keyway-compat.sock 0666"), Accept),
        ("unix listen perm 0", listen("/tmp/keyway-compat.sock 0"), Accept),
        ("unix listen longest path", listen(&longest_path), Accept),
        ("ipv6 listen, nutcracker form", listen("::1:22121"), Accept),
        ("hostname listen", listen("localhost:22121"), Accept),
        ("named servers", servers(&["127.0.0.1:6379:1 s1", "127.0.0.1:6380:2 s2"]), Accept),
        ("name with colon", servers(&["127.0.0.1:6379:1 a:b"]), Accept),
        ("unix server", servers(&["/tmp/r.sock:1", "/tmp/s.sock:1 s"]), Accept),
        ("ipv6 server", servers(&["::1:6379:1"]), Accept),
        ("unresolvable server host (lazy)", servers(&["nosuchhost.invalid:6379:1"]), Accept),
        ("extra colon goes to the host", servers(&["127.0.0.1:6379:1:2"]), Accept),
        ("leading zeros", servers(&["127.0.0.1:06379:01"]), Accept),
        ("one address, two names", servers(&["127.0.0.1:6379:1 x", "127.0.0.1:6379:1 y"]), Accept),
        ("quoted number", with("  timeout: \"400\"\n"), Accept),
        ("timeout 0", with("  timeout: 0\n"), Accept),
        ("zeros allowed", with("  backlog: 0\n  server_failure_limit: 0\n  server_retry_timeout: 0\n"), Accept),
        ("hash_tag of two bytes", with("  hash_tag: \"é\"\n"), Accept),
        ("redis_auth ~ is a password", with("  redis: true\n  redis_auth: ~\n"), Accept),
        ("redis_db on memcached pool", with("  redis_db: 3\n"), Accept),
        ("numeric pool name", BASE.replacen("a:", "123:", 1), Accept),
        ("servers before listen", "a:\n  servers:\n   - 127.0.0.1:6379:1\n  listen: 127.0.0.1:22121\n".into(), Accept),
        // --- rejected by both ---
        ("empty file", String::new(), Reject),
        ("scalar root", "hello\n".into(), Reject),
        ("list root", "- a\n- b\n".into(), Reject),
        ("pool is a scalar", format!("{BASE}b: x\n"), Reject),
        ("pool without keys", "a:\n".into(), Reject),
        ("unknown key", with("  foo: bar\n"), Reject),
        ("missing listen", "a:\n  servers:\n   - 127.0.0.1:6379:1\n".into(), Reject),
        ("missing servers", "a:\n  listen: 127.0.0.1:22121\n".into(), Reject),
        ("unknown hash", with("  hash: fnv2\n"), Reject),
        ("unknown distribution", with("  distribution: rand\n"), Reject),
        ("hash_tag of three", with("  hash_tag: \"{}}\"\n"), Reject),
        ("empty hash_tag", with("  hash_tag: \"\"\n"), Reject),
        ("negative timeout", with("  timeout: -1\n"), Reject),
        ("fractional timeout", with("  timeout: 1.5\n"), Reject),
        ("hex timeout", with("  timeout: 0x10\n"), Reject),
        ("empty timeout", with("  timeout:\n"), Reject),
        ("null timeout", with("  timeout: ~\n"), Reject),
        ("redis: yes", with("  redis: yes\n"), Reject),
        ("redis: True", with("  redis: True\n"), Reject),
        ("server_connections 0", with("  server_connections: 0\n"), Reject),
        ("negative redis_db", with("  redis_db: -1\n"), Reject),
        ("empty redis_auth", with("  redis: true\n  redis_auth: \"\"\n"), Reject),
        ("redis_auth on memcached pool", with("  redis_auth: pw\n"), Reject),
        ("list value", with("  hash:\n   - md5\n"), Reject),
        ("mapping value", with("  hash:\n    x: y\n"), Reject),
        ("duplicate key", with("  hash: md5\n  hash: md5\n"), Reject),
        ("duplicate pool name", format!("{BASE}{BASE}"), Reject),
        ("duplicate listen", format!("{BASE}{}", BASE.replacen("a:", "b:", 1)), Reject),
        ("empty pool name", BASE.replacen("a:", "\"\":", 1), Reject),
        ("zero weight", servers(&["127.0.0.1:6379:0"]), Reject),
        ("negative weight", servers(&["127.0.0.1:6379:-1"]), Reject),
        ("port out of range", servers(&["127.0.0.1:70000:1"]), Reject),
        ("port 0", servers(&["127.0.0.1:0:1"]), Reject),
        ("server without port", servers(&["127.0.0.1:1"]), Reject),
        ("name with a space", servers(&["127.0.0.1:6379:1 my server"]), Reject),
        ("host with a space", servers(&["my host:6379:1"]), Reject),
        ("unix server without weight", servers(&["/tmp/r.sock"]), Reject),
        ("unix server weight 0", servers(&["/tmp/r.sock:0"]), Reject),
        ("unix server path with colon", servers(&["/tmp/r:x.sock:1"]), Reject),
        ("duplicate server address", servers(&["127.0.0.1:6379:1", "127.0.0.1:6379:2"]), Reject),
        ("duplicate server name", servers(&["127.0.0.1:6379:1 s", "127.0.0.1:6380:1 s"]), Reject),
        ("listen without port", listen("127.0.0.1"), Reject),
        ("listen port 0", listen("127.0.0.1:0"), Reject),
        ("listen port text", listen("127.0.0.1:abc"), Reject),
        ("listen empty host", listen(":22121"), Reject),
        ("listen unresolvable", listen("nosuchhost.invalid:22121"), Reject),
        ("listen relative path", listen("relative.sock"), Reject),
        ("listen perm above 0777", listen("/tmp/keyway-compat.sock 1777"), Reject),
        ("listen path too long", listen(&long_path), Reject),
        ("two documents", format!("{BASE}---\n{}", BASE.replacen("a:", "b:", 1)), Reject),
        ("YAML custom tag", with("  timeout: !ms 400\n"), Reject),
        // --- deliberate divergences ---
        ("reuseport", with("  reuseport: true\n"),
            KeywayOnly("reuseport is in nutcracker after 0.5.0; Keyway supports it")),
        ("extension key", with("  max_pipeline: 100\n"),
            KeywayOnly("Keyway's own limit keys")),
        ("murmur3", with("  hash: murmur3\n"),
            KeywayOnly("murmur3 is Keyway's extra hash")),
        ("document start", format!("---\n{BASE}"),
            KeywayOnly("nutcracker's token check refuses '---'; Keyway reads any YAML syntax")),
        ("document end", format!("{BASE}...\n"),
            KeywayOnly("nutcracker refuses '...'; Keyway reads any YAML syntax")),
        ("flow sequence", "a:\n  listen: 127.0.0.1:22121\n  servers: [127.0.0.1:6379:1]\n".into(),
            KeywayOnly("nutcracker refuses flow style; Keyway reads any YAML syntax")),
        ("anchor and alias", "a:\n  listen: 127.0.0.1:22121\n  timeout: &t 400\n  server_retry_timeout: *t\n  servers:\n   - 127.0.0.1:6379:1\n".into(),
            KeywayOnly("nutcracker refuses anchors; Keyway resolves them")),
        ("YAML core tag", with("  timeout: !!int 400\n"),
            KeywayOnly("nutcracker refuses all tags; Keyway resolves the core schema's (!!int, !!str)")),
        ("bracketed ipv6 listen", listen("[::1]:22121"),
            KeywayOnly("nutcracker passes '[::1]' to getaddrinfo, which fails; Keyway unbrackets")),
        ("listen perm not octal", listen("/tmp/keyway-compat.sock abc"),
            NutcrackerOnly("nutcracker's strtol reads garbage as mode 0; Keyway names the mistake")),
        ("listen perm 0o777", listen("/tmp/keyway-compat.sock 0o777"),
            NutcrackerOnly("nutcracker's strtol stops at 'o' and reads mode 0")),
        ("listen path with space", listen("/tmp/my sock"),
            NutcrackerOnly("nutcracker listens on '/tmp/my' with mode 0 from 'sock'")),
        ("empty server host", servers(&[":6379:1"]),
            NutcrackerOnly("nutcracker accepts an empty host it can never connect to")),
        ("timeout past a C int", with("  timeout: 99999999999\n"),
            NutcrackerOnly("nutcracker's nc_atoi wraps silently")),
        ("weight past a C int", servers(&["127.0.0.1:6379:4294967297"]),
            NutcrackerOnly("nutcracker's nc_atoi wraps 4294967297 to weight 1")),
        ("same listen address, different text", format!("{BASE}{}", BASE.replacen("a:", "b:", 1).replace("127.0.0.1:22121", "127.1:22121")),
            NutcrackerOnly("nutcracker compares listen text; Keyway compares resolved addresses")),
    ]
}

/// The nutcracker binary: `$NUTCRACKER` if set, else on `PATH`, else Debian's
/// `/usr/sbin/nutcracker`. Missing, it fails the test: nothing is skipped as passing.
fn nutcracker() -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os("NUTCRACKER") {
        Some(path) => vec![PathBuf::from(path)],
        None => std::env::var_os("PATH")
            .map(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("nutcracker"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .chain([PathBuf::from("/usr/sbin/nutcracker")])
            .collect(),
    };
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the nutcracker binary is needed for this test: install the Debian/Ubuntu \
                 package `nutcracker` (apt-get install nutcracker), or set NUTCRACKER=/path"
            )
        })
}

/// Whether `nutcracker -t` accepts `text`.
fn nutcracker_accepts(binary: &Path, dir: &Path, index: usize, text: &str) -> bool {
    let file = dir.join(format!("case{index}.yml"));
    std::fs::write(&file, text).unwrap();
    let output = Command::new(binary)
        .arg("-t")
        .arg("-c")
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    // nutcracker -t exits 0 when the file is valid, 1 otherwise.
    output.status.success()
}

#[test]
fn keyway_accepts_and_rejects_what_nutcracker_does() {
    let binary = nutcracker();
    let dir = std::env::temp_dir().join(format!("keyway-config-compat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let cases = cases();
    let mut mismatches = Vec::new();
    for (index, (name, text, expect)) in cases.iter().enumerate() {
        let nutcracker = nutcracker_accepts(&binary, &dir, index, text);
        let keyway = Config::parse(text);
        let wanted = match expect {
            Accept => (true, true),
            Reject => (false, false),
            KeywayOnly(_) => (false, true),
            NutcrackerOnly(_) => (true, false),
        };
        if (nutcracker, keyway.is_ok()) != wanted {
            let keyway = match &keyway {
                Ok(_) => "accepts".to_owned(),
                Err(e) => format!("rejects:\n    {}", e.to_string().replace('\n', "\n    ")),
            };
            mismatches.push(format!(
                "{name} (expected {expect:?}): nutcracker {}, keyway {keyway}\n---\n{text}---",
                if nutcracker { "accepts" } else { "rejects" },
            ));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(cases.len() >= 30);
    assert!(
        mismatches.is_empty(),
        "{} of {} cases disagree:\n\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n\n")
    );
}
