/**
 * A Redis job store stopped and restarted under traffic (SPEC §10 "Redis trouble"), on a redis-server
 * this test starts itself on a free port (the machine's shared Redis is never stopped): while it is
 * down plain routes keep answering 200, new offloads get 503 store-unavailable — never a 202 that is
 * then lost: every 202's job is found once Redis is back — /readyz says `job_store: down`, and after
 * the restart the gateway reconnects by itself and offloads work again.
 *
 * The server runs with `appendonly yes, appendfsync always` in a temporary directory, the setting
 * docs/async.md recommends for jobs that must survive a Redis restart: without an AOF a restarted
 * Redis is empty, and every job accepted before it is gone (what docs/async.md says too).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import { sleep, spawnGateway } from '../helpers.ts';

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as { port: number };
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Starts redis-server on `port` (data in `dir`); resolves once it accepts connections. */
async function startRedis(port: number, dir: string): Promise<ChildProcess> {
  const child = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--dir',
      dir,
      '--appendonly',
      'yes',
      '--appendfsync',
      'always',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start: ${out}`)), 10_000);
    child.stdout?.on('data', (d) => {
      out += d;
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`redis-server exited ${code}: ${out}`)));
  });
  return child;
}

async function stopRedis(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGKILL');
  await once(child, 'exit');
}

type Phase = 'before' | 'down' | 'after';

interface Offload {
  phase: Phase;
  status: number;
  type?: string;
  location?: string;
}

describe('Redis stopped and restarted under traffic', () => {
  test('plain routes stay 200, offloads 503 while it is down (never a lost 202), /readyz says so, reconnection by itself', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-redis-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const port = await freePort();
    let redis = await startRedis(port, dir);
    t.after(() => stopRedis(redis));
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const gw = await spawnGateway(`
store: redis://127.0.0.1:${port}/0
jobs: { lease: 2s }
upstreams: { demo: { targets: ["${demo.url}"] } }
routes:
  - { name: jobs, match: { path: /slow }, upstream: demo, async: { mode: auto, after: 100ms } }
  - { name: plain, match: { path: / }, upstream: demo }
`);
    t.after(() => gw.stop());
    const readyz = async () =>
      ((await (await fetch(`http://127.0.0.1:${gw.adminPort}/readyz`)).json()) as { job_store?: string })
        .job_store;

    // Traffic from two loops until told to stop: a plain request and an offload each turn.
    let phase: Phase = 'before';
    let running = true;
    const plain: { phase: Phase; status: number }[] = [];
    const offloads: Offload[] = [];
    const loop = async () => {
      while (running) {
        const at = phase;
        const p = await fetch(gw.url('/fast')).then(
          async (r) => {
            await r.arrayBuffer();
            return r.status;
          },
          () => 0,
        );
        plain.push({ phase: at, status: p });
        // The upstream takes 2 s: the 202 (or the 503) comes first.
        const r = await fetch(gw.url('/slow?ms=2000'));
        const body = await r.text();
        const o: Offload = { phase: at, status: r.status };
        if (r.status === 202) o.location = r.headers.get('location') ?? '';
        else if (r.status === 503) o.type = (JSON.parse(body) as { type: string }).type;
        offloads.push(o);
        await sleep(50);
      }
    };
    const loops = [loop(), loop()];
    t.after(async () => {
      running = false;
      await Promise.all(loops);
    });

    await sleep(1_500);
    assert.equal(await readyz(), 'up');
    await stopRedis(redis);
    phase = 'down';
    const downAt = performance.now();
    // /readyz says it (the store is checked every few seconds) while plain routes keep working.
    let state = await readyz();
    while (state !== 'down' && performance.now() - downAt < 8_000) {
      await sleep(100);
      state = await readyz();
    }
    assert.equal(state, 'down');
    await sleep(1_000);
    const downFor = performance.now() - downAt;

    redis = await startRedis(port, dir);
    phase = 'after';
    const upAt = performance.now();
    // Reconnected by itself: an offload is accepted again.
    while (
      !offloads.some((o) => o.phase === 'after' && o.status === 202) &&
      performance.now() - upAt < 10_000
    ) {
      await sleep(100);
    }
    const back = performance.now() - upAt;
    assert.ok(
      offloads.some((o) => o.phase === 'after' && o.status === 202),
      'offloads accepted again',
    );
    let ready = await readyz();
    while (ready !== 'up' && performance.now() - upAt < 10_000) {
      await sleep(100);
      ready = await readyz();
    }
    assert.equal(ready, 'up');
    running = false;
    await Promise.all(loops);

    assert.ok(plain.length > 10, `${plain.length} plain requests`);
    assert.deepEqual(
      plain.filter((p) => p.status !== 200),
      [],
      'every plain request answered 200, also while Redis was down',
    );
    // While down (after the first in-flight ones), offloads are refused with the problem, never 202.
    const down = offloads.filter((o) => o.phase === 'down');
    assert.ok(down.length >= 2, `${down.length} offloads while down (down for ${Math.round(downFor)} ms)`);
    for (const o of down) {
      assert.ok(o.status === 503 || o.status === 202, JSON.stringify(o));
      if (o.status === 503) assert.equal(o.type, 'https://sluice.dev/problems/store-unavailable');
    }
    assert.ok(
      down.some((o) => o.status === 503),
      'offloads answered 503 store-unavailable while Redis was down',
    );
    for (const o of offloads) assert.ok(o.status === 202 || o.status === 503, JSON.stringify(o));

    // Every 202 is a job Redis has: found, and it ends (completed, or interrupted if its result came
    // while Redis was away).
    const accepted = offloads.filter((o) => o.status === 202);
    assert.ok(accepted.some((o) => o.phase === 'before'));
    const ends: Record<string, number> = {};
    for (const o of accepted) {
      const res = await fetch(gw.url(`${o.location}?wait=10s`));
      assert.equal(res.status, 200, `${o.phase} job ${o.location} found after the restart`);
      const job = (await res.json()) as { status: string; error?: { code: string } };
      assert.ok(
        job.status === 'completed' || job.error?.code === 'interrupted',
        `${o.phase} job ${o.location}: ${JSON.stringify(job)}`,
      );
      const key = `${o.phase}:${job.error?.code ?? job.status}`;
      ends[key] = (ends[key] ?? 0) + 1;
    }
    t.diagnostic(
      `plain ${plain.length}, offloads ${offloads.length} (${down.map((o) => o.status).join(' ')} while down), ` +
        `reconnected ${Math.round(back)} ms after the restart; 202s ended ${JSON.stringify(ends)}`,
    );
  });
});
