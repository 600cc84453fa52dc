/**
 * How a job looks to clients: the status JSON of `GET {prefix}/{id}` (also the webhook body), the
 * Retry-After schedule, and the conversions between gateway errors and stored job errors.
 */
import { type ErrorCode, GatewayError, type ProxyErrorToken } from '../errors.ts';
import { isFinal, type JobError, type JobRecord } from './job-store.ts';

/** The status JSON (SPEC §5). Timestamps are RFC 3339 (UTC). */
export interface JobJson {
  id: string;
  status: JobRecord['status'];
  route: string;
  created_at: string;
  updated_at: string;
  attempts: number;
  result_url?: string;
  error?: { type: string; code: string; status: number; detail: string; phase?: string; timeout_ms?: number };
}

export function jobUrl(prefix: string, id: string): string {
  return `${prefix}/${id}`;
}

export function jobJson(job: JobRecord, prefix: string): JobJson {
  const out: JobJson = {
    id: job.id,
    status: job.status,
    route: job.route,
    created_at: new Date(job.created_at).toISOString(),
    updated_at: new Date(job.updated_at).toISOString(),
    attempts: job.attempts,
  };
  if (job.status === 'completed') out.result_url = `${jobUrl(prefix, job.id)}/result`;
  if (job.status === 'failed' && job.error) {
    const e = job.error;
    out.error = {
      type: `https://sluice.dev/problems/${e.code}`,
      code: e.code,
      status: e.status,
      detail: e.detail,
    };
    if (e.phase) out.error.phase = e.phase;
    if (e.timeout_ms !== undefined) out.error.timeout_ms = e.timeout_ms;
  }
  return out;
}

/**
 * Seconds a client should wait before polling again, growing with the job's age so that long jobs are
 * not polled every second: 1 s for the first 10 s, then 2 s (to 1 min), 5 s (to 5 min), 10 s (to
 * 30 min), then 30 s.
 */
export function retryAfterSeconds(ageMs: number): number {
  if (ageMs < 10_000) return 1;
  if (ageMs < 60_000) return 2;
  if (ageMs < 300_000) return 5;
  if (ageMs < 1_800_000) return 10;
  return 30;
}

/** `Retry-After` for a job that is not final yet; undefined for a final one. */
export function retryAfterFor(job: JobRecord, now = Date.now()): number | undefined {
  if (isFinal(job.status)) return undefined;
  // A queued job due later (retry backoff) will not change before then.
  const due = job.status === 'queued' ? Math.ceil((job.run_at - now) / 1000) : 0;
  return Math.min(30, Math.max(retryAfterSeconds(now - job.created_at), due));
}

/** The stored form of a gateway error that ended a job (what `fail` takes). */
export function jobErrorFrom(err: GatewayError): JobError {
  const e: { -readonly [K in keyof JobError]: JobError[K] } = {
    code: err.code,
    status: err.status,
    detail: err.detail,
  };
  if (err.phase) e.phase = err.phase;
  if (err.timeoutMs !== undefined) e.timeout_ms = err.timeoutMs;
  if (err.proxyError) e.proxy_error = err.proxyError;
  return e;
}

/**
 * The problem a synchronous request would have got, rebuilt from a failed job's stored error (for
 * `GET {prefix}/{id}/result`). A code this version does not know keeps its stored status.
 */
export function problemFromJob(job: JobRecord): GatewayError {
  const e = job.error ?? {
    code: 'internal-error',
    status: 500,
    detail: `job ${job.id} failed without a recorded reason`,
  };
  try {
    return new GatewayError(e.code as ErrorCode, {
      detail: e.detail,
      phase: e.phase,
      route: job.route,
      timeoutMs: e.timeout_ms,
      proxyError: e.proxy_error as ProxyErrorToken | undefined,
    });
  } catch {
    // A code from another version of the catalogue: keep the detail, answer a generic 502.
    return new GatewayError('upstream-unreachable', { detail: e.detail, route: job.route, phase: e.phase });
  }
}
