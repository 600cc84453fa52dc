/**
 * Regression tests of issue 15's data-plane defects, through a real gateway, real upstream sockets and
 * a real SQLite job store: a client's own short budget never counts against the upstream; the
 * upstream is told the deadline that then fires; async.timeout fires on time with its own figures;
 * jobs are visible in the access log; a drain that runs out of time answers 503 shutting-down.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { problemOf, sleep, startHttpServer, startTestGateway, type TestServer } from '../helpers.ts';

interface Seen {
  path: string;
  timeoutMs: number | undefined;
  aborted: boolean;
  at: number;
}

/** An upstream that answers `/ok` at once, `/slow/N` after N ms, `/hang` never; records what it saw. */
async function recordingUpstream(): Promise<TestServer & { seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = await startHttpServer((req: IncomingMessage, res) => {
    const h = req.headers['x-timeout-ms'];
    const s: Seen = {
      path: req.url ?? '',
      timeoutMs: h === undefined ? undefined : Number(h),
      aborted: false,
      at: performance.now(),
    };
    seen.push(s);
    res.on('close', () => {
      if (!res.writableFinished) s.aborted = true;
    });
    const url = req.url ?? '/';
    if (url === '/ok') return res.end('ok');
    if (url === '/fail') {
      res.writeHead(503);
      return res.end('down');
    }
    const m = /^\/slow\/(\d+)/.exec(url);
    if (m) {
      const timer = setTimeout(() => res.end('slow'), Number(m[1]));
      res.on('close', () => clearTimeout(timer));
    }
    // /hang: never answers
  });
  return Object.assign(server, { seen });
}

describe('a client budget never counts against the upstream', () => {
  test('25 requests with x-timeout-ms: 1 leave the circuit closed; a real outage still opens it', async (t) => {
    const up = await recordingUpstream();
    const gw = await startTestGateway(`
upstreams:
  api:
    targets: ["${up.url}"]
    circuit: { error_rate: 50%, min_requests: 20, window: 10s, open_for: 30s }
routes:
  - { name: api, match: { path: / }, upstream: api }
`);
    t.after(async () => {
      await gw.close();
      await up.close();
    });
    for (let i = 0; i < 25; i++) {
      const res = await fetch(gw.url('/slow/200'), { headers: { 'x-timeout-ms': '1' } });
      assert.equal(res.status, 504);
      const p = await problemOf(res);
      assert.match(p.type, /\/(upstream-timeout|budget-exhausted)$/);
      const e = await gw.entry(p.request_id);
      assert.equal(e.budget_source, 'client');
      assert.equal(e.budget_ms, 1);
    }
    assert.equal(gw.sluice.gateway.runtime.upstreams.get('api')?.circuitState(), 'closed');
    const ok = await fetch(gw.url('/ok'));
    assert.equal(ok.status, 200, 'other requests still go through');
    assert.equal(await ok.text(), 'ok');
    // A real outage (the upstream answers 503) opens the circuit.
    for (let i = 0; i < 25; i++) await (await fetch(gw.url('/fail'))).arrayBuffer();
    assert.equal(gw.sluice.gateway.runtime.upstreams.get('api')?.circuitState(), 'open');
    const refused = await fetch(gw.url('/ok'));
    assert.equal(refused.status, 503);
    assert.match((await problemOf(refused)).type, /circuit-open$/);
  });
});

describe('x-timeout-ms is the deadline that fires', () => {
  test('ttfb below total: the upstream is told ttfb and the 504 comes at ttfb', async (t) => {
    const up = await recordingUpstream();
    const gw = await startTestGateway(`
upstreams:
  api: { targets: ["${up.url}"] }
routes:
  - { name: api, match: { path: / }, upstream: api, timeouts: { ttfb: 400ms, total: 2s } }
`);
    t.after(async () => {
      await gw.close();
      await up.close();
    });
    const t0 = performance.now();
    const res = await fetch(gw.url('/hang'));
    const took = performance.now() - t0;
    const p = await problemOf(res);
    assert.equal(res.status, 504);
    assert.equal(p.phase, 'ttfb');
    assert.equal(p.timeout_ms, 400);
    const told = up.seen[0].timeoutMs as number;
    assert.ok(told <= 400 && told >= 380, `the upstream was told ${told}`);
    assert.ok(took >= 395 && took < 400 + 250, `fired at ${took}ms`);
    await sleep(50);
    assert.ok(up.seen[0].aborted, 'the upstream request was aborted');
  });

  test('total below ttfb: the upstream is told what is left of total', async (t) => {
    const up = await recordingUpstream();
    const gw = await startTestGateway(`
upstreams:
  api: { targets: ["${up.url}"] }
routes:
  - { name: api, match: { path: / }, upstream: api, timeouts: { ttfb: 5s, total: 300ms } }
`);
    t.after(async () => {
      await gw.close();
      await up.close();
    });
    const res = await fetch(gw.url('/hang'));
    const p = await problemOf(res);
    assert.equal(p.phase, 'total');
    const told = up.seen[0].timeoutMs as number;
    assert.ok(told <= 300 && told >= 280, `the upstream was told ${told}`);
  });
});

describe('async jobs run under async.timeout', () => {
  test('the upstream is told the job budget; async.timeout fires on time with its own figures; every job request is logged', async (t) => {
    const up = await recordingUpstream();
    const dir = mkdtempSync(join(tmpdir(), 'sluice-truth-'));
    const gw = await startTestGateway(`
store: sqlite:${join(dir, 'jobs.db')}
upstreams:
  api: { targets: ["${up.url}"] }
routes:
  - name: slow
    match: { path: / }
    upstream: api
    timeouts: { total: 5s }
    async: { mode: auto, after: 200ms, timeout: 1s }
`);
    t.after(async () => {
      await gw.close();
      await up.close();
    });
    const t0 = performance.now();
    const res = await fetch(gw.url('/slow/10000'));
    assert.equal(res.status, 202);
    const accepted = (await res.json()) as { id: string; poll_url: string };
    const requestId = res.headers.get('x-request-id') as string;
    const told = up.seen[0].timeoutMs as number;
    assert.ok(told <= 1000 && told >= 980, `the upstream was told the job budget, got ${told}`);
    const line202 = await gw.entry(requestId);
    assert.equal(line202.status, 202);
    assert.equal(line202.job, accepted.id);

    // The job ends at async.timeout (1 s after arrival), not at the route's 5 s total.
    const end = await gw.log.next((e) => e.outcome === 'job_failed' && e.job === accepted.id);
    const endedAt = performance.now() - t0;
    assert.ok(endedAt >= 995 && endedAt < 1_000 + 400, `job failed at ${endedAt}ms`);
    assert.equal(end.request_id, requestId, 'the job line carries the original request id');
    assert.equal(end.route, 'slow');
    assert.equal(end.status, 504);
    assert.equal(end.phase, 'total');
    assert.equal(end.error, 'upstream-timeout');
    assert.ok(end.total >= 990 && end.total < 1_400, `job total ${end.total}`);
    await sleep(50);
    assert.ok(up.seen[0].aborted, 'the upstream call was aborted at async.timeout');

    const status = await fetch(gw.url(accepted.poll_url));
    const job = (await status.json()) as { status: string; error: { timeout_ms: number; detail: string } };
    assert.equal(job.status, 'failed');
    assert.equal(job.error.timeout_ms, 1000);
    assert.match(job.error.detail, /within 1s \(async\.timeout\)/);
    const pollLine = await gw.entry(status.headers.get('x-request-id') as string);
    assert.equal(pollLine.job, accepted.id);
    assert.equal(pollLine.status, 200);
    assert.equal(pollLine.route, null);

    const result = await fetch(gw.url(`${accepted.poll_url}/result`));
    assert.equal(result.status, 504);
    const rp = await problemOf(result);
    assert.equal(rp.timeout_ms, 1000);
    assert.equal((await gw.entry(result.headers.get('x-request-id') as string)).status, 504);

    const missing = await fetch(gw.url('/_sluice/jobs/J0000000000000000000000000'));
    assert.equal(missing.status, 404);
    const missingLine = await gw.entry(missing.headers.get('x-request-id') as string);
    assert.equal(missingLine.error, 'job-not-found');
    assert.equal(missingLine.outcome, 'rejected');

    const post = await fetch(gw.url(accepted.poll_url), { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal((await gw.entry(post.headers.get('x-request-id') as string)).error, 'method-not-allowed');
  });

  test('a cancelled and a completed job each write their end line; a Callback-Url off the allow-list is said', async (t) => {
    const up = await recordingUpstream();
    const dir = mkdtempSync(join(tmpdir(), 'sluice-truth-'));
    const gw = await startTestGateway(`
store: sqlite:${join(dir, 'jobs.db')}
upstreams:
  api: { targets: ["${up.url}"] }
routes:
  - name: slow
    match: { path: / }
    upstream: api
    async: { mode: auto, after: 100ms, callback: { allow: ["http://127.0.0.1:1/hooks/"], secret: "0123456789abcdef0123" } }
`);
    t.after(async () => {
      await gw.close();
      await up.close();
    });
    const a = await fetch(gw.url('/slow/400'), { headers: { 'callback-url': 'http://example.com/x' } });
    assert.equal(a.status, 202);
    assert.match(
      a.headers.get('sluice-callback') ?? '',
      /^refused; reason="the URL is not in async\.callback\.allow"$/,
    );
    const ja = (await a.json()) as { id: string; poll_url: string };
    const done = await gw.log.next((e) => e.job === ja.id && e.outcome === 'job_completed');
    assert.equal(done.status, 200);
    assert.equal(done.request_id, a.headers.get('x-request-id'));
    assert.equal(done.bytes_out, 4);

    const b = await fetch(gw.url('/hang'));
    const jb = (await b.json()) as { id: string; poll_url: string };
    const del = await fetch(gw.url(jb.poll_url), { method: 'DELETE' });
    assert.equal(del.status, 200);
    const cancelled = await gw.log.next((e) => e.job === jb.id && e.outcome === 'job_cancelled');
    assert.equal(cancelled.route, 'slow');
    assert.equal((await gw.entry(del.headers.get('x-request-id') as string)).method, 'DELETE');
    await sleep(50);
    assert.ok(up.seen.find((s) => s.path === '/hang')?.aborted, 'the cancelled call was aborted');
  });
});

describe('a drain that runs out of time', () => {
  test('answers 503 shutting-down before headers and cuts a begun response, both logged as shutdown', async (t) => {
    const up = await startHttpServer((req, res) => {
      if (req.url === '/stall') {
        res.writeHead(200, { 'content-length': '100' });
        res.write('partial');
      }
      // /hang: nothing
    });
    t.after(() => up.close());
    const gw = await startTestGateway(`
upstreams:
  api: { targets: ["${up.url}"] }
routes:
  - { name: api, match: { path: / }, upstream: api, timeouts: { total: 0s, read: 0s, ttfb: 0s } }
`);
    const hang = fetch(gw.url('/hang'));
    const stall = await fetch(gw.url('/stall'));
    assert.equal(stall.status, 200);
    const stallBody = stall.text().then(
      () => 'complete',
      () => 'cut',
    );
    await sleep(100);
    const closing = gw.sluice.close(300);
    const res = await hang;
    assert.equal(res.status, 503);
    assert.equal(res.headers.get('retry-after'), '1');
    const p = await problemOf(res);
    assert.match(p.type, /shutting-down$/);
    assert.equal(await stallBody, 'cut', 'the begun response is cut, never complete-looking');
    await closing;
    const shutdown = gw.log.entries.filter((e) => e.outcome === 'shutdown');
    assert.equal(shutdown.length, 2);
    assert.deepEqual(shutdown.map((e) => e.status).sort(), [200, 503]);
    assert.equal(gw.log.entries.filter((e) => e.outcome === 'client_aborted').length, 0);
  });
});
