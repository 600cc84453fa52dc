/**
 * Instructions per proxied request, counted by valgrind's callgrind: a figure that does not move with the
 * machine's load, unlike req/s on a shared 2-core box (where perf has no hardware counters). Each Node
 * contender runs under `valgrind --tool=callgrind --instr-atstart=no`; after a warm-up (so V8 has
 * optimised the hot path) instrumentation is switched on for exactly N requests from h2load (HTTP/1.1,
 * keep-alive), then dumped; then once more for as long again without requests, and that idle count (what
 * the contender's timers cost) is taken out. Instructions of every thread of the contender count (V8's GC and compiler
 * threads too); the upstream (nginx) and the load generator are not counted.
 *
 *   npx node bench/macro/instructions.ts [--contenders bare,fastify,sluice] [--bodies small,16k]
 *       [--requests 4000] [--warmup 10000] [--connections 32] [--sluice-access-log off|FILE] [--repeat 1]
 *       [--out DIR]   (keeps the callgrind dumps: callgrind_annotate DIR/cg-sluice-small-0/cg.PID)
 *       [--protocol h1|h1-tls|h2]   (h1-tls and h2: the contender terminates TLS, bare and sluice only;
 *                                    h2 runs --connections/4 connections of 4 concurrent streams each)
 *       [--same-node-flags]   (bare and fastify run with Sluice's V8 flags too, SLUICE_NODE_FLAGS: its
 *                              small young generation costs scavenges the others, on V8's default, skip)
 *
 * The ratio that matters for throughput is bare/sluice (instructions are close to CPU time when the
 * work is the same kind: V8-compiled JS and the same libuv syscalls).
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  BODIES,
  type BodyName,
  type ContenderName,
  fmtInt,
  listFlag,
  log,
  makeBenchCert,
  makeTmpDir,
  mdTable,
  requireTools,
  runPinned,
  SLUICE_NODE_FLAGS,
  sleep,
  startContender,
  startUpstreamNginx,
} from './lib.ts';

const NODE_CONTENDERS = ['bare', 'fastify', 'sluice'] as const;
const { values: flags } = parseArgs({
  options: {
    contenders: { type: 'string' },
    bodies: { type: 'string' },
    requests: { type: 'string', default: '4000' },
    warmup: { type: 'string', default: '10000' },
    connections: { type: 'string', default: '32' },
    repeat: { type: 'string', default: '1' },
    'sluice-access-log': { type: 'string', default: 'off' },
    /** Keep the callgrind dumps here (for callgrind_annotate); by default they go with the temp dir. */
    out: { type: 'string' },
    'same-node-flags': { type: 'boolean', default: false },
    protocol: { type: 'string', default: 'h1' },
  },
});
const contenders = listFlag(flags.contenders, NODE_CONTENDERS, 'contender') as ContenderName[];
const bodies = listFlag(flags.bodies, Object.keys(BODIES) as BodyName[], 'body');
const N = Number(flags.requests);
const WARMUP = Number(flags.warmup);
const C = String(flags.connections);
requireTools(['valgrind', 'callgrind_control', 'h2load', 'taskset']);

const protocol = flags.protocol as 'h1' | 'h1-tls' | 'h2';
if (!['h1', 'h1-tls', 'h2'].includes(protocol))
  throw new Error(`--protocol: h1, h1-tls or h2, not ${protocol}`);
const tmp = makeTmpDir();
const upstream = await startUpstreamNginx(tmp);
const cert = protocol === 'h1' ? undefined : makeBenchCert(tmp);
/** h2load's connection options for the protocol: 32 concurrent requests by default either way. */
const loadArgs =
  protocol === 'h2'
    ? ['-c', String(Math.max(1, Math.floor(Number(C) / 4))), '-m', '4']
    : ['--h1', '-c', C, '-m', '1'];

async function h2load(url: string, n: number, file: string): Promise<void> {
  const out = await runPinned('h2load', 1, 'h2load', ['-n', String(n), ...loadArgs, url], file);
  const ok = /status codes: (\d+) 2xx/.exec(out);
  if (!ok || Number(ok[1]) !== n)
    throw new Error(`h2load: not all ${n} requests got a 2xx:\n${out.slice(-800)}`);
}

/** The total of the `part`-th dump (1-based) of the one process in `dir`. */
function dumpTotal(dir: string, part: number): { all: number; main: number } {
  let all = 0;
  let main = 0;
  for (const f of readdirSync(dir)) {
    const t = new RegExp(`^cg\\.\\d+\\.${part}-(\\d+)$`).exec(f);
    if (!t) continue;
    const m = /^(?:summary|totals): (\d+)/m.exec(readFileSync(path.join(dir, f), 'utf8'));
    const n = m ? Number(m[1]) : 0;
    all += n;
    if (t[1] === '01') main = n;
  }
  if (main === 0) throw new Error(`no callgrind dump ${part} in ${dir}`);
  return { all, main };
}

/**
 * Runs one contender under callgrind: the instructions it executed while serving N requests, and
 * what it executes in the same time without any (its timers).
 */
async function count(
  name: ContenderName,
  body: BodyName,
  run: number,
): Promise<{ all: number; main: number }> {
  const dir = path.join(flags.out ?? tmp, `cg-${name}-${body}-${run}`);
  execFileSync('mkdir', ['-p', dir]);
  const wrapper = [
    'valgrind',
    '--tool=callgrind',
    '--instr-atstart=no',
    '--trace-children=no',
    '--separate-threads=yes',
    `--callgrind-out-file=${dir}/cg.%p`,
  ];
  const c = await startContender(name, tmp, upstream.url, `/${body}`, {
    wrapper,
    readyTimeoutMs: 120_000,
    sluiceAccessLog: flags['sluice-access-log'],
    nodeFlags: flags['same-node-flags'] ? SLUICE_NODE_FLAGS : [],
    tls: cert,
  });
  try {
    const pid = String(c.proc!.pid);
    await h2load(`${c.url}/${body}`, WARMUP, path.join(dir, 'warmup.log'));
    execFileSync('callgrind_control', ['--instr=on', pid]);
    const t0 = performance.now();
    await h2load(`${c.url}/${body}`, N, path.join(dir, 'load.log'));
    const loadMs = performance.now() - t0;
    execFileSync('callgrind_control', ['--dump=load', pid]);
    // The same length of time without requests: what timers cost (metrics windows, alerts, the log's
    // flush). Under valgrind requests are ~50× rarer than on the bare machine and timers are not, so
    // their share is taken out to leave what a request itself costs.
    const t1 = performance.now();
    await sleep(loadMs);
    const idleMs = performance.now() - t1;
    execFileSync('callgrind_control', ['--dump=idle', pid]);
    const load = dumpTotal(dir, 1);
    const idle = dumpTotal(dir, 2);
    const k = loadMs / idleMs;
    return { all: load.all - idle.all * k, main: load.main - idle.main * k };
  } finally {
    await c.stop();
  }
}

const rows: string[][] = [];
const perReq = new Map<string, number[]>();
const allThreads = new Map<string, number[]>();
for (let run = 0; run < Number(flags.repeat); run++)
  for (const body of bodies)
    for (const name of contenders) {
      const { all, main } = await count(name, body, run);
      const key = `${body} ${name}`;
      perReq.set(key, [...(perReq.get(key) ?? []), main / N]);
      allThreads.set(key, [...(allThreads.get(key) ?? []), all / N]);
      log(
        `${key}: ${fmtInt(main / N)} instructions/request on the main thread, ${fmtInt(all / N)} in all (run ${run + 1})`,
      );
    }
for (const body of bodies) {
  const bare = Math.min(...(perReq.get(`${body} bare`) ?? [Number.NaN]));
  for (const name of contenders) {
    const xs = perReq.get(`${body} ${name}`)!;
    const best = Math.min(...xs);
    rows.push([
      body,
      name,
      fmtInt(best),
      xs.length > 1 ? `${fmtInt(Math.min(...xs))}–${fmtInt(Math.max(...xs))}` : '–',
      fmtInt(Math.min(...allThreads.get(`${body} ${name}`)!)),
      Number.isNaN(bare) ? '–' : `${(bare / best).toFixed(2)}×`,
    ]);
  }
}
console.log(
  `\nh2load ${loadArgs.join(' ')} (${protocol}), ${fmtInt(N)} counted requests after ${fmtInt(WARMUP)} warm-up; sluice access log: ${flags['sluice-access-log']}; V8 flags: sluice ${SLUICE_NODE_FLAGS.join(' ') || '(none)'}, bare and fastify ${flags['same-node-flags'] ? 'the same' : '(none)'}\n`,
);
console.log(
  mdTable(
    ['body', 'contender', 'main thread instr/req', 'range', 'all threads', 'bare ÷ this (main thread)'],
    rows,
    ['l', 'l', 'r', 'r', 'r', 'r'],
  ),
);
await upstream.proc.stop();
