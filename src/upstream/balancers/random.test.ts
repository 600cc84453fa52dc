import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RandomBalancer } from './random.ts';
import { countPicks, seeded, targets } from './test-random.ts';

test('weights are respected within 5% over 10,000 picks', () => {
  const b = new RandomBalancer(seeded(11));
  const counts = countPicks((x, e) => b.pick(x, e), targets(1, 2, 7), 10_000);
  const expected = [1_000, 2_000, 7_000];
  for (let i = 0; i < 3; i++) assert.ok(Math.abs(counts[i] - expected[i]) < 500, String(counts));
});

test('exclude is never picked while another exists; the rest keep their relative weights', () => {
  const b = new RandomBalancer(seeded(12));
  const c = targets(1, 5, 3);
  const counts = countPicks((x, e) => b.pick(x, e), c, 8_000, c[1]);
  assert.equal(counts[1], 0);
  assert.ok(Math.abs(counts[0] - 2_000) < 300, String(counts));
  assert.ok(Math.abs(counts[2] - 6_000) < 300, String(counts));
  assert.equal(b.pick([c[1]], c[1]), c[1]);
  assert.equal(b.pick([]), undefined);
});

test('a random source at its top end still returns a candidate', () => {
  const b = new RandomBalancer(() => 0.9999999999999999);
  const c = targets(1, 1);
  assert.equal(b.pick(c), c[1]);
  assert.equal(b.pick(c, c[1]), c[0]);
});

test('equal weights: uniform over the candidates, exclude honoured', () => {
  const b = new RandomBalancer(seeded(13));
  const c = targets(2, 2, 2, 2);
  const all = countPicks((x, e) => b.pick(x, e), c, 8_000);
  for (const n of all) assert.ok(Math.abs(n - 2_000) < 250, String(all));
  const rest = countPicks((x, e) => b.pick(x, e), c, 6_000, c[2]);
  assert.equal(rest[2], 0);
  for (const i of [0, 1, 3]) assert.ok(Math.abs(rest[i] - 2_000) < 250, String(rest));
});
