/**
 * Queue-mode jobs on SQLite: how many jobs the accept path can take (POST → body read → job committed →
 * 202) and how many the queue workers then deliver and store per second.
 *
 * A job server (this script with `--serve`, pinned to core 0) runs the accept path and the QueueWorker
 * over a SqliteJobStore on a temp file; the demo upstream (`sluice demo-upstream`) and wrk run on core 1.
 * Per `synchronous` setting:
 *   1. store only: N sequential `create`s in the server process (no HTTP);
 *   2. accepted/s: `wrk -t1 -cC -dDs` POSTing a B-byte body to the accept endpoint, every answer a 202;
 *   3. completed/s: the backlog left by step 2 drained by `--workers` workers delivering to the demo
 *      upstream's `/fast` and storing each answer (the server answers when nothing is queued or running).
 *
 *   npx node bench/macro/jobs.ts [--duration 5] [--connections 32] [--workers 8] [--body 1024]
 *        [--sync normal,full] [--creates 20000]
 */
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { acceptedResponse, readBody } from '../../src/jobs/accept.ts';
import { httpDeliver } from '../../src/jobs/http-deliver.ts';
import { newJobId, ownerHash } from '../../src/jobs/ids.ts';
import { isStoreUnavailable, type NewJob } from '../../src/jobs/job-store.ts';
import { QueueWorker } from '../../src/jobs/queue-worker.ts';
import { SqliteJobStore } from '../../src/jobs/sqlite-job-store.ts';
import {
  fmtInt,
  freePort,
  LOAD_CORE,
  log,
  machineInfo,
  makeTmpDir,
  mdTable,
  NODE,
  PROXY_CORE,
  parseWrk,
  pinSelf,
  requireTools,
  runPinned,
  SLUICE_MAIN,
  spawnPinned,
  WRK,
  waitReady,
} from './lib.ts';

const { values: flags } = parseArgs({
  options: {
    serve: { type: 'boolean', default: false },
    db: { type: 'string' },
    port: { type: 'string' },
    upstream: { type: 'string' },
    sync: { type: 'string', default: 'normal,full' },
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '32' },
    workers: { type: 'string', default: '8' },
    body: { type: 'string', default: '1024' },
    creates: { type: 'string', default: '20000' },
  },
});

// ---- the job server (child) -------------------------------------------------------------------------

async function serve(): Promise<void> {
  const sync = flags.sync === 'full' ? 'full' : 'normal';
  const store = new SqliteJobStore(flags.db!, { synchronous: sync });
  const worker = new QueueWorker({
    store,
    deliver: httpDeliver({ baseUrl: flags.upstream! }),
    workers: Number(flags.workers),
    policyFor: () => ({ attempts: 1 }),
    pollMs: 50,
  });
  const job = (body: Buffer, headers: [string, string][]): NewJob => ({
    id: newJobId(),
    route: 'bench',
    mode: 'queue',
    status: 'queued',
    keep_ms: 3_600_000,
    max_result: 10 * 1024 * 1024,
    idempotent: false,
    request: { method: 'POST', path: '/fast', headers, body },
  });
  const server = createServer(async (req, res) => {
    const url = req.url ?? '/';
    try {
      if (url === '/accept') {
        const body = await readBody(req, 10 * 1024 * 1024);
        const headers: [string, string][] = [['content-type', req.headers['content-type'] ?? 'text/plain']];
        const created = await store.create({ ...job(body, headers), owner_hash: ownerHash(req.headers) });
        acceptedResponse(res, created, '/_sluice/jobs', 1);
      } else if (url.startsWith('/creates')) {
        const n = Number(new URL(url, 'http://x').searchParams.get('n'));
        const body = Buffer.alloc(Number(flags.body), 120);
        const t0 = performance.now();
        for (let i = 0; i < n; i++) await store.create(job(body, [['content-type', 'text/plain']]));
        const s = (performance.now() - t0) / 1000;
        res.end(JSON.stringify({ n, seconds: s }));
      } else if (url === '/drain') {
        // Totals over every route, by status.
        const totals = async () => {
          const t: Record<string, number> = {};
          for (const perRoute of Object.values(await store.counts()))
            for (const [status, n] of Object.entries(perRoute)) t[status] = (t[status] ?? 0) + n;
          return t;
        };
        const before = await totals();
        const t0 = performance.now();
        worker.start();
        worker.nudge();
        for (;;) {
          const c = await totals();
          if ((c.queued ?? 0) + (c.running ?? 0) === 0) break;
          await new Promise((r) => setTimeout(r, 250));
        }
        const s = (performance.now() - t0) / 1000;
        await worker.stop(1_000);
        const after = await totals();
        res.end(JSON.stringify({ seconds: s, before, after, stats: worker.stats }));
      } else {
        res.end('ok');
      }
    } catch (err) {
      res.statusCode = isStoreUnavailable(err) ? 503 : 500;
      res.end(String(err));
    }
  });
  server.listen(Number(flags.port), '127.0.0.1');
}

// ---- the runner ---------------------------------------------------------------------------------------

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url, { signal: AbortSignal.timeout(600_000) });
  if (res.status !== 200) throw new Error(`${url}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

async function run(): Promise<void> {
  requireTools(['taskset', WRK]);
  pinSelf(LOAD_CORE);
  const tmp = makeTmpDir();
  const upstreamPort = await freePort();
  const upstream = spawnPinned(
    'demo-upstream',
    LOAD_CORE,
    NODE,
    [SLUICE_MAIN, 'demo-upstream', '--port', String(upstreamPort)],
    {
      logFile: path.join(tmp, 'upstream.log'),
    },
  );
  const upstreamUrl = `http://127.0.0.1:${upstreamPort}`;
  await waitReady(`${upstreamUrl}/fast`, upstream);
  const lua = path.join(tmp, 'post.lua');
  writeFileSync(
    lua,
    `wrk.method = "POST"\nwrk.body = string.rep("x", ${Number(flags.body)})\nwrk.headers["Content-Type"] = "text/plain"\n`,
  );

  const rows: string[][] = [];
  for (const sync of (flags.sync ?? 'normal').split(',')) {
    const port = await freePort();
    const db = path.join(tmp, `jobs-${sync}.db`);
    const server = spawnPinned(
      `job-server-${sync}`,
      PROXY_CORE,
      NODE,
      [
        path.join(import.meta.dirname, 'jobs.ts'),
        '--serve',
        '--db',
        db,
        '--port',
        String(port),
        '--upstream',
        upstreamUrl,
        '--sync',
        sync,
        '--workers',
        String(flags.workers),
        '--body',
        String(flags.body),
      ],
      { logFile: path.join(tmp, `server-${sync}.log`) },
    );
    const base = `http://127.0.0.1:${port}`;
    await waitReady(`${base}/`, server);

    const creates = await getJson<{ n: number; seconds: number }>(
      `${base}/creates?n=${Number(flags.creates)}`,
    );
    log(`${sync}: ${creates.n} creates in ${creates.seconds.toFixed(2)} s`);

    const out = await runPinned(
      'wrk',
      LOAD_CORE,
      WRK,
      ['-t1', `-c${flags.connections}`, `-d${flags.duration}s`, '--latency', '-s', lua, `${base}/accept`],
      path.join(tmp, `wrk-${sync}.log`),
    );
    const w = parseWrk(out);
    if (w.non2xx > 0 || w.socketErrors > 0)
      log(`${sync}: ${w.non2xx} non-2xx, ${w.socketErrors} socket errors`);
    log(`${sync}: accepted ${w.requests} in ${w.seconds.toFixed(1)} s`);

    const drain = await getJson<{
      seconds: number;
      before: Record<string, number>;
      after: Record<string, number>;
    }>(`${base}/drain`);
    const delivered = (drain.after.completed ?? 0) - (drain.before.completed ?? 0);
    log(
      `${sync}: delivered ${delivered} in ${drain.seconds.toFixed(2)} s (failed ${drain.after.failed ?? 0})`,
    );
    rows.push([
      sync,
      fmtInt(creates.n / creates.seconds),
      fmtInt(w.rps),
      `${(w.p50us / 1000).toFixed(2)} / ${(w.p99us / 1000).toFixed(2)}`,
      fmtInt(delivered / drain.seconds),
      String(drain.after.failed ?? 0),
    ]);
    await server.stop();
  }
  await upstream.stop();

  const m = machineInfo();
  process.stdout.write(
    `\nQueue-mode jobs on SQLite (WAL), ${flags.body}-byte bodies; ${flags.workers} workers; ` +
      `wrk -t1 -c${flags.connections} -d${flags.duration}s; ${Object.values(m).join(', ')}\n\n`,
  );
  process.stdout.write(
    mdTable(
      [
        'synchronous',
        'store creates/s',
        'accepted/s (HTTP 202)',
        'accept p50 / p99 ms',
        'completed/s',
        'failed',
      ],
      rows,
      ['l', 'r', 'r', 'r', 'r', 'r'],
    ),
  );
  process.stdout.write('\n');
}

if (flags.serve) await serve();
else await run();
