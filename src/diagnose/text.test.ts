import assert from 'node:assert/strict';
import { test } from 'node:test';
import { count } from './text.ts';

test('count groups digits as en-US does', () => {
  for (const n of [
    0,
    7,
    12,
    999,
    1000,
    12345,
    999999,
    1000000,
    6250000,
    -1,
    -1234567,
    2 ** 53 - 1,
    1.5,
    1e21,
  ])
    assert.equal(count(n), n.toLocaleString('en-US'), String(n));
});
