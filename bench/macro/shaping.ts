/**
 * What shaping costs (SPEC §13): sluice on a plain route against the same route with header edits
 * (3 set, one of them with ${request_id}, and 1 remove, on the request) and a regex rewrite; and the
 * access log as JSON lines against nginx's combined format (both to a file). Same nginx upstream as
 * run.ts, `wrk -t1 -c64` on the 100-byte body, one sluice process per variant, interleaved rounds.
 * See bench/README.md.
 *
 * `--profile` then runs `shaped`, `json` and `combined` once more each under `node --cpu-prof` and reports
 * the share of busy CPU spent in the shaping code (src/proxy/shape.ts and what it calls) and in making
 * the log line (src/observability/log-format.ts: JSON.stringify or the template): a figure that other
 * load on a shared machine disturbs far less than req/s.
 *
 *   npx node bench/macro/shaping.ts [--rounds 3] [--duration 3] [--warmup 1] [--initial-warmup 3]
 *        [--connections 64] [--profile] [--json FILE]
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
  startSluiceWith,
  startUpstreamNginx,
  treeTicks,
  type WrkResult,
  wrk,
} from './lib.ts';

const { values: flags } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '1' },
    'initial-warmup': { type: 'string', default: '3' },
    connections: { type: 'string', default: '64' },
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

const VARIANTS = ['plain', 'shaped', 'json', 'combined'] as const;
type Variant = (typeof VARIANTS)[number];
const LABEL: Record<Variant, string> = {
  plain: 'plain route (access_log: off)',
  shaped: 'headers (3 set, 1 remove) + regex rewrite (access_log: off)',
  json: 'plain route, access log json (file)',
  combined: 'plain route, access log combined (file)',
};
/** The path wrk asks for: the shaped route rewrites /api/v1/small to the upstream's /small. */
const PATH: Record<Variant, string> = {
  plain: '/small',
  shaped: '/api/v1/small',
  json: '/small',
  combined: '/small',
};

function yaml(v: Variant, port: number, adminPort: number, upstream: string, dir: string): string {
  const accessLog =
    v === 'json'
      ? `{ path: "${path.join(dir, 'access.log')}", format: json }`
      : v === 'combined'
        ? `{ path: "${path.join(dir, 'access.log')}", format: combined }`
        : 'off';
  const route =
    v === 'shaped'
      ? `  - name: all
    match: { path: / }
    upstream: up
    rewrite: { regex: "^/api/v1/(.*)$", to: "/$1" }
    headers:
      request:
        set: { X-Tenant: acme, X-Gateway: sluice, X-Trace: "req-\${request_id}" }
        remove: [X-Debug]
`
      : '  - { name: all, match: { path: / }, upstream: up }\n';
  return `listen: 127.0.0.1:${port}
admin: { listen: 127.0.0.1:${adminPort} }
watch: false
access_log: ${accessLog}
upstreams:
  up: { targets: [${upstream}] }
routes:
${route}`;
}

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

const sluices = {} as Record<Variant, SluiceProc>;
for (const v of VARIANTS) {
  sluices[v] = await startSluiceWith(
    tmp,
    `sluice-${v}`,
    (port, adminPort, dir) => yaml(v, port, adminPort, upstream.url, dir),
    { readyPath: PATH[v] },
  );
  const r = await httpGet(`${sluices[v].url}${PATH[v]}`);
  if (r.status !== 200 || r.bytes !== 100) throw new Error(`${v}: GET ${PATH[v]} answered ${r.status}`);
  log(`sluice ${v} (${LABEL[v]}) ready at ${sluices[v].url} (pid ${sluices[v].proc.pid})`);
}

const wrkLog = path.join(tmp, 'wrk.log');
const sent: Record<Variant, number> = { plain: 0, shaped: 0, json: 0, combined: 0 };
const load = async (v: Variant, seconds: number) => {
  const r = await wrk(`${sluices[v].url}${PATH[v]}`, connections, seconds, wrkLog);
  sent[v] += r.requests;
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
await sleep(500); // the access log is flushed at least every 200 ms
const lineCount = (v: Variant) =>
  Number(
    execFileSync('wc', ['-l', path.join(sluices[v].dir, 'access.log')], { encoding: 'utf8' }).split(' ')[0],
  );
const lines = { json: lineCount('json'), combined: lineCount('combined') };
const sample = execFileSync('tail', ['-n1', path.join(sluices.combined.dir, 'access.log')], {
  encoding: 'utf8',
}).trim();
for (const v of VARIANTS) await sluices[v].stop();

// ---- optional: where the CPU goes (V8 CPU profile per variant) -----------------------------------------

/** Busy CPU of a .cpuprofile (idle and "(program)" left out) and the part in frames matching `re` or below. */
function profileShare(file: string, re: RegExp): { busyS: number; inS: number } {
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
  const memo = new Map<number, boolean>();
  const inside = (id: number): boolean => {
    let v = memo.get(id);
    if (v === undefined) {
      const up = parent.get(id);
      v = re.test((byId.get(id) as Node).callFrame.url) || (up !== undefined && inside(up));
      memo.set(id, v);
    }
    return v;
  };
  let busy = 0;
  let hit = 0;
  for (let i = 0; i < prof.samples.length; i++) {
    const id = prof.samples[i];
    const fn = (byId.get(id) as Node).callFrame.functionName;
    if (fn === '(idle)' || fn === '(program)') continue;
    const dt = prof.timeDeltas[i + 1] ?? 0;
    busy += dt;
    if (inside(id)) hit += dt;
  }
  return { busyS: busy / 1e6, inS: hit / 1e6 };
}

const FRAMES: Partial<Record<Variant, { re: RegExp; what: string }>> = {
  shaped: { re: /\/src\/proxy\/shape\.ts$/, what: 'src/proxy/shape.ts (header edits, rewrite)' },
  json: { re: /\/src\/observability\/log-format\.ts$/, what: 'src/observability/log-format.ts (the line)' },
  combined: {
    re: /\/src\/observability\/log-format\.ts$/,
    what: 'src/observability/log-format.ts (the line)',
  },
};
const profiles: { variant: Variant; requests: number; busyS: number; inS: number; what: string }[] = [];
if (flags.profile) {
  for (const v of ['shaped', 'json', 'combined'] as const) {
    const dir = path.join(tmp, `prof-${v}`);
    const s = await startSluiceWith(
      tmp,
      `prof-${v}`,
      (port, adminPort) => yaml(v, port, adminPort, upstream.url, dir),
      { readyPath: PATH[v], env: { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${dir}` } },
    );
    let requests = 0;
    for (const secs of [initialWarmup, duration])
      if (secs > 0) requests += (await wrk(`${s.url}${PATH[v]}`, connections, secs, wrkLog)).requests;
    await s.stop(); // SIGTERM: sluice exits normally and Node writes the profile
    const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
    if (!file) throw new Error(`no CPU profile written for ${v} (${s.proc.exitInfo})`);
    const f = FRAMES[v] as { re: RegExp; what: string };
    const { busyS, inS } = profileShare(path.join(dir, file), f.re);
    profiles.push({ variant: v, requests, busyS, inS, what: f.what });
    log(
      `profile ${v}: ${fmtInt(requests)} requests, ${busyS.toFixed(2)} s busy, ${(inS * 1000).toFixed(0)} ms ` +
        `(${((inS / busyS) * 100).toFixed(2)} %) in ${f.what}, ${((inS * 1e6) / requests).toFixed(2)} µs/req`,
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
const by = (v: Variant) => summary.find((x) => x.variant === v) as (typeof summary)[number];
const pairCost = (a: Variant, b: Variant) =>
  Array.from({ length: rounds }, (_, i) => {
    const [ra, rb] = [a, b].map((v) => runs.find((r) => r.round === i + 1 && r.variant === v) as Run);
    return 1 - ra.rps / rb.rps;
  });
const pct = (x: number) => `${x >= 0 ? '' : '−'}${Math.abs(x * 100).toFixed(1)} %`;
const signed = (x: number) => `${x >= 0 ? '+' : '−'}${Math.abs(x * 100).toFixed(1)} %`;
const baseOf: Record<Variant, Variant | undefined> = {
  plain: undefined,
  shaped: 'plain',
  json: undefined,
  combined: 'json',
};
const table = mdTable(
  ['sluice', 'req/s (median)', 'req/s range', 'vs base', 'p50', 'p99', 'CPU µs/req', 'errors'],
  summary.map((s) => {
    const base = baseOf[s.variant];
    return [
      LABEL[s.variant],
      fmtInt(s.rps),
      rounds > 1 ? `${fmtInt(s.rpsMin)}–${fmtInt(s.rpsMax)}` : '–',
      base === undefined ? '–' : signed(s.rps / by(base).rps - 1),
      fmtUs(s.p50us),
      fmtUs(s.p99us),
      s.cpuUsPerReq.toFixed(1),
      String(s.errors),
    ];
  }),
  ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
);
const shapedCost = 1 - by('shaped').rps / by('plain').rps;
const shapedCpu = by('shaped').cpuUsPerReq - by('plain').cpuUsPerReq;
const combinedCost = 1 - by('combined').rps / by('json').rps;
const combinedCpu = by('combined').cpuUsPerReq - by('json').cpuUsPerReq;
console.log(
  [
    '',
    `Machine: ${machine.cpu}; ${machine.kernel}; Node ${machine.node}; nginx ${machine.nginx}; ${machine.wrk}.`,
    `Shaping cost: sluice (core ${PROXY_CORE}) in front of nginx (1 worker, core ${LOAD_CORE}), ` +
      `\`wrk -t1 -c${connections} --latency\` on a 100 B body (core ${LOAD_CORE}); ${rounds} interleaved ` +
      `round(s) of ${duration} s per variant after ${warmup} s warm-up (and ${initialWarmup} s once each); ` +
      `medians across rounds; CPU µs/req = sluice utime+stime ÷ requests; per-request metrics on in all.`,
    '',
    table,
    '',
    `Headers + rewrite: throughput ${pct(shapedCost)} (median of per-round pairs ` +
      `${pct(median(pairCost('shaped', 'plain')))}), CPU ${shapedCpu >= 0 ? '+' : '−'}${Math.abs(shapedCpu).toFixed(1)} µs/req. ` +
      `Target ≤ 10 % — ${shapedCost <= 0.1 ? 'met' : 'NOT met'}.`,
    `combined against json: throughput ${pct(combinedCost)} (per-round pairs ` +
      `${pct(median(pairCost('combined', 'json')))}), CPU ${combinedCpu >= 0 ? '+' : '−'}${Math.abs(combinedCpu).toFixed(1)} µs/req.`,
    `Check: json log ${fmtInt(lines.json)} lines for ${fmtInt(sent.json)} wrk requests, combined ` +
      `${fmtInt(lines.combined)} for ${fmtInt(sent.combined)} (+ readiness probes). A combined line: ${sample}`,
    '',
    ...(profiles.length
      ? [
          `CPU profile (\`--profile\`: one fresh sluice per variant under \`node --cpu-prof\`, ${initialWarmup} + ` +
            `${duration} s of wrk): busy CPU in the named code and whatever it calls.`,
          '',
          mdTable(
            ['sluice', 'requests', 'busy CPU', 'code', 'in it', 'share', 'per request'],
            profiles.map((p) => [
              LABEL[p.variant],
              fmtInt(p.requests),
              `${p.busyS.toFixed(2)} s`,
              p.what,
              `${(p.inS * 1000).toFixed(0)} ms`,
              `${((p.inS / p.busyS) * 100).toFixed(2)} %`,
              `${((p.inS * 1e6) / p.requests).toFixed(2)} µs`,
            ]),
            ['l', 'r', 'r', 'l', 'r', 'r', 'r'],
          ),
          '',
        ]
      : []),
    `Command: \`${['npx node bench/macro/shaping.ts', ...process.argv.slice(2)].join(' ')}\``,
    '',
  ].join('\n'),
);
if (flags.json) {
  const settings = { rounds, duration, warmup, initialWarmup, connections, clkTck: CLK_TCK };
  writeFileSync(
    flags.json,
    `${JSON.stringify({ machine, settings, summary, lines, sent, runs, profiles }, null, 2)}\n`,
  );
  log(`wrote ${flags.json}`);
}
