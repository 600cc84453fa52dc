/**
 * Per-route figures over the alert window for the admin API (`stats` of `GET /api/routes/{name}`):
 * status codes, timeouts by phase and mean upstream Server-Timing entries. They cost the request path
 * nothing: the route's cumulative metric cells are copied once per second (the observability ticker),
 * and a figure over the window is the difference between now and the copy of one window ago.
 */
import type { RouteSeries } from './metrics.ts';

const PHASES = ['connect', 'send', 'ttfb', 'read', 'total'] as const;

interface Snapshot {
  /** Clock ms when taken. */
  readonly at: number;
  readonly statuses: ReadonlyMap<number, number>;
  readonly timeouts: readonly number[];
  /** Server-Timing name → [sum of seconds, count]. */
  readonly timing: ReadonlyMap<string, readonly [number, number]>;
}

export interface RouteWindowFigures {
  /** Requests per second over the window (or since start, when shorter). */
  readonly rps: number;
  readonly statuses: Record<string, number>;
  readonly timeouts: Record<string, number>;
  /** Mean ms per upstream Server-Timing entry name. */
  readonly server_timing: Record<string, number>;
}

function take(series: RouteSeries, at: number): Snapshot {
  const statuses = new Map<number, number>();
  for (const [key, cell] of series.requests) {
    const status = Math.floor(key / 64);
    statuses.set(status, (statuses.get(status) ?? 0) + cell.value);
  }
  const timing = new Map<string, readonly [number, number]>();
  for (const [name, h] of series.timing) timing.set(name, [h.sum, h.count]);
  return { at, statuses, timeouts: [...series.timeouts], timing };
}

/** The ring of one route's snapshots. */
export class RouteStats {
  readonly #series: RouteSeries;
  readonly #windowMs: number;
  readonly #ring: Snapshot[] = [];

  constructor(series: RouteSeries, windowMs: number, now: number) {
    this.#series = series;
    this.#windowMs = windowMs;
    this.#ring.push({ at: now, statuses: new Map(), timeouts: PHASES.map(() => 0), timing: new Map() });
  }

  /** Called once per second: keeps the snapshots of the last window, plus the one just before it. */
  tick(now: number): void {
    this.#ring.push(take(this.#series, now));
    while (this.#ring.length > 2 && this.#ring[1].at <= now - this.#windowMs) this.#ring.shift();
  }

  figures(now: number): RouteWindowFigures {
    const base = this.#ring[0];
    const cur = take(this.#series, now);
    const statuses: Record<string, number> = {};
    let n = 0;
    for (const [status, count] of cur.statuses) {
      const d = count - (base.statuses.get(status) ?? 0);
      if (d > 0) {
        statuses[String(status)] = d;
        n += d;
      }
    }
    const timeouts: Record<string, number> = {};
    PHASES.forEach((p, i) => {
      timeouts[p] = cur.timeouts[i] - base.timeouts[i];
    });
    const server_timing: Record<string, number> = {};
    for (const [name, [sum, count]] of cur.timing) {
      const [s0, c0] = base.timing.get(name) ?? [0, 0];
      if (count > c0) server_timing[name] = Math.round(((sum - s0) / (count - c0)) * 1e6) / 1e3;
    }
    const spanS = Math.max(1, Math.min(this.#windowMs, now - base.at)) / 1000;
    return { rps: Math.round((n / spanS) * 100) / 100, statuses, timeouts, server_timing };
  }
}
