/**
 * Where async jobs live between `202 Accepted` and the client's last poll (SPEC §5). The contract is
 * free of datastore types: SqliteJobStore (one instance) and RedisJobStore (several instances, SPEC §10)
 * implement it; both must pass test/contracts/job-store.contract.ts.
 *
 * State machine (every other transition is refused and leaves the job unchanged):
 *
 * ```
 *   queued ──claim/markRunning──▶ running ──complete──▶ completed
 *     ▲  │                          │  │  └────fail────▶ failed
 *     │  └──────cancel/fail───┐     │  └─────cancel────▶ cancelled
 *     └──requeue / lease lost─┼─────┘
 *                             ▼
 *                     cancelled / failed
 * ```
 *
 * `completed`, `failed` and `cancelled` are final: nothing changes a final job again, it is only
 * deleted by `purgeExpired` once `expires_at` has passed.
 *
 * Time: every timestamp is milliseconds since the Unix epoch, read from the store's clock (injectable,
 * see `JobStoreOptions.now`), never from the caller, so that leases and expiry are judged consistently.
 *
 * Failures: every operation that cannot reach or write the store rejects with a {@link JobStoreError}
 * (`code: 'store-unavailable'`). A caller that gets one while creating a job answers 503 with
 * Retry-After — never a 202.
 */
import type { Readable } from 'node:stream';
import type { Phase } from '../errors.ts';

export type JobStatus = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';

/** Jobs per route, then per status (every status present, 0 when none). */
export type JobCounts = Record<string, Record<JobStatus, number>>;

/** The error a job ends with when its result outgrows `max_result` (both stores). */
export function resultTooLarge(job: { readonly route: string; readonly max_result: number }): JobError {
  return {
    code: 'result-too-large',
    status: 502,
    detail: `the upstream response on route '${job.route}' exceeds the largest result kept (${job.max_result} bytes)`,
    proxy_error: 'http_response_body_size',
  };
}

export const JOB_STATUSES: readonly JobStatus[] = Object.freeze([
  'queued',
  'running',
  'completed',
  'failed',
  'cancelled',
]);

export function isFinal(status: JobStatus): boolean {
  return status === 'completed' || status === 'failed' || status === 'cancelled';
}

/**
 * How the job was started. `auto`/`prefer`: the gateway's exchange holds the upstream call itself (no
 * stored request); `queue`: the request is stored and delivered by queue workers.
 */
export type JobMode = 'auto' | 'prefer' | 'queue';

/**
 * Why a job failed, in the vocabulary of SPEC §4: enough to rebuild the problem+json a synchronous
 * request would have got.
 */
export interface JobError {
  /** Problem code: `upstream-timeout`, `upstream-unreachable`, `interrupted`, `result-too-large`, … */
  readonly code: string;
  /** HTTP status of that problem (504, 502, …). */
  readonly status: number;
  readonly detail: string;
  readonly phase?: Phase;
  /** The budget that expired, for timeouts. */
  readonly timeout_ms?: number;
  /** RFC 9209 Proxy-Status error token. */
  readonly proxy_error?: string;
}

/** The request of a `queue` job, as it will be delivered. Header names keep their case. */
export interface StoredRequest {
  readonly method: string;
  /** Path + query to send to the upstream target (after strip_prefix; target base path not included). */
  readonly path: string;
  readonly headers: readonly (readonly [string, string])[];
  readonly body?: Buffer;
}

/** Status line and headers of a result, as the upstream sent them minus hop-by-hop headers. */
export interface ResultHead {
  readonly status: number;
  readonly headers: readonly (readonly [string, string])[];
}

/** A stored result's head plus its body size in bytes. */
export interface ResultMeta extends ResultHead {
  readonly size: number;
}

export interface JobRecord {
  /** At least 128 random bits (see ids.ts). */
  readonly id: string;
  readonly route: string;
  readonly mode: JobMode;
  readonly status: JobStatus;
  readonly created_at: number;
  /** Last state change (or lease renewal of a running job). */
  readonly updated_at: number;
  /** Upstream calls started so far (a queue job's deliveries; 1 for an auto job). */
  readonly attempts: number;
  /** SHA-256 of the creating request's credentials (ids.ts `ownerHash`); absent: a public job. */
  readonly owner_hash?: string;
  /** Set when `status` is `failed`. */
  readonly error?: JobError;
  /** `queue` jobs only. */
  readonly request?: StoredRequest;
  /** Set when `status` is `completed`. */
  readonly result_meta?: ResultMeta;
  /**
   * When a final job (and its result) may be deleted: the moment it became final + `keep_ms`. While
   * the job is not final this is `updated_at + keep_ms` and has no effect: only final jobs are purged.
   */
  readonly expires_at: number;
  /** How long the job is kept once final (route `async.keep`). */
  readonly keep_ms: number;
  /** Largest result body stored (route `async.max_result`); larger ends the job `failed`. */
  readonly max_result: number;
  /** `queue`: not delivered before this time (retry backoff). */
  readonly run_at: number;
  /** Holder of a `running` job: a queue worker id, or the instance holding an auto job's call. */
  readonly lease_owner?: string;
  /** The lease of a `running` job ends here unless renewed. */
  readonly lease_until?: number;
  /** Safe to send again: idempotent method or an `Idempotency-Key` was present. */
  readonly idempotent: boolean;
  /** Where to POST the job when it ends (already checked against the route's allow-list). */
  readonly callback_url?: string;
  /** X-Request-Id of the request that created the job (its access-log lines carry it). */
  readonly request_id?: string;
  /** When that request arrived (ms since the epoch): a job's time is counted from there. */
  readonly received_at?: number;
}

/** What `create` needs; the store fills in timestamps, attempts and leases. */
export interface NewJob {
  readonly id: string;
  readonly route: string;
  readonly mode: JobMode;
  /**
   * `queued` for queue mode; `running` for auto/prefer (the upstream call is already in flight: the
   * job is leased to this store instance, whose heartbeat keeps the lease alive until it ends).
   */
  readonly status: 'queued' | 'running';
  readonly owner_hash?: string;
  readonly request?: StoredRequest;
  readonly keep_ms: number;
  readonly max_result: number;
  readonly idempotent: boolean;
  readonly callback_url?: string;
  readonly request_id?: string;
  readonly received_at?: number;
}

export interface StreamedResult {
  readonly meta: ResultMeta;
  /** The body, read from the store a chunk at a time (bounded memory). */
  readonly body: AsyncIterable<Buffer>;
}

/** Result of `complete`. */
export type CompleteOutcome =
  /** The result is stored and the job is `completed`. */
  | 'completed'
  /** The body exceeded `max_result`: nothing stored, the job is `failed` with `result-too-large`. */
  | 'too-large'
  /** The job was not `running` (cancelled meanwhile, or the lease went elsewhere): nothing stored. */
  | 'refused';

export interface RecoveryReport {
  /** Jobs ended `failed` with `interrupted`. */
  readonly failed: number;
  /** Queue jobs put back to `queued` (safe to deliver again). */
  readonly requeued: number;
}

export interface RecoverOptions {
  /**
   * This store instance is the only one using the store (one SQLite gateway at startup): every
   * `running` job not held by this instance is treated as interrupted at once, without waiting for
   * its lease to run out. Never pass this when several instances share the store.
   */
  readonly exclusive?: boolean;
}

/**
 * Stops and releases a result body that will not be read (a refused or retried result). Errors the
 * destruction itself raises (undici reports an unread body as "Request aborted") are swallowed.
 */
export function abandonBody(body: AsyncIterable<unknown> | Readable): void {
  const r = body as Partial<Readable>;
  if (typeof r.destroy === 'function') {
    r.on?.('error', () => {});
    r.destroy();
  } else {
    void (body as AsyncIterable<unknown>)[Symbol.asyncIterator]().return?.();
  }
}

/** Failure of the store itself. `code` is always `store-unavailable`; the cause is kept. */
export class JobStoreError extends Error {
  readonly code = 'store-unavailable';
  override name = 'JobStoreError';
}

/**
 * A held job whose `complete` or `fail` could not be written (the store is down) is no longer renewed:
 * nobody will write its end, so its lease runs out and recovery settles it `interrupted` once the
 * store is back (instead of a heartbeat keeping it `running` for ever). `held`: the store's renewed ids.
 */
export async function letGoOnFailure<T>(held: Set<string>, id: string, op: Promise<T>): Promise<T> {
  try {
    return await op;
  } catch (err) {
    if (err instanceof JobStoreError) held.delete(id);
    throw err;
  }
}

export function isStoreUnavailable(err: unknown): err is JobStoreError {
  return (err as { code?: unknown } | null)?.code === 'store-unavailable';
}

/**
 * Where async jobs live between `202 Accepted` and the client's last poll.
 * Implemented by SqliteJobStore (one node) and RedisJobStore (shared); both
 * must pass test/contracts/job-store.contract.ts.
 */
export interface JobStore {
  /** Identifies this store instance (process) as a lease owner. */
  readonly instanceId: string;

  /**
   * Stores a new job. Resolves only once the job is durably committed: a `202` may be sent after it
   * resolves and never before. Rejects with `JobStoreError` (answer 503) if it cannot be stored.
   */
  create(job: NewJob): Promise<JobRecord>;

  /** The job, or undefined if it does not exist (or was purged). */
  get(id: string): Promise<JobRecord | undefined>;

  /**
   * `queued` → `running`, leased to this instance (auto/prefer: the exchange starts the upstream call
   * itself). Counts an attempt. Returns false (nothing changed) from any other state.
   */
  markRunning(id: string): Promise<boolean>;

  /**
   * Stores the result and ends the job `completed`. The body is streamed into the store in bounded
   * memory (chunks of at most 256 KiB) and counted against the job's `max_result`: once exceeded the
   * body is abandoned (destroyed), nothing is kept and the job ends `failed` with `result-too-large`.
   * The result becomes visible atomically with the status change: a reader never sees a partial body.
   *
   * Only a `running` job can complete; with `owner`, only while its lease belongs to that owner (a queue
   * worker whose lease was lost must not overwrite another delivery). Otherwise nothing is stored and
   * `'refused'` is returned — e.g. a job cancelled while its upstream was still answering.
   *
   * If the body itself fails (the upstream broke off), whatever was staged is discarded, the job is left
   * `running` and that error is rethrown unchanged for the caller to `fail` the job with.
   */
  complete(
    id: string,
    head: ResultHead,
    body: AsyncIterable<Buffer | Uint8Array> | Readable,
    owner?: string,
  ): Promise<CompleteOutcome>;

  /**
   * `queued`/`running` → `failed` with `error`. With `owner`, only while the lease belongs to it.
   * Returns whether the job changed.
   */
  fail(id: string, error: JobError, owner?: string): Promise<boolean>;

  /** `queued`/`running` → `cancelled`. Returns whether the job changed (false: unknown or final). */
  cancel(id: string): Promise<boolean>;

  /**
   * The stored result of a `completed` job, streamed out of the store a chunk at a time; undefined when
   * the job does not exist or is not `completed`. If the job is purged while its body is being read, the
   * iteration throws rather than end early (a replay must never look complete when it is not).
   */
  readResult(id: string): Promise<StreamedResult | undefined>;

  /**
   * Queue mode: atomically leases one due job (`queued`, `run_at` ≤ now, oldest first) to `workerId`
   * until `now + leaseMs`, sets it `running` and counts an attempt. Two claims never return the same
   * job while its lease holds. An unrenewed lease expires and recovery queues the job again where that
   * is safe (at-least-once delivery); see `recoverInterrupted`.
   */
  claim(workerId: string, leaseMs: number): Promise<JobRecord | undefined>;

  /**
   * Extends `workerId`'s lease on a running job to `now + leaseMs`. False when the lease is lost (the
   * job was cancelled, ended, or went to another worker): the worker must abandon the delivery.
   */
  renew(id: string, workerId: string, leaseMs: number): Promise<boolean>;

  /**
   * Gives a running job back for another delivery: `running` → `queued`, due in `delayMs` (retry
   * backoff), lease cleared. Only while `workerId` holds the lease. Returns whether it changed.
   */
  requeue(id: string, workerId: string, delayMs: number): Promise<boolean>;

  /**
   * Settles jobs whose holder is gone — run at startup and periodically. A `running` job whose lease
   * ran out (or, with `exclusive`, any `running` job not held by this instance):
   * - auto/prefer (the gateway holding the call died) → `failed` with `interrupted`;
   * - queue → `queued` again, due now, if safe to resend (`idempotent`), else `failed` `interrupted`.
   */
  recoverInterrupted(options?: RecoverOptions): Promise<RecoveryReport>;

  /** Deletes final jobs (and their results) whose `expires_at` ≤ now. Returns how many. */
  purgeExpired(now?: number): Promise<number>;

  /** Number of jobs in each status, per route that has any (metrics). */
  counts(): Promise<JobCounts>;

  /**
   * Recent jobs, newest first (admin API), optionally of one status and/or route; at most `limit`
   * (1–1000). Records without the stored request body.
   */
  list(filter: { status?: JobStatus; route?: string; limit: number }): Promise<JobRecord[]>;

  /**
   * Long-poll support: resolves with the job as soon as it is final (at once if it already is), or with
   * its current state when `timeoutMs` ends; undefined if it does not exist or was purged. An aborted
   * `signal` ends the wait at once (resolving with undefined) and releases every resource it held.
   */
  waitFinal(id: string, timeoutMs: number, signal?: AbortSignal): Promise<JobRecord | undefined>;

  /**
   * Called after a transition to a final state has been committed by this instance (each transition is
   * reported once, by the instance that made it). Used for completion webhooks. Returns an unsubscribe.
   */
  onFinal(listener: (job: JobRecord) => void): () => void;

  /**
   * Called with the id of a job that whoever holds its upstream call must stop: cancelled (`cancel`) by
   * any instance sharing the store — this one at once after the commit, others promptly (Redis: pub/sub;
   * SQLite: in-process, and other processes through `peers`) — or an auto/prefer job of this instance
   * whose lease renewal was refused (it was cancelled while a notification was missed, or settled by
   * another instance): found by the heartbeat, within a third of the lease. At least once per holder:
   * a listener must be idempotent. Returns an unsubscribe.
   */
  onCancelled(listener: (id: string) => void): () => void;

  /** Stops timers, wakes waiters, closes the connection. Further calls reject. */
  close(): Promise<void>;
}

/** Options every implementation accepts. */
export interface JobStoreOptions {
  /** Clock in ms since the epoch. Default `Date.now`. */
  now?: () => number;
  /** Lease given to auto/prefer jobs held by this instance (`jobs.lease`). Default 10 s. */
  instanceLeaseMs?: number;
  /**
   * How often this instance renews its auto/prefer leases; 0 disables (tests). Default a third of
   * `instanceLeaseMs` (SPEC §10: two renewals can be missed before the lease runs out).
   */
  heartbeatMs?: number;
  /**
   * Poll interval while waiting in `waitFinal`, for changes made by another process (same SQLite file
   * or a shared store). In-process changes wake waiters at once. Default 1 s.
   */
  waitPollMs?: number;
}
