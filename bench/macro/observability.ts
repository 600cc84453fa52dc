/**
 * What observability costs: sluice with per-request metrics and the access log ON (JSON lines to a file in
 * the temp dir) against OFF (`access_log: off` and `SLUICE_METRICS=off`), same nginx upstream as run.ts,
 * `wrk -t1 -c64` on the 100-byte body, interleaved rounds. See bench/README.md.
 *
 * `--variants on,off,metrics,log` adds "metrics only" and "access log only" to split the cost; `--profile`
 * then runs each variant once more under `node --cpu-prof` and reports the share of its busy CPU spent in
 * observability code (a figure that other load on the machine disturbs far less than req/s).
 *
 *   npx node bench/macro/observability.ts [--rounds 3] [--duration 5] [--warmup 1] [--initial-warmup 5]
 *        [--connections 64] [--variants on,off] [--profile] [--json FILE]
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  CLK_TCK,
  fmtInt,
  fmtUs,
  httpGet,
  LOAD_CORE,
  listFlag,
  log,
  machineInfo,
  makeTmpDir,
  mdTable,
  median,
  PROXY_CORE,
  pinSelf,
  raiseNofile,
  requireTools,
  type SluiceProc,
  sleep,
  sluiceYaml,
  startSluiceWith,
  startUpstreamNginx,
  treeTicks,
  type WrkResult,
  wrk,
} from './lib.ts';

const { values: flags } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '1' },
    'initial-warmup': { type: 'string', default: '5' },
    connections: { type: 'string', default: '64' },
    variants: { type: 'string', default: 'on,off' },
    profile: { type: 'boolean', default: false },
    json: { type: 'string' },
  },
});
const rounds = Number(flags.rounds);
const duration = Number(flags.duration);
const warmup = Number(flags.warmup);
const initialWarmup = Number(flags['initial-warmup']);
const connections = Number(flags.connections);
if (!(rounds >= 1 && duration >= 1 && warmup >= 0 && initialWarmup >= 0 && connections >= 1))
  throw new Error('--rounds ≥ 1, --duration ≥ 1, --warmup ≥ 0, --connections ≥ 1');

const ALL_VARIANTS = ['on', 'off', 'metrics', 'log'] as const;
type Variant = (typeof ALL_VARIANTS)[number];
const LABEL: Record<Variant, string> = {
  on: 'metrics + access log (file)',
  off: 'access_log: off, SLUICE_METRICS=off',
  metrics: 'metrics only (access_log: off)',
  log: 'access log only (SLUICE_METRICS=off)',
};
// `on` and `off` always run (the cost is ON against OFF); `metrics` and `log` split it when asked for.
const VARIANTS = listFlag(flags.variants, ALL_VARIANTS, '--variants');
for (const v of ['off', 'on'] as const) if (!VARIANTS.includes(v)) VARIANTS.unshift(v);

interface Run extends WrkResult {
  round: number;
  variant: Variant;
  cpuUsPerReq: number;
}

const loadavg = () =>
  os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');

requireTools(['nginx', 'wrk', 'taskset']);
raiseNofile(4096);
pinSelf(LOAD_CORE);
const tmp = makeTmpDir();
const machine = machineInfo();
log(`cpu ${machine.cpu}; node ${machine.node}; nginx ${machine.nginx}; load average ${loadavg()}`);
const upstream = await startUpstreamNginx(tmp);
log(`upstream nginx ready at ${upstream.url}`);

const accessLogFile = path.join(tmp, 'sluice-on', 'access.log');
const sluices = {} as Record<Variant, SluiceProc>;
for (const v of VARIANTS) {
  const logTo = v === 'on' ? accessLogFile : v === 'log' ? path.join(tmp, 'sluice-log', 'access.log') : 'off';
  const env = v === 'off' || v === 'log' ? { SLUICE_METRICS: 'off' } : undefined;
  sluices[v] = await startSluiceWith(
    tmp,
    `sluice-${v}`,
    (port, adminPort) => sluiceYaml(port, adminPort, upstream.url, logTo),
    { readyPath: '/small', env },
  );
  const r = await httpGet(`${sluices[v].url}/small`);
  if (r.status !== 200 || r.bytes !== 100) throw new Error(`${v}: GET /small answered ${r.status}`);
  log(`sluice ${v} (${LABEL[v]}) ready at ${sluices[v].url} (pid ${sluices[v].proc.pid})`);
}

const wrkLog = path.join(tmp, 'wrk.log');
let sentToOn = 0;
const load = async (v: Variant, seconds: number) => {
  const r = await wrk(`${sluices[v].url}/small`, connections, seconds, wrkLog);
  if (v === 'on') sentToOn += r.requests;
  return r;
};
if (initialWarmup > 0) {
  log(`initial warm-up: ${initialWarmup} s each`);
  for (const v of VARIANTS) await load(v, initialWarmup);
}
const runs: Run[] = [];
for (let round = 1; round <= rounds; round++) {
  // Rotate the order each round so no variant always runs right after the same one.
  const order = VARIANTS.map((_, i) => VARIANTS[(i + round - 1) % VARIANTS.length]);
  for (const v of order) {
    const s = sluices[v];
    if (warmup > 0) await load(v, warmup);
    const t0 = treeTicks(s.proc.pid);
    const r = await load(v, duration);
    const t1 = treeTicks(s.proc.pid);
    const cpuUsPerReq = r.requests > 0 ? (((t1 - t0) / CLK_TCK) * 1e6) / r.requests : Number.NaN;
    runs.push({ ...r, round, variant: v, cpuUsPerReq });
    const errs = r.non2xx + r.socketErrors;
    log(
      `round ${round} ${v}: ${fmtInt(r.rps)} req/s, p50 ${fmtUs(r.p50us)}, p99 ${fmtUs(r.p99us)}, ` +
        `${cpuUsPerReq.toFixed(1)} µs CPU/req${errs ? `, ${errs} errors` : ''}`,
    );
    if (s.proc.exited) throw new Error(`sluice ${v} died: ${s.proc.exitInfo}\n${s.proc.logTail()}`);
  }
}

// Check that ON really logged and counted, and OFF did not.
await sleep(500); // the access log is flushed at least every 200 ms
const logLines = Number(execFileSync('wc', ['-l', accessLogFile], { encoding: 'utf8' }).split(' ')[0]);
const counted = async (v: Variant) => {
  const text = await (await fetch(`${sluices[v].adminUrl}/metrics`)).text();
  let n = 0;
  for (const m of text.matchAll(/^sluice_requests_total\{[^}]*\} (\d+)/gm)) n += Number(m[1]);
  return n;
};
const countedOn = await counted('on');
const countedOff = await counted('off');
log(
  `check: ${fmtInt(sentToOn)} requests completed by wrk through ON; its access log has ${fmtInt(logLines)} ` +
    `lines, its sluice_requests_total ${fmtInt(countedOn)}; OFF's sluice_requests_total ${fmtInt(countedOff)}`,
);
for (const v of VARIANTS) await sluices[v].stop();

// ---- optional: where the CPU goes (V8 CPU profile per variant) -----------------------------------------

interface ProfileShare {
  variant: Variant;
  requests: number;
  busyS: number;
  obsS: number;
  share: number;
}

/** Frames that are observability work: metrics, windows, alerts, the access log and what they call. */
const OBS_FRAME = /\/observability\/|\/pino\/|\/sonic-boom\/|\/prom-client\/|^isoNow$/;

/**
 * Busy CPU time of a V8 .cpuprofile (idle and "(program)" left out), and the part of it spent in
 * observability frames or anything they called.
 */
function profileShare(file: string): { busyS: number; obsS: number } {
  interface Node {
    id: number;
    callFrame: { functionName: string; url: string };
    children?: number[];
  }
  const prof = JSON.parse(readFileSync(file, 'utf8')) as {
    nodes: Node[];
    samples: number[];
    timeDeltas: number[];
  };
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const inObs = new Map<number, boolean>();
  const isObs = (id: number): boolean => {
    let v = inObs.get(id);
    if (v === undefined) {
      const f = (byId.get(id) as Node).callFrame;
      const up = parent.get(id);
      v = OBS_FRAME.test(f.url) || OBS_FRAME.test(f.functionName) || (up !== undefined && isObs(up));
      inObs.set(id, v);
    }
    return v;
  };
  let busy = 0;
  let obs = 0;
  for (let i = 0; i < prof.samples.length; i++) {
    const id = prof.samples[i];
    const fn = (byId.get(id) as Node).callFrame.functionName;
    if (fn === '(idle)' || fn === '(program)') continue;
    const dt = prof.timeDeltas[i + 1] ?? 0; // a sample's time is the delta to the next one
    busy += dt;
    if (isObs(id)) obs += dt;
  }
  return { busyS: busy / 1e6, obsS: obs / 1e6 };
}

const profiles: ProfileShare[] = [];
if (flags.profile) {
  for (const v of VARIANTS) {
    const dir = path.join(tmp, `prof-${v}`);
    const logTo = v === 'on' || v === 'log' ? path.join(dir, 'access.log') : 'off';
    const env: Record<string, string> = { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${dir}` };
    if (v === 'off' || v === 'log') env['SLUICE_METRICS'] = 'off';
    const s = await startSluiceWith(
      tmp,
      `prof-${v}`,
      (port, adminPort) => sluiceYaml(port, adminPort, upstream.url, logTo),
      { readyPath: '/small', env },
    );
    let requests = 0;
    for (const secs of [initialWarmup, duration])
      if (secs > 0) requests += (await wrk(`${s.url}/small`, connections, secs, wrkLog)).requests;
    await s.stop(); // SIGTERM: sluice exits normally and Node writes the profile
    const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
    if (!file) throw new Error(`no CPU profile written for ${v} (${s.proc.exitInfo})`);
    const { busyS, obsS } = profileShare(path.join(dir, file));
    profiles.push({ variant: v, requests, busyS, obsS, share: obsS / busyS });
    log(
      `profile ${v}: ${fmtInt(requests)} requests, ${busyS.toFixed(2)} s busy, ${(obsS * 1000).toFixed(0)} ms ` +
        `(${((obsS / busyS) * 100).toFixed(1)} %) in observability code`,
    );
  }
}
await upstream.proc.stop();
log(`load average ${loadavg()}`);

const summary = VARIANTS.map((v) => {
  const rs = runs.filter((r) => r.variant === v);
  return {
    variant: v,
    rps: median(rs.map((r) => r.rps)),
    rpsMin: Math.min(...rs.map((r) => r.rps)),
    rpsMax: Math.max(...rs.map((r) => r.rps)),
    p50us: median(rs.map((r) => r.p50us)),
    p99us: median(rs.map((r) => r.p99us)),
    cpuUsPerReq: median(rs.map((r) => r.cpuUsPerReq)),
    errors: rs.reduce((a, r) => a + r.non2xx + r.socketErrors, 0),
  };
});
const on = summary.find((x) => x.variant === 'on') as (typeof summary)[number];
const off = summary.find((x) => x.variant === 'off') as (typeof summary)[number];
const throughputCost = 1 - on.rps / off.rps;
const cpuCost = on.cpuUsPerReq / off.cpuUsPerReq - 1;
const pct = (x: number) => `${x >= 0 ? '' : '−'}${Math.abs(x * 100).toFixed(1)} %`;
const signed = (x: number) => `${x >= 0 ? '+' : '−'}${Math.abs(x * 100).toFixed(1)} %`;
const table = mdTable(
  ['sluice', 'req/s (median)', 'req/s range', 'vs OFF', 'p50', 'p99', 'CPU µs/req', 'errors'],
  summary.map((s) => [
    LABEL[s.variant],
    fmtInt(s.rps),
    rounds > 1 ? `${fmtInt(s.rpsMin)}–${fmtInt(s.rpsMax)}` : '–',
    s.variant === 'off' ? '–' : signed(s.rps / off.rps - 1),
    fmtUs(s.p50us),
    fmtUs(s.p99us),
    s.cpuUsPerReq.toFixed(1),
    String(s.errors),
  ]),
  ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
);
// Per-round pairs: each ON run against the OFF run of the same round.
const perRoundCost = Array.from({ length: rounds }, (_, i) => {
  const [a, b] = (['on', 'off'] as const).map(
    (v) => runs.find((r) => r.round === i + 1 && r.variant === v) as Run,
  );
  return 1 - a.rps / b.rps;
});
const perRound = perRoundCost.map(pct);
const offShare = profiles.find((p) => p.variant === 'off')?.share ?? 0;
const profileLines = profiles.length
  ? [
      `CPU profile (\`--profile\`: one fresh sluice per variant under \`node --cpu-prof\`, ${initialWarmup} + ` +
        `${duration} s of wrk): share of busy CPU in observability frames (src/observability/, pino, ` +
        `sonic-boom, prom-client, isoNow) and whatever they call; attributable = share − OFF's share ` +
        `(OFF still builds the log entry, and start-up is in every profile).`,
      '',
      mdTable(
        ['sluice', 'requests', 'busy CPU', 'in observability code', 'share', 'attributable'],
        profiles.map((p) => [
          LABEL[p.variant],
          fmtInt(p.requests),
          `${p.busyS.toFixed(2)} s`,
          `${(p.obsS * 1000).toFixed(0)} ms`,
          `${(p.share * 100).toFixed(1)} %`,
          p.variant === 'off' ? '–' : `${((p.share - offShare) * 100).toFixed(1)} %`,
        ]),
        ['l', 'r', 'r', 'r', 'r', 'r'],
      ),
      '',
    ]
  : [];
console.log(
  [
    '',
    `Machine: ${machine.cpu}; ${machine.kernel}; Node ${machine.node}; nginx ${machine.nginx}; ${machine.wrk}.`,
    `Observability cost: sluice (core ${PROXY_CORE}) in front of nginx (1 worker, core ${LOAD_CORE}), ` +
      `\`wrk -t1 -c${connections} --latency\` on GET /small (100 B, core ${LOAD_CORE}); ${rounds} interleaved ` +
      `round(s) of ${duration} s per variant after ${warmup} s warm-up (and ${initialWarmup} s once each); ` +
      `medians across rounds; CPU µs/req = sluice utime+stime ÷ requests. ON = per-request metrics + JSON ` +
      `access log to a file; OFF = \`access_log: off\` + \`SLUICE_METRICS=off\`; vs OFF = req/s against OFF.`,
    '',
    table,
    '',
    `Throughput cost of ON: ${pct(throughputCost)} from the medians, ${pct(median(perRoundCost))} as the ` +
      `median of per-round pairs (${perRound.join(', ')}); CPU per request ` +
      `${pct(cpuCost)} (${(on.cpuUsPerReq - off.cpuUsPerReq).toFixed(1)} µs). Target: ≤ 10 % throughput ` +
      `cost — ${throughputCost <= 0.1 ? 'met' : 'NOT met'}.`,
    `Check: ON's access log has ${fmtInt(logLines)} lines and its sluice_requests_total is ${fmtInt(countedOn)} ` +
      `for ${fmtInt(sentToOn)} requests completed by wrk (+ readiness probes); OFF's sluice_requests_total is ` +
      `${fmtInt(countedOff)}.`,
    '',
    ...profileLines,
    `Command: \`${['npx node bench/macro/observability.ts', ...process.argv.slice(2)].join(' ')}\``,
    '',
  ].join('\n'),
);
if (flags.json) {
  const settings = { rounds, duration, warmup, initialWarmup, connections, clkTck: CLK_TCK };
  const check = { sentToOn, logLines, countedOn, countedOff };
  writeFileSync(
    flags.json,
    `${JSON.stringify({ machine, settings, summary, throughputCost, perRoundCost, cpuCost, check, runs, profiles }, null, 2)}\n`,
  );
  log(`wrote ${flags.json}`);
}
