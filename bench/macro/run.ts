/**
 * Macro benchmark (throughput matrix): wrk against the upstream directly and through nginx, fastify, a bare
 * Node proxy and sluice, interleaved rounds, on one machine in one run. See bench/README.md.
 *
 *   npm run bench -- [--rounds 3] [--duration 5] [--warmup 1] [--initial-warmup 5] [--contenders direct,nginx,fastify,bare,sluice]
 *                    [--scenarios small-c64,small-c256,16k-c64,16k-c256] [--json out.json]
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  ALL_CONTENDERS,
  BODIES,
  type BodyName,
  CLK_TCK,
  type Contender,
  type ContenderName,
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
  startContender,
  startUpstreamNginx,
  treeTicks,
  type WrkResult,
  wrk,
} from './lib.ts';

const SCENARIOS = ['small-c64', 'small-c256', '16k-c64', '16k-c256'] as const;
type ScenarioName = (typeof SCENARIOS)[number];

const { values: flags } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '1' },
    'initial-warmup': { type: 'string', default: '5' },
    contenders: { type: 'string' },
    scenarios: { type: 'string' },
    json: { type: 'string' },
    'sluice-access-log': { type: 'string', default: 'off' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (flags.help) {
  console.log(
    'npm run bench -- [--rounds N] [--duration S] [--warmup S] [--initial-warmup S] [--contenders a,b]\n' +
      '                 [--scenarios a,b] [--json FILE]\n' +
      `  contenders: ${ALL_CONTENDERS.join(', ')}\n  scenarios:  ${SCENARIOS.join(', ')}\n` +
      '  --sluice-access-log off|stdout|FILE   (default off, as nginx here)',
  );
  process.exit(0);
}

const rounds = Number(flags.rounds);
const duration = Number(flags.duration);
const warmup = Number(flags.warmup);
const initialWarmup = Number(flags['initial-warmup']);
const wanted = listFlag(flags.contenders, ALL_CONTENDERS, '--contenders');
const scenarios = listFlag(flags.scenarios, SCENARIOS, '--scenarios').map((name) => {
  const [body, c] = name.split('-c');
  return { name, body: body as BodyName, connections: Number(c) };
});
if (!(rounds >= 1 && duration >= 1 && warmup >= 0 && initialWarmup >= 0))
  throw new Error('--rounds ≥ 1, --duration ≥ 1, --warmup ≥ 0');

interface Run extends WrkResult {
  round: number;
  scenario: ScenarioName;
  contender: ContenderName;
  /** Proxy CPU time per completed request, µs (null for direct). */
  cpuUsPerReq: number | null;
}

requireTools(['nginx', 'wrk', 'taskset']);
raiseNofile(4096);
pinSelf(LOAD_CORE);
const tmp = makeTmpDir();
const machine = machineInfo();
log(`cpu ${machine.cpu}; node ${machine.node}; nginx ${machine.nginx}; ${machine.wrk}`);
log(`proxy on core ${PROXY_CORE}; wrk, upstream nginx and this runner on core ${LOAD_CORE}; tmp ${tmp}`);

const upstream = await startUpstreamNginx(tmp);
log(`upstream nginx ready at ${upstream.url} (pid ${upstream.proc.pid})`);

const contenders: Contender[] = [];
const skipped: { name: string; reason: string }[] = [];
for (const name of wanted) {
  try {
    const c = await startContender(name, tmp, upstream.url, '/small', {
      sluiceAccessLog: flags['sluice-access-log'],
    });
    for (const [body, size] of Object.entries(BODIES)) {
      const r = await httpGet(`${c.url}/${body}`);
      if (r.status !== 200 || r.bytes !== size) {
        await c.stop();
        throw new Error(`GET /${body} answered ${r.status} with ${r.bytes} bytes (want 200, ${size})`);
      }
    }
    contenders.push(c);
    log(`${name} ready at ${c.url}${c.proc ? ` (pid ${c.proc.pid})` : ''}`);
  } catch (err) {
    const reason = (err as Error).message;
    skipped.push({ name, reason });
    log(`SKIP ${name}: ${reason}`);
  }
}
if (contenders.length === 0) throw new Error('no contender could start');

const runs: Run[] = [];
const wrkLog = path.join(tmp, 'wrk.log');
const total = rounds * scenarios.length * contenders.length;
const eta = Math.round(total * (duration + warmup + 0.3));
log(`${total} runs of ${duration} s (+${warmup} s warm-up each), about ${eta} s`);
// One longer warm-up per contender before the first round: V8 needs a few seconds to optimise the hot paths.
if (initialWarmup > 0) {
  log(`initial warm-up: ${initialWarmup} s per contender`);
  const each = Math.max(1, Math.round(initialWarmup / scenarios.length));
  for (const c of contenders) {
    if (c.proc) for (const sc of scenarios) await wrk(`${c.url}/${sc.body}`, sc.connections, each, wrkLog);
  }
}
let n = 0;
for (let round = 1; round <= rounds; round++) {
  for (const sc of scenarios) {
    // Rotate the order each round so no contender always runs right after the same one.
    const order = contenders.map((_, i) => contenders[(i + round - 1) % contenders.length]);
    for (const c of order) {
      const url = `${c.url}/${sc.body}`;
      if (warmup > 0) await wrk(url, sc.connections, warmup, wrkLog);
      const t0 = c.proc ? treeTicks(c.proc.pid) : 0;
      const r = await wrk(url, sc.connections, duration, wrkLog);
      const t1 = c.proc ? treeTicks(c.proc.pid) : 0;
      const cpuUsPerReq = c.proc && r.requests > 0 ? (((t1 - t0) / CLK_TCK) * 1e6) / r.requests : null;
      runs.push({ ...r, round, scenario: sc.name as ScenarioName, contender: c.name, cpuUsPerReq });
      const errs = r.non2xx + r.socketErrors;
      log(
        `[${++n}/${total}] round ${round} ${sc.name} ${c.name}: ${fmtInt(r.rps)} req/s, p50 ${fmtUs(r.p50us)}, ` +
          `p99 ${fmtUs(r.p99us)}${cpuUsPerReq === null ? '' : `, ${cpuUsPerReq.toFixed(1)} µs CPU/req`}` +
          `${errs ? `, ${errs} errors` : ''}`,
      );
      if (c.proc?.exited)
        throw new Error(`${c.name} died during the run: ${c.proc.exitInfo}\n${c.proc.logTail()}`);
    }
  }
}

interface Summary {
  scenario: string;
  contender: string;
  rps: number;
  rpsMin: number;
  rpsMax: number;
  vsDirect: number | null;
  p50us: number;
  p99us: number;
  cpuUsPerReq: number | null;
  errors: number;
}
const summary: Summary[] = [];
for (const sc of scenarios) {
  const directRuns = runs.filter((r) => r.scenario === sc.name && r.contender === 'direct');
  const directRps = directRuns.length ? median(directRuns.map((r) => r.rps)) : null;
  for (const c of contenders) {
    const rs = runs.filter((r) => r.scenario === sc.name && r.contender === c.name);
    const rps = median(rs.map((r) => r.rps));
    const cpu = rs.flatMap((r) => (r.cpuUsPerReq === null ? [] : [r.cpuUsPerReq]));
    summary.push({
      scenario: sc.name,
      contender: c.name,
      rps,
      rpsMin: Math.min(...rs.map((r) => r.rps)),
      rpsMax: Math.max(...rs.map((r) => r.rps)),
      vsDirect: directRps ? rps / directRps : null,
      p50us: median(rs.map((r) => r.p50us)),
      p99us: median(rs.map((r) => r.p99us)),
      cpuUsPerReq: cpu.length ? median(cpu) : null,
      errors: rs.reduce((a, r) => a + r.non2xx + r.socketErrors, 0),
    });
  }
}

const rows = summary.map((s) => [
  s.scenario,
  s.contender,
  fmtInt(s.rps),
  rounds > 1 ? `${fmtInt(s.rpsMin)}–${fmtInt(s.rpsMax)}` : '–',
  s.vsDirect === null ? '–' : `${(s.vsDirect * 100).toFixed(0)} %`,
  fmtUs(s.p50us),
  fmtUs(s.p99us),
  s.cpuUsPerReq === null ? '–' : s.cpuUsPerReq.toFixed(1),
  String(s.errors),
]);
const table = mdTable(
  [
    'scenario',
    'contender',
    'req/s (median)',
    'req/s range',
    'vs direct',
    'p50',
    'p99',
    'proxy CPU µs/req',
    'errors',
  ],
  rows,
  ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
);
const out = [
  '',
  `Machine: ${machine.cpu}; ${machine.kernel}; Node ${machine.node}; nginx ${machine.nginx}; ${machine.wrk}.`,
  `Settings: ${rounds} interleaved round(s) of ${duration} s per contender and scenario, after ${warmup} s warm-up (and ${initialWarmup} s once per contender before the first round); ` +
    `\`wrk -t1 -cN --latency\`; proxy pinned to core ${PROXY_CORE}, wrk + upstream nginx (1 worker) to core ${LOAD_CORE}. ` +
    `Scenario \`small\` = 100 B body, \`16k\` = 16 KiB body, \`cN\` = N connections. req/s, p50 and p99 are medians ` +
    `across rounds; CPU µs/req = proxy utime+stime (all its processes) ÷ requests completed.`,
  '',
  table,
  '',
];
if (skipped.length)
  out.push(`Skipped: ${skipped.map((s) => `${s.name} (${s.reason.split('\n')[0]})`).join('; ')}`, '');
console.log(out.join('\n'));

if (flags.json) {
  const settings = { rounds, duration, warmup, scenarios: scenarios.map((s) => s.name), clkTck: CLK_TCK };
  const data = { machine, settings, skipped, summary, runs };
  writeFileSync(flags.json, `${JSON.stringify(data, null, 2)}\n`);
  log(`wrote ${flags.json}`);
}

for (const c of contenders) await c.stop();
await upstream.proc.stop();
