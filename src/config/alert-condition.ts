/**
 * The `when:` of an alert rule (SPEC §7), parsed once at load:
 *   p50|p95|p99 > N% of timeout     latency percentile over the window vs the route's total budget
 *   timeout_rate > N%               share of requests that timed out
 *   error_rate > N%                 share of requests that failed (timeouts, 5xx, upstream errors)
 *   circuit_open                    the route's upstream circuit is open
 *   target_down                     a target of the upstream failed its health check or is ejected
 */
export type AlertCondition =
  | { kind: 'latency'; percentile: 50 | 95 | 99; threshold: number }
  | { kind: 'timeout_rate'; threshold: number }
  | { kind: 'error_rate'; threshold: number }
  | { kind: 'circuit_open' }
  | { kind: 'target_down' };

const LATENCY = /^p(50|95|99)\s*>\s*(\d+(?:\.\d+)?)%\s+of\s+timeout$/;
const RATE = /^(timeout_rate|error_rate)\s*>\s*(\d+(?:\.\d+)?)%$/;

/** Returns the condition, or an error message for the user. */
export function parseAlertCondition(text: string): AlertCondition | string {
  const t = text.trim();
  if (t === 'circuit_open') return { kind: 'circuit_open' };
  if (t === 'target_down') return { kind: 'target_down' };
  let m = LATENCY.exec(t);
  if (m) return { kind: 'latency', percentile: Number(m[1]) as 50 | 95 | 99, threshold: Number(m[2]) / 100 };
  m = RATE.exec(t);
  if (m) return { kind: m[1] as 'timeout_rate' | 'error_rate', threshold: Number(m[2]) / 100 };
  return `cannot read condition "${text}": expected "p95 > 80% of timeout", "timeout_rate > 1%", "error_rate > 5%", "circuit_open" or "target_down"`;
}

export function describeCondition(c: AlertCondition): string {
  switch (c.kind) {
    case 'latency':
      return `p${c.percentile} > ${Math.round(c.threshold * 1000) / 10}% of timeout`;
    case 'circuit_open':
    case 'target_down':
      return c.kind;
    default:
      return `${c.kind} > ${Math.round(c.threshold * 1000) / 10}%`;
  }
}
