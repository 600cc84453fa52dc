/**
 * Added latency at a fixed request rate: an open-loop generator (undici Pool, bounded connections, in this
 * process on the load core) sends R requests/s to the upstream directly and through each proxy, interleaved
 * rounds. Requests are issued on schedule whatever the proxy does (open loop: a stalled proxy shows up as
 * latency, including time queued for one of the pool's connections, not as a lower rate). Latency is counted
 * from the moment a request is issued; the generator's own lateness against the schedule (timer granularity,
 * its GC) is reported apart as "sender lag", so it does not blur the proxies' figures. See bench/README.md.
 *
 *   node bench/macro/added-latency.ts [--rate 5000] [--duration 5] [--warmup 2] [--rounds 3]
 *        [--connections 32] [--body small|16k] [--contenders direct,nginx,fastify,bare,sluice] [--json FILE]
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import {
  ALL_CONTENDERS,
  BODIES,
  type BodyName,
  type Contender,
  fixedRateLoad,
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
  percentile,
  pinSelf,
  raiseNofile,
  requireTools,
  sortedCopy,
  startContender,
  startUpstreamNginx,
  wrk,
} from './lib.ts';

const { values: flags } = parseArgs({
  options: {
    rate: { type: 'string', default: '5000' },
    duration: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '32' },
    body: { type: 'string', default: 'small' },
    contenders: { type: 'string' },
    json: { type: 'string' },
  },
});
const rate = Number(flags.rate);
const duration = Number(flags.duration);
const warmup = Number(flags.warmup);
const rounds = Number(flags.rounds);
const connections = Number(flags.connections);
const body = listFlag(flags.body, Object.keys(BODIES) as BodyName[], '--body')[0];
const wanted = listFlag(flags.contenders, ALL_CONTENDERS, '--contenders');
if (!(rate > 0 && duration > 0 && rounds >= 1 && connections >= 1))
  throw new Error('bad --rate/--duration/--rounds');

interface FixedRateResult {
  sent: number;
  ok: number;
  errors: number;
  achievedRate: number;
  /** Latencies from the moment each request was issued, µs, ascending. */
  latUs: Float64Array;
  /** How late each request was issued against its schedule, µs, ascending. */
  lagUs: Float64Array;
}

/** Sends `rate` GET/s for `seconds`, open loop, through a Pool of at most `connections` connections. */
async function fixedRate(pool: Pool, reqPath: string, seconds: number): Promise<FixedRateResult> {
  const r = await fixedRateLoad(pool, { path: reqPath, rate, seconds });
  let ok = 0;
  for (const status of r.status) if (status === 200) ok++;
  return {
    sent: r.sent,
    ok,
    errors: r.sent - ok,
    achievedRate: r.achievedRate,
    latUs: sortedCopy(r.latUs),
    lagUs: sortedCopy(r.lagUs),
  };
}

requireTools(['nginx', 'wrk', 'taskset']);
raiseNofile(4096);
pinSelf(LOAD_CORE);
const tmp = makeTmpDir();
const machine = machineInfo();
log(
  `cpu ${machine.cpu}; node ${machine.node}; nginx ${machine.nginx}; rate ${rate}/s, ${connections} connections`,
);
const upstream = await startUpstreamNginx(tmp);

const contenders: { c: Contender; pool: Pool }[] = [];
const skipped: string[] = [];
for (const name of wanted) {
  try {
    const c = await startContender(name, tmp, upstream.url, '/small');
    const r = await httpGet(`${c.url}/${body}`);
    if (r.status !== 200 || r.bytes !== BODIES[body]) throw new Error(`GET /${body} answered ${r.status}`);
    // Warm the JIT of Node proxies at full speed once, as `run.ts` does.
    if (c.proc) await wrk(`${c.url}/${body}`, 64, 3, `${tmp}/wrk.log`);
    contenders.push({ c, pool: new Pool(c.url, { connections, pipelining: 1 }) });
    log(`${name} ready at ${c.url}`);
  } catch (err) {
    skipped.push(`${name} (${(err as Error).message.split('\n')[0]})`);
    log(`SKIP ${name}: ${(err as Error).message}`);
  }
}

interface Row {
  round: number;
  contender: string;
  achievedRate: number;
  errors: number;
  p50us: number;
  p90us: number;
  p99us: number;
  p999us: number;
  maxUs: number;
  lagP99us: number;
}
// Warm the generator itself (its own JIT and GC) before anything is measured.
if (contenders.length > 0) {
  const gen = new Pool(upstream.url, { connections, pipelining: 1 });
  await fixedRate(gen, `/${body}`, 2);
  await gen.close();
}
const rows: Row[] = [];
for (let round = 1; round <= rounds; round++) {
  const order = contenders.map((_, i) => contenders[(i + round - 1) % contenders.length]);
  for (const { c, pool } of order) {
    if (warmup > 0) await fixedRate(pool, `/${body}`, warmup);
    const r = await fixedRate(pool, `/${body}`, duration);
    const row: Row = {
      round,
      contender: c.name,
      achievedRate: r.achievedRate,
      errors: r.errors,
      p50us: percentile(r.latUs, 50),
      p90us: percentile(r.latUs, 90),
      p99us: percentile(r.latUs, 99),
      p999us: percentile(r.latUs, 99.9),
      maxUs: r.latUs[r.latUs.length - 1],
      lagP99us: percentile(r.lagUs, 99),
    };
    rows.push(row);
    log(
      `round ${round} ${c.name}: ${fmtInt(row.achievedRate)} req/s, p50 ${fmtUs(row.p50us)}, p99 ${fmtUs(row.p99us)}, ` +
        `p99.9 ${fmtUs(row.p999us)}, max ${fmtUs(row.maxUs)}, sender lag p99 ${fmtUs(row.lagP99us)}` +
        `${row.errors ? `, ${row.errors} errors` : ''}`,
    );
  }
}

const med = (name: string, k: 'p50us' | 'p99us' | 'p999us' | 'achievedRate' | 'lagP99us') =>
  median(rows.filter((r) => r.contender === name).map((r) => r[k]));
const hasDirect = contenders.some(({ c }) => c.name === 'direct');
const plus = (x: number) => (Number.isFinite(x) ? `${x >= 0 ? '+' : '−'}${fmtUs(Math.abs(x))}` : '–');
const table = mdTable(
  [
    'contender',
    'achieved req/s',
    'p50',
    'p99',
    'p99.9',
    'added p50',
    'added p99',
    'sender lag p99',
    'errors',
  ],
  contenders.map(({ c }) => {
    const [p50, p99] = [med(c.name, 'p50us'), med(c.name, 'p99us')];
    const errs = rows.filter((r) => r.contender === c.name).reduce((a, r) => a + r.errors, 0);
    return [
      c.name,
      fmtInt(med(c.name, 'achievedRate')),
      fmtUs(p50),
      fmtUs(p99),
      fmtUs(med(c.name, 'p999us')),
      hasDirect && c.proc ? plus(p50 - med('direct', 'p50us')) : '–',
      hasDirect && c.proc ? plus(p99 - med('direct', 'p99us')) : '–',
      fmtUs(med(c.name, 'lagP99us')),
      String(errs),
    ];
  }),
  ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
);
console.log(
  [
    '',
    `Machine: ${machine.cpu}; ${machine.kernel}; Node ${machine.node}; nginx ${machine.nginx}.`,
    `Fixed rate ${fmtInt(rate)} req/s of GET /${body} (${BODIES[body]} B), open loop over at most ${connections} ` +
      `connections (undici Pool on core ${LOAD_CORE} with the upstream nginx; proxy on core ${PROXY_CORE}); ` +
      `${rounds} interleaved round(s) of ${duration} s after ${warmup} s warm-up; latency from the moment each ` +
      `request is issued (sender lag = the generator's own lateness against the schedule); medians across ` +
      `rounds; added = proxy − direct.`,
    '',
    table,
    '',
    ...(skipped.length ? [`Skipped: ${skipped.join('; ')}`, ''] : []),
  ].join('\n'),
);
if (flags.json) {
  const settings = { rate, duration, warmup, rounds, connections, body };
  writeFileSync(flags.json, `${JSON.stringify({ machine, settings, skipped, rows }, null, 2)}\n`);
  log(`wrote ${flags.json}`);
}
for (const { c, pool } of contenders) {
  await pool.close();
  await c.stop();
}
await upstream.proc.stop();
