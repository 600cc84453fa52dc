/**
 * RedisRateLimiter against the real Redis (db 11, a key prefix of its own): the same GCRA as the local
 * limiter on the server's clock, a TTL on every bucket, and fail open (logged once) when Redis is gone.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import pino from 'pino';
import { ratePolicy } from './rate-limit.ts';
import { RedisRateLimiter } from './redis-rate-limiter.ts';

const REDIS = 'redis://127.0.0.1:6379/11';

test('exactly burst pass, then one per interval, on the Redis clock; the bucket key has a TTL', async (t) => {
  const prefix = `sluice-test-rrl-${randomBytes(4).toString('hex')}:`;
  const rl = new RedisRateLimiter(REDIS, { prefix });
  const r = new Redis(REDIS);
  t.after(async () => {
    const keys = await r.keys(`${prefix}*`);
    if (keys.length > 0) await r.del(...keys);
    r.disconnect();
    await rl.close();
  });
  const policy = ratePolicy('10/s', 3, { kind: 'client_ip' });
  await r.ping();
  const first = await Promise.all(Array.from({ length: 5 }, () => rl.take('k', policy)));
  assert.deepEqual(
    first.map((d) => d.allowed),
    [true, true, true, false, false],
  );
  const refused = first[4];
  assert.ok(refused.retryAfterMs > 0 && refused.retryAfterMs <= 100, String(refused.retryAfterMs));
  const ttl = await r.pttl(`${prefix}rl:k`);
  assert.ok(ttl > 0 && ttl <= 302, `ttl ${ttl}`);
  await new Promise((resolve) => setTimeout(resolve, 150));
  assert.equal((await rl.take('k', policy)).allowed, true, 'a token after one interval');
  assert.equal((await rl.take('k', policy)).allowed, false);
});

test('when Redis cannot be reached every request is allowed and the outage is logged once', async () => {
  const lines: string[] = [];
  const logger = pino(
    { level: 'info' },
    new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    }),
  );
  const rl = new RedisRateLimiter('redis://127.0.0.1:1/0', { logger });
  const policy = ratePolicy('1/m', 1, { kind: 'route' });
  const started = performance.now();
  const decisions = await Promise.all(Array.from({ length: 5 }, () => rl.take('x', policy)));
  assert.ok(performance.now() - started < 1_000);
  assert.ok(decisions.every((d) => d.allowed));
  assert.equal(lines.filter((l) => l.includes('fail open')).length, 1, lines.join(''));
  await rl.close();
});
