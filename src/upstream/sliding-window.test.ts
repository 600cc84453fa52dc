import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FakeClock } from '../clock.ts';
import { SlidingWindow } from './sliding-window.ts';

test('counts within the window and forgets buckets as time moves past them', () => {
  const clock = new FakeClock(0);
  const w = new SlidingWindow(3_000, 1_000, clock);
  w.add(1, 0);
  clock.advance(1_000);
  w.add(2, 1);
  clock.advance(1_000);
  w.add(4, 2);
  assert.equal(w.totalA(), 7);
  assert.equal(w.totalB(), 3);
  assert.equal(w.currentB(), 2);
  clock.advance(1_000); // the first bucket falls out
  assert.equal(w.totalA(), 6);
  assert.equal(w.currentB(), 0);
  clock.advance(1_999);
  assert.equal(w.totalA(), 4);
  clock.advance(10_000); // far past the window: everything is cleared at once
  assert.equal(w.totalA(), 0);
  assert.equal(w.totalB(), 0);
});

test('memory does not grow with traffic or time; reset forgets', () => {
  const clock = new FakeClock(123);
  const w = new SlidingWindow(10_000, 1_000, clock);
  for (let i = 0; i < 100_000; i++) {
    w.add(1, i % 2);
    clock.advance(1);
  }
  // The last 10 buckets: from second 90 to 100 of the run, the current one partly elapsed.
  assert.ok(w.totalA() > 9_000 && w.totalA() <= 10_000, String(w.totalA()));
  w.reset();
  assert.equal(w.totalA(), 0);
});

test('a window shorter than a bucket uses one bucket of the window length', () => {
  const clock = new FakeClock(0);
  const w = new SlidingWindow(500, 1_000, clock);
  assert.equal(w.bucketMs, 500);
  w.add(1, 1);
  clock.advance(500);
  assert.equal(w.totalA(), 0);
});
