/**
 * `workers: N` (SPEC §10) through the real CLI: N processes share the public port, /metrics counts the
 * whole instance, a killed worker is replaced while requests keep succeeding, a reload reaches every
 * worker, an alert fires once per instance, jobs on SQLite are answered by any process, SIGTERM drains
 * them all, and no worker outlives a primary killed with -9.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import http, { createServer, get, type IncomingMessage, type ServerResponse } from 'node:http';
import { describe, type TestContext, test } from 'node:test';
import { type GatewayProcess, sleep, spawnGateway, startHttpServer } from '../helpers.ts';

/** One request on a new connection (so that the kernel picks a process for each). */
function fresh(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('timed out')));
  });
}

/** Runs `n` fresh requests, `concurrency` at a time. */
async function many(port: number, path: string, n: number, concurrency = 8) {
  const out: { status: number; body: string }[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        next++;
        out.push(await fresh(port, path));
      }
    }),
  );
  return out;
}

function workerPids(gw: GatewayProcess): number[] {
  try {
    return execFileSync('ps', ['--ppid', String(gw.pid), '-o', 'pid='], { encoding: 'utf8' })
      .split('\n')
      .map((l) => Number(l.trim()))
      .filter((n) => n > 0);
  } catch {
    return []; // ps exits 1 when there is none
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(what: string, pred: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await pred())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function metrics(gw: GatewayProcess): Promise<string> {
  return (await fetch(`http://127.0.0.1:${gw.adminPort}/metrics`)).text();
}

function metric(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

async function gatewayWith(
  t: TestContext,
  yaml: string,
  opts: { accessLog?: 'stdout' } = {},
): Promise<GatewayProcess> {
  const gw = await spawnGateway(yaml, opts);
  t.after(async () => {
    const pids = workerPids(gw);
    await gw.stop();
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  return gw;
}

describe('workers', () => {
  test('three processes share the port; /metrics counts every request once, for the whole instance', async (t) => {
    const up = await startHttpServer((_req, res) => res.end('ok'));
    t.after(() => up.close());
    const gw = await gatewayWith(
      t,
      `workers: 3
upstreams: { u: { targets: ["${up.url}"] } }
routes: [{ name: r, match: { path: / }, upstream: u }]
`,
    );
    assert.equal(workerPids(gw).length, 2, 'the primary and two workers');
    const answers = await many(gw.port, '/x', 300);
    assert.ok(answers.every((a) => a.status === 200 && a.body === 'ok'));

    // Workers send their finished requests every 100 ms.
    await until(
      '300 requests counted',
      async () =>
        metric(await metrics(gw), 'sluice_requests_total{route="r",status="200",outcome="ok"}') === 300,
    );
    const text = await metrics(gw);
    assert.equal(metric(text, 'sluice_workers'), 3);
    const perWorker = [0, 1, 2].map((i) => metric(text, `sluice_worker_requests_total{worker="${i}"}`));
    assert.equal(
      perWorker.reduce((a, b) => a + b, 0),
      300,
    );
    assert.ok(perWorker.filter((n) => n > 0).length >= 2, `served by several processes: ${perWorker}`);
    // One histogram for the instance: its count is every request.
    assert.equal(metric(text, 'sluice_request_duration_seconds_count{route="r"}'), 300);
  });

  test('every process writes the access log to one stdout pipe: whole lines, never interleaved', async (t) => {
    const up = await startHttpServer((_req, res) => res.end('ok'));
    t.after(() => up.close());
    const gw = await gatewayWith(
      t,
      `workers: 3
upstreams: { u: { targets: ["${up.url}"] } }
routes: [{ name: r, match: { path: / }, upstream: u }]
`,
      { accessLog: 'stdout' },
    );
    // Long paths make lines of ~1.5 KiB: a batch of them is well past PIPE_BUF (4 KiB).
    const path = `/${'x'.repeat(1400)}`;
    // A reader that stops for a while: the pipe fills, and writes must wait for room.
    gw.stdoutPipe?.pause();
    const load = many(gw.port, path, 600, 16);
    await sleep(1_500);
    gw.stdoutPipe?.resume();
    await load;
    await until(
      '600 lines',
      () =>
        gw
          .stdout()
          .split('\n')
          .filter((l) => l.includes(path)).length >= 600,
    );
    const lines = gw
      .stdout()
      .split('\n')
      .filter((l) => l !== '');
    for (const line of lines) {
      const e = JSON.parse(line) as { path: string; status: number };
      assert.equal(e.status, 200);
    }
    assert.equal(lines.length, 600);
  });

  test('a rate limit is one bucket for the instance, whichever process each request reaches', async (t) => {
    let reached = 0;
    const up = await startHttpServer((_req, res) => {
      reached++;
      res.end('ok');
    });
    t.after(() => up.close());
    const gw = await gatewayWith(
      t,
      `workers: 3
upstreams: { u: { targets: ["${up.url}"] } }
routes: [{ name: r, match: { path: / }, upstream: u, rate_limit: { rate: 1/m, burst: 10, key: route } }]
`,
    );
    const answers = await many(gw.port, '/x', 40, 8);
    const statuses = answers.map((a) => a.status);
    assert.equal(statuses.filter((s) => s === 200).length, 10, JSON.stringify(statuses));
    assert.equal(statuses.filter((s) => s === 429).length, 30);
    assert.equal(reached, 10, 'refused requests never reach the upstream');
    await until('40 requests counted', async () => {
      const text = await metrics(gw);
      return (
        [0, 1, 2].reduce((n, i) => n + metric(text, `sluice_worker_requests_total{worker="${i}"}`), 0) === 40
      );
    });
    const text = await metrics(gw);
    const perWorker = [0, 1, 2].map((i) => metric(text, `sluice_worker_requests_total{worker="${i}"}`));
    assert.ok(perWorker.filter((n) => n > 0).length >= 2, `served by several processes: ${perWorker}`);
  });

  test('a worker killed with -9 is replaced (logged) while requests keep succeeding', async (t) => {
    const up = await startHttpServer((_req, res) => res.end('ok'));
    t.after(() => up.close());
    const gw = await gatewayWith(
      t,
      `workers: 2
upstreams: { u: { targets: ["${up.url}"] } }
routes: [{ name: r, match: { path: / }, upstream: u }]
`,
    );
    const [victim] = workerPids(gw);
    assert.ok(victim > 0);
    let ok = 0;
    const failures: number[] = [];
    let replacedAt = Number.POSITIVE_INFINITY;
    let running = true;
    const load = (async () => {
      while (running) {
        const at = performance.now();
        try {
          const r = await fresh(gw.port, '/x');
          if (r.status === 200) ok++;
          else failures.push(at);
        } catch {
          failures.push(at);
        }
      }
    })();
    await sleep(300);
    process.kill(victim, 'SIGKILL');
    await until('a new worker', () => workerPids(gw).some((p) => p !== victim));
    await until('the new worker started', () =>
      /"worker started"[^\n]*\n[\s\S]*"worker started"/.test(gw.stderr()),
    );
    replacedAt = performance.now();
    await sleep(700);
    running = false;
    await load;

    assert.match(gw.stderr(), /"signal":"SIGKILL".*"worker exited; starting a new one"/);
    assert.ok(ok > 50, `${ok} requests succeeded`);
    // Only what the killed process held (an accepted connection, a request in flight) can fail.
    assert.ok(failures.length <= 3, `${failures.length} failed requests`);
    assert.ok(
      failures.every((at) => at < replacedAt),
      'no failure once the new worker runs',
    );
    assert.equal(workerPids(gw).length, 1);
    assert.equal(metric(await metrics(gw), 'sluice_worker_restarts_total'), 1);
  });

  test('SIGHUP reaches every worker: after a reload, no process answers with the old config', async (t) => {
    const one = await startHttpServer((_req, res) => res.end('one'));
    const two = await startHttpServer((_req, res) => res.end('two'));
    t.after(() => Promise.all([one.close(), two.close()]));
    const config = (upstream: string) => `workers: 3
watch: false
upstreams: { one: { targets: ["${one.url}"] }, two: { targets: ["${two.url}"] } }
routes: [{ name: r, match: { path: / }, upstream: ${upstream} }]
`;
    const gw = await gatewayWith(t, config('one'));
    assert.ok((await many(gw.port, '/x', 60)).every((a) => a.body === 'one'));
    const head = readFileSync(gw.file, 'utf8').split('workers:')[0];
    writeFileSync(gw.file, head + config('two'));
    process.kill(gw.pid, 'SIGHUP');
    await until('the reload', () => gw.stderr().includes('"config reloaded"'));
    // The workers get the new config over IPC right after the primary applied it.
    await until(
      'every process answering with the new config',
      async () => (await many(gw.port, '/x', 60)).every((a) => a.body === 'two'),
      5_000,
    );
    assert.equal(workerPids(gw).length, 2, 'a reload does not restart workers');
  });

  test('an alert fires once per instance, not once per worker', async (t) => {
    const got: { state: string; rule: string }[] = [];
    const hook = createServer((req: IncomingMessage, res: ServerResponse) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        got.push(JSON.parse(body));
        res.end('ok');
      });
    });
    hook.listen(0, '127.0.0.1');
    await once(hook, 'listening');
    t.after(() => {
      hook.closeAllConnections();
      hook.close();
    });
    // Answers after 300 ms: every request times out (ttfb 100ms).
    const up = await startHttpServer((_req, res) => {
      setTimeout(() => res.end('late'), 300);
    });
    t.after(() => up.close());
    const gw = await gatewayWith(
      t,
      `workers: 3
upstreams: { u: { targets: ["${up.url}"] } }
routes: [{ name: r, match: { path: / }, upstream: u, timeouts: { ttfb: 100ms } }]
alerts:
  webhook: http://127.0.0.1:${(hook.address() as { port: number }).port}/hook
  min_requests: 20
  window: 10s
  rules: [{ name: timeouts, when: timeout_rate > 10%, for: 1s }]
`,
    );
    const answers = await many(gw.port, '/x', 60, 12);
    assert.ok(answers.every((a) => a.status === 504));
    await until('the alert', () => got.some((n) => n.state === 'firing'), 10_000);
    // Every process saw timeouts; the instance evaluates its rules once, in its primary.
    await sleep(2_500);
    assert.equal(got.filter((n) => n.state === 'firing').length, 1, JSON.stringify(got));
  });

  test('async jobs on SQLite: a job accepted by one process is polled and fetched through any of them', async (t) => {
    const up = await startHttpServer((req, res) => {
      setTimeout(() => res.end(JSON.stringify({ path: req.url })), 500);
    });
    t.after(() => up.close());
    const gw = await gatewayWith(
      t,
      `workers: 3
store: "sqlite:${`/tmp/sluice-workers-${process.pid}-${Date.now()}.db`}"
upstreams: { u: { targets: ["${up.url}"] } }
routes: [{ name: r, match: { path: /report }, upstream: u, async: { mode: auto, after: 100ms } }]
`,
    );
    const accepted = await many(gw.port, '/report?n=1', 6, 6);
    assert.ok(
      accepted.every((a) => a.status === 202),
      JSON.stringify(accepted.map((a) => a.status)),
    );
    const ids = accepted.map((a) => (JSON.parse(a.body) as { id: string }).id);
    for (const id of ids) {
      let job: { status: string; result_url?: string } = { status: 'running' };
      await until(
        `job ${id} completed`,
        async () => {
          const r = await fresh(gw.port, `/_sluice/jobs/${id}`);
          assert.equal(r.status, 200);
          job = JSON.parse(r.body);
          return job.status === 'completed';
        },
        10_000,
      );
      const result = await fresh(gw.port, job.result_url as string);
      assert.equal(result.status, 200);
      assert.deepEqual(JSON.parse(result.body), { path: '/report?n=1' });
    }
    // Each job ends once, counted once for the instance.
    await until('six job ends counted', async () =>
      (await metrics(gw)).includes('sluice_jobs_finished_total{route="r",outcome="job_completed"} 6'),
    );
  });

  test('SQLite: a DELETE cancels the call whichever process holds it; long polls wake when any process completes', async (t) => {
    const answered = new Map<string, number>();
    const aborted = new Map<string, number>();
    const up = await startHttpServer((req, res) => {
      const n = new URL(req.url ?? '/', 'http://x').searchParams.get('n') ?? '';
      res.on('close', () => {
        if (!res.writableFinished) aborted.set(n, performance.now());
      });
      if (req.url?.startsWith('/hang')) return;
      setTimeout(() => {
        answered.set(n, performance.now());
        res.end(JSON.stringify({ n }));
      }, 700);
    });
    t.after(() => up.close());
    const gw = await gatewayWith(
      t,
      `workers: 3
store: "sqlite:${`/tmp/sluice-workers-peers-${process.pid}-${Date.now()}.db`}"
upstreams: { u: { targets: ["${up.url}"] } }
routes:
  - { name: hang, match: { path: /hang }, upstream: u, async: { mode: auto, after: 100ms } }
  - { name: slow, match: { path: /slow }, upstream: u, async: { mode: auto, after: 100ms } }
`,
    );
    // Six jobs whose calls hang, each cancelled through a new connection (a process picked by the kernel).
    for (let i = 0; i < 6; i++) {
      const accepted = await fresh(gw.port, `/hang?n=h${i}`);
      assert.equal(accepted.status, 202);
      const id = (JSON.parse(accepted.body) as { id: string }).id;
      const t0 = performance.now();
      const del = await new Promise<number>((resolve, reject) => {
        const req = http.request(
          { host: '127.0.0.1', port: gw.port, path: `/_sluice/jobs/${id}`, method: 'DELETE', agent: false },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        req.end();
      });
      assert.equal(del, 200);
      // The heartbeat (a third of the 10 s lease) would take seconds: the bus tells the holder at once.
      await until(`the upstream call of job ${i} aborted`, () => aborted.has(`h${i}`), 1_500);
      assert.ok((aborted.get(`h${i}`) as number) - t0 < 1_500);
    }
    // Long polls, each on a new connection, woken by the completion in whichever process holds the call.
    const polls = await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        const accepted = await fresh(gw.port, `/slow?n=s${i}`);
        assert.equal(accepted.status, 202);
        const id = (JSON.parse(accepted.body) as { id: string }).id;
        const r = await fresh(gw.port, `/_sluice/jobs/${id}?wait=10s`);
        return { i, at: performance.now(), job: JSON.parse(r.body) as { status: string } };
      }),
    );
    for (const p of polls) {
      assert.equal(p.job.status, 'completed');
      const lag = p.at - (answered.get(`s${p.i}`) as number);
      // Without the bus a poll of another process's job waits for its 1 s poll (0–1000 ms).
      assert.ok(lag < 400, `long poll ${p.i} woke ${lag.toFixed(0)} ms after the upstream answered`);
    }
  });

  test('SIGTERM drains every process; a primary killed with -9 leaves no worker behind', async (t) => {
    const up = await startHttpServer((_req, res) => {
      setTimeout(() => res.end('done'), 800);
    });
    t.after(() => up.close());
    const yaml = `workers: 3
upstreams: { u: { targets: ["${up.url}"] } }
routes: [{ name: r, match: { path: / }, upstream: u }]
`;
    const gw = await gatewayWith(t, yaml);
    const pids = workerPids(gw);
    assert.equal(pids.length, 2);
    const slow = Array.from({ length: 9 }, () => fresh(gw.port, '/x'));
    await sleep(200);
    process.kill(gw.pid, 'SIGTERM');
    const answers = await Promise.all(slow);
    assert.deepEqual(
      answers.map((a) => a.body),
      Array(9).fill('done'),
    );
    assert.equal(await gw.exited, 0);
    await until('the workers gone', () => pids.every((p) => !alive(p)), 5_000);

    const again = await gatewayWith(t, yaml);
    const orphans = workerPids(again);
    assert.equal(orphans.length, 2);
    process.kill(again.pid, 'SIGKILL');
    await until('the workers noticing their primary is gone', () => orphans.every((p) => !alive(p)), 10_000);
  });
});
