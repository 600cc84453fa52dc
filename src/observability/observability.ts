/**
 * The observability facade (SPEC §7): what the gateway calls once per finished request (`onRequest`),
 * and what the admin listener serves (`/metrics`, `/api/alerts`). It owns the per-route sliding
 * latency windows, the Prometheus metrics and the alert engine, and the one-second ticker that
 * evaluates the alerts.
 *
 * `onRequest` is the hot path: one Map lookup by route name, then the route's pre-bound metric series
 * and its latency window — no allocation, no string building, no I/O. Everything else (merging
 * windows, rendering metrics, alert evaluation, webhook delivery) happens off the request path.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type AdminHandler, json } from '../admin/admin-server.ts';
import { type Clock, systemClock } from '../clock.ts';
import type { EffectiveConfig } from '../config/resolve.ts';
import type { UpstreamEvent } from '../upstream/upstream.ts';
import type { AccessLogEntry } from './access-log.ts';
import { AlertEngine, type AlertEngineOptions } from './alerts.ts';
import { type HeadroomLimit, headroomLimit } from './headroom.ts';
import { LatencyWindow, type WindowPoint, type WindowStats } from './latency-window.ts';
import type { Logger } from './logger.ts';
import { type MetricProviders, Metrics, type RouteSeries } from './metrics.ts';
import { type RecentRequest, RecentRequests } from './recent-requests.ts';
import { RouteStats, type RouteWindowFigures } from './route-stats.ts';

/** What-if (admin API): the share of recent requests a budget would have cut. */
export interface WhatIf {
  /** Requests in the last 15 minutes. */
  readonly requests: number;
  /** Share (0–1) that took longer than `total_ms` (timed-out ones counted at their budget). */
  readonly timeout_share: number;
  /** With an async hold: share that took longer than it (and would have become jobs). */
  readonly async_share?: number;
}

/** How far back what-if looks. */
export const WHAT_IF_MS = 15 * 60_000;

export interface ObservabilityDeps {
  logger: Logger;
  clock?: Clock;
  /** The gateway, for the in-flight gauge. */
  gateway: { readonly inflight: number };
  /** Webhook delivery settings (tests shorten them). */
  webhook?: AlertEngineOptions['webhook'];
}

/** Live state of later subsystems (jobs, breakers, health checks). */
export interface ObservabilityProviders extends MetricProviders {
  /** Whether an upstream's circuit is open (circuit_open alerts); default: from `circuits`. */
  circuitOpen?: (upstream: string) => boolean;
}

/** The outcomes of the line written when a job ends. */
export function isJobEnd(outcome: string): boolean {
  return outcome === 'job_completed' || outcome === 'job_failed' || outcome === 'job_cancelled';
}

export interface Observability {
  /** Call once per finished request, after the access-log line (the hot path). */
  onRequest(entry: AccessLogEntry): void;
  /** The Prometheus text exposition. */
  metricsText(): Promise<string>;
  /** Content type of `metricsText()`. */
  readonly contentType: string;
  /** Sliding-window statistics of a route; undefined for unknown routes. */
  window(route: string): WindowStats | undefined;
  /** Percentile `q` (0 < q ≤ 1) of a route's sliding window in ms; 0 when empty or unknown. */
  percentile(route: string, q: number): number;
  /** Status codes, timeouts by phase, Server-Timing means and rps of a route over the alert window. */
  figures(route: string): RouteWindowFigures | undefined;
  /**
   * From the route's latency of the last 15 minutes (whole requests, timed-out ones at their budget):
   * the share that a total budget of `totalMs` would have cut, and with `asyncAfterMs` the share that
   * would have become jobs. undefined for unknown routes.
   */
  whatIf(route: string, totalMs: number, asyncAfterMs?: number): WhatIf | undefined;
  /**
   * A route's whole-request latency over the last 15 minutes, slot by slot (oldest first; `at` in
   * wall-clock ms), for charts; undefined for unknown routes.
   */
  timeline(route: string): { slotMs: number; points: WindowPoint[] } | undefined;
  /** A route's recent slow or failed requests, newest first; undefined for unknown routes. */
  recent(route: string): RecentRequest[] | undefined;
  /** Applies a new config; routes that still exist keep their windows, alerts their state. */
  reload(config: EffectiveConfig): void;
  /** A reload was refused (invalid file): counted, the running config stays. */
  reloadFailed(): void;
  /** Upstream state changes (ejections are counted). */
  onUpstreamEvent(event: UpstreamEvent): void;
  /** Starts the one-second alert ticker. */
  start(): void;
  /** Stops the ticker and webhook delivery. */
  stop(): Promise<void>;
  /** One evaluation round, as the ticker runs it (for tests with a fake clock). */
  tick(): void;
  setProviders(providers: ObservabilityProviders): void;
  readonly metrics: Metrics;
  readonly alerts: AlertEngine;
}

interface RouteObs {
  readonly series: RouteSeries;
  /** undefined for '' (no route) and for routes a reload removed while their requests finished. */
  readonly window: LatencyWindow | undefined;
  /** What the window measures: time to headers against ttfb, or the whole request against total. */
  readonly limit: HeadroomLimit | undefined;
  /** Whole-request latency of the last 15 minutes, for what-if. */
  readonly history: LatencyWindow | undefined;
  readonly stats: RouteStats | undefined;
  readonly recent: RecentRequests | undefined;
  /** What counts as slow for `recent`: the window's p95 at the last tick (0 until it has enough requests). */
  slowMs: number;
}

function isError(e: AccessLogEntry): boolean {
  const o = e.outcome;
  return e.status >= 500 || o === 'upstream_error' || o === 'circuit_open' || o === 'shed';
}

export function createObservability(initial: EffectiveConfig, deps: ObservabilityDeps): Observability {
  const clock = deps.clock ?? systemClock;
  let config = initial;
  let routes = new Map<string, RouteObs>();
  let ticker: NodeJS.Timeout | undefined;
  // Within one alert round every rule of a route reads the same merged window.
  let roundCache: Map<string, WindowStats | undefined> | undefined;
  let recordFailed = false;

  const window = (route: string): WindowStats | undefined => {
    if (roundCache?.has(route)) return roundCache.get(route);
    const stats = routes.get(route)?.window?.stats();
    roundCache?.set(route, stats);
    return stats;
  };

  const metrics = new Metrics({
    inflight: () => deps.gateway.inflight,
    routes: () => config.routes,
    window,
    alerts: () => alerts.states(),
  });
  const alerts = new AlertEngine(initial, { logger: deps.logger, clock, window, webhook: deps.webhook });

  const build = (next: EffectiveConfig) => {
    const windowChanged = next.alerts.window !== config.alerts.window;
    const old = routes;
    routes = new Map();
    routes.set('', {
      series: metrics.series(''),
      window: undefined,
      limit: undefined,
      history: undefined,
      stats: undefined,
      recent: undefined,
      slowMs: 0,
    });
    for (const r of next.routes) {
      const limit = headroomLimit(r.timeouts);
      const prev = old.get(r.name);
      // A window keeps its data only while it measures the same figure over the same span.
      const keep = !windowChanged && prev?.limit?.phase === limit?.phase;
      const series = metrics.series(r.name);
      routes.set(r.name, {
        series,
        window: (keep ? prev?.window : undefined) ?? new LatencyWindow(next.alerts.window, clock),
        limit,
        history: prev?.history ?? new LatencyWindow(WHAT_IF_MS, clock),
        stats:
          (windowChanged ? undefined : prev?.stats) ??
          new RouteStats(series, next.alerts.window, clock.now()),
        recent: prev?.recent ?? new RecentRequests(),
        slowMs: prev?.slowMs ?? 0,
      });
    }
    metrics.retain(new Set(next.routes.map((r) => r.name)), new Set(Object.keys(next.upstreams)));
  };
  build(initial);

  const tick = () => {
    const t = clock.now();
    for (const r of routes.values()) r.stats?.tick(t);
    roundCache = new Map();
    try {
      alerts.evaluate();
      for (const [name, r] of routes) {
        if (r.window === undefined) continue;
        const st = window(name);
        r.slowMs = st !== undefined && st.count >= 20 ? st.p95 : 0;
      }
    } catch (err) {
      deps.logger.error({ error: (err as Error).message }, 'alert evaluation failed');
    } finally {
      roundCache = undefined;
    }
  };

  return {
    metrics,
    alerts,
    contentType: metrics.contentType,
    onRequest(e) {
      try {
        const name = e.route ?? '';
        let r = routes.get(name);
        if (r === undefined) {
          r = {
            series: metrics.series(name),
            window: undefined,
            limit: undefined,
            history: undefined,
            stats: undefined,
            recent: undefined,
            slowMs: 0,
          };
          routes.set(name, r);
        }
        const o = e.outcome;
        if (isJobEnd(o)) {
          // Jobs run under async.timeout, not the route's budget: their own series, not the window.
          r.series.recordJob(e);
          return;
        }
        r.series.record(e);
        if (e.upstream !== null) metrics.upstream(e.upstream).record(e);
        const w = r.window;
        // A WebSocket tunnel (101) lasts as long as its users talk: no latency against a budget.
        if (w === undefined || o === 'rejected' || o === 'shutdown' || e.status === 101) return;
        const failed = o === 'timeout' || isError(e);
        r.recent?.offer(e, failed, r.slowMs);
        // A timeout or shed that only the client's own shorter budget caused is the client's choice:
        // it never counts against the upstream (headroom, rates, alerts).
        if (e.budget_source === 'client' && (o === 'timeout' || o === 'shed')) return;
        const kind = o === 'timeout' ? 'timeout' : failed ? 'error' : 'ok';
        r.history?.record(e.total, kind, e.budget_ms);
        const limit = r.limit;
        if (limit?.phase === 'ttfb') {
          // Time to response headers against ttfb; a request that never got headers in time counts
          // at the ttfb budget (a timeout after the headers keeps its ttfb).
          if (e.ttfb !== null) w.record(e.ttfb, kind, 0);
          else w.record(e.total, kind, kind === 'timeout' ? limit.ms : 0);
        } else w.record(e.total, kind, e.budget_ms);
      } catch (err) {
        // Never let a metrics bug break the gateway's request accounting; say so once.
        if (!recordFailed)
          deps.logger.error({ error: (err as Error).message }, 'recording request metrics failed');
        recordFailed = true;
      }
    },
    metricsText: () => metrics.text(),
    window,
    percentile: (route, q) => routes.get(route)?.window?.percentile(q) ?? 0,
    figures: (route) => routes.get(route)?.stats?.figures(clock.now()),
    whatIf(route, totalMs, asyncAfterMs) {
      const h = routes.get(route)?.history;
      if (h === undefined) return undefined;
      const { count, above } = h.countAbove(asyncAfterMs === undefined ? [totalMs] : [totalMs, asyncAfterMs]);
      const share = (n: number) => (count === 0 ? 0 : Math.round((n / count) * 10_000) / 10_000);
      if (asyncAfterMs === undefined) return { requests: count, timeout_share: share(above[0]) };
      // A request still running at the hold becomes a job instead of timing out (then it runs under
      // async.timeout); a hold at or past the budget comes too late to save any.
      return asyncAfterMs < totalMs
        ? { requests: count, timeout_share: 0, async_share: share(above[1]) }
        : { requests: count, timeout_share: share(above[0]), async_share: 0 };
    },
    timeline(route) {
      const h = routes.get(route)?.history;
      if (h === undefined) return undefined;
      // Slots start on the monotonic clock; told in wall-clock ms.
      const offset = Date.now() - clock.now();
      return { slotMs: h.slotMs, points: h.timeline().map((p) => ({ ...p, at: p.at + offset })) };
    },
    recent: (route) => routes.get(route)?.recent?.list(),
    reload(next) {
      build(next);
      config = next;
      alerts.reload(next);
      metrics.reloaded(true);
    },
    reloadFailed() {
      metrics.reloaded(false);
    },
    onUpstreamEvent(event) {
      if (event.kind === 'ejected') metrics.ejected(event.upstream, event.target);
    },
    start() {
      if (ticker) return;
      ticker = setInterval(tick, 1_000);
      ticker.unref();
    },
    async stop() {
      clearInterval(ticker);
      ticker = undefined;
      await alerts.close();
    },
    tick,
    setProviders(p) {
      metrics.setProviders(p);
      const circuits = p.circuits;
      if (p.circuitOpen) alerts.setCircuitOpen(p.circuitOpen);
      else if (circuits) alerts.setCircuitOpen((u) => circuits()[u] === 'open');
      const targets = p.targets;
      if (targets) {
        alerts.setTargetsDown((u) => {
          const down: string[] = [];
          for (const t of targets()) if (t.upstream === u && !t.healthy) down.push(t.target);
          return down;
        });
      }
    },
  };
}

/** The admin endpoints of observability: `GET /metrics` and `GET /api/alerts`. */
export function observabilityRoutes(obs: Observability): Record<string, AdminHandler> {
  const getOnly = (req: IncomingMessage, res: ServerResponse): boolean => {
    if (req.method === 'GET' || req.method === 'HEAD') return true;
    res.setHeader('allow', 'GET, HEAD');
    json(
      res,
      405,
      { type: 'https://sluice.dev/problems/method-not-allowed', title: 'Method not allowed', status: 405 },
      'application/problem+json',
    );
    return false;
  };
  return {
    '/metrics': async (req, res) => {
      if (!getOnly(req, res)) return;
      const text = await obs.metricsText();
      res.writeHead(200, {
        'content-type': obs.contentType,
        'content-length': Buffer.byteLength(text),
        'cache-control': 'no-store',
      });
      res.end(req.method === 'HEAD' ? undefined : text);
    },
    '/api/alerts': (req, res) => {
      if (!getOnly(req, res)) return;
      json(res, 200, { active: obs.alerts.active(), history: obs.alerts.history() });
    },
  };
}
