/**
 * Rate limits (SPEC §13): a token bucket per key, computed as GCRA (the generic cell rate algorithm:
 * one number per key, the "theoretical arrival time"), so a bucket is 8 bytes of state and the same
 * arithmetic runs in-process (LocalRateLimiter) and in a Redis script (RedisRateLimiter).
 *
 * With an emission interval T = 1/rate and a capacity of `burst` requests, a request at `now` is
 * allowed when `max(tat, now) + T - burst·T <= now`, and then moves `tat` on by T. A full bucket lets
 * exactly `burst` requests through at once; after that one more every T.
 */

/** A route's compiled `rate_limit`. */
export interface RatePolicy {
  /** Milliseconds between two requests at the sustained rate (1 / rate). */
  readonly intervalMs: number;
  /** Requests a full bucket lets through at once. */
  readonly burst: number;
  /** What the bucket is keyed by. `header` names a lower-case request header. */
  readonly key:
    | { readonly kind: 'client_ip' | 'identity' | 'route' }
    | { readonly kind: 'header'; readonly header: string };
  /** The `RateLimit-Policy` header value, precomputed. */
  readonly policyHeader: string;
  /** The rate as written (`100/s`), for messages. */
  readonly text: string;
}

export interface Decision {
  readonly allowed: boolean;
  /** Requests that could still be made right now. */
  readonly remaining: number;
  /** Milliseconds until the bucket is full again. */
  readonly resetMs: number;
  /** When refused: milliseconds until one request would be allowed; else 0. */
  readonly retryAfterMs: number;
}

/**
 * Where buckets live. `take` spends one token of `bucketKey` under `policy`; an implementation that
 * cannot answer (its store is down) decides itself whether that allows or refuses (see
 * RedisRateLimiter: it allows). Synchronous when the buckets are in this process.
 */
export interface RateLimiter {
  take(bucketKey: string, policy: RatePolicy): Decision | Promise<Decision>;
  close(): Promise<void>;
}

const UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000 };
export const RATE_PATTERN = '^\\d+(\\.\\d+)?/(s|m|h)$';

/** `100/s` → requests per millisecond; undefined when not of that form or not positive. */
export function parseRate(text: string): { perMs: number; count: number; unitMs: number } | undefined {
  const m = /^(\d+(?:\.\d+)?)\/(s|m|h)$/.exec(text);
  if (!m) return undefined;
  const count = Number(m[1]);
  if (!(count > 0)) return undefined;
  const unitMs = UNITS[m[2]];
  return { perMs: count / unitMs, count, unitMs };
}

/** The policy a route runs with; `name` becomes the policy's identifier in the headers. */
export function ratePolicy(text: string, burst: number, key: RatePolicy['key']): RatePolicy {
  const rate = parseRate(text);
  if (rate === undefined) throw new Error(`"${text}" is not a rate such as 100/s, 20/m or 1000/h`);
  // unit / count, not 1 / (count / unit): exact for whole counts, so burst·interval adds up exactly.
  const intervalMs = rate.unitMs / rate.count;
  // draft-ietf-httpapi-ratelimit-headers: q = quota (the bucket), w = window in seconds (the time it
  // takes to refill completely), both integers.
  const window = Math.max(1, Math.ceil((burst * intervalMs) / 1000));
  return Object.freeze({
    intervalMs,
    burst,
    key: Object.freeze(key),
    policyHeader: `"default";q=${burst};w=${window}`,
    text,
  });
}

/**
 * GCRA step shared by both limiters (the Lua script mirrors it): the decision for a request at `now`
 * on a bucket whose theoretical arrival time is `tat` (0 or in the past: full), and the new `tat`
 * (unchanged when refused).
 */
export function gcra(tat: number, now: number, intervalMs: number, burst: number): [Decision, number] {
  const base = tat > now ? tat : now;
  const next = base + intervalMs;
  const tau = burst * intervalMs;
  const allowAt = next - tau;
  // A nanosecond of slack: floating-point sums must not refuse a request that is exactly on time.
  if (allowAt - now > 1e-6) {
    return [{ allowed: false, remaining: 0, resetMs: base - now, retryAfterMs: allowAt - now }, tat];
  }
  const remaining = Math.floor((now - allowAt) / intervalMs + 1e-9);
  return [{ allowed: true, remaining, resetMs: next - now, retryAfterMs: 0 }, next];
}

/** The `RateLimit` header value of a decision (`"default";r=0;t=2`), `t` in whole seconds, rounded up. */
export function rateLimitHeader(d: Decision): string {
  const t = Math.ceil((d.allowed ? d.resetMs : d.retryAfterMs) / 1000);
  return `"default";r=${d.remaining};t=${t}`;
}

/** Most buckets one LocalRateLimiter keeps (about 100 bytes each): past it the least recently used go. */
export const MAX_LOCAL_BUCKETS = 100_000;

/**
 * Buckets in this process. Bounded: a Map in least-recently-used order (a touched key is moved to the
 * end), the oldest evicted past `maxBuckets`, so a million distinct client addresses cost at most
 * `maxBuckets` entries. An evicted bucket that was not yet full starts full again: under a flood of
 * distinct keys a returning client may get a fresh burst, never a wrong refusal.
 */
export class LocalRateLimiter implements RateLimiter {
  readonly #tat = new Map<string, number>();
  readonly #max: number;
  readonly #now: () => number;
  evictions = 0;

  constructor(options: { maxBuckets?: number; now?: () => number } = {}) {
    this.#max = options.maxBuckets ?? MAX_LOCAL_BUCKETS;
    this.#now = options.now ?? performance.now.bind(performance);
  }

  get size(): number {
    return this.#tat.size;
  }

  take(bucketKey: string, policy: RatePolicy): Decision {
    const now = this.#now();
    const map = this.#tat;
    const tat = map.get(bucketKey);
    const [decision, next] = gcra(tat ?? 0, now, policy.intervalMs, policy.burst);
    if (tat !== undefined) map.delete(bucketKey);
    else if (map.size >= this.#max) {
      // The first key in insertion order is the least recently used.
      for (const oldest of map.keys()) {
        map.delete(oldest);
        this.evictions++;
        break;
      }
    }
    map.set(bucketKey, next);
    return decision;
  }

  async close(): Promise<void> {
    this.#tat.clear();
  }
}
