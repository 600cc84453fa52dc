import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { type TestContext, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { type DemoUpstream, startDemoUpstream } from '../src/demo/demo-upstream.ts';

async function start(t: TestContext): Promise<DemoUpstream> {
  const demo = await startDemoUpstream({ port: 0 });
  t.after(() => demo.close());
  return demo;
}

interface Resp {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

type ReqOpts = http.RequestOptions & { body?: Buffer | string | Readable };

/** One request on a fresh connection (agent: false), full body buffered. */
function request(url: string, opts: ReqOpts = {}): Promise<Resp> {
  return new Promise((resolve, reject) => {
    const { body, ...rest } = opts;
    const req = http.request(url, { agent: false, ...rest }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }),
      );
    });
    req.on('error', reject);
    if (body instanceof Readable) body.pipe(req);
    else req.end(body);
  });
}

// biome-ignore lint/suspicious/noExplicitAny: parsed JSON bodies are asserted field by field
type JsonBody = any;

async function json(
  url: string,
  opts: ReqOpts = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; data: JsonBody }> {
  const r = await request(url, opts);
  assert.match(String(r.headers['content-type']), /^application\/json/);
  return { status: r.status, headers: r.headers, data: JSON.parse(r.body.toString('utf8')) };
}

/**
 * Starts a request and resolves once the demo has seen it (so it can be aborted deterministically).
 * `ended` settles with the first failure seen on the request or its response (or undefined on a clean close).
 */
async function inFlight(
  demo: DemoUpstream,
  path: string,
): Promise<{
  req: http.ClientRequest;
  ended: Promise<Error | undefined>;
  response: () => http.IncomingMessage | undefined;
}> {
  const seen = once(demo.events, 'request');
  const req = http.get(demo.url + path, { agent: false });
  let response: http.IncomingMessage | undefined;
  const ended = new Promise<Error | undefined>((resolve) => {
    req.on('error', resolve);
    req.on('response', (res) => {
      response = res;
      res.resume();
      res.on('error', resolve);
      res.on('end', () => resolve(undefined));
      res.on('close', () => resolve(undefined));
    });
  });
  const [seenPath] = await seen;
  assert.equal(seenPath, new URL(path, 'http://x').pathname);
  return { req, ended, response: () => response };
}

test('startDemoUpstream: port 0 gives a real port in url; busy port rejects', async (t) => {
  const demo = await start(t);
  assert.notEqual(demo.port, 0);
  assert.equal(demo.url, `http://127.0.0.1:${demo.port}`);
  assert.equal(demo.server.keepAliveTimeout, 65_000);
  await assert.rejects(startDemoUpstream({ port: demo.port }), { code: 'EADDRINUSE' });
});

test('/fast: 200 text/plain ok, demo header, x-timeout-ms echoed, counters and events', async (t) => {
  const demo = await start(t);
  const seen = once(demo.events, 'request');
  const r = await request(demo.url + '/fast', { headers: { 'x-timeout-ms': '1234' } });
  assert.equal(r.status, 200);
  assert.match(String(r.headers['content-type']), /^text\/plain/);
  assert.equal(r.body.toString(), 'ok\n');
  assert.equal(r.headers['x-demo-upstream'], '1');
  assert.equal(r.headers['x-received-timeout-ms'], '1234');
  assert.deepEqual(await seen, ['/fast']);

  const f = await fetch(demo.url + '/fast', { method: 'POST', body: 'ignored' });
  assert.equal(f.status, 200);
  assert.equal(await f.text(), 'ok\n');
  assert.equal(f.headers.get('x-received-timeout-ms'), null);
  assert.deepEqual(demo.stats, { requests: 2, aborted: 0 });
});

test('unknown path → 404 JSON', async (t) => {
  const demo = await start(t);
  const r = await json(demo.url + '/nope?x=1');
  assert.equal(r.status, 404);
  assert.equal(typeof r.data.error, 'string');
  assert.equal(r.headers['x-demo-upstream'], '1');
  assert.equal((await json(demo.url + '/status')).status, 404);
});

test('query validation → 400 JSON error', async (t) => {
  const demo = await start(t);
  const bad = [
    '/slow?ms=abc',
    '/slow?ms=-1',
    '/slow?ms=1.5',
    '/slow?ms=3600001',
    '/drip?chunks=x',
    '/drip?every=-5',
    '/drip?size=0',
    '/stall?after=oops',
    '/reset?after_headers=2',
    '/timing?ms=soon',
    '/status/abc',
    '/status/99',
    '/status/100',
    '/status/199',
    '/status/600',
    '/status/2000',
    '/size/abc',
    '/size/-1',
    '/size/11g',
    '/size/1t',
  ];
  for (const path of bad) {
    const r = await json(demo.url + path, { headers: { 'x-timeout-ms': '5' } });
    assert.equal(r.status, 400, path);
    assert.equal(typeof r.data.error, 'string', path);
    assert.ok(r.data.error.length > 0, path);
    assert.equal(r.headers['x-received-timeout-ms'], '5', path);
  }
  assert.equal(demo.stats.aborted, 0);
});

test('/slow?ms=N sleeps then answers { slept_ms }', async (t) => {
  const demo = await start(t);
  const t0 = performance.now();
  const r = await json(demo.url + '/slow?ms=150');
  const elapsed = performance.now() - t0;
  assert.equal(r.status, 200);
  assert.deepEqual(r.data, { slept_ms: 150 });
  assert.equal(r.headers['x-demo-upstream'], '1');
  assert.ok(elapsed >= 140, `elapsed ${elapsed}`);
  assert.deepEqual((await json(demo.url + '/slow?ms=0')).data, { slept_ms: 0 });
});

test('/slow: a client abort is counted and reported (default 1000 ms never reached)', async (t) => {
  const demo = await start(t);
  const { req, ended } = await inFlight(demo, '/slow');
  const aborted = once(demo.events, 'aborted');
  req.destroy();
  await ended;
  assert.deepEqual(await aborted, ['/slow']);
  assert.deepEqual(demo.stats, { requests: 1, aborted: 1 });
  // The server is still perfectly usable and nothing fires later.
  assert.equal((await request(demo.url + '/fast')).status, 200);
  assert.equal(demo.stats.aborted, 1);
});

test('/hang never answers; a client abort is counted', async (t) => {
  const demo = await start(t);
  const { req, ended } = await inFlight(demo, '/hang');
  let answered = false;
  req.on('response', () => (answered = true));
  await delay(150);
  assert.equal(answered, false);
  const aborted = once(demo.events, 'aborted');
  req.destroy();
  await ended;
  assert.deepEqual(await aborted, ['/hang']);
  assert.equal(demo.stats.aborted, 1);
});

test('/hang with a client timeout: the client gives up, the demo sees the abort', async (t) => {
  const demo = await start(t);
  const aborted = once(demo.events, 'aborted');
  const err = await new Promise<Error>((resolve) => {
    const req = http.request(demo.url + '/hang', { method: 'POST', agent: false, timeout: 100 });
    req.on('timeout', () => req.destroy(new Error('client timeout')));
    req.on('error', resolve);
    req.end('some body that is read and ignored');
  });
  assert.equal(err.message, 'client timeout');
  assert.deepEqual(await aborted, ['/hang']);
});

test('close() resolves promptly with /hang, /slow, /drip and /stall connections open', async (t) => {
  const demo = await start(t);
  const pending = [
    await inFlight(demo, '/hang'),
    await inFlight(demo, '/slow?ms=3600000'),
    await inFlight(demo, '/drip?chunks=1000&every=1000'),
    await inFlight(demo, '/stall'),
  ];
  const t0 = performance.now();
  await demo.close();
  const elapsed = performance.now() - t0;
  assert.ok(elapsed < 1000, `close() took ${elapsed} ms`);
  for (const p of pending) {
    const err = (await p.ended) as NodeJS.ErrnoException | undefined;
    if (err) assert.ok(err.code === 'ECONNRESET' || /hang up|aborted/.test(err.message), String(err));
    else assert.equal(p.response()?.complete, false, 'a clean close must leave the body incomplete');
  }
  // Connections destroyed by close() itself are not client aborts.
  assert.equal(demo.stats.aborted, 0);
  await demo.close(); // idempotent
  await assert.rejects(request(demo.url + '/fast'), { code: 'ECONNREFUSED' });
});

test('/drip: headers at once, chunks spread over time, exact sizes', async (t) => {
  const demo = await start(t);
  const chunks = 5;
  const every = 100;
  const t0 = performance.now();
  const { res, arrivals, body } = await new Promise<{
    res: http.IncomingMessage;
    arrivals: number[];
    body: Buffer;
  }>((resolve, reject) => {
    http
      .get(`${demo.url}/drip?chunks=${chunks}&every=${every}`, { agent: false }, (res) => {
        const arrivals: number[] = [];
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => {
          arrivals.push(performance.now() - t0);
          parts.push(c);
        });
        res.on('end', () => resolve({ res, arrivals, body: Buffer.concat(parts) }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['transfer-encoding'], 'chunked');
  assert.match(String(res.headers['content-type']), /^text\/plain/);
  assert.equal(res.headers['x-demo-upstream'], '1');
  assert.equal(body.length, chunks * 16);
  const lines = body.toString('latin1').split('\n').slice(0, -1);
  assert.equal(lines.length, chunks);
  for (const [i, line] of lines.entries()) assert.ok(line.startsWith(`${i}:`) && line.length === 15, line);
  const spread = arrivals[arrivals.length - 1] - arrivals[0];
  assert.ok(spread >= (chunks - 1) * every * 0.8, `chunks spread over only ${spread} ms`);
  assert.ok(arrivals.length >= 3, `only ${arrivals.length} data events`);
  for (let i = 1; i < arrivals.length; i++) assert.ok(arrivals[i] >= arrivals[i - 1]);
});

test('/drip: size and every=0; chunks=0 is an empty body', async (t) => {
  const demo = await start(t);
  const r = await request(demo.url + '/drip?chunks=3&every=0&size=1000');
  assert.equal(r.status, 200);
  assert.equal(r.body.length, 3000);
  assert.ok(r.body.toString('latin1').startsWith('0:....'));
  const one = await request(demo.url + '/drip?chunks=2&every=0&size=1');
  assert.equal(one.body.toString(), '\n\n');
  const none = await request(demo.url + '/drip?chunks=0');
  assert.equal(none.status, 200);
  assert.equal(none.body.length, 0);
});

/** Opens /stall and resolves once `expected` body bytes arrived (plus a quiet period proving silence). */
async function openStall(demo: DemoUpstream, path: string, expected: number) {
  const req = http.get(demo.url + path, { agent: false });
  const reqError = new Promise<Error>((resolve) => req.on('error', resolve));
  const [res] = (await once(req, 'response')) as [http.IncomingMessage];
  let received = 0;
  res.on('data', (c: Buffer) => (received += c.length));
  const resError = new Promise<Error | undefined>((resolve) => {
    res.on('error', resolve);
    res.on('close', () => resolve(undefined));
  });
  while (received < expected) await delay(10);
  await delay(150);
  return { req, res, reqError, resError, received: () => received };
}

test('/stall: Content-Length N+1000, N bytes, then silence; close() makes the body fail as incomplete', async (t) => {
  const demo = await start(t);
  const s = await openStall(demo, '/stall?after=25', 25);
  assert.equal(s.res.statusCode, 200);
  assert.equal(s.res.headers['content-length'], '1025');
  assert.equal(s.res.headers['x-demo-upstream'], '1');
  assert.equal(s.received(), 25);
  assert.equal(s.res.complete, false);
  await demo.close();
  const err = (await s.resError) as NodeJS.ErrnoException | undefined;
  assert.equal(s.res.complete, false);
  assert.equal(s.received(), 25);
  if (err) assert.ok(err.code === 'ECONNRESET' || /aborted/.test(err.message), String(err));
});

test('/stall default 10 bytes; a client giving up is counted as aborted', async (t) => {
  const demo = await start(t);
  const s = await openStall(demo, '/stall', 10);
  assert.equal(s.res.headers['content-length'], '1010');
  assert.equal(s.received(), 10);
  const aborted = once(demo.events, 'aborted');
  s.req.destroy();
  assert.deepEqual(await aborted, ['/stall']);
  assert.equal(demo.stats.aborted, 1);
  const zero = await openStall(demo, '/stall?after=0', 0);
  assert.equal(zero.res.headers['content-length'], '1000');
  assert.equal(zero.received(), 0);
  zero.req.destroy();
});

test('/reset: TCP reset without a response → ECONNRESET', async (t) => {
  const demo = await start(t);
  const err = (await request(demo.url + '/reset').then(
    () => assert.fail('expected an error'),
    (e: unknown) => e,
  )) as NodeJS.ErrnoException;
  assert.ok(err.code === 'ECONNRESET' || err.message === 'socket hang up', String(err));
  await assert.rejects(fetch(demo.url + '/reset?after_headers=0'), TypeError);
  assert.deepEqual(demo.stats, { requests: 2, aborted: 0 });
});

test('/reset?after_headers=1: 200 headers and partial body, then a reset', async (t) => {
  const demo = await start(t);
  const req = http.get(demo.url + '/reset?after_headers=1', { agent: false });
  req.on('error', () => {});
  const [res] = (await once(req, 'response')) as [http.IncomingMessage];
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['x-demo-upstream'], undefined);
  let received = 0;
  res.on('data', (c: Buffer) => (received += c.length));
  const err = await new Promise<Error | undefined>((resolve) => {
    res.on('error', resolve);
    res.on('end', () => resolve(undefined));
    res.on('close', () => resolve(undefined));
  });
  assert.ok(err, 'the body must fail, not end cleanly');
  assert.ok((err as NodeJS.ErrnoException).code === 'ECONNRESET' || /aborted/.test(err.message), String(err));
  assert.equal(res.complete, false);
  assert.ok(received >= 0);
  assert.equal(demo.stats.aborted, 0);
});

test('/status/{code}: status, JSON body, Retry-After on 503, no body on 204/304', async (t) => {
  const demo = await start(t);
  for (const code of [200, 201, 302, 400, 404, 418, 429, 500, 502, 504, 599]) {
    const r = await json(demo.url + `/status/${code}`);
    assert.equal(r.status, code);
    assert.deepEqual(r.data, { status: code });
    assert.equal(r.headers['x-demo-upstream'], '1');
    assert.equal(r.headers['retry-after'], undefined);
  }
  const unavailable = await json(demo.url + '/status/503');
  assert.equal(unavailable.status, 503);
  assert.deepEqual(unavailable.data, { status: 503 });
  assert.equal(unavailable.headers['retry-after'], '1');
  for (const code of [204, 304]) {
    const r = await request(demo.url + `/status/${code}`);
    assert.equal(r.status, code);
    assert.equal(r.body.length, 0);
    assert.equal(r.headers['x-demo-upstream'], '1');
  }
  const viaFetch = await fetch(demo.url + '/status/502', { method: 'DELETE' });
  assert.equal(viaFetch.status, 502);
  assert.deepEqual(await viaFetch.json(), { status: 502 });
});

test('/size/{bytes}: exact lengths, suffixes, 5 MiB read in full', async (t) => {
  const demo = await start(t);
  for (const [spec, n] of [
    ['0', 0],
    ['1', 1],
    ['12345', 12345],
    ['65536', 65536],
    ['65537', 65537],
    ['16k', 16384],
    ['2K', 2048],
  ] as const) {
    const r = await request(demo.url + `/size/${spec}`);
    assert.equal(r.status, 200, spec);
    assert.equal(r.headers['content-type'], 'application/octet-stream');
    assert.equal(r.headers['content-length'], String(n), spec);
    assert.equal(r.body.length, n, spec);
  }
  // 5 MiB counted as it streams (not buffered here).
  const counted = await new Promise<{ n: number; len: string | undefined }>((resolve, reject) => {
    http
      .get(demo.url + '/size/5m', { agent: false }, (res) => {
        let n = 0;
        res.on('data', (c: Buffer) => (n += c.length));
        res.on('end', () => resolve({ n, len: res.headers['content-length'] }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
  assert.equal(counted.len, String(5 * 1024 * 1024));
  assert.equal(counted.n, 5 * 1024 * 1024);
  // HEAD of a huge body answers at once with the length and no body.
  const head = await request(demo.url + '/size/10g', { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers['content-length'], String(10 * 1024 ** 3));
  assert.equal(head.body.length, 0);
});

test('/size: respects back-pressure when the client does not read', async (t) => {
  const demo = await start(t);
  const serverSockets: Socket[] = [];
  demo.server.on('connection', (s: Socket) => serverSockets.push(s));
  const req = http.get(demo.url + '/size/1g', { agent: false });
  req.on('error', () => {});
  const [res] = (await once(req, 'response')) as [http.IncomingMessage];
  res.pause();
  await delay(300);
  assert.equal(serverSockets.length, 1);
  const buffered = serverSockets[0].writableLength;
  assert.ok(buffered < 8 * 1024 * 1024, `server buffered ${buffered} bytes for a paused client`);
  const aborted = once(demo.events, 'aborted');
  req.destroy();
  assert.deepEqual(await aborted, ['/size/1g']);
});

test('/echo: method, path, headers (repeated as arrays), body size and sha256', async (t) => {
  const demo = await start(t);
  const body = 'hello, sluice';
  const r = await json(demo.url + '/echo?a=1&b=two', {
    method: 'PUT',
    headers: {
      'X-Multi': ['one', 'two'],
      'X-Single': 'yes',
      'content-type': 'text/plain',
      'x-timeout-ms': '900',
    },
    body,
  });
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-demo-upstream'], '1');
  assert.equal(r.headers['x-received-timeout-ms'], '900');
  assert.equal(r.data.method, 'PUT');
  assert.equal(r.data.path, '/echo?a=1&b=two');
  assert.deepEqual(r.data.headers['x-multi'], ['one', 'two']);
  assert.equal(r.data.headers['x-single'], 'yes');
  assert.equal(r.data.headers['content-type'], 'text/plain');
  assert.equal(r.data.headers['x-timeout-ms'], '900');
  assert.equal(r.data.headers.host, `127.0.0.1:${demo.port}`);
  assert.equal(r.data.body_bytes, Buffer.byteLength(body));
  assert.equal(r.data.body_sha256, createHash('sha256').update(body).digest('hex'));

  const empty = await json(demo.url + '/echo');
  assert.equal(empty.data.method, 'GET');
  assert.equal(empty.data.body_bytes, 0);
  assert.equal(empty.data.body_sha256, createHash('sha256').digest('hex'));
});

test('/echo: 8 MiB streamed (chunked) upload hashes correctly', async (t) => {
  const demo = await start(t);
  const hash = createHash('sha256');
  const total = 8 * 1024 * 1024;
  const chunk = 64 * 1024;
  let sent = 0;
  const upload = new Readable({
    read() {
      if (sent >= total) {
        this.push(null);
        return;
      }
      const c = randomBytes(chunk);
      hash.update(c);
      sent += c.length;
      this.push(c);
    },
  });
  const r = await json(demo.url + '/echo', { method: 'POST', body: upload });
  assert.equal(r.status, 200);
  assert.equal(r.data.headers['transfer-encoding'], 'chunked');
  assert.equal(r.data.body_bytes, total);
  assert.equal(r.data.body_sha256, hash.digest('hex'));
});

function parseServerTiming(header: string): Map<string, { dur: number; desc?: string }> {
  const out = new Map<string, { dur: number; desc?: string }>();
  for (const entry of header.split(',')) {
    const [name, ...params] = entry.trim().split(';');
    let dur = Number.NaN;
    let desc: string | undefined;
    for (const p of params) {
      const [k, v] = p.trim().split('=');
      if (k === 'dur') dur = Number(v);
      if (k === 'desc') desc = JSON.parse(v);
    }
    out.set(name, { dur, desc });
  }
  return out;
}

test('/timing: Server-Timing with db, ext, transform', async (t) => {
  const demo = await start(t);
  const r = await json(demo.url + '/timing');
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-demo-upstream'], '1');
  const st = parseServerTiming(String(r.headers['server-timing']));
  assert.deepEqual([...st.keys()], ['db', 'ext', 'transform']);
  assert.equal(st.get('db')!.desc, 'database');
  assert.equal(st.get('ext')!.desc, 'external call');
  assert.equal(st.get('transform')!.desc, undefined);
  for (const { dur } of st.values()) assert.ok(Number.isFinite(dur) && dur > 0);

  const t0 = performance.now();
  const slow = await json(demo.url + '/timing?ms=200');
  const elapsed = performance.now() - t0;
  assert.ok(elapsed >= 180, `elapsed ${elapsed}`);
  const st2 = parseServerTiming(String(slow.headers['server-timing']));
  assert.deepEqual([...st2.keys()], ['db', 'ext', 'transform']);
  const sum = st2.get('db')!.dur + st2.get('ext')!.dur + st2.get('transform')!.dur;
  assert.ok(sum >= 180, `durations sum to ${sum}`);
  assert.ok(st2.get('db')!.dur >= st2.get('transform')!.dur);
  assert.ok(slow.data.total_ms >= 180);
});

test('/healthz and POST /_demo/health/{up|down}', async (t) => {
  const demo = await start(t);
  let h = await json(demo.url + '/healthz');
  assert.equal(h.status, 200);
  assert.deepEqual(h.data, { status: 'ok' });
  assert.equal(h.headers['x-demo-upstream'], '1');

  const down = await json(demo.url + '/_demo/health/down', { method: 'POST' });
  assert.equal(down.status, 200);
  assert.deepEqual(down.data, { healthy: false });
  assert.equal(demo.healthy, false);
  h = await json(demo.url + '/healthz');
  assert.equal(h.status, 503);

  const wrongMethod = await json(demo.url + '/_demo/health/up');
  assert.equal(wrongMethod.status, 405);
  assert.equal(wrongMethod.headers.allow, 'POST');
  assert.equal((await json(demo.url + '/healthz')).status, 503);
  assert.equal((await json(demo.url + '/_demo/health/sideways', { method: 'POST' })).status, 404);

  const up = await json(demo.url + '/_demo/health/up', { method: 'POST' });
  assert.deepEqual(up.data, { healthy: true });
  assert.equal((await json(demo.url + '/healthz')).status, 200);

  demo.setHealthy(false);
  assert.equal((await json(demo.url + '/healthz')).status, 503);
  demo.setHealthy(true);
  assert.equal((await json(demo.url + '/healthz')).status, 200);
});

test('keep-alive: several requests reuse one connection', async (t) => {
  const demo = await start(t);
  let connections = 0;
  demo.server.on('connection', () => connections++);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  for (const path of ['/fast', '/status/500', '/echo', '/size/100k', '/healthz']) {
    const r = await request(demo.url + path, { agent, method: 'POST', body: 'x'.repeat(1000) });
    assert.ok(r.status === 200 || r.status === 500, path);
  }
  assert.equal(connections, 1);
});

test('/catalog: cacheable JSON with max-age and a stable ETag, 304 on If-None-Match, 503 while down', async (t) => {
  const demo = await start(t);
  const r = await json(`${demo.url}/catalog?max-age=30`);
  assert.equal(r.status, 200);
  assert.equal(r.headers['cache-control'], 'max-age=30');
  assert.equal(r.headers.etag, '"catalog-v1"');
  assert.ok(Date.parse(String(r.headers['x-demo-generated-at'])) > 0);
  assert.equal((r.data.products as unknown[]).length, 40);
  const again = await request(`${demo.url}/catalog`, { headers: { 'if-none-match': '"catalog-v1"' } });
  assert.equal(again.status, 304);
  assert.equal(again.headers['cache-control'], 'max-age=5');
  assert.equal(again.body.length, 0);
  await json(`${demo.url}/_demo/health/down`, { method: 'POST' });
  assert.equal((await json(`${demo.url}/catalog`)).status, 503);
});
