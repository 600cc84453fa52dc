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
  return `sluice;desc="gateway";dur=${gatewayMs.toFixed(1)}, upstream;desc="upstream";dur=${upstreamMs.toFixed(1)}`;
}
