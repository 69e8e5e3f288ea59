// node-redis 4 through Keyway: connect (CLIENT SETINFO), strings, multi-key commands over
// several shards, and a pipelined burst of commands from one client.
'use strict';

const { createClient } = require('redis');
const { assert, host, port, run } = require('./common');

run('node-redis basics', async () => {
  const client = createClient({ socket: { host, port, reconnectStrategy: false } });
  client.on('error', () => {});
  await client.connect();
  const keys = Array.from({ length: 50 }, (_, i) => `nr:${i}`);
  await Promise.all(keys.map((key) => client.set(key, `v-${key}`)));
  assert.deepEqual(await client.mGet(keys), keys.map((k) => `v-${k}`));
  const counts = await Promise.all(keys.map((key) => client.incr(`${key}:n`)));
  assert.deepEqual(counts, keys.map(() => 1));
  assert.equal(await client.del(keys), keys.length);
  await client.quit();
});
