/**
 * A log-linear latency histogram of bounded size (the HdrHistogram idea, cut down): `sluice logs`
 * keeps one per endpoint instead of an array of every latency, so a 1 GB log is summarised in
 * constant memory. Values are recorded in units of 10 µs, in 128 linear sub-buckets per power of two
 * (a bucket is at most 1/128 of its lower bound wide: percentiles are within 0.4 %). Octaves are
 * allocated when first used (512 bytes each; an endpoint whose latencies span 1 ms to 10 s uses 14).
 * Values beyond ~6 h land in the top bucket; `min` and `max` stay exact.
 */

const SUB_BITS = 7;
const SUB = 1 << SUB_BITS;
/** Octave 0 holds units [0, 128) one per bucket; octave j ≥ 1 holds [2^(6+j), 2^(7+j)). */
const OCTAVES = 31 - SUB_BITS + 1;
const UNITS_PER_MS = 100;
const MAX_UNITS = 0x7fffffff;

function octaveOf(units: number): number {
  return units < SUB ? 0 : 31 - Math.clz32(units) - SUB_BITS + 1;
}

function subOf(units: number, octave: number): number {
  return octave === 0 ? units : (units >>> (octave - 1)) & (SUB - 1);
}

/** Lower bound (units) of sub-bucket `sub` of `octave`, and its width. */
function lowerOf(octave: number, sub: number): number {
  return octave === 0 ? sub : (SUB + sub) * 2 ** (octave - 1);
}
const widthOf = (octave: number) => (octave === 0 ? 1 : 2 ** (octave - 1));

/** A histogram as plain data (to pass between worker threads). */
export interface HistogramState {
  octaves: (Uint32Array | undefined)[];
  count: number;
  max: number;
  min: number;
}

export class LatencyHistogram {
  readonly #octaves: (Uint32Array | undefined)[] = new Array(OCTAVES);
  count = 0;
  /** Exact extremes, in ms. */
  max = 0;
  min = Number.POSITIVE_INFINITY;

  /** Records one latency in milliseconds (negative or NaN values are ignored). */
  record(ms: number): void {
    if (!(ms >= 0)) return;
    const units = Math.min(MAX_UNITS, Math.round(ms * UNITS_PER_MS));
    const o = octaveOf(units);
    (this.#octaves[o] ??= new Uint32Array(SUB))[subOf(units, o)]++;
    this.count++;
    if (ms > this.max) this.max = ms;
    if (ms < this.min) this.min = ms;
  }

  /** Its state as plain data (structured-clonable). */
  export(): HistogramState {
    return { octaves: this.#octaves.slice(), count: this.count, max: this.max, min: this.min };
  }

  /** Adds the counts of another histogram's state to this one. */
  merge(state: HistogramState): void {
    for (let o = 0; o < OCTAVES; o++) {
      const from = state.octaves[o];
      if (!from) continue;
      const to = (this.#octaves[o] ??= new Uint32Array(SUB));
      for (let s = 0; s < SUB; s++) to[s] += from[s];
    }
    this.count += state.count;
    if (state.max > this.max) this.max = state.max;
    if (state.min < this.min) this.min = state.min;
  }

  static from(state: HistogramState): LatencyHistogram {
    const h = new LatencyHistogram();
    h.merge(state);
    return h;
  }

  /**
   * The `p` quantile (0 < p ≤ 1, nearest rank) in ms, or null when empty: interpolated inside its
   * bucket by rank, and never outside [min, max].
   */
  percentile(p: number): number | null {
    if (this.count === 0) return null;
    const rank = Math.max(1, Math.ceil(p * this.count));
    if (rank >= this.count) return this.max;
    let seen = 0;
    for (let o = 0; o < OCTAVES; o++) {
      const counts = this.#octaves[o];
      if (counts === undefined) continue;
      for (let s = 0; s < SUB; s++) {
        const n = counts[s];
        if (n === 0) continue;
        if (seen + n >= rank) {
          const units = lowerOf(o, s) + (widthOf(o) * (rank - seen - 0.5)) / n;
          return Math.min(this.max, Math.max(this.min, units / UNITS_PER_MS));
        }
        seen += n;
      }
    }
    return this.max;
  }

  /**
   * How many recorded values are at or above `ms`: whole buckets above it, plus the share of its own
   * bucket that lies above it (values inside a bucket are taken as evenly spread).
   */
  countAtOrAbove(ms: number): number {
    const units = Math.min(MAX_UNITS, Math.round(ms * UNITS_PER_MS));
    const from = octaveOf(units);
    const fromSub = subOf(units, from);
    let n = 0;
    for (let o = from; o < OCTAVES; o++) {
      const counts = this.#octaves[o];
      if (counts === undefined) continue;
      for (let s = o === from ? fromSub + 1 : 0; s < SUB; s++) n += counts[s];
    }
    const own = this.#octaves[from]?.[fromSub] ?? 0;
    if (own > 0) {
      const lo = lowerOf(from, fromSub);
      const width = widthOf(from);
      n += Math.round(own * Math.min(1, Math.max(0, (lo + width - units) / width)));
    }
    return n;
  }
}

/** Exact nearest-rank percentile of an ascending array (for small samples such as probe runs). */
export function percentileOfSorted(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}
