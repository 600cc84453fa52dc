import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  foldedHash,
  foldPath,
  foldPieces,
  foldRequestTarget,
  ID,
  piecesBytes,
  requestTargetEnd,
} from './fold.ts';

test('ids fold to :id; words, slugs and versions stay', () => {
  const cases: [string, string][] = [
    ['/api/users/123', '/api/users/:id'],
    ['/api/users/123/orders?page=2', '/api/users/:id/orders'],
    ['/orders/550e8400-e29b-41d4-a716-446655440000/pay', '/orders/:id/pay'],
    ['/objects/507f1f77bcf86cd799439011', '/objects/:id'], // Mongo ObjectId (hex, 24)
    ['/commits/9f1c2ab', '/commits/9f1c2ab'], // 7 hex: too short to be sure
    ['/commits/9f1c2ab8', '/commits/:id'],
    ['/files/deadbeef', '/files/deadbeef'], // hex letters only: a word
    ['/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV', '/jobs/:id'], // ULID
    ['/t/dGhpcyBpcyBhIHRva2VuMTIz', '/t/:id'], // base64
    ['/t/AbC123xyz_-QrStUvWx', '/t/:id'], // base64url, mixed case
    ['/blog/my-post-about-2024-and-more', '/blog/my-post-about-2024-and-more'], // slug
    ['/api/v1/users', '/api/v1/users'],
    ['/reports/2026-11-23', '/reports/:id'],
    ['/items/123.json', '/items/:id.json'],
    ['/static/app.3f9a1c2e.js', '/static/app.:id.js'],
    ['/api/v1.2/users', '/api/v1.2/users'],
    ['/', '/'],
    ['', '/'],
    ['/?q=1', '/'],
    ['/a/#frag', '/a/'],
    ['http://example.com:80/api/users/42?x', '/api/users/:id'],
    ['https://example.com', '/'],
    ['-', '-'],
    ['/users/%E2%82%AC123', '/users/%E2%82%AC123'],
    ['/a//1', '/a//:id'],
  ];
  for (const [input, want] of cases) assert.equal(foldPath(input), want, input);
});

test('a template is not folded, only its query dropped', () => {
  assert.equal(foldPath('/pets/{petId}/photos/2?x=1', true), '/pets/{petId}/photos/2');
});

test('the hash depends on the folded form only', () => {
  const hash = (s: string, seed = 1) => {
    const b = Buffer.from(s);
    foldPieces(b, 0, b.length, false, seed);
    return foldedHash();
  };
  assert.equal(hash('/users/1/orders'), hash('/users/999999/orders?page=3'));
  assert.equal(hash('/users/1'), hash('/users/:id'), 'a logged template is the same endpoint');
  assert.equal(hash('/static/app.3f9a1c2e.js'), hash('/static/app.0000ffff1.js'));
  assert.equal(hash('/'), hash(''));
  assert.notEqual(hash('/users/1'), hash('/users/1/'));
  assert.notEqual(hash('/users'), hash('/orders'));
  assert.notEqual(hash('/users/1', 1), hash('/users/1', 2), 'the seed (method) counts');
});

/** The rules of fold.ts written plainly (regexes, strings), to check the byte-level fold against. */
function isIdReference(s: string): boolean {
  if (s === '' || /[^0-9A-Za-z\-_.:,=+~]/.test(s) || !/[0-9]/.test(s)) return false;
  if (!/[A-Za-z=+~]/.test(s)) return true; // digits and separators
  if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s)) return true;
  if (/^[0-9a-f]{8,}$/i.test(s)) return true;
  if (/^[0-9a-hjkmnp-tv-z]{26}$/i.test(s)) return true; // ULID: Crockford base 32
  if (s.length >= 16 && !/[.:,]/.test(s)) return (/[a-z]/.test(s) && /[A-Z]/.test(s)) || !/[-_]/.test(s);
  return false;
}

function foldReference(target: string): string {
  let t = target;
  if (!t.startsWith('/')) {
    const m = /^[^/?#]*?:\/\/[^/?#]*/.exec(t);
    if (m) t = t.slice(m[0].length);
  }
  t = t.replace(/[?#].*$/s, '');
  if (t === '') return '/';
  return t
    .split('/')
    .map((seg) => {
      if (isIdReference(seg)) return ID;
      if (!seg.includes('.')) return seg;
      return seg
        .split('.')
        .map((part, i) => ((i === 0 || part.length >= 8) && isIdReference(part) ? ID : part))
        .join('.');
    })
    .join('/');
}

test('the fold agrees with the plainly written rules on random targets', () => {
  let seed = 7;
  const rand = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const pick = (s: string, n: number) => Array.from({ length: n }, () => s[rand(s.length)]).join('');
  const HEX = '0123456789abcdef';
  const SEGMENTS: (() => string)[] = [
    () => pick('0123456789', 1 + rand(8)),
    () => pick(HEX, 6 + rand(20)),
    () => pick('0123456789ABCDEF', 8 + rand(3)),
    () => `${pick(HEX, 8)}-${pick(HEX, 4)}-${pick(HEX, 4)}-${pick(HEX, 4)}-${pick(HEX, 12)}`,
    () => `${pick(HEX, 8)}-${pick(HEX, 4)}-${pick(HEX, 4)}-${pick('-g', 4)}-${pick(HEX, 12)}`,
    () => `${pick(HEX, 8)}-${pick(HEX, 4)}-${pick(HEX, 4)}-${pick(HEX, 4)}-${pick(HEX, 11)}${pick('g_', 1)}`,
    () => pick('0123456789ABCDEFGHJKMNPQRSTVWXYZ', 26),
    () => pick('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ', 26),
    () => pick('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_', 14 + rand(6)),
    () => pick('abcdefghijklmnopqrstuvwxyz0123456789=+~', 15 + rand(4)),
    () => ['users', 'api', 'v1', 'v1.2', 'orders', 'static', ':id', 'my-post-about-2024', 'a_b'][rand(9)],
    () =>
      `${['app', 'page35', '123', 'x', 'v2'][rand(5)]}.${pick(HEX, 4 + rand(8))}.${['js', 'json', 'html'][rand(3)]}`,
    () => `${pick('0123456789', 1 + rand(4))}.${['json', 'html', '5'][rand(3)]}`,
    () => `x.${pick('0123456789', 7 + rand(3))}`,
    () =>
      ['2026-11-23', '1.5', '1,2', '10:00', '1_000', '%E2%82%AC123', 'caf\u00e9', '\u65e5\u672c42'][rand(8)],
    () => '',
  ];
  const targets = ['', '/', '-', '*', 'http://example.com:80/api/1?x', 'https://h', 'h://'];
  for (let k = 0; k < 3000; k++) {
    const segs = Array.from({ length: 1 + rand(5) }, () => SEGMENTS[rand(SEGMENTS.length)]());
    let t = (rand(10) === 0 ? 'http://host.example' : '') + `/${segs.join('/')}`;
    if (rand(4) === 0) t += `?${['page=2', 'a=1&b=/x/1', '', 'q=a.b'][rand(4)]}`;
    if (rand(10) === 0) t += `#${['top', '/1'][rand(2)]}`;
    targets.push(t);
  }
  for (const t of targets) {
    assert.equal(foldPath(t), foldReference(t), t);
    // The request-line form: folded while its end is found, the same pieces and hash.
    const line = Buffer.from(`GET ${t} HTTP/1.1"`);
    const n = foldRequestTarget(line, 4, line.length, 99);
    if (!t.startsWith('/')) {
      assert.equal(n, -1, t);
      continue;
    }
    assert.equal(requestTargetEnd(), 4 + Buffer.byteLength(t), t);
    const fast = [piecesBytes(line, n).toString(), foldedHash()];
    const general = piecesBytes(line, foldPieces(line, 4, requestTargetEnd(), false, 99)).toString();
    assert.deepEqual(fast, [general, foldedHash()], t);
  }
});
