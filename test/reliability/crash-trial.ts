/**
 * Crash trials (issue 14), shared by test/reliability/crash-trials.test.ts (a few trials in npm test)
 * and scripts/crash-trials.ts (the long run): a real `sluice start` child process on a real job store
 * (a SQLite file, or the real Redis under a key prefix of its own) takes mixed traffic — auto offloads
 * of slow and hanging calls, `Prefer: respond-async`, `queue` jobs (GET, POST, POST with
 * Idempotency-Key), retried 503s, cache fills and plain requests — and is killed with SIGKILL at a
 * random moment. A new process starts on the same store; every job that got a 202 must reach a final
 * state (`completed`, `failed`, `cancelled`) that polling shows, and its result must be readable.
 * The restarted process is the next trial's victim. Everything random comes from the seed.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { type DemoUpstream, startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import { seeded } from '../../src/upstream/balancers/test-random.ts';
import { type GatewayProcess, spawnGateway } from '../helpers.ts';

export type StoreKind = 'sqlite' | 'redis';

export interface TrialOptions {
  store: StoreKind;
  trials: number;
  seed: number;
  /** Redis URL (db 13 unless told otherwise; keys under a prefix of this run, deleted at the end). */
  redis?: string;
  /** The longest upstream call of a slow request (default 1500ms; the bounded test uses less). */
  slowMaxMs?: number;
  /** Progress lines (the script prints them; the test does not). */
  log?: (line: string) => void;
}

export interface JobOutcome {
  trial: number;
  kind: string;
  id: string;
  /** Final status (`completed`, `failed`, `cancelled`), or `lost` / `not-final`. */
  status: string;
  /** `failed`: the error code (`interrupted`, `upstream-timeout`…). */
  error?: string;
  /** When the job was final, ms after the restarted gateway was listening (0: final before). */
  recoveredMs: number;
  /** Something wrong with it (lost, never final, result unreadable): the trial's failure. */
  problem?: string;
}

export interface TrialReport {
  store: StoreKind;
  seed: number;
  trials: number;
  /** Requests sent, and answered before the kill. */
  requests: number;
  answered: number;
  accepted: number;
  final: number;
  /** `completed`, `failed:interrupted`… → count. */
  states: Record<string, number>;
  problems: JobOutcome[];
  /** Restart (spawn to listening) and time from listening until the last job of the trial was final. */
  restartMs: number[];
  recoverMs: number[];
  /** Per final state: ms after the restart's listening until each job of that state was final. */
  finalMsByState: Record<string, number[]>;
  /** Kill moments, ms after the trial's traffic began. */
  killAtMs: number[];
  wallMs: number;
}

const LEASE = '1s';
/** How long a job may take to be final after the restart: a lease, the recovery scan, a redelivery… */
const FINAL_WITHIN_MS = 12_000;
const WORKERS = 2;
/** …plus the time the queue workers need for the backlog of queue jobs (redelivered or not begun). */
const backlogMs = (queued: number) => Math.ceil((queued * ((150 + slowMax) / 2 + 100)) / WORKERS);

function config(store: string, demo: DemoUpstream): string {
  return `store: "${store}"
jobs: { workers: ${WORKERS}, lease: ${LEASE} }
upstreams:
  demo: { targets: ["${demo.url}"] }
routes:
  - { name: queue, match: { path: /q }, upstream: demo, strip_prefix: true, async: { mode: queue } }
  - { name: prefer, match: { path: /p }, upstream: demo, strip_prefix: true, async: { mode: prefer, timeout: 4s } }
  - { name: retried, match: { path: /r }, upstream: demo, strip_prefix: true, retry: { attempts: 3, on: [503, reset], backoff: 20ms } }
  - { name: cached, match: { path: /c }, upstream: demo, strip_prefix: true, cache: { ttl: 30s } }
  - { name: auto, match: { path: /a }, upstream: demo, strip_prefix: true, async: { mode: auto, after: 100ms, timeout: 4s } }
  - { name: plain, match: { path: / }, upstream: demo }
`;
}

interface Kind {
  name: string;
  weight: number;
  request(rnd: () => number, n: number): { path: string; init: RequestInit };
}

let slowMax = 1_500;
const slow = (rnd: () => number) => 150 + Math.floor(rnd() * (slowMax - 150));

/** The traffic mix: what each request is, with its weight. */
const KINDS: Kind[] = [
  { name: 'auto-slow', weight: 4, request: (r) => ({ path: `/a/slow?ms=${slow(r)}`, init: {} }) },
  { name: 'auto-hang', weight: 1, request: () => ({ path: '/a/hang', init: {} }) },
  { name: 'auto-fast', weight: 2, request: () => ({ path: '/a/fast', init: {} }) },
  {
    name: 'prefer-async',
    weight: 3,
    request: (r) => ({ path: `/p/slow?ms=${slow(r)}`, init: { headers: { prefer: 'respond-async' } } }),
  },
  { name: 'queue-get', weight: 3, request: (r) => ({ path: `/q/slow?ms=${slow(r)}`, init: {} }) },
  {
    name: 'queue-post',
    weight: 2,
    request: (r) => ({ path: `/q/slow?ms=${slow(r)}`, init: { method: 'POST', body: 'once' } }),
  },
  {
    name: 'queue-post-key',
    weight: 2,
    request: (r, n) => ({
      path: `/q/slow?ms=${slow(r)}`,
      init: { method: 'POST', body: 'again', headers: { 'idempotency-key': `k-${n}` } },
    }),
  },
  { name: 'retried-503', weight: 1, request: () => ({ path: '/r/status/503', init: {} }) },
  { name: 'retried-ok', weight: 1, request: () => ({ path: '/r/fast', init: {} }) },
  {
    name: 'cache-fill',
    weight: 2,
    request: (r) => ({ path: `/c/size/2000?k=${Math.floor(r() * 20)}`, init: {} }),
  },
  { name: 'plain', weight: 1, request: () => ({ path: '/fast', init: {} }) },
];
const TOTAL_WEIGHT = KINDS.reduce((n, k) => n + k.weight, 0);

function pickKind(rnd: () => number): Kind {
  let x = rnd() * TOTAL_WEIGHT;
  for (const k of KINDS) {
    x -= k.weight;
    if (x < 0) return k;
  }
  return KINDS[KINDS.length - 1];
}

const FINAL = new Set(['completed', 'failed', 'cancelled']);

interface Accepted {
  kind: string;
  id: string;
  poll: string;
}

export async function runCrashTrials(opts: TrialOptions): Promise<TrialReport> {
  const t0 = performance.now();
  const log = opts.log ?? (() => {});
  const rnd = seeded(opts.seed);
  slowMax = opts.slowMaxMs ?? 1_500;
  const demo = await startDemoUpstream({ port: 0 });
  let cleanup: () => Promise<void> = async () => {};
  let store: string;
  if (opts.store === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-crash-'));
    store = `sqlite:${dir}/jobs.db`;
    cleanup = async () => rmSync(dir, { recursive: true, force: true });
  } else {
    const url = opts.redis ?? 'redis://127.0.0.1:6379/13';
    const prefix = `sluice-crash-${randomBytes(4).toString('hex')}:`;
    store = `${url}?prefix=${prefix}`;
    cleanup = () => deleteKeys(url, prefix);
  }
  const yaml = config(store, demo);
  const report: TrialReport = {
    store: opts.store,
    seed: opts.seed,
    trials: opts.trials,
    requests: 0,
    answered: 0,
    accepted: 0,
    final: 0,
    states: {},
    problems: [],
    restartMs: [],
    recoverMs: [],
    killAtMs: [],
    finalMsByState: {},
    wallMs: 0,
  };
  let gw: GatewayProcess | undefined;
  try {
    gw = await spawnGateway(yaml);
    for (let trial = 1; trial <= opts.trials; trial++) {
      const victim: GatewayProcess = gw;
      const accepted: Accepted[] = [];
      const killAt = 50 + Math.floor(rnd() * 900);
      report.killAtMs.push(killAt);
      let stop = false;
      let n = 0;
      const client = async () => {
        while (!stop) {
          const kind = pickKind(rnd);
          const { path, init } = kind.request(rnd, ++n);
          report.requests++;
          try {
            const res = await fetch(victim.url(path), { ...init, signal: AbortSignal.timeout(5_000) });
            const text = await res.text();
            report.answered++;
            if (res.status === 202) {
              const j = JSON.parse(text) as { id: string; poll_url: string };
              accepted.push({ kind: kind.name, id: j.id, poll: j.poll_url });
            }
          } catch {
            // The kill cut this request: it got no 202, so nothing was promised.
          }
          await new Promise((r) => setTimeout(r, Math.floor(rnd() * 30)));
        }
      };
      const began = performance.now();
      const clients = Array.from({ length: 6 }, client);
      await new Promise((r) => setTimeout(r, killAt));
      stop = true;
      await victim.kill();
      const killed = performance.now();
      await Promise.all(clients);
      const spawnAt = performance.now();
      gw = await spawnGateway(yaml);
      const listening = performance.now();
      report.restartMs.push(listening - spawnAt);
      const within = FINAL_WITHIN_MS + backlogMs(accepted.filter((a) => a.kind.startsWith('queue')).length);
      const outcomes = await Promise.all(
        accepted.map((a) => settle(gw as GatewayProcess, a, trial, listening, within)),
      );
      let last = 0;
      for (const o of outcomes) {
        report.accepted++;
        const key = o.error === undefined ? o.status : `${o.status}:${o.error}`;
        report.states[key] = (report.states[key] ?? 0) + 1;
        (report.finalMsByState[key] ??= []).push(o.recoveredMs);
        if (FINAL.has(o.status)) report.final++;
        if (o.problem !== undefined) report.problems.push(o);
        last = Math.max(last, o.recoveredMs);
      }
      report.recoverMs.push(last);
      const bad = outcomes.filter((o) => o.problem !== undefined);
      log(
        `trial ${trial}/${opts.trials}: killed after ${killAt}ms (${Math.round(killed - began)}ms), ${accepted.length} accepted, ${outcomes.filter((o) => FINAL.has(o.status)).length} final, last final ${Math.round(last)}ms after restart${
          bad.length > 0
            ? ` — PROBLEMS (${bad.length}): ${bad
                .slice(0, 3)
                .map((o) => `${o.kind} ${o.id}: ${o.problem}`)
                .join('; ')}`
            : ''
        }`,
      );
    }
  } finally {
    await gw?.stop();
    await demo.close();
    await cleanup();
  }
  report.wallMs = performance.now() - t0;
  return report;
}

/** Polls one accepted job on the restarted gateway until it is final (or the time is up). */
async function settle(
  gw: GatewayProcess,
  a: Accepted,
  trial: number,
  listening: number,
  within: number,
): Promise<JobOutcome> {
  const deadline = listening + within;
  const out: JobOutcome = { trial, kind: a.kind, id: a.id, status: 'not-final', recoveredMs: 0 };
  for (;;) {
    const left = deadline - performance.now();
    if (left <= 0) {
      out.problem = `not final ${Math.round(within)}ms after the restart (last seen ${out.status})`;
      out.status = 'not-final';
      return out;
    }
    let res: Response;
    try {
      res = await fetch(gw.url(`${a.poll}?wait=${Math.max(1, Math.ceil(left / 1000))}s`), {
        signal: AbortSignal.timeout(Math.ceil(left) + 2_000),
      });
    } catch (err) {
      out.problem = `poll failed: ${(err as Error).message}`;
      return out;
    }
    if (res.status === 404) {
      out.status = 'lost';
      out.problem = 'the job is gone (404) after the restart';
      return out;
    }
    const j = (await res.json()) as { status: string; error?: { code?: string } };
    out.status = j.status;
    if (FINAL.has(j.status)) {
      out.error = j.error?.code;
      out.recoveredMs = Math.max(0, performance.now() - listening);
      const result = await fetch(gw.url(`${a.poll}/result`));
      await result.arrayBuffer();
      if (result.status === 409) out.problem = 'final, but its result says not final (409)';
      else if (j.status === 'failed' && result.headers.get('content-type') !== 'application/problem+json')
        out.problem = `failed, but its result is no problem (${result.status})`;
      return out;
    }
  }
}

async function deleteKeys(url: string, prefix: string): Promise<void> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

/** Whether the Redis server answers (the Redis trials are skipped when it does not). */
export async function redisUp(url = 'redis://127.0.0.1:6379/13'): Promise<boolean> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  redis.on('error', () => {});
  try {
    await redis.connect();
    return (await redis.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    redis.disconnect();
  }
}

/** The report as lines for a terminal or the docs. */
export function summary(r: TrialReport): string {
  const pct = (xs: number[], p: number) => {
    if (xs.length === 0) return 0;
    const s = [...xs].sort((a, b) => a - b);
    return Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]);
  };
  const states = Object.entries(r.states)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  return [
    `store ${r.store}, seed ${r.seed}: ${r.trials} trials in ${Math.round(r.wallMs / 1000)}s`,
    `requests ${r.requests} (${r.answered} answered before a kill), 202s ${r.accepted}, final ${r.final}, problems ${r.problems.length}`,
    `final states: ${states || 'none'}`,
    `after the restart, each job final (p50 / max ms): ${Object.entries(r.finalMsByState)
      .map(([k, v]) => `${k} ${pct(v, 50)} / ${pct(v, 100)}`)
      .join(', ')}`,
    `kill after ${pct(r.killAtMs, 0)}–${pct(r.killAtMs, 100)}ms of traffic; restart to listening p50 ${pct(r.restartMs, 50)}ms max ${pct(r.restartMs, 100)}ms; last job final after the restart p50 ${pct(r.recoverMs, 50)}ms p95 ${pct(r.recoverMs, 95)}ms max ${pct(r.recoverMs, 100)}ms`,
  ].join('\n');
}
