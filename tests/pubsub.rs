//! Pub/sub through Keyway over 4 real redis-servers: confirmations, counts, subscribed mode and
//! messages byte-identical to one Redis (RESP2 and RESP3); 100 subscribers on 50 channels get
//! every message once, in order per channel; a subscriber whose backend dies is closed; a
//! subscriber that leaves, or unsubscribes, leaves no subscription behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::live::connection_ids;
use common::*;

/// murmur spreads the tests' similar channel names over all four shards (fnv1a_64, the
/// default, puts `news:0`..`news:199` on two of them, as nutcracker does).
const POOL: &[(&str, &str)] = &[("hash", "murmur")];

/// Channel names routed to different shards of `setup`, one per shard, in shard order (a
/// channel routes as the key of the same name does).
fn channel_per_shard(setup: &Setup, prefix: &str) -> Vec<String> {
    let by_shard = setup.keys_by_shard(prefix, 200);
    let mut cleanup = setup.client();
    by_shard
        .iter()
        .map(|keys| {
            let name = String::from_utf8(keys[0].clone()).unwrap();
            for key in keys {
                cleanup.cmd(&[b"DEL".as_slice(), key]);
            }
            name
        })
        .collect()
}

/// The shard a channel routes to: that of the key of the same name.
fn shard_of_channel(setup: &Setup, name: &str) -> usize {
    let mut c = setup.client();
    assert_eq!(c.cmd(&["SET", name, "1"]), Reply::ok());
    let shard = setup.shard_of(name.as_bytes());
    c.cmd(&["DEL", name]);
    shard
}

/// Sends `args` to both and returns the next `replies` raw replies of each.
fn both(
    proxy: &mut Client,
    direct: &mut Client,
    args: &[&str],
    replies: usize,
) -> (String, String) {
    proxy.send(args);
    direct.send(args);
    let read = |c: &mut Client| -> String {
        (0..replies)
            .map(|_| show(&c.read_reply_raw()))
            .collect::<Vec<_>>()
            .join("")
    };
    (read(proxy), read(direct))
}

fn same(proxy: &mut Client, direct: &mut Client, args: &[&str], replies: usize) {
    let (ours, theirs) = both(proxy, direct, args, replies);
    assert_eq!(ours, theirs, "{args:?}");
}

/// Publishes through each (Keyway, then the reference) and checks both subscribers receive
/// the same `messages` messages (a channel's and a pattern's copy), and both publishers the
/// same count.
fn publish_same(
    publishers: (&mut Client, &mut Client),
    subscribers: (&mut Client, &mut Client),
    args: &[&str],
    messages: i64,
) {
    let (pp, dp) = publishers;
    let count = dp.cmd(args);
    assert_eq!(
        count,
        Reply::Int(messages),
        "{args:?}: the test's own count"
    );
    assert_eq!(pp.cmd(args), count, "{args:?}: receiver counts");
    let (ps, ds) = subscribers;
    for _ in 0..messages {
        assert_eq!(
            show(&ps.read_reply_raw()),
            show(&ds.read_reply_raw()),
            "{args:?}: the message"
        );
    }
}

#[test]
fn subscriptions_and_messages_look_exactly_as_from_one_redis_in_resp2() {
    let setup = Setup::new(4, POOL);
    let reference = RedisServer::start();
    let channels = channel_per_shard(&setup, "ch");
    let (a, b, c) = (&channels[0], &channels[1], &channels[2]);
    let (mut ps, mut ds) = (setup.client(), reference.client());
    let (mut pp, mut dp) = (setup.client(), reference.client());

    same(&mut ps, &mut ds, &["UNSUBSCRIBE"], 1);
    same(&mut ps, &mut ds, &["PUNSUBSCRIBE"], 1);
    same(&mut ps, &mut ds, &["SUBSCRIBE", a, a, b], 3);
    // Subscribed mode: what Redis allows, and its refusal of the rest.
    same(&mut ps, &mut ds, &["PING"], 1);
    same(&mut ps, &mut ds, &["PING", "hi"], 1);
    same(&mut ps, &mut ds, &["GET", "k"], 1);
    same(&mut ps, &mut ds, &["PSUBSCRIBE", "ch*"], 1);
    same(&mut ps, &mut ds, &["SSUBSCRIBE", c], 1);

    publish_same(
        (&mut pp, &mut dp),
        (&mut ps, &mut ds),
        &["PUBLISH", a, "one"],
        2,
    );
    publish_same(
        (&mut pp, &mut dp),
        (&mut ps, &mut ds),
        &["PUBLISH", b, "two"],
        2,
    );
    // Caught by the pattern only (it is on every shard; the channel on one).
    publish_same(
        (&mut pp, &mut dp),
        (&mut ps, &mut ds),
        &["PUBLISH", c, "three"],
        1,
    );
    publish_same(
        (&mut pp, &mut dp),
        (&mut ps, &mut ds),
        &["SPUBLISH", c, "four"],
        1,
    );
    assert_eq!(pp.cmd(&["PUBLISH", "other", "x"]), Reply::Int(0));

    same(&mut ps, &mut ds, &["UNSUBSCRIBE", "nothing", a], 2);
    same(&mut ps, &mut ds, &["UNSUBSCRIBE"], 1);
    // Still subscribed to the pattern: messages on `a` now come through it alone.
    publish_same(
        (&mut pp, &mut dp),
        (&mut ps, &mut ds),
        &["PUBLISH", a, "five"],
        1,
    );
    same(&mut ps, &mut ds, &["PUNSUBSCRIBE"], 1);
    same(&mut ps, &mut ds, &["SUNSUBSCRIBE"], 1);
    same(&mut ps, &mut ds, &["SUNSUBSCRIBE"], 1);
    // Out of subscribed mode: an ordinary client again.
    same(&mut ps, &mut ds, &["PING"], 1);
    assert_eq!(ps.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(ps.cmd(&["GET", "k"]), Reply::bulk("v"));
    assert_eq!(pp.cmd(&["PUBLISH", a, "gone"]), Reply::Int(0));
}

#[test]
fn a_resp3_subscriber_gets_pushes_and_keeps_running_commands() {
    let setup = Setup::new(4, POOL);
    let reference = RedisServer::start();
    let channels = channel_per_shard(&setup, "r3-");
    let (mut ps, mut ds) = (setup.client(), reference.client());
    let (mut pp, mut dp) = (setup.client(), reference.client());
    for c in [&mut ps, &mut ds] {
        assert!(!c.cmd(&["HELLO", "3"]).is_error());
    }
    same(&mut ps, &mut ds, &["UNSUBSCRIBE"], 1);
    same(
        &mut ps,
        &mut ds,
        &["SUBSCRIBE", &channels[0], &channels[3]],
        2,
    );
    same(&mut ps, &mut ds, &["PSUBSCRIBE", "r3-*"], 1);
    // Commands in between, with RESP3 replies.
    same(&mut ps, &mut ds, &["GET", "missing"], 1);
    same(&mut ps, &mut ds, &["PING"], 1);
    assert_eq!(
        pp.cmd(&["PUBLISH", &channels[3], "m"]),
        dp.cmd(&["PUBLISH", &channels[3], "m"])
    );
    // The message, then the pattern's copy, as one Redis sends them.
    same(&mut ps, &mut ds, &["PING", "after"], 3);
    same(&mut ps, &mut ds, &["UNSUBSCRIBE", &channels[0]], 1);
    // Keyway's one departure: no protocol switch while subscribed.
    assert!(ps
        .cmd(&["HELLO", "2"])
        .error_text()
        .contains("unsubscribe first"));
    same(&mut ps, &mut ds, &["RESET"], 1);
    same(&mut ps, &mut ds, &["PING"], 1);
    assert_eq!(
        pp.cmd(&["PUBLISH", &channels[3], "after reset"]),
        Reply::Int(0)
    );
}

/// One Redis writes a message to its subscribers before it replies to the publisher, so a
/// request the subscriber sends after the publisher's reply is answered after the message.
/// Through Keyway the message travels on the subscriber's link while the next request's
/// reply may be ready at once (a local `PING`, a `GET` over a shared connection): the reply
/// must still come second. Published straight to the backend, the race is at its tightest.
#[test]
fn a_reply_never_overtakes_a_message_published_before_its_request() {
    const ROUNDS: usize = 300;
    let setup = Setup::new(2, POOL);
    let channels = channel_per_shard(&setup, "order-");
    let shard = shard_of_channel(&setup, &channels[1]);
    let mut publisher = setup.shards[shard].client();
    for resp3 in [false, true] {
        let mut subscriber = setup.client();
        subscriber.set_read_timeout(Duration::from_secs(10));
        if resp3 {
            assert!(!subscriber.cmd(&["HELLO", "3"]).is_error());
        }
        subscriber.cmd(&["SUBSCRIBE", &channels[0], &channels[1]]);
        subscriber.read_reply();
        for round in 0..ROUNDS {
            let payload = format!("m{round}");
            assert_eq!(
                publisher.cmd(&["PUBLISH", &channels[1], &payload]),
                Reply::Int(1)
            );
            // RESP2 subscribed mode allows PING only; RESP3 runs anything.
            let probe: &[&str] = match (resp3, round % 2) {
                (true, 1) => &["GET", "order-probe"],
                _ => &["PING", "probe"],
            };
            subscriber.send(probe);
            let first = subscriber.read_reply();
            assert_eq!(
                first,
                Reply::Array(Some(vec![
                    Reply::bulk("message"),
                    Reply::bulk(&channels[1]),
                    Reply::bulk(&payload)
                ])),
                "round {round} (RESP3 {resp3}): the reply to {probe:?} overtook the message"
            );
            let reply = subscriber.read_reply();
            assert!(!reply.is_error(), "{reply:?}");
        }
        subscriber.close();
    }
}

#[test]
fn a_hundred_subscribers_on_fifty_channels_get_every_message_once_in_order() {
    const SUBSCRIBERS: usize = 100;
    const CHANNELS: usize = 50;
    const PER_CHANNEL: usize = 40;
    // Each subscriber has a link to most shards: past the default 64 per backend.
    let setup = Setup::new(4, &[("hash", "murmur"), ("dedicated_connections", "200")]);
    let channel = |i: usize| format!("news:{i}");
    let shards: std::collections::BTreeSet<usize> = (0..CHANNELS)
        .map(|i| shard_of_channel(&setup, &channel(i)))
        .collect();
    assert_eq!(shards.len(), 4, "the channels spread over every shard");
    // Subscriber s listens on channels s % 50 and (s * 7 + 3) % 50; every fifth also on a
    // pattern covering channels 10..19.
    let mut subscribers: Vec<(Client, Vec<usize>, bool)> = (0..SUBSCRIBERS)
        .map(|s| {
            let mut mine = vec![s % CHANNELS, (s * 7 + 3) % CHANNELS];
            mine.dedup();
            let pattern = s % 5 == 0;
            let mut c = setup.client();
            c.set_read_timeout(Duration::from_secs(30));
            let mut args = vec!["SUBSCRIBE".to_string()];
            args.extend(mine.iter().map(|&i| channel(i)));
            c.send(&args);
            for _ in &mine {
                let reply = c.read_reply();
                assert_eq!(reply.items()[0], Reply::bulk("subscribe"));
            }
            if pattern {
                assert_eq!(
                    c.cmd(&["PSUBSCRIBE", "news:1?"]).items()[0],
                    Reply::bulk("psubscribe")
                );
            }
            (c, mine, pattern)
        })
        .collect();
    let mut listeners = vec![0i64; CHANNELS];
    for (_, mine, pattern) in &subscribers {
        for &i in mine {
            listeners[i] += 1;
        }
        if *pattern {
            for (i, count) in listeners.iter_mut().enumerate() {
                if (10..20).contains(&i) {
                    *count += 1;
                }
            }
        }
    }
    let mut publisher = setup.client();
    for n in 0..PER_CHANNEL {
        let requests: Vec<Vec<u8>> = (0..CHANNELS)
            .map(|i| encode(&["PUBLISH", &channel(i), &format!("{i}:{n}")]))
            .collect();
        for (i, reply) in publisher.pipeline(&requests).into_iter().enumerate() {
            assert_eq!(
                reply,
                Reply::Int(listeners[i]),
                "receivers of {}",
                channel(i)
            );
        }
    }
    let mut delivered = 0;
    for (s, (client, mine, pattern)) in subscribers.iter_mut().enumerate() {
        let mut expected: Vec<usize> = mine.clone();
        if *pattern {
            expected.extend(10..20);
        }
        // Per channel (and per way of receiving it), the next sequence number due.
        let mut next: HashMap<(usize, bool), usize> = HashMap::new();
        for _ in 0..expected.len() * PER_CHANNEL {
            let reply = client.read_reply();
            let items = reply.items();
            let (by_pattern, payload) = match &items[0] {
                Reply::Bulk(Some(kind)) if kind == b"message" => (false, &items[2]),
                Reply::Bulk(Some(kind)) if kind == b"pmessage" => (true, &items[3]),
                other => panic!("subscriber {s}: unexpected {other:?}"),
            };
            let Reply::Bulk(Some(payload)) = payload else {
                panic!("subscriber {s}: payload {payload:?}");
            };
            let text = String::from_utf8(payload.clone()).unwrap();
            let (i, n) = text.split_once(':').unwrap();
            let (i, n): (usize, usize) = (i.parse().unwrap(), n.parse().unwrap());
            let due = next.entry((i, by_pattern)).or_insert(0);
            assert_eq!(n, *due, "subscriber {s}: {text} out of order");
            *due += 1;
            delivered += 1;
        }
        for &i in &expected {
            let by_pattern = !mine.contains(&i);
            assert_eq!(
                next.get(&(i, by_pattern)),
                Some(&PER_CHANNEL),
                "subscriber {s}"
            );
        }
        // Nothing more: not one message twice.
        assert_eq!(client.cmd(&["PING", "end"]).items()[1], Reply::bulk("end"));
    }
    eprintln!("{delivered} messages delivered to {SUBSCRIBERS} subscribers");
}

/// The backend's pub/sub subscriptions, as it counts them.
fn numsub(server: &RedisServer, channel: &str) -> i64 {
    server.client().cmd(&["PUBSUB", "NUMSUB", channel]).items()[1].int()
}

#[test]
fn a_subscriber_that_leaves_or_unsubscribes_leaves_nothing_behind() {
    let setup = Setup::new(4, POOL);
    let channels = channel_per_shard(&setup, "gone");
    let mut subscriber = setup.client();
    subscriber.send(&["SUBSCRIBE", &channels[1], &channels[2]]);
    subscriber.read_reply();
    subscriber.read_reply();
    assert_eq!(numsub(&setup.shards[1], &channels[1]), 1);
    assert_eq!(numsub(&setup.shards[2], &channels[2]), 1);
    let connections = |server: &RedisServer| connection_ids(server).len();
    let before = connections(&setup.shards[1]);
    // Unsubscribing from the shard's last channel closes that shard's subscriber connection.
    subscriber.cmd(&["UNSUBSCRIBE", &channels[1]]);
    assert!(
        wait_until(Duration::from_secs(10), || connections(&setup.shards[1])
            == before - 1),
        "the subscriber connection to shard 1 stayed open"
    );
    assert_eq!(numsub(&setup.shards[1], &channels[1]), 0);
    // Leaving ends the others.
    drop(subscriber);
    assert!(
        wait_until(Duration::from_secs(10), || numsub(
            &setup.shards[2],
            &channels[2]
        ) == 0),
        "the subscription outlived its client"
    );
}

#[test]
fn a_subscriber_whose_backend_dies_is_closed() {
    let mut setup = Setup::new(4, POOL);
    let channels = channel_per_shard(&setup, "dies");
    let mut subscriber = setup.client();
    subscriber.set_read_timeout(Duration::from_secs(20));
    subscriber.send(&["SUBSCRIBE", &channels[0], &channels[3]]);
    subscriber.read_reply();
    subscriber.read_reply();
    setup.shards[3].kill();
    match subscriber.try_read_reply() {
        Err(ReadError::Closed) | Err(ReadError::Io(_)) => {}
        other => panic!("expected the connection to close, got {other:?}"),
    }
    assert!(
        wait_until(Duration::from_secs(10), || setup
            .proxy
            .stderr()
            .contains("closing subscriber")),
        "no log line says why"
    );
    // Other clients are unaffected.
    let mut other = setup.client();
    assert_eq!(
        other.cmd(&["PUBLISH", &channels[0], "x"]),
        Reply::Int(0),
        "the closed subscriber's other subscription is gone too"
    );
}

#[test]
fn sharded_channels_meet_on_their_slot_master_in_a_cluster_pool() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = cluster.keyway("  timeout: 5000\n");
    // A channel on each master.
    let mut channels: Vec<String> = Vec::new();
    let mut masters = std::collections::BTreeSet::new();
    for i in 0..1000 {
        let name = format!("sc:{i}");
        if masters.insert(cluster.master_of_slot(cluster.keyslot(&name)).port) {
            channels.push(name);
        }
        if masters.len() == 3 {
            break;
        }
    }
    assert_eq!(channels.len(), 3, "a channel on each master");
    let mut subscriber = proxy.client();
    let mut publisher = proxy.client();
    for channel in &channels {
        let reply = subscriber.cmd(&["SSUBSCRIBE", channel]);
        assert_eq!(reply.items()[0], Reply::bulk("ssubscribe"), "{channel}");
        // Subscribed on the slot's master, which alone counts it.
        let master = cluster.node(cluster.master_of_slot(cluster.keyslot(channel)).port);
        let counted = master.client().cmd(&["PUBSUB", "SHARDNUMSUB", channel]);
        assert_eq!(counted.items()[1], Reply::Int(1), "{channel} on its master");
    }
    assert_eq!(
        subscriber.cmd(&["PSUBSCRIBE", "sc:*"]).items()[2],
        Reply::Int(1)
    );
    for (n, channel) in channels.iter().enumerate() {
        let text = format!("m{n}");
        assert_eq!(publisher.cmd(&["SPUBLISH", channel, &text]), Reply::Int(1));
        assert_eq!(
            subscriber.read_reply(),
            Reply::Array(Some(vec![
                Reply::bulk("smessage"),
                Reply::bulk(channel),
                Reply::bulk(&text)
            ]))
        );
        // A classic publish reaches the pattern once, though the cluster forwards it to every
        // node. Its count is the publishing node's own, as with the cluster itself: 1 where
        // the pattern was subscribed, else 0.
        let count = publisher.cmd(&["PUBLISH", channel, &text]).int();
        assert!(count == 0 || count == 1, "{count}");
        assert_eq!(subscriber.read_reply().items()[0], Reply::bulk("pmessage"));
    }
    assert_eq!(
        subscriber.cmd(&["PING", "none"]).items()[1],
        Reply::bulk("none"),
        "no message twice"
    );
}

#[test]
fn a_subscription_its_backend_never_confirms_ends_within_the_pool_timeout() {
    let setup = Setup::new(4, &[("hash", "murmur"), ("timeout", "300")]);
    let channels = channel_per_shard(&setup, "stall");
    setup.shards[2].pause();
    let mut subscriber = setup.client();
    subscriber.set_read_timeout(Duration::from_secs(20));
    subscriber.send(&["SUBSCRIBE", &channels[2]]);
    let outcome = subscriber.try_read_reply();
    setup.shards[2].resume();
    match outcome {
        Err(ReadError::Closed) | Err(ReadError::Io(_)) => {}
        other => panic!("expected the connection to close, got {other:?}"),
    }
    assert!(
        setup.proxy.stderr().contains("no confirmation within"),
        "no log line says why"
    );
}

#[test]
fn a_subscriber_that_does_not_read_is_closed_past_its_output_limit() {
    let setup = Setup::new(
        4,
        &[
            ("hash", "murmur"),
            ("client_output_limit", "65536"),
            ("client_output_hard_limit", "262144"),
        ],
    );
    let channels = channel_per_shard(&setup, "flood");
    let subscriber = std::net::TcpStream::connect(setup.proxy.addr()).unwrap();
    let mut raw = Client::from_stream(subscriber.try_clone().unwrap());
    raw.send(&["SUBSCRIBE", &channels[1]]);
    raw.read_reply();
    // Never read again; shrink what the kernel buffers for it.
    socket2::SockRef::from(&subscriber)
        .set_recv_buffer_size(4096)
        .unwrap();
    let rss_before = setup.proxy.rss_kib();
    let mut publisher = setup.client();
    let payload = "x".repeat(16 * 1024);
    let mut closed_after = None;
    // At most 64 MiB published, in batches: far past the 256 KiB hard limit and the sockets.
    for batch in 0..64 {
        let requests: Vec<Vec<u8>> = (0..64)
            .map(|_| encode(&["PUBLISH", &channels[1], &payload]))
            .collect();
        let receivers: i64 = publisher.pipeline(&requests).iter().map(Reply::int).sum();
        if receivers == 0 {
            closed_after = Some(batch);
            break;
        }
    }
    let rss_after = setup.proxy.rss_kib();
    eprintln!(
        "closed after {closed_after:?} batches of 1 MiB; RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(closed_after.is_some(), "the subscriber was never closed");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew {rss_before} -> {rss_after} KiB"
    );
    assert!(wait_until(Duration::from_secs(10), || setup
        .proxy
        .stderr()
        .contains("client_output_hard_limit")));
}

#[test]
fn pubsub_counts_gather_every_shards_subscriptions_as_one_redis_counts_them() {
    let setup = Setup::new(4, POOL);
    let reference = RedisServer::start();
    let channels = channel_per_shard(&setup, "count");
    // The same subscribers on both: two on every channel, one on two patterns, one sharded.
    let mut held = Vec::new();
    for server in [None, Some(&reference)] {
        let connect = || match server {
            Some(reference) => reference.client(),
            None => setup.client(),
        };
        for _ in 0..2 {
            let mut c = connect();
            let mut args = vec!["SUBSCRIBE".to_string()];
            args.extend(channels.iter().cloned());
            c.send(&args);
            for _ in &channels {
                c.read_reply();
            }
            held.push(c);
        }
        let mut c = connect();
        c.send(&["PSUBSCRIBE", "count*", "other*"]);
        c.read_reply();
        c.read_reply();
        held.push(c);
        let mut c = connect();
        c.cmd(&["SSUBSCRIBE", &channels[2]]);
        held.push(c);
    }
    let (mut ours, mut theirs) = (setup.client(), reference.client());
    let mut numsub = vec!["PUBSUB", "NUMSUB", "nobody"];
    numsub.extend(channels.iter().map(String::as_str));
    assert_eq!(ours.cmd(&numsub), theirs.cmd(&numsub));
    assert_eq!(ours.cmd(&numsub).items()[3], Reply::Int(2));
    for args in [
        &["PUBSUB", "NUMPAT"][..],
        &["PUBSUB", "SHARDNUMSUB", &channels[2], &channels[1]],
    ] {
        assert_eq!(ours.cmd(args), theirs.cmd(args), "{args:?}");
    }
    for args in [&["PUBSUB", "CHANNELS"][..], &["PUBSUB", "SHARDCHANNELS"]] {
        assert_eq!(
            ours.cmd(args).sorted(),
            theirs.cmd(args).sorted(),
            "{args:?}"
        );
    }
    assert_eq!(
        ours.cmd(&["PUBSUB", "CHANNELS", "count*"]).items().len(),
        channels.len()
    );
    drop(held);
}

#[test]
fn subscriber_connections_are_leased_within_dedicated_connections() {
    let setup = Setup::new(4, &[("hash", "murmur"), ("dedicated_connections", "2")]);
    let channels = channel_per_shard(&setup, "lease");
    let mut first = setup.client();
    let mut second = setup.client();
    first.cmd(&["SUBSCRIBE", &channels[1]]);
    second.cmd(&["SUBSCRIBE", &channels[1]]);
    assert_eq!(setup.proxy.leased(), 2, "one lease per subscriber link");
    // A third link to that backend is past the limit: refused, and nothing changed.
    let mut third = setup.client();
    let refused = third.cmd(&["SUBSCRIBE", &channels[0], &channels[1]]);
    assert!(
        refused
            .error_text()
            .starts_with("ERR dedicated_connections (2) reached for 127.0.0.1:"),
        "{refused:?}"
    );
    assert_eq!(
        third.cmd(&["PING"]),
        Reply::Simple("PONG".into()),
        "not subscribed"
    );
    assert_eq!(third.cmd(&["PUBLISH", &channels[1], "m"]), Reply::Int(2));
    assert!(
        wait_until(Duration::from_secs(10), || setup.proxy.leased() == 2),
        "the link to shard 0 opened for the refused request was kept"
    );
    // Leases come back as subscriptions end.
    first.cmd(&["UNSUBSCRIBE"]);
    drop(second);
    assert!(
        wait_until(Duration::from_secs(10), || setup.proxy.leased() == 0),
        "leases still held: {}",
        setup.proxy.leased()
    );
    let reply = third.cmd(&["SUBSCRIBE", &channels[1]]);
    assert_eq!(reply.items()[2], Reply::Int(1), "recovered");
}
