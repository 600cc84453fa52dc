/**
 * At most `max` requests in flight to one upstream (SPEC §6), so that a slow upstream cannot take every
 * connection and all memory with it. A request that finds every slot taken waits in FIFO order for up
 * to `min(queueTimeout, what is left of its deadline)`, then is refused (`503 overloaded`).
 *
 * The fast path (a free slot) is synchronous: `acquire` returns `true`, no promise and no allocation.
 * A released slot is handed straight to the oldest waiter, so a newcomer can never overtake the queue
 * and the number in flight never exceeds `max`. Waiters that time out or whose AbortSignal fires are
 * marked and skipped lazily, so leaving the queue is O(1).
 */
import type { Clock } from '../clock.ts';

interface Waiter {
  resolve: (ok: boolean) => void;
  timer: NodeJS.Timeout | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  settled: boolean;
}

export interface Limiter {
  /**
   * Takes a slot. `true`: taken at once (synchronously). `false`: refused at once (no wait possible:
   * `queueTimeout` is 0, the deadline has passed, or `signal` is aborted). A Promise: queued; it
   * resolves to `true` when a slot was handed over, or `false` when the wait timed out or `signal`
   * fired. Whoever gets `true` owns a slot and must `release()` it exactly once.
   * `deadlineMs` is absolute on the limiter's clock (performance.now for the system clock);
   * `Infinity` means none.
   */
  acquire(deadlineMs: number, signal?: AbortSignal): boolean | Promise<boolean>;
  /** Gives a slot back (to the oldest waiter if any). */
  release(): void;
}

export class ConcurrencyLimiter implements Limiter {
  readonly max: number;
  readonly queueTimeoutMs: number;
  readonly #clock: Clock;
  #inflight = 0;
  /** FIFO of waiters from #head on; settled ones are skipped when reached. */
  #queue: (Waiter | undefined)[] = [];
  #head = 0;
  #queued = 0;

  constructor(max: number, queueTimeoutMs: number, clock: Clock) {
    if (!(max >= 1)) throw new RangeError('max must be at least 1');
    this.max = max;
    this.queueTimeoutMs = queueTimeoutMs;
    this.#clock = clock;
  }

  /** Requests holding a slot. */
  get inflight(): number {
    return this.#inflight;
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.#queued;
  }

  acquire(deadlineMs: number, signal?: AbortSignal): boolean | Promise<boolean> {
    // Invariant: waiters exist only while every slot is taken, so this cannot overtake the queue.
    if (this.#inflight < this.max) {
      this.#inflight++;
      return true;
    }
    if (signal?.aborted) return false;
    const wait = Math.min(this.queueTimeoutMs, deadlineMs - this.#clock.now());
    if (!(wait > 0)) return false;
    return new Promise<boolean>((resolve) => {
      const w: Waiter = { resolve, timer: undefined, signal, onAbort: undefined, settled: false };
      w.timer = setTimeout(() => this.#leave(w), wait);
      if (signal) {
        w.onAbort = () => this.#leave(w);
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      this.#queue.push(w);
      this.#queued++;
    });
  }

  release(): void {
    const q = this.#queue;
    while (this.#head < q.length) {
      const w = q[this.#head] as Waiter;
      q[this.#head++] = undefined;
      if (w.settled) continue;
      // Hand the slot over: #inflight stays the same.
      this.#settle(w);
      this.#compact();
      w.resolve(true);
      return;
    }
    this.#compact();
    // A double release must not open an extra slot for ever; clamp (the caller has a bug).
    if (this.#inflight > 0) this.#inflight--;
  }

  /** A waiter timed out or was aborted: it leaves the queue (lazily) and gets false. */
  #leave(w: Waiter): void {
    if (w.settled) return;
    this.#settle(w);
    if (this.#queued === 0) {
      // Everything left in the array is settled: drop it now rather than when a slot is released.
      this.#queue.length = 0;
      this.#head = 0;
    }
    w.resolve(false);
  }

  #settle(w: Waiter): void {
    w.settled = true;
    this.#queued--;
    if (w.timer !== undefined) clearTimeout(w.timer);
    if (w.onAbort !== undefined) w.signal?.removeEventListener('abort', w.onAbort);
  }

  #compact(): void {
    const q = this.#queue;
    if (this.#head === q.length) {
      q.length = 0;
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= q.length) {
      q.splice(0, this.#head);
      this.#head = 0;
    }
  }
}
