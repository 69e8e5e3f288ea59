//! Transactions through Keyway (4 real shards, `hash_tag: "{}"`), byte for byte against one
//! direct Redis: `MULTI`/`EXEC`, `DISCARD`, `WATCH` conflicts (RESP2 and RESP3), the errors
//! Redis gives, a command for another shard (`-CROSSSLOT`, then `-EXECABORT`), a client
//! leaving mid-transaction, and redis-py's `pipeline(transaction=True)`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::live::connection_ids;
use common::*;

const HANG: Duration = Duration::from_secs(10);
const CROSSSLOT: &str = "-CROSSSLOT Keys in request don't hash to the same shard\r\n";
const EXECABORT: &str = "-EXECABORT Transaction discarded because of previous errors.\r\n";

struct Both {
    setup: Setup,
    reference: RedisServer,
}

impl Both {
    fn new() -> Both {
        Both {
            setup: Setup::new(4, &[("hash_tag", "\"{}\"")]),
            reference: RedisServer::start(),
        }
    }

    /// Sends each command on `proxy` and on `direct` and asserts the same reply bytes.
    fn same(&self, proxy: &mut Client, direct: &mut Client, commands: &[&[&str]]) {
        for command in commands {
            proxy.send(command);
            direct.send(command);
            let ours = show(&proxy.read_reply_raw());
            let theirs = show(&direct.read_reply_raw());
            assert_eq!(ours, theirs, "{command:?}");
        }
    }
}

/// Asserts that the leases left are those of clean connections kept for reuse: at most one
/// per backend for a test's one client here (a leak would pile them up), and none busy.
fn kept_only(proxy: &Proxy) {
    let left = proxy.leased();
    assert!(left <= 4, "{left} leases left");
}

/// Two hash tags whose keys Keyway puts on different shards.
fn two_shards(setup: &Setup) -> (String, String) {
    let mut c = setup.client();
    let mut seen: Vec<(String, usize)> = Vec::new();
    for i in 0..200 {
        let key = format!("{{t{i}}}probe");
        c.cmd(&["SET", &key, "1"]);
        let shard = setup.shard_of(key.as_bytes());
        c.cmd(&["DEL", &key]);
        if let Some((other, _)) = seen.iter().find(|(_, s)| *s != shard) {
            return (other.clone(), format!("{{t{i}}}"));
        }
        seen.push((format!("{{t{i}}}"), shard));
    }
    panic!("every tag on one shard");
}

#[test]
fn multi_exec_and_discard_answer_as_one_redis() {
    let both = Both::new();
    let (mut p, mut d) = (both.setup.client(), both.reference.client());
    both.same(
        &mut p,
        &mut d,
        &[
            &["MULTI"],
            &["SET", "{u}a", "1"],
            &["INCR", "{u}a"],
            &["LPUSH", "{u}l", "x"],
            // A runtime error stays inside the EXEC array.
            &["INCR", "{u}l"],
            &["GET", "{u}a"],
            &["PING"],
            &["MGET", "{u}a", "{u}b"],
            &["EXEC"],
            &["GET", "{u}a"],
            &["MULTI"],
            &["SET", "{u}a", "discarded"],
            &["DISCARD"],
            &["GET", "{u}a"],
            // A transaction without keys.
            &["MULTI"],
            &["EXEC"],
            &["MULTI"],
            &["PING"],
            &["ECHO", "hi"],
            &["EXEC"],
            // Blocking commands inside MULTI do not block, as in Redis.
            &["MULTI"],
            &["BLPOP", "{u}empty", "0"],
            &["EXEC"],
        ],
    );
    kept_only(&both.setup.proxy);
}

#[test]
fn the_errors_redis_gives_come_byte_for_byte() {
    let both = Both::new();
    let (mut p, mut d) = (both.setup.client(), both.reference.client());
    both.same(
        &mut p,
        &mut d,
        &[
            &["EXEC"],
            &["DISCARD"],
            &["UNWATCH"],
            &["MULTI"],
            &["MULTI"],
            &["WATCH", "{u}a"],
            &["SET", "{u}a", "1"],
            &["EXEC"],
            // A command refused while queueing aborts the transaction.
            &["MULTI"],
            &["SET", "{u}a", "2"],
            &["GET"],
            &["EXEC"],
            &["GET", "{u}a"],
            &["MULTI"],
            &["NOSUCHCOMMAND", "x"],
            &["EXEC"],
            // RESET ends a transaction and a watch, inside MULTI too.
            &["WATCH", "{u}a"],
            &["MULTI"],
            &["SET", "{u}a", "reset"],
            &["RESET"],
            &["EXEC"],
            &["GET", "{u}a"],
            &["WATCH", "{u}a"],
            &["RESET"],
            &["MULTI"],
            &["EXEC"],
        ],
    );
    kept_only(&both.setup.proxy);
}

#[test]
fn a_watch_conflict_makes_exec_answer_a_null_array() {
    let both = Both::new();
    let (mut p, mut d) = (both.setup.client(), both.reference.client());
    let (mut other_p, mut other_d) = (both.setup.client(), both.reference.client());
    both.same(
        &mut p,
        &mut d,
        &[&["SET", "{w}k", "1"], &["WATCH", "{w}k"], &["GET", "{w}k"]],
    );
    both.same(&mut other_p, &mut other_d, &[&["SET", "{w}k", "changed"]]);
    both.same(
        &mut p,
        &mut d,
        &[
            &["MULTI"],
            &["SET", "{w}k", "mine"],
            &["EXEC"],
            &["GET", "{w}k"],
        ],
    );
    assert_eq!(p.cmd(&["GET", "{w}k"]), Reply::bulk("changed"));
    // No conflict: EXEC runs; UNWATCH ends a watch without a transaction.
    both.same(
        &mut p,
        &mut d,
        &[
            &["WATCH", "{w}k"],
            &["MULTI"],
            &["SET", "{w}k", "mine"],
            &["EXEC"],
            &["WATCH", "{w}k"],
            &["UNWATCH"],
            &["GET", "{w}k"],
        ],
    );
    kept_only(&both.setup.proxy);
    // A transaction that ended is clean: the next one reuses its connection.
    let shard = both.setup.shard_of(b"{w}k");
    let conns = connection_ids(&both.setup.shards[shard]).len();
    assert_eq!(p.cmd(&["WATCH", "{w}k"]), Reply::ok());
    assert_eq!(p.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(p.cmd(&["GET", "{w}k"]), Reply::Simple("QUEUED".into()));
    assert_eq!(
        p.cmd(&["EXEC"]),
        Reply::Array(Some(vec![Reply::bulk("mine")]))
    );
    assert_eq!(
        connection_ids(&both.setup.shards[shard]).len(),
        conns,
        "reused, not reopened"
    );
}

/// Sends `bytes` and reads until the reply bytes end with `end`.
fn exchange(stream: &mut TcpStream, bytes: &[u8], end: &[u8]) -> Vec<u8> {
    stream.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(end) {
        let n = stream.read(&mut buf).expect("a reply in time");
        assert!(n > 0, "closed after {:?}", show(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[test]
fn a_watch_conflict_in_resp3_is_a_null() {
    let both = Both::new();
    let mut proxy = TcpStream::connect(both.setup.proxy.addr()).unwrap();
    let mut direct = TcpStream::connect(both.reference.addr()).unwrap();
    for s in [&proxy, &direct] {
        s.set_read_timeout(Some(HANG)).unwrap();
    }
    for s in [&mut proxy, &mut direct] {
        exchange(s, b"HELLO 3\r\n", b"modules\r\n*0\r\n");
        exchange(s, b"WATCH {w}k\r\n", b"+OK\r\n");
    }
    let mut other = both.setup.client();
    assert_eq!(other.cmd(&["SET", "{w}k", "x"]), Reply::ok());
    assert_eq!(
        both.reference.client().cmd(&["SET", "{w}k", "x"]),
        Reply::ok()
    );
    let script = b"MULTI\r\nSET {w}k y\r\nEXEC\r\n";
    let ours = exchange(&mut proxy, script, b"_\r\n");
    let theirs = exchange(&mut direct, script, b"_\r\n");
    assert_eq!(show(&ours), show(&theirs));
    assert_eq!(show(&ours), show(b"+OK\r\n+QUEUED\r\n_\r\n"));
    // And a RESP3 EXEC array of maps comes as the backend's RESP3.
    let script = b"MULTI\r\nHSET {w}h f v\r\nHGETALL {w}h\r\nEXEC\r\n";
    let ours = exchange(&mut proxy, script, b"$1\r\nv\r\n");
    let theirs = exchange(&mut direct, script, b"$1\r\nv\r\n");
    assert_eq!(show(&ours), show(&theirs));
}

#[test]
fn a_command_for_another_shard_is_crossslot_then_execabort() {
    let both = Both::new();
    let (a, b) = two_shards(&both.setup);
    let (ka, kb) = (format!("{a}x"), format!("{b}x"));
    let mut c = both.setup.client();
    c.send(&["MULTI"]);
    c.send(&["SET", &ka, "1"]);
    c.send(&["SET", &kb, "1"]);
    c.send(&["INCR", &ka]);
    c.send(&["EXEC"]);
    let got: Vec<u8> = (0..5).flat_map(|_| c.read_reply_raw()).collect();
    assert_eq!(
        show(&got),
        show(format!("+OK\r\n+QUEUED\r\n{CROSSSLOT}+QUEUED\r\n{EXECABORT}").as_bytes())
    );
    // Nothing ran, on either shard.
    assert_eq!(c.cmd(&["GET", &ka]), Reply::nil());
    assert_eq!(c.cmd(&["GET", &kb]), Reply::nil());
    // Multi-key commands inside MULTI: all keys on the pinned shard, else the same.
    c.send(&["MULTI"]);
    c.send(&["MSET", &format!("{a}1"), "1", &format!("{a}2"), "2"]);
    c.send(&["MGET", &format!("{a}1"), &format!("{b}1")]);
    c.send(&["DEL", &format!("{a}1"), &format!("{a}2")]);
    c.send(&["EXEC"]);
    let got: Vec<u8> = (0..5).flat_map(|_| c.read_reply_raw()).collect();
    assert_eq!(
        show(&got),
        show(format!("+OK\r\n+QUEUED\r\n{CROSSSLOT}+QUEUED\r\n{EXECABORT}").as_bytes())
    );
    // A watching client cannot switch protocol: its connection speaks the one it watched in.
    assert_eq!(c.cmd(&["WATCH", &ka]), Reply::ok());
    assert!(c
        .cmd(&["HELLO", "3"])
        .error_text()
        .starts_with("ERR Keyway cannot switch the protocol of a client watching keys"));
    assert_eq!(c.cmd(&["UNWATCH"]), Reply::ok());
    // WATCH over two shards, or on a second shard, cannot be served.
    assert_eq!(c.cmd(&["WATCH", &ka, &kb]).to_bytes(), CROSSSLOT.as_bytes());
    assert_eq!(c.cmd(&["WATCH", &ka]), Reply::ok());
    assert_eq!(c.cmd(&["WATCH", &kb]).to_bytes(), CROSSSLOT.as_bytes());
    assert_eq!(c.cmd(&["UNWATCH"]), Reply::ok());
    kept_only(&both.setup.proxy);
}

#[test]
fn a_client_that_leaves_mid_transaction_leaves_nothing_behind() {
    let both = Both::new();
    let before: Vec<usize> = both
        .setup
        .shards
        .iter()
        .map(|s| connection_ids(s).len())
        .collect();
    let mut c = both.setup.client();
    assert_eq!(c.cmd(&["WATCH", "{gone}k"]), Reply::ok());
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        c.cmd(&["SET", "{gone}k", "v"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(both.setup.proxy.leased(), 1);
    let during: Vec<usize> = both
        .setup
        .shards
        .iter()
        .map(|s| connection_ids(s).len())
        .collect();
    assert_eq!(
        during.iter().sum::<usize>(),
        before.iter().sum::<usize>() + 1,
        "one dedicated connection"
    );
    c.close();
    assert!(wait_until(HANG, || both.setup.proxy.leased() == 0));
    assert!(
        wait_until(HANG, || both
            .setup
            .shards
            .iter()
            .map(|s| connection_ids(s).len())
            .collect::<Vec<_>>()
            == before),
        "the backend saw the connection go"
    );
    assert_eq!(both.setup.client().cmd(&["GET", "{gone}k"]), Reply::nil());
}

#[test]
fn past_dedicated_connections_a_transaction_is_refused_naming_the_limit() {
    let setup = Setup::new(1, &[("hash_tag", "\"{}\""), ("dedicated_connections", "1")]);
    let mut first = setup.client();
    assert_eq!(first.cmd(&["WATCH", "k"]), Reply::ok());
    let mut second = setup.client();
    let limit = format!(
        "ERR dedicated_connections (1) reached for {}",
        setup.shards[0].addr()
    );
    assert_eq!(second.cmd(&["WATCH", "k"]), Reply::Error(limit.clone()));
    // Inside MULTI the refusal aborts the transaction, as a queueing error does.
    assert_eq!(second.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(second.cmd(&["SET", "k", "v"]), Reply::Error(limit));
    assert_eq!(second.cmd(&["EXEC"]).to_bytes(), EXECABORT.as_bytes());
    assert_eq!(first.cmd(&["UNWATCH"]), Reply::ok());
    assert!(wait_until(HANG, || setup.proxy.leased() == 0));
    assert_eq!(second.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        second.cmd(&["SET", "k", "v"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(second.cmd(&["EXEC"]), Reply::Array(Some(vec![Reply::ok()])));
}

#[test]
fn pipelined_requests_around_a_transaction_run_in_order() {
    let both = Both::new();
    let (mut p, mut d) = (both.setup.client(), both.reference.client());
    let script: Vec<Vec<u8>> = [
        &["SET", "{o}k", "1"][..],
        &["WATCH", "{o}k"],
        &["INCR", "{o}k"],
        &["MULTI"],
        &["INCR", "{o}k"],
        &["EXEC"],
        &["GET", "{o}k"],
        &["SET", "{p}k", "after"],
        &["GET", "{p}k"],
    ]
    .iter()
    .map(|c| encode(c))
    .collect();
    let ours: Vec<Vec<u8>> = p.pipeline(&script).iter().map(Reply::to_bytes).collect();
    let theirs: Vec<Vec<u8>> = d.pipeline(&script).iter().map(Reply::to_bytes).collect();
    assert_eq!(ours, theirs);
}

#[test]
fn redis_py_transactions_work_unchanged() {
    let both = Both::new();
    let script = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), decode_responses=True)
with r.pipeline(transaction=True) as p:
    p.set("{py}a", 1).incr("{py}a").lpush("{py}l", "x").get("{py}a")
    print(p.execute())
def move(pipe):
    value = int(pipe.get("{py}a"))
    pipe.multi()
    pipe.set("{py}a", value * 10)
print(r.transaction(move, "{py}a"))
print(r.get("{py}a"))
"#;
    let run = |port: u16| {
        let out = Command::new(python_with_redis())
            .arg("-c")
            .arg(script)
            .arg(port.to_string())
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "redis-py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let port: u16 = both
        .setup
        .proxy
        .addr()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ours = run(port);
    assert_eq!(ours, run(both.reference.port()));
    assert_eq!(ours, "[True, 2, 1, '2']\n[True]\n20\n");
}

#[test]
fn a_cluster_pool_pins_a_transaction_to_the_slot_owner_and_a_moved_slot_aborts_it() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = cluster.keyway("  timeout: 2000\n");
    let mut c = proxy.client();
    c.send(&["MULTI"]);
    c.send(&["SET", "{ct}a", "1"]);
    c.send(&["INCR", "{ct}a"]);
    c.send(&["SET", "{other}b", "1"]);
    c.send(&["EXEC"]);
    let got: Vec<u8> = (0..5).flat_map(|_| c.read_reply_raw()).collect();
    assert_eq!(
        show(&got),
        show(format!("+OK\r\n+QUEUED\r\n+QUEUED\r\n{CROSSSLOT}{EXECABORT}").as_bytes())
    );
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        c.cmd(&["SET", "{ct}a", "1"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(c.cmd(&["INCR", "{ct}a"]), Reply::Simple("QUEUED".into()));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(Some(vec![Reply::ok(), Reply::Int(2)]))
    );
    // The slot of an empty key moves away while a client watches it: the transaction's
    // commands get -TRYAGAIN (never a redirect), and the node aborts the transaction.
    let slot = cluster.keyslot("{cm}k");
    let from = cluster.master_of_slot(slot);
    let to = cluster
        .view()
        .into_iter()
        .find(|n| n.master && n.port != from.port)
        .unwrap();
    assert_eq!(c.cmd(&["WATCH", "{cm}k"]), Reply::ok());
    for node in cluster.view().into_iter().filter(|n| n.master) {
        let reply = cluster.node(node.port).client().cmd(&[
            "CLUSTER",
            "SETSLOT",
            &slot.to_string(),
            "NODE",
            &to.id,
        ]);
        assert_eq!(reply, Reply::ok());
    }
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    let moved = c.cmd(&["SET", "{cm}k", "v"]);
    assert!(moved.error_text().starts_with("TRYAGAIN"), "{moved:?}");
    assert_eq!(c.cmd(&["EXEC"]).to_bytes(), EXECABORT.as_bytes());
    kept_only(&proxy);
    // The client retries, on the new owner once Keyway has the new layout.
    let retried = wait_until(HANG, || {
        c.cmd(&["MULTI"]);
        c.cmd(&["SET", "{cm}k", "v"]);
        c.cmd(&["EXEC"]) == Reply::Array(Some(vec![Reply::ok()]))
    });
    assert!(retried, "the retried transaction ran");
    assert_eq!(
        cluster.node(to.port).client().cmd(&["GET", "{cm}k"]),
        Reply::bulk("v")
    );
}

#[test]
fn a_transaction_whose_backend_connection_is_lost_closes_its_client() {
    let setup = Setup::new(1, &[]);
    let mut c = setup.client();
    assert_eq!(c.cmd(&["WATCH", "k"]), Reply::ok());
    assert_eq!(setup.proxy.leased(), 1);
    // The backend drops every client: the WATCH is gone with the dedicated one.
    let killed = setup.shards[0]
        .client()
        .cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    assert!(killed.int() >= 1, "{killed:?}");
    assert!(wait_until(HANG, || setup.proxy.leased() == 0));
    // Never silently on without the WATCH: an error, then the client is closed.
    let lost = c.cmd(&["MULTI"]);
    assert!(
        lost.error_text()
            .contains("transaction's backend connection was lost"),
        "{lost:?}"
    );
    c.send(&["PING"]);
    assert!(matches!(c.try_read_reply(), Err(ReadError::Closed)));
    let mut again = setup.client();
    assert_eq!(again.cmd(&["SET", "k", "v"]), Reply::ok());
}

#[test]
fn a_client_that_half_closes_after_a_transaction_gets_every_reply() {
    let setup = Setup::new(2, &[("hash_tag", "\"{}\"")]);
    let mut s = TcpStream::connect(setup.proxy.addr()).unwrap();
    s.set_read_timeout(Some(HANG)).unwrap();
    // The GET waits behind EXEC (it goes over another connection); the client has sent its
    // last byte by then.
    s.write_all(b"MULTI\r\nSET {h}k v\r\nEXEC\r\nGET {h}k\r\nPING\r\n")
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(
        show(&got),
        show(b"+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n$1\r\nv\r\n+PONG\r\n")
    );
}
