//! Every command family answers through the proxy (4 shards, `hash_tag: "{}"`) exactly as one
//! Redis does (the families are in tests/suites/command_families.rs, shared with the cluster
//! suite), plus the proxy's own answers: CROSSSLOT, unsupported and unknown commands, arity.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use common::*;

mod families {
    use super::common::*;
    include!("suites/command_families.rs");
}

/// A 4-shard pool and a reference redis.
fn diff() -> families::Diff {
    let setup = Setup::new(4, &[("hash_tag", "\"{}\"")]);
    let reference = RedisServer::start();
    // KEYWAY_ITEST_SELF_CHECK=1 checks the tables themselves: "proxy" is then a second
    // plain redis, so every failure is a mistake in the test, not in a proxy
    let proxy = if std::env::var_os("KEYWAY_ITEST_SELF_CHECK").is_some() {
        setup.shards[0].client()
    } else {
        setup.client()
    };
    let direct = reference.client();
    families::Diff::new(proxy, direct, vec![Box::new(setup), Box::new(reference)])
}

/// One test per family, each on its own pool.
macro_rules! family_tests {
    ($($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                families::$name(&mut diff());
            }
        )*
        #[test]
        fn every_family_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for (name, _) in families::FAMILIES {
                assert!(tested.contains(name), "{name} has no test");
            }
        }
    };
}

family_tests! {
    string_commands_reply_as_redis,
    string_commands_added_in_redis_6_and_7_reply_as_redis,
    hash_commands_reply_as_redis,
    list_commands_reply_as_redis,
    list_commands_added_in_redis_6_reply_as_redis,
    set_commands_reply_as_redis,
    set_commands_added_in_redis_6_and_7_reply_as_redis,
    sorted_set_commands_reply_as_redis,
    sorted_set_commands_added_in_redis_6_reply_as_redis,
    hyperloglog_commands_reply_as_redis,
    bitmap_commands_reply_as_redis,
    bitmap_commands_added_in_redis_6_and_7_reply_as_redis,
    geo_commands_reply_as_redis,
    geo_search_commands_reply_as_redis,
    stream_commands_on_one_stream_reply_as_redis,
    keyspace_commands_reply_as_redis,
    eval_with_keys_on_one_shard_replies_as_redis,
}

const CROSSSLOT: &[u8] = b"-CROSSSLOT Keys in request don't hash to the same shard\r\n";

#[test]
fn colocated_commands_across_shards_get_crossslot() {
    let setup = Setup::new(4, &[("hash_tag", "\"{}\"")]);
    let by_shard = setup.keys_by_shard("cross", 40);
    let a = by_shard.iter().find(|k| !k.is_empty()).unwrap()[0].clone();
    let b = by_shard
        .iter()
        .filter(|k| !k.is_empty())
        .nth(1)
        .expect("keys on two shards")[0]
        .clone();
    let (a, b) = (String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap());
    let mut c = setup.client();
    for cmd in [
        vec!["SINTER", &a, &b],
        vec!["SUNIONSTORE", &a, &a, &b],
        vec!["SMOVE", &a, &b, "m"],
        vec!["RENAME", &a, &b],
        vec!["ZUNIONSTORE", &a, "2", &a, &b],
        vec!["MSETNX", &a, "1", &b, "2"],
        vec!["EVAL", "return 1", "2", &a, &b],
        vec!["RPOPLPUSH", &a, &b],
        vec!["PFMERGE", &a, &b],
    ] {
        c.send(&cmd);
        assert_eq!(show(&c.read_reply_raw()), show(CROSSSLOT), "{cmd:?}");
    }
    // the connection is still usable, and nothing was written
    assert_eq!(c.cmd(&["GET", &a]), Reply::bulk("1"));
    assert_eq!(c.cmd(&["GET", &b]), Reply::bulk("1"));
}

#[test]
fn colocated_commands_on_tagged_keys_never_get_crossslot() {
    let setup = Setup::new(4, &[("hash_tag", "\"{}\"")]);
    let mut c = setup.client();
    for i in 0..50 {
        let (a, b) = (format!("{{t{i}}}:a"), format!("x{{t{i}}}:b"));
        assert_eq!(c.cmd(&["SADD", &a, "1", "2"]), Reply::Int(2));
        assert_eq!(c.cmd(&["SADD", &b, "2", "3"]), Reply::Int(2));
        assert_eq!(
            c.cmd(&["SINTER", &a, &b]),
            Reply::Array(Some(vec![Reply::bulk("2")])),
            "{a} {b}"
        );
        assert_eq!(c.cmd(&["SMOVE", &a, &b, "1"]), Reply::Int(1));
        assert_eq!(
            c.cmd(&["SUNIONSTORE", &format!("{{t{i}}}:u"), &a, &b]),
            Reply::Int(3)
        );
    }
}

#[test]
fn colocated_commands_on_untagged_keys_of_one_shard_are_forwarded() {
    let setup = Setup::new(4, &[("hash_tag", "\"{}\"")]);
    let by_shard = setup.keys_by_shard("same", 40);
    let keys = by_shard
        .iter()
        .find(|k| k.len() >= 2)
        .expect("two keys on one shard");
    let (a, b) = (
        String::from_utf8(keys[0].clone()).unwrap(),
        String::from_utf8(keys[1].clone()).unwrap(),
    );
    let mut c = setup.client();
    assert_eq!(c.cmd(&["DEL", &a, &b]), Reply::Int(2));
    assert_eq!(c.cmd(&["SADD", &a, "x", "y"]), Reply::Int(2));
    assert_eq!(c.cmd(&["SADD", &b, "y", "z"]), Reply::Int(2));
    assert_eq!(
        c.cmd(&["SINTER", &a, &b]),
        Reply::Array(Some(vec![Reply::bulk("y")]))
    );
    assert_eq!(c.cmd(&["SMOVE", &a, &b, "x"]), Reply::Int(1));
    assert_eq!(c.cmd(&["SCARD", &b]), Reply::Int(3));
}

#[test]
fn unsupported_command_gets_an_error_and_the_connection_stays_open() {
    let setup = Setup::new(4, &[]);
    let mut c = setup.client();
    c.send(&["monitor"]);
    assert_eq!(
        show(&c.read_reply_raw()),
        show(b"-ERR unsupported command 'monitor'\r\n")
    );
    assert_eq!(c.cmd(&["SET", "after:monitor", "1"]), Reply::ok());
    for cmd in [
        &["CONFIG", "GET", "maxmemory"][..],
        &["SWAPDB", "0", "1"],
        &["MOVE", "k", "1"],
    ] {
        let r = c.cmd(cmd);
        assert!(
            r.error_text()
                .to_ascii_lowercase()
                .starts_with("err unsupported command"),
            "{cmd:?} -> {r:?}"
        );
        assert_eq!(
            c.cmd(&["PING"]),
            Reply::Simple("PONG".into()),
            "after {cmd:?}"
        );
    }
    assert_eq!(c.cmd(&["GET", "after:monitor"]), Reply::bulk("1"));
}

#[test]
fn unknown_command_gets_an_error_and_the_connection_stays_open() {
    let setup = Setup::new(4, &[]);
    let mut c = setup.client();
    let r = c.cmd(&["NOSUCHCOMMAND", "key", "arg"]);
    assert!(r.error_text().starts_with("ERR "), "{r:?}");
    assert!(
        r.error_text()
            .to_ascii_lowercase()
            .contains("nosuchcommand"),
        "names the command: {r:?}"
    );
    assert_eq!(c.cmd(&["SET", "after:unknown", "v"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "after:unknown"]), Reply::bulk("v"));
}

#[test]
fn wrong_arity_gets_an_error_and_the_connection_stays_open() {
    let setup = Setup::new(4, &[]);
    let mut c = setup.client();
    for cmd in [
        &["GET"][..],
        &["SET", "k"],
        &["GET", "a", "b"],
        &["HSET", "h"],
        &["MGET"],
    ] {
        let r = c.cmd(cmd);
        assert!(
            r.error_text().starts_with("ERR wrong number of arguments"),
            "{cmd:?} -> {r:?}"
        );
        assert_eq!(
            c.cmd(&["PING"]),
            Reply::Simple("PONG".into()),
            "after {cmd:?}"
        );
    }
    assert_eq!(c.cmd(&["SET", "after:arity", "v"]), Reply::ok());
}
