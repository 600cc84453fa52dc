import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FakeClock } from '../clock.ts';
import { BUCKETS, bucketOf, bucketValue, LatencyWindow, slotLayout } from './latency-window.ts';

/** Nearest-rank percentile of a sorted array: the reference the window approximates. */
const nearestRank = (sorted: number[], q: number) => sorted[Math.max(1, Math.ceil(q * sorted.length)) - 1];

/** Deterministic PRNG (mulberry32), so a failure reproduces. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('every value from 1 ms to 1 h is reported within 3.2% (bucket midpoint)', () => {
  const rand = rng(1);
  for (let i = 0; i < 100_000; i++) {
    const v = Math.exp(Math.log(1) + rand() * Math.log(3_600_000)); // log-uniform 1 ms … 1 h
    const got = bucketValue(bucketOf(v));
    assert.ok(Math.abs(got - v) / v <= 1 / 32 + 1e-9, `${v} ms reported as ${got}`);
  }
  // Bucket indexes are monotonic and within range; out-of-range values are clamped.
  let last = -1;
  for (let ms = 0; ms < 5_000; ms += 0.37) {
    const b = bucketOf(ms);
    assert.ok(b >= last && b < BUCKETS);
    last = b;
  }
  assert.equal(bucketOf(-5), 0);
  assert.equal(bucketOf(Number.NaN), 0);
  assert.equal(bucketOf(10 * 3_600_000), BUCKETS - 1);
});

test('p50/p95/p99 match a sorted-array reference within the bucket error', () => {
  const clock = new FakeClock(0);
  const w = new LatencyWindow(30_000, clock);
  const rand = rng(7);
  const samples: number[] = [];
  for (let i = 0; i < 20_000; i++) {
    // A realistic mix: a fast mode around 40 ms and a slow tail up to a few seconds.
    const v = rand() < 0.9 ? 20 + rand() * 40 : 200 + rand() ** 3 * 5_000;
    samples.push(v);
    w.record(v);
    if (i % 1_000 === 999) clock.advance(1_000); // spread over 20 seconds, all inside the window
  }
  samples.sort((a, b) => a - b);
  const s = w.stats();
  assert.equal(s.count, 20_000);
  for (const [q, got] of [
    [0.5, s.p50],
    [0.95, s.p95],
    [0.99, s.p99],
  ] as const) {
    const want = nearestRank(samples, q);
    assert.ok(Math.abs(got - want) / want <= 1 / 32 + 1e-9, `p${q * 100}: ${got} vs ${want}`);
    assert.equal(w.percentile(q), got);
  }
});

test('an empty window reads 0, a single sample is every percentile', () => {
  const w = new LatencyWindow(30_000, new FakeClock(0));
  assert.deepEqual(w.stats(), { count: 0, timeouts: 0, errors: 0, p50: 0, p95: 0, p99: 0 });
  w.record(123);
  const s = w.stats();
  assert.ok(Math.abs(s.p50 - 123) / 123 < 0.032 && s.p99 === s.p50);
});

test('slides: a second leaves the window exactly `window` seconds later', () => {
  const clock = new FakeClock(0);
  const w = new LatencyWindow(3_000, clock); // 3 slots of 1 s
  w.record(1_000, 'timeout', 2_000); // counts at its 2 s budget
  w.record(10, 'error');
  clock.advance(1_000);
  w.record(10);
  clock.advance(1_000);
  w.record(10);
  let s = w.stats();
  assert.deepEqual([s.count, s.timeouts, s.errors], [4, 1, 2]);
  assert.ok(Math.abs(s.p99 - 2_000) / 2_000 < 0.032, `timed-out request at its budget: ${s.p99}`);
  clock.advance(1_000); // the first second (timeout, error) leaves
  s = w.stats();
  assert.deepEqual([s.count, s.timeouts, s.errors], [2, 0, 0]);
  assert.ok(s.p99 < 11);
  clock.advance(999); // still in the same slot: nothing else leaves
  assert.equal(w.stats().count, 2);
  clock.advance(60_000); // a long idle gap clears everything at once
  assert.equal(w.stats().count, 0);
  w.record(5);
  assert.equal(w.stats().count, 1);
});

test('a timed-out request counts at no less than its budget; a late one at its own time', () => {
  const w = new LatencyWindow(30_000, new FakeClock(0));
  w.record(900, 'timeout', 1_000); // cut early (e.g. a read timeout): raised to the budget
  w.record(1_500, 'timeout', 1_000); // reported after the budget: its own time
  const s = w.stats();
  assert.ok(Math.abs(s.p50 - 1_000) / 1_000 < 0.032, String(s.p50));
  assert.ok(Math.abs(s.p99 - 1_500) / 1_500 < 0.032, String(s.p99));
});

test('memory is fixed: independent of traffic, at most 30 slots whatever the window', () => {
  const clock = new FakeClock(0);
  const w = new LatencyWindow(30_000, clock);
  const before = w.bytes;
  for (let i = 0; i < 200_000; i++) {
    w.record(i % 5_000);
    if (i % 10_000 === 0) clock.advance(1_000);
  }
  assert.equal(w.bytes, before);
  assert.ok(before < 64 * 1024, `${before} bytes per route`);
  assert.deepEqual(slotLayout(30_000), { slots: 30, slotMs: 1_000 });
  assert.deepEqual(slotLayout(3_000), { slots: 3, slotMs: 1_000 });
  assert.deepEqual(slotLayout(300_000), { slots: 30, slotMs: 10_000 });
  assert.equal(new LatencyWindow(3_600_000, clock).bytes, before);
});

test('a clock step backwards keeps filling the current slot', () => {
  const clock = {
    t: 10_000,
    now() {
      return this.t;
    },
  };
  const w = new LatencyWindow(3_000, clock);
  w.record(10);
  clock.t = 5_000;
  w.record(10);
  assert.equal(w.stats().count, 2);
});

test('countAbove: how many took longer than each threshold, timed-out ones at their budget', () => {
  const clock = new FakeClock(0);
  const w = new LatencyWindow(30_000, clock);
  for (const ms of [10, 20, 100, 300]) w.record(ms);
  w.record(50, 'timeout', 1_000); // counted at its 1 s budget
  assert.deepEqual(w.countAbove([5, 60, 250, 900, 5_000]), { count: 5, above: [5, 3, 2, 1, 0] });
  clock.advance(31_000);
  assert.deepEqual(w.countAbove([5]), { count: 0, above: [0] });
});

test('timeline: slot by slot, oldest first, each with its own percentiles and counts', () => {
  const clock = new FakeClock(0);
  const w = new LatencyWindow(15 * 60_000, clock);
  assert.equal(w.slotMs, 30_000);
  for (let i = 1; i <= 100; i++) w.record(i);
  clock.advance(30_000);
  w.record(2_000, 'timeout', 5_000);
  w.record(10, 'error');
  const points = w.timeline();
  assert.equal(points.length, 30);
  assert.deepEqual(
    points.slice(0, 28).map((p) => p.count),
    new Array(28).fill(0),
  );
  const [older, newest] = points.slice(28);
  assert.equal(newest.at - older.at, 30_000);
  assert.equal(newest.at, 30_000);
  assert.equal(older.count, 100);
  assert.ok(Math.abs(older.p50 - 50) <= 50 / 32 + 0.01 && Math.abs(older.p99 - 99) <= 99 / 32 + 0.01);
  assert.deepEqual([newest.count, newest.timeouts, newest.errors], [2, 1, 2]);
  assert.ok(Math.abs(newest.p99 - 5_000) <= 5_000 / 32, 'a timeout counts at its budget');
  // A slot that falls out of the window leaves the timeline.
  clock.advance(29 * 30_000);
  assert.equal(
    w.timeline().reduce((n, p) => n + p.count, 0),
    2,
  );
});
