/**
 * Jobs through the real gateway (`sluice start`, core 0) on SQLite and on Redis (SPEC §10), one fresh
 * gateway per store, the demo upstream and every client on core 1 (the machine's Redis is not pinned: it
 * takes whichever core is free, so Redis figures include its own CPU). Per store:
 *
 *   1. memory per 10,000 stored results: after a warm-up of 1,000 jobs, the gateway's RSS and heap (after
 *      two full GCs through the inspector), Redis's
 *      `INFO memory` used_memory, the `MEMORY USAGE` sum of this run's keys (Redis) or the database file
 *      (SQLite) before and after `--results` (10,000) queue jobs whose small results (`ok\n` + headers,
 *      a 100-byte request body each) are all stored;
 *   2. queue mode: `wrk -t1 -cC -dDs` POSTing a 100-byte body to a `mode: queue` route: accepted/s (every
 *      answer a 202, job committed), then completed/s = jobs delivered and stored ÷ the time from the
 *      start of wrk until none is queued or running (the gateway's `jobs.workers` deliver meanwhile);
 *      Redis: its CPU time (`INFO cpu`) and script calls (`INFO commandstats`, evalsha) over that
 *      phase, per job (server-wide counters: other clients of a shared server add to them);
 *   3. auto-offload latency: `--auto` (300) requests, `--concurrency` (4) at a time, to an
 *      `async: { mode: auto, after: 50ms }` route whose upstream answers after 100 ms: the time to the
 *      202 beyond the 50 ms, and the time until a long poll (`?wait=`) returns the job completed, beyond
 *      the upstream's 100 ms.
 *
 * Redis: `redis://127.0.0.1:6379/9` (or `--redis URL`), under a key prefix of this run, deleted at the end
 * (the database is never flushed: the server is shared).
 *
 *   npx node bench/macro/jobs-stores.ts [--stores sqlite,redis] [--duration 5] [--connections 32]
 *        [--results 10000] [--auto 300] [--concurrency 4] [--redis URL]
 */
import { randomBytes } from 'node:crypto';
import { statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { Pool } from 'undici';
import type { JobCounts } from '../../src/jobs/job-store.ts';
import { openJobStore } from '../../src/jobs/open-job-store.ts';
import {
  fmtInt,
  freePort,
  inspectEnv,
  inspectorGcAndMemory,
  LOAD_CORE,
  log,
  machineInfo,
  makeTmpDir,
  mdTable,
  NODE,
  parseWrk,
  percentile,
  pinSelf,
  requireTools,
  runPinned,
  SLUICE_MAIN,
  sleep,
  sortedCopy,
  spawnPinned,
  startSluiceWith,
  WRK,
  waitReady,
} from './lib.ts';

const { values: flags } = parseArgs({
  options: {
    stores: { type: 'string', default: 'sqlite,redis' },
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '32' },
    results: { type: 'string', default: '10000' },
    auto: { type: 'string', default: '300' },
    concurrency: { type: 'string', default: '4' },
    redis: { type: 'string', default: 'redis://127.0.0.1:6379/9' },
  },
});
const stores = (flags.stores ?? '').split(',').filter(Boolean) as ('sqlite' | 'redis')[];
for (const s of stores) if (s !== 'sqlite' && s !== 'redis') throw new Error(`--stores: unknown ${s}`);
const BODY = 'x'.repeat(100);
const AFTER_MS = 50;
const UPSTREAM_MS = 100;

requireTools(['taskset', WRK]);
pinSelf(LOAD_CORE);
const tmp = makeTmpDir();
const upPort = await freePort();
const upstreamUrl = `http://127.0.0.1:${upPort}`;
const upstream = spawnPinned(
  'demo-upstream',
  LOAD_CORE,
  NODE,
  [SLUICE_MAIN, 'demo-upstream', '--port', String(upPort)],
  { logFile: path.join(tmp, 'upstream.log') },
);
await waitReady(`${upstreamUrl}/fast`, upstream);
const lua = path.join(tmp, 'post.lua');
writeFileSync(lua, `wrk.method = "POST"\nwrk.body = "${BODY}"\nwrk.headers["Content-Type"] = "text/plain"\n`);

const admin = new Redis(flags.redis!, { lazyConnect: true, maxRetriesPerRequest: 1 });
const prefixes: string[] = [];

async function keysUnder(prefix: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    out.push(...keys);
  } while (cursor !== '0');
  return out;
}

async function cleanRedis(): Promise<void> {
  if (admin.status !== 'ready') return;
  for (const p of prefixes) {
    const keys = await keysUnder(p);
    for (let i = 0; i < keys.length; i += 500) await admin.del(...keys.slice(i, i + 500));
  }
}

/** Bytes Redis reports for this run's keys (MEMORY USAGE of each, SAMPLES 0 = exact for hashes/zsets). */
async function prefixBytes(prefix: string): Promise<number> {
  let sum = 0;
  const keys = await keysUnder(prefix);
  for (let i = 0; i < keys.length; i += 200) {
    const p = admin.pipeline();
    for (const k of keys.slice(i, i + 200)) p.memory('USAGE', k, 'SAMPLES', '0');
    for (const [, v] of (await p.exec()) ?? []) sum += Number(v ?? 0);
  }
  return sum;
}

/** Redis CPU seconds (user + sys) and evalsha calls / µs so far (server-wide). */
async function redisWork(): Promise<{ cpu: number; calls: number; usec: number }> {
  const cpu = await admin.info('cpu');
  const stats = await admin.info('commandstats');
  const num = (re: RegExp, text: string) => Number(re.exec(text)?.[1] ?? 0);
  return {
    cpu: num(/used_cpu_user:([\d.]+)/, cpu) + num(/used_cpu_sys:([\d.]+)/, cpu),
    calls: num(/cmdstat_evalsha:calls=(\d+)/, stats),
    usec: num(/cmdstat_evalsha:calls=\d+,usec=(\d+)/, stats),
  };
}

async function usedMemory(): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1] ?? 0);
}

function totals(c: JobCounts): Record<string, number> {
  const t: Record<string, number> = {};
  for (const perRoute of Object.values(c))
    for (const [s, n] of Object.entries(perRoute)) t[s] = (t[s] ?? 0) + n;
  return t;
}

/** Sends `n` queue jobs, `conc` at a time; returns how many got a 202. */
async function postJobs(pool: Pool, n: number, conc: number): Promise<number> {
  let next = 0;
  let ok = 0;
  await Promise.all(
    Array.from({ length: conc }, async () => {
      while (next < n) {
        next++;
        const r = await pool.request({
          path: '/fast',
          method: 'POST',
          body: BODY,
          headers: { 'content-type': 'text/plain' },
        });
        await r.body.dump();
        if (r.statusCode === 202) ok++;
      }
    }),
  );
  return ok;
}

const rows = {
  queue: [] as string[][],
  auto: [] as string[][],
  memory: [] as string[][],
  redis: [] as string[][],
};

try {
  if (stores.includes('redis')) await admin.connect();
  for (const kind of stores) {
    const prefix = `sluice-bench-${randomBytes(4).toString('hex')}:`;
    if (kind === 'redis') prefixes.push(prefix);
    const inspectPort = await freePort();
    // RSS and heap after two full GCs (through the inspector): garbage not yet collected is not counted.
    const mem = async () => {
      const m = await inspectorGcAndMemory(inspectPort);
      return { rss: m.rss, heap: m.heapUsed };
    };
    const storeUrl = (dir: string) =>
      kind === 'redis' ? `${flags.redis}?prefix=${prefix}` : `sqlite:${path.join(dir, 'jobs.db')}`;
    const s = await startSluiceWith(
      tmp,
      `sluice-${kind}`,
      (port, adminPort, dir) => `listen: 127.0.0.1:${port}
admin: { listen: 127.0.0.1:${adminPort} }
access_log: off
shutdown_timeout: 2s
store: "${storeUrl(dir)}"
jobs: { workers: 8 }
upstreams:
  up: { targets: [${upstreamUrl}] }
routes:
  - { name: q, match: { path: /fast }, upstream: up, async: { mode: queue, keep: 1h } }
  - { name: auto, match: { path: /slow }, upstream: up, async: { mode: auto, after: ${AFTER_MS}ms } }
  - { name: plain, match: { path: /healthz }, upstream: up }
`,
      { readyPath: '/healthz', env: inspectEnv(inspectPort) },
    );
    log(`${kind}: sluice ready at ${s.url} (pid ${s.proc.pid})`);
    // The bench's own view of the store, for counts (the gateway refreshes its own only every 5 s).
    const view = openJobStore(storeUrl(s.dir), { heartbeatMs: 0 });
    const pool = new Pool(s.url, { connections: 64 });
    const drained = async (limitMs: number) => {
      const end = performance.now() + limitMs;
      for (;;) {
        const t = totals(await view.counts());
        if ((t.queued ?? 0) + (t.running ?? 0) === 0 || performance.now() > end) return t;
        await sleep(50);
      }
    };
    try {
      // 1. memory per 10,000 stored results
      await postJobs(pool, 1_000, 32);
      await drained(60_000);
      await sleep(1_000);
      const nResults = Number(flags.results);
      const mem0 = await mem();
      const used0 = kind === 'redis' ? await usedMemory() : 0;
      const keys0 = kind === 'redis' ? await prefixBytes(prefix) : statSync(path.join(s.dir, 'jobs.db')).size;
      const ok = await postJobs(pool, nResults, 32);
      const t = await drained(120_000);
      await sleep(1_000);
      const mem1 = await mem();
      const used1 = kind === 'redis' ? await usedMemory() : 0;
      const keys1 = kind === 'redis' ? await prefixBytes(prefix) : statSync(path.join(s.dir, 'jobs.db')).size;
      log(`${kind}: ${ok} of ${nResults} accepted; completed ${t.completed}, failed ${t.failed ?? 0}`);
      const per10k = (bytes: number) => `${(((bytes / ok) * 10_000) / 1024 / 1024).toFixed(1)} MiB`;
      rows.memory.push([
        kind,
        per10k(mem1.rss - mem0.rss),
        per10k(mem1.heap - mem0.heap),
        kind === 'redis' ? per10k(used1 - used0) : '–',
        kind === 'redis' ? `${per10k(keys1 - keys0)} (keys)` : `${per10k(keys1 - keys0)} (file)`,
        `${fmtInt((keys1 - keys0) / ok)} B`,
      ]);

      // 2. queue mode: accepted/s, completed/s
      const before = totals(await view.counts());
      const work0 = kind === 'redis' ? await redisWork() : undefined;
      const t0 = performance.now();
      const out = await runPinned(
        'wrk',
        LOAD_CORE,
        WRK,
        ['-t1', `-c${flags.connections}`, `-d${flags.duration}s`, '--latency', '-s', lua, `${s.url}/fast`],
        path.join(tmp, `wrk-${kind}.log`),
      );
      const w = parseWrk(out);
      const after = await drained(300_000);
      const seconds = (performance.now() - t0) / 1000;
      const completed = (after.completed ?? 0) - (before.completed ?? 0);
      if (work0) {
        const work1 = await redisWork();
        const calls = work1.calls - work0.calls;
        rows.redis.push([
          fmtInt(completed),
          `${(((work1.cpu - work0.cpu) * 1e6) / completed).toFixed(0)} µs`,
          (calls / completed).toFixed(2),
          `${((work1.usec - work0.usec) / calls).toFixed(1)} µs`,
          `${((work1.usec - work0.usec) / completed).toFixed(0)} µs`,
        ]);
      }
      log(
        `${kind}: accepted ${w.requests} (${w.non2xx} non-2xx) in ${w.seconds.toFixed(1)} s; completed ${completed} in ${seconds.toFixed(1)} s`,
      );
      rows.queue.push([
        kind,
        fmtInt(w.rps),
        `${(w.p50us / 1000).toFixed(2)} / ${(w.p99us / 1000).toFixed(2)}`,
        String(w.non2xx),
        fmtInt(completed / seconds),
        String((after.failed ?? 0) - (before.failed ?? 0)),
      ]);

      // 3. auto-offload latency
      const to202: number[] = [];
      const toFinal: number[] = [];
      // Answers other than a 202 by status ('200': the upstream answered before `after`, e.g. when the
      // gateway's loop was late; it is no error), and jobs that did not end completed.
      const other: Record<string, number> = {};
      const count = (k: string) => {
        other[k] = (other[k] ?? 0) + 1;
      };
      let next = 0;
      const nAuto = Number(flags.auto);
      await Promise.all(
        Array.from({ length: Number(flags.concurrency) }, async () => {
          while (next < nAuto) {
            next++;
            const a = performance.now();
            const r = await pool.request({ path: `/slow?ms=${UPSTREAM_MS}`, method: 'GET' });
            const location = String(r.headers.location ?? '');
            await r.body.dump();
            const b = performance.now();
            if (r.statusCode !== 202) {
              count(String(r.statusCode));
              continue;
            }
            const p = await pool.request({ path: `${location}?wait=10s`, method: 'GET' });
            const job = (await p.body.json()) as { status: string };
            const c = performance.now();
            if (job.status !== 'completed') count(`job ${job.status}`);
            to202.push(b - a - AFTER_MS);
            toFinal.push(c - a - UPSTREAM_MS);
          }
        }),
      );
      const s202 = sortedCopy(to202);
      const sFinal = sortedCopy(toFinal);
      const ms = (x: number) => x.toFixed(1);
      rows.auto.push([
        kind,
        `${ms(percentile(s202, 50))} / ${ms(percentile(s202, 99))}`,
        `${ms(percentile(sFinal, 50))} / ${ms(percentile(sFinal, 99))}`,
        String(to202.length),
        Object.entries(other)
          .map(([k, n]) => `${n}× ${k}`)
          .join(', ') || '–',
      ]);
      log(`${kind}: auto ${to202.length} jobs; other answers ${JSON.stringify(other)}`);
    } finally {
      await pool.close();
      await view.close();
      await s.stop();
    }
  }
} finally {
  await upstream.stop();
  await cleanRedis().catch(() => {});
  admin.disconnect();
}

const m = machineInfo();
const out = process.stdout;
out.write(`\nJob stores through the gateway; ${Object.values(m).join(', ')}\n`);
out.write(
  `\nQueue mode, ${BODY.length}-byte POST bodies, jobs.workers 8, wrk -t1 -c${flags.connections} -d${flags.duration}s:\n\n`,
);
out.write(
  mdTable(
    ['store', 'accepted/s (202)', 'accept p50 / p99 ms', 'non-202', 'completed/s', 'failed'],
    rows.queue,
    ['l', 'r', 'r', 'r', 'r', 'r'],
  ),
);
out.write(
  `\n\nAuto offload (after ${AFTER_MS}ms, upstream ${UPSTREAM_MS} ms), ${flags.auto} requests ${flags.concurrency} at a time, ms beyond those:\n\n`,
);
out.write(
  mdTable(['store', '202 p50 / p99', 'completed pollable p50 / p99', '202s', 'other answers'], rows.auto, [
    'l',
    'r',
    'r',
    'r',
    'l',
  ]),
);
out.write(`\n\nMemory per 10,000 stored results (${flags.results} small queue results):\n\n`);
out.write(
  mdTable(
    ['store', 'gateway RSS', 'gateway heap', 'Redis used_memory', 'store bytes', 'store bytes per job'],
    rows.memory,
    ['l', 'r', 'r', 'r', 'r', 'r'],
  ),
);
if (rows.redis.length > 0) {
  out.write('\n\nRedis work per queue job over the queue phase (server-wide counters):\n\n');
  out.write(
    mdTable(
      ['jobs completed', 'Redis CPU / job', 'scripts (evalsha) / job', 'µs / script', 'script µs / job'],
      rows.redis,
      ['r', 'r', 'r', 'r', 'r'],
    ),
  );
}
out.write('\n');
