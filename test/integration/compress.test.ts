/**
 * Compression through the gateway over real sockets (SPEC §6): negotiation by Accept-Encoding, bodies
 * that decode to the exact original, the cases left alone, a dripping response that arrives chunk by
 * chunk, and compressed variants kept by the response cache.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { type IncomingHttpHeaders, request } from 'node:http';
import { describe, test } from 'node:test';
import { brotliDecompressSync, createGunzip, gunzipSync, gzipSync, zstdDecompressSync } from 'node:zlib';
import { startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import { startHttpServer, startTestGateway } from '../helpers.ts';

interface Got {
  status: number;
  headers: IncomingHttpHeaders;
  raw: Buffer;
}

/** A request with exactly these headers; the body as received (still encoded). */
function send(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Got> {
  return new Promise((resolve, reject) => {
    request(url, { headers, method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, raw: Buffer.concat(chunks) }),
      );
    })
      .on('error', reject)
      .end();
  });
}

function decode(got: Got): Buffer {
  switch (got.headers['content-encoding']) {
    case 'br':
      return brotliDecompressSync(got.raw);
    case 'gzip':
      return gunzipSync(got.raw);
    case 'zstd':
      return zstdDecompressSync(got.raw);
    default:
      return got.raw;
  }
}

/** A varied JSON document of about `kb` KiB (compressible, not trivially). */
function document(kb: number): Buffer {
  const items: unknown[] = [];
  let i = 0;
  while (JSON.stringify(items).length < kb * 1024)
    items.push({
      id: i,
      name: `item ${i}`,
      tag: createHash('sha1').update(String(i++)).digest('hex').slice(0, 12),
    });
  return Buffer.from(JSON.stringify(items));
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('compression', () => {
  test('br, zstd and gzip by Accept-Encoding; the body decodes byte for byte; validators weakened', async (t) => {
    const body = document(300);
    const up = await startHttpServer((_req, res) => {
      res.writeHead(200, {
        'content-type': 'application/json',
        etag: '"doc-1"',
        'content-length': body.length,
      });
      res.end(body);
    });
    t.after(() => up.close());
    const gw = await startTestGateway(`
upstreams: { app: { targets: ["${up.url}"] } }
routes: [{ name: r, match: { path: / }, upstream: app, compress: true }]
`);
    t.after(() => gw.close());
    for (const [ae, want] of [
      ['br, gzip, zstd', 'br'],
      ['gzip;q=0.5, zstd', 'zstd'],
      ['gzip', 'gzip'],
      ['deflate, gzip;q=0.1', 'gzip'],
      ['*', 'br'],
    ] as const) {
      const got = await send(gw.url('/doc'), { 'accept-encoding': ae });
      assert.equal(got.status, 200);
      assert.equal(got.headers['content-encoding'], want, ae);
      assert.equal(got.headers['content-length'], undefined);
      assert.match(String(got.headers.vary), /accept-encoding/i);
      assert.equal(got.headers.etag, 'W/"doc-1"');
      assert.ok(got.raw.length < body.length / 2, `${want}: ${got.raw.length} bytes of ${body.length}`);
      assert.equal(sha(decode(got)), sha(body), `${want} decodes to the original`);
    }
    const entry = gw.log.entries.at(-1);
    assert.equal(entry?.encoding, 'br');
    assert.equal(entry?.bytes_out, body.length);
    // No Accept-Encoding, or identity only: sent as is, with Vary for caches on the way.
    const plainCases: Record<string, string>[] = [
      {},
      { 'accept-encoding': 'identity' },
      { 'accept-encoding': 'br;q=0, gzip;q=0' },
    ];
    for (const headers of plainCases) {
      const plain = await send(gw.url('/doc'), headers);
      assert.equal(plain.headers['content-encoding'], undefined);
      assert.equal(plain.headers['content-length'], String(body.length));
      assert.equal(plain.headers.etag, '"doc-1"');
      assert.match(String(plain.headers.vary), /accept-encoding/i);
      assert.equal(sha(plain.raw), sha(body));
    }
  });

  test('left alone: small, event streams, already encoded, no-transform, ranges, HEAD, other types, 204', async (t) => {
    const big = 'a'.repeat(8192);
    const up = await startHttpServer((req, res) => {
      const p = req.url ?? '/';
      const h: Record<string, string> = { 'content-type': 'text/plain' };
      if (p === '/small') return res.writeHead(200, { ...h, 'content-length': '10' }).end('0123456789');
      if (p === '/sse')
        return res.writeHead(200, { 'content-type': 'text/event-stream' }).end(`data: ${big}\n\n`);
      if (p === '/encoded')
        return res.writeHead(200, { ...h, 'content-encoding': 'gzip' }).end(gzipSync(big));
      if (p === '/no-transform')
        return res.writeHead(200, { ...h, 'cache-control': 'no-transform' }).end(big);
      if (p === '/range') return res.writeHead(206, { ...h, 'content-range': `bytes 0-8191/20000` }).end(big);
      if (p === '/png') return res.writeHead(200, { 'content-type': 'image/png' }).end(big);
      if (p === '/empty') return res.writeHead(204).end();
      res.writeHead(200, h).end(big);
    });
    t.after(() => up.close());
    const gw = await startTestGateway(`
upstreams: { app: { targets: ["${up.url}"] } }
routes: [{ name: r, match: { path: / }, upstream: app, compress: { min_size: 1KB } }]
`);
    t.after(() => gw.close());
    const ae = { 'accept-encoding': 'br, gzip' };
    for (const p of ['/small', '/sse', '/no-transform', '/range', '/png', '/empty']) {
      const got = await send(gw.url(p), ae);
      assert.equal(got.headers['content-encoding'], undefined, p);
    }
    const encoded = await send(gw.url('/encoded'), ae);
    assert.equal(encoded.headers['content-encoding'], 'gzip', 'the upstream encoding is kept, not doubled');
    assert.equal(gunzipSync(encoded.raw).toString(), big);
    const head = await send(gw.url('/text'), ae, 'HEAD');
    assert.equal(head.headers['content-encoding'], undefined);
    const text = await send(gw.url('/text'), ae);
    assert.equal(text.headers['content-encoding'], 'br');
  });

  test('a dripping response arrives compressed chunk by chunk, not at the end', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const gw = await startTestGateway(`
upstreams: { demo: { targets: ["${demo.url}"] } }
routes: [{ name: r, match: { path: / }, upstream: demo, compress: { min_size: 0KB, algorithms: [gzip] } }]
`);
    t.after(() => gw.close());
    // 5 chunks of 2 KiB, 300 ms apart: the first decoded bytes must come long before the last chunk.
    const t0 = performance.now();
    const times: number[] = [];
    let text = '';
    await new Promise<void>((resolve, reject) => {
      request(
        gw.url('/drip?chunks=5&every=300&size=2048'),
        { headers: { 'accept-encoding': 'gzip' } },
        (res) => {
          assert.equal(res.headers['content-encoding'], 'gzip');
          const gunzip = createGunzip();
          res.pipe(gunzip);
          gunzip.on('data', (c: Buffer) => {
            times.push(performance.now() - t0);
            text += c.toString();
          });
          gunzip.on('end', () => resolve());
          gunzip.on('error', reject);
        },
      )
        .on('error', reject)
        .end();
    });
    assert.equal(text.split('\n').filter(Boolean).length, 5);
    assert.ok(times[0] < 600, `first chunk decoded at ${times[0]} ms`);
    assert.ok(times.length >= 4, `decoded in ${times.length} pieces`);
    assert.ok((times.at(-1) ?? 0) >= 1_100, 'the last chunk came when it was sent');
  });

  test('back-pressure: a client that stops reading a large compressed body pauses the upstream, then gets all of it', async (t) => {
    const base = document(64);
    const body = Buffer.concat(Array.from({ length: 40 }, (_, i) => base.subarray(i, 60_000 + i)));
    let paused = 0;
    const up = await startHttpServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
      // Written in 64 KiB pieces, honouring back-pressure, counting the pauses the gateway causes.
      let i = 0;
      const next = () => {
        while (i < body.length) {
          const ok = res.write(body.subarray(i, i + 65_536));
          i += 65_536;
          if (!ok) {
            paused++;
            res.once('drain', next);
            return;
          }
        }
        res.end();
      };
      next();
    });
    t.after(() => up.close());
    const gw = await startTestGateway(`
upstreams: { app: { targets: ["${up.url}"] } }
routes: [{ name: r, match: { path: / }, upstream: app, compress: { algorithms: [gzip] } }]
`);
    t.after(() => gw.close());
    const got = await new Promise<Buffer>((resolve, reject) => {
      request(gw.url('/big'), { headers: { 'accept-encoding': 'gzip' } }, (res) => {
        assert.equal(res.headers['content-encoding'], 'gzip');
        res.pause();
        setTimeout(() => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve(Buffer.concat(chunks)));
          res.resume();
        }, 500);
      })
        .on('error', reject)
        .end();
    });
    assert.equal(sha(gunzipSync(got)), sha(body), `${body.length} bytes, whole`);
    assert.ok(paused >= 1, 'the upstream was paused while the client did not read');
  });

  test('the cache keeps compressed variants apart and serves them without recompressing', async (t) => {
    const body = document(64);
    let hits = 0;
    const up = await startHttpServer((_req, res) => {
      hits++;
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=60' });
      res.end(body);
    });
    t.after(() => up.close());
    const gw = await startTestGateway(`
upstreams: { app: { targets: ["${up.url}"] } }
routes: [{ name: r, match: { path: / }, upstream: app, compress: true, cache: {} }]
`);
    t.after(() => gw.close());
    const first = await send(gw.url('/doc'), { 'accept-encoding': 'gzip, deflate, br' });
    assert.equal(first.headers['content-encoding'], 'br');
    assert.equal(first.headers['cache-status'], 'sluice; fwd=miss; stored');
    // Another spelling of the same capabilities: the same variant, from the cache.
    const hit = await send(gw.url('/doc'), { 'accept-encoding': 'br, gzip' });
    assert.match(String(hit.headers['cache-status']), /^sluice; hit/);
    assert.equal(hit.headers['content-encoding'], 'br');
    assert.equal(hit.headers['content-length'], String(hit.raw.length));
    assert.equal(sha(decode(hit)), sha(body));
    const chrome = await send(gw.url('/doc'), { 'accept-encoding': 'gzip, deflate, br, zstd' });
    assert.match(
      String(chrome.headers['cache-status']),
      /^sluice; hit/,
      'br is what this route picks for it too',
    );
    const gzipOnly = await send(gw.url('/doc'), { 'accept-encoding': 'gzip' });
    assert.equal(gzipOnly.headers['content-encoding'], 'gzip');
    assert.equal(gzipOnly.headers['cache-status'], 'sluice; fwd=vary-miss; stored');
    const identity = await send(gw.url('/doc'));
    assert.equal(identity.headers['content-encoding'], undefined);
    assert.equal(sha(identity.raw), sha(body));
    assert.equal(
      (await send(gw.url('/doc'), { 'accept-encoding': 'gzip' })).headers['content-encoding'],
      'gzip',
    );
    assert.equal(hits, 3, 'br, gzip and identity: one upstream request each');
  });
});
