import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FakeClock } from '../clock.ts';
import type { CircuitConfig } from '../config/resolve.ts';
import { type CircuitAdmission, CircuitBreaker, type CircuitState } from './circuit-breaker.ts';

const config: CircuitConfig = {
  error_rate: 0.5,
  min_requests: 10,
  window: 10_000,
  open_for: 30_000,
  half_open_requests: 3,
};

function setup(c: CircuitConfig = config) {
  const clock = new FakeClock();
  const changes: string[] = [];
  const breaker = new CircuitBreaker(c, clock, (s: CircuitState, p: CircuitState) =>
    changes.push(`${p}>${s}`),
  );
  const run = (ok: boolean) => {
    const a = breaker.tryAcquire();
    assert.ok(a.ok, 'admitted');
    breaker.onResult(a, ok);
  };
  return { clock, breaker, changes, run };
}

function admit(b: CircuitBreaker): CircuitAdmission {
  const a = b.tryAcquire();
  assert.ok(a.ok);
  return a;
}

test('stays closed below min_requests even at 100% errors', () => {
  const { breaker, run } = setup();
  for (let i = 0; i < 9; i++) run(false);
  assert.equal(breaker.state(), 'closed');
  run(false);
  assert.equal(breaker.state(), 'open');
});

test('opens only when the error rate exceeds error_rate (not at equality)', () => {
  const { breaker, run } = setup();
  for (let i = 0; i < 10; i++) run(true);
  for (let i = 0; i < 10; i++) run(false); // 10/20 = 50%: not above
  assert.equal(breaker.state(), 'closed');
  run(false); // 11/21
  assert.equal(breaker.state(), 'open');
});

test('old outcomes leave the window', () => {
  const { clock, breaker, run } = setup();
  for (let i = 0; i < 9; i++) run(false);
  clock.advance(10_000); // all out of the window
  for (let i = 0; i < 10; i++) run(true);
  run(false);
  assert.equal(breaker.state(), 'closed');
});

test('open refuses with retryAfterMs counting down, then half-open admits exactly half_open_requests', () => {
  const { clock, breaker, run, changes } = setup();
  for (let i = 0; i < 10; i++) run(false);
  const r = breaker.tryAcquire();
  assert.deepEqual(r, { ok: false, code: 'circuit-open', retryAfterMs: 30_000 });
  clock.advance(29_000);
  const r2 = breaker.tryAcquire();
  assert.equal(r2.ok, false);
  assert.equal(!r2.ok && r2.retryAfterMs, 1_000);
  clock.advance(1_000);
  const probes = [admit(breaker), admit(breaker), admit(breaker)];
  assert.equal(breaker.state(), 'half-open');
  const refused = breaker.tryAcquire();
  assert.equal(refused.ok, false);
  assert.ok(!refused.ok && refused.retryAfterMs > 0 && refused.retryAfterMs <= 1_000);
  for (const p of probes) breaker.onResult(p, true);
  assert.equal(breaker.state(), 'closed');
  assert.deepEqual(changes, ['closed>open', 'open>half-open', 'half-open>closed']);
  // A fresh window after closing: nine errors do not reopen it.
  for (let i = 0; i < 9; i++) run(false);
  assert.equal(breaker.state(), 'closed');
});

test('one bad probe opens it again for open_for', () => {
  const { clock, breaker, run, changes } = setup();
  for (let i = 0; i < 10; i++) run(false);
  clock.advance(30_000);
  const [p1, p2] = [admit(breaker), admit(breaker)];
  breaker.onResult(p1, true);
  breaker.onResult(p2, false);
  assert.equal(breaker.state(), 'open');
  const r = breaker.tryAcquire();
  assert.ok(!r.ok && r.retryAfterMs === 30_000);
  assert.deepEqual(changes, ['closed>open', 'open>half-open', 'half-open>open']);
});

test('late results are not taken for probes; stale probes of an earlier round are ignored', () => {
  const { clock, breaker, run } = setup();
  const slow = admit(breaker); // admitted while closed, ends much later
  for (let i = 0; i < 10; i++) run(false);
  clock.advance(30_000);
  const old = admit(breaker); // probe of round 1
  breaker.onResult(admit(breaker), false); // round 1 fails → open
  clock.advance(30_000);
  const probes = [admit(breaker), admit(breaker), admit(breaker)]; // round 2
  breaker.onResult(slow, false); // a closed-state admission: ignored while half-open
  breaker.onResult(old, false); // round 1: ignored
  assert.equal(breaker.state(), 'half-open');
  for (const p of probes) breaker.onResult(p, true);
  assert.equal(breaker.state(), 'closed');
});

test('a cancelled probe frees its slot instead of leaving the breaker half-open for ever', () => {
  const { clock, breaker, run } = setup({ ...config, half_open_requests: 1 });
  for (let i = 0; i < 10; i++) run(false);
  clock.advance(30_000);
  const p = admit(breaker);
  assert.equal(breaker.tryAcquire().ok, false);
  breaker.cancel(p);
  const p2 = admit(breaker);
  breaker.onResult(p2, true);
  assert.equal(breaker.state(), 'closed');
});

test('closed admissions are one shared object (no allocation per request)', () => {
  const { breaker } = setup();
  assert.equal(breaker.tryAcquire(), breaker.tryAcquire());
});

test('snapshot shows state, window counts and time left open', () => {
  const { clock, breaker, run } = setup();
  for (let i = 0; i < 10; i++) run(false);
  clock.advance(10_000);
  const s = breaker.snapshot();
  assert.equal(s.state, 'open');
  assert.equal(s.openForMs, 20_000);
});
