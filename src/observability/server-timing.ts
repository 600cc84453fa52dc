/**
 * Server-Timing (W3C): the gateway adds its own time and the upstream's, and parses the upstream's
 * own entries (`db;dur=150;desc="database", stripe;dur=8500`) into the access log and metrics, so
 * "the payment API is the bottleneck" is visible without an APM.
 */

const ENTRY = /^\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)((?:\s*;\s*[^,;]+)*)\s*$/;
const DUR = /;\s*dur\s*=\s*"?(-?\d+(?:\.\d+)?)"?/i;

/** name → duration in ms; entries without `dur` are skipped; repeated names are summed. */
export function parseServerTiming(header: string): Record<string, number> | undefined {
  let out: Record<string, number> | undefined;
  for (const part of header.split(',')) {
    const m = ENTRY.exec(part);
    if (!m) continue;
    const d = DUR.exec(m[2]);
    if (!d) continue;
    const name = m[1].toLowerCase();
    out ??= {};
    out[name] = (out[name] ?? 0) + Number(d[1]);
  }
  return out;
}

/** The gateway's own entries: time spent in Sluice and time waiting on the upstream, in ms. */
export function gatewayTiming(gatewayMs: number, upstreamMs: number): string {
  // Math.round to 0.1 ms is several times cheaper than toFixed on the hot path.
  return `sluice;desc="gateway";dur=${Math.round(gatewayMs * 10) / 10}, upstream;desc="upstream";dur=${Math.round(upstreamMs * 10) / 10}`;
}
