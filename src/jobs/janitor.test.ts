import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { newJobId } from './ids.ts';
import { Janitor } from './janitor.ts';
import { SqliteJobStore } from './sqlite-job-store.ts';

test('a janitor pass purges expired jobs, recovers expired leases and refreshes counts', async (t) => {
  let now = 1_000_000;
  const store = new SqliteJobStore(':memory:', { now: () => now, heartbeatMs: 0, instanceLeaseMs: 1_000 });
  const janitor = new Janitor({ store });
  t.after(async () => {
    await janitor.stop();
    await store.close();
  });
  const base = {
    route: 'r',
    mode: 'auto',
    status: 'running',
    keep_ms: 500,
    max_result: 100,
    idempotent: false,
  } as const;
  const done = await store.create({ ...base, id: newJobId() });
  await store.complete(done.id, { status: 200, headers: [] }, Readable.from([Buffer.from('x')]));
  const orphan = await store.create({ ...base, id: newJobId() });
  now += 2_000;
  const r = await janitor.runOnce();
  assert.deepEqual(r, { purged: 1, recovered: { failed: 1, requeued: 0 } });
  assert.equal(await store.get(done.id), undefined);
  assert.equal((await store.get(orphan.id))?.error?.code, 'interrupted');
  await janitor.refreshCounts();
  assert.deepEqual(janitor.counts, { r: { queued: 0, running: 0, completed: 0, failed: 1, cancelled: 0 } });
});

test('started, the janitor recovers a job whose holder stopped renewing within its lease plus a pass', async (t) => {
  // The heartbeat is off: this store stands for an instance that stopped renewing its lease.
  const store = new SqliteJobStore(':memory:', { heartbeatMs: 0, instanceLeaseMs: 300 });
  const janitor = new Janitor({ store, recoverEveryMs: 100 });
  t.after(async () => {
    await janitor.stop();
    await store.close();
  });
  const base = { route: 'r', mode: 'auto', status: 'running', keep_ms: 60_000, max_result: 100 } as const;
  const job = await store.create({ ...base, id: newJobId(), idempotent: false });
  const t0 = performance.now();
  janitor.start();
  let status = (await store.get(job.id))?.status;
  while (status === 'running' && performance.now() - t0 < 5_000) {
    await new Promise((r) => setTimeout(r, 20));
    status = (await store.get(job.id))?.status;
  }
  const took = performance.now() - t0;
  assert.equal(status, 'failed');
  assert.ok(took >= 250, `not before the lease ran out (${took} ms)`);
  assert.ok(took < 2_000, `recovered ${took} ms after, not at the 30 s purge pass`);
});
