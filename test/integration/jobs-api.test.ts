/**
 * The public job API (SPEC §5) on a real node:http server over a real SQLite file, without the
 * gateway: status JSON and Retry-After, long-polling, result replay (5 MiB byte for byte), the
 * 409/410/404 problems, owner binding, cancellation, queue delivery against the demo upstream, and
 * completion webhooks (signature, SSRF guard).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { type DemoUpstream, startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import { acceptedResponse } from '../../src/jobs/accept.ts';
import {
  type CallbackPolicy,
  CallbackSender,
  callbackUrlFor,
  type LookupFn,
  verifySignature,
} from '../../src/jobs/callback.ts';
import { httpDeliver } from '../../src/jobs/http-deliver.ts';
import { newJobId, ownerHash } from '../../src/jobs/ids.ts';
import { JobResource } from '../../src/jobs/job-resource.ts';
import type { JobError, NewJob } from '../../src/jobs/job-store.ts';
import type { JobJson } from '../../src/jobs/job-view.ts';
import { QueueWorker } from '../../src/jobs/queue-worker.ts';
import { SqliteJobStore } from '../../src/jobs/sqlite-job-store.ts';
import { type Problem, problemOf, startHttpServer, type TestServer } from '../helpers.ts';

const PREFIX = '/_sluice/jobs';
const MiB = 1024 * 1024;

const dir = mkdtempSync(join(tmpdir(), 'sluice-jobs-api-'));
/** Shifts the clock of the store and the resource (to age jobs without waiting). */
let clockOffset = 0;
const now = () => Date.now() + clockOffset;
const store = new SqliteJobStore(join(dir, 'sluice.db'), { now, heartbeatMs: 0, waitPollMs: 1_000 });
const cancelled: string[] = [];
/** What the lead's hook will do: abort whoever holds the job's upstream call. */
let abortHolder: (id: string) => void = () => {};
const resource = new JobResource({
  store,
  prefix: PREFIX,
  now,
  onCancel: (id) => {
    cancelled.push(id);
    abortHolder(id);
  },
});
let api: TestServer;
let base = '';

before(async () => {
  api = await startHttpServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/accept') {
      // acceptedResponse on a real socket, as the exchange will call it.
      acceptedResponse(res, { id: 'Jabc', status: 'running' }, PREFIX, 2, 'respond-async', 'req-1');
      return;
    }
    if (!resource.tryHandle(req, res, path)) {
      res.writeHead(418);
      res.end();
    }
  });
  base = `${api.url}${PREFIX}`;
});
after(async () => {
  await api.close();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

function autoJob(over: Partial<NewJob> = {}): NewJob {
  return {
    id: newJobId(),
    route: 'reports',
    mode: 'auto',
    status: 'running',
    keep_ms: 60_000,
    max_result: 10 * MiB,
    idempotent: false,
    ...over,
  };
}

const json = async (res: Response) => (await res.json()) as JobJson;

/** Problem bodies minus what differs between any two requests. */
function stable(p: Problem): Omit<Problem, 'request_id' | 'elapsed_ms'> {
  const { request_id: _r, elapsed_ms: _e, ...rest } = p;
  return rest;
}

function headersOf(res: Response): Record<string, string> {
  const out: Record<string, string> = {};
  res.headers.forEach((v, k) => {
    // content-length follows the body, whose elapsed_ms may gain a digit (9 → 10 ms) under load; the
    // bodies are compared apart (stable()), minus request_id and elapsed_ms.
    if (k !== 'date' && k !== 'x-request-id' && k !== 'server-timing' && k !== 'content-length') out[k] = v;
  });
  return out;
}

describe('status', () => {
  test('200 JSON with Retry-After while running; no Retry-After once final', async () => {
    const job = await store.create(autoJob());
    const res = await fetch(`${base}/${job.id}`, { headers: { 'x-request-id': 'poll-1' } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/json');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.equal(res.headers.get('retry-after'), '1');
    assert.equal(res.headers.get('x-request-id'), 'poll-1');
    const body = await json(res);
    assert.deepEqual(Object.keys(body).sort(), [
      'attempts',
      'created_at',
      'id',
      'route',
      'status',
      'updated_at',
    ]);
    assert.equal(body.id, job.id);
    assert.equal(body.status, 'running');
    assert.equal(body.route, 'reports');
    assert.equal(body.attempts, 1);
    assert.equal(body.created_at, new Date(job.created_at).toISOString());

    await store.complete(job.id, { status: 200, headers: [] }, Readable.from([Buffer.from('x')]));
    const done = await fetch(`${base}/${job.id}`);
    assert.equal(done.headers.get('retry-after'), null);
    const d = await json(done);
    assert.equal(d.status, 'completed');
    assert.equal(d.result_url, `${PREFIX}/${job.id}/result`);
    assert.match(done.headers.get('x-request-id') ?? '', /^[0-9A-Z]{26}$/);
  });

  test('Retry-After grows with the age of the job', async (t) => {
    const job = await store.create(autoJob());
    t.after(() => (clockOffset = 0));
    const ra = async () => (await fetch(`${base}/${job.id}`)).headers.get('retry-after');
    assert.equal(await ra(), '1');
    clockOffset = 30_000;
    assert.equal(await ra(), '2');
    clockOffset = 120_000;
    assert.equal(await ra(), '5');
    clockOffset = 600_000;
    assert.equal(await ra(), '10');
    clockOffset = 3_600_000;
    assert.equal(await ra(), '30');
  });

  test('a failed job shows its error in the SPEC §4 vocabulary', async () => {
    const job = await store.create(autoJob());
    await store.fail(job.id, {
      code: 'upstream-timeout',
      status: 504,
      phase: 'ttfb',
      timeout_ms: 30_000,
      detail: "upstream 'api' sent no response headers within 30s (ttfb) on route 'reports'",
    });
    const body = await json(await fetch(`${base}/${job.id}`));
    assert.equal(body.status, 'failed');
    assert.deepEqual(body.error, {
      type: 'https://sluice.dev/problems/upstream-timeout',
      code: 'upstream-timeout',
      status: 504,
      phase: 'ttfb',
      timeout_ms: 30_000,
      detail: "upstream 'api' sent no response headers within 30s (ttfb) on route 'reports'",
    });
    assert.equal(body.result_url, undefined);
  });
});

describe('long-poll', () => {
  test('?wait returns as soon as the job completes', async () => {
    const job = await store.create(autoJob());
    const t0 = performance.now();
    const pending = fetch(`${base}/${job.id}?wait=20s`);
    setTimeout(
      () => void store.complete(job.id, { status: 200, headers: [] }, Readable.from([Buffer.from('x')])),
      150,
    );
    const res = await pending;
    const took = performance.now() - t0;
    assert.equal((await json(res)).status, 'completed');
    assert.equal(res.headers.get('retry-after'), null);
    assert.ok(took >= 140 && took < 5_000, `took ${took} ms`);
  });

  test('?wait ends with the current status when the wait is over', async () => {
    const job = await store.create(autoJob());
    const t0 = performance.now();
    const res = await fetch(`${base}/${job.id}?wait=300ms`);
    const took = performance.now() - t0;
    assert.equal((await json(res)).status, 'running');
    assert.equal(res.headers.get('retry-after'), '1');
    assert.ok(took >= 290 && took < 5_000, `took ${took} ms`);
    const bad = await fetch(`${base}/${job.id}?wait=soon`);
    assert.equal(bad.status, 400);
    assert.match((await problemOf(bad)).detail, /wait/);
  });

  test('a client that disconnects mid-wait releases its waiter', async () => {
    const job = await store.create(autoJob());
    const req = http.get(`${base}/${job.id}?wait=30`);
    req.on('error', () => {});
    const until = async (cond: () => boolean) => {
      for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
      assert.ok(cond());
    };
    await until(() => store.waiters === 1);
    req.destroy();
    await until(() => store.waiters === 0);
  });
});

describe('result', () => {
  test('replays status, headers (minus hop-by-hop) and a 5 MiB body byte for byte', async () => {
    const job = await store.create(autoJob());
    const body = Buffer.alloc(5 * MiB + 7);
    for (let i = 0; i < body.length; i += 4096) body.writeUInt32LE((i * 2654435761) >>> 0, i);
    const pieces = Array.from({ length: Math.ceil(body.length / 100_000) }, (_, i) =>
      body.subarray(i * 100_000, (i + 1) * 100_000),
    );
    await store.complete(
      job.id,
      {
        status: 201,
        headers: [
          ['Content-Type', 'application/octet-stream'],
          ['X-Report', 'q3'],
          ['Set-Cookie', 'a=1'],
          ['Set-Cookie', 'b=2'],
          ['Keep-Alive', 'timeout=5'],
          ['Transfer-Encoding', 'chunked'],
          ['Content-Length', '1'],
        ],
      },
      Readable.from(pieces),
    );
    const res = await fetch(`${base}/${job.id}/result`);
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('content-type'), 'application/octet-stream');
    assert.equal(res.headers.get('x-report'), 'q3');
    assert.deepEqual(res.headers.getSetCookie(), ['a=1', 'b=2']);
    assert.notEqual(res.headers.get('keep-alive'), 'timeout=5', 'hop-by-hop headers are not replayed');
    assert.equal(res.headers.get('content-length'), String(body.length));
    const got = Buffer.from(await res.arrayBuffer());
    assert.equal(got.length, body.length);
    assert.equal(
      createHash('sha256').update(got).digest('hex'),
      createHash('sha256').update(body).digest('hex'),
    );
    const head = await fetch(`${base}/${job.id}/result`, { method: 'HEAD' });
    assert.equal(head.status, 201);
    assert.equal(head.headers.get('content-length'), String(body.length));
  });

  test('409 job-not-final while running, with Retry-After', async () => {
    const job = await store.create(autoJob());
    const res = await fetch(`${base}/${job.id}/result`, { headers: { 'x-request-id': 'r-409' } });
    assert.equal(res.status, 409);
    assert.equal(res.headers.get('retry-after'), '1');
    assert.equal(res.headers.get('x-request-id'), 'r-409');
    const p = await problemOf(res);
    assert.equal(p.type, 'https://sluice.dev/problems/job-not-final');
    assert.equal(p.request_id, 'r-409');
  });

  test('410 job-cancelled for a cancelled job', async () => {
    const job = await store.create(autoJob());
    await store.cancel(job.id);
    const res = await fetch(`${base}/${job.id}/result`);
    assert.equal(res.status, 410);
    assert.equal((await problemOf(res)).type, 'https://sluice.dev/problems/job-cancelled');
  });

  const failures: [string, JobError, number, string | null][] = [
    [
      'upstream-timeout',
      {
        code: 'upstream-timeout',
        status: 504,
        phase: 'ttfb',
        timeout_ms: 30_000,
        detail: "upstream 'api' sent no response headers within 30s (ttfb) on route 'reports'",
        proxy_error: 'http_response_timeout',
      },
      504,
      'sluice; error=http_response_timeout',
    ],
    [
      'upstream-unreachable',
      {
        code: 'upstream-unreachable',
        status: 502,
        phase: 'connect',
        detail: "upstream 'api' refused the connection (connect) on route 'reports'",
        proxy_error: 'connection_refused',
      },
      502,
      'sluice; error=connection_refused',
    ],
    ['interrupted', { code: 'interrupted', status: 502, detail: 'the gateway stopped' }, 502, null],
    [
      'result-too-large',
      { code: 'result-too-large', status: 502, detail: 'too big', proxy_error: 'http_response_body_size' },
      502,
      'sluice; error=http_response_body_size',
    ],
  ];
  for (const [code, error, status, proxyStatus] of failures) {
    test(`a failed job replays the problem a synchronous request would have got: ${code}`, async () => {
      const job = await store.create(autoJob());
      await store.fail(job.id, error);
      const res = await fetch(`${base}/${job.id}/result`);
      assert.equal(res.status, status);
      if (proxyStatus) assert.equal(res.headers.get('proxy-status'), proxyStatus);
      const p = await problemOf(res);
      assert.equal(p.type, `https://sluice.dev/problems/${code}`);
      assert.equal(p.status, status);
      assert.equal(p.detail, error.detail);
      assert.equal(p.route, 'reports');
      assert.equal(p.phase, error.phase);
      assert.equal(p.timeout_ms, error.timeout_ms);
      assert.equal(p.attempts, 1);
    });
  }
});

describe('not found and owner binding', () => {
  const alice = { authorization: 'Bearer alice-token' };
  const bob = { authorization: 'Bearer bob-token' };

  test('a job with an owner is visible only with the same credentials; others get the unknown-id 404', async () => {
    const job = await store.create(autoJob({ owner_hash: ownerHash(alice) }));
    const mine = await fetch(`${base}/${job.id}`, { headers: alice });
    assert.equal(mine.status, 200);
    await mine.body?.cancel();

    const unknown = await fetch(`${base}/${newJobId()}`, { headers: alice });
    const reference = stable(await problemOf(unknown));
    assert.equal(unknown.status, 404);
    assert.equal(reference.type, 'https://sluice.dev/problems/job-not-found');
    for (const [what, headers, path] of [
      ['other bearer', bob, `/${job.id}`],
      ['no credentials', {}, `/${job.id}`],
      ['cookie instead', { cookie: 'Bearer alice-token' }, `/${job.id}`],
      ['result of foreign', bob, `/${job.id}/result`],
      ['malformed id', alice, '/not-a-job'],
    ] as const) {
      const res = await fetch(`${base}${path}`, { headers });
      assert.equal(res.status, 404, what);
      assert.deepEqual(headersOf(res), headersOf(unknown), what);
      assert.deepEqual(stable(await problemOf(res)), reference, what);
    }
    const foreignDelete = await fetch(`${base}/${job.id}`, { method: 'DELETE', headers: bob });
    assert.equal(foreignDelete.status, 404);
    await foreignDelete.body?.cancel();
    assert.equal((await store.get(job.id))?.status, 'running', 'a foreign DELETE changes nothing');
  });

  test('cookie-bound jobs and public jobs', async () => {
    const cookieJob = await store.create(autoJob({ owner_hash: ownerHash({ cookie: 'sid=1' }) }));
    assert.equal((await fetch(`${base}/${cookieJob.id}`, { headers: { cookie: 'sid=1' } })).status, 200);
    assert.equal((await fetch(`${base}/${cookieJob.id}`, { headers: { cookie: 'sid=2' } })).status, 404);
    const publicJob = await store.create(autoJob());
    assert.equal((await fetch(`${base}/${publicJob.id}`, { headers: bob })).status, 200);
    assert.equal((await fetch(`${base}/${publicJob.id}`)).status, 200);
  });
});

describe('cancel', () => {
  test('DELETE cancels a running job and calls the hook; again is 200; a finished job is 409', async () => {
    const job = await store.create(autoJob());
    const res = await fetch(`${base}/${job.id}`, { method: 'DELETE' });
    assert.equal(res.status, 200);
    assert.equal((await json(res)).status, 'cancelled');
    assert.deepEqual(cancelled.slice(-1), [job.id]);
    const again = await fetch(`${base}/${job.id}`, { method: 'DELETE' });
    assert.equal(again.status, 200);
    await again.body?.cancel();
    assert.equal(cancelled.filter((id) => id === job.id).length, 1, 'the hook runs once');

    const done = await store.create(autoJob());
    await store.complete(done.id, { status: 200, headers: [] }, Readable.from([Buffer.from('x')]));
    const late = await fetch(`${base}/${done.id}`, { method: 'DELETE' });
    assert.equal(late.status, 409);
    assert.equal((await problemOf(late)).type, 'https://sluice.dev/problems/job-final');
  });

  test('other methods: 405 with Allow', async () => {
    const job = await store.create(autoJob());
    const res = await fetch(`${base}/${job.id}`, { method: 'POST', body: 'x' });
    assert.equal(res.status, 405);
    assert.equal(res.headers.get('allow'), 'GET, HEAD, DELETE');
    await res.body?.cancel();
    const r2 = await fetch(`${base}/${job.id}/result`, { method: 'DELETE' });
    assert.equal(r2.status, 405);
    assert.equal(r2.headers.get('allow'), 'GET, HEAD');
    await r2.body?.cancel();
  });

  test('paths outside the prefix are not handled', async () => {
    const res = await fetch(`${api.url}/_sluice/jobsX/abc`);
    assert.equal(res.status, 418);
    await res.body?.cancel();
  });
});

test('the 202 of acceptedResponse, exactly', async () => {
  const res = await fetch(`${api.url}/accept`);
  assert.equal(res.status, 202);
  assert.equal(res.headers.get('location'), `${PREFIX}/Jabc`);
  assert.equal(res.headers.get('retry-after'), '2');
  assert.equal(res.headers.get('content-type'), 'application/json');
  assert.equal(res.headers.get('preference-applied'), 'respond-async');
  assert.equal(res.headers.get('x-request-id'), 'req-1');
  assert.equal(
    await res.text(),
    `{"id":"Jabc","status":"running","poll_url":"${PREFIX}/Jabc","retry_after":2}`,
  );
});

describe('queue worker against the demo upstream', () => {
  let demo: DemoUpstream;
  let worker: QueueWorker;
  before(async () => {
    demo = await startDemoUpstream({ port: 0 });
    const dead = await startHttpServer(() => {});
    await dead.close(); // a port that refuses connections
    const toDemo = httpDeliver({ baseUrl: demo.url, ttfbMs: 2_000 });
    const toDead = httpDeliver({ baseUrl: dead.url });
    worker = new QueueWorker({
      store,
      workers: 2,
      deliver: (job, signal) => (job.route === 'refused' ? toDead : toDemo)(job, signal),
      policyFor: (route) => ({ attempts: route === 'refused' ? 2 : 3 }),
      leaseMs: 2_000,
      pollMs: 20,
      backoffBaseMs: 20,
      backoffMaxMs: 50,
    });
    worker.start();
    abortHolder = (id) => worker.cancel(id);
  });
  after(async () => {
    abortHolder = () => {};
    await worker.stop(1_000);
    await demo.close();
  });

  const queued = (
    method: string,
    path: string,
    headers: [string, string][] = [],
    body?: Buffer,
    route = 'q',
  ): NewJob => ({
    id: newJobId(),
    route,
    mode: 'queue',
    status: 'queued',
    keep_ms: 60_000,
    max_result: 10 * MiB,
    idempotent:
      ['GET', 'PUT', 'DELETE', 'HEAD'].includes(method) || headers.some(([k]) => k === 'Idempotency-Key'),
    request: { method, path, headers, body },
  });

  async function finalOf(id: string): Promise<JobJson> {
    for (let i = 0; i < 20; i++) {
      const body = await json(await fetch(`${base}/${id}?wait=5s`));
      if (!['queued', 'running'].includes(body.status)) return body;
    }
    throw new Error(`job ${id} did not finish`);
  }

  test('delivers the stored request and replays the upstream answer', async () => {
    const payload = Buffer.from('{"report":"q3"}');
    const job = await store.create(
      queued(
        'POST',
        '/echo?x=1',
        [
          ['Content-Type', 'application/json'],
          ['Idempotency-Key', 'k1'],
        ],
        payload,
      ),
    );
    worker.nudge();
    const done = await finalOf(job.id);
    assert.equal(done.status, 'completed');
    assert.equal(done.attempts, 1);
    const res = await fetch(`${base}/${job.id}/result`);
    assert.equal(res.status, 200);
    const echo = (await res.json()) as {
      method: string;
      path: string;
      body_bytes: number;
      body_sha256: string;
      headers: Record<string, string>;
    };
    assert.equal(echo.method, 'POST');
    assert.equal(echo.path, '/echo?x=1');
    assert.equal(echo.body_bytes, payload.length);
    assert.equal(echo.body_sha256, createHash('sha256').update(payload).digest('hex'));
    assert.equal(echo.headers['idempotency-key'], 'k1');
  });

  test('a 503 is retried where safe; the last answer is the result', async () => {
    const safe = await store.create(queued('GET', '/status/503'));
    const unsafe = await store.create(queued('POST', '/status/503', [], Buffer.from('x')));
    worker.nudge();
    const s = await finalOf(safe.id);
    assert.equal(s.status, 'completed', 'the upstream answered: completed, whatever the status');
    assert.equal(s.attempts, 3);
    const r = await fetch(`${base}/${safe.id}/result`);
    assert.equal(r.status, 503);
    assert.equal(r.headers.get('retry-after'), '1');
    await r.body?.cancel();
    const u = await finalOf(unsafe.id);
    assert.equal(u.status, 'completed');
    assert.equal(u.attempts, 1, 'a POST without Idempotency-Key is sent once');
  });

  test('connection refused: retried (nothing was sent), then failed upstream-unreachable', async () => {
    const job = await store.create(queued('POST', '/x', [], Buffer.from('x'), 'refused'));
    worker.nudge();
    const f = await finalOf(job.id);
    assert.equal(f.status, 'failed');
    assert.equal(f.attempts, 2, 'retried although POST: the request never left');
    assert.equal(f.error?.code, 'upstream-unreachable');
    assert.equal(f.error?.phase, 'connect');
    const res = await fetch(`${base}/${job.id}/result`);
    assert.equal(res.status, 502);
    assert.equal(res.headers.get('proxy-status'), 'sluice; error=connection_refused');
    await res.body?.cancel();
  });

  test('DELETE aborts a delivery in progress (the upstream sees its connection close)', async () => {
    const job = await store.create(queued('GET', '/hang'));
    const aborted = new Promise((r) => demo.events.once('aborted', r));
    const arrived = new Promise((r) => demo.events.once('request', r));
    worker.nudge();
    await arrived;
    const res = await fetch(`${base}/${job.id}`, { method: 'DELETE' });
    assert.equal((await json(res)).status, 'cancelled');
    await aborted;
    assert.equal((await store.get(job.id))?.status, 'cancelled');
    assert.equal(worker.inflight, 0);
  });
});

describe('completion webhooks', () => {
  const secret = 'a-secret-of-at-least-16-chars';
  let receiver: TestServer;
  const received: { headers: http.IncomingHttpHeaders; body: string; path: string }[] = [];
  const arrivals: ((v: unknown) => void)[] = [];
  before(async () => {
    receiver = await startHttpServer((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (c: Buffer) => parts.push(c));
      req.on('end', () => {
        received.push({ headers: req.headers, body: Buffer.concat(parts).toString(), path: req.url ?? '' });
        res.end('ok');
        for (const a of arrivals.splice(0)) a(undefined);
      });
    });
  });
  after(() => receiver.close());

  test('a finished job is POSTed to its allowed callback URL, signed', async (t) => {
    const policy: CallbackPolicy = { allow: [`http://127.0.0.1:${receiver.port}/hooks/`], secret };
    const sender = new CallbackSender({ policyFor: () => policy, prefix: PREFIX, backoffMs: 10 });
    const detach = sender.attach(store);
    t.after(async () => {
      detach();
      await sender.close();
    });
    const url = callbackUrlFor(`http://127.0.0.1:${receiver.port}/hooks/done?j=1`, policy);
    assert.ok(url);
    const job = await store.create(autoJob({ callback_url: url }));
    const arrived = new Promise((r) => arrivals.push(r));
    await store.complete(job.id, { status: 200, headers: [] }, Readable.from([Buffer.from('x')]));
    await arrived;
    const hit = received.at(-1);
    assert.ok(hit);
    assert.equal(hit.path, '/hooks/done?j=1');
    assert.equal(hit.headers['content-type'], 'application/json');
    assert.equal(hit.headers['sluice-job-id'], job.id);
    const sig = hit.headers['sluice-signature'] as string;
    assert.match(sig, /^t=\d+,v1=[0-9a-f]{64}$/);
    assert.equal(verifySignature(secret, sig, hit.body), true);
    assert.equal(verifySignature('another-secret-of-16+', sig, hit.body), false);
    assert.equal(verifySignature(secret, sig, `${hit.body} `), false);
    const body = JSON.parse(hit.body) as JobJson;
    assert.equal(body.id, job.id);
    assert.equal(body.status, 'completed');
    assert.equal(body.result_url, `${PREFIX}/${job.id}/result`);
  });

  test('SSRF: a URL off the allow-list, or an allowed name resolving to loopback, is refused', async (t) => {
    const lookups: string[] = [];
    const lookup: LookupFn = (host, _opts, cb) => {
      lookups.push(host);
      if (host === 'hooks.example.test') cb(null, [{ address: '127.0.0.1', family: 4 }]);
      else cb(Object.assign(new Error(`ENOTFOUND ${host}`), { code: 'ENOTFOUND' }), []);
    };
    const policy: CallbackPolicy = {
      allow: [`http://127.0.0.1:${receiver.port}/hooks/`, `http://hooks.example.test:${receiver.port}/`],
      secret,
    };
    const sender = new CallbackSender({ policyFor: () => policy, prefix: PREFIX, lookup, backoffMs: 10 });
    t.after(() => sender.close());
    const before = received.length;

    // localhost is loopback too, but the allow-list names 127.0.0.1 only.
    const localhost = `http://localhost:${receiver.port}/hooks/x`;
    assert.equal(callbackUrlFor(localhost, policy), undefined);
    const job1 = await store.create(autoJob({ callback_url: localhost }));
    assert.equal(await sender.send({ ...job1, status: 'completed' }), 'refused');

    // A name on the allow-list whose DNS answers loopback: refused at connect time.
    const sneaky = `http://hooks.example.test:${receiver.port}/x`;
    assert.equal(callbackUrlFor(sneaky, policy), sneaky, 'the URL itself is allowed');
    const job2 = await store.create(autoJob({ callback_url: sneaky }));
    assert.equal(await sender.send({ ...job2, status: 'completed' }), 'refused');
    assert.deepEqual(lookups, ['hooks.example.test'], 'checked on the resolved address');

    // Tricks on the URL itself.
    for (const trick of [
      `http://127.0.0.1:${receiver.port}@evil.example/hooks/`,
      `http://127.0.0.1:${receiver.port}/hooksX`,
      `https://127.0.0.1:${receiver.port}/hooks/`,
      'file:///etc/passwd',
    ]) {
      assert.equal(callbackUrlFor(trick, policy), undefined, trick);
    }
    assert.equal(received.length, before, 'nothing reached the receiver');
  });
});
