import assert from 'node:assert/strict';
import test from 'node:test';
import fc from 'fast-check';
import { headerName, headerText } from './header-text.ts';

test('headerText is Buffer#toString("latin1"), whatever was cached before (collisions included)', () => {
  // Few distinct lengths and bytes, so that many inputs share a slot and replace one another.
  const bytes = fc.uint8Array({ minLength: 0, maxLength: 60 });
  fc.assert(
    fc.property(fc.array(bytes, { minLength: 1, maxLength: 200 }), (bufs) => {
      for (const b of bufs) {
        const buf = Buffer.from(b);
        assert.equal(headerText(buf), buf.toString('latin1'));
        const out = { text: '', lower: '' };
        headerName(buf, out);
        assert.equal(out.text, buf.toString('latin1'));
        assert.equal(out.lower, buf.toString('latin1').toLowerCase());
      }
    }),
    { seed: 20261202, numRuns: 300 },
  );
});

test('a cached name keeps its case; the lower-case form is its own', () => {
  const out = { text: '', lower: '' };
  headerName(Buffer.from('Content-Type'), out);
  assert.deepEqual(out, { text: 'Content-Type', lower: 'content-type' });
  headerName(Buffer.from('content-type'), out);
  assert.deepEqual(out, { text: 'content-type', lower: 'content-type' });
  headerName(Buffer.from('Content-Type'), out);
  assert.deepEqual(out, { text: 'Content-Type', lower: 'content-type' });
  // A value cached by headerText, then met as a name, gets its lower-case form.
  assert.equal(headerText(Buffer.from('X-Mixed')), 'X-Mixed');
  headerName(Buffer.from('X-Mixed'), out);
  assert.deepEqual(out, { text: 'X-Mixed', lower: 'x-mixed' });
  // Strings pass through.
  headerName('Already-Text', out);
  assert.deepEqual(out, { text: 'Already-Text', lower: 'already-text' });
  assert.equal(headerText('v'), 'v');
});

test('values that differ only in bytes the slot hash does not sample share a slot and never mix', () => {
  // 20 bytes: the hash samples positions 0, 1, 4, 9, 14, 15 and 19; these differ at 7 only.
  const a = Buffer.from('x-forwarded-a-host-1', 'latin1');
  const b = Buffer.from('x-forwaXded-a-host-1', 'latin1');
  for (let i = 0; i < 5; i++) {
    assert.equal(headerText(a), a.toString('latin1'));
    assert.equal(headerText(b), b.toString('latin1'));
    const out = { text: '', lower: '' };
    headerName(b, out);
    assert.deepEqual(out, { text: 'x-forwaXded-a-host-1', lower: 'x-forwaxded-a-host-1' });
    headerName(a, out);
    assert.deepEqual(out, { text: 'x-forwarded-a-host-1', lower: 'x-forwarded-a-host-1' });
  }
});
