"""redis-py 5 applications through Keyway, unchanged: `Lock` (its Lua scripts: EVALSHA, and
SCRIPT LOAD on NOSCRIPT), `pipeline(transaction=True)` and a WATCH conflict (WatchError),
`transaction()` retrying after a conflict, `scan_iter` over 1,000 keys on every shard, `blpop`
woken by a push from another connection (and timing out on an empty list), and `pubsub()`
with SUBSCRIBE, PSUBSCRIBE, PUBLISH, PING in subscribed mode and get_message.

    python3 redis_py_apps.py HOST PORT PROTOCOL [PART,PART...]

PROTOCOL is 2 or 3 (RESP3 via HELLO 3); PARTS (default all): lock, transaction, scan, blpop,
pubsub. Each part prints what it checked; any mismatch fails the part with what was expected
and what came back, and the script exits 1 after running the others. Prints
`redis-py apps OK` when every part passed.
"""

import os
import sys
import threading
import time

import redis
from redis.exceptions import LockNotOwnedError, WatchError

HOST, PORT, PROTOCOL = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
PARTS = sys.argv[4].split(",") if len(sys.argv) > 4 else None
TAG = "%d-%d" % (os.getpid(), PROTOCOL)
LIMIT_S = 60


def connect():
    return redis.Redis(host=HOST, port=PORT, protocol=PROTOCOL, socket_timeout=10)


def check(got, want, what):
    if got != want:
        raise AssertionError("%s: expected %r, got %r" % (what, want, got))


def lock(r):
    name = "lock:{%s}" % TAG
    first = r.lock(name, timeout=5)
    check(first.acquire(blocking=False), True, "first acquire")
    second = r.lock(name, timeout=5)
    check(second.acquire(blocking=False), False, "second acquire while held")
    check(first.owned(), True, "owned by the first")
    check(first.extend(10), True, "extend by 10 s")
    ttl = r.pttl(name)
    if not 10000 < ttl <= 15000:
        raise AssertionError("pttl after extend: expected 10001..15000 ms, got %r" % ttl)
    check(first.reacquire(), True, "reacquire (ttl back to 5 s)")
    if not 0 < r.pttl(name) <= 5000:
        raise AssertionError("pttl after reacquire: got %r" % r.pttl(name))
    first.release()
    check(r.exists(name), 0, "lock key after release")
    check(second.acquire(blocking=True, blocking_timeout=2), True, "second acquire once free")
    second.release()
    # A lock that expired and was taken by another is not released by its former owner.
    short = r.lock(name, timeout=0.3)
    check(short.acquire(blocking=False), True, "acquire with a 0.3 s timeout")
    time.sleep(0.5)
    check(second.acquire(blocking=False), True, "acquire after the expiry")
    for what, call in [("extend", lambda: short.extend(1)), ("release", short.release)]:
        try:
            call()
            raise AssertionError("%s by the former owner did not raise LockNotOwnedError" % what)
        except LockNotOwnedError:
            pass
    check(second.locked(), True, "still held by the new owner")
    second.release()
    return "Lock: acquire, contention, extend, reacquire, release, expiry then LockNotOwnedError on extend and release"


def transaction(r):
    k = "{tx%s}" % TAG
    pipe = r.pipeline(transaction=True)
    pipe.set(k + ":a", 1).incrby(k + ":a", 41).rpush(k + ":l", "x", "y").get(k + ":a")
    check(pipe.execute(), [True, 42, 2, b"42"], "MULTI/EXEC replies")
    # WATCH, a write from another connection, EXEC: WatchError, nothing written.
    other = connect()
    with r.pipeline(transaction=True) as pipe:
        pipe.watch(k + ":a")
        check(pipe.get(k + ":a"), b"42", "GET while watching (immediate mode)")
        pipe.multi()
        pipe.set(k + ":a", "mine")
        other.set(k + ":a", "theirs")
        try:
            pipe.execute()
            raise AssertionError("EXEC after a conflicting write did not raise WatchError")
        except WatchError:
            pass
    check(r.get(k + ":a"), b"theirs", "the watched transaction did not run")
    # transaction(): retries the function after a conflict until EXEC succeeds.
    attempts = []

    def bump(pipe):
        value = int(pipe.get(k + ":n") or 0)
        attempts.append(value)
        if len(attempts) == 1:
            other.set(k + ":n", 100)
        pipe.multi()
        pipe.set(k + ":n", value + 1)

    r.transaction(bump, k + ":n")
    check(attempts, [0, 100], "values seen by the attempts")
    check(r.get(k + ":n"), b"101", "result of the retried transaction")
    # A queued command failing at EXEC is one error in the replies; the others still ran.
    pipe = r.pipeline(transaction=True)
    pipe.incr(k + ":l").incr(k + ":n")
    check(
        [type(x).__name__ for x in pipe.execute(raise_on_error=False)],
        ["ResponseError", "int"],
        "EXEC with a failing command",
    )
    check(r.get(k + ":n"), b"102", "the other queued command ran")
    check(r.delete(k + ":a", k + ":l", k + ":n"), 3, "DEL")
    other.close()
    return "pipeline(transaction=True): 4 replies, WATCH conflict (WatchError), transaction() retried once, a queued error"


def scan(r):
    # The varying part first: keys that differ only in their last bytes cluster on a few
    # points of a ketama continuum under fnv1a_64 (measured: 200 such keys, none on a shard).
    suffix = ":pyscan:%s" % TAG
    keys = [("%d%s" % (i, suffix)).encode() for i in range(1000)]
    for i in range(0, len(keys), 100):
        check(r.mset({k: b"v" for k in keys[i : i + 100]}), True, "MSET")
    yielded = list(r.scan_iter(match="*" + suffix, count=100))
    missing = set(keys) - set(yielded)
    check(sorted(missing)[:5], [], "%d keys never returned by SCAN (first ones)" % len(missing))
    check(len(set(yielded)), len(keys), "distinct keys scanned (none foreign to the MATCH)")
    typed = set(r.scan_iter(match="*" + suffix, count=200, _type="string"))
    check(len(typed), len(keys), "keys scanned with TYPE string")
    check(list(r.scan_iter(match="*" + suffix, _type="list")), [], "keys scanned with TYPE list")
    if not os.environ.get("KEEP_KEYS"):  # else the caller checks where they landed, drops them
        check(r.delete(*keys), len(keys), "DEL")
    return "scan_iter: all %d keys (%d yielded), TYPE string/list filters" % (len(keys), len(yielded))


def blpop(r):
    key = "queue:%s" % TAG
    other = connect()
    pusher = threading.Timer(0.3, lambda: other.rpush(key, "job-1"))
    start = time.monotonic()
    pusher.start()
    got = r.blpop([key], timeout=5)
    woken = time.monotonic() - start
    pusher.join()
    # A tuple in RESP2, a list in RESP3 (redis-py's parsers differ); the contents must match.
    check(tuple(got) if got is not None else None, (key.encode(), b"job-1"), "BLPOP")
    if not 0.25 <= woken < 4:
        raise AssertionError("BLPOP returned after %.2f s, the push came after 0.3 s" % woken)
    start = time.monotonic()
    check(r.blpop([key], timeout=1), None, "BLPOP on an empty list")
    waited = time.monotonic() - start
    if not 0.9 <= waited < 4:
        raise AssertionError("BLPOP with timeout 1 returned after %.2f s" % waited)
    check(r.get("after-blpop:%s" % TAG), None, "the connection serves commands after BLPOP")
    other.close()
    return "blpop: woken after %.2f s by another connection's push at 0.3 s; None after a 1 s timeout (%.2f s)" % (woken, waited)


def next_message(p, what):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        m = p.get_message(timeout=deadline - time.monotonic())
        if m is not None:
            return m
    raise AssertionError("no message within 5 s (%s)" % what)


def pubsub(r):
    ch = ["news:%s:%d" % (TAG, i) for i in range(2)]
    pattern = "news:%s:*" % TAG
    p = r.pubsub()
    p.subscribe(*ch)
    p.psubscribe(pattern)
    confirms = [next_message(p, "confirmation") for _ in range(3)]
    check(
        [(m["type"], m["channel"], m["data"]) for m in confirms],
        [("subscribe", ch[0].encode(), 1), ("subscribe", ch[1].encode(), 2), ("psubscribe", pattern.encode(), 3)],
        "subscribe confirmations",
    )
    sent = 0
    for n in range(20):
        c = ch[n % 2]
        check(r.publish(c, "m%d" % n), 2, "PUBLISH receivers (channel + pattern)")
        sent += 1
    got = [next_message(p, "message") for _ in range(2 * sent)]
    plain = [(m["channel"], m["data"]) for m in got if m["type"] == "message"]
    by_pattern = [(m["channel"], m["data"]) for m in got if m["type"] == "pmessage"]
    want = [(ch[n % 2].encode(), ("m%d" % n).encode()) for n in range(sent)]
    check(plain, want, "messages, once each and in order")
    check(by_pattern, want, "pattern messages, once each and in order")
    check({m["pattern"] for m in got if m["type"] == "pmessage"}, {pattern.encode()}, "pattern field")
    p.ping()
    pong = next_message(p, "pong")
    check(pong["type"], "pong", "PING in subscribed mode")
    p.unsubscribe(ch[0])
    check(next_message(p, "unsubscribe")["data"], 2, "count after one UNSUBSCRIBE")
    check(r.publish(ch[0], "late"), 1, "receivers of the unsubscribed channel (the pattern)")
    check((next_message(p, "late")["type"]), "pmessage", "only the pattern gets it")
    p.punsubscribe()
    p.unsubscribe()
    ends = sorted((m["type"], m["data"]) for m in (next_message(p, "end") for _ in range(2)))
    check(ends, [("punsubscribe", 1), ("unsubscribe", 0)], "final confirmations")
    check(r.publish(ch[1], "gone"), 0, "receivers after unsubscribing")
    p.close()
    return "pubsub: 3 confirmations, %d messages x (channel + pattern) in order, PING, unsubscribe counts" % sent


def main():
    watchdog = threading.Timer(LIMIT_S, lambda: (print("redis-py apps: timed out after %d s" % LIMIT_S), os._exit(1)))
    watchdog.daemon = True
    watchdog.start()
    r = connect()
    failed = []
    for name, part in [("lock", lock), ("transaction", transaction), ("scan", scan), ("blpop", blpop), ("pubsub", pubsub)]:
        if PARTS is not None and name not in PARTS:
            continue
        try:
            print("protocol %d %s" % (PROTOCOL, part(r)), flush=True)
        except Exception as e:  # every failure is reported; the exit status says it failed
            failed.append(name)
            print("protocol %d %s FAILED: %s: %s" % (PROTOCOL, name, type(e).__name__, e), flush=True)
    r.close()
    if failed:
        print("redis-py apps FAILED: %s" % ", ".join(failed))
        sys.exit(1)
    print("redis-py %s apps OK" % redis.__version__)


main()
