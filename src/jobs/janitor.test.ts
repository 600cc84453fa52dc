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
