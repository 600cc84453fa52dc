import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { keyHash, loadKeys, loadUsers, parsePasswordHash } from './credentials.ts';

test('only bcrypt and scrypt (PHC) hashes are accepted; each refusal says why', () => {
  assert.equal((parsePasswordHash('$2y$10$' + 'a'.repeat(53)) as { kind: string }).kind, 'bcrypt');
  const scrypt = parsePasswordHash(
    `$scrypt$ln=15,r=8,p=1$${'c2FsdHNhbHQ'}$${Buffer.alloc(32, 7).toString('base64')}`,
  );
  assert.equal((scrypt as { kind: string; N: number }).kind, 'scrypt');
  assert.equal((scrypt as { N: number }).N, 32768);
  assert.match(parsePasswordHash('hunter2') as string, /plain-text passwords are refused/);
  assert.match(parsePasswordHash('$apr1$xyz$abc') as string, /MD5/);
  assert.match(parsePasswordHash('{SHA}abc=') as string, /SHA-1/);
  assert.match(parsePasswordHash('$2b$10$short') as string, /malformed bcrypt/);
  assert.match(parsePasswordHash('$2b$99$' + 'a'.repeat(53)) as string, /cost 99/);
});

test('files: comments and blank lines skipped; duplicates and malformed lines named by line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-cred-'));
  const users = join(dir, 'users');
  writeFileSync(users, `# team\n\nann:$2b$10$${'a'.repeat(53)}\nann:$2b$10$${'b'.repeat(53)}\n`);
  assert.throws(
    () => loadUsers(users),
    new RegExp(`^Error: ${users}:4: user "ann" is listed twice$|${users}:4: user "ann" is listed twice`),
  );
  const keys = join(dir, 'keys');
  writeFileSync(keys, 'a:key-number-one-000001\nb:key-number-one-000001\n');
  assert.throws(() => loadKeys(keys), /keys:2: key "b" is the same key as "a"/);
  writeFileSync(keys, 'a:short\n');
  assert.throws(() => loadKeys(keys), /keys:1: key "a" is shorter than 16 characters/);
  writeFileSync(keys, `a:key-number-one-000001\nb:sha256:${keyHash('another-key-0000001').toUpperCase()}\n`);
  const loaded = loadKeys(keys);
  // Only hashes are kept.
  assert.deepEqual([...loaded.values()], ['a', 'b']);
  assert.ok([...loaded.keys()].every((k) => /^[0-9a-f]{64}$/.test(k)));
  assert.equal(loaded.get(keyHash('another-key-0000001')), 'b');
  assert.throws(() => loadKeys(join(dir, 'none')), /none: file not found/);
});
