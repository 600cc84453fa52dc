import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type RequestListener } from 'node:http';
import { after, test } from 'node:test';
import { FakeClock } from '../clock.ts';
import type { EffectiveUpstream } from '../config/resolve.ts';
import { Upstream, type UpstreamEvent } from './upstream.ts';

function config(over: Partial<EffectiveUpstream> = {}, targets = 3): EffectiveUpstream {
  return {
    name: 'api',
    targets: Array.from({ length: targets }, (_, i) => ({
      origin: `http://127.0.0.1:${9101 + i}`,
      basePath: '',
      weight: 1,
    })),
    maxConnections: undefined,
    balance: 'round-robin',
    health: undefined,
    outlier: undefined,
    circuit: undefined,
    maxConcurrent: undefined,
    queueTimeout: 1_000,
    ...over,
  };
}

function make(over: Partial<EffectiveUpstream> = {}, targets = 3) {
  const clock = new FakeClock();
  const events: UpstreamEvent[] = [];
  const u = new Upstream(config(over, targets), {
    connectBackstopMs: 5_000,
    clock,
    onEvent: (e) => events.push(e),
  });
  after(() => u.destroy());
  return { u, clock, events };
}

const outlier = { consecutive_failures: 2, base_ejection: 10_000, max_ejection: 60_000, eject_last: false };
const circuit = { error_rate: 0.5, min_requests: 4, window: 10_000, open_for: 5_000, half_open_requests: 1 };

test('without policies: admission, slot and pick are plain synchronous values', () => {
  const { u } = make();
  const a = u.admit();
  assert.equal(a, u.admit(), 'one shared admission object');
  assert.equal(a.ok, true);
  assert.equal(u.acquireSlot(Number.POSITIVE_INFINITY), true);
  u.releaseSlot();
  const seq = Array.from({ length: 6 }, () => u.pick()?.id);
  assert.deepEqual(seq, [0, 1, 2, 0, 1, 2]);
  const t = u.targets[0];
  for (let i = 0; i < 10; i++) u.report(t, 'connect');
  if (a.ok) u.complete(a, 'status5xx');
  assert.equal(u.circuitState(), undefined);
  const s = u.snapshot();
  assert.equal(s.available, 3);
  assert.equal(s.circuit, null);
  assert.equal(s.limiter, null);
  assert.deepEqual(s.targets[0], {
    origin: 'http://127.0.0.1:9101',
    basePath: '',
    weight: 1,
    inflight: 0,
    healthy: true,
    ejected: false,
    ejectedForMs: 0,
    ejections: null,
    consecutiveFailures: null,
  });
  assert.doesNotThrow(() => JSON.stringify(s));
});

test('a retry avoids the previous target when another is available', () => {
  const { u } = make({ balance: 'least-request' });
  for (let i = 0; i < 50; i++) {
    const first = u.pick();
    assert.ok(first);
    assert.notEqual(u.pick(first), first);
  }
  const { u: single } = make({}, 1);
  const only = single.pick();
  assert.equal(single.pick(only), only);
});

test('consecutive failed tries eject a target for a while; it comes back when the time is up', () => {
  const { u, clock, events } = make({ outlier });
  const [a] = u.targets;
  u.report(a, 'timeout');
  u.report(a, 'ok'); // resets
  u.report(a, 'timeout');
  assert.equal(a.ejected, false);
  u.report(a, 'status5xx');
  assert.equal(a.ejected, true);
  assert.deepEqual(events, [
    {
      kind: 'ejected',
      upstream: 'api',
      target: 'http://127.0.0.1:9101',
      forMs: 10_000,
      ejections: 1,
      reason: 'status5xx',
    },
  ]);
  for (let i = 0; i < 30; i++) assert.notEqual(u.pick(), a);
  const s = u.snapshot();
  assert.equal(s.available, 2);
  assert.equal(s.targets[0].ejectedForMs, 10_000);
  clock.advance(10_000);
  const picked = new Set(Array.from({ length: 3 }, () => u.pick()));
  assert.ok(picked.has(a));
  assert.equal(events[1].kind, 'restored');
  assert.equal(u.snapshot().available, 3);
});

test('the last available target is never ejected, unless eject_last', () => {
  const { u, events } = make({ outlier }, 2);
  const [a, b] = u.targets;
  for (let i = 0; i < 2; i++) u.report(a, 'connect');
  for (let i = 0; i < 5; i++) u.report(b, 'connect');
  assert.deepEqual(
    events.map((e) => e.kind),
    ['ejected'],
  );
  assert.equal(u.pick(), b);
  assert.equal(u.pick(b), b);

  const { u: u2 } = make({ outlier: { ...outlier, eject_last: true } }, 1);
  const [only] = u2.targets;
  u2.report(only, 'reset');
  u2.report(only, 'reset');
  assert.equal(u2.pick(), undefined, 'no target: the caller answers 503 no-healthy-upstream');
});

test('the breaker counts final request results and refuses with circuit-open while open', () => {
  const { u, clock, events } = make({ circuit });
  for (let i = 0; i < 4; i++) {
    const a = u.admit();
    assert.ok(a.ok);
    u.complete(a, i === 0 ? 'ok' : 'timeout');
  }
  assert.equal(u.circuitState(), 'open');
  const r = u.admit();
  assert.deepEqual(r, { ok: false, code: 'circuit-open', retryAfterMs: 5_000 });
  clock.advance(5_000);
  const probe = u.admit();
  assert.ok(probe.ok);
  assert.equal(u.admit().ok, false, 'one probe at a time');
  u.complete(probe, 'none'); // the probe never reached the upstream: its slot is free again
  const probe2 = u.admit();
  assert.ok(probe2.ok);
  u.complete(probe2, 'ok');
  assert.equal(u.circuitState(), 'closed');
  assert.deepEqual(
    events.map((e) => (e.kind === 'circuit' ? `${e.previous}>${e.state}` : e.kind)),
    ['closed>open', 'open>half-open', 'half-open>closed'],
  );
  assert.equal(u.snapshot().circuit?.state, 'closed');
});

test('max_concurrent: sync slots up to the limit, then a queue shown in the snapshot', async () => {
  const { u } = make({ maxConcurrent: 1, queueTimeout: 5_000 });
  assert.equal(u.acquireSlot(Number.POSITIVE_INFINITY), true);
  const waiting = u.acquireSlot(Number.POSITIVE_INFINITY);
  assert.ok(waiting instanceof Promise);
  assert.deepEqual(u.snapshot().limiter, { max: 1, inflight: 1, queued: 1 });
  u.releaseSlot();
  assert.equal(await waiting, true);
  u.releaseSlot();
  assert.deepEqual(u.snapshot().limiter, { max: 1, inflight: 0, queued: 0 });
});

test('retry budgets are kept per route and replaced when the fraction changes', () => {
  const { u } = make();
  const b = u.retryBudgetFor('orders', 0.2);
  assert.equal(u.retryBudgetFor('orders', 0.2), b);
  assert.notEqual(u.retryBudgetFor('users', 0.2), b);
  b.onRequest();
  assert.equal(b.tryRetry(), true);
  assert.deepEqual(u.snapshot().retryBudgets.orders, { budget: 0.2, requests: 1, retries: 1 });
  assert.notEqual(u.retryBudgetFor('orders', 0.5), b);
});

async function server(handler: RequestListener) {
  const s = createServer(handler);
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  after(() => {
    s.closeAllConnections();
    s.close();
  });
  return `http://127.0.0.1:${(s.address() as { port: number }).port}`;
}

test('health checks take failing targets out of the rotation; probes do not queue behind traffic', async () => {
  const probedWhileBusy: string[] = [];
  let slowPending = false;
  const good = await server((req, res) => {
    if (req.url === '/slow') {
      slowPending = true;
      return; // holds the only pooled connection
    }
    if (slowPending) probedWhileBusy.push(req.url ?? '');
    res.end('ok');
  });
  const bad = await server((_req, res) => res.writeHead(500).end());
  const events: UpstreamEvent[] = [];
  let wake: () => void = () => {};
  const u = new Upstream(
    {
      ...config(),
      targets: [
        { origin: good, basePath: '', weight: 1 },
        { origin: bad, basePath: '', weight: 1 },
      ],
      maxConnections: 1,
      health: { path: '/healthz', interval: 50, timeout: 500, unhealthy_after: 2, healthy_after: 1 },
    },
    {
      connectBackstopMs: 1_000,
      onEvent: (e) => {
        events.push(e);
        wake();
      },
    },
  );
  after(() => u.destroy());
  const [g, b] = u.targets;
  // Occupy the good target's only traffic connection.
  const slow = g.pool.request({ path: '/slow', method: 'GET' }).catch(() => {});
  u.start();
  u.start(); // idempotent
  while (events.length === 0) await new Promise<void>((r) => (wake = r));
  assert.deepEqual(events, [{ kind: 'health', upstream: 'api', target: bad, healthy: false }]);
  assert.equal(b.healthy, false);
  for (let i = 0; i < 10; i++) assert.equal(u.pick(), g);
  assert.equal(u.pick(g), g, 'the only healthy target, even for a retry');
  assert.ok(probedWhileBusy.includes('/healthz'), 'the good target was probed while its pool was busy');
  u.destroy(); // close() would wait for /slow
  await slow;
});
