//! Multi-key commands split over 4 shards and merged: key order kept, counts summed exactly as
//! one Redis would count them (duplicates included); hash tags co-locate; keys and values are
//! binary-safe; big values round-trip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use common::*;

/// The proxy under test and a reference redis holding the same data.
struct Fixture {
    setup: Setup,
    _reference: RedisServer,
    proxy: Client,
    direct: Client,
}

impl Fixture {
    fn new() -> Fixture {
        let setup = Setup::new(4, &[("hash_tag", "\"{}\"")]);
        let reference = RedisServer::start();
        let proxy = setup.client();
        let direct = reference.client();
        Fixture {
            setup,
            _reference: reference,
            proxy,
            direct,
        }
    }

    /// Runs `args` on both; the replies must be equal. Returns the proxy's.
    fn same(&mut self, args: &[Vec<u8>]) -> Reply {
        let expected = self.direct.cmd(args);
        let got = self.proxy.cmd(args);
        assert_eq!(
            got,
            expected,
            "{} (with {} args)",
            show(&args[0]),
            args.len()
        );
        got
    }

    /// Sets `keys[i]` to `value(i)` on both, one SET per key.
    fn populate(&mut self, keys: &[Vec<u8>]) {
        let cmds: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| encode(&[b"SET".as_slice(), k, &value(k)]))
            .collect();
        for client in [&mut self.proxy, &mut self.direct] {
            assert!(client.pipeline(&cmds).iter().all(|r| *r == Reply::ok()));
        }
    }
}

fn value(key: &[u8]) -> Vec<u8> {
    let mut v = b"val:".to_vec();
    v.extend_from_slice(key);
    v
}

fn keys(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{prefix}:{i}").into_bytes())
        .collect()
}

fn command(name: &str, args: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut c = vec![name.as_bytes().to_vec()];
    c.extend_from_slice(args);
    c
}

/// 1,000 keys of which the odd ones exist, in a shuffled order with some keys repeated.
fn mixed_key_list(all: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut list: Vec<Vec<u8>> = (0..all.len())
        .map(|i| all[(i * 7919) % all.len()].clone())
        .collect();
    for i in (0..list.len()).step_by(10) {
        list.insert(i, all[3].clone());
    }
    list.push(all[3].clone());
    list.push(all[0].clone());
    list.push(all[0].clone());
    list
}

#[test]
fn mget_across_four_shards_keeps_key_order_with_missing_and_repeated_keys() {
    let mut f = Fixture::new();
    let all = keys("mget", 1000);
    let existing: Vec<Vec<u8>> = all.iter().skip(1).step_by(2).cloned().collect();
    f.populate(&existing);
    let list = mixed_key_list(&all);
    let reply = f.same(&command("MGET", &list));
    let expected: Vec<Reply> = list
        .iter()
        .map(|k| {
            if existing.contains(k) {
                Reply::bulk(value(k))
            } else {
                Reply::nil()
            }
        })
        .collect();
    assert_eq!(reply, Reply::Array(Some(expected)));
    let used: std::collections::HashSet<usize> = existing
        .iter()
        .take(50)
        .map(|k| f.setup.shard_of(k))
        .collect();
    assert!(
        used.len() >= 3,
        "the keys must spread over the shards for this test to mean anything: {used:?}"
    );
}

#[test]
fn mset_across_four_shards_writes_every_key_and_the_last_repeat_wins() {
    let mut f = Fixture::new();
    let all = keys("mset", 1000);
    let mut args = Vec::new();
    for k in &all {
        args.push(k.clone());
        args.push(value(k));
    }
    // a key given twice: Redis keeps the last value
    args.push(all[5].clone());
    args.push(b"second".to_vec());
    assert_eq!(f.same(&command("MSET", &args)), Reply::ok());
    let on_backends: usize = f.setup.shards.iter().map(|s| s.keys().len()).sum();
    assert_eq!(on_backends, all.len(), "each key on exactly one backend");
    assert_eq!(
        f.same(&command("GET", &[all[5].clone()])),
        Reply::bulk("second")
    );
    let got = f.same(&command("MGET", &all));
    assert_eq!(got.items()[999], Reply::bulk(value(&all[999])));
}

#[test]
fn del_across_four_shards_sums_counts_like_redis() {
    let mut f = Fixture::new();
    let all = keys("del", 1000);
    let existing: Vec<Vec<u8>> = all.iter().step_by(3).cloned().collect();
    f.populate(&existing);
    let list = mixed_key_list(&all);
    assert_eq!(
        f.same(&command("DEL", &list)),
        Reply::Int(existing.len() as i64)
    );
    assert!(
        f.setup.shards.iter().all(|s| s.keys().is_empty()),
        "every key deleted on the backends"
    );
    assert_eq!(f.same(&command("DEL", &list)), Reply::Int(0));
    // DEL a a deletes once
    f.populate(&all[..1]);
    assert_eq!(
        f.same(&command("DEL", &[all[0].clone(), all[0].clone()])),
        Reply::Int(1)
    );
}

#[test]
fn unlink_across_four_shards_sums_counts_like_redis() {
    let mut f = Fixture::new();
    let all = keys("unlink", 1000);
    let existing: Vec<Vec<u8>> = all.iter().step_by(2).cloned().collect();
    f.populate(&existing);
    let list = mixed_key_list(&all);
    assert_eq!(
        f.same(&command("UNLINK", &list)),
        Reply::Int(existing.len() as i64)
    );
    assert!(
        f.setup.shards.iter().all(|s| s.keys().is_empty()),
        "every key unlinked on the backends"
    );
}

#[test]
fn touch_across_four_shards_sums_counts_like_redis() {
    let mut f = Fixture::new();
    let all = keys("touch", 1000);
    let existing: Vec<Vec<u8>> = all.iter().step_by(4).cloned().collect();
    f.populate(&existing);
    let list = mixed_key_list(&all);
    let expected = list.iter().filter(|k| existing.contains(k)).count() as i64;
    assert_eq!(f.same(&command("TOUCH", &list)), Reply::Int(expected));
}

#[test]
fn exists_across_four_shards_sums_counts_and_counts_repeats_like_redis() {
    let mut f = Fixture::new();
    let all = keys("exists", 1000);
    let existing: Vec<Vec<u8>> = all.iter().step_by(2).cloned().collect();
    f.populate(&existing);
    let list = mixed_key_list(&all);
    let expected = list.iter().filter(|k| existing.contains(k)).count() as i64;
    assert_eq!(f.same(&command("EXISTS", &list)), Reply::Int(expected));
    // EXISTS a a counts 2, like Redis; a missing first key must not decide the answer
    assert_eq!(
        f.same(&command("EXISTS", &[all[0].clone(), all[0].clone()])),
        Reply::Int(2)
    );
    assert_eq!(
        f.same(&command(
            "EXISTS",
            &[all[1].clone(), all[0].clone(), all[2].clone()]
        )),
        Reply::Int(2)
    );
}

#[test]
fn hash_tags_colocate_keys_on_one_backend() {
    let f = Fixture::new();
    let mut c = f.setup.client();
    let mut homes = std::collections::HashSet::new();
    for t in 0..20 {
        let group = [
            format!("{{user{t}}}:a"),
            format!("{{user{t}}}:b"),
            format!("profile:{{user{t}}}"),
            format!("x{{user{t}}}y{{z}}"),
        ];
        for k in &group {
            assert_eq!(c.cmd(&["SET", k, "v"]), Reply::ok());
        }
        let home = f.setup.shard_of(group[0].as_bytes());
        for k in &group[1..] {
            assert_eq!(
                f.setup.shard_of(k.as_bytes()),
                home,
                "{k} and {} share the tag user{t}",
                group[0]
            );
        }
        homes.insert(home);
    }
    assert!(
        homes.len() >= 2,
        "20 different tags should not all share one backend: {homes:?}"
    );
}

#[test]
fn binary_keys_and_values_round_trip_unchanged() {
    let f = Fixture::new();
    let mut c = f.setup.client();
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let mut reversed = all_bytes.clone();
    reversed.reverse();
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (all_bytes.clone(), reversed.clone()),
        (
            b"key with spaces\r\nand CRLF".to_vec(),
            b"value\r\nwith\r\nCRLF\r\n".to_vec(),
        ),
        (b"empty-value".to_vec(), Vec::new()),
        (b"$5\r\n*1\r\n".to_vec(), b"*2\r\n$3\r\nGET\r\n".to_vec()),
        (vec![0xff, 0x80, 0x00, 0xc3, 0x28], all_bytes.clone()),
        (reversed.clone(), b"\x00".to_vec()),
    ];
    for (k, v) in &cases {
        assert_eq!(
            c.cmd(&[b"SET".as_slice(), k, v]),
            Reply::ok(),
            "SET {}",
            show(k)
        );
    }
    for (k, v) in &cases {
        assert_eq!(
            c.cmd(&[b"GET".as_slice(), k]),
            Reply::bulk(v),
            "GET {}",
            show(k)
        );
        let shard = f.setup.shard_of(k);
        let on_backend = f.setup.shards[shard].client().cmd(&[b"GET".as_slice(), k]);
        assert_eq!(
            on_backend,
            Reply::bulk(v),
            "stored unchanged on backend {shard}"
        );
    }
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(cases.iter().map(|(k, _)| k.as_slice()));
    let expected: Vec<Reply> = cases.iter().map(|(_, v)| Reply::bulk(v)).collect();
    assert_eq!(c.cmd(&mget), Reply::Array(Some(expected)));
}

#[test]
fn sixteen_mib_value_round_trips() {
    let f = Fixture::new();
    let mut c = f.setup.client();
    let value: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(c.cmd(&[b"SET".as_slice(), b"big", &value]), Reply::ok());
    let got = c.cmd(&["GET", "big"]);
    match &got {
        Reply::Bulk(Some(b)) => {
            assert_eq!(b.len(), value.len());
            assert!(*b == value, "16 MiB value changed on the way");
        }
        other => panic!("GET big -> {other:?}"),
    }
    assert_eq!(c.cmd(&["STRLEN", "big"]), Reply::Int(16 * 1024 * 1024));
    // and the connection is still in step after it
    assert_eq!(c.cmd(&["SET", "small", "s"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "small"]), Reply::bulk("s"));
}
