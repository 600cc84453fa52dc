/**
 * Streaming both ways with back-pressure (SPEC §3, §4): large bodies pass with flat memory, a slow
 * client pauses the upstream without tripping the read timeout, and a client that stops reading is
 * closed after client.send_timeout.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { type DemoUpstream, startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import { H1_ONLY, sleep, spawnGateway, startTestGateway, type TestGateway } from '../helpers.ts';

function get(url: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false }, resolve);
    req.on('error', reject);
    req.end();
  });
}

describe('streaming', () => {
  let demo: DemoUpstream;
  let gw: TestGateway;

  before(async () => {
    demo = await startDemoUpstream({ port: 0 });
    gw = await startTestGateway(`
client: { send_timeout: 1500ms }
upstreams:
  demo: { targets: ["${demo.url}"] }
routes:
  - { name: slowread, match: { path: /sr }, upstream: demo, strip_prefix: true, timeouts: { read: 200ms, total: 30s } }
  - { name: demo, match: { path: / }, upstream: demo, max_body: 64MB, timeouts: { total: 60s } }
`);
  });
  after(async () => {
    await gw.close();
    await demo.close();
  });

  test('a 512 MiB download streams through a gateway process with flat memory', H1_ONLY, async (t) => {
    const child = await spawnGateway(`
upstreams:
  demo: { targets: ["${demo.url}"] }
routes:
  - { name: demo, match: { path: / }, upstream: demo, timeouts: { total: 60s } }
`);
    t.after(() => child.stop());
    const download = async (size: string) => {
      const res = await get(child.url(`/size/${size}`));
      assert.equal(res.statusCode, 200);
      let bytes = 0;
      for await (const chunk of res) bytes += (chunk as Buffer).length;
      return bytes;
    };
    // Buffers are collected lazily, so RSS first climbs by tens of MiB whatever the body size. Reach
    // that plateau with a 256 MiB transfer; then 512 MiB more must leave the peak where it was —
    // a gateway that buffered would grow by hundreds of MiB.
    assert.equal(await download('256m'), 256 * 1024 * 1024);
    const plateau = child.memory().peakKiB;
    assert.equal(await download('512m'), 512 * 1024 * 1024);
    const grewMiB = (child.memory().peakKiB - plateau) / 1024;
    assert.ok(grewMiB < 48, `gateway peak RSS grew by ${grewMiB.toFixed(1)} MiB while 512 MiB streamed`);
  });

  test('an 8 MiB upload arrives byte for byte (hash checked by the upstream)', H1_ONLY, async () => {
    const body = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < body.length; i += 4096) body.writeUInt32LE((i * 2654435761) >>> 0, i);
    const want = createHash('sha256').update(body).digest('hex');
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = httpRequest(gw.url('/echo'), { method: 'POST', agent: false }, resolve);
      req.on('error', reject);
      // Chunked: written in 64 KiB pieces respecting back-pressure.
      (async () => {
        for (let i = 0; i < body.length; i += 65536) {
          if (!req.write(body.subarray(i, i + 65536))) await once(req, 'drain');
        }
        req.end();
      })();
    });
    let text = '';
    for await (const c of res) text += c;
    const echo = JSON.parse(text) as {
      body_bytes: number;
      body_sha256: string;
      headers: Record<string, string>;
    };
    assert.equal(echo.body_bytes, body.length);
    assert.equal(echo.body_sha256, want);
    const e = await gw.entry(String(res.headers['x-request-id']));
    assert.equal(e.bytes_in, body.length);
  });

  test('a slow client pauses the upstream; the read timeout does not run meanwhile', H1_ONLY, async () => {
    // 8 MiB cannot sit in socket buffers: the gateway must pause the upstream while the client sleeps.
    const res = await get(gw.url('/sr/size/8m'));
    assert.equal(res.statusCode, 200);
    res.pause();
    await sleep(800); // four times the 200 ms read timeout
    let bytes = 0;
    let complete = false;
    await new Promise<void>((resolve) => {
      res.on('data', (c: Buffer) => {
        bytes += c.length;
      });
      res.on('end', () => {
        complete = res.complete;
        resolve();
      });
      res.on('error', () => resolve());
      res.on('aborted', () => resolve());
      res.resume();
    });
    assert.equal(bytes, 8 * 1024 * 1024);
    assert.ok(complete);
    const e = await gw.entry(String(res.headers['x-request-id']));
    assert.equal(e.outcome, 'ok');
  });

  test(
    'a client that stops reading is closed after client.send_timeout and the upstream aborted',
    H1_ONLY,
    async () => {
      const aborted = once(demo.events, 'aborted');
      const t0 = performance.now();
      const res = await get(gw.url('/size/64m'));
      res.pause();
      const e = await gw.entry(String(res.headers['x-request-id']));
      const ms = performance.now() - t0;
      assert.equal(e.outcome, 'client_aborted');
      assert.equal(e.error, 'client-send-timeout');
      assert.ok(ms >= 1450 && ms < 4000, `closed after ${ms} ms`);
      await aborted;
      // Reading again, the client finds an incomplete body, never a complete one.
      let bytes = 0;
      const complete = await new Promise<boolean>((resolve) => {
        res.on('data', (c: Buffer) => {
          bytes += c.length;
        });
        res.on('end', () => resolve(res.complete));
        res.on('error', () => resolve(false));
        res.on('aborted', () => resolve(false));
        res.resume();
      });
      assert.equal(complete, false);
      assert.ok(bytes < 64 * 1024 * 1024);
    },
  );

  test('Server-Timing: the gateway adds its own and the upstream time, passes the upstream entries and logs them', async () => {
    const res = await fetch(gw.url('/timing'));
    await res.arrayBuffer();
    const st = res.headers.get('server-timing') ?? '';
    assert.match(st, /db;dur=\d+/);
    assert.match(st, /ext;dur=\d+/);
    assert.match(st, /sluice;desc="gateway";dur=\d+(\.\d+)?/);
    assert.match(st, /upstream;desc="upstream";dur=\d+(\.\d+)?/);
    const e = await gw.entry(String(res.headers.get('x-request-id')));
    assert.deepEqual(Object.keys(e.upstream_timing ?? {}).sort(), ['db', 'ext', 'transform']);
    assert.equal(e.upstream_timing?.db, 12);
  });
});
