import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { type TestContext, test } from 'node:test';
import pino from 'pino';
import { FakeClock } from '../clock.ts';
import { loadConfigText } from '../config/load.ts';
import { AlertEngine, type AlertNotification, WebhookSender } from './alerts.ts';
import type { WindowStats } from './latency-window.ts';

function captureLogger() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) });
  return { logger, lines };
}

/** A webhook receiver on 127.0.0.1:0; `respond` decides each answer (default 200). */
async function receiver(
  t: TestContext,
  respond?: (n: number, req: IncomingMessage, res: ServerResponse) => void,
) {
  const bodies: AlertNotification[] = [];
  let hits = 0;
  const waiters: (() => void)[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      hits++;
      const n = JSON.parse(body) as AlertNotification;
      if (respond) respond(hits, req, res);
      else res.end('ok');
      if (res.statusCode < 300 && res.writableEnded) bodies.push(n);
      for (const w of waiters.splice(0)) w();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`,
    bodies,
    get hits() {
      return hits;
    },
    /** Resolves once `n` requests arrived. */
    async hit(n: number) {
      while (hits < n) await new Promise<void>((r) => waiters.push(r));
    },
  };
}

const yaml = (webhook?: string) => `
upstreams: { demo: { targets: [http://127.0.0.1:9000] }, billing: { targets: [http://127.0.0.1:9001] } }
routes:
  - { name: reports, match: { path: /reports }, upstream: demo, timeouts: { total: 10s } }
  - { name: pay, match: { path: /pay }, upstream: billing, timeouts: { total: 5s } }
  - { name: stream, match: { path: / }, upstream: demo, timeouts: { total: 0s, ttfb: 0s } }
alerts:
  ${webhook ? `webhook: ${webhook}` : ''}
  window: 30s
  min_requests: 5
  rules:
    - { name: headroom, when: p95 > 70% of timeout, for: 10s, routes: [reports, stream] }
    - { name: timeouts, when: timeout_rate > 1%, for: 0s, routes: [pay] }
    - { name: breaker, when: circuit_open, for: 5s, routes: [pay] }
`;

const EMPTY: WindowStats = { count: 0, timeouts: 0, errors: 0, p50: 0, p95: 0, p99: 0 };

function engine(t: TestContext, webhook?: string, circuitOpen?: (u: string) => boolean) {
  const clock = new FakeClock(0);
  const { logger, lines } = captureLogger();
  const stats = new Map<string, WindowStats>();
  const e = new AlertEngine(loadConfigText(yaml(webhook), 'test.yaml'), {
    logger,
    clock,
    window: (route) => stats.get(route) ?? EMPTY,
    circuitOpen,
    webhook: { backoffMs: 10, timeoutMs: 1_000 },
  });
  t.after(() => e.close());
  /** Advances the clock by `seconds`, evaluating once per second like the ticker. */
  const run = (seconds: number) => {
    for (let i = 0; i < seconds; i++) {
      clock.advance(1_000);
      e.evaluate();
    }
  };
  return { e, clock, lines, stats, run };
}

test('fires only after the condition held for `for`, once; resolves once; webhook gets both', async (t) => {
  const hook = await receiver(t);
  const { e, lines, stats, run } = engine(t, hook.url);
  const slow = { ...EMPTY, count: 200, p50: 2_000, p95: 7_100, p99: 9_500 };

  // Holds for 4 s, then stops: the pending alert is forgotten, nothing is sent.
  stats.set('reports', slow);
  run(4);
  assert.equal(e.active()[0]?.state, 'pending');
  stats.set('reports', { ...slow, p95: 3_000 });
  run(1);
  assert.deepEqual(e.active(), []);

  stats.set('reports', slow);
  run(10); // condition first seen at the first of these rounds: 9 s held, not yet 10
  assert.equal(e.history().length, 0);
  assert.equal(e.active()[0].state, 'pending');
  run(1);
  assert.equal(e.history().length, 1);
  run(20); // still holding: no further notification
  assert.equal(e.history().length, 1);
  const firing = e.active();
  assert.equal(firing.length, 1);
  assert.deepEqual(
    { alert: firing[0].alert, route: firing[0].route, state: firing[0].state, value: firing[0].value },
    { alert: 'headroom', route: 'reports', state: 'firing', value: 0.71 },
  );
  assert.deepEqual(
    [...e.states()].find((s) => s.route === 'reports'),
    {
      rule: 'headroom',
      route: 'reports',
      upstream: 'demo',
      firing: true,
    },
  );

  stats.set('reports', { ...slow, p95: 1_200 });
  run(1);
  run(5);
  assert.equal(e.history().length, 2);
  assert.deepEqual(e.active(), []);

  await hook.hit(2);
  await e.webhook?.idle();
  assert.equal(hook.bodies.length, 2);
  const [fire, resolved] = hook.bodies;
  assert.equal(
    fire.text,
    "🔴 FIRING headroom on route 'reports': p95 7.1s is 71% of its total 10s timeout (threshold 70%) for 10s",
  );
  assert.deepEqual(
    {
      alert: fire.alert,
      state: fire.state,
      route: fire.route,
      upstream: fire.upstream,
      value: fire.value,
      threshold: fire.threshold,
      timeout_ms: fire.timeout_ms,
      window_s: fire.window_s,
      latency_ms: fire.latency_ms,
      requests: fire.requests,
      condition: fire.condition,
    },
    {
      alert: 'headroom',
      state: 'firing',
      route: 'reports',
      upstream: 'demo',
      value: 0.71,
      threshold: 0.7,
      timeout_ms: 10_000,
      window_s: 30,
      latency_ms: 7_100,
      requests: 200,
      condition: 'p95 > 70% of timeout',
    },
  );
  assert.ok(!Number.isNaN(Date.parse(fire.since)) && Date.parse(fire.since) <= Date.parse(fire.at));
  assert.equal(resolved.state, 'resolved');
  assert.equal(
    resolved.text,
    "✅ RESOLVED headroom on route 'reports': p95 1.2s is 12% of its total 10s timeout (threshold 70%), after firing for 21s",
  );
  assert.equal(resolved.since, fire.since);
  assert.deepEqual(
    e.history().map((n) => n.state),
    ['resolved', 'firing'],
  ); // newest first

  // The log has one line per notification, the text as its message.
  const logged = lines.filter((l) => l.alert === 'headroom');
  assert.deepEqual(
    logged.map((l) => [l.level, l.state, l.msg]),
    [
      [40, 'firing', fire.text],
      [30, 'resolved', resolved.text],
    ],
  );
});

test('a latency rule never fires on a route without a ttfb or total budget, nor on an empty window', (t) => {
  const { e, stats, run } = engine(t);
  stats.set('stream', { ...EMPTY, count: 50, p95: 999_999 });
  stats.set('reports', { ...EMPTY, count: 0 });
  run(30);
  assert.equal(e.history().length, 0);
  assert.deepEqual(
    [...e.states()].map((s) => `${s.rule}/${s.route}`),
    ['headroom/reports', 'headroom/stream', 'timeouts/pay', 'breaker/pay'],
  );
});

test('timeout_rate with for: 0s fires on the first round; the text names the rate and the window', (t) => {
  const { e, stats, run } = engine(t);
  stats.set('pay', { ...EMPTY, count: 250, timeouts: 8, errors: 8, p95: 5_000 });
  run(1);
  const [n] = e.history();
  assert.equal(
    n.text,
    "🔴 FIRING timeouts on route 'pay': 3.2% of 250 requests in the last 30s timed out (threshold 1%, timeout total 5s) for 0s",
  );
  assert.equal(n.value, 0.032);
  assert.equal(n.threshold, 0.01);
});

test('circuit_open follows the provider per route upstream; without a provider it never fires', (t) => {
  let open = true;
  const asked: string[] = [];
  const { e, run } = engine(t, undefined, (u) => {
    asked.push(u);
    return open;
  });
  run(5);
  assert.equal(e.history().length, 0);
  run(1);
  assert.equal(
    e.history()[0].text,
    "🔴 FIRING breaker on route 'pay': the circuit of upstream 'billing' is open for 5s",
  );
  assert.ok(asked.every((u) => u === 'billing'));
  open = false;
  run(1);
  assert.match(
    e.history()[0].text,
    /^✅ RESOLVED breaker on route 'pay': the circuit of upstream 'billing' is closed again/,
  );

  const none = engine(t);
  none.run(30);
  assert.equal(none.e.history().length, 0);
  // A provider that throws counts as closed and does not stop the other rules.
  none.e.setCircuitOpen(() => {
    throw new Error('boom');
  });
  none.stats.set('pay', { ...EMPTY, count: 10, timeouts: 5 });
  none.run(10);
  assert.deepEqual(
    none.e.history().map((n) => n.alert),
    ['timeouts'],
  );
});

test('reload keeps the state of (rule, route) pairs that still exist', (t) => {
  const { e, stats, run } = engine(t);
  stats.set('reports', { ...EMPTY, count: 10, p95: 9_000 });
  run(11);
  assert.equal(e.active()[0].state, 'firing');
  e.reload(loadConfigText(yaml(), 'test.yaml'));
  run(1);
  assert.equal(e.history().length, 1, 'no second FIRING after a reload');
  e.reload(loadConfigText(yaml().replace('p95 > 70%', 'p95 > 95%'), 'test.yaml'));
  run(1);
  assert.deepEqual(e.active(), [], 'a changed rule starts afresh (and 90% is below 95%)');
});

test('webhook: retries a 5xx with backoff, gives up on a 4xx, logs a failure', async (t) => {
  const hook = await receiver(t, (n, _req, res) => {
    res.statusCode = n === 1 ? 503 : n === 2 ? 200 : 400;
    res.end();
  });
  const { logger, lines } = captureLogger();
  const sender = new WebhookSender({ url: hook.url, logger, backoffMs: 10, timeoutMs: 1_000 });
  t.after(() => sender.close());
  const n = { alert: 'a', route: 'r', state: 'firing' } as AlertNotification;
  sender.send(n);
  await sender.idle();
  assert.equal(hook.hits, 2);
  assert.deepEqual(sender.stats, { delivered: 1, dropped: 0, failed: 0 });
  sender.send(n);
  await sender.idle();
  assert.equal(hook.hits, 3, 'a 400 is not retried');
  assert.deepEqual(sender.stats, { delivered: 1, dropped: 0, failed: 1 });
  assert.match(String(lines.at(-1)?.msg), /alert webhook delivery failed: HTTP 400/);
});

test('webhook: a stuck receiver fills the bounded queue, the oldest are dropped, close() is prompt', async (t) => {
  const hook = await receiver(t, () => {}); // accepts, never answers
  const { logger, lines } = captureLogger();
  const sender = new WebhookSender({ url: hook.url, logger, maxQueue: 2, timeoutMs: 30_000 });
  for (let i = 0; i < 5; i++)
    sender.send({ alert: `a${i}`, route: 'r', state: 'firing' } as AlertNotification);
  await hook.hit(1);
  // a0 is in flight (hanging); a1, a2 were queued and dropped for a3, a4.
  assert.equal(sender.stats.dropped, 2);
  assert.deepEqual(
    lines.filter((l) => /queue full/.test(String(l.msg))).map((l) => l.alert),
    ['a1', 'a2'],
  );
  const t0 = performance.now();
  await sender.close();
  assert.ok(performance.now() - t0 < 1_000, 'close() aborts the hanging delivery');
  assert.equal(hook.hits, 1);
});

test('min_requests: below it a rule neither starts nor resolves; an emptied window resolves on "no requests"', (t) => {
  const { e, stats, run } = engine(t);
  // 4 requests, all timed out: below min_requests (5), no verdict.
  stats.set('pay', { ...EMPTY, count: 4, timeouts: 4 });
  run(3);
  assert.equal(e.history().length, 0);
  assert.deepEqual(e.active(), []);
  stats.set('pay', { ...EMPTY, count: 5, timeouts: 1 });
  run(1);
  assert.equal(e.history()[0].state, 'firing');
  // Down to 2 requests with none timed out: still no verdict, so no RESOLVED built on 2 requests.
  stats.set('pay', { ...EMPTY, count: 2 });
  run(5);
  assert.equal(e.history().length, 1);
  assert.equal(e.active()[0].state, 'firing');
  // The window empties: resolved, saying why, never "0% of 0 requests".
  stats.set('pay', EMPTY);
  run(1);
  assert.equal(e.history().length, 2);
  assert.match(
    e.history()[0].text,
    /^✅ RESOLVED timeouts on route 'pay': no requests in the last 30s, after firing for 6s$/,
  );
});

test('target_down fires per upstream naming the targets, and resolves when they are back', (t) => {
  const base = engine(t);
  const config = loadConfigText(
    yaml().replace('  rules:\n', '  rules:\n    - { name: down, when: target_down, for: 2s }\n'),
    'test.yaml',
  );
  base.e.reload(config);
  let down: string[] = ['http://127.0.0.1:9001'];
  base.e.setTargetsDown((u) => (u === 'billing' ? down : []));
  base.run(3);
  const fired = base.e.history().filter((n) => n.alert === 'down');
  assert.equal(fired.length, 1);
  assert.equal(fired[0].upstream, 'billing');
  assert.equal(fired[0].route, '');
  assert.deepEqual(fired[0].targets_down, ['http://127.0.0.1:9001']);
  assert.equal(
    fired[0].text,
    "🔴 FIRING down on upstream 'billing': 1 target(s) down: http://127.0.0.1:9001 for 2s",
  );
  const states = [...base.e.states()].filter((s) => s.rule === 'down');
  assert.deepEqual(
    states.map((s) => `${s.upstream}:${s.firing}`),
    ['demo:false', 'billing:true'],
  );
  down = [];
  base.run(1);
  assert.match(base.e.history()[0].text, /^✅ RESOLVED down on upstream 'billing': every target is back/);
});
