// node-redis 4 applications through Keyway: pub/sub with the subscriber on a `duplicate()`d
// client (SUBSCRIBE by channel, PSUBSCRIBE by pattern, PUBLISH counts), `scanIterator` over
// 1,000 keys spread over every shard (its cursors must survive node-redis 4's Number()
// parsing), and transactions: `multi().exec()` on hash-tagged keys,
// and a WATCH conflict (on an isolated connection) that makes EXEC fail with a WatchError.
'use strict';

const { createClient, WatchError } = require('redis');
const { assert, host, port, run } = require('./common');

const CHANNELS = 5;
const PER_CHANNEL = 40;
const SCAN_KEYS = 1000;

/** Waits until `check()` holds, failing with `what` after `ms`. */
async function until(check, what, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function pubsub(client) {
  const subscriber = client.duplicate();
  subscriber.on('error', () => {});
  await subscriber.connect();
  const tag = `${process.pid}`;
  const channels = Array.from({ length: CHANNELS }, (_, i) => `nr-chan-${tag}-${i}`);
  const got = new Map(channels.map((c) => [c, []]));
  const byPattern = [];
  for (const channel of channels) {
    await subscriber.subscribe(channel, (message, ch) => got.get(ch).push(message));
  }
  const pattern = `nr-chan-${tag}-*`;
  await subscriber.pSubscribe(pattern, (message, ch) => byPattern.push([ch, message]));
  let receivers = 0;
  for (let n = 0; n < PER_CHANNEL; n++) {
    for (const channel of channels) receivers += await client.publish(channel, `${channel}#${n}`);
  }
  // Each message reaches the channel subscription and the pattern subscription.
  assert.equal(receivers, 2 * CHANNELS * PER_CHANNEL, 'PUBLISH receiver counts');
  const total = CHANNELS * PER_CHANNEL;
  await until(
    () => [...got.values()].every((m) => m.length >= PER_CHANNEL) && byPattern.length >= total,
    'published messages'
  );
  for (const [channel, messages] of got) {
    const want = Array.from({ length: PER_CHANNEL }, (_, n) => `${channel}#${n}`);
    assert.deepEqual(messages, want, `messages on ${channel}, once each and in order`);
  }
  assert.equal(byPattern.length, total, 'pattern messages');
  for (const channel of channels) {
    const seen = byPattern.filter(([ch]) => ch === channel).map(([, m]) => m);
    assert.deepEqual(seen, got.get(channel), `pattern messages on ${channel}`);
  }
  // After UNSUBSCRIBE / PUNSUBSCRIBE nothing reaches the subscriber any more. (They name
  // the channels: node-redis 4.7's `unsubscribe()` without arguments never resolves while a
  // pattern subscription is left, even against one Redis.)
  await subscriber.unsubscribe(channels);
  await subscriber.pUnsubscribe(pattern);
  assert.equal(await client.publish(channels[0], 'after'), 0, 'receivers after unsubscribing');
  await subscriber.quit();
  return `pub/sub: ${CHANNELS} channels x ${PER_CHANNEL} messages, each delivered once in order ` +
    `by SUBSCRIBE and by PSUBSCRIBE (${receivers} receivers counted by PUBLISH), 0 after unsubscribing`;
}

async function scan(client) {
  // The varying part first: keys that differ only in their last bytes cluster on a few
  // points of a ketama continuum under fnv1a_64 (measured: 200 such keys, none on a shard).
  const suffix = `:nrscan:${process.pid}`;
  const match = `*${suffix}`;
  const keys = Array.from({ length: SCAN_KEYS }, (_, i) => `${i}${suffix}`);
  for (let i = 0; i < keys.length; i += 100) {
    assert.equal(await client.mSet(keys.slice(i, i + 100).map((k) => [k, 'v'])), 'OK');
  }
  // node-redis 4 parses the cursor with Number() and sends that number back: a cursor above
  // 2^53 (a proxy encoding shard and backend cursor in one decimal string) would come back
  // altered. Walk the cursors raw first and say so plainly if one does not survive.
  const cursors = [];
  let raw = '0';
  do {
    [raw] = await client.sendCommand(['SCAN', raw, 'MATCH', match, 'COUNT', '100']);
    cursors.push(raw);
  } while (raw !== '0' && cursors.length < 10000);
  assert.equal(raw, '0', 'SCAN ended within 10,000 calls');
  const altered = cursors.filter((c) => String(Number(c)) !== c);
  assert.deepEqual(altered, [], 'cursors node-redis 4 cannot carry (Number() alters them)');
  const seen = new Set();
  let yielded = 0;
  for await (const key of client.scanIterator({ MATCH: match, COUNT: 100 })) {
    seen.add(key);
    yielded++;
  }
  const missing = keys.filter((k) => !seen.has(k));
  assert.deepEqual(missing.slice(0, 5), [], `${missing.length} keys never returned by SCAN`);
  assert.equal(seen.size, SCAN_KEYS, 'distinct keys scanned (none foreign to the MATCH)');
  // KEEP_KEYS: the caller checks where they landed (every shard) and drops them.
  if (!process.env.KEEP_KEYS) assert.equal(await client.del(keys), SCAN_KEYS);
  return `scanIterator: all ${SCAN_KEYS} keys returned (${yielded} yielded, duplicates allowed); ` +
    `${cursors.length} raw cursors, each safe as a JS number`;
}

async function transactions(client) {
  const k = `{nrtx${process.pid}}`;
  const replies = await client
    .multi()
    .set(`${k}:a`, '1')
    .incrBy(`${k}:a`, 41)
    .rPush(`${k}:list`, ['x', 'y'])
    .get(`${k}:a`)
    .exec();
  assert.deepEqual(replies, ['OK', 42, 2, '42'], 'MULTI/EXEC replies');
  // A queued error (wrong type) is one reply of EXEC, the other commands still run.
  const mixed = await client.multi().incr(`${k}:list`).incr(`${k}:a`).exec().catch((e) => e);
  assert.equal(mixed && mixed.constructor.name, 'MultiErrorReply', 'EXEC with a failing command');
  assert.deepEqual(mixed.errorIndexes, [0], 'the failing command');
  assert.match(String(mixed.replies[0]), /^\[?ErrorReply: WRONGTYPE|WRONGTYPE/, 'its error');
  assert.equal(mixed.replies[1], 43, 'the reply of the command after it');
  assert.equal(await client.get(`${k}:a`), '43', 'the other queued command ran');
  // WATCH on an isolated connection, a write from another connection, EXEC fails.
  const watchError = await client
    .executeIsolated(async (isolated) => {
      await isolated.watch(`${k}:a`);
      await client.set(`${k}:a`, 'changed');
      return isolated.multi().set(`${k}:a`, 'mine').exec();
    })
    .catch((e) => e);
  assert.ok(watchError instanceof WatchError, `WATCH conflict gives WatchError, got ${watchError}`);
  assert.equal(await client.get(`${k}:a`), 'changed', 'the watched transaction did not run');
  assert.equal(await client.del([`${k}:a`, `${k}:list`]), 2);
  return 'multi().exec(): 4 replies, a queued error, a WATCH conflict (WatchError)';
}

run('node-redis apps', async () => {
  const client = createClient({ socket: { host, port, reconnectStrategy: false } });
  client.on('error', () => {});
  await client.connect();
  const parts = (process.env.PARTS || 'pubsub,scan,transactions').split(',');
  const failed = [];
  for (const [name, part] of [['pubsub', pubsub], ['scan', scan], ['transactions', transactions]]) {
    if (!parts.includes(name)) continue;
    try {
      console.log(await part(client));
    } catch (error) {
      failed.push(name);
      console.log(`${name} FAILED: ${error && error.message}`);
    }
  }
  await client.quit();
  if (failed.length) throw new Error(`failed: ${failed.join(', ')}`);
});
