/**
 * Two gateway processes (the real CLI) sharing one Redis job store (SPEC §10): a request offloaded
 * to a job on one instance is polled, long-polled and its result fetched on the other; a job owned
 * by one client is not shown to another on either instance.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import { spawnGateway } from '../helpers.ts';

const REDIS = process.env.SLUICE_TEST_REDIS ?? 'redis://127.0.0.1:6379/9';

describe('several instances on one Redis', () => {
  test('202 on one instance; poll, ?wait and the result on the other', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const prefix = `sluice-test-${randomBytes(4).toString('hex')}:`;
    t.after(async () => {
      // This test's keys only (other tests share the server): scanned by prefix and deleted.
      const redis = new Redis(REDIS, { lazyConnect: true });
      await redis.connect();
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
        cursor = next;
        if (keys.length > 0) await redis.del(...keys);
      } while (cursor !== '0');
      await redis.quit();
    });
    const yaml = `
store: "${REDIS}?prefix=${prefix}"
upstreams: { demo: { targets: ["${demo.url}"] } }
routes:
  - { name: reports, match: { path: /slow }, upstream: demo, async: { mode: auto, after: 200ms } }
`;
    const a = await spawnGateway(yaml);
    t.after(() => a.stop());
    const b = await spawnGateway(yaml);
    t.after(() => b.stop());

    const accepted = await fetch(a.url('/slow?ms=1200'), { headers: { authorization: 'Bearer alice' } });
    assert.equal(accepted.status, 202);
    const location = accepted.headers.get('location') ?? '';
    assert.match(location, /^\/_sluice\/jobs\/J/);
    await accepted.arrayBuffer();

    // The other instance knows the job at once, and its long poll wakes when the first one completes it.
    const early = await fetch(b.url(location), { headers: { authorization: 'Bearer alice' } });
    assert.equal(early.status, 200);
    assert.equal(((await early.json()) as { status: string }).status, 'running');
    const t0 = performance.now();
    const done = await fetch(b.url(`${location}?wait=10s`), { headers: { authorization: 'Bearer alice' } });
    const waited = performance.now() - t0;
    const job = (await done.json()) as { status: string; result_url: string };
    assert.equal(job.status, 'completed');
    assert.ok(waited < 5_000, `woken by the completion on the other instance after ${waited} ms`);
    const result = await fetch(b.url(job.result_url), { headers: { authorization: 'Bearer alice' } });
    assert.equal(result.status, 200);
    assert.deepEqual(await result.json(), { slept_ms: 1200 });

    // Owner binding holds across instances.
    for (const gw of [a, b]) {
      const other = await fetch(gw.url(location), { headers: { authorization: 'Bearer mallory' } });
      assert.equal(other.status, 404);
      await other.arrayBuffer();
    }
  });
});
