import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { FakeClock, systemClock } from '../clock.ts';
import { ConcurrencyLimiter } from './concurrency-limiter.ts';

const MARGIN = 400; // ms allowed after a deadline on a busy 2-core machine
const NONE = Number.POSITIVE_INFINITY;

test('a free slot is taken synchronously: true, not a promise', () => {
  const l = new ConcurrencyLimiter(2, 1_000, systemClock);
  assert.equal(l.acquire(NONE), true);
  assert.equal(l.acquire(NONE), true);
  assert.equal(l.inflight, 2);
  const p = l.acquire(NONE);
  assert.ok(p instanceof Promise);
  assert.equal(l.queued, 1);
  l.release(); // handed to the waiter
  assert.equal(l.inflight, 2);
  assert.equal(l.queued, 0);
  l.release();
  l.release();
  assert.equal(l.inflight, 0);
  return p.then((ok) => assert.equal(ok, true));
});

test('refused at once when no wait is possible', () => {
  const clock = new FakeClock();
  const full = (queueTimeout: number) => {
    const l = new ConcurrencyLimiter(1, queueTimeout, clock);
    l.acquire(NONE);
    return l;
  };
  assert.equal(full(0).acquire(NONE), false, 'queue_timeout 0');
  assert.equal(full(1_000).acquire(clock.now()), false, 'deadline already reached');
  assert.equal(full(1_000).acquire(NONE, AbortSignal.abort()), false, 'signal already aborted');
});

test('waiters are served in FIFO order', async () => {
  const l = new ConcurrencyLimiter(1, 5_000, systemClock);
  assert.equal(l.acquire(NONE), true);
  const order: number[] = [];
  const waits = [0, 1, 2, 3, 4].map((i) =>
    (l.acquire(NONE) as Promise<boolean>).then((ok) => {
      assert.equal(ok, true);
      order.push(i);
    }),
  );
  for (let i = 0; i < 5; i++) {
    l.release();
    await waits[i];
  }
  l.release();
  assert.deepEqual(order, [0, 1, 2, 3, 4]);
  assert.equal(l.inflight, 0);
});

test('a wait ends near queue_timeout, or near the deadline when that is sooner', async () => {
  const l = new ConcurrencyLimiter(1, 150, systemClock);
  l.acquire(NONE);
  let t = performance.now();
  assert.equal(await l.acquire(NONE), false);
  let waited = performance.now() - t;
  assert.ok(waited >= 145 && waited < 150 + MARGIN, `waited ${waited}ms for queue_timeout 150ms`);
  t = performance.now();
  assert.equal(await l.acquire(t + 60), false);
  waited = performance.now() - t;
  assert.ok(waited >= 55 && waited < 60 + MARGIN, `waited ${waited}ms for a deadline 60ms away`);
  assert.equal(l.queued, 0);
  assert.equal(l.inflight, 1);
});

test('an aborted waiter leaves the queue and the next one gets the slot', async () => {
  const l = new ConcurrencyLimiter(1, 5_000, systemClock);
  l.acquire(NONE);
  const ac = new AbortController();
  const first = l.acquire(NONE, ac.signal) as Promise<boolean>;
  const second = l.acquire(NONE) as Promise<boolean>;
  assert.equal(l.queued, 2);
  ac.abort();
  assert.equal(await first, false);
  assert.equal(l.queued, 1);
  l.release();
  assert.equal(await second, true);
  assert.equal(l.inflight, 1);
  l.release();
  l.release(); // one release too many: clamped, never a spare slot
  assert.equal(l.inflight, 0);
  assert.equal(l.acquire(NONE), true);
  assert.equal(l.acquire(NONE, undefined) instanceof Promise, true);
});

test('never exceeds max under a random hammer of holders, timeouts and aborts', async () => {
  const max = 4;
  const l = new ConcurrencyLimiter(max, 30, systemClock);
  let current = 0;
  let peak = 0;
  let granted = 0;
  let refused = 0;
  const task = async (i: number) => {
    const ac = new AbortController();
    if (i % 7 === 0) setTimeout(() => ac.abort(), Math.random() * 20);
    const r = l.acquire(NONE, ac.signal);
    const ok = r === true || (r !== false && (await r));
    if (!ok) {
      refused++;
      return;
    }
    granted++;
    current++;
    peak = Math.max(peak, current);
    assert.ok(current <= max, `in flight ${current} > ${max}`);
    assert.ok(l.inflight <= max);
    if (Math.random() < 0.5) await sleep(Math.random() * 4);
    else await Promise.resolve();
    current--;
    l.release();
  };
  const tasks: Promise<void>[] = [];
  for (let i = 0; i < 600; i++) {
    tasks.push(task(i));
    if (i % 50 === 0) await sleep(1);
  }
  await Promise.all(tasks);
  assert.equal(peak, max);
  assert.equal(granted + refused, 600);
  assert.ok(granted > max, `granted ${granted}`);
  assert.equal(l.inflight, 0);
  assert.equal(l.queued, 0);
});
