import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LeastRequestBalancer } from './least-request.ts';
import { countPicks, seeded, targets } from './test-random.ts';

test('of two targets, the less loaded one is always picked', () => {
  const b = new LeastRequestBalancer(seeded(1));
  const c = targets(1, 1);
  c[0].inflight = 5;
  c[1].inflight = 2;
  assert.deepEqual(
    countPicks((x, e) => b.pick(x, e), c, 1_000),
    [0, 1_000],
  );
});

test('the most loaded of several targets is never picked, the least loaded most often', () => {
  const b = new LeastRequestBalancer(seeded(2));
  const c = targets(1, 1, 1, 1);
  c[0].inflight = 0;
  c[1].inflight = 3;
  c[2].inflight = 6;
  c[3].inflight = 9;
  const counts = countPicks((x, e) => b.pick(x, e), c, 12_000);
  assert.equal(counts[3], 0);
  // P2C: the least loaded wins every pair it is in: 3 of 6 pairs → half of the picks.
  assert.ok(Math.abs(counts[0] - 6_000) < 400, String(counts));
  assert.ok(counts[0] > counts[1] && counts[1] > counts[2], String(counts));
});

test('idle targets split evenly; at zero load the heavier weight wins', () => {
  const b1 = new LeastRequestBalancer(seeded(3));
  const even = countPicks((x, e) => b1.pick(x, e), targets(1, 1, 1), 9_000);
  for (const n of even) assert.ok(Math.abs(n - 3_000) < 300, String(even));
  const b = new LeastRequestBalancer(seeded(4));
  assert.deepEqual(
    countPicks((x, e) => b.pick(x, e), targets(1, 3), 100),
    [0, 100],
  );
});

test('under load, in-flight requests settle in proportion to weight', () => {
  // Closed loop: 60 requests always in flight; each step one random request completes and a new
  // one is picked. Equal service times, so a fair balancer keeps inflight ∝ weight.
  const rnd = seeded(5);
  const b = new LeastRequestBalancer(seeded(6));
  const c = targets(1, 2, 3);
  const inflight: number[] = [];
  for (let i = 0; i < 60; i++) {
    const t = b.pick(c) as (typeof c)[number];
    t.inflight++;
    inflight.push(t.id);
  }
  const picks = [0, 0, 0];
  for (let i = 0; i < 30_000; i++) {
    const k = Math.floor(rnd() * inflight.length);
    c[inflight[k]].inflight--;
    const t = b.pick(c) as (typeof c)[number];
    t.inflight++;
    inflight[k] = t.id;
    picks[t.id]++;
  }
  const total = picks[0] + picks[1] + picks[2];
  const share = picks.map((p) => p / total);
  assert.ok(Math.abs(share[0] - 1 / 6) < 0.04, String(share));
  assert.ok(Math.abs(share[1] - 2 / 6) < 0.04, String(share));
  assert.ok(Math.abs(share[2] - 3 / 6) < 0.04, String(share));
});

test('exclude is honoured: never picked while another exists, sampled evenly among the rest', () => {
  const b = new LeastRequestBalancer(seeded(7));
  const c = targets(1, 1, 1);
  c[1].inflight = 0; // the best one, but excluded
  c[0].inflight = 4;
  c[2].inflight = 4;
  const counts = countPicks((x, e) => b.pick(x, e), c, 3_000, c[1]);
  assert.equal(counts[1], 0);
  assert.ok(Math.abs(counts[0] - counts[2]) < 300, String(counts));
  // Two candidates, one excluded: the other, whatever its load.
  c[0].inflight = 100;
  assert.equal(b.pick([c[0], c[1]], c[1]), c[0]);
  assert.equal(b.pick([c[0], c[1]], c[0]), c[1]);
  assert.equal(b.pick([c[0]], c[0]), c[0]);
  assert.equal(b.pick([]), undefined);
});
