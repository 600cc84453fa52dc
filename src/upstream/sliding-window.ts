/**
 * Two counters (say requests and errors) over a sliding time window, kept in a ring of fixed-width
 * buckets: memory is O(window / bucket) whatever the traffic, and every call is O(1) amortised (the
 * ring is only swept for buckets that time has moved past). The window slides a bucket at a time, so
 * the totals cover the current, partly elapsed bucket plus the `size - 1` buckets before it.
 * Shared by the circuit breaker (requests/errors) and the retry budget (requests/retries).
 */
import type { Clock } from '../clock.ts';

export class SlidingWindow {
  readonly bucketMs: number;
  readonly #clock: Clock;
  readonly #a: Float64Array;
  readonly #b: Float64Array;
  /** Number of the current bucket: floor(now / bucketMs). */
  #current: number;
  #totalA = 0;
  #totalB = 0;

  /** `windowMs` is rounded up to whole buckets; a window shorter than a bucket uses one bucket of its length. */
  constructor(windowMs: number, bucketMs: number, clock: Clock) {
    this.bucketMs = Math.max(1, Math.min(bucketMs, windowMs));
    const size = Math.max(1, Math.ceil(windowMs / this.bucketMs));
    this.#clock = clock;
    this.#a = new Float64Array(size);
    this.#b = new Float64Array(size);
    this.#current = Math.floor(clock.now() / this.bucketMs);
  }

  /** Adds to both counters in the current bucket. */
  add(a: number, b: number): void {
    this.#advance();
    const i = this.#slot(this.#current);
    this.#a[i] += a;
    this.#b[i] += b;
    this.#totalA += a;
    this.#totalB += b;
  }

  /** Sum of the first counter over the window. */
  totalA(): number {
    this.#advance();
    return this.#totalA;
  }

  /** Sum of the second counter over the window. */
  totalB(): number {
    this.#advance();
    return this.#totalB;
  }

  /** The second counter in the current bucket only. */
  currentB(): number {
    this.#advance();
    return this.#b[this.#slot(this.#current)];
  }

  /** Forgets everything. */
  reset(): void {
    this.#a.fill(0);
    this.#b.fill(0);
    this.#totalA = 0;
    this.#totalB = 0;
    this.#current = Math.floor(this.#clock.now() / this.bucketMs);
  }

  #slot(bucket: number): number {
    const size = this.#a.length;
    return ((bucket % size) + size) % size;
  }

  #advance(): void {
    const bucket = Math.floor(this.#clock.now() / this.bucketMs);
    const steps = bucket - this.#current;
    if (steps <= 0) return;
    if (steps >= this.#a.length) {
      this.#a.fill(0);
      this.#b.fill(0);
      this.#totalA = 0;
      this.#totalB = 0;
    } else {
      for (let k = 1; k <= steps; k++) {
        const i = this.#slot(this.#current + k);
        this.#totalA -= this.#a[i];
        this.#totalB -= this.#b[i];
        this.#a[i] = 0;
        this.#b[i] = 0;
      }
    }
    this.#current = bucket;
  }
}
