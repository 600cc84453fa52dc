/**
 * The probe engine behind `sluice probe`: n requests to one URL, each timed phase by phase from
 * socket events (like `curl -w` / httpstat), then percentiles, the dominant phase, the upstream's own
 * Server-Timing and a verdict against a budget.
 *
 * Phases are contiguous, so they add up to the total:
 *   dns       start → lookup done (0 when no lookup happened: an IP literal, or a reused connection)
 *   connect   lookup done (or start) → TCP connected
 *   tls       TCP connected → TLS handshake done (0 for http)
 *   ttfb      connection ready → first response byte (the server's think time plus one round trip)
 *   transfer  first response byte → last byte of the body
 *   total     start → last byte
 */
import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction, Socket } from 'node:net';
import { parseServerTiming } from '../observability/server-timing.ts';
import { nearestRank } from './percentiles.ts';

export const PHASES = ['dns', 'connect', 'tls', 'ttfb', 'transfer', 'total'] as const;
export type ProbePhase = (typeof PHASES)[number];

export interface ProbeOptions {
  url: URL;
  n: number;
  concurrency: number;
  budgetMs: number;
  method: string;
  headers: Record<string, string>;
  body: string | undefined;
  insecure: boolean;
  reuse: boolean;
  /** A run still without its last byte after this many ms is abandoned (counted as over the budget). */
  runTimeoutMs: number;
  /** Called after each run (progress). */
  onRun?: (done: number, total: number) => void;
}

export interface ProbeRun {
  status: number | null;
  bytes: number;
  dns_ms: number | null;
  connect_ms: number | null;
  tls_ms: number | null;
  ttfb_ms: number | null;
  transfer_ms: number | null;
  total_ms: number | null;
  error: string | null;
}

/** What a run saw beyond the figures (not part of the JSON document). */
export interface RunExtras {
  serverTiming: Record<string, number> | undefined;
  timeoutMs: string | undefined;
  proxyStatus: string | undefined;
  via: string | undefined;
  /** The error's code (ECONNREFUSED, …), when it failed. */
  code: string | undefined;
  /** Abandoned after runTimeoutMs. */
  timedOut: boolean;
}

export interface PhaseStats {
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
}

export interface ProbeSummary {
  n: number;
  errors: number;
  phases: Record<ProbePhase, PhaseStats>;
  dominant: Exclude<ProbePhase, 'total'> | null;
  server_timing: Record<string, number>;
  headroom: number | null;
  verdict: 'ok' | 'near' | 'over';
}

export interface ProbeReport {
  url: string;
  budget_ms: number;
  runs: ProbeRun[];
  summary: ProbeSummary;
}

/** The result of a probe: the JSON document plus what the text output shows besides. */
export interface ProbeResult {
  report: ProbeReport;
  extras: RunExtras[];
}

/** Headroom from this share of the budget on is `near` (the default alert threshold of Sluice's headroom). */
export const NEAR = 0.8;

const round = (ms: number) => Math.round(ms * 10) / 10;

export async function probe(opts: ProbeOptions): Promise<ProbeResult> {
  const agentOptions = { keepAlive: true, maxSockets: opts.concurrency };
  const agent = !opts.reuse
    ? undefined
    : opts.url.protocol === 'https:'
      ? new https.Agent({ ...agentOptions, rejectUnauthorized: !opts.insecure })
      : new http.Agent(agentOptions);
  const runs: ProbeRun[] = new Array(opts.n);
  const extras: RunExtras[] = new Array(opts.n);
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < opts.n) {
      const i = next++;
      const r = await runOnce(opts, agent);
      runs[i] = r.run;
      extras[i] = r.extras;
      opts.onRun?.(++done, opts.n);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(opts.concurrency, opts.n) }, worker));
  } finally {
    agent?.destroy();
  }
  return {
    report: {
      url: opts.url.href,
      budget_ms: opts.budgetMs,
      runs,
      summary: summarize(runs, extras, opts.budgetMs),
    },
    extras,
  };
}

/** One request, timed from socket events. Never rejects: a failure is a run with `error`. */
export function runOnce(
  opts: ProbeOptions,
  agent: http.Agent | undefined,
): Promise<{ run: ProbeRun; extras: RunExtras }> {
  const isHttps = opts.url.protocol === 'https:';
  const start = performance.now();
  let lookupEnd = 0;
  let connectAt = 0;
  let secureAt = 0;
  let readyAt = 0;
  let firstByteAt = 0;
  let endAt = 0;
  let bytes = 0;
  let status: number | null = null;
  const extras: RunExtras = {
    serverTiming: undefined,
    timeoutMs: undefined,
    proxyStatus: undefined,
    via: undefined,
    code: undefined,
    timedOut: false,
  };
  const lookup: LookupFunction = (hostname, options, callback) => {
    dns.lookup(hostname, options, (err, address, family) => {
      lookupEnd = performance.now();
      (callback as (e: unknown, a: unknown, f?: number) => void)(err, address, family);
    });
  };
  return new Promise((resolve) => {
    let settled = false;
    const finish = (error: string | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const now = performance.now();
      if (extras.timedOut) {
        // The phase still running when the run was abandoned gets the time waited in it.
        if (!connectAt && !readyAt) connectAt = now;
        else if (isHttps && !secureAt && !readyAt) secureAt = readyAt = now;
        else if (!firstByteAt) firstByteAt = now;
        else endAt = now;
      }
      const ms = (a: number, b: number) => (a > 0 && b > 0 ? round(b - a) : null);
      const phaseStart = lookupEnd || start;
      const run: ProbeRun = {
        status,
        bytes,
        dns_ms: lookupEnd ? round(lookupEnd - start) : connectAt || readyAt ? 0 : null,
        connect_ms: connectAt ? round(connectAt - phaseStart) : readyAt ? 0 : null,
        tls_ms: !isHttps
          ? connectAt || readyAt
            ? 0
            : null
          : secureAt
            ? round(secureAt - connectAt)
            : readyAt
              ? 0
              : null,
        ttfb_ms: ms(readyAt, firstByteAt),
        transfer_ms: extras.timedOut && !endAt ? null : ms(firstByteAt, endAt),
        total_ms: endAt || extras.timedOut ? round((endAt || now) - start) : null,
        error,
      };
      resolve({ run, extras });
    };
    const timer = setTimeout(() => {
      extras.timedOut = true;
      extras.code = 'ETIMEDOUT';
      req.destroy();
      finish(`no complete response within ${opts.runTimeoutMs} ms`);
    }, opts.runTimeoutMs);
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.body !== undefined) headers['content-length'] ??= String(Buffer.byteLength(opts.body));
    const req = (isHttps ? https : http).request(opts.url, {
      method: opts.method,
      headers,
      agent: agent ?? false,
      lookup,
      rejectUnauthorized: !opts.insecure,
    });
    req.on('socket', (socket: Socket) => {
      const onData = () => {
        if (!firstByteAt) firstByteAt = performance.now();
      };
      socket.once('data', onData);
      req.once('close', () => socket.off('data', onData));
      if (!socket.connecting && !(socket as { pending?: boolean }).pending) {
        // A kept-alive connection: no DNS, connect or TLS for this run.
        readyAt = performance.now();
        return;
      }
      socket.once('connect', () => {
        connectAt = performance.now();
        if (!isHttps) readyAt = connectAt;
      });
      if (isHttps)
        socket.once('secureConnect', () => {
          secureAt = performance.now();
          readyAt = secureAt;
        });
    });
    req.on('response', (res) => {
      status = res.statusCode ?? null;
      if (!firstByteAt) firstByteAt = performance.now();
      const h = res.headers;
      const st = h['server-timing'];
      if (st) extras.serverTiming = parseServerTiming(Array.isArray(st) ? st.join(',') : st);
      extras.timeoutMs = h['x-timeout-ms'] as string | undefined;
      extras.proxyStatus = h['proxy-status'] as string | undefined;
      extras.via = h.via;
      res.on('data', (c: Buffer) => (bytes += c.length));
      res.on('end', () => {
        endAt = performance.now();
        finish(null);
      });
      res.on('error', (err) => finish(describeError(err, opts.url)));
      res.on('aborted', () => finish('the server closed the connection mid-body'));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      extras.code ??= err.code;
      finish(describeError(err, opts.url));
    });
    req.end(opts.body);
  });
}

/** One line for a network error, with what it usually means. */
export function describeError(err: NodeJS.ErrnoException, url: URL): string {
  const code = err.code ?? '';
  const msg = err.message.split('\n')[0];
  switch (code) {
    case 'ECONNREFUSED':
      return `${msg} (is the service running?)`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `DNS: cannot resolve ${url.hostname} (${code})`;
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `${msg} (network or firewall)`;
    case 'ECONNRESET':
      return `${msg} (the connection was reset)`;
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'CERT_HAS_EXPIRED':
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return `TLS: ${msg.split(';')[0]} (use -k to accept it)`;
    default:
      return msg || code || String(err);
  }
}

export function summarize(runs: ProbeRun[], extras: RunExtras[], budgetMs: number): ProbeSummary {
  const errors = runs.filter((r) => r.error !== null).length;
  // Percentiles over runs that completed plus runs abandoned for slowness (their total is the time
  // waited, which is at least the budget): a timeout must weigh on p99, a refused connection has no time.
  const timed = runs.filter((r, i) => r.error === null || extras[i].timedOut);
  const phases = {} as Record<ProbePhase, PhaseStats>;
  for (const p of PHASES) {
    const values = timed
      .map((r) => r[`${p}_ms`])
      .filter((v): v is number => v !== null)
      .sort((a, b) => a - b);
    phases[p] = {
      p50: nearestRank(values, 50),
      p90: nearestRank(values, 90),
      p99: nearestRank(values, 99),
      max: values.length ? values[values.length - 1] : null,
    };
  }
  let dominant: ProbeSummary['dominant'] = null;
  let best = -1;
  for (const p of ['dns', 'connect', 'tls', 'ttfb', 'transfer'] as const) {
    const v = phases[p].p50;
    if (v !== null && v > best) {
      best = v;
      dominant = p;
    }
  }
  const sums: Record<string, { sum: number; n: number }> = {};
  for (const e of extras)
    for (const [name, dur] of Object.entries(e.serverTiming ?? {})) {
      sums[name] ??= { sum: 0, n: 0 };
      sums[name].sum += dur;
      sums[name].n++;
    }
  const server_timing: Record<string, number> = {};
  for (const [name, { sum, n }] of Object.entries(sums)) server_timing[name] = round(sum / n);
  const p99 = phases.total.p99;
  const headroom = p99 === null || budgetMs <= 0 ? null : Math.round((p99 / budgetMs) * 1000) / 1000;
  const verdict: ProbeSummary['verdict'] =
    p99 === null || headroom === null || headroom >= 1 ? 'over' : headroom >= NEAR ? 'near' : 'ok';
  return { n: runs.length, errors, phases, dominant, server_timing, headroom, verdict };
}

/** A hint naming the likely cause, in the words of the usual 504 write-ups. */
export function hint(result: ProbeResult): string {
  const { summary } = result.report;
  const failed = result.extras.filter((e) => e.code && !e.timedOut);
  if (failed.length > 0) {
    const code = failed[0].code;
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN')
      return 'DNS is failing: the name does not resolve (resolver, record, or a typo); not your code.';
    if (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'ETIMEDOUT')
      return `connect is failing (${code}): the backend is down or unreachable, or a firewall/security group blocks the port; network/infrastructure, not your code.`;
  }
  const st = Object.entries(summary.server_timing).sort((a, b) => b[1] - a[1])[0];
  switch (summary.dominant) {
    case 'dns':
      return 'DNS dominates: a slow resolver (> 500 ms is a network problem); use a local cache or keep connections alive.';
    case 'connect':
      return 'connect dominates: network latency or packet loss to the backend, or a saturated accept queue; network/infrastructure, not your code.';
    case 'tls':
      return 'TLS dominates: the handshake is slow (far away, or a CPU-starved server); keep connections alive (--reuse shows the difference).';
    case 'ttfb':
      return `backend slow: the time goes before the first byte (a slow query, a third-party call without a timeout, or a cold start)${st ? `; its own Server-Timing says '${st[0]}' takes ${st[1]} ms on average` : '; add Server-Timing to the backend responses to see where'}.`;
    case 'transfer':
      return 'transfer dominates: a large or slowly streamed response; paginate, stream or compress it.';
    default:
      return 'no run completed.';
  }
}
