/**
 * Queue-mode delivery inside the gateway (SPEC §5): `workers` slots each claim a due job with a lease,
 * deliver its stored request through the `deliver` function the data plane supplies, and store the
 * outcome. The lease is renewed while delivering; a delivery whose lease is lost (cancelled, or the
 * lease ran out and another worker took the job) is aborted and its outcome discarded.
 *
 * Retries, with exponential backoff and jitter, up to the route's `async.attempts`:
 * - after a connect-phase failure (nothing reached the upstream) — always;
 * - after any other failure, or a response whose status is in `retryStatuses` (502, 503, 504 by
 *   default; a `Retry-After` is honoured up to `backoffMaxMs`) — only when the job is safe to send
 *   again (idempotent method or Idempotency-Key).
 * When no retry is left or allowed, a response is stored as the result (`completed`: the upstream
 * answered, whatever the status) and a failure ends the job `failed` with its error.
 *
 * Delivery is at-least-once: a worker that dies mid-delivery leaves an expired lease, and recovery
 * queues a safe job again (or fails an unsafe one `interrupted`).
 */
import type { Readable } from 'node:stream';
import { fromUpstreamFailure, isGatewayError } from '../errors.ts';
import { type Logger, silentLogger } from '../observability/logger.ts';
import {
  abandonBody,
  isStoreUnavailable,
  type JobError,
  type JobRecord,
  type JobStore,
  type ResultHead,
} from './job-store.ts';
import { jobErrorFrom } from './job-view.ts';

/** What a delivery produced: the upstream's response (body still streaming), or why there is none. */
export type Delivery =
  | { readonly meta: ResultHead; readonly body: AsyncIterable<Buffer | Uint8Array> | Readable }
  | { readonly error: JobError };

/**
 * Sends a queue job's stored request (`job.request`) to its route's upstream, applying the route's
 * timeouts (and `async.timeout`), and resolves with the response once its headers arrived, or with the
 * error in the SPEC §4 vocabulary. Must stop and release everything when `signal` aborts. A thrown
 * error is treated like `{ error }` (mapped as an upstream failure).
 */
export type DeliverFn = (job: JobRecord, signal: AbortSignal) => Promise<Delivery>;

export interface QueueRoutePolicy {
  /** Deliveries in all, the first included (route `async.attempts`). */
  readonly attempts: number;
}

export interface QueueWorkerOptions {
  readonly store: JobStore;
  readonly deliver: DeliverFn;
  /** Deliveries in flight at once (`jobs.workers`). */
  readonly workers: number;
  /** The route's policy, or undefined when the route no longer exists (the job then fails). */
  readonly policyFor: (route: string) => QueueRoutePolicy | undefined;
  /** Lease per claim (`jobs.lease`), renewed every third of it while delivering. Default 10 s. */
  readonly leaseMs?: number;
  /** How often idle workers look for due jobs (`nudge()` wakes them at once). Default 500 ms. */
  readonly pollMs?: number;
  /** First retry delay; doubles per attempt, jittered to 50–100 %. Default 1 s. */
  readonly backoffBaseMs?: number;
  /** Longest retry delay (also caps a honoured Retry-After). Default 60 s. */
  readonly backoffMaxMs?: number;
  /** Response statuses retried where safe. Default 502, 503, 504. */
  readonly retryStatuses?: readonly number[];
  readonly random?: () => number;
  readonly logger?: Logger;
}

export interface QueueWorkerStats {
  claimed: number;
  completed: number;
  failed: number;
  retried: number;
  abandoned: number;
}

interface InFlight {
  readonly job: JobRecord;
  readonly workerId: string;
  readonly ac: AbortController;
  readonly done: Promise<void>;
}

const CANCELLED = 'cancelled';
const LEASE_LOST = 'lease-lost';
const SHUTDOWN = 'shutdown';

function retryAfterMs(head: ResultHead): number {
  for (const [k, v] of head.headers) {
    if (k.toLowerCase() === 'retry-after' && /^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  }
  return 0;
}

export class QueueWorker {
  readonly stats: QueueWorkerStats = { claimed: 0, completed: 0, failed: 0, retried: 0, abandoned: 0 };
  readonly #o: Required<Omit<QueueWorkerOptions, 'logger' | 'retryStatuses'>> & { logger: Logger };
  readonly #retryStatuses: Set<number>;
  readonly #inflight = new Map<string, InFlight>();
  #loops: Promise<void>[] = [];
  #stopping = false;
  #wake = Promise.withResolvers<void>();

  constructor(options: QueueWorkerOptions) {
    this.#o = {
      store: options.store,
      deliver: options.deliver,
      workers: Math.max(1, options.workers),
      policyFor: options.policyFor,
      leaseMs: options.leaseMs ?? 10_000,
      pollMs: options.pollMs ?? 500,
      backoffBaseMs: options.backoffBaseMs ?? 1_000,
      backoffMaxMs: options.backoffMaxMs ?? 60_000,
      random: options.random ?? Math.random,
      logger: options.logger ?? silentLogger,
    };
    this.#retryStatuses = new Set(options.retryStatuses ?? [502, 503, 504]);
  }

  /** Deliveries in progress. */
  get inflight(): number {
    return this.#inflight.size;
  }

  start(): void {
    if (this.#loops.length > 0 || this.#stopping) return;
    for (let n = 0; n < this.#o.workers; n++) {
      this.#loops.push(this.#loop(`${this.#o.store.instanceId}:w${n}`));
    }
  }

  /** Wakes idle workers now (call after creating a queue job, for immediate pickup). */
  nudge(): void {
    const w = this.#wake;
    this.#wake = Promise.withResolvers<void>();
    w.resolve();
  }

  /** Aborts the delivery of `id` if this worker holds it (the job was cancelled). */
  cancel(id: string): boolean {
    const f = this.#inflight.get(id);
    if (!f) return false;
    f.ac.abort(CANCELLED);
    return true;
  }

  /**
   * Stops claiming, waits up to `graceMs` for deliveries in flight, then aborts the rest: a safe job
   * goes back to the queue at once (delivered again after restart), an unsafe one ends `failed`
   * `interrupted`. Resolves when every worker has stopped.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.#stopping = true;
    this.nudge();
    if (this.#inflight.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all([...this.#inflight.values()].map((f) => f.done)),
        new Promise<void>((r) => {
          timer = setTimeout(r, graceMs);
        }),
      ]);
      clearTimeout(timer);
      for (const f of this.#inflight.values()) f.ac.abort(SHUTDOWN);
    }
    await Promise.all(this.#loops);
    this.#loops = [];
  }

  async #idle(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#wake.promise,
      new Promise<void>((r) => {
        timer = setTimeout(r, ms);
      }),
    ]);
    clearTimeout(timer);
  }

  async #loop(workerId: string): Promise<void> {
    while (!this.#stopping) {
      let job: JobRecord | undefined;
      try {
        job = await this.#o.store.claim(workerId, this.#o.leaseMs);
      } catch (err) {
        this.#o.logger.error({ err }, 'queue worker: claim failed');
        await this.#idle(this.#o.pollMs * 4);
        continue;
      }
      if (!job) {
        await this.#idle(this.#o.pollMs);
        continue;
      }
      this.stats.claimed++;
      const done = Promise.withResolvers<void>();
      const f: InFlight = { job, workerId, ac: new AbortController(), done: done.promise };
      this.#inflight.set(job.id, f);
      try {
        await this.#process(f);
      } catch (err) {
        // Store failures: the lease runs out and recovery settles the job.
        this.#o.logger.error({ err, job: job.id }, 'queue worker: delivery bookkeeping failed');
      } finally {
        this.#inflight.delete(job.id);
        done.resolve();
      }
    }
  }

  #backoff(attempt: number, atLeastMs = 0): number {
    const exp = Math.min(this.#o.backoffMaxMs, this.#o.backoffBaseMs * 2 ** Math.max(0, attempt - 1));
    const jittered = exp / 2 + (this.#o.random() * exp) / 2;
    return Math.min(this.#o.backoffMaxMs, Math.max(jittered, atLeastMs));
  }

  #toJobError(err: unknown, job: JobRecord, phase: 'ttfb' | 'read'): JobError {
    if (isGatewayError(err)) return jobErrorFrom(err);
    return jobErrorFrom(fromUpstreamFailure(err, phase, job.route, job.route));
  }

  async #process(f: InFlight): Promise<void> {
    const { job, workerId, ac } = f;
    const { store } = this.#o;
    const policy = this.#o.policyFor(job.route);
    if (!policy) {
      await store.fail(
        job.id,
        {
          code: 'no-route',
          status: 404,
          detail: `route '${job.route}' no longer exists; the request was not delivered`,
        },
        workerId,
      );
      this.stats.failed++;
      return;
    }
    if (job.attempts > policy.attempts) {
      // Claimed again after interruptions (a delivery that kept killing its worker): give up.
      await store.fail(
        job.id,
        {
          code: 'interrupted',
          status: 502,
          detail: `delivery on route '${job.route}' was interrupted ${job.attempts - 1} times; giving up`,
          proxy_error: 'proxy_internal_error',
        },
        workerId,
      );
      this.stats.failed++;
      return;
    }

    const renewEvery = Math.max(10, Math.floor(this.#o.leaseMs / 3));
    const renewal = setInterval(() => {
      store.renew(job.id, workerId, this.#o.leaseMs).then(
        (ok) => {
          if (!ok && !ac.signal.aborted) ac.abort(LEASE_LOST);
        },
        (err) => this.#o.logger.warn({ err, job: job.id }, 'queue worker: lease renewal failed'),
      );
    }, renewEvery);
    try {
      let d: Delivery;
      try {
        d = await this.#o.deliver(job, ac.signal);
      } catch (err) {
        d = { error: this.#toJobError(err, job, 'ttfb') };
      }
      if (ac.signal.aborted) {
        if ('body' in d) abandonBody(d.body);
        return this.#abandoned(f);
      }
      const more = job.attempts < policy.attempts;
      if ('error' in d) {
        const safe = job.idempotent || d.error.phase === 'connect';
        if (safe && more) return this.#retry(f, this.#backoff(job.attempts));
        if (await store.fail(job.id, d.error, workerId)) this.stats.failed++;
        return;
      }
      if (this.#retryStatuses.has(d.meta.status) && job.idempotent && more) {
        abandonBody(d.body);
        return this.#retry(
          f,
          this.#backoff(job.attempts, Math.min(retryAfterMs(d.meta), this.#o.backoffMaxMs)),
        );
      }
      let outcome: Awaited<ReturnType<JobStore['complete']>>;
      try {
        outcome = await store.complete(job.id, d.meta, d.body, workerId);
      } catch (err) {
        if (isStoreUnavailable(err)) throw err;
        if (ac.signal.aborted) return this.#abandoned(f);
        // The upstream broke off while sending the body.
        const error = this.#toJobError(err, job, 'read');
        if (job.idempotent && more) return this.#retry(f, this.#backoff(job.attempts));
        if (await store.fail(job.id, error, workerId)) this.stats.failed++;
        return;
      }
      if (outcome === 'completed') this.stats.completed++;
      else if (outcome === 'too-large') this.stats.failed++;
    } finally {
      clearInterval(renewal);
    }
  }

  async #retry(f: InFlight, delayMs: number): Promise<void> {
    if (await this.#o.store.requeue(f.job.id, f.workerId, delayMs)) this.stats.retried++;
  }

  /** The delivery was aborted: cancelled or lease lost (nothing to do), or shutdown. */
  async #abandoned(f: InFlight): Promise<void> {
    this.stats.abandoned++;
    if (f.ac.signal.reason !== SHUTDOWN) return;
    const { store } = this.#o;
    if (f.job.idempotent) {
      await store.requeue(f.job.id, f.workerId, 0);
    } else {
      await store.fail(
        f.job.id,
        {
          code: 'interrupted',
          status: 502,
          detail:
            `the gateway stopped while delivering a queued request on route '${f.job.route}', which is not ` +
            'safe to repeat; the upstream may or may not have processed it',
          proxy_error: 'proxy_internal_error',
        },
        f.workerId,
      );
    }
  }
}
