/**
 * The read side of the admin API (SPEC §8): routes and upstreams with their effective settings, live
 * state and figures over the alert window, what-if budgets from the last 15 minutes, and the running
 * config. Everything is read from the gateway's runtime and observability at request time; nothing
 * here is on the data path. Every error is problem+json; `json()` sets `Cache-Control: no-store`.
 */

import type { IncomingMessage, ServerResponse } from 'node:http';
import { accessView } from '../access/settings.ts';
import { ConfigError, type ConfigIssue } from '../config/errors.ts';
import { loadConfigObject } from '../config/load.ts';
import type { EffectiveConfig, EffectiveRoute, Timeouts } from '../config/resolve.ts';
import { parseDuration } from '../config/units.ts';
import {
  isStoreUnavailable,
  JOB_STATUSES,
  type JobCounts,
  type JobStatus,
  type JobStore,
} from '../jobs/job-store.ts';
import { jobJson } from '../jobs/job-view.ts';
import { headroomLimit } from '../observability/headroom.ts';
import type { Observability } from '../observability/observability.ts';
import type { Runtime } from '../proxy/route-runtime.ts';
import type { Upstream } from '../upstream/upstream.ts';
import { type AdminHandler, json } from './admin-server.ts';
import { mergePatch } from './merge-patch.ts';

/** How a reload from the file ended. A refused one changed nothing. */
export type ReloadResult =
  | { readonly result: 'applied'; readonly source: string; readonly loadedAt: Date }
  | {
      readonly result: 'refused';
      readonly source: string;
      readonly error: string;
      /** Each problem with its file line, when the file was read but is invalid. */
      readonly issues: readonly ConfigIssue[];
    };

export interface AdminApiDeps {
  runtime: () => Runtime;
  observability: Observability;
  /** Where the running config came from (a file path, or how it was built), and when it was loaded. */
  source: () => { source: string; loadedAt: Date };
  /** The job store and the job resource's prefix, while a route uses async offload. */
  jobs?: () => { store: JobStore; prefix: string; counts: () => Readonly<JobCounts> } | undefined;
  /** Applies a config made by a live change (new requests get it; requests in flight keep theirs). */
  apply?: (next: EffectiveConfig, change: string) => void;
  /** Reloads the config file (POST /api/reload); absent when the config came from no file. */
  reload?: () => ReloadResult;
  /** The response cache's requests of a route by result, since start. */
  cacheResults?: (route: string) => ReadonlyMap<string, number> | undefined;
  /** Purges the response cache (DELETE /api/cache): entries of a route and path (`*` ends a prefix). */
  purgeCache?: (route: string | undefined, path: string | undefined) => number;
}

const MAX_PATCH = 64 * 1024;

/** The request body as a JSON object; undefined (and the problem sent) when it is not one. */
async function readJsonObject(
  req: IncomingMessage,
  res: ServerResponse,
): Promise<Record<string, unknown> | undefined> {
  const type = String(req.headers['content-type'] ?? '');
  if (!/^application\/(merge-patch\+)?json\b/.test(type)) {
    problem(
      res,
      415,
      'unsupported-media-type',
      'Unsupported media type',
      'send the patch as application/merge-patch+json (RFC 7396) or application/json',
    );
    return undefined;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_PATCH) {
      problem(res, 413, 'body-too-large', 'Request body too large', `a patch is at most ${MAX_PATCH} bytes`);
      return undefined;
    }
    chunks.push(c as Buffer);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    problem(res, 400, 'bad-request', 'Bad request', `the body is not JSON: ${(err as Error).message}`);
    return undefined;
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    problem(res, 400, 'bad-request', 'Bad request', 'a merge patch of a route or upstream is a JSON object');
    return undefined;
  }
  return body as Record<string, unknown>;
}

function problem(res: ServerResponse, status: number, code: string, title: string, detail: string): void {
  json(
    res,
    status,
    { type: `https://sluice.dev/problems/${code}`, title, status, detail },
    'application/problem+json',
  );
}

/** 422 invalid-config: the config (a patch or the file) was refused; `extra` names each bad field. */
function invalidConfig(res: ServerResponse, detail: string, extra: Record<string, unknown>): void {
  json(
    res,
    422,
    {
      type: 'https://sluice.dev/problems/invalid-config',
      title: 'Invalid configuration',
      status: 422,
      detail,
      ...extra,
    },
    'application/problem+json',
  );
}

/** Lets GET and HEAD through; answers 405 naming `allow` otherwise. */
function getOnly(req: IncomingMessage, res: ServerResponse, allow = 'GET, HEAD'): boolean {
  if (req.method === 'GET' || req.method === 'HEAD') return true;
  res.setHeader('allow', allow);
  problem(res, 405, 'method-not-allowed', 'Method not allowed', `${req.method} is not supported here`);
  return false;
}

const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;

function routeView(
  route: EffectiveRoute,
  obs: Observability,
  live: ReadonlySet<string> | undefined,
  jobs: Readonly<JobCounts> | undefined,
  cacheResults: ReadonlyMap<string, number> | undefined,
) {
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
    timeout_layers: Object.fromEntries(
      Object.entries(route.timeoutLayers).map(([phase, layer]) => [phase, live?.has(phase) ? 'live' : layer]),
    ),
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
    cache: route.cache
      ? {
          ttl_ms: route.cache.ttl ?? null,
          stale_while_revalidate_ms: route.cache.staleWhileRevalidate ?? null,
          stale_if_error_ms: route.cache.staleIfError ?? null,
          max_entry: route.cache.maxEntry,
          vary_limit: route.cache.varyLimit,
          /** Requests since start by result: hit, stale, miss, revalidated, collapsed, bypass. */
          results: Object.fromEntries(cacheResults ?? []),
        }
      : null,
    compress: route.compress
      ? { algorithms: route.compress.algorithms, min_size: route.compress.minSize }
      : null,
    /** allow/deny, auth (kind and file, never credentials) and rate_limit (SPEC §13). */
    access: accessView(route.access),
    /** Jobs of this route by status (refreshed every few seconds), while it uses async offload. */
    jobs: route.async ? (jobs?.[route.name] ?? null) : null,
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
  /** The config was (re)loaded from its source: live changes are gone. */
  resetLive(): void;
} {
  const { observability: obs } = deps;
  const windowS = () => deps.runtime().config.alerts.window / 1000;
  /** Phases of each route whose budget a live change set. */
  const live = new Map<string, Set<string>>();
  const view = (route: EffectiveRoute) => {
    const v = routeView(
      route,
      obs,
      live.get(route.name),
      deps.jobs?.()?.counts(),
      deps.cacheResults?.(route.name),
    );
    return { ...v, stats: { ...v.stats, window_s: windowS() } };
  };

  /**
   * Applies `patch` to one entry of the running config as written, validates the whole exactly like
   * the file, and swaps it in; on any problem nothing is applied and every bad field is named.
   */
  const patchEntry = async (
    req: IncomingMessage,
    res: ServerResponse,
    kind: 'routes' | 'upstreams',
    name: string,
  ): Promise<EffectiveConfig | undefined> => {
    const config = deps.runtime().config;
    const raw = config.raw as Record<string, unknown> | undefined;
    if (!deps.apply || raw === undefined) {
      problem(
        res,
        409,
        'live-changes-unavailable',
        'Live changes unavailable',
        'this gateway was not started from a config that can be patched',
      );
      return undefined;
    }
    const patch = await readJsonObject(req, res);
    if (!patch) return undefined;
    if ('name' in patch && patch.name !== name) {
      problem(res, 422, 'invalid-config', 'Invalid configuration', 'an entry cannot be renamed by a patch');
      return undefined;
    }
    let next: Record<string, unknown>;
    let where: string;
    if (kind === 'routes') {
      const list = (raw.routes as Record<string, unknown>[]) ?? [];
      const i = list.findIndex((r) => r.name === name);
      where = `routes[${i}]`;
      next = { ...raw, routes: list.map((r, j) => (j === i ? mergePatch(r, patch) : r)) };
    } else {
      where = `upstreams.${name}`;
      const ups = raw.upstreams as Record<string, unknown>;
      next = { ...raw, upstreams: { ...ups, [name]: mergePatch(ups[name], patch) } };
    }
    const change = `PATCH /api/${kind}/${name}`;
    let loaded: EffectiveConfig;
    try {
      loaded = loadConfigObject(next, change);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      const errors = err.issues.map((i) => ({
        field: i.path.startsWith(`${where}.`) ? i.path.slice(where.length + 1) : i.path,
        message: i.message,
      }));
      invalidConfig(res, `nothing was applied: ${errors.map((e) => `${e.field}: ${e.message}`).join('; ')}`, {
        errors,
      });
      return undefined;
    }
    deps.apply(loaded, change);
    // Mark the phases this change set as `live` on the routes it reaches.
    const phases = Object.keys((patch.timeouts as Record<string, unknown> | undefined) ?? {});
    for (const r of loaded.routes) {
      if (kind === 'routes' ? r.name !== name : r.upstream !== name) continue;
      const set = live.get(r.name) ?? new Set<string>();
      for (const p of phases)
        if (kind === 'routes' || r.timeoutLayers[p as keyof Timeouts] === 'upstream') set.add(p);
      if (set.size > 0) live.set(r.name, set);
    }
    return loaded;
  };

  const routeByName = (res: ServerResponse, name: string) => {
    const rt = deps.runtime().routes.find((r) => r.name === name);
    if (!rt) problem(res, 404, 'not-found', 'Not found', `no route named '${name}'`);
    return rt;
  };

  return {
    exact: {
      '/api/routes': (req, res) => {
        if (!getOnly(req, res)) return;
        json(res, 200, { routes: deps.runtime().routes.map((r) => view(r.route)) });
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
      '/api/cache': (req, res, url) => {
        if (req.method !== 'DELETE') {
          res.setHeader('allow', 'DELETE');
          return problem(res, 405, 'method-not-allowed', 'Method not allowed', 'purge with DELETE');
        }
        const route = url.searchParams.get('route') ?? undefined;
        const path = url.searchParams.get('path') ?? undefined;
        if (route !== undefined && !deps.runtime().routes.some((r) => r.name === route))
          return problem(res, 404, 'not-found', 'Not found', `no route named '${route}'`);
        if (path !== undefined && !path.startsWith('/'))
          return problem(
            res,
            400,
            'bad-request',
            'Bad request',
            'path starts with / (end it with * for a prefix)',
          );
        const purged = deps.purgeCache?.(route, path) ?? 0;
        json(res, 200, { purged, route: route ?? null, path: path ?? null });
      },
      '/api/reload': (req, res) => {
        if (req.method !== 'POST') {
          res.setHeader('allow', 'POST');
          return problem(res, 405, 'method-not-allowed', 'Method not allowed', 'reload with POST');
        }
        // The body, if any, is not read: a reload takes nothing but the file.
        req.resume();
        if (!deps.reload)
          return problem(
            res,
            409,
            'reload-unavailable',
            'Reload unavailable',
            'this gateway was not started from a config file',
          );
        const r = deps.reload();
        if (r.result === 'applied')
          return json(res, 200, { result: 'applied', source: r.source, loaded_at: r.loadedAt.toISOString() });
        invalidConfig(res, `the file was refused and the running config stays: ${r.error}`, {
          source: r.source,
          errors: r.issues.map((i) => ({ field: i.path, line: i.line ?? null, message: i.message })),
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
      '/api/routes/': async (req, res, url) => {
        const parts = url.pathname.slice('/api/routes/'.length).split('/').map(decodeURIComponent);
        if (parts.length === 1 && req.method === 'PATCH') {
          if (!routeByName(res, parts[0])) return;
          const loaded = await patchEntry(req, res, 'routes', parts[0]);
          const route = loaded?.routes.find((r) => r.name === parts[0]);
          if (route) json(res, 200, view(route));
          return;
        }
        if (!getOnly(req, res, parts.length === 1 ? 'GET, HEAD, PATCH' : 'GET, HEAD')) return;
        if (parts.length === 1) {
          const rt = routeByName(res, parts[0]);
          if (rt) json(res, 200, view(rt.route));
          return;
        }
        if (parts.length !== 2 || !['what-if', 'timeline', 'requests'].includes(parts[1]))
          return problem(res, 404, 'not-found', 'Not found', `no such resource: ${url.pathname}`);
        const rt = routeByName(res, parts[0]);
        if (!rt) return;
        if (parts[1] === 'timeline') {
          const tl = obs.timeline(rt.name);
          const limit = headroomLimit(rt.timeouts);
          return json(res, 200, {
            route: rt.name,
            slot_s: (tl?.slotMs ?? 30_000) / 1000,
            budget: {
              total_ms: rt.timeouts.total,
              ttfb_ms: rt.timeouts.ttfb,
              limit: limit ? { phase: limit.phase, ms: limit.ms } : null,
              async_after_ms: rt.route.async?.after ?? null,
            },
            points: (tl?.points ?? []).map((p) => ({
              at: new Date(p.at).toISOString(),
              requests: p.count,
              timeouts: p.timeouts,
              errors: p.errors,
              p50_ms: round(p.p50),
              p95_ms: round(p.p95),
              p99_ms: round(p.p99),
            })),
          });
        }
        if (parts[1] === 'requests')
          return json(res, 200, { route: rt.name, requests: obs.recent(rt.name) ?? [] });
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
      '/api/upstreams/': async (req, res, url) => {
        const name = decodeURIComponent(url.pathname.slice('/api/upstreams/'.length));
        if (!deps.runtime().upstreams.has(name))
          return problem(res, 404, 'not-found', 'Not found', `no upstream named '${name}'`);
        if (req.method === 'PATCH') {
          if (!(await patchEntry(req, res, 'upstreams', name))) return;
        } else if (!getOnly(req, res, 'GET, HEAD, PATCH')) return;
        json(res, 200, upstreamView(deps.runtime().upstreams.get(name) as Upstream));
      },
    },
    resetLive() {
      live.clear();
    },
  };
}
