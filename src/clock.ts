/**
 * The one source of time for policy logic (breakers, budgets, ejections): monotonic milliseconds.
 * Production uses `systemClock` (performance.now, the same timeline as the exchange's deadlines);
 * tests use `FakeClock` and move time by hand.
 */
export interface Clock {
  /** Milliseconds on a monotonic timeline (not wall-clock time; only differences are meaningful). */
  now(): number;
}

export const systemClock: Clock = Object.freeze({ now: () => performance.now() });

/** A clock that only moves when told to. For tests. */
export class FakeClock implements Clock {
  #now: number;

  constructor(start = 1_000_000) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  /** Moves time forward by `ms` (never backward). */
  advance(ms: number): void {
    if (ms < 0) throw new RangeError('a monotonic clock cannot go back');
    this.#now += ms;
  }
}
