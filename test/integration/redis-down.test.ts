/**
 * A Redis job store that is down when the gateway starts (SPEC §10 "Redis trouble"): the gateway
 * starts anyway, plain proxying is unaffected, and an offload is refused with 503 store-unavailable,
 * never acknowledged with a 202 for a job that was not committed.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { describe, test } from 'node:test';
import { startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import { problemOf, sleep, startTestGateway } from '../helpers.ts';

/** A loopback port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as { port: number };
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('Redis job store down', () => {
  test('the gateway starts, proxies, and answers offloads 503 store-unavailable', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const port = await closedPort();
    const gw = await startTestGateway(
      `
store: redis://127.0.0.1:${port}/0
upstreams: { demo: { targets: ["${demo.url}"] } }
routes:
  - { name: jobs, match: { path: /slow }, upstream: demo, async: { mode: auto, after: 100ms } }
  - { name: plain, match: { path: / }, upstream: demo }
`,
      { admin: true },
    );
    t.after(() => gw.close());
    assert.equal((await fetch(gw.url('/fast'))).status, 200, 'plain proxying is unaffected');
    // The upstream takes 4 s: only a 202 or the 503 can come first, and a 202 would be a lie.
    const res = await fetch(gw.url('/slow?ms=4000'));
    assert.equal(res.status, 503);
    assert.equal((await problemOf(res)).type, 'https://sluice.dev/problems/store-unavailable');
    assert.ok(res.headers.get('retry-after'));

    // The store's state shows in /readyz (which stays ready: plain routes work) and in /metrics.
    const admin = `http://127.0.0.1:${gw.sluice.adminPort}`;
    let ready: { status: string; job_store?: string } = { status: '' };
    for (let i = 0; i < 50 && ready.job_store !== 'down'; i++) {
      ready = (await (await fetch(`${admin}/readyz`)).json()) as typeof ready;
      if (ready.job_store !== 'down') await sleep(100);
    }
    assert.deepEqual(ready, { status: 'ready', job_store: 'down' });
    assert.match(await (await fetch(`${admin}/metrics`)).text(), /^sluice_job_store_up 0$/m);
  });
});
