import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FakeClock } from '../clock.ts';
import { WindowedRetryBudget } from './retry-budget.ts';

function drain(b: WindowedRetryBudget): number {
  let n = 0;
  while (b.tryRetry()) n++;
  return n;
}

test('with no traffic, the floor allows 3 retries per second', () => {
  const clock = new FakeClock(0);
  const b = new WindowedRetryBudget(0.2, clock);
  assert.equal(drain(b), 3);
  clock.advance(1_000);
  assert.equal(drain(b), 3);
});

test('under traffic, retries stay within budget × requests of the last 10 s', () => {
  const clock = new FakeClock(0);
  const b = new WindowedRetryBudget(0.2, clock);
  // 10 s of 100 requests per second, with retries asked for every time (an outage).
  let granted = 0;
  for (let s = 0; s < 10; s++) {
    for (let i = 0; i < 100; i++) {
      b.onRequest();
      if (b.tryRetry()) granted++;
    }
    clock.advance(1_000);
  }
  // 20% of 1000 requests, plus at most the floor in the first second(s).
  assert.ok(granted >= 200 && granted <= 200 + 3, String(granted));
  const s = b.snapshot();
  assert.equal(s.budget, 0.2);
});

test('the budget follows the window: old requests stop funding retries', () => {
  const clock = new FakeClock(0);
  const b = new WindowedRetryBudget(0.5, clock);
  for (let i = 0; i < 100; i++) b.onRequest();
  assert.equal(drain(b), 50);
  clock.advance(10_000); // requests and retries out of the window
  assert.equal(drain(b), 3); // only the floor
});

test('a budget of 0 leaves only the floor', () => {
  const clock = new FakeClock(0);
  const b = new WindowedRetryBudget(0, clock);
  for (let i = 0; i < 1_000; i++) b.onRequest();
  assert.equal(drain(b), 3);
});
