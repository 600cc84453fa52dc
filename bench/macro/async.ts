/**
 * Async offload (`async: { mode: auto }`) against a never-answering upstream. See bench/README.md.
 *
 * (a) 202 lateness: route `async: { mode: auto, after: 500ms }`; `--requests` GETs (500) at `--rate` (100/s),
 *     open loop; for each, (time from issue to the end of the 202) − 500 ms → p50/p99/max.
 * (b) Memory per running job: on a fresh sluice, `--jobs` (1,000) requests become jobs whose upstream calls
 *     keep running (the upstream holds them; `async.timeout` 10m); the client connections are closed once
 *     every 202 is in. VmRSS of sluice before and after → KiB per running job.
 * Queue mode (accepted/s, completed/s) is measured by `jobs.ts`, not here.
 *
 * The upstream is `contenders/hang-upstream.ts` (core 1, like this client); sluice on core 0 with
 * `store: sqlite:<temp dir>/jobs.db` (the temp dir is removed at the end).
 *
 *   npx node bench/macro/async.ts [--tests lateness,rss] [--requests 500] [--rate 100] [--jobs 1000]
 *        [--json FILE]
 */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import {
  fixedRateLoad,
  fmtInt,
  freePort,
  inspectEnv,
  inspectorGcAndMemory,
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
  treeRssKiB,
  waitReady,
} from './lib.ts';

const TESTS = ['lateness', 'rss'] as const;
const { values: flags } = parseArgs({
  options: {
    tests: { type: 'string' },
    requests: { type: 'string', default: '500' },
    rate: { type: 'string', default: '100' },
    jobs: { type: 'string', default: '1000' },
    'warmup-jobs': { type: 'string', default: '100' },
    json: { type: 'string' },
  },
});
const tests = listFlag(flags.tests, TESTS, '--tests');
const nRequests = Number(flags.requests);
const rate = Number(flags.rate);
const nJobs = Number(flags.jobs);
const warmupJobs = Number(flags['warmup-jobs']);
const AFTER_MS = 500;
if (!(nRequests > 0 && rate > 0 && nJobs > 0 && warmupJobs >= 0)) throw new Error('bad flags');

requireTools(['taskset', 'prlimit']);
raiseNofile(4 * Math.max(nJobs, nRequests) + 2000);
pinSelf(LOAD_CORE);
const tmp = makeTmpDir();
const machine = machineInfo();
const loadavg = () =>
  os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
log(`cpu ${machine.cpu}; node ${machine.node}; load average ${loadavg()}`);

const upPort = await freePort();
const upstreamUrl = `http://127.0.0.1:${upPort}`;
const upProc = spawnPinned(
  'hang-upstream',
  LOAD_CORE,
  NODE,
  [path.join(import.meta.dirname, 'contenders', 'hang-upstream.ts'), '--port', String(upPort)],
  { logFile: path.join(tmp, 'hang-upstream.log') },
);
await waitReady(`${upstreamUrl}/small`, upProc);
const upStats = async () =>
  (await (await fetch(`${upstreamUrl}/__stats`)).json()) as { pending: number; received: number };
const release = async () => (await fetch(`${upstreamUrl}/__release`)).json();

const yaml = (name: string) => (port: number, adminPort: number, dir: string) =>
  `listen: 127.0.0.1:${port}
admin: { listen: 127.0.0.1:${adminPort} }
access_log: off
shutdown_timeout: 1s
store: sqlite:${path.join(dir, `${name}.db`)}
upstreams:
  up: { targets: [${upstreamUrl}] }
routes:
  - name: slow
    match: { path: /hang }
    upstream: up
    async: { mode: auto, after: ${AFTER_MS}ms, timeout: 10m }
  - { name: rest, match: { path: / }, upstream: up }
`;

async function startSluice(name: string, env?: Record<string, string>): Promise<SluiceProc> {
  const s = await startSluiceWith(tmp, name, yaml(name), { readyPath: '/small', env });
  log(`${name}: sluice ready at ${s.url} (pid ${s.proc.pid})`);
  return s;
}

/** JIT warm-up: 2 s of GET /small at 1,000/s, then `warmupJobs` requests that become jobs at 100/s. */
async function warm(s: SluiceProc, pool: Pool): Promise<void> {
  await fixedRateLoad(pool, { path: '/small', rate: 1000, seconds: 2 });
  if (warmupJobs > 0) await fixedRateLoad(pool, { path: '/hang', rate: 100, seconds: warmupJobs / 100 });
  if (s.proc.exited) throw new Error(`sluice died: ${s.proc.exitInfo}\n${s.proc.logTail()}`);
}

const statusCounts = (st: Uint16Array) => {
  const out: Record<string, number> = {};
  for (const x of st) out[x || 'none'] = (out[x || 'none'] ?? 0) + 1;
  return out;
};

// ---- (a) lateness of the 202 ------------------------------------------------------------------------

interface Lateness {
  requests: number;
  rate: number;
  got202: number;
  statuses: Record<string, number>;
  p50ms: number;
  p99ms: number;
  maxMs: number;
  minMs: number;
  senderLagP99ms: number;
}

async function lateness(): Promise<Lateness> {
  const s = await startSluice('sluice-lateness');
  // Enough connections that no request waits for one (each is held ~500 ms).
  const pool = new Pool(s.url, { connections: Math.max(64, Math.ceil(rate * 2)), pipelining: 1 });
  try {
    await warm(s, pool);
    await sleep(1000);
    log(`lateness: ${nRequests} requests to /hang at ${rate}/s`);
    const r = await fixedRateLoad(pool, {
      path: '/hang',
      rate,
      seconds: nRequests / rate,
      timeoutMs: 30_000,
    });
    const late: number[] = [];
    for (let i = 0; i < r.sent; i++) if (r.status[i] === 202) late.push(r.latUs[i] / 1000 - AFTER_MS);
    const sorted = sortedCopy(late);
    const res: Lateness = {
      requests: r.sent,
      rate,
      got202: late.length,
      statuses: statusCounts(r.status),
      p50ms: percentile(sorted, 50),
      p99ms: percentile(sorted, 99),
      maxMs: sorted[sorted.length - 1] ?? Number.NaN,
      minMs: sorted[0] ?? Number.NaN,
      senderLagP99ms: percentile(sortedCopy(r.lagUs), 99) / 1000,
    };
    log(
      `lateness: ${res.got202} × 202 ${JSON.stringify(res.statuses)}; time to 202 − ${AFTER_MS} ms: p50 ` +
        `${res.p50ms.toFixed(2)} ms, p99 ${res.p99ms.toFixed(2)} ms, max ${res.maxMs.toFixed(2)} ms ` +
        `(min ${res.minMs.toFixed(2)} ms); sender lag p99 ${res.senderLagP99ms.toFixed(2)} ms`,
    );
    if (s.proc.exited) throw new Error(`sluice died: ${s.proc.exitInfo}\n${s.proc.logTail()}`);
    return res;
  } finally {
    await pool.close();
    await s.stop();
    await release();
  }
}

// ---- (b) RSS per running job ------------------------------------------------------------------------

interface Rss {
  jobs: number;
  got202: number;
  statuses: Record<string, number>;
  /** Upstream calls held by the upstream when RSS was read (warm-up jobs included). */
  upstreamHeld: number;
  baseKiB: number;
  withJobsKiB: number;
  kibPerJob: number;
  /** Live JS heap + external memory after a forced GC. */
  heapBaseKiB: number;
  heapWithJobsKiB: number;
  heapKibPerJob: number;
  sampleJobStatus: string;
}

/**
 * After two forced full GCs (through the inspector): VmRSS of sluice, and its live JS heap + external
 * memory (`heapUsed + external` of process.memoryUsage()), KiB.
 */
async function memory(s: SluiceProc, inspectPort: number): Promise<{ rssKiB: number; heapKiB: number }> {
  const m = await inspectorGcAndMemory(inspectPort);
  await sleep(500);
  return { rssKiB: treeRssKiB(s.proc.pid), heapKiB: (m.heapUsed + m.external) / 1024 };
}

async function rss(): Promise<Rss> {
  const inspectPort = await freePort();
  const s = await startSluice('sluice-rss', inspectEnv(inspectPort));
  let pool = new Pool(s.url, { connections: 64, pipelining: 1 });
  try {
    await warm(s, pool);
    await pool.close();
    await sleep(1500);
    const base = await memory(s, inspectPort);
    const held0 = (await upStats()).pending;
    // 500/s over up to 512 connections: each is held ~500 ms until its 202.
    pool = new Pool(s.url, { connections: 512, pipelining: 1 });
    log(
      `rss: baseline ${fmtInt(base.rssKiB)} KiB RSS, ${fmtInt(base.heapKiB)} KiB heap (${held0} warm-up jobs ` +
        `running); opening ${nJobs} jobs`,
    );
    const r = await fixedRateLoad(pool, {
      path: '/hang',
      rate: 500,
      seconds: nJobs / 500,
      timeoutMs: 30_000,
    });
    await pool.close(); // the client connections go away; the jobs must keep running
    const deadline = Date.now() + 15_000;
    let held = 0;
    while (Date.now() < deadline && (held = (await upStats()).pending) < held0 + nJobs) await sleep(200);
    await sleep(1000);
    const withJobs = await memory(s, inspectPort);
    held = (await upStats()).pending;
    // Sanity check: one more job, read back through the job resource.
    let sampleJobStatus = 'unknown';
    const res = await fetch(`${s.url}/hang`, { signal: AbortSignal.timeout(5000) });
    const loc = res.headers.get('location');
    await res.body?.cancel();
    if (res.status === 202 && loc) {
      const j = (await (await fetch(new URL(loc, s.url))).json()) as { status: string };
      sampleJobStatus = j.status;
    }
    const got202 = r.status.filter((x) => x === 202).length;
    const out: Rss = {
      jobs: nJobs,
      got202,
      statuses: statusCounts(r.status),
      upstreamHeld: held,
      baseKiB: base.rssKiB,
      withJobsKiB: withJobs.rssKiB,
      kibPerJob: (withJobs.rssKiB - base.rssKiB) / got202,
      heapBaseKiB: base.heapKiB,
      heapWithJobsKiB: withJobs.heapKiB,
      heapKibPerJob: (withJobs.heapKiB - base.heapKiB) / got202,
      sampleJobStatus,
    };
    log(
      `rss: ${got202} × 202 ${JSON.stringify(out.statuses)}, upstream holds ${held} calls; RSS ` +
        `${fmtInt(out.baseKiB)} → ${fmtInt(out.withJobsKiB)} KiB = ${out.kibPerJob.toFixed(1)} KiB per running job; ` +
        `heap ${fmtInt(out.heapBaseKiB)} → ${fmtInt(out.heapWithJobsKiB)} KiB = ${out.heapKibPerJob.toFixed(1)} KiB ` +
        `per job; a job reads '${sampleJobStatus}'`,
    );
    if (s.proc.exited) throw new Error(`sluice died: ${s.proc.exitInfo}\n${s.proc.logTail()}`);
    return out;
  } finally {
    await pool.close().catch(() => {});
    await s.stop();
    await release();
  }
}

// ---------------------------------------------------------------------------------------------------------

const late = tests.includes('lateness') ? await lateness() : undefined;
const mem = tests.includes('rss') ? await rss() : undefined;
await upProc.stop();
log(`load average ${loadavg()}`);

const ms = (x: number) => (Number.isFinite(x) ? `${x.toFixed(1)} ms` : '–');
const out = [
  '',
  `Machine: ${machine.cpu}; ${machine.kernel}; Node ${machine.node}. Sluice on core ${PROXY_CORE}; the ` +
    `never-answering upstream (contenders/hang-upstream.ts) and this client on core ${LOAD_CORE}. Route ` +
    `\`async: { mode: auto, after: ${AFTER_MS}ms, timeout: 10m }\`, \`store: sqlite:<temp dir>\` ` +
    `(synchronous=normal); warm-up: 2 s of GET /small at 1,000/s and ${warmupJobs} jobs.`,
  '',
];
if (late)
  out.push(
    `Time to the 202: ${late.requests} requests to /hang at ${fmtInt(late.rate)}/s (open loop); lateness = ` +
      `time from issue to the end of the 202 − ${AFTER_MS} ms.`,
    '',
    mdTable(
      ['requests', '202s', 'other', 'p50 lateness', 'p99 lateness', 'max lateness', 'sender lag p99'],
      [
        [
          fmtInt(late.requests),
          fmtInt(late.got202),
          String(late.requests - late.got202),
          ms(late.p50ms),
          ms(late.p99ms),
          ms(late.maxMs),
          ms(late.senderLagP99ms),
        ],
      ],
      ['r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
    '',
  );
if (mem)
  out.push(
    `Memory per running job: ${fmtInt(mem.jobs)} requests became jobs (at 500/s) whose upstream calls keep ` +
      `running; client connections closed before measuring; both readings after two forced full GCs (through ` +
      `the inspector); heap = V8 heapUsed + external.`,
    '',
    mdTable(
      [
        'jobs (202)',
        'upstream calls held',
        'RSS baseline',
        'RSS with jobs',
        'RSS KiB / job',
        'heap baseline',
        'heap with jobs',
        'heap KiB / job',
      ],
      [
        [
          fmtInt(mem.got202),
          fmtInt(mem.upstreamHeld),
          `${fmtInt(mem.baseKiB)} KiB`,
          `${fmtInt(mem.withJobsKiB)} KiB`,
          mem.kibPerJob.toFixed(1),
          `${fmtInt(mem.heapBaseKiB)} KiB`,
          `${fmtInt(mem.heapWithJobsKiB)} KiB`,
          mem.heapKibPerJob.toFixed(1),
        ],
      ],
      ['r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
    '',
  );
out.push(
  'Queue mode (accepted/s, completed/s): `npx node bench/macro/jobs.ts`, figures in docs/async.md (Throughput).',
  `Command: \`${['npx node bench/macro/async.ts', ...process.argv.slice(2)].join(' ')}\``,
  '',
);
console.log(out.join('\n'));
if (flags.json) {
  const settings = { nRequests, rate, nJobs, warmupJobs, afterMs: AFTER_MS };
  writeFileSync(
    flags.json,
    `${JSON.stringify({ machine, settings, lateness: late ?? null, rss: mem ?? null }, null, 2)}\n`,
  );
  log(`wrote ${flags.json}`);
}
