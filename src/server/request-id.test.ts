import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isValidRequestId, newRequestId } from './request-id.ts';

const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/;
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const timeOf = (id: string) => [...id.slice(0, 10)].reduce((t, c) => t * 32 + CROCKFORD.indexOf(c), 0);

test('ids are ULIDs: the time in the first 10 characters, distinct random parts, sorted by time', () => {
  const ms = Date.UTC(2026, 11, 3, 7, 0, 0, 123);
  const sameMs = Array.from({ length: 1_000 }, () => newRequestId(ms));
  assert.equal(new Set(sameMs).size, 1_000, 'no two ids of one millisecond are the same');
  for (const id of sameMs) {
    assert.match(id, ULID);
    assert.equal(timeOf(id), ms);
  }
  const later = newRequestId(ms + 1);
  assert.equal(timeOf(later), ms + 1, 'the time part follows the clock');
  assert.ok(later > sameMs[0], 'a later id sorts after');
  assert.equal(timeOf(newRequestId(ms)), ms, 'and back');
  assert.ok(isValidRequestId(later));
});

test("a client's id is kept only when it is reasonable", () => {
  assert.ok(isValidRequestId('abc-123_x.y:z@w/v+u=t'));
  assert.ok(!isValidRequestId(''));
  assert.ok(!isValidRequestId('a'.repeat(129)));
  assert.ok(!isValidRequestId('has space'));
  assert.ok(!isValidRequestId(undefined));
});
