import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { FakeClock } from '../clock.ts';
import { loadConfigText } from '../config/load.ts';
import type { AccessLogEntry } from './access-log.ts';
import { createObservability } from './observability.ts';

const yaml = (window = '3s', routes = ['reports', 'api']) => `
upstreams: { demo: { targets: [http://127.0.0.1:9000] } }
routes:
${routes.map((r) => `  - { name: ${r}, match: { path: /${r} }, upstream: demo, timeouts: { total: 1s } }`).join('\n')}
alerts:
  window: ${window}
  min_requests: 1
  rules:
    - { name: headroom, when: p95 > 50% of timeout, for: 2s }
    - { name: breaker, when: circuit_open, for: 0s }
`;

function entry(over: Partial<AccessLogEntry>): AccessLogEntry {
  return {
    time: '',
    request_id: 'r',
    method: 'GET',
    path: '/',
    route: 'reports',
    upstream: 'demo',
    target: null,
    status: 200,
    outcome: 'ok',
    phase: null,
    error: null,
    client: undefined,
    bytes_in: 0,
    bytes_out: 0,
    attempts: 1,
    retries: 0,
    dns: null,
    connect: null,
    tls: null,
    ttfb: null,
    total: 100,
    budget_ms: 1_000,
    ...over,
  };
}

function setup() {
  const clock = new FakeClock(0);
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) });
  const obs = createObservability(loadConfigText(yaml(), 'test.yaml'), {
    logger,
    clock,
    gateway: { inflight: 3 },
  });
  return { obs, clock, lines };
}

test('onRequest feeds the route window: timeouts at their budget, 5xx as errors, rejected left out', () => {
  const { obs } = setup();
  obs.onRequest(entry({ total: 100 }));
  obs.onRequest(entry({ status: 504, outcome: 'timeout', phase: 'ttfb', total: 400, budget_ms: 1_000 }));
  obs.onRequest(entry({ status: 502, outcome: 'upstream_error' }));
  obs.onRequest(entry({ status: 500 }));
  obs.onRequest(entry({ status: 413, outcome: 'rejected', total: 5 }));
  obs.onRequest(entry({ route: null, status: 404, outcome: 'no_route' }));
  const w = obs.window('reports')!;
  assert.deepEqual([w.count, w.timeouts, w.errors], [4, 1, 3]);
  assert.ok(Math.abs(w.p99 - 1_000) / 1_000 < 0.032, String(w.p99));
  assert.equal(obs.window(''), undefined);
  assert.equal(obs.window('nope'), undefined);
});

test('the ticker evaluates alerts on the injected clock; circuit_open follows the circuits provider', async () => {
  const { obs, clock, lines } = setup();
  let open = false;
  obs.setProviders({ circuits: () => ({ demo: open ? 'open' : 'closed' }) });
  for (let i = 0; i < 3; i++) {
    obs.onRequest(entry({ total: 800 }));
    clock.advance(1_000);
    obs.tick();
  }
  assert.deepEqual(
    obs.alerts.history().map((n) => `${n.state} ${n.alert} ${n.route}`),
    ['firing headroom reports'],
  );
  open = true;
  obs.tick();
  assert.deepEqual(
    obs.alerts.active().map((a) => `${a.state} ${a.alert} ${a.route}`),
    ['firing headroom reports', 'firing breaker reports', 'firing breaker api'],
  );
  assert.ok(lines.some((l) => l.alert === 'breaker' && l.state === 'firing'));
  const text = await obs.metricsText();
  assert.match(text, /^sluice_alerts_firing\{rule="breaker",route="api",upstream="demo"\} 1$/m);
  assert.match(text, /^sluice_circuit_state\{upstream="demo"\} 2$/m);
  assert.match(text, /^sluice_requests_in_flight 3$/m);
  assert.match(obs.contentType, /^text\/plain; version=0\.0\.4/);
  await obs.stop();
});

test('reload keeps the windows of routes that still exist; a new window length starts afresh', () => {
  const { obs } = setup();
  obs.onRequest(entry({ route: 'reports' }));
  obs.onRequest(entry({ route: 'api' }));
  obs.reload(loadConfigText(yaml('3s', ['reports', 'fresh']), 'test.yaml'));
  assert.equal(obs.window('reports')?.count, 1);
  assert.equal(obs.window('fresh')?.count, 0);
  assert.equal(obs.window('api'), undefined);
  // A request of the removed route still finishing after the reload is counted, without a window.
  obs.onRequest(entry({ route: 'api' }));
  obs.reload(loadConfigText(yaml('10s', ['reports']), 'test.yaml'));
  assert.equal(obs.window('reports')?.count, 0);
});
