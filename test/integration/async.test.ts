/**
 * Async offload end to end (SPEC §5) through the real gateway and a real SQLite file: auto, prefer and
 * queue modes, RFC 7240 preferences, the job resource, owner binding, cancel, result replay, and
 * durability across kill -9 of a gateway child process.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type DemoUpstream, startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import { JobStoreError } from '../../src/jobs/job-store.ts';
import { SqliteJobStore } from '../../src/jobs/sqlite-job-store.ts';
import {
  problemOf,
  sleep,
  spawnGateway,
  startHttpServer,
  startTestGateway,
  type TestGateway,
  type TestServer,
} from '../helpers.ts';

interface Accepted {
  id: string;
  status: string;
  poll_url: string;
  retry_after: number;
}

interface JobJson {
  id: string;
  status: string;
  route: string;
  attempts: number;
  result_url?: string;
  error?: { code: string; phase?: string; status: number };
}

const BIG = Buffer.alloc(5 * 1024 * 1024);
for (let i = 0; i < BIG.length; i += 4) BIG.writeUInt32LE((i * 2654435761) >>> 0, i);

describe('async offload', () => {
  let demo: DemoUpstream;
  let big: TestServer;
  let gw: TestGateway;
  const dir = mkdtempSync(join(tmpdir(), 'sluice-async-'));

  before(async () => {
    demo = await startDemoUpstream({ port: 0 });
    // Slow to answer, then a 5 MiB body: a result that must be replayed byte for byte.
    big = await startHttpServer((_req, res) => {
      setTimeout(() => {
        res.writeHead(201, { 'content-type': 'application/octet-stream', 'x-custom': 'kept' });
        res.end(BIG);
      }, 400);
    });
    gw = await startTestGateway(`
store: sqlite:${dir}/jobs.db
upstreams:
  demo: { targets: ["${demo.url}"] }
  big: { targets: ["${big.url}"] }
routes:
  - { name: big, match: { path: /big }, upstream: big, async: { mode: auto, after: 150ms } }
  - { name: failing, match: { path: /failing }, upstream: demo, strip_prefix: true, timeouts: { total: 5s }, async: { mode: auto, after: 100ms, timeout: 600ms } }
  - { name: prefer, match: { path: /p }, upstream: demo, strip_prefix: true, async: { mode: prefer } }
  - { name: queue, match: { path: /q }, upstream: demo, strip_prefix: true, async: { mode: queue } }
  - { name: auto, match: { path: / }, upstream: demo, async: { mode: auto, after: 300ms } }
`);
  });
  after(async () => {
    await gw.close();
    await demo.close();
    await big.close();
  });

  const poll = async (url: string, headers: Record<string, string> = {}): Promise<JobJson> => {
    const res = await fetch(gw.url(`${url}?wait=5s`), { headers });
    assert.equal(res.status, 200);
    return (await res.json()) as JobJson;
  };

  test('auto: a fast answer stays synchronous', async () => {
    const res = await fetch(gw.url('/fast'));
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'ok\n');
  });

  test('auto: no headers within `after` → 202 with Location, Retry-After and the job; the result is replayed', async () => {
    const t0 = performance.now();
    const res = await fetch(gw.url('/slow?ms=900'));
    const ms = performance.now() - t0;
    assert.equal(res.status, 202);
    assert.ok(ms >= 295 && ms < 900, `202 after ${ms} ms`);
    const body = (await res.json()) as Accepted;
    assert.match(body.id, /^[A-Za-z0-9_-]{22,}$/);
    assert.equal(body.status, 'running');
    assert.equal(res.headers.get('location'), body.poll_url);
    assert.equal(body.poll_url, `/_sluice/jobs/${body.id}`);
    assert.ok(Number(res.headers.get('retry-after')) >= 1);
    assert.equal(body.retry_after, Number(res.headers.get('retry-after')));
    const e = await gw.entry(String(res.headers.get('x-request-id')));
    assert.equal(e.status, 202);
    assert.equal(e.outcome, 'async');

    const early = await fetch(gw.url(body.poll_url));
    const running = (await early.json()) as JobJson;
    assert.equal(running.status, 'running');
    assert.ok(early.headers.get('retry-after'));
    const notYet = await fetch(gw.url(`${body.poll_url}/result`));
    assert.equal(notYet.status, 409);
    await notYet.arrayBuffer();

    const done = await poll(body.poll_url);
    assert.equal(done.status, 'completed');
    assert.equal(done.route, 'auto');
    const result = await fetch(gw.url(`${body.poll_url}/result`));
    assert.equal(result.status, 200);
    assert.deepEqual(await result.json(), { slept_ms: 900 });
  });

  test('auto: a multi-MiB result is replayed byte for byte with status and headers', async () => {
    const res = await fetch(gw.url('/big'));
    assert.equal(res.status, 202);
    const { poll_url } = (await res.json()) as Accepted;
    assert.equal((await poll(poll_url)).status, 'completed');
    const result = await fetch(gw.url(`${poll_url}/result`));
    assert.equal(result.status, 201);
    assert.equal(result.headers.get('x-custom'), 'kept');
    const bytes = Buffer.from(await result.arrayBuffer());
    assert.equal(bytes.length, BIG.length);
    assert.equal(
      createHash('sha256').update(bytes).digest('hex'),
      createHash('sha256').update(BIG).digest('hex'),
    );
  });

  test('Prefer: respond-async answers 202 at once; Prefer: wait=N sets the hold time; both are echoed', async () => {
    const t0 = performance.now();
    const now = await fetch(gw.url('/slow?ms=200'), { headers: { prefer: 'respond-async' } });
    assert.ok(performance.now() - t0 < 200);
    assert.equal(now.status, 202);
    assert.equal(now.headers.get('preference-applied'), 'respond-async');
    const job = (await now.json()) as Accepted;
    assert.equal((await poll(job.poll_url)).status, 'completed');

    const t1 = performance.now();
    const waited = await fetch(gw.url('/slow?ms=3000'), { headers: { prefer: 'wait=1' } });
    const ms = performance.now() - t1;
    assert.equal(waited.status, 202);
    assert.ok(ms >= 990 && ms < 2000, `held ${ms} ms`);
    assert.equal(waited.headers.get('preference-applied'), 'wait=1');
    await waited.arrayBuffer();
  });

  test('prefer mode: plain proxying unless the client sends Prefer: respond-async', async () => {
    const plain = await fetch(gw.url('/p/slow?ms=400'));
    assert.equal(plain.status, 200);
    await plain.arrayBuffer();
    const asked = await fetch(gw.url('/p/slow?ms=400'), { headers: { prefer: 'respond-async' } });
    assert.equal(asked.status, 202);
    const { poll_url } = (await asked.json()) as Accepted;
    assert.equal((await poll(poll_url)).status, 'completed');
  });

  test('a job whose background call times out ends failed; its result is the 504 a synchronous request would get', async () => {
    const res = await fetch(gw.url('/failing/hang'));
    assert.equal(res.status, 202);
    const { poll_url } = (await res.json()) as Accepted;
    const done = await poll(poll_url);
    assert.equal(done.status, 'failed');
    assert.equal(done.error?.code, 'upstream-timeout');
    const result = await fetch(gw.url(`${poll_url}/result`));
    assert.equal(result.status, 504);
    const p = await problemOf(result);
    assert.equal(p.type, 'https://sluice.dev/problems/upstream-timeout');
    assert.equal(p.phase, 'total');
  });

  test('DELETE cancels: the upstream sees the abort, the job is cancelled and its result is 410', async () => {
    const res = await fetch(gw.url('/hang'));
    assert.equal(res.status, 202);
    const { poll_url } = (await res.json()) as Accepted;
    const aborted = once(demo.events, 'aborted');
    const del = await fetch(gw.url(poll_url), { method: 'DELETE' });
    assert.equal(del.status, 200);
    assert.equal(((await del.json()) as JobJson).status, 'cancelled');
    assert.deepEqual(await aborted, ['/hang']);
    const result = await fetch(gw.url(`${poll_url}/result`));
    assert.equal(result.status, 410);
    assert.equal((await problemOf(result)).type, 'https://sluice.dev/problems/job-cancelled');
  });

  test('a job created with Authorization is visible only with the same value; others get the unknown-id 404', async () => {
    const res = await fetch(gw.url('/slow?ms=500'), { headers: { authorization: 'Bearer alice' } });
    assert.equal(res.status, 202);
    const { poll_url } = (await res.json()) as Accepted;
    const mine = await fetch(gw.url(poll_url), { headers: { authorization: 'Bearer alice' } });
    assert.equal(mine.status, 200);
    await mine.arrayBuffer();
    const other = await fetch(gw.url(poll_url), { headers: { authorization: 'Bearer mallory' } });
    const none = await fetch(gw.url(poll_url));
    const unknown = await fetch(gw.url('/_sluice/jobs/Jaaaaaaaaaaaaaaaaaaaaaaaaaa'));
    for (const r of [other, none, unknown]) {
      assert.equal(r.status, 404);
      const p = await problemOf(r);
      assert.equal(p.type, 'https://sluice.dev/problems/job-not-found');
    }
  });

  test('queue: the request is stored and 202 comes at once; a worker delivers it', async () => {
    const body = 'hello queue';
    const res = await fetch(gw.url('/q/echo'), {
      method: 'POST',
      body,
      headers: { 'idempotency-key': 'k-1' },
    });
    assert.equal(res.status, 202);
    const job = (await res.json()) as Accepted;
    assert.ok(['queued', 'running'].includes(job.status));
    const done = await poll(job.poll_url);
    assert.equal(done.status, 'completed');
    const result = await fetch(gw.url(`${job.poll_url}/result`));
    const echo = (await result.json()) as {
      method: string;
      path: string;
      body_sha256: string;
      headers: Record<string, string>;
    };
    assert.equal(echo.method, 'POST');
    assert.equal(echo.path, '/echo');
    assert.equal(echo.body_sha256, createHash('sha256').update(body).digest('hex'));
    assert.equal(echo.headers['idempotency-key'], 'k-1');
  });
});

describe('durability', () => {
  test('after kill -9 and a restart every acknowledged job is final and visible', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const dir = mkdtempSync(join(tmpdir(), 'sluice-crash-'));
    const yaml = `
store: sqlite:${dir}/jobs.db
jobs: { workers: 1 }
upstreams:
  demo: { targets: ["${demo.url}"] }
routes:
  - { name: queue, match: { path: /q }, upstream: demo, strip_prefix: true, async: { mode: queue } }
  - { name: auto, match: { path: / }, upstream: demo, async: { mode: auto, after: 100ms } }
`;
    const first = await spawnGateway(yaml);
    const accepted: { url: string; kind: string }[] = [];
    const accept = async (path: string, init: RequestInit, kind: string) => {
      const res = await fetch(first.url(path), init);
      assert.equal(res.status, 202, `${kind}: ${res.status}`);
      accepted.push({ url: ((await res.json()) as Accepted).poll_url, kind });
    };
    // Running auto jobs (the upstream never answers), a running queue delivery and queued ones.
    await accept('/hang', {}, 'auto');
    await accept('/hang', {}, 'auto');
    await accept('/q/slow?ms=800', { method: 'GET' }, 'queue-get');
    await accept('/q/slow?ms=50', { method: 'GET' }, 'queue-get');
    await accept('/q/echo', { method: 'POST', body: 'x' }, 'queue-post');
    await accept(
      '/q/echo',
      { method: 'POST', body: 'y', headers: { 'idempotency-key': 'k' } },
      'queue-post-key',
    );
    process.kill(first.pid, 'SIGKILL');
    await first.stop();

    const second = await spawnGateway(yaml);
    t.after(() => second.stop());
    for (const job of accepted) {
      const res = await fetch(second.url(`${job.url}?wait=10s`));
      assert.equal(res.status, 200, job.kind);
      const j = (await res.json()) as JobJson;
      assert.ok(['completed', 'failed'].includes(j.status), `${job.kind} ended ${j.status}`);
      if (job.kind === 'auto') {
        assert.equal(j.status, 'failed');
        assert.equal(j.error?.code, 'interrupted');
        const result = await fetch(second.url(`${job.url}/result`));
        assert.equal(result.status, 502);
        assert.equal((await problemOf(result)).type, 'https://sluice.dev/problems/interrupted');
      }
      if (job.kind === 'queue-get' || job.kind === 'queue-post-key')
        assert.equal(j.status, 'completed', job.kind);
    }
    await sleep(0);
  });
});

describe('store unavailable', () => {
  test('a job that cannot be stored is never acknowledged: 503 with Retry-After; plain routes keep working', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    const store = new SqliteJobStore(':memory:');
    // The store refuses every new job, as a full disk or a locked database would.
    store.create = () => Promise.reject(new JobStoreError('disk full'));
    const gw = await startTestGateway(
      `
upstreams:
  demo: { targets: ["${demo.url}"] }
routes:
  - { name: queue, match: { path: /q }, upstream: demo, strip_prefix: true, async: { mode: queue } }
  - { name: auto, match: { path: /a }, upstream: demo, strip_prefix: true, async: { mode: auto, after: 100ms } }
  - { name: plain, match: { path: / }, upstream: demo }
`,
      { jobStore: store },
    );
    t.after(async () => {
      await gw.close();
      await demo.close();
    });
    for (const path of ['/a/slow?ms=1000', '/q/echo']) {
      const res = await fetch(gw.url(path), {
        method: path.startsWith('/q') ? 'POST' : 'GET',
        body: path.startsWith('/q') ? 'x' : undefined,
      });
      assert.equal(res.status, 503, path);
      assert.ok(Number(res.headers.get('retry-after')) >= 1);
      assert.equal((await problemOf(res)).type, 'https://sluice.dev/problems/store-unavailable');
    }
    assert.equal((await fetch(gw.url('/fast'))).status, 200);
  });
});
