import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isJobId, newJobId, ownerHash, ownerMatches } from './ids.ts';

test('job ids: J + 24 base64url characters (144 random bits), all distinct', () => {
  const ids = new Set(Array.from({ length: 10_000 }, newJobId));
  assert.equal(ids.size, 10_000);
  for (const id of [...ids].slice(0, 100)) {
    assert.match(id, /^J[A-Za-z0-9_-]{24}$/);
    assert.equal(isJobId(id), true);
  }
  assert.equal(isJobId('J123'), false);
  assert.equal(isJobId('../etc/passwd'), false);
});

test('ownerHash: over Authorization and Cookie; absent both → public', () => {
  assert.equal(ownerHash({}), undefined);
  const a = ownerHash({ authorization: 'Bearer x' });
  assert.match(a ?? '', /^[0-9a-f]{64}$/);
  assert.equal(ownerHash({ authorization: 'Bearer x' }), a);
  assert.notEqual(ownerHash({ authorization: 'Bearer y' }), a);
  assert.notEqual(ownerHash({ cookie: 'Bearer x' }), a, 'which header carries a value matters');
  assert.notEqual(ownerHash({ authorization: 'Bearer x', cookie: 's=1' }), a);
  assert.notEqual(
    ownerHash({ authorization: 'a', cookie: 'b' }),
    ownerHash({ authorization: 'a\ncookie:1:b' }),
    'values cannot be shifted between headers',
  );
});

test('ownerMatches: public jobs for all, owned jobs for the same hash only', () => {
  const a = ownerHash({ authorization: 'A' });
  const b = ownerHash({ authorization: 'B' });
  assert.equal(ownerMatches(undefined, undefined), true);
  assert.equal(ownerMatches(undefined, a), true);
  assert.equal(ownerMatches(a, a), true);
  assert.equal(ownerMatches(a, b), false);
  assert.equal(ownerMatches(a, undefined), false);
  assert.equal(ownerMatches(a, 'short'), false);
});
