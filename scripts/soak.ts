/**
 * Soak (issue 14, docs/reliability.md#soak): a real `sluice start` child in front of a real
 * `sluice demo-upstream` child, driven open-loop at a fixed rate with a mix of fast, slow, timing-out,
 * hanging, resetting, client-aborted and async (202 + poll) requests for a fixed time. Every few
 * seconds the gateway's RSS (/proc VmRSS), open fds (/proc/PID/fd) and event-loop delay (its own
 * prom-client `sluice_nodejs_eventloop_lag_*`, reset at each scrape) are sampled. At the end:
 *
 * - the least-squares slope of RSS and of event-loop delay p99 per 10 minutes, after the warm-up;
 * - the fd count before the load and after it (idle, client connections closed);
 * - that every request sent (and every job poll) has exactly one access-log line, under its own
 *   `X-Request-Id`, and every 202's job reached a final state (polled, and its one `job_*` line).
 *
 *   node scripts/soak.ts [--minutes 30] [--rate 200] [--sample 5] [--warmup-minutes 2] [--out soak.json]
 *
 * Exits 1 when a request is unaccounted for, a job did not end, or fds leaked; the slopes are
 * reported, not judged (the machine is shared). This is a script, not part of `npm test`.
 */
import { createReadStream, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import {
  freePort,
  log,
  makeTmpDir,
  NODE,
  type Proc,
  ROOT,
  raiseNofile,
  SLUICE_MAIN,
  SLUICE_NODE_FLAGS,
  sleep,
  spawnPinned,
  startDemoUpstreamProcess,
  waitReady,
} from '../bench/macro/lib.ts';

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string', default: '30' },
    rate: { type: 'string', default: '200' },
    sample: { type: 'string', default: '5' },
    'warmup-minutes': { type: 'string' },
    out: { type: 'string', default: 'soak.json' },
  },
});
const MINUTES = Number(args.minutes);
const RATE = Number(args.rate);
const SAMPLE_S = Number(args.sample);
const WARMUP_S =
  args['warmup-minutes'] !== undefined ? Number(args['warmup-minutes']) * 60 : Math.min(120, MINUTES * 6);

/** The mix: kind, share, path, and what the client should get. */
interface Kind {
  name: string;
  share: number;
  path: () => string;
  /** Abort the request on the client side after this long. */
  abortMs?: number;
}
const rnd = (lo: number, hi: number) => Math.round(lo + Math.random() * (hi - lo));
const MIX: Kind[] = [
  { name: 'fast', share: 50, path: () => '/fast' },
  { name: 'slow', share: 14, path: () => `/slow?ms=${rnd(20, 800)}` },
  { name: 'slow-timeout', share: 3, path: () => '/slow?ms=2500' }, // route total 2s: 504 total
  { name: 'hang', share: 5, path: () => '/hang' }, // 504 ttfb at 1.5s
  { name: 'reset', share: 5, path: () => '/reset' }, // 502
  { name: 'status', share: 4, path: () => `/status/${[404, 500, 503][rnd(0, 2)]}` },
  { name: 'size', share: 4, path: () => '/size/64k' },
  { name: 'drip', share: 3, path: () => '/drip?chunks=5&every=100' },
  { name: 'client-abort', share: 2, path: () => '/slow?ms=1000', abortMs: 200 },
  { name: 'async', share: 9, path: () => `/job?ms=${rnd(200, 3000)}` }, // after 1s: 200 or 202 + poll
  { name: 'async-timeout', share: 1, path: () => '/job?ms=8000' }, // async.timeout 4s: job failed
];
const SHARES = MIX.reduce((s, k) => s + k.share, 0);
function pick(): Kind {
  let r = Math.random() * SHARES;
  for (const k of MIX) if ((r -= k.share) < 0) return k;
  return MIX[0];
}

function config(port: number, adminPort: number, upstream: string, dir: string): string {
  return `listen: 127.0.0.1:${port}
admin: { listen: 127.0.0.1:${adminPort} }
access_log: ${path.join(dir, 'access.log')}
store: sqlite:${path.join(dir, 'sluice.db')}
shutdown_timeout: 10s
watch: false
upstreams:
  demo: { targets: [${upstream}] }
routes:
  - { name: hang, match: { path: /hang }, upstream: demo, timeouts: { ttfb: 1500ms, total: 2s } }
  - { name: slow, match: { path: /slow }, upstream: demo, timeouts: { ttfb: 2s, total: 2s } }
  - name: jobs
    match: { path: /job }
    upstream: demo
    rewrite: { prefix: /slow }
    timeouts: { ttfb: 10s, total: 10s }
    async: { mode: auto, after: 1s, timeout: 4s, keep: 10m }
  - { name: stream, match: { path: /drip }, upstream: demo, timeouts: { read: 2s, total: 0s } }
  - { name: rest, match: { path: / }, upstream: demo, timeouts: { total: 5s } }
`;
}

interface Sample {
  t_s: number;
  rss_kib: number;
  fds: number;
  eld_p99_ms: number;
  eld_max_ms: number;
  eld_mean_ms: number;
  inflight: number;
  sent: number;
}

const procStatus = (pid: number, key: string) =>
  Number(new RegExp(`${key}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
const fdCount = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

async function metrics(adminUrl: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^(sluice_nodejs_eventloop_lag_\w+) ([\d.e+-]+)$/gm))
    out[m[1]] = Number(m[2]);
  return out;
}

const errorLabel = (err: unknown) => {
  const e = err as { code?: unknown; name?: string };
  return `error:${typeof e.code === 'string' ? e.code : e.name}`;
};

/** Least-squares slope of y over x. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return 0;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

async function main(): Promise<void> {
  raiseNofile(16_384);
  const tmp = makeTmpDir();
  const { proc: upstream, url: upstreamUrl } = await startDemoUpstreamProcess(tmp);
  const [port, adminPort] = [await freePort(), await freePort()];
  const file = path.join(tmp, 'sluice.yaml');
  writeFileSync(file, config(port, adminPort, upstreamUrl, tmp));
  const gw: Proc = spawnPinned(
    'sluice',
    null,
    NODE,
    [...SLUICE_NODE_FLAGS, SLUICE_MAIN, 'start', '-c', file],
    {
      logFile: path.join(tmp, 'gateway.log'),
    },
  );
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  await waitReady(`${adminUrl}/healthz`, gw);
  const url = `http://127.0.0.1:${port}`;
  log(
    `soak: ${MINUTES} min at ${RATE} req/s; gateway pid ${gw.pid} on ${url}, upstream pid ${upstream.pid}; dir ${tmp}`,
  );
  await metrics(adminUrl); // resets the event-loop histogram
  const fdsBefore = fdCount(gw.pid);
  const rssBefore = procStatus(gw.pid, 'VmRSS');

  const pool = new Pool(url, { connections: 1024, keepAliveTimeout: 10_000 });
  const sentIds = new Set<string>();
  const byKind = new Map<string, Map<string, number>>();
  const count = (kind: string, outcome: string) => {
    const m = byKind.get(kind) ?? new Map<string, number>();
    m.set(outcome, (m.get(outcome) ?? 0) + 1);
    byKind.set(kind, m);
  };
  const jobs = new Map<string, string>(); // job id → final status seen by polling
  let seq = 0;
  let inflight = 0;
  let pollSeq = 0;
  const pending = new Set<Promise<void>>();

  const poll = async (job: string): Promise<void> => {
    for (let i = 0; i < 30; i++) {
      const id = `soak-p${++pollSeq}`;
      sentIds.add(id);
      try {
        const res = await pool.request({
          path: `/_sluice/jobs/${job}?wait=10s`,
          method: 'GET',
          headers: { 'x-request-id': id },
          headersTimeout: 30_000,
        });
        const body = (await res.body.json()) as { status?: string };
        count('poll', String(res.statusCode));
        if (body.status && ['completed', 'failed', 'cancelled'].includes(body.status)) {
          jobs.set(job, body.status);
          return;
        }
      } catch (err) {
        count('poll', errorLabel(err));
        await sleep(500);
      }
    }
  };

  const fire = (kind: Kind) => {
    const id = `soak-${++seq}`;
    sentIds.add(id);
    inflight++;
    const p = (async () => {
      try {
        const res = await pool.request({
          path: kind.path(),
          method: 'GET',
          headers: { 'x-request-id': id },
          headersTimeout: 30_000,
          bodyTimeout: 30_000,
          signal: kind.abortMs ? AbortSignal.timeout(kind.abortMs) : undefined,
        });
        if (res.statusCode === 202) {
          const body = (await res.body.json()) as { id: string };
          jobs.set(body.id, 'pending');
          count(kind.name, '202');
          await poll(body.id);
        } else {
          await res.body.dump({ limit: 1 << 20 });
          count(kind.name, String(res.statusCode));
        }
      } catch (err) {
        count(kind.name, errorLabel(err));
      } finally {
        inflight--;
      }
    })();
    pending.add(p);
    void p.finally(() => pending.delete(p));
  };

  const samples: Sample[] = [];
  const t0 = performance.now();
  const sampler = setInterval(async () => {
    try {
      const m = await metrics(adminUrl);
      samples.push({
        t_s: Math.round((performance.now() - t0) / 100) / 10,
        rss_kib: procStatus(gw.pid, 'VmRSS'),
        fds: fdCount(gw.pid),
        eld_p99_ms: (m.sluice_nodejs_eventloop_lag_p99_seconds ?? 0) * 1000,
        eld_max_ms: (m.sluice_nodejs_eventloop_lag_max_seconds ?? 0) * 1000,
        eld_mean_ms: (m.sluice_nodejs_eventloop_lag_mean_seconds ?? 0) * 1000,
        inflight,
        sent: seq,
      });
      const s = samples.at(-1)!;
      if (samples.length % Math.max(1, Math.round(60 / SAMPLE_S)) === 0)
        log(
          `t=${s.t_s}s sent=${s.sent} inflight=${s.inflight} rss=${(s.rss_kib / 1024).toFixed(1)}MiB fds=${s.fds} eld p99=${s.eld_p99_ms.toFixed(1)}ms`,
        );
    } catch (err) {
      log(`sample failed: ${(err as Error).message}`);
    }
  }, SAMPLE_S * 1000);

  // Open loop: request k is due at t0 + k/rate whatever happened to the ones before it.
  const total = Math.round(RATE * MINUTES * 60);
  await new Promise<void>((resolve) => {
    let i = 0;
    const tick = () => {
      const now = performance.now();
      while (i < total && t0 + (i * 1000) / RATE <= now) {
        fire(pick());
        i++;
      }
      if (i < total) setTimeout(tick, 2);
      else resolve();
    };
    tick();
  });
  const loadSeconds = (performance.now() - t0) / 1000;
  log(`load done: ${seq} requests in ${loadSeconds.toFixed(0)} s; waiting for ${pending.size} in flight`);
  while (pending.size > 0) await Promise.allSettled([...pending]);
  clearInterval(sampler);
  await pool.close();
  // Idle: the client's connections are closed at once; the gateway's keep-alive connections to the
  // upstream stay until the upstream's `Keep-Alive: timeout=65` hint (capped at 60 s by undici) runs out.
  await sleep(10_000);
  const fdsAfter10s = fdCount(gw.pid);
  const idleStart = performance.now();
  let fdsAfter = fdsAfter10s;
  while (fdsAfter > fdsBefore && performance.now() - idleStart < 90_000) {
    await sleep(5_000);
    fdsAfter = fdCount(gw.pid);
  }
  const settledS = Math.round(10 + (performance.now() - idleStart) / 1000);
  const rssAfter = procStatus(gw.pid, 'VmRSS');
  const peakKiB = procStatus(gw.pid, 'VmHWM');
  await gw.stop(); // SIGTERM: the access log is flushed
  await upstream.stop();

  // Every request id exactly once (job_* lines carry their creator's id and are counted per job).
  const lines = new Map<string, number>();
  const jobLines = new Map<string, number>();
  const outcomes = new Map<string, number>();
  const unknownLines: string[] = [];
  let unparsed = 0;
  const rl = createInterface({ input: createReadStream(path.join(tmp, 'access.log')) });
  for await (const line of rl) {
    let e: { request_id?: string; outcome?: string; job?: string };
    try {
      e = JSON.parse(line);
    } catch {
      unparsed++;
      continue;
    }
    outcomes.set(e.outcome ?? '?', (outcomes.get(e.outcome ?? '?') ?? 0) + 1);
    if (e.outcome?.startsWith('job_')) jobLines.set(e.job ?? '?', (jobLines.get(e.job ?? '?') ?? 0) + 1);
    else {
      lines.set(e.request_id ?? '?', (lines.get(e.request_id ?? '?') ?? 0) + 1);
      if (!sentIds.has(e.request_id ?? '?') && unknownLines.length < 20) unknownLines.push(line);
    }
  }
  const missing = [...sentIds].filter((id) => !lines.has(id));
  const duplicated = [...lines].filter(([, n]) => n > 1).map(([id]) => id);
  const unknown = [...lines.keys()].filter((id) => !sentIds.has(id));
  const jobsNotFinal = [...jobs].filter(([, s]) => s === 'pending').map(([id]) => id);
  const jobsWithoutLine = [...jobs.keys()].filter((id) => jobLines.get(id) !== 1);

  const after = samples.filter((s) => s.t_s >= WARMUP_S && s.t_s <= loadSeconds);
  const xs10 = after.map((s) => s.t_s / 600);
  const rssSlope = slope(
    xs10,
    after.map((s) => s.rss_kib / 1024),
  );
  const eldSlope = slope(
    xs10,
    after.map((s) => s.eld_p99_ms),
  );
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);
  const summary = {
    command: `node scripts/soak.ts --minutes ${MINUTES} --rate ${RATE} --sample ${SAMPLE_S}`,
    started: new Date(Date.now() - loadSeconds * 1000).toISOString(),
    minutes: MINUTES,
    rate: RATE,
    requests: seq,
    polls: pollSeq,
    achieved_rate: Math.round((seq / loadSeconds) * 10) / 10,
    warmup_s: WARMUP_S,
    rss_mib: {
      before: rssBefore / 1024,
      after_warmup_mean: mean(after.slice(0, 12).map((s) => s.rss_kib / 1024)),
      last_mean: mean(after.slice(-12).map((s) => s.rss_kib / 1024)),
      idle_after: rssAfter / 1024,
      peak: peakKiB / 1024,
      slope_per_10min: rssSlope,
    },
    eld_p99_ms: {
      mean: mean(after.map((s) => s.eld_p99_ms)),
      max: Math.max(0, ...after.map((s) => s.eld_p99_ms)),
      slope_per_10min: eldSlope,
    },
    fds: {
      before: fdsBefore,
      after_10s_idle: fdsAfter10s,
      after: fdsAfter,
      settled_after_s: settledS,
      max: Math.max(0, ...samples.map((s) => s.fds)),
    },
    accounting: {
      sent: sentIds.size,
      log_lines: [...lines.values()].reduce((a, b) => a + b, 0),
      missing: missing.length,
      duplicated: duplicated.length,
      unknown: unknown.length,
      unparsed,
      jobs: jobs.size,
      jobs_final: [...jobs.values()].filter((s) => s !== 'pending').length,
      jobs_not_final: jobsNotFinal.length,
      jobs_without_one_final_line: jobsWithoutLine.length,
      examples: {
        missing: missing.slice(0, 5),
        duplicated: duplicated.slice(0, 5),
        jobs: jobsNotFinal.slice(0, 5),
        unknown: unknownLines,
      },
    },
    outcomes: Object.fromEntries(outcomes),
    client: Object.fromEntries([...byKind].map(([k, m]) => [k, Object.fromEntries(m)])),
    job_statuses: Object.fromEntries(
      [...new Set(jobs.values())].map((s) => [s, [...jobs.values()].filter((x) => x === s).length]),
    ),
  };
  writeFileSync(path.resolve(ROOT, args.out as string), JSON.stringify({ summary, samples }, null, 1));
  console.log(JSON.stringify(summary, null, 2));
  const acc = summary.accounting;
  const ok =
    acc.missing === 0 &&
    acc.duplicated === 0 &&
    acc.unknown === 0 &&
    acc.jobs_not_final === 0 &&
    acc.jobs_without_one_final_line === 0 &&
    fdsAfter <= fdsBefore + 4;
  log(
    `${ok ? 'OK' : 'FAILED'}: ${seq} requests + ${pollSeq} polls, RSS slope ${rssSlope.toFixed(2)} MiB/10min, ELD p99 slope ${eldSlope.toFixed(2)} ms/10min, fds ${fdsBefore} → ${fdsAfter}; samples in ${args.out}`,
  );
  process.exitCode = ok ? 0 : 1;
}

await main();
