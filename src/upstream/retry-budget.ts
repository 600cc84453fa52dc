/**
 * Retry budget (Envoy's retry budgets, Finagle's RetryBudget): retries may add at most `budget` × the
 * requests of the last 10 s, so that during an outage retries cannot multiply the load on a failing
 * upstream. A floor of 3 retries per second lets low-traffic routes (where 20 % of a handful is zero)
 * still retry. Windows are 1-s buckets (O(1) memory). Only first tries count as requests; retries do
 * not feed the budget they draw from.
 */
import type { Clock } from '../clock.ts';
import { SlidingWindow } from './sliding-window.ts';

export interface RetryBudget {
  /** One request (its first try) started. */
  onRequest(): void;
  /** Asks to retry once: true (and counted) when the budget allows it, false when it is spent. */
  tryRetry(): boolean;
}

export const RETRY_BUDGET_WINDOW_MS = 10_000;
export const RETRY_BUDGET_MIN_PER_SECOND = 3;

export class WindowedRetryBudget implements RetryBudget {
  /** Share of requests that may be retried, e.g. 0.2. */
  readonly fraction: number;
  readonly #minPerSecond: number;
  /** a = requests, b = retries. */
  readonly #window: SlidingWindow;

  constructor(fraction: number, clock: Clock, minPerSecond = RETRY_BUDGET_MIN_PER_SECOND) {
    this.fraction = fraction;
    this.#minPerSecond = minPerSecond;
    this.#window = new SlidingWindow(RETRY_BUDGET_WINDOW_MS, 1_000, clock);
  }

  onRequest(): void {
    this.#window.add(1, 0);
  }

  tryRetry(): boolean {
    const w = this.#window;
    if (w.currentB() < this.#minPerSecond || w.totalB() < this.fraction * w.totalA()) {
      w.add(0, 1);
      return true;
    }
    return false;
  }

  /** For the admin API and metrics: requests and retries over the last 10 s. */
  snapshot(): { budget: number; requests: number; retries: number } {
    return { budget: this.fraction, requests: this.#window.totalA(), retries: this.#window.totalB() };
  }
}
