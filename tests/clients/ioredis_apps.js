// ioredis 5 applications through Keyway (ioredis is what BullMQ drives Redis with):
// - scripts: `defineCommand` scripts on keys of every shard. ioredis remembers per connection
//   which scripts it sent, so it sends EVAL once per connection and EVALSHA after; through a
//   proxy an EVALSHA can reach a shard that never saw the script, answer NOSCRIPT, and ioredis
//   must fall back to EVAL by itself. Also in a pipeline.
// - pubsub: a subscriber connection (SUBSCRIBE, PSUBSCRIBE, 'message' / 'pmessage' events),
//   PUBLISH counts, every message once and in order.
// - scan: `scanStream` over 1,000 keys of every shard.
'use strict';

const Redis = require('ioredis');
const { assert, host, port, run } = require('./common');

function connect() {
  return new Redis({ host, port, maxRetriesPerRequest: 1, lazyConnect: true });
}

const SWAP = "local old = redis.call('GET', KEYS[1]); redis.call('SET', KEYS[1], ARGV[1]); return old";

async function scripts(redis) {
  redis.defineCommand('swap', { numberOfKeys: 1, lua: SWAP });
  // The varying part first, so that the keys spread over the shards (see scan).
  const keys = Array.from({ length: 200 }, (_, i) => `${i}:ioscript:${process.pid}`);
  for (const key of keys) assert.equal(await redis.swap(key, 'a'), null, `first swap of ${key}`);
  for (const key of keys) assert.equal(await redis.swap(key, 'b'), 'a', `second swap of ${key}`);
  const pipeline = redis.pipeline();
  for (const key of keys) pipeline.swap(key, 'c');
  const replies = await pipeline.exec();
  assert.deepEqual(replies, keys.map(() => [null, 'b']), 'swaps in a pipeline');
  // A fresh connection: its first call is EVAL again, its later ones EVALSHA.
  const other = connect();
  await other.connect();
  other.defineCommand('swap', { numberOfKeys: 1, lua: SWAP });
  for (const key of keys) assert.equal(await other.swap(key, 'd'), 'c', 'swap on a new connection');
  other.disconnect();
  assert.equal(await redis.del(...keys), keys.length);
  return `scripts: ${keys.length} keys x 3 swaps on one connection (EVAL, then EVALSHA with ` +
    `NOSCRIPT fallback), a pipeline of ${keys.length}, ${keys.length} more on a new connection`;
}

async function pubsub(redis) {
  const subscriber = connect();
  await subscriber.connect();
  const tag = `${process.pid}`;
  const channels = Array.from({ length: 6 }, (_, i) => `io-chan-${tag}-${i}`);
  const pattern = `io-chan-${tag}-*`;
  assert.equal(await subscriber.subscribe(...channels), channels.length, 'SUBSCRIBE count');
  assert.equal(await subscriber.psubscribe(pattern), channels.length + 1, 'PSUBSCRIBE count');
  const got = new Map(channels.map((c) => [c, []]));
  const byPattern = new Map(channels.map((c) => [c, []]));
  subscriber.on('message', (ch, message) => got.get(ch).push(message));
  subscriber.on('pmessage', (pat, ch, message) => {
    assert.equal(pat, pattern);
    byPattern.get(ch).push(message);
  });
  const perChannel = 30;
  for (let n = 0; n < perChannel; n++) {
    for (const channel of channels) {
      assert.equal(await redis.publish(channel, `${channel}#${n}`), 2, 'PUBLISH receivers');
    }
  }
  const deadline = Date.now() + 10000;
  const done = () => [...got.values(), ...byPattern.values()].every((m) => m.length >= perChannel);
  while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  for (const channel of channels) {
    const want = Array.from({ length: perChannel }, (_, n) => `${channel}#${n}`);
    assert.deepEqual(got.get(channel), want, `messages on ${channel}`);
    assert.deepEqual(byPattern.get(channel), want, `pattern messages on ${channel}`);
  }
  // Named: ioredis 5's `unsubscribe()` without arguments never resolves while a pattern
  // subscription is left (as node-redis 4's), even against one Redis.
  assert.equal(await subscriber.unsubscribe(...channels), 1, 'count after UNSUBSCRIBE (the pattern left)');
  assert.equal(await subscriber.punsubscribe(pattern), 0, 'count after PUNSUBSCRIBE');
  assert.equal(await redis.publish(channels[0], 'after'), 0, 'receivers after unsubscribing');
  subscriber.disconnect();
  return `pubsub: ${channels.length} channels x ${perChannel} messages, each once and in order ` +
    'by SUBSCRIBE and by PSUBSCRIBE, counts, 0 receivers after unsubscribing';
}

async function scan(redis) {
  // The varying part first: keys that differ only in their last bytes cluster on a few
  // points of a ketama continuum under fnv1a_64 (measured: 200 such keys, none on a shard).
  const suffix = `:ioscan:${process.pid}`;
  const keys = Array.from({ length: 1000 }, (_, i) => `${i}${suffix}`);
  for (let i = 0; i < keys.length; i += 100) {
    assert.equal(await redis.mset(...keys.slice(i, i + 100).flatMap((k) => [k, 'v'])), 'OK');
  }
  const seen = new Set();
  let batches = 0;
  await new Promise((resolve, reject) => {
    const stream = redis.scanStream({ match: `*${suffix}`, count: 100 });
    stream.on('data', (batch) => {
      batches++;
      for (const key of batch) seen.add(key);
    });
    stream.on('end', resolve);
    stream.on('error', reject);
  });
  const missing = keys.filter((k) => !seen.has(k));
  assert.deepEqual(missing.slice(0, 5), [], `${missing.length} keys never returned by SCAN`);
  assert.equal(seen.size, keys.length, 'distinct keys scanned (none foreign to the MATCH)');
  // KEEP_KEYS: the caller checks where they landed (every shard) and drops them.
  if (!process.env.KEEP_KEYS) assert.equal(await redis.del(...keys), keys.length);
  return `scanStream: all ${keys.length} keys in ${batches} batches`;
}

run('ioredis apps', async () => {
  const redis = connect();
  await redis.connect();
  const parts = (process.env.PARTS || 'scripts,pubsub,scan').split(',');
  const failed = [];
  for (const [name, part] of [['scripts', scripts], ['pubsub', pubsub], ['scan', scan]]) {
    if (!parts.includes(name)) continue;
    try {
      console.log(await part(redis));
    } catch (error) {
      failed.push(name);
      console.log(`${name} FAILED: ${error && error.message}`);
    }
  }
  redis.disconnect();
  if (failed.length) throw new Error(`failed: ${failed.join(', ')}`);
});
