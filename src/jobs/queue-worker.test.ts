import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { newJobId } from './ids.ts';
import type { NewJob } from './job-store.ts';
import { type DeliverFn, QueueWorker, type QueueWorkerOptions } from './queue-worker.ts';
import { SqliteJobStore } from './sqlite-job-store.ts';

const job = (over: Partial<NewJob> = {}): NewJob => ({
  id: newJobId(),
  route: 'q',
  mode: 'queue',
  status: 'queued',
  keep_ms: 60_000,
  max_result: 1024 * 1024,
  idempotent: true,
  request: { method: 'GET', path: '/', headers: [] },
  ...over,
});

/** A deliver function that never answers, resolving `aborted` with the abort reason. */
function hanging() {
  const aborted = Promise.withResolvers<unknown>();
  const started = Promise.withResolvers<void>();
  const deliver: DeliverFn = (_job, signal) =>
    new Promise((_, reject) => {
      started.resolve();
      signal.addEventListener('abort', () => {
        aborted.resolve(signal.reason);
        reject(new Error('aborted'));
      });
    });
  return { deliver, aborted: aborted.promise, started: started.promise };
}

async function setup(
  t: { after: (fn: () => unknown) => void },
  deliver: DeliverFn,
  over: Partial<QueueWorkerOptions> = {},
) {
  const store = new SqliteJobStore(':memory:', { heartbeatMs: 0 });
  const worker = new QueueWorker({
    store,
    deliver,
    workers: 2,
    policyFor: (route) => (route === 'gone' ? undefined : { attempts: 3 }),
    pollMs: 10,
    backoffBaseMs: 100,
    backoffMaxMs: 1_000,
    random: () => 0,
    ...over,
  });
  t.after(async () => {
    await worker.stop(0);
    await store.close();
  });
  return { store, worker };
}

async function until(cond: () => Promise<boolean> | boolean, ms = 3_000) {
  const end = performance.now() + ms;
  while (!(await cond())) {
    if (performance.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('stop: deliveries past the grace are aborted; safe jobs requeued, unsafe ones interrupted', async (t) => {
  const h = hanging();
  const { store, worker } = await setup(t, h.deliver);
  const safe = await store.create(job());
  const unsafe = await store.create(
    job({ idempotent: false, request: { method: 'POST', path: '/', headers: [] } }),
  );
  worker.start();
  await until(() => worker.inflight === 2);
  const t0 = performance.now();
  await worker.stop(50);
  assert.ok(performance.now() - t0 < 1_000);
  assert.equal(await h.aborted, 'shutdown');
  assert.equal((await store.get(safe.id))?.status, 'queued');
  const u = await store.get(unsafe.id);
  assert.equal(u?.status, 'failed');
  assert.equal(u?.error?.code, 'interrupted');
});

test('a lost lease (job cancelled elsewhere) aborts the delivery at the next renewal', async (t) => {
  const h = hanging();
  const { store, worker } = await setup(t, h.deliver, { leaseMs: 60 });
  const j = await store.create(job());
  worker.start();
  await h.started;
  await store.cancel(j.id);
  assert.equal(await h.aborted, 'lease-lost');
  await until(() => worker.inflight === 0);
  assert.equal((await store.get(j.id))?.status, 'cancelled');
});

test('a job whose route is gone fails no-route; one past its attempts fails interrupted', async (t) => {
  let calls = 0;
  const { store, worker } = await setup(t, async () => {
    calls++;
    return { meta: { status: 200, headers: [] }, body: Readable.from([]) };
  });
  const tired = await store.create(job());
  // Simulate three interrupted deliveries: claimed and recovered three times.
  for (let i = 0; i < 3; i++) {
    await store.claim('dead:w0', 60_000);
    await store.recoverInterrupted({ exclusive: true });
  }
  assert.equal((await store.get(tired.id))?.attempts, 3);
  const gone = await store.create(job({ route: 'gone' }));
  worker.start();
  await until(async () => (await store.get(tired.id))?.status === 'failed');
  await until(async () => (await store.get(gone.id))?.status === 'failed');
  assert.equal((await store.get(gone.id))?.error?.code, 'no-route');
  assert.equal((await store.get(tired.id))?.error?.code, 'interrupted');
  assert.equal(calls, 0);
});

test('backoff doubles per attempt; a Retry-After is honoured up to the cap', async (t) => {
  let n = 0;
  const { store, worker } = await setup(t, async () => {
    n++;
    return {
      meta: { status: 503, headers: n === 2 ? [['Retry-After', '30'] as const] : [] },
      body: Readable.from([Buffer.from('busy')]),
    };
  });
  const j = await store.create(job());
  worker.start();
  await until(async () => (await store.get(j.id))?.status === 'queued' && n === 1);
  let r = await store.get(j.id);
  assert.equal((r?.run_at ?? 0) - (r?.updated_at ?? 0), 50, 'attempt 1: 100 ms jittered to 50 %');
  await until(async () => n === 2 && (await store.get(j.id))?.status === 'queued');
  r = await store.get(j.id);
  assert.equal((r?.run_at ?? 0) - (r?.updated_at ?? 0), 1_000, 'Retry-After 30 s capped at backoffMaxMs');
  await worker.stop(0);
});

test('a body that breaks off mid-result: retried where safe, else failed in the read phase', async (t) => {
  const broken = () =>
    (async function* () {
      yield Buffer.from('partial');
      throw Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' });
    })();
  let calls = 0;
  const { store, worker } = await setup(
    t,
    async () => {
      calls++;
      return { meta: { status: 200, headers: [] }, body: broken() };
    },
    { backoffBaseMs: 1, backoffMaxMs: 2 },
  );
  const unsafe = await store.create(
    job({ idempotent: false, request: { method: 'POST', path: '/', headers: [] } }),
  );
  worker.start();
  await until(async () => (await store.get(unsafe.id))?.status === 'failed');
  const u = await store.get(unsafe.id);
  assert.equal(u?.error?.code, 'upstream-unreachable');
  assert.equal(u?.error?.phase, 'read');
  assert.equal(calls, 1);
  const safe = await store.create(job());
  worker.nudge();
  await until(async () => (await store.get(safe.id))?.status === 'failed');
  assert.equal((await store.get(safe.id))?.attempts, 3);
});
