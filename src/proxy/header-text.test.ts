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
