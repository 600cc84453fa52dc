/**
 * The read side of the admin API through real sockets: routes and upstreams with their effective
 * settings and live figures, what-if budgets, the running config, and the token rules.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { loadConfigText } from '../../src/config/load.ts';
import { startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import { sleep, startTestGateway } from '../helpers.ts';

interface RouteJson {
  name: string;
  match: { path: string; host: string | null; methods: string[] | null };
  upstream: string;
  timeouts: Record<string, number>;
  timeout_layers: Record<string, string>;
  async: { mode: string; after_ms?: number };
  retry: unknown;
  cache: unknown;
  stats: {
    window_s: number;
    requests: number;
    rps: number;
    p50_ms: number;
    p95_ms: number;
    p99_ms: number;
    headroom: number | null;
    timeouts: Record<string, number>;
    errors: number;
    statuses: Record<string, number>;
    server_timing: Record<string, number>;
  };
}

describe('admin API (read side)', () => {
  test('routes, one route with layers and window figures, upstreams, what-if and config', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const gw = await startTestGateway(
      `
defaults: { timeouts: { connect: 2s } }
upstreams:
  demo: { targets: ["${demo.url}"], timeouts: { ttfb: 20s } }
routes:
  - name: api
    match: { path: /, methods: [GET] }
    upstream: demo
    timeouts: { total: 500ms }
    retry: { attempts: 2, on: [connect] }
alerts: { window: 10s }
`,
      { admin: true },
    );
    t.after(() => gw.close());
    const admin = `http://127.0.0.1:${gw.sluice.adminPort}`;
    for (let i = 0; i < 8; i++) await (await fetch(gw.url('/fast'))).arrayBuffer();
    for (let i = 0; i < 2; i++) await (await fetch(gw.url('/timing'))).arrayBuffer();
    await (await fetch(gw.url('/status/503'))).arrayBuffer();
    await (await fetch(gw.url('/slow?ms=300'))).arrayBuffer();
    const timedOut = await fetch(gw.url('/hang'));
    assert.equal(timedOut.status, 504);
    await timedOut.arrayBuffer();

    const list = await fetch(`${admin}/api/routes`);
    assert.equal(list.status, 200);
    assert.equal(list.headers.get('cache-control'), 'no-store');
    const { routes } = (await list.json()) as { routes: RouteJson[] };
    assert.deepEqual(
      routes.map((r) => r.name),
      ['api'],
    );

    const one = (await (await fetch(`${admin}/api/routes/api`)).json()) as RouteJson;
    assert.deepEqual(one.match, { path: '/', host: null, methods: ['GET'], headers: null });
    assert.equal(one.upstream, 'demo');
    assert.deepEqual(one.timeouts, { connect: 2000, send: 30000, ttfb: 20000, read: 60000, total: 500 });
    assert.deepEqual(one.timeout_layers, {
      connect: 'defaults',
      send: 'defaults',
      ttfb: 'upstream',
      read: 'defaults',
      total: 'route',
    });
    assert.deepEqual(one.async, { mode: 'off' });
    assert.equal(one.cache, null);
    assert.ok(one.retry);
    const s = one.stats;
    assert.equal(s.window_s, 10);
    assert.equal(s.requests, 13);
    assert.deepEqual(s.statuses, { '200': 11, '503': 1, '504': 1 });
    assert.equal(s.timeouts.total, 1);
    assert.equal(s.timeouts.ttfb, 0);
    assert.ok(s.errors >= 2, String(s.errors));
    assert.ok(s.rps > 0);
    assert.ok(s.p99_ms >= 450, `p99 ${s.p99_ms} counts the timeout at its budget`);
    assert.ok(s.headroom !== null && s.headroom > 0);
    assert.deepEqual(Object.keys(s.server_timing).sort(), ['db', 'ext', 'transform']);
    for (const ms of Object.values(s.server_timing)) assert.ok(ms > 0);

    const missing = await fetch(`${admin}/api/routes/nope`);
    assert.equal(missing.status, 404);
    assert.match(missing.headers.get('content-type') ?? '', /^application\/problem\+json/);
    assert.match(((await missing.json()) as { detail: string }).detail, /no route named 'nope'/);

    // What-if: with a 200 ms budget the 300 ms request and the timed-out one would have been cut.
    const wi = await fetch(`${admin}/api/routes/api/what-if?total=200ms`);
    assert.equal(wi.status, 200);
    const w = (await wi.json()) as {
      route: string;
      requests: number;
      current: { total_ms: number; timeout_share: number };
      proposed: { total_ms: number; timeout_share: number; async_share: number };
    };
    assert.equal(w.route, 'api');
    assert.equal(w.requests, 13);
    assert.equal(w.current.total_ms, 500);
    assert.equal(w.current.timeout_share, Math.round((1 / 13) * 10_000) / 10_000);
    assert.equal(w.proposed.total_ms, 200);
    assert.equal(w.proposed.timeout_share, Math.round((2 / 13) * 10_000) / 10_000);
    const withJobs = (await (
      await fetch(`${admin}/api/routes/api/what-if?total=10s&async_after=250ms`)
    ).json()) as {
      proposed: { timeout_share: number; async_share: number };
    };
    assert.equal(withJobs.proposed.timeout_share, 0);
    assert.equal(withJobs.proposed.async_share, Math.round((2 / 13) * 10_000) / 10_000);
    assert.equal((await fetch(`${admin}/api/routes/api/what-if?total=soon`)).status, 400);

    // Timeline: the last 15 minutes in 30 s slots, this traffic in the newest ones, the budget beside.
    const tl = (await (await fetch(`${admin}/api/routes/api/timeline`)).json()) as {
      slot_s: number;
      budget: { total_ms: number; limit: { phase: string; ms: number } };
      points: { at: string; requests: number; timeouts: number; p95_ms: number }[];
    };
    assert.equal(tl.slot_s, 30);
    assert.equal(tl.points.length, 30);
    assert.deepEqual(tl.budget.limit, { phase: 'total', ms: 500 });
    assert.equal(
      tl.points.reduce((n, p) => n + p.requests, 0),
      13,
    );
    assert.equal(
      tl.points.reduce((n, p) => n + p.timeouts, 0),
      1,
    );
    const times = tl.points.map((p) => Date.parse(p.at));
    assert.ok(times.every((x, i) => i === 0 || x - times[i - 1] === 30_000));
    assert.ok(Math.abs(times[29] - Date.now()) <= 31_000, 'the newest slot is now');

    // Recent slow or failed requests, newest first, with their request ids.
    const recent = (await (await fetch(`${admin}/api/routes/api/requests`)).json()) as {
      requests: { request_id: string; status: number; outcome: string; kept: string; phase: string | null }[];
    };
    assert.deepEqual(
      recent.requests.map((r) => [r.status, r.kept]),
      [
        [504, 'failed'],
        [503, 'failed'],
      ],
    );
    assert.equal(recent.requests[0].phase, 'total');
    assert.match(recent.requests[0].request_id, /\S{8,}/);
    assert.equal((await fetch(`${admin}/api/routes/api/nothing`)).status, 404);

    const ups = (await (await fetch(`${admin}/api/upstreams`)).json()) as {
      upstreams: {
        name: string;
        circuit: string;
        targets: { url: string; health: string; ejected: boolean }[];
      }[];
    };
    assert.equal(ups.upstreams[0].name, 'demo');
    assert.equal(ups.upstreams[0].circuit, 'closed');
    assert.deepEqual(
      ups.upstreams[0].targets.map((x) => [x.url, x.health, x.ejected]),
      [[demo.url, 'unknown', false]],
    );
    assert.equal((await fetch(`${admin}/api/upstreams/demo`)).status, 200);
    assert.equal((await fetch(`${admin}/api/upstreams/other`)).status, 404);

    const cfg = (await (await fetch(`${admin}/api/config`)).json()) as {
      source: string;
      loaded_at: string;
      config: { routes: { name: string }[] };
    };
    assert.equal(cfg.source, 'inline');
    assert.ok(Date.parse(cfg.loaded_at) <= Date.now());
    assert.equal(cfg.config.routes[0].name, 'api');

    const post = await fetch(`${admin}/api/routes`, { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
  });

  test('with a token: every API call needs it, /healthz does not, and the config never shows it', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const token = 'admin-token-0123456789';
    const gw = await startTestGateway(
      `
upstreams: { demo: { targets: ["${demo.url}"] } }
routes: [{ name: api, match: { path: / }, upstream: demo }]
`,
      { admin: true, adminToken: token },
    );
    t.after(() => gw.close());
    const admin = `http://127.0.0.1:${gw.sluice.adminPort}`;
    for (const path of ['/api/routes', '/api/routes/api', '/api/upstreams', '/api/config', '/metrics']) {
      const res = await fetch(`${admin}${path}`);
      assert.equal(res.status, 401, path);
      assert.equal(res.headers.get('www-authenticate'), 'Bearer');
      const ok = await fetch(`${admin}${path}`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(ok.status, 200, path);
    }
    assert.equal((await fetch(`${admin}/healthz`)).status, 200);
    const text = await (
      await fetch(`${admin}/api/config`, { headers: { authorization: `Bearer ${token}` } })
    ).text();
    assert.ok(!text.includes(token), 'the token is redacted');
    assert.match(text, /"token":"\*\*\*"/);
  });

  test('GET /api/jobs lists jobs newest first, filtered by status and route, never with bodies', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const dir = mkdtempSync(join(tmpdir(), 'sluice-admin-'));
    const gw = await startTestGateway(
      `
store: sqlite:${join(dir, 'jobs.db')}
upstreams: { demo: { targets: ["${demo.url}"] } }
routes:
  - { name: slow, match: { path: /slow }, upstream: demo, async: { mode: auto, after: 50ms } }
  - { name: api, match: { path: / }, upstream: demo }
`,
      { admin: true },
    );
    t.after(() => gw.close());
    const admin = `http://127.0.0.1:${gw.sluice.adminPort}`;
    const first = (await (await fetch(gw.url('/slow?ms=150'))).json()) as { id: string };
    const second = await fetch(gw.url('/slow?ms=5000'));
    const secondJob = (await second.json()) as { id: string };
    await gw.log.next((e) => e.job === first.id && e.outcome === 'job_completed');
    const all = (await (await fetch(`${admin}/api/jobs`)).json()) as {
      jobs: { id: string; status: string; route: string; request_id: string }[];
    };
    assert.deepEqual(
      all.jobs.map((j) => [j.id, j.status, j.route]),
      [
        [secondJob.id, 'running', 'slow'],
        [first.id, 'completed', 'slow'],
      ],
    );
    assert.equal(all.jobs[0].request_id, second.headers.get('x-request-id'));
    const done = (await (await fetch(`${admin}/api/jobs?status=completed&limit=5`)).json()) as {
      jobs: { id: string }[];
    };
    assert.deepEqual(
      done.jobs.map((j) => j.id),
      [first.id],
    );
    const other = (await (await fetch(`${admin}/api/jobs?route=api`)).json()) as { jobs: unknown[] };
    assert.deepEqual(other.jobs, []);
    assert.equal((await fetch(`${admin}/api/jobs?status=done`)).status, 400);
    assert.equal((await fetch(`${admin}/api/jobs?limit=0`)).status, 400);
  });

  test('PATCH: a merge patch validated like the file, applied to new requests only, layer live; a reload replaces it', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    const other = await startDemoUpstream({ port: 0 });
    t.after(async () => {
      await demo.close();
      await other.close();
    });
    const yaml = `
upstreams: { demo: { targets: ["${demo.url}"] } }
routes:
  - { name: api, match: { path: / }, upstream: demo, timeouts: { total: 5s } }
`;
    const gw = await startTestGateway(yaml, { admin: true });
    t.after(() => gw.close());
    const admin = `http://127.0.0.1:${gw.sluice.adminPort}`;
    const patch = (path: string, body: unknown, type = 'application/merge-patch+json') =>
      fetch(`${admin}${path}`, {
        method: 'PATCH',
        headers: { 'content-type': type },
        body: JSON.stringify(body),
      });

    // In flight under the old 5 s budget while the patch lands.
    const inflight = fetch(gw.url('/slow?ms=700'));
    await sleep(100);
    const ok = await patch('/api/routes/api', { timeouts: { total: '400ms' } });
    assert.equal(ok.status, 200);
    const view = (await ok.json()) as RouteJson;
    assert.equal(view.timeouts.total, 400);
    assert.equal(view.timeout_layers.total, 'live');
    assert.equal(view.timeout_layers.ttfb, 'defaults');
    assert.equal((await inflight).status, 200, 'the request in flight kept its budget');
    const cut = await fetch(gw.url('/slow?ms=700'));
    assert.equal(cut.status, 504, 'new requests get the patched budget');
    assert.equal(((await cut.json()) as { timeout_ms: number }).timeout_ms, 400);

    // Invalid: every bad field named, nothing applied.
    const bad = await patch('/api/routes/api', { timeouts: { total: 'soon' }, retry: { attempts: 0 } });
    assert.equal(bad.status, 422);
    assert.match(bad.headers.get('content-type') ?? '', /^application\/problem\+json/);
    const p = (await bad.json()) as { type: string; errors: { field: string; message: string }[] };
    assert.equal(p.type, 'https://sluice.dev/problems/invalid-config');
    assert.deepEqual(p.errors.map((e) => e.field).sort(), ['retry.attempts', 'timeouts.total']);
    assert.equal(gw.sluice.gateway.runtime.routes[0].timeouts.total, 400, 'nothing applied');
    assert.equal((await patch('/api/routes/api', { name: 'renamed' })).status, 422);
    assert.equal((await patch('/api/routes/api', { timeouts: {} }, 'text/plain')).status, 415);
    assert.equal((await patch('/api/routes/nope', {})).status, 404);

    // Upstream targets.
    const up = await patch('/api/upstreams/demo', { targets: [other.url] });
    assert.equal(up.status, 200);
    assert.deepEqual(
      ((await up.json()) as { targets: { url: string }[] }).targets.map((x) => x.url),
      [other.url],
    );
    const before = other.stats.requests;
    assert.equal((await fetch(gw.url('/fast'))).status, 200);
    assert.equal(other.stats.requests, before + 1, 'new requests go to the patched target');

    // A reload from the file replaces every live change.
    gw.sluice.reload(
      loadConfigText(`listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\n${yaml}`, 'x.yaml'),
    );
    const after = (await (await fetch(`${admin}/api/routes/api`)).json()) as RouteJson;
    assert.equal(after.timeouts.total, 5000);
    assert.equal(after.timeout_layers.total, 'route');
  });
});
