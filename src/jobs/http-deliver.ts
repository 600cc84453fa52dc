/**
 * A plain HTTP `DeliverFn` on undici: sends a queue job's stored request to one base URL. For tests,
 * benchmarks and tools; the gateway's own deliver function comes from the data plane (balancing,
 * per-phase timeouts, circuit breaking).
 */
import { type Dispatcher, request } from 'undici';
import { fromUpstreamFailure, upstreamTimeout } from '../errors.ts';
import { connectionNamed, HOP_BY_HOP as PROXY_HOP_BY_HOP } from '../proxy/headers.ts';
import { jobErrorFrom } from './job-view.ts';
import type { DeliverFn } from './queue-worker.ts';

/** Not sent again from a stored request: hop-by-hop, plus what undici sets itself. */
const HOP_BY_HOP = new Set([...PROXY_HOP_BY_HOP, 'host', 'content-length']);

export interface HttpDeliverOptions {
  /** e.g. `http://127.0.0.1:9000` (a base path is prepended to the stored path). */
  readonly baseUrl: string;
  readonly dispatcher?: Dispatcher;
  /** Budget until response headers. Default 30 s. */
  readonly ttfbMs?: number;
}

export function httpDeliver(options: HttpDeliverOptions): DeliverFn {
  const base = new URL(options.baseUrl);
  const basePath = base.pathname.replace(/\/+$/, '');
  const ttfbMs = options.ttfbMs ?? 30_000;
  return async (job, signal) => {
    const r = job.request;
    if (!r) {
      return {
        error: { code: 'internal-error', status: 500, detail: `job ${job.id} has no stored request` },
      };
    }
    const headers: string[] = [];
    for (const [k, v] of r.headers) if (!HOP_BY_HOP.has(k.toLowerCase())) headers.push(k, v);
    try {
      const res = await request(`${base.origin}${basePath}${r.path}`, {
        method: r.method as Dispatcher.HttpMethod,
        headers,
        body: r.body && r.body.length > 0 ? r.body : undefined,
        signal,
        headersTimeout: ttfbMs,
      });
      const raw = res.headers;
      const named = connectionNamed(typeof raw.connection === 'string' ? raw.connection : undefined);
      const out: [string, string][] = [];
      for (const [k, v] of Object.entries(raw)) {
        if (v === undefined || HOP_BY_HOP.has(k) || named?.has(k)) continue;
        for (const one of Array.isArray(v) ? v : [v]) out.push([k, one]);
      }
      return { meta: { status: res.statusCode, headers: out }, body: res.body };
    } catch (err) {
      const code = (err as { code?: string }).code;
      const e =
        code === 'UND_ERR_HEADERS_TIMEOUT'
          ? upstreamTimeout('ttfb', job.route, job.route, ttfbMs)
          : fromUpstreamFailure(err, code === 'ECONNREFUSED' ? 'connect' : 'ttfb', job.route, job.route);
      return { error: jobErrorFrom(e) };
    }
  };
}
