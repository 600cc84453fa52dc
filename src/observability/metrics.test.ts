import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfigText } from '../config/load.ts';
import type { AccessLogEntry } from './access-log.ts';
import type { WindowStats } from './latency-window.ts';
import { DURATION_BUCKETS, MAX_TIMING_NAMES, Metrics } from './metrics.ts';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A small parser of the Prometheus text format (0.0.4): samples, and the TYPE of each family. */
function parseProm(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\w+) (.*)$/.exec(line);
      assert.ok(m, `bad comment line: ${line}`);
      if (m[1] === 'TYPE') types.set(m[2], m[3]);
      continue;
    }
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `bad sample line: ${line}`);
    const labels: Record<string, string> = {};
    const body = m[2] ?? '';
    const re = /(\w+)="((?:[^"\\]|\\.)*)",?/gy;
    let l: RegExpExecArray | null;
    let consumed = 0;
    while ((l = re.exec(body)) !== null) {
      labels[l[1]] = l[2].replace(/\\(.)/g, (_s, c: string) => (c === 'n' ? '\n' : c));
      consumed = re.lastIndex;
    }
    assert.equal(consumed, body.length, `bad labels: ${line}`);
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    // prom-client writes NaN as "Nan" (an empty event-loop histogram); Prometheus reads both.
    assert.ok(!Number.isNaN(value) || m[3] === 'NaN' || m[3] === 'Nan', `bad value: ${line}`);
    samples.push({ name: m[1], labels, value });
  }
  return { samples, types };
}

/** The value of the one sample with this name and (at least) these labels; undefined if none. */
function sample(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  assert.ok(found.length <= 1, `${found.length} samples match ${name} ${JSON.stringify(labels)}`);
  return found[0]?.value;
}

function entry(over: Partial<AccessLogEntry> = {}): AccessLogEntry {
  return {
    time: '2026-01-01T00:00:00.000Z',
    request_id: 'r',
    method: 'GET',
    path: '/x',
    route: 'reports',
    upstream: 'demo',
    target: 'http://127.0.0.1:9000',
    status: 200,
    outcome: 'ok',
    phase: null,
    error: null,
    client: '127.0.0.1',
    bytes_in: 0,
    bytes_out: 10,
    attempts: 1,
    retries: 0,
    dns: null,
    connect: null,
    tls: null,
    ttfb: 40,
    total: 50,
    budget_ms: 10_000,
    ...over,
  };
}

const config = loadConfigText(
  `
upstreams: { demo: { targets: [http://127.0.0.1:9000] } }
routes:
  - { name: reports, match: { path: /reports }, upstream: demo, timeouts: { total: 10s } }
  - { name: open, match: { path: / }, upstream: demo, timeouts: { total: 0s } }
`,
  'test.yaml',
);

function fixture(stats: Partial<WindowStats> = {}) {
  const window: WindowStats = {
    count: 10,
    timeouts: 1,
    errors: 2,
    p50: 1_000,
    p95: 7_100,
    p99: 9_000,
    ...stats,
  };
  return new Metrics({
    inflight: () => 7,
    routes: () => config.routes,
    window: (route) => (route === 'reports' || route === 'open' ? window : undefined),
    alerts: () => [
      { rule: 'headroom', route: 'reports', upstream: 'demo', firing: true },
      { rule: 'headroom', route: 'open', upstream: 'demo', firing: false },
    ],
  });
}

test('requests, durations, phases, timeouts and Server-Timing per route, parsed back', async () => {
  const m = fixture();
  for (let i = 0; i < 3; i++)
    m.record(entry({ connect: i === 0 ? 1.5 : null, upstream_timing: { db: 120, ext: 30 } }));
  m.record(
    entry({
      status: 504,
      outcome: 'timeout',
      phase: 'ttfb',
      error: 'upstream-timeout',
      ttfb: null,
      total: 10_003,
    }),
  );
  m.record(entry({ status: 504, outcome: 'timeout', phase: 'total', ttfb: 20, total: 10_001 }));
  m.record(entry({ route: null, upstream: null, status: 404, outcome: 'no_route', ttfb: null, total: 0.4 }));

  const { samples, types } = parseProm(await m.text());
  assert.equal(types.get('sluice_requests_total'), 'counter');
  assert.equal(types.get('sluice_request_duration_seconds'), 'histogram');
  assert.equal(
    sample(samples, 'sluice_requests_total', { route: 'reports', status: '200', outcome: 'ok' }),
    3,
  );
  assert.equal(
    sample(samples, 'sluice_requests_total', { route: 'reports', status: '504', outcome: 'timeout' }),
    2,
  );
  assert.equal(
    sample(samples, 'sluice_requests_total', { route: '', status: '404', outcome: 'no_route' }),
    1,
  );

  // Duration histogram: cumulative buckets, +Inf = count, sum in seconds.
  const buckets = samples.filter(
    (s) => s.name === 'sluice_request_duration_seconds_bucket' && s.labels.route === 'reports',
  );
  assert.equal(buckets.length, DURATION_BUCKETS.length + 1);
  for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i].value >= buckets[i - 1].value);
  assert.equal(
    sample(samples, 'sluice_request_duration_seconds_bucket', { route: 'reports', le: '0.05' }),
    3,
  );
  assert.equal(sample(samples, 'sluice_request_duration_seconds_bucket', { route: 'reports', le: '10' }), 3);
  assert.equal(sample(samples, 'sluice_request_duration_seconds_bucket', { route: 'reports', le: '20' }), 5);
  assert.equal(
    sample(samples, 'sluice_request_duration_seconds_bucket', { route: 'reports', le: '+Inf' }),
    5,
  );
  assert.equal(sample(samples, 'sluice_request_duration_seconds_count', { route: 'reports' }), 5);
  assert.ok(
    Math.abs(sample(samples, 'sluice_request_duration_seconds_sum', { route: 'reports' })! - 20.154) < 1e-9,
  );

  assert.equal(
    sample(samples, 'sluice_phase_duration_seconds_count', { route: 'reports', phase: 'ttfb' }),
    4,
  );
  assert.equal(
    sample(samples, 'sluice_phase_duration_seconds_count', { route: 'reports', phase: 'connect' }),
    1,
  );
  assert.equal(
    sample(samples, 'sluice_phase_duration_seconds_bucket', {
      route: 'reports',
      phase: 'connect',
      le: '0.0025',
    }),
    1,
  );
  assert.equal(sample(samples, 'sluice_timeouts_total', { route: 'reports', phase: 'ttfb' }), 1);
  assert.equal(sample(samples, 'sluice_timeouts_total', { route: 'reports', phase: 'total' }), 1);
  assert.equal(sample(samples, 'sluice_timeouts_total', { route: 'reports', phase: 'connect' }), undefined);
  assert.equal(
    sample(samples, 'sluice_upstream_server_timing_seconds_count', { route: 'reports', name: 'db' }),
    3,
  );
  assert.ok(
    Math.abs(
      sample(samples, 'sluice_upstream_server_timing_seconds_sum', { route: 'reports', name: 'db' })! - 0.36,
    ) < 1e-9,
  );

  // Scrape-time gauges.
  assert.equal(sample(samples, 'sluice_requests_in_flight'), 7);
  assert.equal(sample(samples, 'sluice_route_timeout_seconds', { route: 'reports' }), 10);
  assert.equal(sample(samples, 'sluice_route_timeout_seconds', { route: 'open' }), 0);
  assert.equal(sample(samples, 'sluice_route_headroom_ratio', { route: 'reports' }), 0.71);
  // No total budget: measured against ttfb (the built-in 30s), the limit that fires first.
  assert.equal(sample(samples, 'sluice_route_headroom_ratio', { route: 'reports', limit: 'total' }), 0.71);
  assert.ok(
    Math.abs(
      (sample(samples, 'sluice_route_headroom_ratio', { route: 'open', limit: 'ttfb' }) ?? 0) - 7.1 / 30,
    ) < 1e-9,
  );
  assert.equal(sample(samples, 'sluice_route_latency_seconds', { route: 'reports', quantile: '0.95' }), 7.1);
  assert.equal(sample(samples, 'sluice_route_latency_seconds', { route: 'reports', quantile: '0.99' }), 9);
  assert.equal(sample(samples, 'sluice_alerts_firing', { rule: 'headroom', route: 'reports' }), 1);
  assert.equal(sample(samples, 'sluice_alerts_firing', { rule: 'headroom', route: 'open' }), 0);

  // Every series is named sluice_* and labels carry route names, never paths.
  for (const s of samples) {
    assert.match(s.name, /^sluice_/);
    assert.ok(!('path' in s.labels));
  }
  // A second scrape reports the same counts (collect callbacks reset before re-adding).
  const again = parseProm(await m.text()).samples;
  assert.equal(sample(again, 'sluice_requests_total', { route: 'reports', status: '200', outcome: 'ok' }), 3);
});

test('Server-Timing names are capped per route (upstream-controlled cardinality)', async () => {
  const m = fixture();
  for (let i = 0; i < MAX_TIMING_NAMES + 10; i++) m.record(entry({ upstream_timing: { [`n${i}`]: 1 } }));
  const names = new Set(
    parseProm(await m.text())
      .samples.filter((s) => s.name === 'sluice_upstream_server_timing_seconds_count')
      .map((s) => s.labels.name),
  );
  assert.equal(names.size, MAX_TIMING_NAMES);
});

test('provider metrics appear only once a provider is set, and follow it', async () => {
  const m = fixture();
  let text = await m.text();
  assert.doesNotMatch(text, /^sluice_jobs\{|sluice_circuit_state|sluice_target_healthy/m);
  let open = true;
  m.setProviders({
    jobs: () => ({ reports: { queued: 2, running: 1 } }),
    circuits: () => ({ demo: open ? 'open' : 'closed', other: 'half-open' }),
  });
  m.setProviders({ targets: () => [{ upstream: 'demo', target: 'http://127.0.0.1:9000', healthy: false }] });
  let { samples } = parseProm((text = await m.text()));
  assert.equal(sample(samples, 'sluice_jobs', { route: 'reports', status: 'queued' }), 2);
  assert.equal(sample(samples, 'sluice_circuit_state', { upstream: 'demo' }), 2);
  assert.equal(sample(samples, 'sluice_circuit_state', { upstream: 'other' }), 1);
  assert.equal(
    sample(samples, 'sluice_target_healthy', { upstream: 'demo', target: 'http://127.0.0.1:9000' }),
    0,
  );
  open = false;
  // Setting one provider again keeps the others and does not register twice.
  m.setProviders({ jobs: () => ({ reports: { queued: 5 } }) });
  ({ samples } = parseProm(await m.text()));
  assert.equal(sample(samples, 'sluice_circuit_state', { upstream: 'demo' }), 0);
  assert.equal(sample(samples, 'sluice_jobs', { route: 'reports', status: 'queued' }), 5);
  assert.equal(
    sample(samples, 'sluice_target_healthy', { upstream: 'demo', target: 'http://127.0.0.1:9000' }),
    0,
  );
});

test('retain drops the series of removed routes; the no-route series stays', async () => {
  const m = fixture();
  m.record(entry());
  m.record(entry({ route: 'gone' }));
  m.record(entry({ route: null, status: 404, outcome: 'no_route' }));
  m.retain(new Set(['reports']));
  const { samples } = parseProm(await m.text());
  const routes = new Set(
    samples.filter((s) => s.name === 'sluice_requests_total').map((s) => s.labels.route),
  );
  assert.deepEqual([...routes].sort(), ['', 'reports']);
});

test('an empty window: no latency quantiles, headroom 0', async () => {
  const { samples } = parseProm(await fixture({ count: 0, p50: 0, p95: 0, p99: 0 }).text());
  assert.equal(
    sample(samples, 'sluice_route_latency_seconds', { route: 'reports', quantile: '0.95' }),
    undefined,
  );
  assert.equal(sample(samples, 'sluice_route_headroom_ratio', { route: 'reports' }), 0);
});
