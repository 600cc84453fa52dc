import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FakeClock } from '../clock.ts';
import type { OutlierConfig } from '../config/resolve.ts';
import { ConsecutiveFailureOutlier } from './outlier.ts';

const config: OutlierConfig = {
  consecutive_failures: 3,
  base_ejection: 10_000,
  max_ejection: 60_000,
  eject_last: false,
};

function fail(o: ConsecutiveFailureOutlier, id: number, times: number): number {
  let ms = 0;
  for (let i = 0; i < times; i++) ms = o.onFailure(id, true);
  return ms;
}

test('consecutive failures eject; a success in between resets the count', () => {
  const o = new ConsecutiveFailureOutlier(config, 2, new FakeClock());
  assert.equal(fail(o, 0, 2), 0);
  o.onSuccess(0);
  assert.equal(fail(o, 0, 2), 0);
  assert.equal(o.isEjected(0), false);
  assert.equal(o.onFailure(0, true), 10_000);
  assert.equal(o.isEjected(0), true);
  assert.equal(o.isEjected(1), false);
});

test('ejections end when due; repeats double up to max_ejection', () => {
  const clock = new FakeClock();
  const o = new ConsecutiveFailureOutlier(config, 1, clock);
  const restored: number[] = [];
  const lengths: number[] = [];
  for (let round = 0; round < 5; round++) {
    const ms = fail(o, 0, 3);
    lengths.push(ms);
    assert.equal(o.nextRestoreAt(), clock.now() + ms);
    clock.advance(ms - 1);
    o.restoreDue((id) => restored.push(id));
    assert.equal(o.isEjected(0), true, 'not before its time');
    clock.advance(1);
    o.restoreDue((id) => restored.push(id));
    assert.equal(o.isEjected(0), false);
  }
  assert.deepEqual(lengths, [10_000, 20_000, 40_000, 60_000, 60_000]);
  assert.deepEqual(restored, [0, 0, 0, 0, 0]);
  assert.equal(o.nextRestoreAt(), Number.POSITIVE_INFINITY);
});

test('the back-off decays: one step per max_ejection spent in rotation', () => {
  const clock = new FakeClock();
  const o = new ConsecutiveFailureOutlier(config, 1, clock);
  for (const ms of [10_000, 20_000, 40_000]) {
    assert.equal(fail(o, 0, 3), ms);
    clock.advance(ms);
    o.restoreDue(() => {});
  }
  clock.advance(2 * 60_000); // n: 3 → 1
  assert.equal(fail(o, 0, 3), 20_000);
});

test('failures while ejected (stragglers) are ignored; mayEject=false counts but keeps the target', () => {
  const clock = new FakeClock();
  const o = new ConsecutiveFailureOutlier(config, 1, clock);
  assert.equal(fail(o, 0, 3), 10_000);
  assert.equal(fail(o, 0, 10), 0);
  clock.advance(10_000);
  o.restoreDue(() => {});
  assert.equal(o.state(0).consecutiveFailures, 0, 'a fresh start after the ejection');
  for (let i = 0; i < 5; i++) assert.equal(o.onFailure(0, false), 0);
  assert.equal(o.isEjected(0), false);
  assert.equal(o.onFailure(0, true), 20_000, 'ejected as soon as it is no longer the last one');
});
