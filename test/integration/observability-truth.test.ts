/**
 * Regression tests of issue 15's observability defects through a real gateway, real upstreams and a
 * real webhook receiver: headroom against the limit that fires first (ttfb), client budgets that
 * never page anyone, target_down alerts with signed webhooks, and the metrics an operator expects
 * (per target, retries, ejections, jobs by route, reloads, build info, process).
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, type TestContext, test } from 'node:test';
import { loadConfigText } from '../../src/config/load.ts';
import { startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import type { AlertNotification } from '../../src/observability/alerts.ts';
import { sleep, startTestGateway } from '../helpers.ts';

interface Hook {
  body: string;
  signature: string | undefined;
  n: AlertNotification;
}

async function receiver(t: TestContext) {
  const got: Hook[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      got.push({
        body,
        signature: req.headers['sluice-signature'] as string | undefined,
        n: JSON.parse(body) as AlertNotification,
      });
      res.end('ok');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const next = async (pred: (h: Hook) => boolean, ms: number): Promise<Hook> => {
    const end = performance.now() + ms;
    for (;;) {
      const h = got.find(pred);
      if (h) return h;
      if (performance.now() > end)
        throw new Error(`no notification within ${ms}ms: ${got.map((g) => g.n.text)}`);
      await sleep(50);
    }
  };
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`, got, next };
}

/** What a receiver does with only node:crypto (the documented check). */
function verify(secret: string, header: string, body: string): boolean {
  const parts = Object.fromEntries(header.split(',').map((p) => p.split('=', 2) as [string, string]));
  const mac = createHmac('sha256', secret).update(`${parts.t}.${body}`).digest('hex');
  return mac === parts.v1 && Math.abs(Date.now() / 1000 - Number(parts.t)) < 300;
}

async function metrics(port: number | undefined): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`)))
      return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

describe('headroom against the limit that fires first', () => {
  test('ttfb 900ms / total 2s: 630 ms requests are ~70% headroom and a p95 > 50% rule fires', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const hook = await receiver(t);
    const gw = await startTestGateway(
      `
upstreams: { demo: { targets: ["${demo.url}"] } }
routes:
  - { name: api, match: { path: / }, upstream: demo, timeouts: { ttfb: 900ms, total: 2s } }
alerts:
  webhook: ${hook.url}
  window: 10s
  min_requests: 4
  rules:
    - { name: headroom, when: p95 > 50% of timeout, for: 0s }
`,
      { admin: true },
    );
    t.after(() => gw.close());
    // 270 ms of margin below ttfb, so that a loaded machine's scheduling delay is not a timeout.
    for (let i = 0; i < 6; i++) assert.equal((await fetch(gw.url('/slow?ms=630'))).status, 200);
    const text = await metrics(gw.sluice.adminPort);
    const ratio = metric(text, 'sluice_route_headroom_ratio', { route: 'api', limit: 'ttfb' }) as number;
    assert.ok(ratio > 0.65 && ratio < 1.0, `headroom ${ratio}`);
    const fired = await hook.next((h) => h.n.state === 'firing', 5_000);
    assert.equal(fired.n.timeout_ms, 900);
    assert.equal(fired.n.timeout_phase, 'ttfb');
    assert.match(fired.n.text, /of its ttfb 900ms timeout/);
  });
});

describe('a client budget never pages anyone', () => {
  test('25 requests with x-timeout-ms: 1 fire no timeout or error alert and leave headroom alone', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const hook = await receiver(t);
    const gw = await startTestGateway(
      `
upstreams: { demo: { targets: ["${demo.url}"] } }
routes:
  - { name: api, match: { path: / }, upstream: demo, timeouts: { total: 2s } }
alerts:
  webhook: ${hook.url}
  window: 10s
  min_requests: 5
  rules:
    - { name: timeouts, when: timeout_rate > 1%, for: 0s }
    - { name: errors, when: error_rate > 1%, for: 0s }
    - { name: headroom, when: p95 > 50% of timeout, for: 0s }
`,
      { admin: true },
    );
    t.after(() => gw.close());
    for (let i = 0; i < 5; i++) await (await fetch(gw.url('/fast'))).arrayBuffer();
    for (let i = 0; i < 25; i++) {
      const res = await fetch(gw.url('/slow?ms=100'), { headers: { 'x-timeout-ms': '1' } });
      assert.equal(res.status, 504);
      await res.arrayBuffer();
    }
    await sleep(2_200); // two alert rounds
    assert.deepEqual(
      hook.got.map((h) => h.n.text),
      [],
    );
    const w = gw.sluice.observability.window('api');
    assert.equal(w?.count, 5, 'only the requests the route answered count');
    assert.equal(w?.timeouts, 0);
    const text = await metrics(gw.sluice.adminPort);
    assert.equal(metric(text, 'sluice_client_budget_exceeded_total', { route: 'api' }), 25);
    assert.equal(metric(text, 'sluice_timeouts_total', { route: 'api' }), undefined);
    // A real slow upstream still alerts.
    for (let i = 0; i < 5; i++) await (await fetch(gw.url('/slow?ms=2500'))).arrayBuffer();
    const fired = await hook.next((h) => h.n.alert === 'timeouts' && h.n.state === 'firing', 5_000);
    assert.match(fired.n.text, /timed out/);
  });
});

describe('target_down and signed webhooks', () => {
  test('a target failing its health check fires target_down naming it, signed; recovery resolves it', async (t) => {
    const good = await startDemoUpstream({ port: 0 });
    const bad = await startDemoUpstream({ port: 0 });
    t.after(async () => {
      await good.close();
      await bad.close();
    });
    const hook = await receiver(t);
    const secret = 'alert-secret-0123456789';
    const gw = await startTestGateway(
      `
upstreams:
  api:
    targets: ["${good.url}", "${bad.url}"]
    health: { path: /healthz, interval: 200ms, timeout: 150ms, unhealthy_after: 1, healthy_after: 1 }
routes:
  - { name: api, match: { path: / }, upstream: api }
alerts:
  webhook: ${hook.url}
  secret: ${secret}
  rules:
    - { name: down, when: target_down, for: 0s }
`,
      { admin: true },
    );
    t.after(() => gw.close());
    await sleep(500);
    assert.equal(hook.got.length, 0, 'nothing fires while every target is healthy');
    await fetch(`${bad.url}/_demo/health/down`, { method: 'POST' });
    const fired = await hook.next((h) => h.n.state === 'firing', 5_000);
    assert.equal(fired.n.upstream, 'api');
    assert.deepEqual(fired.n.targets_down, [bad.url]);
    assert.match(
      fired.n.text,
      new RegExp(`^🔴 FIRING down on upstream 'api': 1 target\\(s\\) down: ${bad.url}`),
    );
    assert.ok(fired.signature, 'signed');
    assert.ok(verify(secret, fired.signature as string, fired.body), 'the signature verifies');
    assert.ok(!verify('another-secret-0123456', fired.signature as string, fired.body));
    const text = await metrics(gw.sluice.adminPort);
    assert.equal(metric(text, 'sluice_alerts_firing', { rule: 'down', upstream: 'api' }), 1);
    await fetch(`${bad.url}/_demo/health/up`, { method: 'POST' });
    const resolved = await hook.next((h) => h.n.state === 'resolved', 5_000);
    assert.match(resolved.n.text, /every target is back/);
  });
});

describe('the metrics an operator expects', () => {
  test('per target, retries, ejections, jobs by route, reloads, build info and the process', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const dir = mkdtempSync(join(tmpdir(), 'sluice-obs-'));
    const yaml = `
store: sqlite:${join(dir, 'jobs.db')}
upstreams:
  demo:
    targets: ["${demo.url}", "http://127.0.0.1:1"]
    balance: round-robin
    outlier: { consecutive_failures: 1, base_ejection: 30s }
routes:
  - name: jobs
    match: { path: /slow }
    upstream: demo
    async: { mode: auto, after: 100ms }
  - name: api
    match: { path: / }
    upstream: demo
    retry: { attempts: 2, on: [connect] }
`;
    const gw = await startTestGateway(yaml, { admin: true });
    t.after(() => gw.close());
    for (let i = 0; i < 4; i++) assert.equal((await fetch(gw.url('/fast'))).status, 200);
    const accepted = await fetch(gw.url('/slow?ms=300'));
    assert.equal(accepted.status, 202);
    const job = (await accepted.json()) as { id: string };
    await gw.log.next((e) => e.job === job.id && e.outcome === 'job_completed');
    await gw.sluice.gateway.jobs?.store.get(job.id);
    gw.sluice.reload(
      loadConfigText(`listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\n${yaml}`, 'x.yaml'),
    );
    gw.sluice.observability.reloadFailed();
    await sleep(5_500); // the job counts are refreshed every 5 s

    const text = await metrics(gw.sluice.adminPort);
    assert.ok(
      (metric(text, 'sluice_upstream_requests_total', {
        upstream: 'demo',
        target: demo.url,
        status: '200',
      }) ?? 0) >= 4,
    );
    assert.ok(
      (metric(text, 'sluice_upstream_request_duration_seconds_count', {
        upstream: 'demo',
        target: demo.url,
      }) ?? 0) >= 4,
    );
    assert.ok(
      (metric(text, 'sluice_upstream_retries_total', { upstream: 'demo' }) ?? 0) >= 1,
      'the refused target was retried',
    );
    assert.equal(
      metric(text, 'sluice_upstream_ejections_total', { upstream: 'demo', target: 'http://127.0.0.1:1' }),
      1,
    );
    assert.equal(metric(text, 'sluice_jobs_finished_total', { route: 'jobs', outcome: 'job_completed' }), 1);
    assert.equal(
      metric(text, 'sluice_job_duration_seconds_count', { route: 'jobs', outcome: 'job_completed' }),
      1,
    );
    assert.equal(metric(text, 'sluice_jobs', { route: 'jobs', status: 'completed' }), 1);
    assert.equal(metric(text, 'sluice_config_reloads_total', { result: 'success' }), 1);
    assert.equal(metric(text, 'sluice_config_reloads_total', { result: 'failure' }), 1);
    assert.equal(metric(text, 'sluice_config_last_reload_success'), 0);
    assert.ok((metric(text, 'sluice_config_last_reload_timestamp_seconds') ?? 0) > Date.now() / 1000 - 60);
    assert.equal(metric(text, 'sluice_build_info', { node: process.version }), 1);
    assert.match(text, /^sluice_build_info\{version="\d+\.\d+\.\d+",node="v\d+/m);
    for (const name of [
      'sluice_process_cpu_seconds_total',
      'sluice_process_resident_memory_bytes',
      'sluice_nodejs_eventloop_lag_p99_seconds',
      'sluice_process_open_fds',
      'sluice_nodejs_heap_size_used_bytes',
    ])
      assert.ok(metric(text, name) !== undefined, name);
    assert.match(text, /^# TYPE sluice_nodejs_gc_duration_seconds histogram$/m);
  });
});
