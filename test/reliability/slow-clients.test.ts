/**
 * Slow and abusive clients, bounded (issue 14; the full-size run is scripts/slow-clients.ts and its
 * figures are in docs/reliability.md#slow-and-abusive-clients): a real `sluice start` child process,
 * attacked on loopback while a well-behaved client keeps measuring itself. Bounds are generous (a
 * loaded 2-core machine): they assert order and orders of magnitude, never exact milliseconds.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { type TestContext, test } from 'node:test';
import { startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import { H1_ONLY, sleep, spawnGateway } from '../helpers.ts';
import {
  goodClient,
  hangingRequests,
  hasSlowhttptest,
  idleConnections,
  rssKiB,
  rssPeak,
  slowhttptest,
  slowlorisProbes,
  stillOpen,
} from './abusive-clients.ts';

const HEADER_TIMEOUT = 2_000;
const HANG_TOTAL = 3_000;
/** Generous upper margin for a timer on a shared, loaded 2-core machine. */
const LATE = 1_000;
/** header_timeout is checked on Node's connection-check interval: header_timeout / 10 (≥ 50 ms). */
const CHECK_INTERVAL = HEADER_TIMEOUT / 10;

async function gateway(t: TestContext) {
  const demo = await startDemoUpstream({ port: 0 });
  t.after(() => demo.close());
  const gw = await spawnGateway(`
shutdown_timeout: 1s
watch: false
client: { header_timeout: ${HEADER_TIMEOUT}ms, keepalive_timeout: 5m }
upstreams:
  demo: { targets: ["${demo.url}"] }
routes:
  - { name: hang, match: { path: /hang }, upstream: demo, timeouts: { ttfb: ${HANG_TOTAL}ms, total: ${HANG_TOTAL}ms } }
  - { name: rest, match: { path: / }, upstream: demo }
`);
  t.after(() => gw.kill());
  return { gw, demo };
}

const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

test('slowloris (slowhttptest -H, 300 connections): the good client keeps being served, the attackers are cut at header_timeout', {
  ...H1_ONLY,
  skip:
    H1_ONLY.skip ||
    (hasSlowhttptest() ? false : 'slowhttptest is not installed (apt-get install slowhttptest)'),
}, async (t) => {
  const { gw } = await gateway(t);
  const url = gw.url();
  await goodClient(url, { seconds: 1 }); // warm-up
  const unloaded = await goodClient(url, { seconds: 3 });
  const fdsBefore = fds(gw.pid);
  const peak = rssPeak(gw.pid);
  const rssBefore = rssKiB(gw.pid);
  const attack = slowhttptest(
    `${url}fast`,
    ['-H', '-c', '300', '-i', '1', '-r', '300', '-x', '24', '-p', '3'],
    12,
  );
  t.after(() => attack.stop());
  await sleep(1_500); // ramp-up
  const [loaded, cuts] = await Promise.all([
    goodClient(url, { seconds: 6 }),
    slowlorisProbes(gw.port, 10, 500, HEADER_TIMEOUT * 4),
  ]);
  attack.stop();
  const run = await attack.done;
  const peakKiB = peak.stop();
  const verdict = `unloaded p99 ${unloaded.p99} ms, under attack p50 ${loaded.p50} p99 ${loaded.p99} max ${loaded.max} ms (${loaded.n} requests); attacker peak ${run.maxConnected} connections`;
  assert.ok(run.maxConnected >= 200, `the attack really happened: ${verdict}`);
  assert.equal(loaded.errors, 0, verdict);
  assert.ok(loaded.n >= 100, `the good client was served: ${verdict}`);
  assert.ok(loaded.p99 <= Math.max(10 * unloaded.p99, 250), verdict);
  for (const c of cuts) {
    assert.equal(c.status, 408, `a slowloris probe gets 408 client-timeout: ${c.body}`);
    assert.ok(c.ms >= HEADER_TIMEOUT - 5, `cut after ${c.ms} ms, before header_timeout ${HEADER_TIMEOUT}`);
    assert.ok(
      c.ms <= HEADER_TIMEOUT + CHECK_INTERVAL + LATE,
      `cut after ${c.ms} ms, header_timeout ${HEADER_TIMEOUT}`,
    );
  }
  assert.ok(
    peakKiB - rssBefore < 100 * 1024,
    `RSS grew ${(peakKiB - rssBefore) / 1024} MiB under the attack`,
  );
  // Every attacker connection is closed by the gateway: its fds come back (within the wait).
  const deadline = performance.now() + HEADER_TIMEOUT + 2 * LATE;
  while (fds(gw.pid) > fdsBefore + 10 && performance.now() < deadline) await sleep(100);
  assert.ok(fds(gw.pid) <= fdsBefore + 10, `fds ${fdsBefore} before, ${fds(gw.pid)} after the attack`);
});

test(
  '1,000 idle connections and 200 requests hanging at the upstream: bounded RSS, every 504 on time',
  H1_ONLY,
  async (t) => {
    const { gw, demo } = await gateway(t);
    await goodClient(gw.url(), { seconds: 1 }); // warm-up
    const before = rssKiB(gw.pid);
    const idle = await idleConnections(gw.port, 1_000);
    t.after(() => {
      for (const s of idle) s.destroy();
    });
    const withIdle = rssKiB(gw.pid);
    const requestsBefore = demo.stats.requests;
    const hung = hangingRequests(gw.port, 200, '/hang');
    // Every hanging request has reached the upstream before its deadline.
    const deadline = performance.now() + HANG_TOTAL;
    while (demo.stats.requests - requestsBefore < 200 && performance.now() < deadline) await sleep(20);
    const withHanging = rssKiB(gw.pid);
    const answers = await hung;
    const perIdle = (withIdle - before) / 1_000;
    const perHanging = (withHanging - withIdle) / 200;
    assert.ok(perIdle < 64, `${perIdle.toFixed(1)} KiB per idle connection`);
    assert.ok(perHanging < 256, `${perHanging.toFixed(1)} KiB per hanging request`);
    for (const a of answers) {
      assert.equal(a.status, 504);
      assert.equal(a.phase, 'total');
      assert.equal(a.timeout_ms, HANG_TOTAL);
      assert.ok(a.ms >= HANG_TOTAL - 5, `a 504 after ${a.ms} ms, before its ${HANG_TOTAL} ms deadline`);
      assert.ok((a.elapsed_ms ?? 0) >= HANG_TOTAL, `elapsed_ms ${a.elapsed_ms}`);
      assert.ok(a.ms <= HANG_TOTAL + LATE, `a 504 after ${a.ms} ms, deadline ${HANG_TOTAL} ms`);
    }
    await sleep(100);
    assert.equal(stillOpen(idle), 1_000, 'the idle keep-alive connections are still open');
    await sleep(200);
    assert.ok(demo.stats.aborted >= 200, `the upstream saw ${demo.stats.aborted} aborted requests`);
  },
);
