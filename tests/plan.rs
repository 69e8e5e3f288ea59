//! `keyway plan -c OLD --to NEW`: the share of keys a change of servers moves, and where, over
//! a real sample `SCAN`ned through a running Keyway; checked against what a Keyway on the new
//! config actually misses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::process::Command;

use common::*;

#[test]
fn plan_over_a_live_sample_counts_exactly_the_keys_a_new_config_misses() {
    let backends = start_redis_servers(4);
    // Named servers hashed with md5: the same keys move in every run.
    let lines: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| server_line(b, 1, Some(&format!("cache-{i}"))))
        .collect();
    let options = [("timeout", "5000"), ("hash", "md5")];
    let old_of = |port: u16| pool_yaml(port, &lines[..3], &options);
    let new_of = |port: u16| pool_yaml(port, &lines, &options);
    let old = Proxy::start_on_free_port(ProxyKind::Keyway, old_of);
    let keys: Vec<String> = (0..3000).map(|n| format!("plan:{n}")).collect();
    let writes: Vec<Vec<u8>> = keys.iter().map(|k| encode(&["SET", k, "v"])).collect();
    assert!(old
        .client()
        .pipeline(&writes)
        .iter()
        .all(|r| *r == Reply::ok()));

    let dir = TempDir::new("plan");
    let (old_file, new_file) = (dir.path().join("old.yml"), dir.path().join("new.yml"));
    std::fs::write(&old_file, old_of(1)).unwrap();
    std::fs::write(&new_file, new_of(1)).unwrap();
    let output = Command::new(keyway_bin())
        .args(["plan", "-c"])
        .arg(&old_file)
        .arg("--to")
        .arg(&new_file)
        .args(["--sample-from", old.addr()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let first = text.lines().next().unwrap();
    let moved: usize = first
        .split(" (")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(first.ends_with("of 3000 sampled keys)"), "{text}");

    let new = Proxy::start_on_free_port(ProxyKind::Keyway, new_of);
    let reads: Vec<Vec<u8>> = keys.iter().map(|k| encode(&["GET", k])).collect();
    let misses = new
        .client()
        .pipeline(&reads)
        .iter()
        .filter(|r| **r == Reply::nil())
        .count();
    assert_eq!(moved, misses, "{text}");
    assert!((400..1200).contains(&moved), "{text}");
    // Every moved key goes to the new backend, from each of the old three.
    let flows: Vec<&str> = text
        .lines()
        .skip(1)
        .filter(|l| l.contains(" -> "))
        .collect();
    assert_eq!(flows.len(), 3, "{text}");
    let newest = format!("-> 127.0.0.1:{}:", backends[3].port());
    assert!(flows.iter().all(|l| l.contains(&newest)), "{text}");
}
