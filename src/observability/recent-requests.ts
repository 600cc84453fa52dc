/**
 * The recent slow or failed requests of one route (the dashboard's "recent slow or failed requests",
 * `GET /api/routes/{name}/requests`), with their request ids to find them in the access log. A fixed
 * ring: a request is kept when it failed (5xx, timeout, shed, unreachable upstream, open circuit) or
 * took at least the route's recent p95; the newest ones replace the oldest.
 */
import type { AccessLogEntry } from './access-log.ts';

export interface RecentRequest {
  readonly time: string;
  readonly request_id: string;
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly outcome: string;
  readonly phase: string | null;
  readonly error: string | null;
  readonly total_ms: number;
  readonly budget_ms: number;
  readonly ttfb_ms: number | null;
  readonly target: string | null;
  readonly retries: number;
  readonly job: string | null;
  /** Why it was kept. */
  readonly kept: 'failed' | 'slow';
}

export class RecentRequests {
  readonly #ring: (RecentRequest | undefined)[];
  #next = 0;

  constructor(capacity = 50) {
    this.#ring = new Array(capacity);
  }

  /** Keeps `e` when it failed or took at least `slowMs` (0: no slow threshold yet). */
  offer(e: AccessLogEntry, failed: boolean, slowMs: number): void {
    if (!failed && !(slowMs > 0 && e.total >= slowMs)) return;
    this.#ring[this.#next] = {
      time: e.time,
      request_id: e.request_id,
      method: e.method,
      path: e.path,
      status: e.status,
      outcome: e.outcome,
      phase: e.phase,
      error: e.error,
      total_ms: Math.round(e.total * 10) / 10,
      budget_ms: e.budget_ms,
      ttfb_ms: e.ttfb === null ? null : Math.round(e.ttfb * 10) / 10,
      target: e.target,
      retries: e.retries,
      job: e.job ?? null,
      kept: failed ? 'failed' : 'slow',
    };
    this.#next = (this.#next + 1) % this.#ring.length;
  }

  /** Newest first. */
  list(): RecentRequest[] {
    const out: RecentRequest[] = [];
    const n = this.#ring.length;
    for (let i = 1; i <= n; i++) {
      const r = this.#ring[(this.#next - i + n) % n];
      if (r !== undefined) out.push(r);
    }
    return out;
  }
}
