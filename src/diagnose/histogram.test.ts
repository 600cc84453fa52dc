import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LatencyHistogram, percentileOfSorted } from './histogram.ts';

test('percentiles stay within 0.4 % of the exact ones, over six decades', () => {
  const h = new LatencyHistogram();
  const values: number[] = [];
  let seed = 7;
  for (let i = 0; i < 50_000; i++) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const v = 10 ** ((seed / 2 ** 31) * 6 - 2); // 0.01 ms … 10 s, log-uniform
    values.push(v);
    h.record(v);
  }
  values.sort((a, b) => a - b);
  for (const p of [0.5, 0.9, 0.95, 0.99, 0.999]) {
    const exact = percentileOfSorted(values, p) as number;
    const got = h.percentile(p) as number;
    // 0.4 % of the value, or one 10 µs unit for the smallest values.
    assert.ok(Math.abs(got - exact) <= Math.max(0.004 * exact, 0.01), `p${p * 100}: ${got} vs ${exact}`);
  }
  assert.equal(h.max, values[values.length - 1]);
  assert.equal(h.count, 50_000);
});

test('percentiles never leave [min, max]; empty is null; junk is ignored', () => {
  const h = new LatencyHistogram();
  assert.equal(h.percentile(0.5), null);
  h.record(Number.NaN);
  h.record(-1);
  assert.equal(h.count, 0);
  for (const v of [1001, 1002, 1003]) h.record(v);
  const p50 = h.percentile(0.5) as number;
  assert.ok(p50 >= 1001 && p50 <= 1003, String(p50));
  assert.equal(h.percentile(1), 1003);
  assert.ok((h.percentile(0.01) as number) >= 1001);
  h.record(10 * 3_600_000); // 10 h: beyond the top bucket, max still exact
  assert.equal(h.max, 36_000_000);
  assert.equal(h.percentile(1), 36_000_000);
});

test('countAtOrAbove splits a bucket evenly and counts whole buckets above', () => {
  const h = new LatencyHistogram();
  for (let i = 1; i <= 100; i++) h.record(i * 10); // 10 … 1000 ms
  assert.equal(h.countAtOrAbove(0), 100);
  const top = h.countAtOrAbove(900); // 900 … 1000: 11, the bucket of 900 itself only partly
  assert.ok(top >= 10 && top <= 11, String(top));
  assert.equal(h.countAtOrAbove(2000), 0);
  const near = h.countAtOrAbove(505);
  assert.ok(near >= 49 && near <= 50, String(near));
});

test('percentileOfSorted: nearest rank', () => {
  const a = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  assert.equal(percentileOfSorted(a, 0.5), 5);
  assert.equal(percentileOfSorted(a, 0.9), 9);
  assert.equal(percentileOfSorted(a, 0.99), 10);
  assert.equal(percentileOfSorted([], 0.5), null);
});
