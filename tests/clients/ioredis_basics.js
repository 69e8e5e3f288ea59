// ioredis 5 through Keyway: its ready check (INFO), CLIENT SETINFO, string and multi-key
// commands over several shards, a pipeline, hash tags, and the errors it must see as errors.
'use strict';

const Redis = require('ioredis');
const { assert, host, port, run } = require('./common');

run('ioredis basics', async () => {
  const redis = new Redis({ host, port, maxRetriesPerRequest: 1, enableReadyCheck: true });
  await new Promise((resolve, reject) => {
    redis.once('ready', resolve);
    redis.once('error', reject);
  });
  const keys = Array.from({ length: 50 }, (_, i) => `io:${i}`);
  for (const key of keys) assert.equal(await redis.set(key, `v-${key}`), 'OK');
  assert.deepEqual(await redis.mget(...keys), keys.map((k) => `v-${k}`));
  assert.equal(await redis.exists(...keys, 'io:none'), keys.length);
  const pipeline = redis.pipeline();
  for (const key of keys) pipeline.incr(`${key}:n`).get(key);
  const replies = await pipeline.exec();
  replies.forEach(([error, value], i) => {
    assert.equal(error, null);
    assert.equal(value, i % 2 === 0 ? 1 : `v-${keys[i >> 1]}`);
  });
  assert.equal(await redis.rename('{t}a', '{t}b').catch((e) => e.message), 'ERR no such key');
  await assert.rejects(redis.rename('ioa', 'iob'), /CROSSSLOT|no such key/);
  assert.equal(await redis.del(...keys), keys.length);
  redis.disconnect();
});
