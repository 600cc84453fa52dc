/**
 * The read side of the admin API (SPEC §8): routes and upstreams with their effective settings, live
 * state and figures over the alert window, what-if budgets from the last 15 minutes, and the running
 * config. Everything is read from the gateway's runtime and observability at request time; nothing
 * here is on the data path. Every error is problem+json; `json()` sets `Cache-Control: no-store`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { EffectiveConfig, EffectiveRoute } from '../config/resolve.ts';
import { parseDuration } from '../config/units.ts';
import { isStoreUnavailable, JOB_STATUSES, type JobStatus, type JobStore } from '../jobs/job-store.ts';
import { jobJson } from '../jobs/job-view.ts';
import { headroomLimit } from '../observability/headroom.ts';
import type { Observability } from '../observability/observability.ts';
import type { Runtime } from '../proxy/route-runtime.ts';
import type { Upstream } from '../upstream/upstream.ts';
import { type AdminHandler, json } from './admin-server.ts';

export interface AdminApiDeps {
  runtime: () => Runtime;
  observability: Observability;
  /** Where the running config came from (a file path, or how it was built), and when it was loaded. */
  source: () => { source: string; loadedAt: Date };
  /** The job store and the job resource's prefix, while a route uses async offload. */
  jobs?: () => { store: JobStore; prefix: string } | undefined;
}

function problem(res: ServerResponse, status: number, code: string, title: string, detail: string): void {
  json(
    res,
    status,
    { type: `https://sluice.dev/problems/${code}`, title, status, detail },
    'application/problem+json',
  );
}

function getOnly(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.method === 'GET' || req.method === 'HEAD') return true;
  res.setHeader('allow', 'GET, HEAD');
  problem(res, 405, 'method-not-allowed', 'Method not allowed', `${req.method} is not supported here`);
  return false;
}

const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;

function routeView(route: EffectiveRoute, obs: Observability) {
  const w = obs.window(route.name);
  const f = obs.figures(route.name);
  const limit = headroomLimit(route.timeouts);
  return {
    name: route.name,
    match: {
      path: route.match.path === '' ? '/' : route.match.path,
      host: route.match.host ?? null,
      methods: route.match.methods ?? null,
      headers: route.match.headers ?? null,
    },
    upstream: route.upstream,
    strip_prefix: route.stripPrefix,
    timeouts: { ...route.timeouts },
    timeout_layers: { ...route.timeoutLayers },
    max_body: route.maxBody,
    async: route.async
      ? {
          mode: route.async.mode,
          after_ms: route.async.after,
          timeout_ms: route.async.timeout,
          keep_ms: route.async.keep,
        }
      : { mode: 'off' },
    retry: route.retry ? { ...route.retry } : null,
    cache: null,
    stats: {
      window_s: 0,
      requests: w?.count ?? 0,
      rps: f?.rps ?? 0,
      p50_ms: round(w?.p50 ?? 0),
      p95_ms: round(w?.p95 ?? 0),
      p99_ms: round(w?.p99 ?? 0),
      headroom: w && limit && w.count > 0 ? round(w.p95 / limit.ms, 4) : null,
      headroom_limit: limit ? { phase: limit.phase, ms: limit.ms } : null,
      timeouts: f?.timeouts ?? {},
      errors: w?.errors ?? 0,
      statuses: f?.statuses ?? {},
      server_timing: f?.server_timing ?? {},
    },
  };
}

function upstreamView(u: Upstream) {
  const snap = u.snapshot();
  return {
    name: u.name,
    balance: snap.balance,
    circuit: snap.circuit?.state ?? 'closed',
    circuit_window: snap.circuit
      ? { requests: snap.circuit.requests, errors: snap.circuit.errors, open_for_ms: snap.circuit.openForMs }
      : null,
    inflight: snap.targets.reduce((n, t) => n + t.inflight, 0),
    limit: snap.limiter,
    available: snap.available,
    targets: snap.targets.map((t) => ({
      url: t.origin + t.basePath,
      weight: t.weight,
      health: u.config.health === undefined ? 'unknown' : t.healthy ? 'healthy' : 'unhealthy',
      ejected: t.ejected,
      ejected_for_ms: t.ejectedForMs,
      inflight: t.inflight,
    })),
    retry_budgets: snap.retryBudgets,
  };
}

/** The running config as JSON, secrets replaced by "***". */
function redacted(config: EffectiveConfig): unknown {
  return JSON.parse(
    JSON.stringify(config, (key, value) =>
      (key === 'token' || key === 'secret') && typeof value === 'string' ? '***' : value,
    ),
  );
}

/** `/api/routes…`, `/api/upstreams…` and `/api/config`, to register on the admin server. */
export function adminApi(deps: AdminApiDeps): {
  exact: Record<string, AdminHandler>;
  prefixes: Record<string, AdminHandler>;
} {
  const { observability: obs } = deps;
  const windowS = () => deps.runtime().config.alerts.window / 1000;
  const withWindow = (v: ReturnType<typeof routeView>) => ({
    ...v,
    stats: { ...v.stats, window_s: windowS() },
  });

  const routeByName = (res: ServerResponse, name: string) => {
    const rt = deps.runtime().routes.find((r) => r.name === name);
    if (!rt) problem(res, 404, 'not-found', 'Not found', `no route named '${name}'`);
    return rt;
  };

  return {
    exact: {
      '/api/routes': (req, res) => {
        if (!getOnly(req, res)) return;
        json(res, 200, { routes: deps.runtime().routes.map((r) => withWindow(routeView(r.route, obs))) });
      },
      '/api/upstreams': (req, res) => {
        if (!getOnly(req, res)) return;
        json(res, 200, { upstreams: [...deps.runtime().upstreams.values()].map(upstreamView) });
      },
      '/api/jobs': async (req, res, url) => {
        if (!getOnly(req, res)) return;
        const status = url.searchParams.get('status') ?? undefined;
        const route = url.searchParams.get('route') ?? undefined;
        const limitText = url.searchParams.get('limit') ?? '50';
        const limit = Number(limitText);
        if (status !== undefined && !JOB_STATUSES.includes(status as JobStatus))
          return problem(
            res,
            400,
            'bad-request',
            'Bad request',
            `status must be one of ${JOB_STATUSES.join(', ')}`,
          );
        if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
          return problem(
            res,
            400,
            'bad-request',
            'Bad request',
            'limit must be a whole number from 1 to 1000',
          );
        const jobs = deps.jobs?.();
        if (jobs === undefined) return json(res, 200, { jobs: [] });
        let list: Awaited<ReturnType<JobStore['list']>>;
        try {
          list = await jobs.store.list({ status: status as JobStatus | undefined, route, limit });
        } catch (err) {
          if (!isStoreUnavailable(err)) throw err;
          res.setHeader('retry-after', '5');
          return problem(
            res,
            503,
            'store-unavailable',
            'Job store unavailable',
            'the job store cannot be read now',
          );
        }
        json(res, 200, {
          jobs: list.map((j) => ({ ...jobJson(j, jobs.prefix), request_id: j.request_id ?? null })),
        });
      },
      '/api/config': (req, res) => {
        if (!getOnly(req, res)) return;
        const { source, loadedAt } = deps.source();
        json(res, 200, {
          source,
          loaded_at: loadedAt.toISOString(),
          config: redacted(deps.runtime().config),
        });
      },
    },
    prefixes: {
      '/api/routes/': (req, res, url) => {
        if (!getOnly(req, res)) return;
        const parts = url.pathname.slice('/api/routes/'.length).split('/').map(decodeURIComponent);
        if (parts.length === 1) {
          const rt = routeByName(res, parts[0]);
          if (rt) json(res, 200, withWindow(routeView(rt.route, obs)));
          return;
        }
        if (parts.length !== 2 || parts[1] !== 'what-if')
          return problem(res, 404, 'not-found', 'Not found', `no such resource: ${url.pathname}`);
        const rt = routeByName(res, parts[0]);
        if (!rt) return;
        const totalText = url.searchParams.get('total');
        const totalMs = totalText === null ? rt.timeouts.total : parseDuration(totalText);
        const afterText = url.searchParams.get('async_after');
        const afterMs = afterText === null ? undefined : parseDuration(afterText);
        if (totalMs === undefined || totalMs <= 0 || (afterText !== null && afterMs === undefined)) {
          return problem(
            res,
            400,
            'bad-request',
            'Bad request',
            'total and async_after must be durations such as 10s or 1500ms (total above 0)',
          );
        }
        const current = obs.whatIf(
          rt.name,
          rt.timeouts.total > 0 ? rt.timeouts.total : Number.POSITIVE_INFINITY,
        );
        const proposed = obs.whatIf(rt.name, totalMs, afterMs);
        json(res, 200, {
          route: rt.name,
          window_s: 15 * 60,
          requests: proposed?.requests ?? 0,
          current: { total_ms: rt.timeouts.total, timeout_share: current?.timeout_share ?? 0 },
          proposed: {
            total_ms: totalMs,
            timeout_share: proposed?.timeout_share ?? 0,
            async_share: proposed?.async_share ?? 0,
            ...(afterMs === undefined ? {} : { async_after_ms: afterMs }),
          },
        });
      },
      '/api/upstreams/': (req, res, url) => {
        if (!getOnly(req, res)) return;
        const name = decodeURIComponent(url.pathname.slice('/api/upstreams/'.length));
        const u = deps.runtime().upstreams.get(name);
        if (!u) return problem(res, 404, 'not-found', 'Not found', `no upstream named '${name}'`);
        json(res, 200, upstreamView(u));
      },
    },
  };
}
