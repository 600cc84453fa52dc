/**
 * Failover: what clients see when one of three upstream targets starts hanging (accepts requests, never
 * answers, /healthz included) and later recovers, under a steady open-loop load. See bench/README.md.
 *
 * Three node:http targets (this script with `--serve`, one process on the load core) answer 200 with a
 * 100-byte body after `--delay-ms`; `GET /__ctl/hang|recover|stats` on a target flips it or reads its
 * counters. Sluice on the proxy core: route `timeouts: { total: 1s }`,
 * `retry: { attempts: 2, on: [connect, reset, ttfb], per_try: 300ms, budget: 20% }`. Two configurations,
 * one after the other in the same run:
 *   A  health checks + outlier ejection on;
 *   B  both off (retries only).
 * Phases: `--before` s healthy, `--during` s with target 1 hanging, `--after` s recovered.
 *
 *   npx node bench/macro/failover.ts [--rate 500] [--before 10] [--during 20] [--after 10] [--warmup 5]
 *        [--connections 256] [--delay-ms 2] [--budget 20%] [--configs A,B] [--json FILE]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import {
  fixedRateLoad,
  fmtInt,
  fmtUs,
  freePort,
  LOAD_CORE,
  listFlag,
  log,
  machineInfo,
  makeTmpDir,
  mdTable,
  NODE,
  PROXY_CORE,
  percentile,
  pinSelf,
  raiseNofile,
  requireTools,
  type SluiceProc,
  sleep,
  sortedCopy,
  spawnPinned,
  startSluiceWith,
  waitReady,
} from './lib.ts';

const { values: flags } = parseArgs({
  options: {
    serve: { type: 'boolean', default: false },
    ports: { type: 'string' },
    rate: { type: 'string', default: '500' },
    before: { type: 'string', default: '10' },
    during: { type: 'string', default: '20' },
    after: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '5' },
    connections: { type: 'string', default: '256' },
    'delay-ms': { type: 'string', default: '2' },
    budget: { type: 'string', default: '20%' },
    configs: { type: 'string' },
    json: { type: 'string' },
  },
});

// ---- the three targets (child process) ---------------------------------------------------------------

function serve(): void {
  const delay = Number(flags['delay-ms']);
  const BODY = Buffer.alloc(100, 'x');
  for (const port of (flags.ports ?? '').split(',').map(Number)) {
    let hanging = false;
    const stats = { received: 0, answered: 0, hung: 0, pending: 0 };
    const server = http.createServer((req, res) => {
      const url = req.url ?? '/';
      req.resume();
      if (url.startsWith('/__ctl/')) {
        if (url === '/__ctl/hang') hanging = true;
        else if (url === '/__ctl/recover') hanging = false;
        const body = JSON.stringify({ hanging, ...stats });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
        return;
      }
      stats.received++;
      if (hanging) {
        // Accept and never answer, health probes included; the connection stays open until the
        // client (sluice) gives up on it.
        stats.hung++;
        stats.pending++;
        res.on('close', () => stats.pending--);
        return;
      }
      setTimeout(() => {
        stats.answered++;
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': BODY.length });
        res.end(BODY);
      }, delay);
    });
    server.keepAliveTimeout = 75_000;
    server.headersTimeout = 80_000;
    server.requestTimeout = 0;
    server.listen(port, '127.0.0.1');
  }
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
}

// ---- the runner ---------------------------------------------------------------------------------------

const CONFIGS = ['A', 'B'] as const;
type ConfigName = (typeof CONFIGS)[number];
const CONFIG_LABEL: Record<ConfigName, string> = {
  A: 'A: health + outlier ejection + retries',
  B: 'B: retries only',
};
const HEALTH =
  'health: { path: /healthz, interval: 1s, timeout: 500ms, unhealthy_after: 2, healthy_after: 2 }';
const OUTLIER = 'outlier: { consecutive_failures: 3, base_ejection: 5s }';
const PHASES = ['before', 'during', 'after'] as const;
type PhaseName = (typeof PHASES)[number];

interface TargetStats {
  hanging: boolean;
  received: number;
  answered: number;
  hung: number;
  pending: number;
}

interface PhaseResult {
  phase: PhaseName;
  seconds: number;
  requests: number;
  ok: number;
  errors: number;
  byStatus: Record<string, number>;
  errorRate: number;
  p50us: number;
  p99us: number;
  maxUs: number;
  /** Requests retried at least once (from the access log). */
  retried: number;
  /** Requests (probes included) the hanging target received during the phase. */
  hangingTargetGot: number;
}

interface SecondPoint {
  s: number;
  requests: number;
  errors: number;
  p99us: number;
}

interface UpstreamEventAt {
  atS: number;
  event: string;
  /** 1-based index of the target (1 is the one that hangs). */
  target: number;
  detail: string;
  forMs?: number;
}

function fmtEvents(events: UpstreamEventAt[]): string {
  return events
    .map((e) => `target ${e.target} ${e.event}${e.detail ? ` ${e.detail}` : ''} at ${e.atS.toFixed(2)} s`)
    .join('; ');
}

interface ConfigResult {
  config: ConfigName;
  yaml: string;
  phases: PhaseResult[];
  perSecond: SecondPoint[];
  events: UpstreamEventAt[];
  /** Events before the measured phases (should be none). */
  warmupEvents: UpstreamEventAt[];
  senderLagP99us: number;
  achievedRate: number;
}

function sluiceConfig(
  config: ConfigName,
  port: number,
  adminPort: number,
  targets: string[],
  accessLog: string,
): string {
  const resilience = config === 'A' ? `\n    ${HEALTH}\n    ${OUTLIER}` : '';
  return `listen: 127.0.0.1:${port}
admin: { listen: 127.0.0.1:${adminPort} }
access_log: ${accessLog}
shutdown_timeout: 1s
upstreams:
  up:
    targets: [${targets.join(', ')}]${resilience}
routes:
  - name: all
    match: { path: / }
    upstream: up
    timeouts: { total: 1s }
    retry: { attempts: 2, on: [connect, reset, ttfb], per_try: 300ms, budget: ${flags.budget} }
`;
}

const loadavg = () =>
  os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');

async function ctl(target: string, what: 'hang' | 'recover' | 'stats'): Promise<TargetStats> {
  const res = await fetch(`${target}/__ctl/${what}`, { signal: AbortSignal.timeout(2000) });
  return (await res.json()) as TargetStats;
}

/** Upstream events (health, ejected, restored) from sluice's operational log, seconds after `t0Wall`. */
function upstreamEvents(logFile: string, t0Wall: number, targets: string[]): UpstreamEventAt[] {
  const out: UpstreamEventAt[] = [];
  for (const line of readFileSync(logFile, 'utf8').split('\n')) {
    if (!line.includes('"event"')) continue;
    try {
      const e = JSON.parse(line) as Record<string, unknown>;
      if (typeof e['event'] !== 'string' || e['upstream'] === undefined) continue;
      const detail =
        e['event'] === 'health'
          ? e['healthy']
            ? 'healthy'
            : 'unhealthy'
          : e['event'] === 'ejected'
            ? `for ${e['forMs']} ms (${e['reason']})`
            : '';
      out.push({
        atS: (Date.parse(String(e['time'])) - t0Wall) / 1000,
        event: String(e['event']),
        target: targets.findIndex((t) => String(e['target']).startsWith(t)) + 1,
        detail,
        forMs: typeof e['forMs'] === 'number' ? e['forMs'] : undefined,
      });
    } catch {}
  }
  return out;
}

/** Start times (ms since epoch) of requests retried at least once, from the access log. */
function retriedStarts(accessLog: string): number[] {
  const out: number[] = [];
  let text = '';
  try {
    text = readFileSync(accessLog, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    if (!line.includes('"retries":') || line.includes('"retries":0')) continue;
    try {
      const e = JSON.parse(line) as { time: string; total: number; retries: number };
      if (e.retries > 0) out.push(Date.parse(e.time) - e.total);
    } catch {}
  }
  return out;
}

async function runConfig(
  config: ConfigName,
  tmp: string,
  targets: string[],
  secs: Record<PhaseName, number>,
  rate: number,
): Promise<ConfigResult> {
  let yaml = '';
  const accessLog = path.join(tmp, `access-${config}.log`);
  const s: SluiceProc = await startSluiceWith(
    tmp,
    `sluice-${config}`,
    (port, adminPort) => (yaml = sluiceConfig(config, port, adminPort, targets, accessLog)),
    { readyPath: '/' },
  );
  log(`${CONFIG_LABEL[config]}: sluice ready at ${s.url} (pid ${s.proc.pid})`);
  const pool = new Pool(s.url, { connections: Number(flags.connections), pipelining: 1 });
  try {
    const warmup = Number(flags.warmup);
    if (warmup > 0) await fixedRateLoad(pool, { path: '/', rate, seconds: warmup });
    await sleep(500);
    // A cold (or CPU-starved) gateway can go past per_try during the warm-up and eject a target, which
    // would also double its next ejection: report it, and wait until every target is back.
    const warmEvents = upstreamEvents(s.logFile, Date.now(), targets);
    if (warmEvents.length) {
      log(`${config}: WARNING upstream events during the warm-up: ${fmtEvents(warmEvents)}`);
      const back = Math.max(0, ...warmEvents.map((e) => e.atS * 1000 + (e.forMs ?? 0))) + 2500;
      await sleep(back);
      await fixedRateLoad(pool, { path: '/', rate: 50, seconds: 1 }); // let restorations happen
    }
    const hangAt = secs.before * 1000;
    const recoverAt = (secs.before + secs.during) * 1000;
    const endAt = recoverAt + secs.after * 1000;
    const hanging = targets[0];
    const t0 = performance.now() + 50;
    const t0Wall = Date.now() + 50;
    const snaps: Promise<TargetStats>[] = [];
    const at = (ms: number, fn: () => Promise<TargetStats>) =>
      snaps.push(
        new Promise((resolve, reject) =>
          setTimeout(() => fn().then(resolve, reject), Math.max(0, t0 + ms - performance.now())),
        ),
      );
    at(0, () => ctl(hanging, 'stats'));
    at(hangAt, () => ctl(hanging, 'hang'));
    at(recoverAt, () => ctl(hanging, 'recover'));
    at(endAt, () => ctl(hanging, 'stats'));
    log(
      `${config}: ${rate} req/s for ${secs.before} + ${secs.during} + ${secs.after} s; target 1 hangs at ` +
        `+${secs.before} s, recovers at +${secs.before + secs.during} s`,
    );
    const r = await fixedRateLoad(pool, {
      path: '/',
      rate,
      seconds: endAt / 1000,
      startAt: t0,
      timeoutMs: 5000,
    });
    const [s0, s1, s2, s3] = await Promise.all(snaps);
    await sleep(400); // the access log flushes at least every 200 ms
    const retried = retriedStarts(accessLog).map((ms) => ms - t0Wall);
    const events = upstreamEvents(s.logFile, t0Wall, targets);
    if (s.proc.exited) throw new Error(`sluice ${config} died: ${s.proc.exitInfo}\n${s.proc.logTail()}`);

    const bounds: Record<PhaseName, [number, number]> = {
      before: [0, hangAt],
      during: [hangAt, recoverAt],
      after: [recoverAt, Number.POSITIVE_INFINITY],
    };
    const hangGot: Record<PhaseName, number> = {
      before: s1.received - s0.received,
      during: s2.received - s1.received,
      after: s3.received - s2.received,
    };
    const phases = PHASES.map((phase): PhaseResult => {
      const [lo, hi] = bounds[phase];
      const lat: number[] = [];
      const byStatus: Record<string, number> = {};
      let ok = 0;
      for (let i = 0; i < r.sent; i++) {
        if (r.issuedMs[i] < lo || r.issuedMs[i] >= hi) continue;
        lat.push(r.latUs[i]);
        const st = r.status[i];
        if (st >= 200 && st < 300) ok++;
        else {
          const k = st === 0 ? 'socket' : String(st);
          byStatus[k] = (byStatus[k] ?? 0) + 1;
        }
      }
      const sorted = sortedCopy(lat);
      return {
        phase,
        seconds: secs[phase],
        requests: lat.length,
        ok,
        errors: lat.length - ok,
        byStatus,
        errorRate: lat.length ? (lat.length - ok) / lat.length : 0,
        p50us: percentile(sorted, 50),
        p99us: percentile(sorted, 99),
        maxUs: sorted[sorted.length - 1] ?? Number.NaN,
        retried: retried.filter((ms) => ms >= lo && ms < hi).length,
        hangingTargetGot: hangGot[phase],
      };
    });
    const perSecond: SecondPoint[] = [];
    const nSec = Math.ceil(endAt / 1000);
    const buckets: number[][] = Array.from({ length: nSec }, () => []);
    const errs = new Array<number>(nSec).fill(0);
    for (let i = 0; i < r.sent; i++) {
      const b = Math.min(nSec - 1, Math.floor(r.issuedMs[i] / 1000));
      buckets[b].push(r.latUs[i]);
      if (!(r.status[i] >= 200 && r.status[i] < 300)) errs[b]++;
    }
    for (let b = 0; b < nSec; b++)
      perSecond.push({
        s: b,
        requests: buckets[b].length,
        errors: errs[b],
        p99us: percentile(sortedCopy(buckets[b]), 99),
      });
    const res: ConfigResult = {
      config,
      yaml,
      phases,
      perSecond,
      warmupEvents: warmEvents,
      events: events.filter((e) => e.atS >= 0),
      senderLagP99us: percentile(sortedCopy(r.lagUs), 99),
      achievedRate: r.achievedRate,
    };
    for (const p of phases)
      log(
        `${config} ${p.phase}: ${p.requests} requests, ${p.errors} errors ${JSON.stringify(p.byStatus)}, ` +
          `p50 ${fmtUs(p.p50us)}, p99 ${fmtUs(p.p99us)}, max ${fmtUs(p.maxUs)}, ${p.retried} retried, ` +
          `hanging target got ${p.hangingTargetGot}`,
      );
    return res;
  } finally {
    await pool.close();
    await s.stop();
    await ctl(targets[0], 'recover').catch(() => {});
  }
}

async function run(): Promise<void> {
  const rate = Number(flags.rate);
  const secs = { before: Number(flags.before), during: Number(flags.during), after: Number(flags.after) };
  const configs = listFlag(flags.configs, CONFIGS, '--configs');
  if (!(rate > 0 && secs.before > 0 && secs.during > 0 && secs.after > 0))
    throw new Error('--rate, --before, --during and --after must be > 0');
  requireTools(['taskset']);
  raiseNofile(4096);
  pinSelf(LOAD_CORE);
  const tmp = makeTmpDir();
  const machine = machineInfo();
  log(`cpu ${machine.cpu}; node ${machine.node}; load average ${loadavg()}`);

  const ports = [await freePort(), await freePort(), await freePort()];
  const targets = ports.map((p) => `http://127.0.0.1:${p}`);
  const up = spawnPinned(
    'targets',
    LOAD_CORE,
    NODE,
    [import.meta.filename, '--serve', '--ports', ports.join(','), '--delay-ms', String(flags['delay-ms'])],
    { logFile: path.join(tmp, 'targets.log') },
  );
  for (const t of targets) await waitReady(`${t}/`, up);
  log(`targets ready: ${targets.join(', ')} (pid ${up.pid}, ${flags['delay-ms']} ms delay)`);

  const results: ConfigResult[] = [];
  for (const c of configs) results.push(await runConfig(c, tmp, targets, secs, rate));
  await up.stop();

  const pct = (x: number) => `${(x * 100).toFixed(x > 0 && x < 0.001 ? 3 : x < 0.1 ? 2 : 1)} %`;
  const statuses = (b: Record<string, number>) =>
    Object.entries(b)
      .map(([k, v]) => `${v}×${k}`)
      .join(', ') || '–';
  const table = mdTable(
    [
      'config',
      'phase',
      'requests',
      'errors',
      'error rate',
      'error kinds',
      'p50',
      'p99',
      'max',
      'retried',
      'to hanging target',
    ],
    results.flatMap((r) =>
      r.phases.map((p) => [
        r.config,
        `${p.phase} (${p.seconds} s)`,
        fmtInt(p.requests),
        fmtInt(p.errors),
        pct(p.errorRate),
        statuses(p.byStatus),
        fmtUs(p.p50us),
        fmtUs(p.p99us),
        fmtUs(p.maxUs),
        fmtInt(p.retried),
        p.phase === 'during' ? fmtInt(p.hangingTargetGot) : '–',
      ]),
    ),
    ['l', 'l', 'r', 'r', 'r', 'l', 'r', 'r', 'r', 'r', 'r'],
  );
  const command = ['npx node bench/macro/failover.ts', ...process.argv.slice(2)].join(' ');
  const out = [
    '',
    `Machine: ${machine.cpu}; ${machine.kernel}; Node ${machine.node}.`,
    `Failover: three node:http targets (100 B after ${flags['delay-ms']} ms; core ${LOAD_CORE}) behind sluice ` +
      `(core ${PROXY_CORE}); route \`timeouts: { total: 1s }\`, \`retry: { attempts: 2, on: [connect, reset, ttfb], ` +
      `per_try: 300ms, budget: ${flags.budget} }\`. Open-loop GETs at ${fmtInt(rate)} req/s over at most ` +
      `${flags.connections} connections (core ${LOAD_CORE}); target 1 hangs (requests and /healthz accepted, ` +
      `never answered) for the \`during\` phase. A = \`${HEALTH}\` + \`${OUTLIER}\`; B = neither. Errors = ` +
      `non-2xx or socket errors; latency of every request (errors included) from its issue; phase by issue ` +
      `time; retried = requests with ≥ 1 retry (access log); to hanging target = requests and probes it ` +
      `received while hanging.`,
    '',
    table,
    '',
  ];
  for (const r of results) {
    const ev = r.events
      .map((e) => {
        const rel =
          e.atS >= secs.before + secs.during
            ? `recovery + ${(e.atS - secs.before - secs.during).toFixed(2)} s`
            : e.atS >= secs.before
              ? `hang + ${(e.atS - secs.before).toFixed(2)} s`
              : `${e.atS.toFixed(2)} s before the hang`;
        return `target ${e.target} ${e.event}${e.detail ? ` ${e.detail}` : ''} (${rel})`;
      })
      .join('; ');
    out.push(`${r.config} upstream events: ${ev || 'none'}.`);
    if (r.warmupEvents.length)
      out.push(
        `${r.config} WARNING, events during the warm-up (waited for them to clear): ${fmtEvents(r.warmupEvents)}.`,
      );
  }
  out.push('', 'Per second (phase boundaries marked |): errors, then p99 in ms.');
  for (const r of results) {
    const mark = (i: number) => (i === secs.before || i === secs.before + secs.during ? '| ' : '');
    out.push(
      `${r.config} errors: ${r.perSecond.map((p, i) => `${mark(i)}${p.errors}`).join(' ')}`,
      `${r.config} p99:    ${r.perSecond.map((p, i) => `${mark(i)}${(p.p99us / 1000).toFixed(p.p99us < 10_000 ? 1 : 0)}`).join(' ')}`,
    );
  }
  out.push(
    '',
    `Generator: achieved ${results.map((r) => `${r.config} ${fmtInt(r.achievedRate)} req/s`).join(', ')}; ` +
      `sender lag p99 ${results.map((r) => `${r.config} ${fmtUs(r.senderLagP99us)}`).join(', ')}.`,
    `Command: \`${command}\``,
    '',
  );
  console.log(out.join('\n'));
  if (flags.json) {
    const settings = {
      rate,
      ...secs,
      warmup: Number(flags.warmup),
      connections: Number(flags.connections),
      delayMs: Number(flags['delay-ms']),
      budget: flags.budget,
    };
    writeFileSync(flags.json, `${JSON.stringify({ machine, settings, results }, null, 2)}\n`);
    log(`wrote ${flags.json}`);
  }
}

if (flags.serve) serve();
else await run();
