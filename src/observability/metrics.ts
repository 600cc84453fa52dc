/**
 * Every Prometheus metric of Sluice (SPEC §7), defined here and nowhere else; docs/metrics.md lists
 * them. Served at the admin listener's `/metrics` from an own Registry (never prom-client's global one).
 *
 * Hot path: `RouteSeries.record(entry)` runs once per finished request. It writes into plain numbers
 * pre-bound to the route (one Map lookup by route name, one by a numeric status/outcome key, a bucket
 * search over 15 bounds) and builds no strings. prom-client's own `observe()`/`inc()` hash a label
 * string and validate the labels on every call (≈ 0.4 µs each, five or more per request), so the hot
 * series keep their own cells and hand them to prom-client only when scraped. Cardinality is bounded
 * by the config: route names (never raw paths; '' for requests that matched no route), status codes,
 * the fixed outcome and phase sets, and at most `MAX_TIMING_NAMES` Server-Timing names per route.
 */
import { readFileSync } from 'node:fs';
import {
  Counter,
  collectDefaultMetrics,
  Gauge,
  Histogram,
  type MetricObjectWithValues,
  type MetricValueWithName,
  Registry,
} from 'prom-client';
import type { EffectiveRoute } from '../config/resolve.ts';
import type { Phase } from '../errors.ts';
import type { AccessLogEntry } from './access-log.ts';
import { headroomLimit } from './headroom.ts';
import type { WindowStats } from './latency-window.ts';

/** The package version, for `sluice_build_info`. */
const VERSION: string = (() => {
  try {
    return (
      JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
    ).version;
  } catch {
    return 'unknown';
  }
})();

/** Whole-request durations: resolve 5 ms at the low end and budgets up to 2 min. */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120];
/** Phase and Server-Timing durations: also resolve the sub-5 ms connects of a LAN. */
export const PHASE_BUCKETS = [0.001, 0.0025, ...DURATION_BUCKETS];
/** Upstream-chosen Server-Timing names kept per route; further names are not recorded. */
export const MAX_TIMING_NAMES = 16;

export type CircuitState = 'closed' | 'half-open' | 'open';
const CIRCUIT_VALUE: Record<CircuitState, number> = { closed: 0, 'half-open': 1, open: 2 };

/** Live state owned by later subsystems; each metric is registered once its provider is set. */
export interface MetricProviders {
  /** Job counts by route, then status (`queued`, `running`, `completed`, …) → `sluice_jobs{route,status}`. */
  jobs?: () => Readonly<Record<string, Readonly<Record<string, number>>>>;
  /** Circuit state per upstream → `sluice_circuit_state{upstream}` (0 closed, 1 half-open, 2 open). */
  circuits?: () => Record<string, CircuitState>;
  /** Health of every target → `sluice_target_healthy{upstream,target}` (1 healthy, 0 not). */
  targets?: () => Iterable<{ upstream: string; target: string; healthy: boolean }>;
  /** 1 while the job store answers its checks, 0 while it is down. */
  jobStoreUp?: () => number;
  /** WebSocket (Upgrade) tunnels open now. */
  tunnels?: () => number;
  /** Requests the Redis rate limiter let through because Redis could not answer (fail open). */
  rateLimitStoreErrors?: () => number;
  /** Live views on GET /api/events: connected now, and dropped for not reading since start. */
  viewers?: () => { connected: number; dropped: number };
  /** The response cache: requests by route and result, and the store's entries, bytes and evictions. */
  cache?: () => {
    results: ReadonlyMap<string, ReadonlyMap<string, number>>;
    entries: number;
    bytes: number;
    capacity: number;
    evictions: number;
  };
  /**
   * The processes of an instance with `workers` > 1: running now (the primary included), started
   * again after an exit, and requests each finished (by worker number, 0 the primary).
   */
  workers?: () => { processes: number; restarts: number; requests: readonly number[] };
}

/** What the scrape-time gauges read (the facade wires these to the config, windows and alerts). */
export interface MetricSources {
  inflight: () => number;
  routes: () => readonly EffectiveRoute[];
  window: (route: string) => WindowStats | undefined;
  alerts: () => Iterable<{ rule: string; route: string; upstream: string; firing: boolean }>;
}

type Labels = Record<string, string>;

/** A histogram's counts for one label set: per bucket (not cumulative), then +Inf. */
export class HistogramCell {
  readonly labels: Labels;
  readonly bounds: readonly number[];
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(labels: Labels, bounds: readonly number[]) {
    this.labels = labels;
    this.bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]) i++;
    this.counts[i]++;
    this.sum += v;
    this.count++;
  }
}

interface CounterCell {
  readonly labels: Labels;
  value: number;
}

const PHASES: readonly Phase[] = ['connect', 'send', 'ttfb', 'read', 'total'];
const PHASE_INDEX: Record<string, number> = { connect: 0, send: 1, ttfb: 2, read: 3, total: 4 };
/** Phase-duration fields of an access-log entry that become `sluice_phase_duration_seconds{phase}`. */
const TIMED_PHASES = ['dns', 'connect', 'tls', 'ttfb'] as const;

// Outcome → small integer, so a status/outcome pair is one numeric Map key (no string per request).
const outcomeIndex = new Map<string, number>();
function outcomeKey(outcome: string): number {
  let i = outcomeIndex.get(outcome);
  if (i === undefined) outcomeIndex.set(outcome, (i = outcomeIndex.size));
  return i;
}

/** Finished jobs of one route and outcome: the count is the histogram's. */
interface JobCell {
  readonly duration: HistogramCell;
}

/** The hot-path series of one route, bound once; `record` is called for every finished request. */
export class RouteSeries {
  readonly route: string;
  readonly requests = new Map<number, CounterCell>();
  readonly duration: HistogramCell;
  readonly phases: (HistogramCell | undefined)[] = [undefined, undefined, undefined, undefined];
  /** Timeouts by phase (index as in PHASES) that count against the upstream. */
  readonly timeouts = new Float64Array(PHASES.length);
  /** Timeouts and sheds that only a client's shorter x-timeout-ms caused (budget_source: client). */
  clientBudget = 0;
  /** Requests refused by the route's rate limit (outcome rate_limited, SPEC §13). */
  rateLimited = 0;
  readonly timing = new Map<string, HistogramCell>();
  /** Finished jobs by outcome (`job_completed`, `job_failed`, `job_cancelled`). */
  readonly jobs = new Map<string, JobCell>();

  constructor(route: string) {
    this.route = route;
    this.duration = new HistogramCell({ route }, DURATION_BUCKETS);
  }

  #phase(i: number, ms: number): void {
    const h = (this.phases[i] ??= new HistogramCell(
      { route: this.route, phase: TIMED_PHASES[i] },
      PHASE_BUCKETS,
    ));
    h.observe(ms / 1000);
  }

  record(e: AccessLogEntry): void {
    const key = e.status * 64 + outcomeKey(e.outcome);
    const cell = this.requests.get(key);
    if (cell) cell.value++;
    else
      this.requests.set(key, {
        labels: { route: this.route, status: String(e.status), outcome: e.outcome },
        value: 1,
      });
    this.duration.observe(e.total / 1000);
    // Field by field rather than a loop over names: monomorphic loads on the hot path.
    if (e.ttfb !== null) this.#phase(3, e.ttfb);
    if (e.connect !== null) this.#phase(1, e.connect);
    if (e.dns !== null) this.#phase(0, e.dns);
    if (e.tls !== null) this.#phase(2, e.tls);
    if (e.outcome === 'timeout' || e.outcome === 'shed') {
      if (e.budget_source === 'client') this.clientBudget++;
      else if (e.outcome === 'timeout') this.timeouts[PHASE_INDEX[e.phase ?? 'total'] ?? 4]++;
    } else if (e.outcome === 'rate_limited') this.rateLimited++;
    const t = e.upstream_timing;
    if (t !== undefined) {
      for (const name in t) {
        const ms = t[name];
        if (!(ms >= 0)) continue; // upstream-supplied: ignore negative and non-numeric durations
        let h = this.timing.get(name);
        if (h === undefined) {
          if (this.timing.size >= MAX_TIMING_NAMES) continue;
          h = new HistogramCell({ route: this.route, name }, PHASE_BUCKETS);
          this.timing.set(name, h);
        }
        h.observe(ms / 1000);
      }
    }
  }

  /** The line written when a job of this route ended (outcome `job_*`; `total` from its arrival). */
  recordJob(e: AccessLogEntry): void {
    let cell = this.jobs.get(e.outcome);
    if (cell === undefined) {
      cell = { duration: new HistogramCell({ route: this.route, outcome: e.outcome }, JOB_BUCKETS) };
      this.jobs.set(e.outcome, cell);
    }
    cell.duration.observe(e.total / 1000);
    // A background call that timed out is a timeout of the route's upstream like any other.
    if (e.outcome === 'job_failed' && e.error === 'upstream-timeout')
      this.timeouts[PHASE_INDEX[e.phase ?? 'total'] ?? 4]++;
  }
}

/** Jobs run under async.timeout (default 15 min): buckets up to an hour. */
export const JOB_BUCKETS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600];

/** Requests and latency of one target of an upstream (the one that served the last try). */
class TargetSeries {
  readonly upstream: string;
  readonly target: string;
  readonly requests = new Map<number, CounterCell>();
  readonly duration: HistogramCell;
  ejections = 0;

  constructor(upstream: string, target: string) {
    this.upstream = upstream;
    this.target = target;
    this.duration = new HistogramCell({ upstream, target }, DURATION_BUCKETS);
  }

  record(e: AccessLogEntry): void {
    const cell = this.requests.get(e.status);
    if (cell) cell.value++;
    else
      this.requests.set(e.status, {
        labels: { upstream: this.upstream, target: this.target, status: String(e.status) },
        value: 1,
      });
    this.duration.observe(e.total / 1000);
  }
}

/** The series of one upstream: its targets and its retries. */
export class UpstreamSeries {
  readonly upstream: string;
  readonly targets = new Map<string, TargetSeries>();
  retries = 0;

  constructor(upstream: string) {
    this.upstream = upstream;
  }

  target(origin: string): TargetSeries {
    let t = this.targets.get(origin);
    if (t === undefined) this.targets.set(origin, (t = new TargetSeries(this.upstream, origin)));
    return t;
  }

  record(e: AccessLogEntry): void {
    if (e.retries > 0) this.retries += e.retries;
    if (e.target !== null) this.target(e.target).record(e);
  }
}

/**
 * A prom-client Histogram whose data lives in `HistogramCell`s (see the header comment): the Registry
 * reads metrics through `get()` / `getForPromString()`, which here build the standard exposition
 * (cumulative `_bucket{le}`, `_sum`, `_count`) from the cells.
 */
class CellHistogram extends Histogram<string> {
  readonly #name: string;
  readonly #help: string;
  readonly #cells: () => Iterable<HistogramCell>;

  constructor(
    name: string,
    help: string,
    labelNames: string[],
    registry: Registry,
    cells: () => Iterable<HistogramCell>,
  ) {
    super({ name, help, labelNames, buckets: [1], registers: [registry] });
    this.#name = name;
    this.#help = help;
    this.#cells = cells;
  }

  override async get(): Promise<MetricObjectWithValues<MetricValueWithName<string>>> {
    const bucket = `${this.#name}_bucket`;
    const values: MetricValueWithName<string>[] = [];
    for (const c of this.#cells()) {
      if (c.count === 0) continue;
      let acc = 0;
      for (let i = 0; i < c.bounds.length; i++) {
        acc += c.counts[i];
        values.push({ labels: { ...c.labels, le: c.bounds[i] }, value: acc, metricName: bucket });
      }
      values.push({ labels: { ...c.labels, le: '+Inf' }, value: c.count, metricName: bucket });
      values.push({ labels: c.labels, value: c.sum, metricName: `${this.#name}_sum` });
      values.push({ labels: c.labels, value: c.count, metricName: `${this.#name}_count` });
    }
    // `type` is a TypeScript enum in prom-client's typings; its runtime value is the string.
    const metric = { name: this.#name, help: this.#help, type: 'histogram', values, aggregator: 'sum' };
    return metric as unknown as MetricObjectWithValues<MetricValueWithName<string>>;
  }

  /** What the Registry calls for the text format (prom-client 15). */
  getForPromString(): Promise<MetricObjectWithValues<MetricValueWithName<string>>> {
    return this.get();
  }
}

export class Metrics {
  readonly registry = new Registry();
  readonly contentType: string = this.registry.contentType;
  readonly #series = new Map<string, RouteSeries>();
  readonly #upstreams = new Map<string, UpstreamSeries>();
  readonly #reloads = { success: 0, failure: 0, lastSuccess: 0, lastAt: 0 };
  #providers: MetricProviders = {};

  constructor(sources: MetricSources) {
    const registers = [this.registry];
    const series = this.#series;
    const upstreams = this.#upstreams;
    const reloads = this.#reloads;
    // The process itself: CPU, memory, event-loop delay, open fds, GC, with the sluice_ prefix.
    collectDefaultMetrics({ register: this.registry, prefix: 'sluice_' });
    new Gauge({
      name: 'sluice_build_info',
      help: 'Always 1; the labels say which Sluice and which Node.js run.',
      labelNames: ['version', 'node'],
      registers,
    }).set({ version: VERSION, node: process.version }, 1);
    new Counter({
      name: 'sluice_config_reloads_total',
      help: 'Config reloads (SIGHUP and the like) by result: success or failure (the running config stayed).',
      labelNames: ['result'],
      registers,
      collect() {
        this.reset();
        this.inc({ result: 'success' }, reloads.success);
        this.inc({ result: 'failure' }, reloads.failure);
      },
    });
    new Gauge({
      name: 'sluice_config_last_reload_success',
      help: 'Whether the last config reload succeeded (1) or was refused (0); 1 before any reload.',
      registers,
      collect() {
        this.set(reloads.failure === 0 || reloads.lastSuccess === 1 ? 1 : 0);
      },
    });
    new Gauge({
      name: 'sluice_config_last_reload_timestamp_seconds',
      help: 'Unix time of the last config reload attempt (0: none since start).',
      registers,
      collect() {
        this.set(reloads.lastAt / 1000);
      },
    });
    new Counter({
      name: 'sluice_upstream_requests_total',
      help: 'Finished requests per upstream and target (the one that served the last try) and status code.',
      labelNames: ['upstream', 'target', 'status'],
      registers,
      collect() {
        this.reset();
        for (const u of upstreams.values())
          for (const t of u.targets.values())
            for (const c of t.requests.values()) this.inc(c.labels, c.value);
      },
    });
    new CellHistogram(
      'sluice_upstream_request_duration_seconds',
      'Time from the request head to the end of the response, per upstream and target.',
      ['upstream', 'target'],
      this.registry,
      function* () {
        for (const u of upstreams.values()) for (const t of u.targets.values()) yield t.duration;
      },
    );
    new Counter({
      name: 'sluice_upstream_retries_total',
      help: 'Retries (tries after the first) per upstream.',
      labelNames: ['upstream'],
      registers,
      collect() {
        this.reset();
        for (const u of upstreams.values()) if (u.retries > 0) this.inc({ upstream: u.upstream }, u.retries);
      },
    });
    new Counter({
      name: 'sluice_upstream_ejections_total',
      help: 'Passive outlier ejections per upstream and target.',
      labelNames: ['upstream', 'target'],
      registers,
      collect() {
        this.reset();
        for (const u of upstreams.values())
          for (const t of u.targets.values())
            if (t.ejections > 0) this.inc({ upstream: t.upstream, target: t.target }, t.ejections);
      },
    });
    new Counter({
      name: 'sluice_client_budget_exceeded_total',
      help: "Requests that timed out or were shed only because the client's own x-timeout-ms was shorter than the route's budget (never counted against the upstream).",
      labelNames: ['route'],
      registers,
      collect() {
        this.reset();
        for (const s of series.values()) if (s.clientBudget > 0) this.inc({ route: s.route }, s.clientBudget);
      },
    });
    new Counter({
      name: 'sluice_jobs_finished_total',
      help: 'Async jobs that ended, per route and outcome (job_completed, job_failed, job_cancelled).',
      labelNames: ['route', 'outcome'],
      registers,
      collect() {
        this.reset();
        for (const s of series.values())
          for (const [outcome, c] of s.jobs) this.inc({ route: s.route, outcome }, c.duration.count);
      },
    });
    new CellHistogram(
      'sluice_job_duration_seconds',
      'Time from the request that created a job to its end, per route and outcome.',
      ['route', 'outcome'],
      this.registry,
      function* () {
        for (const s of series.values()) for (const c of s.jobs.values()) yield c.duration;
      },
    );

    new Counter({
      name: 'sluice_requests_total',
      help: "Finished requests by route ('' when no route matched), status code and outcome.",
      labelNames: ['route', 'status', 'outcome'],
      registers,
      collect() {
        this.reset();
        for (const s of series.values()) for (const c of s.requests.values()) this.inc(c.labels, c.value);
      },
    });
    new CellHistogram(
      'sluice_request_duration_seconds',
      'Time from the request head to the end of the response, per route.',
      ['route'],
      this.registry,
      function* () {
        for (const s of series.values()) yield s.duration;
      },
    );
    new CellHistogram(
      'sluice_phase_duration_seconds',
      'Duration of upstream phases per route: connect (new connections only) and ttfb (request sent to response headers).',
      ['route', 'phase'],
      this.registry,
      function* () {
        for (const s of series.values()) for (const h of s.phases) if (h) yield h;
      },
    );
    new Counter({
      name: 'sluice_timeouts_total',
      help: 'Requests ended by a timeout, per route and phase (connect, send, ttfb, read, total).',
      labelNames: ['route', 'phase'],
      registers,
      collect() {
        this.reset();
        for (const s of series.values())
          for (let i = 0; i < PHASES.length; i++)
            if (s.timeouts[i] > 0) this.inc({ route: s.route, phase: PHASES[i] }, s.timeouts[i]);
      },
    });
    new Counter({
      name: 'sluice_rate_limited_total',
      help: 'Requests refused with 429 rate-limited by the route rate limit, per route.',
      labelNames: ['route'],
      registers,
      collect() {
        this.reset();
        for (const s of series.values()) if (s.rateLimited > 0) this.inc({ route: s.route }, s.rateLimited);
      },
    });
    new CellHistogram(
      'sluice_upstream_server_timing_seconds',
      'Durations the upstream reported in its Server-Timing header, per route and entry name.',
      ['route', 'name'],
      this.registry,
      function* () {
        for (const s of series.values()) yield* s.timing.values();
      },
    );
    new Gauge({
      name: 'sluice_requests_in_flight',
      help: 'Requests being handled right now.',
      registers,
      collect() {
        this.set(sources.inflight());
      },
    });
    new Gauge({
      name: 'sluice_route_timeout_seconds',
      help: "Each route's effective total timeout budget (0: disabled).",
      labelNames: ['route'],
      registers,
      collect() {
        this.reset();
        for (const r of sources.routes()) this.set({ route: r.name }, r.timeouts.total / 1000);
      },
    });
    new Gauge({
      name: 'sluice_route_latency_seconds',
      help: 'Latency percentiles over the sliding window (alerts.window), of the figure the first-firing limit measures (time to response headers when ttfb is below total, else the whole request), timed-out requests counted at their budget; absent while the window is empty.',
      labelNames: ['route', 'quantile'],
      registers,
      collect() {
        this.reset();
        for (const r of sources.routes()) {
          const w = sources.window(r.name);
          // An empty window has no percentiles: absent rather than a misleading 0 (prom-client would
          // print NaN as "Nan").
          if (!w || w.count === 0) continue;
          this.set({ route: r.name, quantile: '0.5' }, w.p50 / 1000);
          this.set({ route: r.name, quantile: '0.95' }, w.p95 / 1000);
          this.set({ route: r.name, quantile: '0.99' }, w.p99 / 1000);
        }
      },
    });
    new Gauge({
      name: 'sluice_route_headroom_ratio',
      help: 'Window p95 latency divided by the limit that fires first for the route (ttfb when it is below total, else total; 1 = at the limit); routes without either are absent.',
      labelNames: ['route', 'limit'],
      registers,
      collect() {
        this.reset();
        for (const r of sources.routes()) {
          const w = sources.window(r.name);
          const limit = headroomLimit(r.timeouts);
          if (w && limit) this.set({ route: r.name, limit: limit.phase }, w.p95 / limit.ms);
        }
      },
    });
    new Gauge({
      name: 'sluice_alerts_firing',
      help: "Alert rules per route (or per upstream for target_down, route ''): 1 while firing, 0 otherwise.",
      labelNames: ['rule', 'route', 'upstream'],
      registers,
      collect() {
        this.reset();
        for (const a of sources.alerts())
          this.set({ rule: a.rule, route: a.route, upstream: a.upstream }, a.firing ? 1 : 0);
      },
    });
  }

  /** The pre-bound series of a route ('' for requests that matched none), created on first use. */
  series(route: string): RouteSeries {
    let s = this.#series.get(route);
    if (s === undefined) this.#series.set(route, (s = new RouteSeries(route)));
    return s;
  }

  record(entry: AccessLogEntry): void {
    this.series(entry.route ?? '').record(entry);
  }

  /** The series of an upstream, created on first use. */
  upstream(name: string): UpstreamSeries {
    let u = this.#upstreams.get(name);
    if (u === undefined) this.#upstreams.set(name, (u = new UpstreamSeries(name)));
    return u;
  }

  /** A passive ejection of a target. */
  ejected(upstream: string, target: string): void {
    this.upstream(upstream).target(target).ejections++;
  }

  /** A config reload was applied (true) or refused (false). */
  reloaded(ok: boolean): void {
    const r = this.#reloads;
    if (ok) r.success++;
    else r.failure++;
    r.lastSuccess = ok ? 1 : 0;
    r.lastAt = Date.now();
  }

  /** Drops the series of routes (and upstreams) a reload removed; '' always stays. */
  retain(keep: ReadonlySet<string>, keepUpstreams?: ReadonlySet<string>): void {
    for (const name of this.#series.keys()) if (name !== '' && !keep.has(name)) this.#series.delete(name);
    if (keepUpstreams)
      for (const name of this.#upstreams.keys()) if (!keepUpstreams.has(name)) this.#upstreams.delete(name);
  }

  /** Plugs in live state of later subsystems; a metric appears once its provider is set. */
  setProviders(p: MetricProviders): void {
    const registers = [this.registry];
    this.#providers = { ...this.#providers, ...p };
    const providers = () => this.#providers;
    if (p.jobs && !this.registry.getSingleMetric('sluice_jobs')) {
      new Gauge({
        name: 'sluice_jobs',
        help: 'Async jobs in the store by route and status (refreshed every few seconds).',
        labelNames: ['route', 'status'],
        registers,
        collect() {
          this.reset();
          for (const [route, perStatus] of Object.entries(providers().jobs?.() ?? {}))
            for (const [status, n] of Object.entries(perStatus)) this.set({ route, status }, n);
        },
      });
    }
    if (p.circuits && !this.registry.getSingleMetric('sluice_circuit_state')) {
      new Gauge({
        name: 'sluice_circuit_state',
        help: 'Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.',
        labelNames: ['upstream'],
        registers,
        collect() {
          this.reset();
          for (const [upstream, state] of Object.entries(providers().circuits?.() ?? {}))
            this.set({ upstream }, CIRCUIT_VALUE[state]);
        },
      });
    }
    if (p.jobStoreUp && !this.registry.getSingleMetric('sluice_job_store_up')) {
      new Gauge({
        name: 'sluice_job_store_up',
        help: 'Whether the job store (SQLite or Redis) answers its checks (every few seconds): 1 up, 0 down.',
        registers,
        collect() {
          this.set(providers().jobStoreUp?.() ?? 0);
        },
      });
    }
    if (p.tunnels && !this.registry.getSingleMetric('sluice_tunnels_open')) {
      new Gauge({
        name: 'sluice_tunnels_open',
        help: 'WebSocket and other Upgrade tunnels open now (each also counts once in sluice_requests_total, with status 101, when it ends).',
        registers,
        collect() {
          this.set(providers().tunnels?.() ?? 0);
        },
      });
    }
    if (p.rateLimitStoreErrors && !this.registry.getSingleMetric('sluice_rate_limit_store_errors_total')) {
      new Counter({
        name: 'sluice_rate_limit_store_errors_total',
        help: 'Requests allowed without a rate-limit decision because the Redis store could not answer in time (fail open).',
        registers,
        collect() {
          this.reset();
          this.inc(providers().rateLimitStoreErrors?.() ?? 0);
        },
      });
    }
    if (p.viewers && !this.registry.getSingleMetric('sluice_admin_event_viewers')) {
      new Gauge({
        name: 'sluice_admin_event_viewers',
        help: 'Live views (dashboards, curl) connected to GET /api/events.',
        registers,
        collect() {
          this.set(providers().viewers?.().connected ?? 0);
        },
      });
      new Counter({
        name: 'sluice_admin_event_viewers_dropped_total',
        help: 'Live views dropped because they stopped reading (more than 1 MiB waiting for them).',
        registers,
        collect() {
          this.reset();
          this.inc(providers().viewers?.().dropped ?? 0);
        },
      });
    }
    if (p.cache && !this.registry.getSingleMetric('sluice_cache_requests_total')) {
      const cache = () => providers().cache?.();
      new Counter({
        name: 'sluice_cache_requests_total',
        help: 'Requests on cached routes by result: hit, stale (served stale: stale-while-revalidate or stale-if-error), miss, revalidated (a 304 made a stored copy fresh), collapsed (waited for a concurrent miss), bypass (not cacheable: method, Range, no-store).',
        labelNames: ['route', 'result'],
        registers,
        collect() {
          this.reset();
          for (const [route, m] of cache()?.results ?? [])
            for (const [result, n] of m) this.inc({ route, result }, n);
        },
      });
      new Gauge({
        name: 'sluice_cache_entries',
        help: 'Responses in the cache.',
        registers,
        collect() {
          this.set(cache()?.entries ?? 0);
        },
      });
      new Gauge({
        name: 'sluice_cache_bytes',
        help: 'Bytes the cache holds (bodies, headers and bookkeeping), of cache_size.',
        registers,
        collect() {
          this.set(cache()?.bytes ?? 0);
        },
      });
      new Gauge({
        name: 'sluice_cache_capacity_bytes',
        help: 'cache_size: the most the cache may hold.',
        registers,
        collect() {
          this.set(cache()?.capacity ?? 0);
        },
      });
      new Counter({
        name: 'sluice_cache_evictions_total',
        help: 'Cached responses evicted to stay within cache_size or vary_limit.',
        registers,
        collect() {
          this.reset();
          this.inc(cache()?.evictions ?? 0);
        },
      });
    }
    if (p.workers && !this.registry.getSingleMetric('sluice_workers')) {
      const workers = () => providers().workers?.();
      new Gauge({
        name: 'sluice_workers',
        help: 'Processes of this instance serving the listener now (workers), the primary included.',
        registers,
        collect() {
          this.set(workers()?.processes ?? 0);
        },
      });
      new Counter({
        name: 'sluice_worker_restarts_total',
        help: 'Worker processes started again after one exited (crashed, killed).',
        registers,
        collect() {
          this.reset();
          this.inc(workers()?.restarts ?? 0);
        },
      });
      new Counter({
        name: 'sluice_worker_requests_total',
        help: 'Requests finished by each process of the instance (worker 0 is the primary): how evenly the kernel spreads connections.',
        labelNames: ['worker'],
        registers,
        collect() {
          this.reset();
          for (const [i, n] of (workers()?.requests ?? []).entries()) this.inc({ worker: String(i) }, n);
        },
      });
    }
    if (p.targets && !this.registry.getSingleMetric('sluice_target_healthy')) {
      new Gauge({
        name: 'sluice_target_healthy',
        help: 'Health of each upstream target: 1 healthy, 0 unhealthy.',
        labelNames: ['upstream', 'target'],
        registers,
        collect() {
          this.reset();
          for (const t of providers().targets?.() ?? [])
            this.set({ upstream: t.upstream, target: t.target }, t.healthy ? 1 : 0);
        },
      });
    }
  }

  /** The Prometheus text exposition of every metric. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}
