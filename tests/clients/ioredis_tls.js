// ioredis 5 through a Keyway `tls:` listener: `tls: { ca }`, as to a TLS Redis; strings, a
// pipeline and a multi-key command over the encrypted connection.
'use strict';

const fs = require('fs');
const Redis = require('ioredis');
const { assert, host, port, run } = require('./common');

run('ioredis tls', async () => {
  const redis = new Redis({
    host,
    port,
    tls: { ca: fs.readFileSync(process.env.CA) },
    maxRetriesPerRequest: 1,
  });
  await new Promise((resolve, reject) => {
    redis.once('ready', resolve);
    redis.once('error', reject);
  });
  const keys = Array.from({ length: 20 }, (_, i) => `iotls:${i}`);
  for (const key of keys) assert.equal(await redis.set(key, `v-${key}`), 'OK');
  assert.deepEqual(await redis.mget(...keys), keys.map((k) => `v-${k}`));
  const replies = await keys.reduce((p, k) => p.get(k), redis.pipeline()).exec();
  replies.forEach(([error, value], i) => {
    assert.equal(error, null);
    assert.equal(value, `v-${keys[i]}`);
  });
  assert.equal(await redis.del(...keys), keys.length);
  redis.disconnect();
});
