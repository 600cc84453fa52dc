/**
 * Everything of async offload (SPEC §5) that lives beside the data plane, wired once per gateway:
 * the job store, the public job resource, queue workers delivering through the route's upstream,
 * the janitor (expiry, lease recovery every few seconds), completion webhooks, and the registry of
 * auto/prefer jobs whose upstream call runs in this process, so that a DELETE made on any instance
 * (`JobStore.onCancelled`) aborts it. Leases are `jobs.lease` for both kinds of holder. Created only when
 * a route uses async; a gateway without async routes opens no store.
 */
import type { EffectiveConfig } from '../config/resolve.ts';
import { fromUpstreamFailure, GatewayError, upstreamTimeout } from '../errors.ts';
import { CallbackSender } from '../jobs/callback.ts';
import { Janitor } from '../jobs/janitor.ts';
import { JobResource } from '../jobs/job-resource.ts';
import {
  isStoreUnavailable,
  type JobCounts,
  type JobError,
  type JobRecord,
  type JobStore,
} from '../jobs/job-store.ts';
import { jobErrorFrom } from '../jobs/job-view.ts';
import { openJobStore } from '../jobs/open-job-store.ts';
import { type Delivery, QueueWorker } from '../jobs/queue-worker.ts';
import type { OffloadHost, RunningJob } from '../jobs/running-job.ts';
import type { PeerMessage, SqliteJobStore } from '../jobs/sqlite-job-store.ts';
import { type AccessLogEntry, isoNow } from '../observability/access-log.ts';
import type { Logger } from '../observability/logger.ts';
import { filterResponseHeaders } from '../proxy/headers.ts';
import type { RouteRuntime, Runtime } from '../proxy/route-runtime.ts';

export interface JobsHostOptions {
  logger: Logger;
  runtime: () => Runtime;
  /** Test seam: an already open store. */
  store?: JobStore;
  /** Writes an access-log line and feeds metrics: job-resource requests and job ends. */
  record?: (entry: AccessLogEntry) => void;
  /** Queue-mode deliveries in flight in this process; default `jobs.workers` (one process per instance). */
  queueDeliveries?: number;
  /**
   * The other processes of this instance (workers) when they share a SQLite file: cancellations and
   * final states are told to them at once (SqliteJobStoreOptions.peers). Redis has its own pub/sub.
   */
  peers?: JobPeers;
}

/** A bus between the processes of one instance, carrying the SQLite store's peer messages. */
export interface JobPeers {
  publish(msg: PeerMessage): void;
  /** Registers the one receiver of what the other processes published. */
  onMessage(receive: (msg: PeerMessage) => void): void;
}

const JOB_OUTCOME = {
  completed: 'job_completed',
  failed: 'job_failed',
  cancelled: 'job_cancelled',
} as const;

/**
 * The access-log line written when a job ends (SPEC §5): the original request's id, the route, the
 * upstream's status (or the problem's for a failed job, 499 for a cancelled one), the phase of a
 * timeout, and the time from the original request's arrival to the end.
 */
export function jobEndEntry(job: JobRecord, rt: RouteRuntime | undefined): AccessLogEntry {
  const status =
    job.status === 'completed'
      ? (job.result_meta?.status ?? 0)
      : job.status === 'failed'
        ? (job.error?.status ?? 502)
        : 499;
  const outcome = JOB_OUTCOME[job.status as keyof typeof JOB_OUTCOME];
  return {
    time: isoNow(),
    request_id: job.request_id ?? '',
    method: job.request?.method ?? '',
    path: job.request?.path ?? '',
    route: job.route,
    upstream: rt?.upstream.name ?? null,
    target: null,
    status,
    outcome,
    phase: job.error?.phase ?? null,
    error: job.error?.code ?? null,
    client: undefined,
    bytes_in: job.request?.body?.length ?? 0,
    bytes_out: job.result_meta?.size ?? 0,
    attempts: job.attempts,
    retries: Math.max(0, job.attempts - 1),
    dns: null,
    connect: null,
    tls: null,
    ttfb: null,
    total: Math.max(0, job.updated_at - (job.received_at ?? job.created_at)),
    budget_ms: rt?.route.async?.timeout ?? job.error?.timeout_ms ?? 0,
    job: job.id,
  };
}

function routeOf(runtime: Runtime, name: string): RouteRuntime | undefined {
  return runtime.routes.find((r) => r.name === name);
}

function deliveryError(err: GatewayError): { error: JobError } {
  return { error: jobErrorFrom(err) };
}

export class JobsHost implements OffloadHost {
  readonly store: JobStore;
  readonly resource: JobResource;
  readonly worker: QueueWorker;
  readonly logger: Logger;
  /** Auto/prefer jobs whose upstream call runs in this process, by job id. */
  readonly running = new Map<string, RunningJob>();
  #prefix: string;
  readonly #janitor: Janitor;
  readonly #callbacks: CallbackSender;
  readonly #detachCallbacks: () => void;
  readonly #detachLog: () => void;
  readonly #detachCancel: () => void;
  readonly #detachRunning: () => void;
  readonly #runtime: () => Runtime;

  constructor(config: EffectiveConfig, options: JobsHostOptions) {
    this.logger = options.logger;
    this.#runtime = options.runtime;
    this.#prefix = config.jobs.prefix.replace(/\/+$/, '');
    // jobs.lease (SPEC §10) for both kinds of holder: this instance's auto/prefer calls (renewed by
    // the store's heartbeat every third of it) and queue deliveries (renewed by the worker).
    const lease = config.jobs.lease;
    this.store =
      options.store ??
      openJobStore(config.store, {
        instanceLeaseMs: lease,
        heartbeatMs: Math.floor(lease / 3),
        peers: options.peers,
      });
    const store = this.store as Partial<Pick<SqliteJobStore, 'peerMessage'>>;
    if (store.peerMessage) options.peers?.onMessage((msg) => store.peerMessage?.(msg));
    this.resource = new JobResource({
      store: this.store,
      prefix: this.#prefix,
      logger: this.logger,
      log: options.record,
    });
    this.worker = new QueueWorker({
      store: this.store,
      workers: options.queueDeliveries ?? config.jobs.workers,
      leaseMs: lease,
      logger: this.logger,
      policyFor: (route) => {
        const rt = routeOf(this.#runtime(), route);
        return rt?.route.async ? { attempts: rt.route.async.attempts } : undefined;
      },
      deliver: (job, signal) => this.#deliver(job.route, job.request, signal),
    });
    // Recovery every 2 s (more often under a short lease): a stopped instance's jobs are settled
    // within one lease plus 5 s.
    this.#janitor = new Janitor({
      store: this.store,
      logger: this.logger,
      recoverEveryMs: Math.min(2_000, Math.floor(lease / 2)),
    });
    this.#callbacks = new CallbackSender({
      prefix: this.#prefix,
      logger: this.logger,
      policyFor: (route) => routeOf(this.#runtime(), route)?.route.async?.callback,
    });
    this.#detachCallbacks = this.#callbacks.attach(this.store);
    // A DELETE on any instance (this one included) reaches the call this process holds for the job:
    // the exchange of an auto/prefer job, or the queue delivery in flight.
    this.#detachCancel = this.store.onCancelled((id) => {
      this.running.get(id)?.cancelJob();
      this.worker.cancel(id);
    });
    // A job this instance made final has no call to wait for any more: one still running (settled by
    // recovery after its lease ran out, or cancelled here) is aborted — a no-op for a call that ended —
    // and the registry lets go of it, even when its exchange never heard of the end (a result the store
    // could not take while it was down).
    this.#detachRunning = this.store.onFinal((job) => {
      this.running.get(job.id)?.cancelJob();
      this.running.delete(job.id);
    });
    const record = options.record;
    this.#detachLog = record
      ? this.store.onFinal((job) => {
          record(jobEndEntry(job, routeOf(this.#runtime(), job.route)));
        })
      : () => {};
  }

  get prefix(): string {
    return this.#prefix;
  }

  /** Whether the job store answered its last check (every few seconds). */
  get storeUp(): boolean {
    return this.#janitor.storeUp;
  }

  /** Job counts by route and status, refreshed every few seconds (for `sluice_jobs{route,status}`). */
  counts(): Readonly<JobCounts> {
    return this.#janitor.counts;
  }

  /**
   * Recovers what a crash left, then starts the workers. `exclusive` (the default): this process is
   * the store's one user at this moment (SQLite; the primary of an instance before its workers start).
   */
  async start(exclusive = true): Promise<void> {
    try {
      // Exclusive only where this process is the store's one user (SQLite); a shared store (Redis)
      // settles other instances' jobs by their leases instead.
      const report = await this.store.recoverInterrupted({ exclusive });
      if (report.failed + report.requeued > 0) {
        this.logger.warn({ ...report }, 'recovered jobs interrupted by a previous stop');
      }
    } catch (err) {
      if (!isStoreUnavailable(err)) throw err;
      // The store is down: the gateway starts anyway (plain proxying is unaffected, new offloads get
      // 503 store-unavailable); the janitor settles interrupted jobs once the store is back.
      this.logger.warn(
        { error: (err as Error).message },
        'job store unavailable at start: offloads answer 503 until it is back',
      );
    }
    this.worker.start();
    this.#janitor.start();
  }

  /**
   * Queue-mode delivery through the data plane's upstream: balancing and health apply, the route's
   * connect budget and `async.timeout` as the budget until response headers.
   */
  async #deliver(
    routeName: string,
    request:
      | { method: string; path: string; headers: readonly (readonly [string, string])[]; body?: Buffer }
      | undefined,
    signal: AbortSignal,
  ): Promise<Delivery> {
    const rt = routeOf(this.#runtime(), routeName);
    if (!rt?.route.async || !request) {
      return deliveryError(
        new GatewayError('internal-error', { detail: `route '${routeName}' no longer exists` }),
      );
    }
    const upstream = rt.upstream;
    const target = upstream.pick();
    if (!target) {
      return deliveryError(
        new GatewayError('no-healthy-upstream', {
          detail: `upstream '${upstream.name}' has no healthy target on route '${rt.name}'`,
          route: rt.name,
          proxyError: 'destination_unavailable',
        }),
      );
    }
    const budget = rt.route.async.timeout;
    const headers: string[] = [];
    for (const [k, v] of request.headers) headers.push(k, v);
    headers.push('x-timeout-ms', String(budget));
    target.inflight++;
    try {
      const res = await target.pool.request({
        path: target.basePath + request.path,
        method: request.method as 'GET',
        headers,
        body: request.body ?? null,
        signal,
        headersTimeout: budget,
        bodyTimeout: rt.timeouts.read,
      });
      const raw: string[] = [];
      for (const [k, v] of Object.entries(res.headers)) {
        if (Array.isArray(v)) for (const one of v) raw.push(k, one);
        else if (v !== undefined) raw.push(k, v);
      }
      const { headers: kept } = filterResponseHeaders(raw);
      const pairs: [string, string][] = [];
      for (let i = 0; i < kept.length; i += 2) pairs.push([kept[i], kept[i + 1]]);
      upstream.report(target, res.statusCode >= 500 ? 'status5xx' : 'ok');
      res.body.once('close', () => target.inflight--);
      return { meta: { status: res.statusCode, headers: pairs }, body: res.body };
    } catch (err) {
      target.inflight--;
      const code = (err as { code?: string }).code;
      if (code === 'UND_ERR_HEADERS_TIMEOUT') {
        upstream.report(target, 'timeout');
        return deliveryError(upstreamTimeout('ttfb', rt.name, upstream.name, budget));
      }
      upstream.report(target, code === 'ECONNREFUSED' ? 'connect' : 'reset');
      return deliveryError(
        fromUpstreamFailure(err, code === 'ECONNREFUSED' ? 'connect' : 'ttfb', rt.name, upstream.name),
      );
    }
  }

  /** Stops workers (bounded), interrupts background calls still running, closes the store. */
  async close(graceMs: number): Promise<void> {
    await this.worker.stop(graceMs);
    const deadline = performance.now() + graceMs;
    while (this.running.size > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await Promise.all([...this.running.values()].map((ex) => ex.interruptJob()));
    await this.#janitor.stop();
    this.#detachCallbacks();
    this.#detachLog();
    this.#detachCancel();
    this.#detachRunning();
    await this.#callbacks.close();
    await this.store.close();
  }
}
