/**
 * Rate-limit buckets in Redis, shared by every gateway instance on the same server and prefix
 * (`store: redis://…`). One round trip per request: a Lua script (ioredis `defineCommand`, so EVALSHA
 * with a fallback to EVAL when the server does not know it yet) runs the same GCRA step as
 * LocalRateLimiter on the Redis server's clock (`TIME`, so instances with skewed clocks agree) and sets
 * a TTL of the time the bucket takes to be full again (a full bucket is no key at all).
 *
 * Keys: `{prefix}rl:{route}:{key}` holding the theoretical arrival time in microseconds.
 *
 * When Redis cannot answer (down, or slower than `commandTimeoutMs`): the request is ALLOWED (fail
 * open: a rate limit protects the upstream from excess, it must not take the route down with Redis),
 * logged once per outage and counted in `sluice_rate_limit_store_errors_total`. Requests that arrive
 * while the first connection is being made wait for it (at most `commandTimeoutMs`).
 */
import { Redis, type RedisOptions } from 'ioredis';
import { parseRedisStoreUrl } from '../jobs/redis-job-store.ts';
import type { Logger } from '../observability/logger.ts';
import type { Decision, RateLimiter, RatePolicy } from './rate-limit.ts';

const GCRA_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local base = tat
if base < now then base = now end
local nxt = base + interval
local allow_at = nxt - burst * interval
if allow_at > now then
  return {0, 0, string.format('%d', base - now), string.format('%d', allow_at - now)}
end
local remaining = math.floor((now - allow_at) / interval + 1e-9)
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
return {1, remaining, string.format('%d', nxt - now), '0'}
`;

type GcraReply = [number, number, string, string];

interface GcraRedis extends Redis {
  sluiceGcra(key: string, intervalUs: number, burst: number): Promise<GcraReply>;
}

/** Requests allowed because the Redis limiter could not answer (for the metric). */
export let rateLimitStoreErrors = 0;

export interface RedisRateLimiterOptions {
  logger?: Logger;
  /** Longest wait for Redis's answer before the request is allowed. Default 250 ms. */
  commandTimeoutMs?: number;
  /** Key prefix (default the URL's `?prefix=`, else `sluice:`). */
  prefix?: string;
  redis?: RedisOptions;
}

export class RedisRateLimiter implements RateLimiter {
  readonly url: string;
  readonly #r: GcraRedis;
  readonly #p: string;
  readonly #logger: Logger | undefined;
  readonly #waitMs: number;
  /** Until the first connection is up: requests wait for it (at most the command timeout). */
  #connecting: Promise<void> | undefined;
  #down = false;

  constructor(url: string, options: RedisRateLimiterOptions = {}) {
    const parsed = parseRedisStoreUrl(url);
    this.url = url;
    this.#p = `${options.prefix ?? parsed.prefix ?? 'sluice:'}rl:`;
    this.#logger = options.logger;
    this.#waitMs = options.commandTimeoutMs ?? 250;
    this.#r = new Redis(parsed.url, {
      // A request never waits for a reconnection: without a connection, the command fails at once.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: this.#waitMs,
      connectTimeout: 2_000,
      retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2_000),
      ...options.redis,
    }) as GcraRedis;
    this.#r.on('error', () => {});
    this.#r.on('ready', () => {
      if (!this.#down) return;
      this.#down = false;
      this.#logger?.info(
        { store: safeUrl(parsed.url) },
        'rate limits: Redis is back, buckets are shared again',
      );
    });
    this.#r.defineCommand('sluiceGcra', { numberOfKeys: 1, lua: GCRA_LUA });
    this.#connecting = new Promise<void>((resolve) => {
      const done = () => {
        this.#connecting = undefined;
        resolve();
      };
      // The first connection attempt decides: up, or failed (then requests fail open at once).
      this.#r.once('ready', done);
      this.#r.once('error', done);
      this.#r.once('end', done);
    });
  }

  take(bucketKey: string, policy: RatePolicy): Promise<Decision> {
    const connecting = this.#connecting;
    if (connecting === undefined) return this.#take(bucketKey, policy);
    // Right after start the connection is not up yet: wait for it rather than fail open at once.
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      connecting,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.#waitMs);
      }),
    ]).then(() => {
      clearTimeout(timer);
      return this.#take(bucketKey, policy);
    });
  }

  #take(bucketKey: string, policy: RatePolicy): Promise<Decision> {
    return this.#r.sluiceGcra(this.#p + bucketKey, Math.round(policy.intervalMs * 1000), policy.burst).then(
      (reply) => ({
        allowed: reply[0] === 1,
        remaining: Number(reply[1]),
        resetMs: Number(reply[2]) / 1000,
        retryAfterMs: Number(reply[3]) / 1000,
      }),
      (err: Error) => {
        rateLimitStoreErrors++;
        if (!this.#down) {
          this.#down = true;
          this.#logger?.warn(
            { store: safeUrl(this.url), error: err.message },
            'rate limits: Redis cannot answer; requests are allowed (fail open) until it is back',
          );
        }
        return { allowed: true, remaining: policy.burst, resetMs: 0, retryAfterMs: 0 };
      },
    );
  }

  async close(): Promise<void> {
    this.#r.disconnect();
  }
}

function safeUrl(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = '***';
  return u.href;
}
