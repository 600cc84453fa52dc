import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { declaredLengthBody } from './declared-length.ts';

async function drain(r: Readable): Promise<{ bytes: string; error?: string }> {
  const chunks: Buffer[] = [];
  try {
    for await (const c of r) chunks.push(c as Buffer);
    return { bytes: Buffer.concat(chunks).toString() };
  } catch (err) {
    return { bytes: Buffer.concat(chunks).toString(), error: (err as Error).message };
  }
}

test('a body of exactly its content-length passes whole', async () => {
  const got = await drain(declaredLengthBody(Readable.from([Buffer.from('ab'), Buffer.from('cd')]), 4));
  assert.deepEqual(got, { bytes: 'abcd' });
});

test('the last byte waits for the end of the client stream', async () => {
  const src = new Readable({ read() {} });
  const out = declaredLengthBody(src, 3);
  const seen: string[] = [];
  out.on('data', (c: Buffer) => seen.push(c.toString()));
  src.push(Buffer.from('abc'));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(seen, ['ab']);
  src.push(null);
  await new Promise((r) => out.once('end', r));
  assert.deepEqual(seen, ['ab', 'c']);
});

test('longer than declared fails before the excess or the held byte goes on', async () => {
  const got = await drain(declaredLengthBody(Readable.from([Buffer.from('abcd')]), 3));
  assert.equal(got.bytes, '');
  assert.match(got.error ?? '', /longer than its content-length of 3/);
});

test('shorter than declared, or cut off, fails', async () => {
  const short = await drain(declaredLengthBody(Readable.from([Buffer.from('ab')]), 3));
  assert.match(short.error ?? '', /2 bytes, its content-length said 3/);
  const src = new Readable({ read() {} });
  const out = declaredLengthBody(src, 3);
  src.push(Buffer.from('abc'));
  setImmediate(() => src.destroy());
  const cut = await drain(out);
  assert.equal(cut.bytes, 'ab');
  assert.ok(cut.error);
});
