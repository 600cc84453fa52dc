import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gcra, LocalRateLimiter, rateLimitHeader, ratePolicy } from './rate-limit.ts';

const policy = ratePolicy('10/s', 5, { kind: 'client_ip' });

test('a full bucket lets exactly burst requests through at once, then one per interval', () => {
  let t = 1_000;
  const rl = new LocalRateLimiter({ now: () => t });
  const results = Array.from({ length: 8 }, () => rl.take('k', policy));
  assert.deepEqual(
    results.map((d) => d.allowed),
    [true, true, true, true, true, false, false, false],
  );
  assert.deepEqual(
    results.slice(0, 5).map((d) => d.remaining),
    [4, 3, 2, 1, 0],
  );
  const refused = results[5];
  assert.equal(refused.remaining, 0);
  assert.ok(Math.abs(refused.retryAfterMs - 100) < 1e-6, String(refused.retryAfterMs));
  t += 99;
  assert.equal(rl.take('k', policy).allowed, false, 'still empty 99 ms later');
  t += 1;
  assert.equal(rl.take('k', policy).allowed, true, 'one token after 100 ms');
  assert.equal(rl.take('k', policy).allowed, false);
  t += 500;
  assert.equal(
    Array.from({ length: 6 }, () => rl.take('k', policy)).filter((d) => d.allowed).length,
    5,
    'refilled to burst after burst·interval',
  );
});

test('buckets are per key', () => {
  const t = 0;
  const rl = new LocalRateLimiter({ now: () => t });
  for (let i = 0; i < 5; i++) assert.ok(rl.take('a', policy).allowed);
  assert.equal(rl.take('a', policy).allowed, false);
  assert.ok(rl.take('b', policy).allowed);
});

test('a million distinct keys keep at most maxBuckets buckets (least recently used evicted)', () => {
  let t = 0;
  const rl = new LocalRateLimiter({ maxBuckets: 1_000, now: () => t });
  for (let i = 0; i < 1_000_000; i++) {
    rl.take(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, policy);
    if ((i & 1023) === 0) t++;
  }
  assert.equal(rl.size, 1_000);
  assert.equal(rl.evictions, 999_000);
  // A key used recently survives a flood of others that evicts older ones.
  const rl2 = new LocalRateLimiter({ maxBuckets: 3, now: () => 0 });
  for (let i = 0; i < 5; i++) rl2.take('hot', policy);
  rl2.take('x', policy);
  rl2.take('hot', policy); // touched: most recent again
  rl2.take('y', policy);
  rl2.take('z', policy); // evicts 'x', the least recently used
  assert.equal(rl2.take('hot', policy).allowed, false, 'the hot bucket was kept (still empty)');
});

test('RateLimit headers follow draft-ietf-httpapi-ratelimit-headers (q, w; r, t in seconds rounded up)', () => {
  assert.equal(policy.policyHeader, '"default";q=5;w=1');
  assert.equal(ratePolicy('1/m', 3, { kind: 'route' }).policyHeader, '"default";q=3;w=180');
  const [refused] = gcra(1_500, 1_000, 100, 5);
  assert.equal(rateLimitHeader(refused), '"default";r=0;t=1');
  const [slow] = gcra(200_000, 1_000, 60_000, 3);
  assert.equal(slow.allowed, false);
  assert.equal(Math.ceil(slow.retryAfterMs / 1000), 79);
});
