/**
 * The sliding latency window of one route (SPEC §7 "headroom"): p50/p95/p99, request, timeout and
 * error counts over the last `alerts.window` (30 s by default), in fixed memory and constant time per
 * request whatever the traffic.
 *
 * The window is a ring of per-slot histograms (one slot per second for windows up to 30 s; longer
 * windows use 30 slots of several seconds, so memory never grows with the window). Recording is one
 * bucket increment in the current slot; a slot that falls out of the window is cleared lazily when
 * the clock has moved on. Percentiles merge the slots only when read (the alert loop reads each route
 * once per second, a scrape once more).
 *
 * Buckets are log-linear (HDR-like): values in 1/100 ms, exact below 0.16 ms, then 16 sub-buckets per
 * power of two up to 1 h. Reporting a bucket's midpoint is within 1/32 (3.1 %) of every value in it.
 */
import { type Clock, systemClock } from '../clock.ts';

/** How one request ended, as the window counts it. A timeout is also an error. */
export type WindowOutcome = 'ok' | 'error' | 'timeout';

export interface WindowStats {
  /** Requests recorded in the window. */
  readonly count: number;
  /** Of which timed out (the gateway answered 504 or cut the response). */
  readonly timeouts: number;
  /** Of which failed: timeouts, 5xx answers, unreachable upstreams, open circuits, shed load. */
  readonly errors: number;
  /** Latency percentiles in ms; 0 when the window is empty. */
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
}

/** One slot of a window (`LatencyWindow.timeline`). */
export interface WindowPoint extends WindowStats {
  /** Clock ms at which the slot starts. */
  readonly at: number;
}

const SUB_BITS = 4;
const SUB = 1 << SUB_BITS; // 16 sub-buckets per power of two
/** Largest value resolved: 1 h in 1/100 ms; anything above counts as 1 h. */
const MAX_UNITS = 3_600_000 * 100;

function indexOfUnits(x: number): number {
  if (x < SUB) return x;
  const e = 31 - Math.clz32(x);
  return ((e - SUB_BITS + 1) << SUB_BITS) + ((x >>> (e - SUB_BITS)) & (SUB - 1));
}

/** Number of buckets of one histogram. */
export const BUCKETS = indexOfUnits(MAX_UNITS) + 1;

/** Bucket index of a latency in ms. */
export function bucketOf(ms: number): number {
  let x = ms * 100;
  if (!(x >= 0))
    x = 0; // NaN and negatives
  else if (x > MAX_UNITS) x = MAX_UNITS;
  return indexOfUnits(Math.floor(x));
}

/** The value (ms) a bucket stands for: its midpoint. */
export function bucketValue(index: number): number {
  if (index < 2 * SUB) return (index + 0.5) / 100;
  const e = (index >> SUB_BITS) + SUB_BITS - 1;
  const width = 2 ** (e - SUB_BITS);
  const low = (SUB + (index & (SUB - 1))) * width;
  return (low + width / 2) / 100;
}

/** Slots of a window, and the span of each: 1 s up to 30 s windows, then 30 slots of ⌈window/30⌉ s. */
export function slotLayout(windowMs: number): { slots: number; slotMs: number } {
  const slotMs = Math.max(1, Math.ceil(windowMs / 30_000)) * 1_000;
  return { slots: Math.max(1, Math.ceil(windowMs / slotMs)), slotMs };
}

// One merge buffer for every window: reads are synchronous and never nested.
let scratch = new Float64Array(BUCKETS);

export class LatencyWindow {
  /** The window length this instance was built for (ms). */
  readonly windowMs: number;
  readonly #clock: Clock;
  readonly #slots: number;
  readonly #slotMs: number;
  /** `slots` histograms of `BUCKETS` counts, back to back. */
  readonly #hist: Uint32Array;
  /** Per slot: count, timeouts, errors. */
  readonly #counts: Uint32Array;
  /** Index of the current slot in the ring, and the clock slot number it holds. */
  #head = 0;
  #slot: number;

  constructor(windowMs = 30_000, clock: Clock = systemClock) {
    this.windowMs = windowMs;
    this.#clock = clock;
    const { slots, slotMs } = slotLayout(windowMs);
    this.#slots = slots;
    this.#slotMs = slotMs;
    this.#hist = new Uint32Array(slots * BUCKETS);
    this.#counts = new Uint32Array(slots * 3);
    this.#slot = Math.floor(clock.now() / slotMs);
  }

  /** Bytes held by the histograms and counters (constant for the life of the window). */
  get bytes(): number {
    return this.#hist.byteLength + this.#counts.byteLength;
  }

  /**
   * Records one finished request. A timed-out request counts at no less than its budget, so the
   * percentiles keep rising when requests start timing out instead of flattening at the cap.
   */
  record(ms: number, outcome: WindowOutcome = 'ok', budgetMs = 0): void {
    this.#advance();
    const head = this.#head;
    const c = head * 3;
    this.#counts[c]++;
    if (outcome !== 'ok') {
      this.#counts[c + 2]++;
      if (outcome === 'timeout') {
        this.#counts[c + 1]++;
        if (ms < budgetMs) ms = budgetMs;
      }
    }
    this.#hist[head * BUCKETS + bucketOf(ms)]++;
  }

  /** Percentile `q` (0 < q ≤ 1, nearest rank) of the window in ms; 0 when empty. */
  percentile(q: number): number {
    return this.#read([q])[0];
  }

  stats(): WindowStats {
    const [p50, p95, p99] = this.#read([0.5, 0.95, 0.99]);
    let count = 0;
    let timeouts = 0;
    let errors = 0;
    const n = this.#counts;
    for (let i = 0; i < n.length; i += 3) {
      count += n[i];
      timeouts += n[i + 1];
      errors += n[i + 2];
    }
    return { count, timeouts, errors, p50, p95, p99 };
  }

  /** Empties the window. */
  clear(): void {
    this.#hist.fill(0);
    this.#counts.fill(0);
  }

  #advance(): void {
    const slot = Math.floor(this.#clock.now() / this.#slotMs);
    // Same slot, or a clock that stepped back: keep filling the current one.
    if (slot <= this.#slot) return;
    const steps = slot - this.#slot;
    this.#slot = slot;
    if (steps >= this.#slots) {
      this.clear();
      return;
    }
    for (let i = 0; i < steps; i++) {
      const h = (this.#head + 1) % this.#slots;
      this.#head = h;
      this.#hist.fill(0, h * BUCKETS, (h + 1) * BUCKETS);
      this.#counts.fill(0, h * 3, h * 3 + 3);
    }
  }

  /**
   * How many recorded requests took longer than each of `thresholdsMs` (a timed-out request counts at
   * no less than its budget), and how many there are in all: the share a shorter budget would have
   * cut. Resolution is the histogram's (3.2 %).
   */
  countAbove(thresholdsMs: readonly number[]): { count: number; above: number[] } {
    const merged = this.#merge();
    let count = 0;
    for (let b = 0; b < BUCKETS; b++) count += merged[b];
    const above = thresholdsMs.map((ms) => {
      let n = 0;
      for (let b = BUCKETS - 1; b >= 0 && bucketValue(b) > ms; b--) n += merged[b];
      return n;
    });
    return { count, above };
  }

  /**
   * The window slot by slot, oldest first (a 15-minute window: 30 slots of 30 s), for charts: each
   * slot's start (clock ms), counts and percentiles. Slots with no requests have zero percentiles.
   */
  timeline(): WindowPoint[] {
    this.#advance();
    const out: WindowPoint[] = [];
    const h = this.#hist;
    for (let i = 0; i < this.#slots; i++) {
      const s = (this.#head + 1 + i) % this.#slots;
      const start = (this.#slot - (this.#slots - 1 - i)) * this.#slotMs;
      const count = this.#counts[s * 3];
      const point = {
        at: start,
        count,
        timeouts: this.#counts[s * 3 + 1],
        errors: this.#counts[s * 3 + 2],
        p50: 0,
        p95: 0,
        p99: 0,
      };
      if (count > 0) {
        const ranks = [0.5, 0.95, 0.99].map((q) => Math.max(1, Math.ceil(q * count)));
        const values = [0, 0, 0];
        let qi = 0;
        let seen = 0;
        const base = s * BUCKETS;
        for (let b = 0; b < BUCKETS && qi < 3; b++) {
          seen += h[base + b];
          while (qi < 3 && seen >= ranks[qi]) values[qi++] = bucketValue(b);
        }
        [point.p50, point.p95, point.p99] = values;
      }
      out.push(point);
    }
    return out;
  }

  /** Span of one slot (ms). */
  get slotMs(): number {
    return this.#slotMs;
  }

  /** The slots' histograms merged into the shared scratch buffer. */
  #merge(): Float64Array {
    this.#advance();
    if (scratch.length !== BUCKETS) scratch = new Float64Array(BUCKETS);
    const merged = scratch;
    merged.fill(0);
    const h = this.#hist;
    for (let s = 0; s < this.#slots; s++) {
      if (this.#counts[s * 3] === 0) continue;
      const base = s * BUCKETS;
      for (let b = 0; b < BUCKETS; b++) merged[b] += h[base + b];
    }
    return merged;
  }

  /** Percentiles (ascending `qs`) from the merged slots. */
  #read(qs: readonly number[]): number[] {
    this.#advance();
    if (scratch.length !== BUCKETS) scratch = new Float64Array(BUCKETS);
    const merged = scratch;
    merged.fill(0);
    const h = this.#hist;
    let total = 0;
    for (let s = 0; s < this.#slots; s++) {
      if (this.#counts[s * 3] === 0) continue;
      const base = s * BUCKETS;
      for (let b = 0; b < BUCKETS; b++) merged[b] += h[base + b];
      total += this.#counts[s * 3];
    }
    const out = qs.map(() => 0);
    if (total === 0) return out;
    let qi = 0;
    let rank = Math.max(1, Math.ceil(qs[0] * total));
    let seen = 0;
    for (let b = 0; b < BUCKETS && qi < qs.length; b++) {
      seen += merged[b];
      while (qi < qs.length && seen >= rank) {
        out[qi++] = bucketValue(b);
        if (qi < qs.length) rank = Math.max(1, Math.ceil(qs[qi] * total));
      }
    }
    return out;
  }
}
