import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RoundRobinBalancer } from './round-robin.ts';
import { countPicks, targets } from './test-random.ts';

test('smooth weighted round-robin spreads a 5:1:1 cycle like nginx', () => {
  const b = new RoundRobinBalancer();
  const c = targets(5, 1, 1);
  const seq = Array.from({ length: 14 }, () => b.pick(c)?.name).join('');
  assert.equal(seq, 'aabacaa'.repeat(2));
});

test('equal weights give a plain rotation', () => {
  const b = new RoundRobinBalancer();
  const c = targets(1, 1, 1);
  assert.equal(Array.from({ length: 6 }, () => b.pick(c)?.name).join(''), 'abcabc');
});

test('weights are respected exactly over 10,000 picks', () => {
  const b = new RoundRobinBalancer();
  const c = targets(1, 2, 7);
  const counts = countPicks((x, e) => b.pick(x, e), c, 10_000);
  assert.deepEqual(counts, [1_000, 2_000, 7_000]);
});

test('exclude is skipped when another candidate exists, returned when it is the only one', () => {
  const b = new RoundRobinBalancer();
  const c = targets(1, 1, 1);
  for (let i = 0; i < 100; i++) assert.notEqual(b.pick(c, c[1]), c[1]);
  const counts = countPicks((x, e) => b.pick(x, e), c, 1_000, c[1]);
  assert.equal(counts[1], 0);
  assert.ok(Math.abs(counts[0] - counts[2]) <= 1);
  assert.equal(b.pick([c[2]], c[2]), c[2]);
  assert.equal(b.pick([], c[2]), undefined);
});

test('a changing candidate set (a target leaves and comes back) keeps the shares', () => {
  const b = new RoundRobinBalancer();
  const c = targets(3, 1, 1);
  countPicks((x) => b.pick(x), [c[0], c[2]], 37); // c[1] out for a while
  const counts = countPicks((x) => b.pick(x), c, 5_000);
  assert.ok(Math.abs(counts[0] - 3_000) <= 5, String(counts));
  assert.ok(Math.abs(counts[1] - 1_000) <= 5, String(counts));
});

test('ids beyond the initial score array are handled', () => {
  const b = new RoundRobinBalancer();
  const c = Array.from({ length: 40 }, (_, id) => ({ id, weight: 1, inflight: 0 }));
  const seen = new Set<number>();
  for (let i = 0; i < 40; i++) seen.add((b.pick(c) as { id: number }).id);
  assert.equal(seen.size, 40);
});

test('a new candidate array is re-examined: equal weights then unequal ones', () => {
  const b = new RoundRobinBalancer();
  const [a, c] = targets(1, 1);
  assert.deepEqual(
    countPicks((x) => b.pick(x), [a, c], 10),
    [5, 5],
  );
  const weighted = targets(3, 1);
  assert.deepEqual(
    countPicks((x) => b.pick(x), weighted, 400),
    [300, 100],
  );
});
