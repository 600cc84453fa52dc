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
import {
  Counter,
  Gauge,
  Histogram,
  type MetricObjectWithValues,
  type MetricValueWithName,
  Registry,
} from 'prom-client';
import type { EffectiveRoute } from '../config/resolve.ts';
import type { Phase } from '../errors.ts';
import type { AccessLogEntry } from './access-log.ts';
import type { WindowStats } from './latency-window.ts';

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
  /** Job counts by status (`queued`, `running`, `succeeded`, …) → `sluice_jobs{status}`. */
  jobs?: () => Record<string, number>;
  /** Circuit state per upstream → `sluice_circuit_state{upstream}` (0 closed, 1 half-open, 2 open). */
  circuits?: () => Record<string, CircuitState>;
  /** Health of every target → `sluice_target_healthy{upstream,target}` (1 healthy, 0 not). */
  targets?: () => Iterable<{ upstream: string; target: string; healthy: boolean }>;
}

/** What the scrape-time gauges read (the facade wires these to the config, windows and alerts). */
export interface MetricSources {
  inflight: () => number;
  routes: () => readonly EffectiveRoute[];
  window: (route: string) => WindowStats | undefined;
  alerts: () => Iterable<{ rule: string; route: string; firing: boolean }>;
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

/** The hot-path series of one route, bound once; `record` is called for every finished request. */
export class RouteSeries {
  readonly route: string;
  readonly requests = new Map<number, CounterCell>();
  readonly duration: HistogramCell;
  readonly phases: (HistogramCell | undefined)[] = [undefined, undefined, undefined, undefined];
  /** Timeouts by phase (index as in PHASES). */
  readonly timeouts = new Float64Array(PHASES.length);
  readonly timing = new Map<string, HistogramCell>();

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
    if (e.outcome === 'timeout') this.timeouts[PHASE_INDEX[e.phase ?? 'total'] ?? 4]++;
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
  #providers: MetricProviders = {};

  constructor(sources: MetricSources) {
    const registers = [this.registry];
    const series = this.#series;

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
      help: 'Latency percentiles over the sliding window (alerts.window), timed-out requests counted at their budget; absent while the window is empty.',
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
      help: "Window p95 latency divided by the route's total timeout (1 = at the limit); routes without a total budget are absent.",
      labelNames: ['route'],
      registers,
      collect() {
        this.reset();
        for (const r of sources.routes()) {
          const w = sources.window(r.name);
          if (w && r.timeouts.total > 0) this.set({ route: r.name }, w.p95 / r.timeouts.total);
        }
      },
    });
    new Gauge({
      name: 'sluice_alerts_firing',
      help: 'Alert rules per route: 1 while firing, 0 otherwise.',
      labelNames: ['rule', 'route'],
      registers,
      collect() {
        this.reset();
        for (const a of sources.alerts()) this.set({ rule: a.rule, route: a.route }, a.firing ? 1 : 0);
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

  /** Drops the series of routes not in `keep` (after a reload removed them); '' always stays. */
  retain(keep: ReadonlySet<string>): void {
    for (const name of this.#series.keys()) if (name !== '' && !keep.has(name)) this.#series.delete(name);
  }

  /** Plugs in live state of later subsystems; a metric appears once its provider is set. */
  setProviders(p: MetricProviders): void {
    const registers = [this.registry];
    this.#providers = { ...this.#providers, ...p };
    const providers = () => this.#providers;
    if (p.jobs && !this.registry.getSingleMetric('sluice_jobs')) {
      new Gauge({
        name: 'sluice_jobs',
        help: 'Async jobs by status.',
        labelNames: ['status'],
        registers,
        collect() {
          this.reset();
          for (const [status, n] of Object.entries(providers().jobs?.() ?? {})) this.set({ status }, n);
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
