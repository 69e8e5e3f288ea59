// BullMQ 5 through Keyway: a queue with a hash-tagged prefix (`{bull}`, so every key of the queue
// lives on one shard; the pool needs `hash_tag: "{}"`), 500 jobs of which 50 are delayed and 50
// prioritised, one Worker with concurrency 10 and a QueueEvents listener. Every job must be
// processed exactly once, no delayed job before its delay, prioritised jobs only after the plain
// ones and in priority order, and both the worker and QueueEvents must report 500 completions.
// What BullMQ sends on the way: EVAL then EVALSHA (its Lua scripts, through ioredis), BZPOPMIN
// on the worker's blocking connection, XREAD BLOCK on QueueEvents' connection, MULTI, INFO.
'use strict';

const { Queue, Worker, QueueEvents } = require('bullmq');
const { assert, host, port, run } = require('./common');

const PLAIN = 400;
const DELAYED = 50;
const PRIORITISED = 50;
const TOTAL = PLAIN + DELAYED + PRIORITISED;
const DONE_WITHIN_MS = 60000;
const LOGGED_EVERY = 25; // these jobs write a log line, read back with getJobLogs (a MULTI)

run(
  'bullmq jobs',
  async () => {
    // `maxRetriesPerRequest: null` is what BullMQ requires of a Worker's connection (its
    // blocking commands must never be cut short by ioredis' retry limit).
    const connection = { host, port, maxRetriesPerRequest: null };
    const prefix = '{bull}';
    const name = `jobs-${process.pid}-${Date.now()}`;
    const opts = { connection, prefix };

    // Reads the queue's event stream from its start, so no completion can be missed
    // however late the first XREAD is sent.
    const queueEvents = new QueueEvents(name, { ...opts, lastEventId: '0' });
    const eventCompleted = new Map();
    const eventValues = new Map();
    queueEvents.on('completed', ({ jobId, returnvalue }) => {
      eventCompleted.set(jobId, (eventCompleted.get(jobId) || 0) + 1);
      eventValues.set(jobId, returnvalue);
    });
    await queueEvents.waitUntilReady();

    const queue = new Queue(name, opts);
    const jobs = [];
    for (let n = 0; n < TOTAL; n++) {
      if (n < PLAIN) jobs.push({ name: 'plain', data: { n }, opts: {} });
      else if (n < PLAIN + DELAYED) {
        jobs.push({ name: 'delayed', data: { n }, opts: { delay: 200 + ((n * 37) % 801) } });
      } else jobs.push({ name: 'prio', data: { n }, opts: { priority: 1 + (n % 5) } });
    }
    // Added in chunks: addBulk is one MULTI of one script call per job.
    const added = [];
    for (let i = 0; i < jobs.length; i += 100) {
      added.push(...(await queue.addBulk(jobs.slice(i, i + 100))));
    }
    assert.equal(added.length, TOTAL);
    assert.equal(new Set(added.map((j) => j.id)).size, TOTAL, 'job ids are unique');
    const byId = new Map(added.map((j) => [j.id, j]));
    const counts = await queue.getJobCounts('waiting', 'delayed', 'prioritized', 'active');
    assert.deepEqual(
      counts,
      { waiting: PLAIN, paused: 0, delayed: DELAYED, prioritized: PRIORITISED, active: 0 },
      'job counts before the worker starts'
    );

    const processed = new Map();
    const started = []; // job ids in the order the worker started them
    const early = [];
    let workerCompleted = 0;
    const failures = [];
    const allDone = new Promise((resolve) => {
      const worker = new Worker(
        name,
        async (job) => {
          processed.set(job.id, (processed.get(job.id) || 0) + 1);
          started.push(job.id);
          const delay = job.opts.delay || 0;
          if (delay > 0 && Date.now() < job.timestamp + delay) early.push(job.id);
          if (job.data.n % LOGGED_EVERY === 0) await job.log(`log of ${job.data.n}`);
          await new Promise((r) => setTimeout(r, 1 + (job.data.n % 3)));
          return job.data.n * 2;
        },
        { ...opts, concurrency: 10 }
      );
      worker.on('failed', (job, error) => failures.push(`${job && job.id}: ${error.message}`));
      worker.on('error', (error) => failures.push(`worker error: ${error.message}`));
      worker.on('completed', () => {
        workerCompleted++;
        if (workerCompleted === TOTAL) resolve(worker);
      });
    });
    let timer;
    const worker = await Promise.race([
      allDone,
      new Promise((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new Error(
                `only ${workerCompleted} of ${TOTAL} jobs completed within ${DONE_WITHIN_MS} ms ` +
                  `(failures: ${failures.slice(0, 5).join('; ') || 'none'})`
              )
            ),
          DONE_WITHIN_MS
        );
      }),
    ]);
    clearTimeout(timer);
    assert.deepEqual(failures, [], 'no job failed, no worker error');

    // Exactly once: every added job processed one time, nothing else processed.
    assert.equal(processed.size, TOTAL, 'distinct jobs processed');
    const twice = [...processed].filter(([, c]) => c !== 1);
    assert.deepEqual(twice, [], 'jobs processed more than once');
    for (const id of byId.keys()) assert.ok(processed.has(id), `job ${id} was never processed`);
    assert.deepEqual(early, [], 'delayed jobs started before their delay');

    // Plain jobs first (jobs without a priority come before prioritised ones), then the
    // prioritised ones in priority order. Delayed jobs join the wait list when due, so they
    // may come anywhere.
    const order = started.map((id) => byId.get(id)).filter((j) => j.name !== 'delayed');
    const firstPrio = order.findIndex((j) => j.name === 'prio');
    assert.ok(
      order.slice(firstPrio).every((j) => j.name === 'prio'),
      'a plain job started after a prioritised one'
    );
    const priorities = order.slice(firstPrio).map((j) => j.opts.priority);
    assert.deepEqual(priorities, [...priorities].sort((a, b) => a - b), 'priority order');

    // QueueEvents saw every completion once, with the processor's return value.
    const deadline = Date.now() + 10000;
    while (eventCompleted.size < TOTAL && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(eventCompleted.size, TOTAL, 'jobs QueueEvents saw completed');
    assert.deepEqual([...eventCompleted].filter(([, c]) => c !== 1), [], 'completed events once');
    for (const [id, job] of byId) {
      assert.equal(String(eventValues.get(id)), String(job.data.n * 2), `return value of ${id}`);
    }
    // Job logs: written by the processor (a script), read back in a MULTI of LRANGE + LLEN.
    let logsChecked = 0;
    for (const [id, job] of byId) {
      const logs = await queue.getJobLogs(id);
      const want = job.data.n % LOGGED_EVERY === 0 ? [`log of ${job.data.n}`] : [];
      assert.deepEqual(logs, { logs: want, count: want.length }, `logs of job ${id}`);
      logsChecked += want.length;
    }
    assert.equal(logsChecked, TOTAL / LOGGED_EVERY, 'job log lines read back');
    const after = await queue.getJobCounts('waiting', 'delayed', 'prioritized', 'active', 'completed', 'failed');
    assert.deepEqual(
      after,
      { waiting: 0, paused: 0, delayed: 0, prioritized: 0, active: 0, completed: TOTAL, failed: 0 },
      'job counts at the end'
    );

    await worker.close();
    await queueEvents.close();
    await queue.obliterate({ force: true });
    const client = await queue.client;
    assert.equal(await client.exists(`${prefix}:${name}:meta`, `${prefix}:${name}:id`), 0, 'obliterated');
    await queue.close();
    console.log(
      `bullmq: ${TOTAL} jobs added (${PLAIN} plain, ${DELAYED} delayed 200-1000 ms, ` +
        `${PRIORITISED} prioritised 1-5); ${processed.size} processed exactly once ` +
        `(concurrency 10), none early; ${order.length - firstPrio} prioritised after the plain ` +
        `ones, in priority order; ${logsChecked} job logs read back (MULTI); completed: ${workerCompleted} (worker), ` +
        `${eventCompleted.size} (QueueEvents, return values checked); queue obliterated`
    );
  },
  90000
);
