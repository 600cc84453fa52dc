/**
 * Percentiles two ways: exact (nearest rank over a sorted array, for the few runs of a probe) and from
 * a fixed-size log-linear histogram (for millions of log lines in constant memory).
 */

/** Nearest-rank percentile of an ascending array; null when empty. */
export function nearestRank(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1];
}

/**
 * Log-linear buckets over tenths of a millisecond, like HdrHistogram with 32 sub-buckets per power of
 * two: exact below 6.4 ms, within ~3 % above, up to ~59 hours (values beyond land in the last
 * bucket). 896 counters, 3.5 KiB, whatever the number of values.
 */
const SUB = 32;
const BUCKETS = SUB * (31 - 4) + SUB;
const MAX_UNITS = 2 ** 31 - 1;

export function bucketOf(ms: number): number {
  let u = Math.round(ms * 10);
  if (u < 0) u = 0;
  if (u > MAX_UNITS) u = MAX_UNITS;
  if (u < 2 * SUB) return u;
  const e = 31 - Math.clz32(u);
  return SUB * (e - 4) + ((u >>> (e - 5)) - SUB);
}

/** The lowest and the highest value (ms) of a bucket. */
export function bucketRange(i: number): [number, number] {
  if (i < 2 * SUB) return [i / 10, i / 10];
  const e = Math.floor(i / SUB) + 4;
  const m = (i % SUB) + SUB;
  const lo = m * 2 ** (e - 5);
  const hi = (m + 1) * 2 ** (e - 5) - 1;
  return [lo / 10, hi / 10];
}

export class LatencyHistogram {
  readonly counts = new Uint32Array(BUCKETS);
  count = 0;
  max = 0;
  min = Number.POSITIVE_INFINITY;

  record(ms: number): void {
    this.counts[bucketOf(ms)]++;
    this.count++;
    if (ms > this.max) this.max = ms;
    if (ms < this.min) this.min = ms;
  }

  merge(other: LatencyHistogram): void {
    for (let i = 0; i < BUCKETS; i++) this.counts[i] += other.counts[i];
    this.count += other.count;
    if (other.max > this.max) this.max = other.max;
    if (other.min < this.min) this.min = other.min;
  }

  /** Nearest-rank percentile: the middle of the bucket holding that rank, clamped to [min, max]. */
  percentile(p: number): number | null {
    if (this.count === 0) return null;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) {
        const [lo, hi] = bucketRange(i);
        const mid = (lo + hi) / 2;
        return Math.min(this.max, Math.max(this.min, mid));
      }
    }
    return this.max;
  }

  /** How many values are at least `ms` (bucket resolution: a bucket counts when its middle is). */
  atLeast(ms: number): number {
    let n = 0;
    for (let i = BUCKETS - 1; i >= 0; i--) {
      if (this.counts[i] === 0) continue;
      const [lo, hi] = bucketRange(i);
      if ((lo + hi) / 2 < ms) break;
      n += this.counts[i];
    }
    return n;
  }
}
