/**
 * The JobStore contract (src/jobs/job-store.ts), run once per implementation: every operation and
 * state transition, refused transitions, leases and their expiry, recovery, purge, streaming of large
 * results in bounded memory, max_result, counts, waiters and final-state listeners.
 *
 * Time comes from a fake clock handed to the store; only `waitFinal` timeouts use the wall clock
 * (and are kept short).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { newJobId } from '../../src/jobs/ids.ts';
import {
  isStoreUnavailable,
  type JobError,
  type JobRecord,
  type JobStore,
  type NewJob,
} from '../../src/jobs/job-store.ts';

export class FakeClock {
  t = 1_750_000_000_000;
  readonly now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

export interface StoreFactoryOptions {
  /** Clock the store must read all time from. */
  readonly now: () => number;
}

export type MakeStore = (options: StoreFactoryOptions) => JobStore | Promise<JobStore>;

export interface PeerFactoryOptions {
  /** Clock of each of the two instances (separate: one can be far ahead of the other). */
  readonly now: readonly [() => number, () => number];
  /** Heartbeat of both instances (0: off). */
  readonly heartbeatMs: number;
  /** Lease of both instances' auto/prefer jobs. */
  readonly instanceLeaseMs: number;
}

/**
 * Two store instances on the same data, as two gateway processes would have them (Redis: one server
 * and prefix; SQLite: one file, with the `peers` bus between them). Absent: the peer cases are skipped.
 */
export type MakePeers = (options: PeerFactoryOptions) => Promise<readonly [JobStore, JobStore]>;

const MiB = 1024 * 1024;
const CHUNK = 256 * 1024;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function queueJob(over: Partial<NewJob> = {}): NewJob {
  return {
    id: newJobId(),
    route: 'reports',
    mode: 'queue',
    status: 'queued',
    keep_ms: 60_000,
    max_result: 10 * MiB,
    idempotent: true,
    request: { method: 'PUT', path: '/api/reports?x=1', headers: [['Content-Type', 'text/plain']] },
    ...over,
  };
}

function autoJob(over: Partial<NewJob> = {}): NewJob {
  return {
    id: newJobId(),
    route: 'slow',
    mode: 'auto',
    status: 'running',
    keep_ms: 60_000,
    max_result: 10 * MiB,
    idempotent: false,
    ...over,
  };
}

const HEAD = { status: 201, headers: [['Content-Type', 'application/json'] as const, ['X-A', '1'] as const] };

const TIMEOUT: JobError = {
  code: 'upstream-timeout',
  status: 504,
  detail: "upstream 'api' sent no response headers within 30s (ttfb) on route 'slow'",
  phase: 'ttfb',
  timeout_ms: 30_000,
  proxy_error: 'http_response_timeout',
};

/** Deterministic pseudo-random bytes in fresh pieces of varying size, produced lazily. */
async function* pieces(total: number, seed = 1, onPiece?: (sent: number) => void): AsyncGenerator<Buffer> {
  const pattern = Buffer.allocUnsafe(128 * 1024);
  let x = seed;
  for (let i = 0; i < pattern.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    pattern[i] = x >>> 24;
  }
  let sent = 0;
  while (sent < total) {
    x = (x * 1103515245 + 12345) >>> 0;
    const n = Math.min(total - sent, 1 + (x % (96 * 1024)));
    const at = (x >>> 8) % (pattern.length - n + 1);
    sent += n;
    onPiece?.(sent);
    yield Buffer.from(pattern.subarray(at, at + n));
  }
}

async function digestOf(iter: AsyncIterable<Buffer | Uint8Array>): Promise<{ hash: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const c of iter) {
    h.update(c);
    size += c.byteLength;
  }
  return { hash: h.digest('hex'), size };
}

async function readAll(store: JobStore, id: string): Promise<Buffer> {
  const r = await store.readResult(id);
  assert.ok(r, 'expected a stored result');
  const parts: Buffer[] = [];
  for await (const c of r.body) parts.push(c);
  return Buffer.concat(parts);
}

export function runJobStoreContract(name: string, makeStore: MakeStore, makePeers?: MakePeers): void {
  describe(`JobStore contract: ${name}`, () => {
    /** A fresh store per test, closed afterwards. */
    async function setup(t: { after: (fn: () => unknown) => void }) {
      const clock = new FakeClock();
      const store = await makeStore({ now: clock.now });
      t.after(() => store.close());
      return { clock, store };
    }

    describe('create and get', () => {
      test('a queue job is stored queued with every field', async (t) => {
        const { clock, store } = await setup(t);
        const body = randomBytes(1000);
        const job = queueJob({
          owner_hash: 'a'.repeat(64),
          callback_url: 'https://hooks.example.com/x',
          request: { method: 'POST', path: '/p?q=1', headers: [['X-Key', 'v']], body },
        });
        const created = await store.create(job);
        const got = await store.get(job.id);
        assert.deepEqual(got, created);
        assert.ok(got);
        assert.equal(got.status, 'queued');
        assert.equal(got.mode, 'queue');
        assert.equal(got.route, 'reports');
        assert.equal(got.attempts, 0);
        assert.equal(got.created_at, clock.t);
        assert.equal(got.updated_at, clock.t);
        assert.equal(got.run_at, clock.t);
        assert.equal(got.keep_ms, 60_000);
        assert.equal(got.max_result, 10 * MiB);
        assert.equal(got.owner_hash, 'a'.repeat(64));
        assert.equal(got.callback_url, 'https://hooks.example.com/x');
        assert.equal(got.idempotent, true);
        assert.equal(got.lease_owner, undefined);
        assert.equal(got.error, undefined);
        assert.equal(got.result_meta, undefined);
        assert.equal(got.request?.method, 'POST');
        assert.equal(got.request?.path, '/p?q=1');
        assert.deepEqual(got.request?.headers, [['X-Key', 'v']]);
        assert.ok(got.request?.body?.equals(body));
      });

      test('an auto job is created running, leased to this instance, one attempt', async (t) => {
        const { store } = await setup(t);
        const job = await store.create(autoJob());
        assert.equal(job.status, 'running');
        assert.equal(job.attempts, 1);
        assert.equal(job.lease_owner, store.instanceId);
        assert.ok((job.lease_until ?? 0) > job.created_at);
        assert.equal(job.request, undefined);
        assert.equal(job.owner_hash, undefined);
        assert.equal(job.idempotent, false);
      });

      test('an unknown id is undefined; a duplicate id is refused', async (t) => {
        const { store } = await setup(t);
        assert.equal(await store.get(newJobId()), undefined);
        const job = queueJob();
        await store.create(job);
        await assert.rejects(store.create(job), isStoreUnavailable);
      });
    });

    describe('transitions', () => {
      test('markRunning: queued → running once, counting an attempt', async (t) => {
        const { clock, store } = await setup(t);
        const job = await store.create(autoJob({ status: 'queued' }));
        clock.advance(10);
        assert.equal(await store.markRunning(job.id), true);
        const got = await store.get(job.id);
        assert.equal(got?.status, 'running');
        assert.equal(got?.attempts, 1);
        assert.equal(got?.updated_at, clock.t);
        assert.equal(got?.lease_owner, store.instanceId);
        assert.equal(await store.markRunning(job.id), false);
        assert.equal(await store.markRunning(newJobId()), false);
      });

      test('complete stores the result atomically with the status change', async (t) => {
        const { clock, store } = await setup(t);
        const job = await store.create(autoJob({ keep_ms: 5_000 }));
        clock.advance(50);
        const body = Buffer.from('{"ok":true}');
        assert.equal(await store.complete(job.id, HEAD, Readable.from([body])), 'completed');
        const got = await store.get(job.id);
        assert.equal(got?.status, 'completed');
        assert.equal(got?.updated_at, clock.t);
        assert.equal(got?.expires_at, clock.t + 5_000);
        assert.equal(got?.lease_owner, undefined);
        assert.deepEqual(got?.result_meta, { status: 201, headers: HEAD.headers, size: body.length });
        const r = await store.readResult(job.id);
        assert.deepEqual(r?.meta, { status: 201, headers: HEAD.headers, size: body.length });
        assert.ok((await readAll(store, job.id)).equals(body));
      });

      test('an empty result is a completed job with an empty body', async (t) => {
        const { store } = await setup(t);
        const job = await store.create(autoJob());
        assert.equal(
          await store.complete(job.id, { status: 204, headers: [] }, Readable.from([])),
          'completed',
        );
        assert.equal((await readAll(store, job.id)).length, 0);
        assert.equal((await store.get(job.id))?.result_meta?.size, 0);
      });

      test('fail: queued or running → failed with the error; never from a final state', async (t) => {
        const { store } = await setup(t);
        const a = await store.create(autoJob());
        const q = await store.create(queueJob());
        assert.equal(await store.fail(a.id, TIMEOUT), true);
        assert.equal(await store.fail(q.id, TIMEOUT), true);
        const got = await store.get(a.id);
        assert.equal(got?.status, 'failed');
        assert.deepEqual(got?.error, TIMEOUT);
        assert.equal((await store.get(q.id))?.status, 'failed');
        assert.equal(await store.fail(a.id, { code: 'interrupted', status: 502, detail: 'x' }), false);
        assert.deepEqual((await store.get(a.id))?.error, TIMEOUT);
        assert.equal(await store.readResult(a.id), undefined);
      });

      test('cancel: queued or running → cancelled, reports whether it changed', async (t) => {
        const { store } = await setup(t);
        const a = await store.create(autoJob());
        const q = await store.create(queueJob());
        assert.equal(await store.cancel(a.id), true);
        assert.equal(await store.cancel(q.id), true);
        assert.equal(await store.cancel(a.id), false);
        assert.equal(await store.cancel(newJobId()), false);
        assert.equal((await store.get(a.id))?.status, 'cancelled');
        assert.equal((await store.get(q.id))?.status, 'cancelled');
        assert.equal(await store.claim('w', 1_000), undefined, 'a cancelled queue job is never delivered');
      });

      test('final states are final: completing a cancelled job does nothing (and abandons the body)', async (t) => {
        const { store } = await setup(t);
        const job = await store.create(autoJob());
        await store.cancel(job.id);
        const body = new Readable({ read() {} });
        body.push('late result');
        assert.equal(await store.complete(job.id, HEAD, body), 'refused');
        assert.equal(body.destroyed, true);
        const got = await store.get(job.id);
        assert.equal(got?.status, 'cancelled');
        assert.equal(got?.result_meta, undefined);
        assert.equal(await store.readResult(job.id), undefined);
        assert.equal(await store.fail(job.id, TIMEOUT), false);
        assert.equal(await store.markRunning(job.id), false);
      });

      test('nothing changes a completed or failed job', async (t) => {
        const { store } = await setup(t);
        const done = await store.create(autoJob());
        await store.complete(done.id, HEAD, Readable.from([Buffer.from('first')]));
        assert.equal(await store.complete(done.id, HEAD, Readable.from([Buffer.from('second')])), 'refused');
        assert.equal(await store.cancel(done.id), false);
        assert.equal(await store.fail(done.id, TIMEOUT), false);
        assert.equal((await readAll(store, done.id)).toString(), 'first');
        const failed = await store.create(autoJob());
        await store.fail(failed.id, TIMEOUT);
        assert.equal(await store.complete(failed.id, HEAD, Readable.from([Buffer.from('x')])), 'refused');
        assert.equal(await store.cancel(failed.id), false);
        assert.equal((await store.get(failed.id))?.status, 'failed');
      });

      test('a queued job cannot complete (it was never delivered)', async (t) => {
        const { store } = await setup(t);
        const job = await store.create(queueJob());
        assert.equal(await store.complete(job.id, HEAD, Readable.from([Buffer.from('x')])), 'refused');
        assert.equal((await store.get(job.id))?.status, 'queued');
      });

      test('a body that breaks off: error rethrown as is, nothing stored, job still running', async (t) => {
        const { store } = await setup(t);
        const job = await store.create(autoJob());
        const boom = Object.assign(new Error('socket reset'), { code: 'UND_ERR_SOCKET' });
        async function* broken() {
          yield Buffer.alloc(CHUNK + 10, 1);
          throw boom;
        }
        await assert.rejects(store.complete(job.id, HEAD, broken()), (err) => err === boom);
        assert.equal((await store.get(job.id))?.status, 'running');
        assert.equal(await store.fail(job.id, TIMEOUT), true);
        assert.equal(await store.readResult(job.id), undefined);
      });

      test('a job cancelled while its result streams in: storing stops, nothing is kept', async (t) => {
        const { store } = await setup(t);
        const job = await store.create(autoJob());
        let produced = 0;
        let finished = false;
        async function* body() {
          try {
            for (let i = 0; i < 40; i++) {
              if (i === 2) await store.cancel(job.id);
              produced += 64 * 1024;
              yield Buffer.alloc(64 * 1024, i);
            }
          } finally {
            finished = true;
          }
        }
        assert.equal(await store.complete(job.id, HEAD, body()), 'refused');
        assert.equal(finished, true, 'the body was abandoned');
        assert.ok(produced < 40 * 64 * 1024, `stopped early (read ${produced} bytes)`);
        assert.equal((await store.get(job.id))?.status, 'cancelled');
        assert.equal(await store.readResult(job.id), undefined);
      });
    });

    describe('results', () => {
      test('a multi-MiB body round-trips byte for byte, in rows of at most 256 KiB', async (t) => {
        const { store } = await setup(t);
        const job = await store.create(autoJob());
        const size = 5 * MiB + 12_345;
        const expected = await digestOf(pieces(size, 7));
        assert.equal(await store.complete(job.id, HEAD, pieces(size, 7)), 'completed');
        const r = await store.readResult(job.id);
        assert.ok(r);
        assert.equal(r.meta.size, size);
        let largest = 0;
        let count = 0;
        const h = createHash('sha256');
        let got = 0;
        for await (const c of r.body) {
          largest = Math.max(largest, c.byteLength);
          count++;
          got += c.byteLength;
          h.update(c);
        }
        assert.equal(got, size);
        assert.equal(h.digest('hex'), expected.hash);
        assert.ok(largest <= CHUNK, `largest chunk ${largest}`);
        assert.ok(count >= Math.ceil(size / CHUNK));
      });

      test('bounded memory: storing and replaying 48 MiB keeps live buffers far below the body size', async (t) => {
        const { store } = await setup(t);
        const job = await store.create(autoJob({ max_result: 64 * MiB }));
        const size = 48 * MiB;
        gc();
        const base = process.memoryUsage().arrayBuffers;
        let peak = 0;
        const sample = () => {
          gc();
          peak = Math.max(peak, process.memoryUsage().arrayBuffers - base);
        };
        let next = 4 * MiB;
        const onPiece = (sent: number) => {
          if (sent >= next) {
            next += 4 * MiB;
            sample();
          }
        };
        assert.equal(await store.complete(job.id, HEAD, pieces(size, 3, onPiece)), 'completed');
        const r = await store.readResult(job.id);
        assert.ok(r);
        let read = 0;
        next = 4 * MiB;
        for await (const c of r.body) {
          read += c.byteLength;
          onPiece(read);
        }
        assert.equal(read, size);
        assert.ok(peak < 8 * MiB, `live ArrayBuffer memory peaked at ${(peak / MiB).toFixed(1)} MiB`);
      });

      test('max_result: exactly the limit completes; one byte more fails result-too-large', async (t) => {
        const { store } = await setup(t);
        const fits = await store.create(autoJob({ max_result: 300_000 }));
        assert.equal(await store.complete(fits.id, HEAD, pieces(300_000)), 'completed');
        assert.equal((await store.get(fits.id))?.result_meta?.size, 300_000);

        const big = await store.create(autoJob({ max_result: 300_000 }));
        let pulled = 0;
        let closed = false;
        async function* body() {
          try {
            for await (const p of pieces(3 * MiB)) {
              pulled += p.length;
              yield p;
            }
          } finally {
            closed = true;
          }
        }
        assert.equal(await store.complete(big.id, HEAD, body()), 'too-large');
        assert.equal(closed, true, 'the body was abandoned');
        assert.ok(pulled < 300_000 + 100 * 1024, 'reading stopped at the limit');
        const got = await store.get(big.id);
        assert.equal(got?.status, 'failed');
        assert.equal(got?.error?.code, 'result-too-large');
        assert.equal(got?.error?.status, 502);
        assert.equal(got?.result_meta, undefined);
        assert.equal(await store.readResult(big.id), undefined);
      });

      test('a result purged while being read throws instead of ending early', async (t) => {
        const { clock, store } = await setup(t);
        const job = await store.create(autoJob({ keep_ms: 1 }));
        await store.complete(job.id, HEAD, pieces(2 * MiB));
        const r = await store.readResult(job.id);
        assert.ok(r);
        const it = r.body[Symbol.asyncIterator]();
        assert.equal((await it.next()).done, false);
        clock.advance(10);
        assert.equal(await store.purgeExpired(), 1);
        await assert.rejects(async () => {
          for (;;) if ((await it.next()).done) break;
        });
      });
    });

    describe('queue: claims and leases', () => {
      test('claim leases the oldest due queue job; each job to one claimant', async (t) => {
        const { clock, store } = await setup(t);
        const first = await store.create(queueJob());
        clock.advance(1);
        const second = await store.create(queueJob());
        await store.create(autoJob({ status: 'queued' })); // auto jobs are never claimed
        clock.advance(1);
        const c1 = await store.claim('w1', 5_000);
        assert.equal(c1?.id, first.id);
        assert.equal(c1?.status, 'running');
        assert.equal(c1?.attempts, 1);
        assert.equal(c1?.lease_owner, 'w1');
        assert.equal(c1?.lease_until, clock.t + 5_000);
        const c2 = await store.claim('w2', 5_000);
        assert.equal(c2?.id, second.id);
        assert.equal(await store.claim('w3', 5_000), undefined);
      });

      test('concurrent claims never hand out the same job twice', async (t) => {
        const { store } = await setup(t);
        const ids = new Set<string>();
        for (let i = 0; i < 5; i++) ids.add((await store.create(queueJob())).id);
        const claims = await Promise.all(Array.from({ length: 12 }, (_, i) => store.claim(`w${i}`, 5_000)));
        const got = claims.filter((c): c is JobRecord => c !== undefined).map((c) => c.id);
        assert.equal(got.length, 5);
        assert.deepEqual(new Set(got), ids);
      });

      test('renew extends only the holder lease; lost after cancel', async (t) => {
        const { clock, store } = await setup(t);
        const job = await store.create(queueJob());
        await store.claim('w1', 1_000);
        clock.advance(500);
        assert.equal(await store.renew(job.id, 'w1', 1_000), true);
        assert.equal((await store.get(job.id))?.lease_until, clock.t + 1_000);
        assert.equal(await store.renew(job.id, 'w2', 1_000), false);
        await store.cancel(job.id);
        assert.equal(await store.renew(job.id, 'w1', 1_000), false);
      });

      test('requeue with a delay: not due before it, attempts carry on', async (t) => {
        const { clock, store } = await setup(t);
        const job = await store.create(queueJob());
        await store.claim('w1', 1_000);
        assert.equal(await store.requeue(job.id, 'w2', 0), false, 'only the holder may requeue');
        assert.equal(await store.requeue(job.id, 'w1', 2_000), true);
        const q = await store.get(job.id);
        assert.equal(q?.status, 'queued');
        assert.equal(q?.run_at, clock.t + 2_000);
        assert.equal(q?.lease_owner, undefined);
        assert.equal(await store.claim('w1', 1_000), undefined);
        clock.advance(2_000);
        const again = await store.claim('w2', 1_000);
        assert.equal(again?.id, job.id);
        assert.equal(again?.attempts, 2);
      });

      test('the holder alone completes or fails a leased job', async (t) => {
        const { store } = await setup(t);
        const job = await store.create(queueJob());
        await store.claim('w1', 1_000);
        assert.equal(await store.complete(job.id, HEAD, Readable.from([Buffer.from('x')]), 'w2'), 'refused');
        assert.equal(await store.fail(job.id, TIMEOUT, 'w2'), false);
        assert.equal(
          await store.complete(job.id, HEAD, Readable.from([Buffer.from('ok')]), 'w1'),
          'completed',
        );
        assert.equal((await readAll(store, job.id)).toString(), 'ok');
      });

      test('an expired lease: recovery queues a safe job again and the old holder is locked out', async (t) => {
        const { clock, store } = await setup(t);
        const job = await store.create(queueJob({ idempotent: true }));
        await store.claim('w1', 1_000);
        clock.advance(999);
        assert.deepEqual(await store.recoverInterrupted(), { failed: 0, requeued: 0 });
        clock.advance(2);
        assert.deepEqual(await store.recoverInterrupted(), { failed: 0, requeued: 1 });
        assert.equal((await store.get(job.id))?.status, 'queued');
        const again = await store.claim('w2', 1_000);
        assert.equal(again?.id, job.id);
        assert.equal(again?.attempts, 2);
        assert.equal(await store.renew(job.id, 'w1', 1_000), false);
        assert.equal(
          await store.complete(job.id, HEAD, Readable.from([Buffer.from('stale')]), 'w1'),
          'refused',
        );
        assert.equal(
          await store.complete(job.id, HEAD, Readable.from([Buffer.from('fresh')]), 'w2'),
          'completed',
        );
        assert.equal((await readAll(store, job.id)).toString(), 'fresh');
      });

      test('an expired lease on an unsafe job: failed interrupted, never delivered twice', async (t) => {
        const { clock, store } = await setup(t);
        const job = await store.create(queueJob({ idempotent: false }));
        await store.claim('w1', 1_000);
        clock.advance(1_001);
        assert.deepEqual(await store.recoverInterrupted(), { failed: 1, requeued: 0 });
        const got = await store.get(job.id);
        assert.equal(got?.status, 'failed');
        assert.equal(got?.error?.code, 'interrupted');
        assert.equal(got?.error?.status, 502);
        assert.equal(await store.claim('w2', 1_000), undefined);
      });
    });

    describe('recovery', () => {
      test('an auto job whose holder stopped renewing ends failed interrupted', async (t) => {
        const { clock, store } = await setup(t);
        const job = await store.create(autoJob());
        assert.deepEqual(await store.recoverInterrupted(), { failed: 0, requeued: 0 });
        clock.advance(10 * 60_000); // far past any instance lease (the heartbeat is off in tests)
        assert.deepEqual(await store.recoverInterrupted(), { failed: 1, requeued: 0 });
        const got = await store.get(job.id);
        assert.equal(got?.status, 'failed');
        assert.equal(got?.error?.code, 'interrupted');
        assert.match(got?.error?.detail ?? '', /may or may not have processed/);
      });

      test('exclusive recovery settles jobs held by other instances at once, never our own', async (t) => {
        const { store } = await setup(t);
        const ours = await store.create(autoJob());
        const oursQueued = await store.create(queueJob());
        await store.claim(`${store.instanceId}:w0`, 60_000);
        const foreignSafe = await store.create(queueJob({ idempotent: true }));
        await store.claim('dead-instance:w0', 60_000);
        const foreignUnsafe = await store.create(queueJob({ idempotent: false }));
        await store.claim('dead-instance:w1', 60_000);
        assert.deepEqual(await store.recoverInterrupted({ exclusive: true }), { failed: 1, requeued: 1 });
        assert.equal((await store.get(ours.id))?.status, 'running');
        assert.equal((await store.get(oursQueued.id))?.status, 'running');
        assert.equal((await store.get(foreignSafe.id))?.status, 'queued');
        assert.equal((await store.get(foreignUnsafe.id))?.error?.code, 'interrupted');
      });
    });

    describe('purge, counts', () => {
      test('purgeExpired deletes final jobs past keep, and only those', async (t) => {
        const { clock, store } = await setup(t);
        const done = await store.create(autoJob({ keep_ms: 1_000 }));
        await store.complete(done.id, HEAD, pieces(600_000));
        const failed = await store.create(autoJob({ keep_ms: 1_000 }));
        await store.fail(failed.id, TIMEOUT);
        const cancelled = await store.create(queueJob({ keep_ms: 1_000 }));
        await store.cancel(cancelled.id);
        const keptLonger = await store.create(autoJob({ keep_ms: 5_000 }));
        await store.fail(keptLonger.id, TIMEOUT);
        const running = await store.create(autoJob({ keep_ms: 1 }));
        const queued = await store.create(queueJob({ keep_ms: 1 }));
        clock.advance(999);
        assert.equal(await store.purgeExpired(), 0);
        clock.advance(1);
        assert.equal(await store.purgeExpired(), 3);
        assert.equal(await store.get(done.id), undefined);
        assert.equal(await store.readResult(done.id), undefined);
        assert.equal(await store.get(failed.id), undefined);
        assert.equal(await store.get(cancelled.id), undefined);
        assert.equal((await store.get(keptLonger.id))?.status, 'failed');
        assert.equal((await store.get(running.id))?.status, 'running', 'never purged while not final');
        assert.equal((await store.get(queued.id))?.status, 'queued');
        assert.equal(await store.purgeExpired(clock.t + 10_000), 1);
      });

      test('list: newest first, by status and route, bounded, without request bodies', async (t) => {
        const { store, clock } = await setup(t);
        const a = await store.create(
          queueJob({ request: { method: 'POST', path: '/x', headers: [], body: Buffer.from('secret') } }),
        );
        clock.advance(10);
        const b = await store.create(autoJob());
        clock.advance(10);
        const c = await store.create(autoJob());
        await store.fail(c.id, TIMEOUT);
        assert.deepEqual(
          (await store.list({ limit: 10 })).map((j) => j.id),
          [c.id, b.id, a.id],
        );
        assert.deepEqual(
          (await store.list({ limit: 10, status: 'failed' })).map((j) => j.id),
          [c.id],
        );
        assert.deepEqual(
          (await store.list({ limit: 10, route: 'reports' })).map((j) => j.id),
          [a.id],
        );
        assert.deepEqual(
          (await store.list({ limit: 1 })).map((j) => j.id),
          [c.id],
        );
        const [listed] = await store.list({ limit: 10, route: 'reports' });
        assert.equal(listed.request, undefined, 'no request (or body) in listings');
        assert.equal((await store.list({ limit: 10, route: 'nope' })).length, 0);
      });

      test('counts by route and status', async (t) => {
        const { store } = await setup(t);
        assert.deepEqual(await store.counts(), {});
        await store.create(queueJob());
        await store.create(queueJob());
        const a = await store.create(autoJob());
        const b = await store.create(autoJob());
        const c = await store.create(autoJob());
        await store.create(autoJob());
        await store.complete(a.id, HEAD, Readable.from([Buffer.from('x')]));
        await store.fail(b.id, TIMEOUT);
        await store.cancel(c.id);
        assert.deepEqual(await store.counts(), {
          reports: { queued: 2, running: 0, completed: 0, failed: 0, cancelled: 0 },
          slow: { queued: 0, running: 1, completed: 1, failed: 1, cancelled: 1 },
        });
      });
    });

    describe('waiters and listeners', () => {
      test('waitFinal: at once for a final or unknown job', async (t) => {
        const { store } = await setup(t);
        const job = await store.create(autoJob());
        await store.fail(job.id, TIMEOUT);
        const t0 = performance.now();
        assert.equal((await store.waitFinal(job.id, 5_000))?.status, 'failed');
        assert.equal(await store.waitFinal(newJobId(), 5_000), undefined);
        assert.ok(performance.now() - t0 < 1_000);
      });

      test('waitFinal wakes when the job ends, with the final record', async (t) => {
        const { store } = await setup(t);
        const job = await store.create(autoJob());
        const waiting = store.waitFinal(job.id, 10_000);
        setTimeout(() => void store.complete(job.id, HEAD, Readable.from([Buffer.from('done')])), 30);
        const t0 = performance.now();
        const got = await waiting;
        assert.equal(got?.status, 'completed');
        assert.ok(performance.now() - t0 < 2_000, 'woken by the change, not the timeout');
      });

      test('waitFinal ends with the current state when the wait is over', async (t) => {
        const { store } = await setup(t);
        const job = await store.create(queueJob());
        const t0 = performance.now();
        const got = await store.waitFinal(job.id, 150);
        const took = performance.now() - t0;
        assert.equal(got?.status, 'queued');
        assert.ok(took >= 140 && took < 2_000, `took ${took} ms`);
      });

      test('an aborted wait resolves undefined at once', async (t) => {
        const { store } = await setup(t);
        const job = await store.create(autoJob());
        const ac = new AbortController();
        const waiting = store.waitFinal(job.id, 10_000, ac.signal);
        setTimeout(() => ac.abort(), 20);
        const t0 = performance.now();
        assert.equal(await waiting, undefined);
        assert.ok(performance.now() - t0 < 2_000);
        // The job can still end normally afterwards.
        assert.equal(await store.cancel(job.id), true);
      });

      test('onFinal reports each final transition once, after the commit', async (t) => {
        const { clock, store } = await setup(t);
        const seen: JobRecord[] = [];
        const off = store.onFinal((j) => seen.push(j));
        const a = await store.create(autoJob());
        const q = await store.create(queueJob({ idempotent: false }));
        const c = await store.create(queueJob());
        assert.equal(seen.length, 0);
        await store.claim('w1', 1_000);
        await store.requeue(q.id, 'w1', 0);
        assert.equal(seen.length, 0, 'non-final transitions are not reported');
        await store.complete(a.id, HEAD, Readable.from([Buffer.from('x')]));
        await store.complete(a.id, HEAD, Readable.from([Buffer.from('x')]));
        await store.cancel(c.id);
        await store.cancel(c.id);
        await store.claim('w1', 1_000);
        clock.advance(1_001);
        await store.recoverInterrupted();
        assert.deepEqual(
          seen.map((j) => [j.id, j.status]),
          [
            [a.id, 'completed'],
            [c.id, 'cancelled'],
            [q.id, 'failed'],
          ],
        );
        assert.equal((await store.get(a.id))?.status, seen[0].status, 'committed when reported');
        off();
        const b = await store.create(autoJob());
        await store.fail(b.id, TIMEOUT);
        assert.equal(seen.length, 3);
      });
    });

    describe('cancellations reach the holder (onCancelled)', () => {
      test('a cancellation is reported once, after the commit; no other transition is', async (t) => {
        const { clock, store } = await setup(t);
        const seen: [string, string | undefined][] = [];
        const off = store.onCancelled((id) => {
          seen.push([id, undefined]);
          void store.get(id).then((j) => (seen[seen.length - 1][1] = j?.status));
        });
        const a = await store.create(autoJob());
        const q = await store.create(queueJob());
        const done = await store.create(autoJob());
        await store.complete(done.id, HEAD, Readable.from([Buffer.from('x')]));
        const failed = await store.create(autoJob());
        await store.fail(failed.id, TIMEOUT);
        await store.claim('w1', 1_000);
        clock.advance(1_001);
        await store.recoverInterrupted();
        assert.deepEqual(seen, [], 'completion, failure, requeue are not cancellations');
        assert.equal(await store.cancel(a.id), true);
        assert.equal(await store.cancel(a.id), false);
        assert.equal(await store.cancel(q.id), true);
        await new Promise((r) => setTimeout(r, 50));
        assert.deepEqual(seen, [
          [a.id, 'cancelled'],
          [q.id, 'cancelled'],
        ]);
        off();
        await store.cancel((await store.create(autoJob())).id);
        await new Promise((r) => setTimeout(r, 50));
        assert.equal(seen.length, 2);
      });

      test('a cancellation made by another instance reaches this one promptly', {
        skip: makePeers ? false : 'one instance only',
      }, async (t) => {
        const clock = new FakeClock();
        const [a, b] = await makePeers!({
          now: [clock.now, clock.now],
          heartbeatMs: 0,
          instanceLeaseMs: 60_000,
        });
        t.after(() => Promise.all([a.close(), b.close()]));
        const onA: string[] = [];
        const onB: string[] = [];
        a.onCancelled((id) => onA.push(id));
        b.onCancelled((id) => onB.push(id));
        await new Promise((r) => setTimeout(r, 100)); // subscribed
        const job = await a.create(autoJob());
        const t0 = performance.now();
        assert.equal(await b.cancel(job.id), true);
        assert.deepEqual(onB, [job.id], 'reported at once to the instance that cancelled');
        while (onA.length === 0 && performance.now() - t0 < 3_000) await new Promise((r) => setTimeout(r, 5));
        assert.deepEqual(onA, [job.id], 'and to the one holding the call');
        assert.ok(performance.now() - t0 < 1_000, `after ${performance.now() - t0} ms`);
        assert.equal((await a.get(job.id))?.status, 'cancelled');
        await new Promise((r) => setTimeout(r, 50));
        assert.deepEqual([onA.length, onB.length], [1, 1], 'once each');
      });

      test('a held job settled by another instance is reported to its holder by the heartbeat', {
        skip: makePeers ? false : 'one instance only',
      }, async (t) => {
        const ahead = new FakeClock();
        ahead.advance(10 * 60_000);
        const [a, b] = await makePeers!({
          now: [Date.now, ahead.now],
          heartbeatMs: 30,
          instanceLeaseMs: 60_000,
        });
        t.after(() => Promise.all([a.close(), b.close()]));
        const onA: string[] = [];
        a.onCancelled((id) => onA.push(id));
        const mine = await a.create(autoJob({ status: 'running' }));
        const kept = await a.create(autoJob({ status: 'running' }));
        // b's clock is past a's lease: b settles the job as interrupted (no cancel message is sent).
        ahead.t = Date.now() + 10 * 60_000;
        await a.fail(kept.id, TIMEOUT); // ended here: never reported as lost
        assert.deepEqual(await b.recoverInterrupted(), { failed: 1, requeued: 0 });
        assert.equal((await a.get(mine.id))?.error?.code, 'interrupted');
        const t0 = performance.now();
        while (onA.length === 0 && performance.now() - t0 < 3_000) await new Promise((r) => setTimeout(r, 5));
        assert.deepEqual(onA, [mine.id]);
      });
    });

    test('after close every operation rejects with store-unavailable', async () => {
      const store = await makeStore({ now: Date.now });
      await store.close();
      await assert.rejects(store.get(newJobId()), isStoreUnavailable);
      await assert.rejects(store.create(queueJob()), isStoreUnavailable);
      await store.close(); // idempotent
    });
  });
}
