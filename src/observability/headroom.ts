/**
 * Headroom (SPEC §7): a route's recent latency against the limit that fires first for it. When `ttfb`
 * is set and below `total` (or `total` is off), a slow upstream meets `ttfb` first, so the figure that
 * matters is the time to response headers; otherwise it is the whole request against `total`.
 * Decided once per route at config load; the latency window of the route records that figure.
 */
import type { Timeouts } from '../config/resolve.ts';
import { formatDuration } from '../config/units.ts';

export interface HeadroomLimit {
  /** The phase whose budget the route's latency is measured against. */
  readonly phase: 'ttfb' | 'total';
  readonly ms: number;
}

/** The limit that fires first for a route; undefined when it has neither ttfb nor total. */
export function headroomLimit(t: Timeouts): HeadroomLimit | undefined {
  if (t.ttfb > 0 && (t.total === 0 || t.ttfb < t.total)) return { phase: 'ttfb', ms: t.ttfb };
  if (t.total > 0) return { phase: 'total', ms: t.total };
  return undefined;
}

/** `ttfb 4s`, `total 29s`, or `no` for a route without a limit: how notifications name it. */
export function limitText(limit: HeadroomLimit | undefined): string {
  return limit === undefined ? 'no' : `${limit.phase} ${formatDuration(limit.ms)}`;
}
