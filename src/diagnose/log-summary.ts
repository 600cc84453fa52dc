/**
 * `sluice logs`: per-endpoint 504/502 counts, timeouts by phase, latency percentiles, the share near
 * the cap and when the 504s happened, summed over access logs of any supported format in constant
 * memory: one fixed-size histogram per endpoint (at most MAX_ENDPOINTS of them) and one counter per
 * minute that saw a 504.
 */
import { bytesHash, foldedHash, foldPieces, piecesBytes, piecesEqual } from './fold.ts';
import type { LogFormat, LogParser, LogRecord } from './formats/record.ts';
import { type HistogramState, LatencyHistogram } from './histogram.ts';

/** Distinct endpoints kept; requests to further ones are summed under OTHER_ENDPOINTS. */
export const MAX_ENDPOINTS = 10_000;
export const OTHER_ENDPOINTS = '(other endpoints)';
/** The cap when none is given or can be inferred: AWS API Gateway's hard integration timeout. */
export const DEFAULT_CAP_MS = 29_000;
/** A request is near the cap at this share of it or more. */
export const NEAR_CAP = 0.9;

export interface FileSummary {
  path: string;
  format: LogFormat | null;
  lines: number;
  unparsed: number;
}

export interface EndpointSummary {
  endpoint: string;
  requests: number;
  status_504: number;
  status_502: number;
  /** Timeouts by phase; null when the log does not say. */
  timeouts: Record<string, number> | null;
  p50_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
  max_ms: number | null;
  /** Share (0–1) of the requests with a latency at or above 90 % of the cap; null without latencies. */
  near_cap: number | null;
  first_504: string | null;
  last_504: string | null;
  peak_minute: string | null;
}

export interface LogsReport {
  files: FileSummary[];
  endpoints: EndpointSummary[];
}

export type CapSource = 'given' | 'budget' | 'inferred' | 'default';

/** What the terminal output shows beyond the JSON document. */
export interface EndpointDetail {
  capMs: number;
  capSource: CapSource;
  /** 504s per minute (epoch minute → count). */
  minutes: ReadonlyMap<number, number>;
  /** The peak minute's 504 count. */
  peakCount: number;
}

/** An endpoint's figures as plain data (what a worker thread sends back). */
export interface EndpointState {
  hash: number;
  name: string;
  /** The method's and the folded path's bytes, as latin1 strings (cheaper to send than byte arrays). */
  method: string;
  path: string;
  requests: number;
  s504: number;
  s502: number;
  phaseKnown: boolean;
  timeouts: [string, number][] | null;
  hist: HistogramState | null;
  hist504: HistogramState | null;
  first504: number;
  last504: number;
  minutes: [number, number][] | null;
  budgetMax: number;
}

/** A whole aggregate as plain data. */
export interface AggregateState {
  endpoints: EndpointState[];
  other: EndpointState | null;
  all504: HistogramState;
}

class EndpointStats {
  /** Hash of method and folded path (foldedHash). */
  hash = 0;
  /** `METHOD /folded/path` */
  readonly name: string;
  /** The method's bytes, then the folded path's, as compared with each line's. */
  readonly method: Uint8Array;
  readonly path: Uint8Array;
  /** The next endpoint with the same hash. */
  next: EndpointStats | undefined = undefined;
  requests = 0;
  s504 = 0;
  s502 = 0;
  phaseKnown = false;
  timeouts: Map<string, number> | null = null;
  hist: LatencyHistogram | null = null;
  hist504: LatencyHistogram | null = null;
  first504 = Number.POSITIVE_INFINITY;
  last504 = Number.NEGATIVE_INFINITY;
  minutes: Map<number, number> | null = null;
  budgetMax = 0;

  constructor(name: string, method: Uint8Array, path: Uint8Array) {
    this.name = name;
    this.method = method;
    this.path = path;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function sameMethod(method: Uint8Array, rec: LogRecord): boolean {
  const len = rec.methodEnd - rec.methodAt;
  if (method.length !== len) return false;
  const b = rec.buf;
  for (let i = 0; i < len; i++) if (method[i] !== b[rec.methodAt + i]) return false;
  return true;
}

const round1 = (v: number | null) => (v === null ? null : Math.round(v * 10) / 10);
const iso = (ms: number) => (Number.isFinite(ms) ? new Date(ms).toISOString() : null);

/** The median of a histogram of 504 latencies, when they cluster (a timeout, not passed-through 504s). */
function clusteredMedian(h: LatencyHistogram | null): number | undefined {
  if (!h || h.count < 3) return undefined;
  const p25 = h.percentile(0.25) as number;
  const p75 = h.percentile(0.75) as number;
  return p75 > 0 && p25 >= 0.8 * p75 ? (h.percentile(0.5) as number) : undefined;
}

export class LogAggregator {
  /** Endpoints by the hash of method and folded path (colliding ones chained through `next`). */
  readonly #byHash = new Map<number, EndpointStats>();
  readonly #list: EndpointStats[] = [];
  #other: EndpointStats | undefined;
  readonly #all504 = new LatencyHistogram();
  readonly #capMs: number | undefined;
  readonly #maxEndpoints: number;

  constructor(opts: { capMs?: number; maxEndpoints?: number } = {}) {
    this.#capMs = opts.capMs;
    this.#maxEndpoints = opts.maxEndpoints ?? MAX_ENDPOINTS;
  }

  /** Endpoints beyond MAX_ENDPOINTS were summed under OTHER_ENDPOINTS. */
  get overflowed(): boolean {
    return this.#other !== undefined;
  }

  #stats(rec: LogRecord): EndpointStats {
    const b = rec.buf;
    const n =
      rec.folded >= 0
        ? rec.folded
        : foldPieces(
            b,
            rec.targetAt,
            rec.targetEnd,
            rec.templated,
            bytesHash(b, rec.methodAt, rec.methodEnd),
          );
    const h = foldedHash();
    const head = this.#byHash.get(h);
    let st = head;
    while (st !== undefined && !(sameMethod(st.method, rec) && piecesEqual(st.path, 0, b, n))) st = st.next;
    if (st !== undefined) return st;
    if (this.#list.length >= this.#maxEndpoints)
      return (this.#other ??= new EndpointStats(OTHER_ENDPOINTS, new Uint8Array(0), new Uint8Array(0)));
    // Copies: the line's bytes belong to a chunk that is about to be reused.
    const method = Uint8Array.from(b.subarray(rec.methodAt, rec.methodEnd));
    const path = piecesBytes(b, n);
    st = new EndpointStats(
      `${Buffer.from(method).toString('latin1')} ${path.toString('utf8')}`,
      method,
      path,
    );
    st.hash = h;
    st.next = head;
    this.#byHash.set(h, st);
    this.#list.push(st);
    return st;
  }

  /** Everything summed so far, as plain data (structured-clonable, for worker threads). */
  export(): AggregateState {
    const one = (st: EndpointStats): EndpointState => ({
      hash: st.hash,
      name: st.name,
      method: Buffer.from(st.method).toString('latin1'),
      path: Buffer.from(st.path).toString('latin1'),
      requests: st.requests,
      s504: st.s504,
      s502: st.s502,
      phaseKnown: st.phaseKnown,
      timeouts: st.timeouts ? [...st.timeouts] : null,
      hist: st.hist?.export() ?? null,
      hist504: st.hist504?.export() ?? null,
      first504: st.first504,
      last504: st.last504,
      minutes: st.minutes ? [...st.minutes] : null,
      budgetMax: st.budgetMax,
    });
    return {
      endpoints: this.#list.map(one),
      other: this.#other ? one(this.#other) : null,
      all504: this.#all504.export(),
    };
  }

  /** Adds an aggregate exported elsewhere (another thread's share of a file). */
  merge(state: AggregateState): void {
    this.#all504.merge(state.all504);
    const into = (st: EndpointStats, e: EndpointState) => {
      st.requests += e.requests;
      st.s504 += e.s504;
      st.s502 += e.s502;
      st.phaseKnown ||= e.phaseKnown;
      if (e.timeouts) {
        const t = (st.timeouts ??= new Map());
        for (const [phase, n] of e.timeouts) t.set(phase, (t.get(phase) ?? 0) + n);
      }
      if (e.hist) (st.hist ??= new LatencyHistogram()).merge(e.hist);
      if (e.hist504) (st.hist504 ??= new LatencyHistogram()).merge(e.hist504);
      if (e.first504 < st.first504) st.first504 = e.first504;
      if (e.last504 > st.last504) st.last504 = e.last504;
      if (e.minutes) {
        const m = (st.minutes ??= new Map());
        for (const [minute, n] of e.minutes) m.set(minute, (m.get(minute) ?? 0) + n);
      }
      if (e.budgetMax > st.budgetMax) st.budgetMax = e.budgetMax;
    };
    for (const e of state.endpoints) {
      const method = Buffer.from(e.method, 'latin1');
      const path = Buffer.from(e.path, 'latin1');
      const head = this.#byHash.get(e.hash);
      let st = head;
      while (st !== undefined && !(sameBytes(st.method, method) && sameBytes(st.path, path))) st = st.next;
      if (st === undefined) {
        if (this.#list.length >= this.#maxEndpoints) {
          into((this.#other ??= new EndpointStats(OTHER_ENDPOINTS, new Uint8Array(0), new Uint8Array(0))), e);
          continue;
        }
        st = new EndpointStats(e.name, method, path);
        st.hash = e.hash;
        st.next = head;
        this.#byHash.set(e.hash, st);
        this.#list.push(st);
      }
      into(st, e);
    }
    if (state.other)
      into(
        (this.#other ??= new EndpointStats(OTHER_ENDPOINTS, new Uint8Array(0), new Uint8Array(0))),
        state.other,
      );
  }

  /** Adds one parsed line (the parser is asked for the line's time when it is a 504). */
  add(rec: LogRecord, parser: LogParser): void {
    const st = this.#stats(rec);
    st.requests++;
    const status = rec.status;
    const latency = rec.latencyMs;
    if (latency >= 0) (st.hist ??= new LatencyHistogram()).record(latency);
    if (parser.phases) st.phaseKnown = true;
    if (rec.timeoutPhase !== null) {
      st.phaseKnown = true;
      const t = (st.timeouts ??= new Map());
      t.set(rec.timeoutPhase, (t.get(rec.timeoutPhase) ?? 0) + 1);
    }
    if (rec.budgetMs > st.budgetMax) st.budgetMax = rec.budgetMs;
    if (status === 504) {
      st.s504++;
      if (latency >= 0) {
        (st.hist504 ??= new LatencyHistogram()).record(latency);
        this.#all504.record(latency);
      }
      const time = Number.isNaN(rec.time) ? parser.time(rec) : rec.time;
      if (time > 0) {
        if (time < st.first504) st.first504 = time;
        if (time > st.last504) st.last504 = time;
        const minute = Math.floor(time / 60_000);
        const m = (st.minutes ??= new Map());
        m.set(minute, (m.get(minute) ?? 0) + 1);
      }
    } else if (status === 502) st.s502++;
  }

  /** The endpoints, sorted by 504s, then requests; with what the terminal output needs. */
  finish(): { endpoints: EndpointSummary[]; details: EndpointDetail[] } {
    const rows: { summary: EndpointSummary; detail: EndpointDetail }[] = [];
    const globalCap = clusteredMedian(this.#all504);
    const each = (name: string, st: EndpointStats) => {
      let capMs: number;
      let capSource: CapSource;
      const own = clusteredMedian(st.hist504);
      if (this.#capMs !== undefined) [capMs, capSource] = [this.#capMs, 'given'];
      else if (st.budgetMax > 0) [capMs, capSource] = [st.budgetMax, 'budget'];
      else if (own !== undefined) [capMs, capSource] = [own, 'inferred'];
      else if (globalCap !== undefined) [capMs, capSource] = [globalCap, 'inferred'];
      else [capMs, capSource] = [DEFAULT_CAP_MS, 'default'];
      let peak: number | null = null;
      let peakCount = 0;
      if (st.minutes)
        for (const [minute, n] of st.minutes)
          if (n > peakCount || (n === peakCount && peak !== null && minute < peak))
            [peak, peakCount] = [minute, n];
      const h = st.hist;
      rows.push({
        summary: {
          endpoint: name,
          requests: st.requests,
          status_504: st.s504,
          status_502: st.s502,
          timeouts: st.phaseKnown ? Object.fromEntries(st.timeouts ?? []) : null,
          p50_ms: round1(h?.percentile(0.5) ?? null),
          p95_ms: round1(h?.percentile(0.95) ?? null),
          p99_ms: round1(h?.percentile(0.99) ?? null),
          max_ms: h ? round1(h.max) : null,
          near_cap: h ? Math.round((h.countAtOrAbove(NEAR_CAP * capMs) / h.count) * 10_000) / 10_000 : null,
          first_504: iso(st.first504),
          last_504: iso(st.last504),
          peak_minute: peak === null ? null : iso(peak * 60_000),
        },
        detail: { capMs, capSource, minutes: st.minutes ?? new Map(), peakCount },
      });
    };
    for (const st of this.#list) each(st.name, st);
    if (this.#other) each(OTHER_ENDPOINTS, this.#other);
    rows.sort(
      (a, b) =>
        b.summary.status_504 - a.summary.status_504 ||
        b.summary.requests - a.summary.requests ||
        (a.summary.endpoint < b.summary.endpoint ? -1 : 1),
    );
    return { endpoints: rows.map((r) => r.summary), details: rows.map((r) => r.detail) };
  }
}
