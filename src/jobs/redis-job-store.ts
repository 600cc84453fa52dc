/**
 * JobStore on Redis (SPEC §10): several gateway instances share one Redis server. See job-store.ts
 * for the contract; test/contracts/job-store.contract.ts checks it (against a real Redis).
 *
 * Every state transition is one Lua script (EVALSHA, loaded by ioredis `defineCommand`), so it is
 * atomic exactly like the SQLite store's transactions. Keys, under a prefix (default `sluice:`):
 *
 * - `{p}job:{id}`         hash: the record, one field per JobRecord field (absent = undefined);
 * - `{p}res:{id}:{token}` hash: the result body, field `0`, `1`, … → items of at most 64 KiB, written
 *                          under a random writer token; the job hash names the token only once
 *                          `completed` (a reader never sees a partial body);
 * - `{p}queued`           zset: due queue jobs, score `run_at`, member `{created_at, 0-padded}:{id}`
 *                          (so ties on `run_at` go oldest first);
 * - `{p}leases`           zset: running jobs, score `lease_until`;
 * - `{p}expiry`           zset: final jobs, score `expires_at`, member `{status}:{id}:{route}`;
 * - `{p}created`          zset: every job, score `created_at` (admin listing, newest first);
 * - `{p}counts`           hash: `{status}:{route}` → number of jobs (metrics);
 * - `{p}final`            pub/sub channel: the id of every job that became final, from any instance;
 * - `{p}cancelled`        pub/sub channel: `{instance} {id}` of every cancellation (`onCancelled`: the
 *                          instance holding the upstream call aborts it).
 *
 * Time is the store's clock (injectable), passed to each script: Redis's own clock is never read.
 * A final job also gets a Redis TTL of `keep_ms` + a grace (default 1 day) as a backstop when no
 * janitor runs; `purgeExpired` deletes it on time.
 *
 * Failures: an operation waits at most `connectWaitMs` for a (re)connection and `commandTimeoutMs`
 * for a reply, and is never queued or retried by the client (a retried create could be committed
 * after the caller answered 503). Every failure is a JobStoreError (`store-unavailable`). The client
 * reconnects by itself.
 */

import { createHash, randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { Command, Redis, type RedisOptions } from 'ioredis';
import { FinalWaiters } from './final-waiters.ts';
import {
  abandonBody,
  type CompleteOutcome,
  isFinal,
  JOB_STATUSES,
  type JobCounts,
  type JobError,
  type JobRecord,
  type JobStatus,
  type JobStore,
  JobStoreError,
  type JobStoreOptions,
  letGoOnFailure,
  type NewJob,
  type RecoverOptions,
  type RecoveryReport,
  type ResultHead,
  type ResultMeta,
  resultTooLarge,
  type StreamedResult,
} from './job-store.ts';

/**
 * Largest item of a stored result body. Below the 64 KiB a socket read delivers, so that a chunk
 * read back is a view of the read buffer (the reply decoder copies replies spanning several reads):
 * bounded memory means little garbage too, not only few live buffers.
 */
export const CHUNK_BYTES = 64 * 1024 - 64;

export interface RedisJobStoreOptions extends JobStoreOptions {
  /** Prefix of every key (and the channel). Default `sluice:` (or the URL's `?prefix=`). */
  prefix?: string;
  /** How long an operation waits for a reply before failing `store-unavailable`. Default 2 s. */
  commandTimeoutMs?: number;
  /** How long an operation waits for the connection to be (re)established. Default 1 s. */
  connectWaitMs?: number;
  /** Redis TTL of a final job beyond its `keep_ms` (backstop for purgeExpired). Default 1 day. */
  ttlGraceMs?: number;
  /**
   * Honour `recoverInterrupted({ exclusive: true })`. Off by default: a Redis store is shared, and a
   * gateway starting up (which asks for exclusive recovery) must not fail the jobs another instance is
   * still serving; jobs of a dead instance are settled once their lease runs out. Turn it on only when
   * this instance is known to be the only one on this Redis and prefix.
   */
  allowExclusiveRecovery?: boolean;
  /** Extra ioredis options (tests). */
  redis?: RedisOptions;
}

/** A checked `redis://` / `rediss://` store URL: the connection URL and the key prefix, if given. */
export interface RedisStoreUrl {
  readonly url: string;
  readonly prefix?: string;
}

/**
 * Parses `redis[s]://[[user]:password@]host[:port][/db][?prefix=P]`; throws an Error saying what is
 * wrong. The password may come from `${ENV}` (interpolated by the loader).
 */
export function parseRedisStoreUrl(url: string): RedisStoreUrl {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error('expected redis://[:password@]host[:port][/db]');
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new Error('expected redis:// or rediss://');
  if (u.hostname === '') throw new Error('a Redis URL needs a host: redis://host:port/db');
  if (u.pathname !== '' && u.pathname !== '/' && !/^\/\d{1,5}$/.test(u.pathname)) {
    throw new Error(`database "${u.pathname.slice(1)}" is not a number: redis://host:port/db`);
  }
  if (u.hash !== '') throw new Error('a Redis URL has no #fragment');
  let prefix: string | undefined;
  for (const [k, v] of u.searchParams) {
    if (k !== 'prefix' || v === '')
      throw new Error(`unknown option ${k}=${v} (supported: prefix=KEY_PREFIX)`);
    prefix = v;
  }
  u.search = '';
  return { url: u.href, prefix };
}

/** Why `url` is not a usable Redis store URL, or undefined. */
export function redisStoreProblem(url: string): string | undefined {
  try {
    parseRedisStoreUrl(url);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

// ---- Lua -----------------------------------------------------------------------------------------
// ARGV[1] is always the key prefix. Integers are formatted with %d: Lua's default number formatting
// would turn large timestamps into exponent notation.

const PRELUDE = `
local P = ARGV[1]
local function S(n) return string.format('%d', n) end
local function jk(id) return P .. 'job:' .. id end
local function rk(id, tok) return P .. 'res:' .. id .. ':' .. tok end
local function count(route, status, d)
  local f = status .. ':' .. route
  if redis.call('HINCRBY', P .. 'counts', f, d) <= 0 then redis.call('HDEL', P .. 'counts', f) end
end
local function qm(key, id)
  local c = redis.call('HGET', key, 'created_at')
  return string.rep('0', 16 - #c) .. c .. ':' .. id
end
local function final(key, id, status, now, grace)
  local h = redis.call('HMGET', key, 'status', 'route', 'keep_ms')
  local keep = tonumber(h[3])
  count(h[2], h[1], -1)
  count(h[2], status, 1)
  redis.call('HSET', key, 'status', status, 'updated_at', S(now), 'expires_at', S(now + keep))
  redis.call('HDEL', key, 'lease_owner', 'lease_until')
  redis.call('ZREM', P .. 'queued', qm(key, id))
  redis.call('ZREM', P .. 'leases', id)
  redis.call('ZADD', P .. 'expiry', S(now + keep), status .. ':' .. id .. ':' .. h[2])
  redis.call('PEXPIRE', key, S(keep + grace))
  redis.call('PUBLISH', P .. 'final', id)
  return keep
end
local function toQueue(key, id, now, runAt)
  local h = redis.call('HMGET', key, 'route', 'keep_ms', 'mode')
  count(h[1], 'running', -1)
  count(h[1], 'queued', 1)
  redis.call('HSET', key, 'status', 'queued', 'run_at', S(runAt), 'updated_at', S(now),
    'expires_at', S(now + tonumber(h[2])))
  redis.call('HDEL', key, 'lease_owner', 'lease_until')
  redis.call('ZREM', P .. 'leases', id)
  if h[3] == 'queue' then redis.call('ZADD', P .. 'queued', S(runAt), qm(key, id)) end
end
local function orphan(key, now, excl, inst)
  local h = redis.call('HMGET', key, 'status', 'lease_owner', 'lease_until')
  if h[1] ~= 'running' then return false end
  if not h[3] or tonumber(h[3]) < now then return true end
  if excl == '1' then
    if not h[2] then return true end
    if h[2] ~= inst and string.sub(h[2], 1, #inst + 1) ~= inst .. ':' then return true end
  end
  return false
end
`;

const SCRIPTS = {
  // P, id, lease_until ('' if none), field, value, ...
  sluiceCreate: `
local id = ARGV[2]
local key = jk(id)
if redis.call('EXISTS', key) == 1 then return redis.error_reply('ERR duplicate job id ' .. id) end
redis.call('HSET', key, unpack(ARGV, 4))
local h = redis.call('HMGET', key, 'status', 'mode', 'route', 'run_at', 'created_at')
count(h[3], h[1], 1)
redis.call('ZADD', P .. 'created', h[5], id)
if h[1] == 'queued' and h[2] == 'queue' then redis.call('ZADD', P .. 'queued', h[4], qm(key, id)) end
if h[1] == 'running' then redis.call('ZADD', P .. 'leases', ARGV[3], id) end
return 1`,
  // P, id, now, owner, lease
  sluiceMarkRunning: `
local id = ARGV[2]
local key = jk(id)
if redis.call('HGET', key, 'status') ~= 'queued' then return 0 end
local now = tonumber(ARGV[3])
local u = S(now + tonumber(ARGV[5]))
local h = redis.call('HMGET', key, 'route', 'keep_ms')
count(h[1], 'queued', -1)
count(h[1], 'running', 1)
redis.call('ZREM', P .. 'queued', qm(key, id))
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSET', key, 'status', 'running', 'lease_owner', ARGV[4], 'lease_until', u,
  'updated_at', S(now), 'expires_at', S(now + tonumber(h[2])))
redis.call('ZADD', P .. 'leases', u, id)
return 1`,
  // P, now, owner, lease
  sluiceClaim: `
local now = tonumber(ARGV[2])
for i = 1, 100 do
  local m = redis.call('ZRANGEBYSCORE', P .. 'queued', '-inf', ARGV[2], 'LIMIT', 0, 1)[1]
  if not m then return false end
  redis.call('ZREM', P .. 'queued', m)
  local id = string.match(m, ':(.*)$')
  local key = jk(id)
  local h = redis.call('HMGET', key, 'status', 'mode', 'route')
  if h[1] == 'queued' and h[2] == 'queue' then
    count(h[3], 'queued', -1)
    count(h[3], 'running', 1)
    local u = S(now + tonumber(ARGV[4]))
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HSET', key, 'status', 'running', 'lease_owner', ARGV[3], 'lease_until', u, 'updated_at', ARGV[2])
    redis.call('ZADD', P .. 'leases', u, id)
    return redis.call('HGETALL', key)
  end
end
return false`,
  // P, owner, now, lease, id...  → one 0/1 per id
  sluiceRenew: `
local out = {}
local u = S(tonumber(ARGV[3]) + tonumber(ARGV[4]))
for i = 5, #ARGV do
  local key = jk(ARGV[i])
  local h = redis.call('HMGET', key, 'status', 'lease_owner')
  if h[1] == 'running' and h[2] == ARGV[2] then
    redis.call('HSET', key, 'lease_until', u)
    redis.call('ZADD', P .. 'leases', u, ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out`,
  // P, id, owner, now, delay
  sluiceRequeue: `
local key = jk(ARGV[2])
local h = redis.call('HMGET', key, 'status', 'lease_owner')
if h[1] ~= 'running' or h[2] ~= ARGV[3] then return 0 end
local now = tonumber(ARGV[4])
toQueue(key, ARGV[2], now, now + tonumber(ARGV[5]))
return 1`,
  // P, id, owner ('' = any), now, grace, error
  sluiceFail: `
local key = jk(ARGV[2])
local h = redis.call('HMGET', key, 'status', 'lease_owner')
if h[1] ~= 'queued' and h[1] ~= 'running' then return false end
if ARGV[3] ~= '' and h[2] ~= ARGV[3] then return false end
redis.call('HSET', key, 'error', ARGV[6])
final(key, ARGV[2], 'failed', tonumber(ARGV[4]), tonumber(ARGV[5]))
return redis.call('HGETALL', key)`,
  // P, id, now, grace, instance
  sluiceCancel: `
local key = jk(ARGV[2])
local st = redis.call('HGET', key, 'status')
if st ~= 'queued' and st ~= 'running' then return false end
final(key, ARGV[2], 'cancelled', tonumber(ARGV[3]), tonumber(ARGV[4]))
redis.call('PUBLISH', P .. 'cancelled', ARGV[5] .. ' ' .. ARGV[2])
return redis.call('HGETALL', key)`,
  // P, id, token, owner ('' = any), ttl, chunk → 1 stored, 0 not ours any more (staging dropped)
  sluiceStage: `
local key = jk(ARGV[2])
local rkey = rk(ARGV[2], ARGV[3])
local h = redis.call('HMGET', key, 'status', 'lease_owner')
if h[1] ~= 'running' or (ARGV[4] ~= '' and h[2] ~= ARGV[4]) then
  redis.call('DEL', rkey)
  return 0
end
redis.call('HSET', rkey, S(redis.call('HLEN', rkey)), ARGV[6])
redis.call('PEXPIRE', rkey, ARGV[5])
return 1`,
  // P, id, token, owner ('' = any), now, grace, meta[, last chunk]
  sluiceComplete: `
local id = ARGV[2]
local key = jk(id)
local rkey = rk(id, ARGV[3])
local h = redis.call('HMGET', key, 'status', 'lease_owner')
if h[1] ~= 'running' or (ARGV[4] ~= '' and h[2] ~= ARGV[4]) then
  redis.call('DEL', rkey)
  return false
end
if ARGV[8] then redis.call('HSET', rkey, S(redis.call('HLEN', rkey)), ARGV[8]) end
redis.call('HSET', key, 'result_meta', ARGV[7], 'result_token', ARGV[3])
redis.call('HDEL', key, 'error')
local keep = final(key, id, 'completed', tonumber(ARGV[5]), tonumber(ARGV[6]))
if redis.call('EXISTS', rkey) == 1 then redis.call('PEXPIRE', rkey, S(keep + tonumber(ARGV[6]))) end
return redis.call('HGETALL', key)`,
  // P, now, exclusive, inst, limit → id, route, mode, ... of orphans
  sluiceOrphans: `
local now = tonumber(ARGV[2])
local ids
if ARGV[3] == '1' then
  ids = redis.call('ZRANGE', P .. 'leases', 0, -1)
else
  ids = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[5]))
end
local out = {}
for _, id in ipairs(ids) do
  local key = jk(id)
  if redis.call('HGET', key, 'status') ~= 'running' then
    redis.call('ZREM', P .. 'leases', id)
  elseif orphan(key, now, ARGV[3], ARGV[4]) then
    local h = redis.call('HMGET', key, 'route', 'mode')
    out[#out + 1] = id
    out[#out + 1] = h[1]
    out[#out + 1] = h[2]
  end
end
return out`,
  // P, id, now, exclusive, inst, grace, error → 'requeued' | record | nil
  sluiceSettle: `
local id = ARGV[2]
local key = jk(id)
local now = tonumber(ARGV[3])
if not orphan(key, now, ARGV[4], ARGV[5]) then return false end
local h = redis.call('HMGET', key, 'mode', 'idempotent')
if h[1] == 'queue' and h[2] == '1' then
  toQueue(key, id, now, now)
  return 'requeued'
end
redis.call('HSET', key, 'error', ARGV[7])
final(key, id, 'failed', now, tonumber(ARGV[6]))
return redis.call('HGETALL', key)`,
  // P, now, limit → number deleted
  sluicePurge: `
local ms = redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(ms) do
  local status, id, route = string.match(m, '^(%a+):([^:]+):(.*)$')
  local key = jk(id)
  local tok = redis.call('HGET', key, 'result_token')
  if tok then redis.call('DEL', rk(id, tok)) end
  redis.call('DEL', key)
  redis.call('ZREM', P .. 'created', id)
  redis.call('ZREM', P .. 'expiry', m)
  count(route, status, -1)
end
return #ms`,
} as const;

type ScriptName = keyof typeof SCRIPTS;

const SHA = Object.fromEntries(
  Object.entries(SCRIPTS).map(([k, lua]) => [
    k,
    createHash('sha1')
      .update(PRELUDE + lua)
      .digest('hex'),
  ]),
) as Record<ScriptName, string>;

/**
 * A command whose Buffer arguments go to the socket as they are, instead of being copied into one
 * buffer with the rest of the command as ioredis does: a result body is written without a copy.
 */
class ZeroCopyCommand extends Command {
  readonly #args: readonly (string | Buffer)[];
  constructor(name: string, args: (string | Buffer)[]) {
    super(name, args, { replyEncoding: null });
    this.#args = args;
  }
  override toWritable(socket: object): string {
    const s = socket as { write(chunk: string | Buffer): boolean; cork(): void; uncork(): void };
    let head = `*${this.#args.length + 1}\r\n$${Buffer.byteLength(this.name)}\r\n${this.name}\r\n`;
    s.cork();
    for (const a of this.#args) {
      if (typeof a === 'string') {
        head += `$${Buffer.byteLength(a)}\r\n${a}\r\n`;
      } else {
        s.write(`${head}$${a.length}\r\n`);
        s.write(a);
        head = '\r\n';
      }
    }
    // The caller writes the rest (still corked): one segment on the wire.
    process.nextTick(() => s.uncork());
    return head;
  }
}
type Reply = Buffer | null | number | Reply[];

// ---- records -------------------------------------------------------------------------------------

const LIST_FIELDS = [
  'id',
  'route',
  'mode',
  'status',
  'created_at',
  'updated_at',
  'attempts',
  'owner_hash',
  'error',
  'result_meta',
  'expires_at',
  'keep_ms',
  'max_result',
  'run_at',
  'lease_owner',
  'lease_until',
  'idempotent',
  'callback_url',
  'request_id',
  'received_at',
] as const;

function toRecord(f: Map<string, Buffer>): JobRecord {
  const s = (k: string) => f.get(k)?.toString();
  const n = (k: string) => Number(s(k));
  const rec: Record<string, unknown> = {
    id: s('id'),
    route: s('route'),
    mode: s('mode'),
    status: s('status'),
    created_at: n('created_at'),
    updated_at: n('updated_at'),
    attempts: n('attempts'),
    expires_at: n('expires_at'),
    keep_ms: n('keep_ms'),
    max_result: n('max_result'),
    run_at: n('run_at'),
    idempotent: s('idempotent') === '1',
  };
  if (f.has('owner_hash')) rec.owner_hash = s('owner_hash');
  if (f.has('error')) rec.error = JSON.parse(s('error')!);
  const request = s('request');
  if (request !== undefined) {
    const body = f.get('request_body');
    rec.request = body ? { ...JSON.parse(request), body } : JSON.parse(request);
  }
  if (f.has('result_meta')) rec.result_meta = JSON.parse(s('result_meta')!);
  if (f.has('lease_owner')) rec.lease_owner = s('lease_owner');
  if (f.has('lease_until')) rec.lease_until = n('lease_until');
  if (f.has('callback_url')) rec.callback_url = s('callback_url');
  if (f.has('request_id')) rec.request_id = s('request_id');
  if (f.has('received_at')) rec.received_at = n('received_at');
  return rec as unknown as JobRecord;
}

function fromFlat(flat: Reply): JobRecord | undefined {
  if (!Array.isArray(flat) || flat.length === 0) return undefined;
  const f = new Map<string, Buffer>();
  for (let i = 0; i + 1 < flat.length; i += 2) f.set(String(flat[i]), flat[i + 1] as Buffer);
  return toRecord(f);
}

function interrupted(route: string, queued: boolean): JobError {
  return {
    code: 'interrupted',
    status: 502,
    detail: queued
      ? `delivery of a queued request on route '${route}' was interrupted and is not safe to repeat ` +
        '(method not idempotent and no Idempotency-Key); the upstream may or may not have processed it'
      : `the gateway stopped while the upstream call of route '${route}' was in progress; ` +
        'the upstream may or may not have processed the request',
    proxy_error: 'proxy_internal_error',
  };
}

export class RedisJobStore implements JobStore {
  readonly instanceId: string;
  /** The Redis URL without its password. */
  readonly location: string;
  readonly #r: Redis;
  #sub: Redis | undefined;
  /** The SUBSCRIBE of both channels, sent once when the subscriber connection is made. */
  #subscribing: Promise<unknown> | undefined;
  #subscribed: Promise<void> | undefined;
  readonly #p: string;
  readonly #now: () => number;
  readonly #instanceLeaseMs: number;
  readonly #connectWaitMs: number;
  readonly #grace: number;
  readonly #allowExclusive: boolean;
  readonly #heartbeat: NodeJS.Timeout | undefined;
  /** Auto/prefer jobs this instance holds (leased to `instanceId`), renewed by the heartbeat. */
  readonly #held = new Set<string>();
  readonly #waiters = new FinalWaiters();
  readonly #finalListeners = new Set<(job: JobRecord) => void>();
  readonly #cancelListeners = new Set<(id: string) => void>();
  #lastError: Error | undefined;
  #closed = false;

  constructor(url: string, options: RedisJobStoreOptions = {}) {
    const parsed = parseRedisStoreUrl(url);
    const safe = new URL(parsed.url);
    if (safe.password) safe.password = '***';
    this.location = safe.href;
    this.#p = options.prefix ?? parsed.prefix ?? 'sluice:';
    const clock = options.now ?? Date.now;
    this.#now = () => Math.floor(clock());
    this.#instanceLeaseMs = Math.round(options.instanceLeaseMs ?? 10_000);
    this.#connectWaitMs = options.connectWaitMs ?? 1_000;
    this.#grace = Math.round(options.ttlGraceMs ?? 86_400_000);
    this.#allowExclusive = options.allowExclusiveRecovery ?? false;
    this.instanceId = `i${randomBytes(9).toString('base64url')}`;
    this.#r = new Redis(parsed.url, {
      // Fail fast instead of queueing: an operation waits for the connection in #ready (bounded),
      // and a command lost with its connection is not resent behind the caller's back.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: options.commandTimeoutMs ?? 2_000,
      connectTimeout: 5_000,
      retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2_000),
      // A write refused with READONLY: the address now leads to a replica (a managed Redis's endpoint
      // after a failover, before its DNS moved). That command fails (store-unavailable) and is not
      // resent; the connection is made again, so that it reaches the new primary once the name does.
      reconnectOnError: (err) => err.message.startsWith('READONLY'),
      ...options.redis,
    });
    // Every operation waiting for a reconnection listens for 'ready'.
    this.#r.setMaxListeners(0);
    this.#r.on('error', (err: Error) => {
      this.#lastError = err;
    });
    for (const [name, lua] of Object.entries(SCRIPTS)) {
      this.#r.defineCommand(name, { numberOfKeys: 0, lua: PRELUDE + lua });
    }
    const hb = options.heartbeatMs ?? Math.floor(this.#instanceLeaseMs / 3);
    if (hb > 0) {
      this.#heartbeat = setInterval(() => void this.#beat(), hb);
      this.#heartbeat.unref();
    }
  }

  // ---- plumbing ----------------------------------------------------------------------------------

  #error(err: unknown, what: string): JobStoreError {
    if (err instanceof JobStoreError) return err;
    const e = err as { message?: string };
    return new JobStoreError(`job store: ${what} failed: ${e?.message ?? String(err)}`, { cause: err });
  }

  /** Resolves once the connection is ready, waiting at most connectWaitMs; else store-unavailable. */
  async #ready(client: Redis = this.#r): Promise<void> {
    if (this.#closed) throw new JobStoreError('job store: closed');
    // 'ready' with a dead socket: the drop is not processed yet; wait for the reconnection.
    if (client.status === 'ready' && client.stream?.writable) return;
    if (client.status === 'end') throw new JobStoreError('job store: the Redis connection is closed');
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        client.off('ready', onReady);
        if (err) reject(err);
        else resolve();
      };
      const onReady = () => done();
      const timer = setTimeout(() => {
        const why = this.#lastError ? `: ${this.#lastError.message}` : '';
        done(
          new JobStoreError(
            `job store: Redis ${this.location} not reachable within ${this.#connectWaitMs} ms${why}`,
          ),
        );
      }, this.#connectWaitMs);
      client.on('ready', onReady);
    });
  }

  async #run<T>(what: string, fn: (r: Redis) => Promise<T>): Promise<T> {
    try {
      await this.#ready();
      return await fn(this.#r);
    } catch (err) {
      throw this.#error(err, what);
    }
  }

  /** Runs one of SCRIPTS with binary-safe replies. */
  #script(what: string, name: ScriptName, ...args: (string | number | Buffer)[]): Promise<Reply> {
    return this.#run(what, (r) => {
      const cmd = (r as unknown as Record<string, (...a: unknown[]) => Promise<Reply>>)[`${name}Buffer`];
      return cmd.call(r, this.#p, ...args);
    });
  }

  /** Like #script, for scripts carrying a body chunk (written without a copy). */
  #bodyScript(what: string, name: ScriptName, ...args: (string | number | Buffer)[]): Promise<Reply> {
    const argv = [SHA[name], '0', this.#p, ...args.map((a) => (typeof a === 'number' ? String(a) : a))];
    return this.#run(what, async (r) => {
      const send = () => r.sendCommand(new ZeroCopyCommand('evalsha', argv)) as Promise<Reply>;
      try {
        return await send();
      } catch (err) {
        if (!String((err as Error)?.message).startsWith('NOSCRIPT')) throw err;
        await r.script('LOAD', PRELUDE + SCRIPTS[name]);
        return await send();
      }
    });
  }

  #key(id: string): string {
    return `${this.#p}job:${id}`;
  }

  /** Wakes waiters and, for final states, the onFinal listeners. Call after the commit only. */
  #changed(job: JobRecord): void {
    if (!isFinal(job.status)) return;
    this.#held.delete(job.id);
    this.#waiters.wake(job.id, job);
    for (const l of this.#finalListeners) {
      try {
        l(job);
      } catch {
        // A listener's failure is its own (callback.ts logs); it must not undo a committed transition.
      }
    }
  }

  async #beat(): Promise<void> {
    if (this.#closed || this.#held.size === 0) return;
    const ids = [...this.#held];
    try {
      const out = (await this.#script(
        'heartbeat',
        'sluiceRenew',
        this.instanceId,
        this.#now(),
        this.#instanceLeaseMs,
        ...ids,
      )) as number[];
      ids.forEach((id, i) => {
        // Refused: no longer ours (cancelled while a notification was missed, or settled elsewhere).
        // Still held means no local transition ended it meanwhile: its call must stop.
        if (out[i] !== 1 && this.#held.delete(id)) this.#cancelled(id);
      });
    } catch {
      // Transient: the lease is long enough to survive missed beats.
    }
  }

  /**
   * The subscriber connection, made once: `{p}final` (waiters of other instances wake on it) and
   * `{p}cancelled` (onCancelled). It waits for Redis as long as it takes (offline queue, no retry
   * limit) and ioredis subscribes again after every reconnection; what was published meanwhile is
   * caught up: waiters look again on 'ready', held jobs at the next heartbeat.
   */
  #subscriber(): Redis {
    if (this.#sub) return this.#sub;
    const sub = this.#r.duplicate({
      enableOfflineQueue: true,
      maxRetriesPerRequest: null,
      commandTimeout: undefined,
    });
    this.#sub = sub;
    sub.setMaxListeners(0);
    sub.on('error', () => {});
    const finalChannel = `${this.#p}final`;
    sub.on('message', (channel: string, msg: string) => {
      if (channel === finalChannel) this.#remoteFinal(msg);
      else this.#remoteCancelled(msg);
    });
    let first = true;
    sub.on('ready', () => {
      if (first) first = false;
      else for (const id of this.#waiters.ids()) this.#remoteFinal(id);
    });
    this.#subscribing = sub.subscribe(finalChannel, `${this.#p}cancelled`);
    this.#subscribing.catch(() => {}); // closed before it was sent: nothing to wait for any more
    return sub;
  }

  /** Waits (bounded by connectWaitMs) until the subscriber connection is subscribed (waitFinal). */
  #subscribe(): Promise<void> {
    if (this.#subscribed) return this.#subscribed;
    const sub = this.#subscriber();
    const p = (async () => {
      try {
        await this.#ready(sub);
        await this.#subscribing;
      } catch (err) {
        this.#subscribed = undefined;
        throw this.#error(err, 'waitFinal');
      }
    })();
    this.#subscribed = p;
    return p;
  }

  #remoteCancelled(msg: string): void {
    const at = msg.indexOf(' ');
    // This instance's own cancellations were reported when they were committed.
    if (at === -1 || msg.slice(0, at) === this.instanceId) return;
    this.#cancelled(msg.slice(at + 1));
  }

  #cancelled(id: string): void {
    this.#held.delete(id);
    for (const l of this.#cancelListeners) {
      try {
        l(id);
      } catch {
        // The listener's own failure: the cancellation is committed whatever it does.
      }
    }
  }

  #remoteFinal(id: string): void {
    if (!this.#waiters.has(id)) return;
    this.get(id).then(
      (job) => {
        if (!job || isFinal(job.status)) this.#waiters.wake(id, job);
      },
      () => {}, // transient: the waiter still ends at its deadline
    );
  }

  // ---- JobStore ----------------------------------------------------------------------------------

  async create(job: NewJob): Promise<JobRecord> {
    const now = this.#now();
    const running = job.status === 'running';
    const fields: [string, string | Buffer][] = [
      ['id', job.id],
      ['route', job.route],
      ['mode', job.mode],
      ['status', job.status],
      ['created_at', String(now)],
      ['updated_at', String(now)],
      ['attempts', running ? '1' : '0'],
      ['expires_at', String(now + Math.round(job.keep_ms))],
      ['keep_ms', String(Math.round(job.keep_ms))],
      ['max_result', String(Math.floor(job.max_result))],
      ['run_at', String(now)],
      ['idempotent', job.idempotent ? '1' : '0'],
    ];
    if (job.owner_hash !== undefined) fields.push(['owner_hash', job.owner_hash]);
    if (job.request) {
      const { method, path, headers } = job.request;
      fields.push(['request', JSON.stringify({ method, path, headers })]);
      if (job.request.body) fields.push(['request_body', Buffer.from(job.request.body)]);
    }
    const leaseUntil = running ? now + this.#instanceLeaseMs : undefined;
    if (running) {
      fields.push(['lease_owner', this.instanceId], ['lease_until', String(leaseUntil)]);
    }
    if (job.callback_url !== undefined) fields.push(['callback_url', job.callback_url]);
    if (job.request_id !== undefined) fields.push(['request_id', job.request_id]);
    if (job.received_at !== undefined) fields.push(['received_at', String(Math.floor(job.received_at))]);
    await this.#script('create', 'sluiceCreate', job.id, leaseUntil ?? '', ...fields.flat());
    if (running) this.#held.add(job.id);
    return toRecord(new Map(fields.map(([k, v]) => [k, typeof v === 'string' ? Buffer.from(v) : v])));
  }

  async get(id: string): Promise<JobRecord | undefined> {
    return fromFlat(await this.#run('get', (r) => r.hgetallBuffer(this.#key(id)).then(flatten)));
  }

  async markRunning(id: string): Promise<boolean> {
    const ok =
      (await this.#script(
        'markRunning',
        'sluiceMarkRunning',
        id,
        this.#now(),
        this.instanceId,
        this.#instanceLeaseMs,
      )) === 1;
    if (ok) this.#held.add(id);
    return ok;
  }

  complete(
    id: string,
    head: ResultHead,
    body: AsyncIterable<Buffer | Uint8Array> | Readable,
    owner?: string,
  ): Promise<CompleteOutcome> {
    return letGoOnFailure(this.#held, id, this.#complete(id, head, body, owner));
  }

  async #complete(
    id: string,
    head: ResultHead,
    body: AsyncIterable<Buffer | Uint8Array> | Readable,
    owner?: string,
  ): Promise<CompleteOutcome> {
    let job: { route: string; max_result: number };
    try {
      const [status, leaseOwner, route, maxResult] = await this.#run('complete', (r) =>
        r.hmget(this.#key(id), 'status', 'lease_owner', 'route', 'max_result'),
      );
      if (status !== 'running' || (owner !== undefined && leaseOwner !== owner)) {
        abandonBody(body);
        return 'refused';
      }
      job = { route: route!, max_result: Number(maxResult) };
    } catch (err) {
      abandonBody(body);
      throw err;
    }
    const token = randomBytes(12).toString('base64url');
    const who = owner ?? '';
    const discard = () => {
      this.#r.del(`${this.#p}res:${id}:${token}`).catch(() => {
        // Leftovers expire with the staging TTL.
      });
    };
    let size = 0;
    let fill = 0;
    let pending: Buffer | undefined;
    // Staged items expire on their own if this process dies before completing.
    const stageTtl = 3_600_000;
    try {
      for await (const piece of body as AsyncIterable<Buffer | Uint8Array>) {
        size += piece.byteLength;
        if (size > job.max_result) {
          discard();
          return (await this.fail(id, resultTooLarge(job), owner)) ? 'too-large' : 'refused';
        }
        let off = 0;
        while (off < piece.byteLength) {
          pending ??= Buffer.allocUnsafe(CHUNK_BYTES);
          const n = Math.min(CHUNK_BYTES - fill, piece.byteLength - off);
          pending.set(piece.subarray(off, off + n), fill);
          fill += n;
          off += n;
          if (fill === CHUNK_BYTES) {
            // Stored only while still ours: a cancellation (or a lost lease) stops storing at once.
            const kept = await this.#bodyScript('complete', 'sluiceStage', id, token, who, stageTtl, pending);
            fill = 0;
            if (kept !== 1) return 'refused';
          }
        }
      }
    } catch (err) {
      discard();
      throw err;
    }
    const meta: ResultMeta = {
      status: head.status,
      headers: head.headers.map(([k, v]) => [k, v] as const),
      size,
    };
    const args: (string | number | Buffer)[] = [
      id,
      token,
      who,
      this.#now(),
      this.#grace,
      JSON.stringify(meta),
    ];
    if (fill > 0) args.push(pending!.subarray(0, fill));
    let done: JobRecord | undefined;
    try {
      done = fromFlat(await this.#bodyScript('complete', 'sluiceComplete', ...args));
    } catch (err) {
      discard();
      throw err;
    }
    if (!done) return 'refused';
    this.#changed(done);
    return 'completed';
  }

  fail(id: string, error: JobError, owner?: string): Promise<boolean> {
    return letGoOnFailure(this.#held, id, this.#fail(id, error, owner));
  }

  async #fail(id: string, error: JobError, owner?: string): Promise<boolean> {
    const rec = fromFlat(
      await this.#script(
        'fail',
        'sluiceFail',
        id,
        owner ?? '',
        this.#now(),
        this.#grace,
        JSON.stringify(error),
      ),
    );
    if (rec) this.#changed(rec);
    return rec !== undefined;
  }

  async cancel(id: string): Promise<boolean> {
    const rec = fromFlat(
      await this.#script('cancel', 'sluiceCancel', id, this.#now(), this.#grace, this.instanceId),
    );
    if (rec) {
      this.#changed(rec);
      this.#cancelled(id);
    }
    return rec !== undefined;
  }

  async readResult(id: string): Promise<StreamedResult | undefined> {
    const [status, metaJson, token] = await this.#run('readResult', (r) =>
      r.hmget(this.#key(id), 'status', 'result_meta', 'result_token'),
    );
    if (status !== 'completed' || !metaJson || !token) return undefined;
    const meta = JSON.parse(metaJson) as ResultMeta;
    const key = `${this.#p}res:${id}:${token}`;
    const read = (seq: number) => this.#run('readResult', (r) => r.hgetBuffer(key, String(seq)));
    async function* chunks(): AsyncGenerator<Buffer> {
      let left = meta.size;
      for (let seq = 0; left > 0; seq++) {
        const data = await read(seq);
        if (!data) throw new JobStoreError(`job store: the result of job ${id} disappeared while being read`);
        left -= data.byteLength;
        yield data;
      }
    }
    return { meta, body: chunks() };
  }

  async claim(workerId: string, leaseMs: number): Promise<JobRecord | undefined> {
    return fromFlat(await this.#script('claim', 'sluiceClaim', this.#now(), workerId, Math.round(leaseMs)));
  }

  async renew(id: string, workerId: string, leaseMs: number): Promise<boolean> {
    const out = (await this.#script(
      'renew',
      'sluiceRenew',
      workerId,
      this.#now(),
      Math.round(leaseMs),
      id,
    )) as number[] | null;
    return out?.[0] === 1;
  }

  async requeue(id: string, workerId: string, delayMs: number): Promise<boolean> {
    const delay = Math.max(0, Math.round(delayMs));
    return (await this.#script('requeue', 'sluiceRequeue', id, workerId, this.#now(), delay)) === 1;
  }

  async recoverInterrupted(options: RecoverOptions = {}): Promise<RecoveryReport> {
    const now = this.#now();
    const excl = options.exclusive && this.#allowExclusive ? '1' : '0';
    const found = (await this.#script(
      'recoverInterrupted',
      'sluiceOrphans',
      now,
      excl,
      this.instanceId,
      1_000,
    )) as Buffer[];
    const ended: JobRecord[] = [];
    let requeued = 0;
    for (let i = 0; i + 2 < found.length; i += 3) {
      const id = found[i].toString();
      const error = interrupted(found[i + 1].toString(), found[i + 2].toString() === 'queue');
      // Checked again inside the script: the holder may have renewed or ended it meanwhile.
      const out = await this.#script(
        'recoverInterrupted',
        'sluiceSettle',
        id,
        now,
        excl,
        this.instanceId,
        this.#grace,
        JSON.stringify(error),
      );
      if (Buffer.isBuffer(out)) requeued++;
      else {
        const rec = fromFlat(out);
        if (rec) ended.push(rec);
      }
    }
    for (const job of ended) this.#changed(job);
    return { failed: ended.length, requeued };
  }

  async purgeExpired(now = this.#now()): Promise<number> {
    let total = 0;
    for (;;) {
      const n = (await this.#script('purgeExpired', 'sluicePurge', Math.floor(now), 500)) as number;
      total += n;
      if (n < 500) return total;
    }
  }

  async list(filter: { status?: JobStatus; route?: string; limit: number }): Promise<JobRecord[]> {
    const limit = Math.max(1, Math.min(1000, Math.floor(filter.limit)));
    const out: JobRecord[] = [];
    const page = filter.status || filter.route ? 200 : limit;
    // Newest first through the `created` index; filters are applied to the records.
    for (let start = 0; out.length < limit; start += page) {
      const rows = await this.#run('list', async (r) => {
        const ids = await r.zrevrange(`${this.#p}created`, start, start + page - 1);
        if (ids.length === 0) return undefined;
        const p = r.pipeline();
        for (const id of ids) p.hmgetBuffer(this.#key(id), ...LIST_FIELDS);
        const res = (await p.exec()) ?? [];
        return res.map(([err, v]) => {
          if (err) throw err;
          return v as (Buffer | null)[];
        });
      });
      if (!rows) break;
      for (const vals of rows) {
        if (!vals[0]) continue; // expired meanwhile
        const f = new Map<string, Buffer>();
        LIST_FIELDS.forEach((k, i) => {
          if (vals[i] !== null) f.set(k, vals[i]!);
        });
        const rec = toRecord(f);
        if (filter.status && rec.status !== filter.status) continue;
        if (filter.route && rec.route !== filter.route) continue;
        out.push(rec);
        if (out.length === limit) break;
      }
      if (rows.length < page) break;
    }
    return out;
  }

  async counts(): Promise<JobCounts> {
    const all = await this.#run('counts', (r) => r.hgetall(`${this.#p}counts`));
    const out: JobCounts = {};
    for (const [field, v] of Object.entries(all)) {
      const at = field.indexOf(':');
      const status = field.slice(0, at) as JobStatus;
      const route = field.slice(at + 1);
      const n = Number(v);
      if (n <= 0) continue;
      const perRoute = (out[route] ??= Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as Record<
        JobStatus,
        number
      >);
      perRoute[status] = n;
    }
    return out;
  }

  async waitFinal(id: string, timeoutMs: number, signal?: AbortSignal): Promise<JobRecord | undefined> {
    // Subscribed before reading the state: a transition right after the read is not missed.
    if (timeoutMs > 0 && !signal?.aborted) await this.#subscribe();
    const first = await this.get(id);
    if (!first || isFinal(first.status) || timeoutMs <= 0) return first;
    if (signal?.aborted) return undefined;
    return this.#waiters.park(id, first, { timeoutMs, signal, atDeadline: () => this.get(id) });
  }

  onFinal(listener: (job: JobRecord) => void): () => void {
    this.#finalListeners.add(listener);
    return () => this.#finalListeners.delete(listener);
  }

  onCancelled(listener: (id: string) => void): () => void {
    this.#cancelListeners.add(listener);
    if (!this.#closed) this.#subscriber();
    return () => this.#cancelListeners.delete(listener);
  }

  /** Waiters currently parked in `waitFinal` (diagnostics and tests). */
  get waiters(): number {
    return this.#waiters.size;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#waiters.closeAll();
    this.#closed = true;
    this.#finalListeners.clear();
    this.#cancelListeners.clear();
    this.#held.clear();
    for (const c of [this.#r, this.#sub]) {
      if (!c) continue;
      if (c.status === 'ready') await c.quit().catch(() => c.disconnect());
      else c.disconnect();
    }
  }
}

/** HGETALL (Buffer variant) answers an object keyed by field; scripts answer flat arrays. */
function flatten(obj: Record<string, Buffer>): Buffer[] {
  const out: Buffer[] = [];
  for (const [k, v] of Object.entries(obj)) out.push(Buffer.from(k), v);
  return out;
}
