/**
 * The public job resource (SPEC §5), mounted under `jobs.prefix` (default `/_sluice/jobs`) on the
 * public listener:
 *
 * - `GET {prefix}/{id}[?wait=30s]` — status JSON; `Retry-After` while not final; `wait` long-polls
 *   until the job is final or the wait ends (capped at `maxWaitMs`).
 * - `GET {prefix}/{id}/result` — replays the stored upstream response (status, headers, body) streamed
 *   from the store; 409 `job-not-final`, 410 `job-cancelled`, or for a failed job the problem a
 *   synchronous request would have got.
 * - `DELETE {prefix}/{id}` — cancels a job that is not final (and calls `onCancel` so that whoever holds
 *   the upstream call aborts it); 200 with the job JSON, 409 `job-final` when it already ended.
 *
 * A job that does not exist and a job owned by other credentials get the same 404 `job-not-found`
 * (same status, headers and body apart from request_id/elapsed_ms; both cost one store lookup).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseDuration } from '../config/units.ts';
import { cutResponse, GatewayError, isClientGone, type Outcome, sendProblem } from '../errors.ts';
import { type AccessLogEntry, answeredEntry } from '../observability/access-log.ts';
import { type Logger, silentLogger } from '../observability/logger.ts';
import { HOP_BY_HOP } from '../proxy/headers.ts';
import { isValidRequestId, newRequestId } from '../server/request-id.ts';
import { isJobId, ownerHash, ownerMatches } from './ids.ts';
import { isFinal, isStoreUnavailable, type JobRecord, type JobStore } from './job-store.ts';
import { jobJson, problemFromJob, retryAfterFor } from './job-view.ts';

export interface JobResourceOptions {
  readonly store: JobStore;
  /** Path prefix without a trailing slash, e.g. `/_sluice/jobs`. */
  readonly prefix: string;
  /**
   * Called after a job was marked `cancelled` by `DELETE`: abort its upstream call (the exchange of an
   * auto/prefer job, the delivery of a queue job). Errors thrown here are logged and ignored.
   */
  readonly onCancel?: (id: string) => void;
  /** Longest `?wait=`; longer waits are shortened to this. Default 60 s. */
  readonly maxWaitMs?: number;
  /** Retry-After of a 503 `store-unavailable`. Default 5 s. */
  readonly storeRetryAfterS?: number;
  readonly logger?: Logger;
  readonly now?: () => number;
  /**
   * Receives the access-log line of every request to the resource (route null, `job` set when the
   * path names one), written when its response ends.
   */
  readonly log?: (entry: AccessLogEntry) => void;
}

/** Never replayed from a stored result (hop-by-hop, RFC 9110 §7.6.1) or recomputed on replay. */
const REPLAY_DROP = new Set([...HOP_BY_HOP, 'content-length']);

const perf = performance.now.bind(performance);

export class JobResource {
  readonly prefix: string;
  readonly #store: JobStore;
  readonly #onCancel: ((id: string) => void) | undefined;
  readonly #maxWaitMs: number;
  readonly #storeRetryAfterS: number;
  readonly #logger: Logger;
  readonly #now: () => number;
  readonly #log: ((entry: AccessLogEntry) => void) | undefined;

  constructor(options: JobResourceOptions) {
    this.prefix = options.prefix.replace(/\/+$/, '');
    this.#store = options.store;
    this.#onCancel = options.onCancel;
    this.#maxWaitMs = options.maxWaitMs ?? 60_000;
    this.#storeRetryAfterS = options.storeRetryAfterS ?? 5;
    this.#logger = options.logger ?? silentLogger;
    this.#now = options.now ?? Date.now;
    this.#log = options.log;
  }

  /**
   * Handles `path` (the normalised request path, query excluded) when it lies under the prefix on a
   * segment boundary; returns false (and touches nothing) otherwise.
   */
  tryHandle(req: IncomingMessage, res: ServerResponse, path: string): boolean {
    if (!path.startsWith(this.prefix)) return false;
    const after = path.slice(this.prefix.length);
    if (after !== '' && after.charCodeAt(0) !== 47) return false;
    return this.handle(req, res, after);
  }

  /**
   * Answers a request whose path, after the prefix, is `pathAfterPrefix` (`/J…`, `/J…/result`; a query
   * string may be appended, else it is taken from `req.url`). Returns false without answering when the
   * path is not under the prefix (it does not start with `/` and is not empty), true otherwise: the
   * response is then this resource's business, written asynchronously.
   */
  handle(req: IncomingMessage, res: ServerResponse, pathAfterPrefix: string): boolean {
    if (pathAfterPrefix !== '' && pathAfterPrefix.charCodeAt(0) !== 47) return false;
    const startedAt = perf();
    const incoming = req.headers['x-request-id'];
    const requestId = isValidRequestId(incoming as string | undefined)
      ? (incoming as string)
      : newRequestId();
    let path = pathAfterPrefix;
    let query = '';
    const q = path.indexOf('?');
    if (q !== -1) {
      query = path.slice(q + 1);
      path = path.slice(0, q);
    } else {
      const u = req.url ?? '';
      const uq = u.indexOf('?');
      if (uq !== -1) query = u.slice(uq + 1);
    }
    // A request body is not expected; drain it so the connection stays usable.
    req.resume();
    const ctx: Ctx = { req, res, requestId, startedAt, outcome: 'ok', error: null };
    const log = this.#log;
    if (log !== undefined) {
      const logPath = this.prefix + path + (query === '' ? '' : `?${query}`);
      res.once('close', () => {
        const id = path.split('/')[1] ?? '';
        // A client that left before its answer (a long poll it gave up) is not a resource error.
        const outcome: Outcome = res.writableFinished ? ctx.outcome : 'client_aborted';
        const entry = answeredEntry(
          {
            method: req.method ?? '',
            path: logPath,
            requestId,
            startedAt,
            client: req.socket?.remoteAddress,
          },
          res.writableFinished ? res.statusCode : 499,
          outcome,
          ctx.error,
        );
        if (isJobId(id)) entry.job = id;
        log(entry);
      });
    }
    this.#route(ctx, path, query).catch((err) => this.#internal(ctx, err));
    return true;
  }

  async #route(ctx: Ctx, path: string, query: string): Promise<void> {
    const parts = path.split('/'); // ['', id] or ['', id, 'result']
    const id = parts[1] ?? '';
    const isResult = parts.length === 3 && parts[2] === 'result';
    if (!(parts.length === 2 || isResult) || !isJobId(id)) {
      return this.#notFound(ctx);
    }
    const method = ctx.req.method ?? 'GET';
    const allowed = isResult ? 'GET, HEAD' : 'GET, HEAD, DELETE';
    if (!allowed.split(', ').includes(method)) {
      ctx.res.setHeader('allow', allowed);
      return this.#problem(
        ctx,
        new GatewayError('method-not-allowed', {
          detail: `${method} is not supported here (allowed: ${allowed})`,
        }),
      );
    }
    let waitMs = 0;
    if (!isResult && method !== 'DELETE' && query !== '') {
      const w = new URLSearchParams(query).get('wait');
      if (w !== null) {
        const ms = /^\d+$/.test(w) ? Number(w) * 1000 : parseDuration(w);
        if (ms === undefined) {
          return this.#problem(
            ctx,
            new GatewayError('bad-request', {
              detail: `wait must be a duration such as 30s or a number of seconds, got '${w}'`,
            }),
          );
        }
        waitMs = Math.min(ms, this.#maxWaitMs);
      }
    }
    const requester = ownerHash(ctx.req.headers);
    let job = await this.#load(ctx, id);
    if (job === null) return;
    if (job === undefined || !ownerMatches(job.owner_hash, requester)) return this.#notFound(ctx);

    if (method === 'DELETE') return this.#cancel(ctx, job);
    if (isResult) return this.#result(ctx, job);

    if (waitMs > 0 && !isFinal(job.status)) {
      const ac = new AbortController();
      const onClose = () => ac.abort();
      ctx.res.once('close', onClose);
      try {
        job = await this.#store.waitFinal(id, waitMs, ac.signal);
      } catch (err) {
        if (isStoreUnavailable(err)) return this.#unavailable(ctx, err);
        throw err;
      } finally {
        ctx.res.off('close', onClose);
      }
      if (ac.signal.aborted || isClientGone(ctx.res)) return; // the client went away: nothing to answer
      if (!job) return this.#notFound(ctx);
    }
    this.#json(ctx, 200, job);
  }

  /** The job, undefined when unknown, null when the store failed (and the 503 was sent). */
  async #load(ctx: Ctx, id: string): Promise<JobRecord | undefined | null> {
    try {
      return await this.#store.get(id);
    } catch (err) {
      if (isStoreUnavailable(err)) {
        this.#unavailable(ctx, err);
        return null;
      }
      throw err;
    }
  }

  async #cancel(ctx: Ctx, job: JobRecord): Promise<void> {
    let current: JobRecord | undefined | null = job;
    if (!isFinal(job.status)) {
      let changed: boolean;
      try {
        changed = await this.#store.cancel(job.id);
      } catch (err) {
        if (isStoreUnavailable(err)) return this.#unavailable(ctx, err);
        throw err;
      }
      if (changed) {
        try {
          this.#onCancel?.(job.id);
        } catch (err) {
          this.#logger.error({ err, job: job.id }, 'job cancel hook failed');
        }
      }
      current = await this.#load(ctx, job.id);
      if (current === null) return;
      if (current === undefined) return this.#notFound(ctx);
    }
    if (current.status === 'cancelled') return this.#json(ctx, 200, current);
    return this.#problem(
      ctx,
      new GatewayError('job-final', {
        detail: `job ${current.id} already ended (${current.status}); it cannot be cancelled`,
        route: current.route,
      }),
    );
  }

  async #result(ctx: Ctx, job: JobRecord): Promise<void> {
    const { res } = ctx;
    switch (job.status) {
      case 'queued':
      case 'running':
        return this.#problem(
          ctx,
          new GatewayError('job-not-final', {
            detail: `job ${job.id} is ${job.status}; its result is not available yet`,
            route: job.route,
            retryAfter: retryAfterFor(job, this.#now()),
          }),
        );
      case 'cancelled':
        return this.#problem(
          ctx,
          new GatewayError('job-cancelled', { detail: `job ${job.id} was cancelled`, route: job.route }),
        );
      case 'failed':
        sendProblem(res, problemFromJob(job), {
          requestId: ctx.requestId,
          elapsedMs: job.updated_at - job.created_at,
          attempts: job.attempts,
        });
        return;
    }
    let result: Awaited<ReturnType<JobStore['readResult']>>;
    try {
      result = await this.#store.readResult(job.id);
    } catch (err) {
      if (isStoreUnavailable(err)) return this.#unavailable(ctx, err);
      throw err;
    }
    if (!result) return this.#notFound(ctx); // purged in between
    const { meta, body } = result;
    const headers: string[] = [];
    let hasRequestId = false;
    for (const [name, value] of meta.headers) {
      const lower = name.toLowerCase();
      if (REPLAY_DROP.has(lower)) continue;
      if (lower === 'x-request-id') hasRequestId = true;
      headers.push(name, value);
    }
    const bodyless = meta.status < 200 || meta.status === 204 || meta.status === 304;
    if (!bodyless) headers.push('content-length', String(meta.size));
    if (!hasRequestId) headers.push('x-request-id', ctx.requestId);
    res.writeHead(meta.status, headers);
    if (bodyless || ctx.req.method === 'HEAD') {
      res.end();
      return;
    }
    try {
      await pipeline(Readable.from(body, { objectMode: false }), res);
    } catch (err) {
      // Headers are out: cut the response so it can never pass for a complete one.
      if (!res.destroyed) cutResponse(res);
      if (!isClientGoneError(err)) this.#logger.error({ err, job: job.id }, 'job result replay failed');
    }
  }

  // ---- responses ---------------------------------------------------------------------------------

  #json(ctx: Ctx, status: number, job: JobRecord): void {
    const body = JSON.stringify(jobJson(job, this.prefix));
    const headers = [
      'content-type',
      'application/json',
      'content-length',
      String(Buffer.byteLength(body)),
      'cache-control',
      'no-store',
      'x-request-id',
      ctx.requestId,
    ];
    const ra = retryAfterFor(job, this.#now());
    if (ra !== undefined) headers.push('retry-after', String(ra));
    ctx.res.writeHead(status, headers);
    ctx.res.end(ctx.req.method === 'HEAD' ? undefined : body);
  }

  #notFound(ctx: Ctx): void {
    // One fixed answer whatever the reason, so that nothing tells a foreign job from a missing one.
    this.#problem(
      ctx,
      new GatewayError('job-not-found', {
        detail: 'no such job (unknown, expired, or not visible with these credentials)',
      }),
    );
  }

  #unavailable(ctx: Ctx, err: unknown): void {
    this.#logger.error({ err }, 'job store unavailable');
    this.#problem(
      ctx,
      new GatewayError('store-unavailable', {
        detail: 'the job store cannot be read right now; retry later',
        retryAfter: this.#storeRetryAfterS,
        proxyError: 'proxy_internal_error',
        cause: err,
      }),
    );
  }

  #internal(ctx: Ctx, err: unknown): void {
    this.#logger.error({ err }, 'job resource failed');
    if (ctx.res.headersSent) {
      cutResponse(ctx.res);
      return;
    }
    this.#problem(ctx, new GatewayError('internal-error', { detail: 'the job request failed', cause: err }));
  }

  #problem(ctx: Ctx, err: GatewayError): void {
    if (ctx.res.headersSent || isClientGone(ctx.res)) return;
    ctx.outcome = err.outcome;
    ctx.error = err.code;
    sendProblem(ctx.res, err, { requestId: ctx.requestId, elapsedMs: perf() - ctx.startedAt, attempts: 0 });
  }
}

interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  requestId: string;
  startedAt: number;
  /** For the access-log line: what the resource answered (a failed job's replayed problem is `ok`). */
  outcome: Outcome;
  error: string | null;
}

function isClientGoneError(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code;
  return code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ECONNRESET' || code === 'EPIPE';
}
