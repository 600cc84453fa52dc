/**
 * Two gateway processes (the real CLI) sharing one Redis job store (SPEC §10): a request offloaded
 * to a job on one instance is polled, long-polled and its result fetched on the other; a job owned
 * by one client is not shown to another on either instance; a DELETE on one aborts the upstream call
 * held by the other; 40 queue jobs are each delivered once, by both instances' workers; an instance
 * killed with -9 has its auto job ended `interrupted` within jobs.lease + 5 s and its queue jobs
 * delivered again by the survivor where that is safe.
 *
 * Each test runs under its own key prefix on the shared server (db 9), deleted afterwards. Where the
 * upstream must know which instance called it, each instance's target has its own base path (/a, /b).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import { type GatewayProcess, sleep, spawnGateway, startHttpServer } from '../helpers.ts';

const REDIS = process.env.SLUICE_TEST_REDIS ?? 'redis://127.0.0.1:6379/9';

/** A fresh key prefix whose keys are deleted when the test ends (the server is shared: never flushed). */
function redisPrefix(t: { after: (fn: () => unknown) => void }): string {
  const prefix = `sluice-test-${randomBytes(4).toString('hex')}:`;
  t.after(async () => {
    const redis = new Redis(REDIS, { lazyConnect: true });
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== '0');
    await redis.quit();
  });
  return prefix;
}

interface JobJson {
  status: string;
  result_url?: string;
  error?: { code?: string };
}

async function jobOn(gw: GatewayProcess, location: string): Promise<JobJson> {
  const res = await fetch(gw.url(location));
  assert.equal(res.status, 200, `GET ${location}`);
  return (await res.json()) as JobJson;
}

/** Polls until `ok` holds (every 50 ms, at most `ms`); returns the last value and when it held. */
async function until<T>(ms: number, read: () => Promise<T>, ok: (v: T) => boolean): Promise<T> {
  const end = performance.now() + ms;
  let v = await read();
  while (!ok(v) && performance.now() < end) {
    await sleep(50);
    v = await read();
  }
  return v;
}

async function accepted(res: Response): Promise<string> {
  assert.equal(res.status, 202, `expected 202, got ${res.status}: ${await res.clone().text()}`);
  await res.arrayBuffer();
  const location = res.headers.get('location') ?? '';
  assert.match(location, /^\/_sluice\/jobs\/J/);
  return location;
}

describe('several instances on one Redis', () => {
  test('202 on one instance; poll, ?wait and the result on the other', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const prefix = redisPrefix(t);
    const yaml = `
store: "${REDIS}?prefix=${prefix}"
upstreams: { demo: { targets: ["${demo.url}"] } }
routes:
  - { name: reports, match: { path: /slow }, upstream: demo, async: { mode: auto, after: 200ms } }
`;
    const a = await spawnGateway(yaml);
    t.after(() => a.stop());
    const b = await spawnGateway(yaml);
    t.after(() => b.stop());

    const accepted = await fetch(a.url('/slow?ms=1200'), { headers: { authorization: 'Bearer alice' } });
    assert.equal(accepted.status, 202);
    const location = accepted.headers.get('location') ?? '';
    assert.match(location, /^\/_sluice\/jobs\/J/);
    await accepted.arrayBuffer();

    // The other instance knows the job at once, and its long poll wakes when the first one completes it.
    const early = await fetch(b.url(location), { headers: { authorization: 'Bearer alice' } });
    assert.equal(early.status, 200);
    assert.equal(((await early.json()) as { status: string }).status, 'running');
    const t0 = performance.now();
    const done = await fetch(b.url(`${location}?wait=10s`), { headers: { authorization: 'Bearer alice' } });
    const waited = performance.now() - t0;
    const job = (await done.json()) as { status: string; result_url: string };
    assert.equal(job.status, 'completed');
    assert.ok(waited < 5_000, `woken by the completion on the other instance after ${waited} ms`);
    const result = await fetch(b.url(job.result_url), { headers: { authorization: 'Bearer alice' } });
    assert.equal(result.status, 200);
    assert.deepEqual(await result.json(), { slept_ms: 1200 });

    // Owner binding holds across instances.
    for (const gw of [a, b]) {
      const other = await fetch(gw.url(location), { headers: { authorization: 'Bearer mallory' } });
      assert.equal(other.status, 404);
      await other.arrayBuffer();
    }
  });

  test('DELETE on one instance aborts the upstream call the other holds: an auto call, a queue delivery', async (t) => {
    const prefix = redisPrefix(t);
    // The upstream never answers; it notes which instance called (its base path) and when it let go.
    const calls = new Map<string, { by: string; closedAt: number }>();
    const up = await startHttpServer((req, res) => {
      const m = /^\/(a|b)\/(\w+)/.exec(req.url ?? '');
      if (!m) {
        res.end('ok');
        return;
      }
      const call = { by: m[1], closedAt: 0 };
      calls.set(m[2], call);
      res.on('close', () => (call.closedAt = performance.now()));
    });
    t.after(() => up.close());
    const yaml = (base: string) => `
store: "${REDIS}?prefix=${prefix}"
upstreams: { app: { targets: ["${up.url}/${base}"] } }
routes:
  - { name: hang, match: { path: /hang }, upstream: app, async: { mode: auto, after: 200ms } }
  - { name: qhang, match: { path: /qhang }, upstream: app, async: { mode: queue } }
`;
    const a = await spawnGateway(yaml('a'));
    t.after(() => a.stop());
    const b = await spawnGateway(yaml('b'));
    t.after(() => b.stop());
    const gw = { a, b };

    const cases = [
      { name: 'hang', location: await accepted(await fetch(a.url('/hang'))) },
      // Either instance's workers may claim it: the DELETE goes to the one that did not.
      { name: 'qhang', location: await accepted(await fetch(a.url('/qhang'))) },
    ];
    for (const { name, location } of cases) {
      const call = await until(
        5_000,
        async () => calls.get(name),
        (c) => c !== undefined,
      );
      assert.ok(call, `${name}: the upstream got the call`);
      assert.equal(call.closedAt, 0);
      const other = call.by === 'a' ? gw.b : gw.a;
      const t0 = performance.now();
      const del = await fetch(other.url(location), { method: 'DELETE' });
      assert.equal(del.status, 200);
      assert.equal(((await del.json()) as JobJson).status, 'cancelled');
      // Pub/sub, not a renewal (a third of the default 10 s lease): the abort comes at once.
      await until(
        3_000,
        async () => call.closedAt,
        (v) => v > 0,
      );
      assert.ok(call.closedAt > 0, `${name}: the upstream saw its request aborted`);
      const after = call.closedAt - t0;
      assert.ok(after < 2_000, `${name}: aborted ${Math.round(after)} ms after the DELETE`);
      for (const g of [a, b]) assert.equal((await jobOn(g, location)).status, 'cancelled');
    }
  });

  test('40 queue jobs: each delivered exactly once, by both instances’ workers', async (t) => {
    const prefix = redisPrefix(t);
    const deliveries = new Map<string, number>();
    const by = { a: 0, b: 0 };
    const up = await startHttpServer((req: IncomingMessage, res: ServerResponse) => {
      const m = /^\/(a|b)\/work\?n=(\d+)$/.exec(req.url ?? '');
      if (!m) {
        res.statusCode = 404;
        res.end();
        return;
      }
      by[m[1] as 'a' | 'b']++;
      deliveries.set(m[2], (deliveries.get(m[2]) ?? 0) + 1);
      setTimeout(() => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ n: Number(m[2]) }));
      }, 100);
    });
    t.after(() => up.close());
    const yaml = (base: string) => `
store: "${REDIS}?prefix=${prefix}"
jobs: { workers: 4 }
upstreams: { app: { targets: ["${up.url}/${base}"] } }
routes:
  - { name: work, match: { path: /work }, upstream: app, async: { mode: queue } }
`;
    const a = await spawnGateway(yaml('a'));
    t.after(() => a.stop());
    const b = await spawnGateway(yaml('b'));
    t.after(() => b.stop());

    // Accepted on both instances at once, half each.
    const locations = await Promise.all(
      Array.from({ length: 40 }, async (_, n) => {
        const gw = n % 2 ? a : b;
        return accepted(await fetch(gw.url(`/work?n=${n}`)));
      }),
    );
    // Each result, fetched on the instance that did not accept it.
    await Promise.all(
      locations.map(async (location, n) => {
        const gw = n % 2 ? b : a;
        const job = await until(
          20_000,
          async () => (await (await fetch(gw.url(`${location}?wait=5s`))).json()) as JobJson,
          (j) => j.status !== 'queued' && j.status !== 'running',
        );
        assert.equal(job.status, 'completed', `job ${n}: ${JSON.stringify(job)}`);
        const result = await fetch(gw.url(job.result_url));
        assert.deepEqual(await result.json(), { n });
      }),
    );
    await sleep(500); // a second delivery would show up meanwhile
    assert.equal(deliveries.size, 40);
    for (const [n, count] of deliveries) assert.equal(count, 1, `job ${n} delivered ${count} times`);
    assert.equal(by.a + by.b, 40);
    assert.ok(by.a > 0 && by.b > 0, `both instances delivered: ${JSON.stringify(by)}`);
  });

  test('kill -9 of the instance holding an auto and two queue jobs: the survivor settles them within jobs.lease + 5 s', async (t) => {
    const prefix = redisPrefix(t);
    const seen: string[] = [];
    const up = await startHttpServer((req, res) => {
      const url = req.url ?? '';
      seen.push(`${req.method} ${url}`);
      // Instance a's calls hang (it dies holding them); instance b's are answered.
      if (url.startsWith('/a/')) return;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ by: 'b', url }));
    });
    t.after(() => up.close());
    const yaml = (base: string) => `
store: "${REDIS}?prefix=${prefix}"
jobs: { lease: 2s }
upstreams: { app: { targets: ["${up.url}/${base}"] } }
routes:
  - { name: auto, match: { path: /auto }, upstream: app, async: { mode: auto, after: 200ms } }
  - { name: q, match: { path: /q }, upstream: app, async: { mode: queue } }
`;
    const a = await spawnGateway(yaml('a'));
    t.after(() => a.stop());
    const auto = await accepted(await fetch(a.url('/auto')));
    const safe = await accepted(await fetch(a.url('/q?k=safe')));
    const post = await accepted(await fetch(a.url('/q?k=post'), { method: 'POST', body: 'x' }));
    // Every call is in flight on a before b exists: a holds all three.
    const held = await until(
      5_000,
      async () => seen.length,
      (n) => n >= 3,
    );
    assert.equal(held, 3, seen.join(', '));
    const b = await spawnGateway(yaml('b'));
    t.after(() => b.stop());

    await a.kill();
    const t0 = performance.now();
    const ended = (j: JobJson) => j.status !== 'running' && j.status !== 'queued';
    const [autoJob, safeJob, postJob] = await Promise.all(
      [auto, safe, post].map(async (location) => {
        const job = await until(10_000, () => jobOn(b, location), ended);
        return { job, after: performance.now() - t0 };
      }),
    );
    // Settled by b once a's 2 s lease ran out: not at once (a renewed every ~0.7 s until it died),
    // and within lease + 5 s.
    assert.equal(autoJob.job.status, 'failed');
    assert.equal(autoJob.job.error?.code, 'interrupted');
    assert.ok(autoJob.after >= 500, `auto settled ${Math.round(autoJob.after)} ms after the kill`);
    assert.ok(autoJob.after < 7_000, `auto settled ${Math.round(autoJob.after)} ms after the kill`);
    // The safe (GET) queue job was delivered again by b and completed.
    assert.equal(safeJob.job.status, 'completed', JSON.stringify(safeJob.job));
    assert.ok(safeJob.after < 7_000, `redelivered ${Math.round(safeJob.after)} ms after the kill`);
    const result = await fetch(b.url(safeJob.job.result_url));
    assert.deepEqual(await result.json(), { by: 'b', url: '/b/q?k=safe' });
    // The POST without Idempotency-Key is not repeated: it ends interrupted.
    assert.equal(postJob.job.status, 'failed', JSON.stringify(postJob.job));
    assert.equal(postJob.job.error?.code, 'interrupted');
    assert.ok(postJob.after < 7_000);
    assert.deepEqual(
      seen.filter((l) => l.includes('/b/')),
      ['GET /b/q?k=safe'],
    );
  });
});
