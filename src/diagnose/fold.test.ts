import assert from 'node:assert/strict';
import { test } from 'node:test';
import { foldedHash, foldPath, foldPieces } from './fold.ts';

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
