/**
 * HTTP/2 towards clients (SPEC §3), what only an HTTP/2 client can show: one TLS port speaking h2 and
 * http/1.1 by ALPN, many streams on one connection, an upload and a download with flow control as
 * back-pressure, a client's RST_STREAM aborting the upstream call, a client that stops reading cut
 * after send_timeout with a reset (never a clean end), and a drain that lets open streams finish
 * before GOAWAY. The other suites (timeouts, errors, async, jobs, resilience, headers…) run over h2
 * too: `SLUICE_TEST_PROTOCOL=h2` in package.json's test script.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import http2, { type ClientHttp2Session } from 'node:http2';
import https from 'node:https';
import type { Server as NetServer } from 'node:net';
import { after, before, describe, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { loadConfigText } from '../../src/config/load.ts';
import { type DemoUpstream, startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import { type Sluice, startSluice } from '../../src/main.ts';
import { MemoryAccessLog } from '../../src/observability/access-log.ts';
import { certDir } from '../certs.ts';
import { sleep, startRawServer, startTestGateway, type TestServer } from '../helpers.ts';

const certs = certDir('sluice-h2-test-');
let ca: string;
let demo: DemoUpstream;
let sluice: Sluice;
let early: TestServer<NetServer>;
let repeated: TestServer<NetServer>;
const log = new MemoryAccessLog();

before(async () => {
  // bcrypt at cost 12 (about a quarter of a second here): an access check that takes a while.
  writeFileSync(certs.path('users'), `slow:${bcrypt.hashSync('pw', 12)}\n`);
  early = await startRawServer((socket) => {
    socket.once('data', () =>
      socket.end(
        'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n' +
          'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\nfinal',
      ),
    );
  });
  repeated = await startRawServer((socket) => {
    socket.once('data', () =>
      socket.end(
        'HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nX-Multi: one\r\nx-multi: two\r\n' +
          '__proto__: kept\r\nContent-Type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok',
      ),
    );
  });
  certs.ca();
  certs.issue('gw', 'DNS:localhost');
  ca = readFileSync(certs.path('ca.pem'), 'utf8');
  demo = await startDemoUpstream({ port: 0 });
  const config = loadConfigText(
    `
listen: [{ address: "127.0.0.1:0", tls: { cert: "${certs.path('gw.pem')}", key: "${certs.path('gw.key')}" } }]
client: { send_timeout: 1s, max_headers: 10 }
shutdown_timeout: 5s
upstreams: { demo: { targets: ["${demo.url}"] }, early: { targets: ["${early.url}"] }, repeated: { targets: ["${repeated.url}"] } }
routes:
  - { name: auth, match: { path: /auth }, upstream: demo, strip_prefix: true, auth: { basic: { users: "${certs.path('users')}" } } }
  - { name: early, match: { path: /early }, upstream: early }
  - { name: repeated, match: { path: /repeated }, upstream: repeated }
  - { name: read, match: { path: /r }, upstream: demo, strip_prefix: true, timeouts: { read: 200ms } }
  - { name: small, match: { path: /small }, upstream: demo, strip_prefix: true, max_body: 1MB }
  - { name: all, match: { path: / }, upstream: demo }
`,
    'h2.yaml',
  );
  sluice = await startSluice(config, { accessLog: log, admin: false });
});
after(async () => {
  await early.close();
  await repeated.close();
  await sluice.close(500);
  await demo.close();
  certs.remove();
});

function session(): ClientHttp2Session {
  const s = http2.connect(`https://localhost:${sluice.port}`, { ca });
  s.on('error', () => {});
  return s;
}

interface H2Reply {
  status: number;
  headers: http2.IncomingHttpHeaders;
  body: Buffer;
}

function request(s: ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const req = s.request(headers);
    let status = 0;
    let h: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on('response', (r) => {
      h = r;
      status = Number(r[':status']);
    });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve({ status, headers: h, body: Buffer.concat(chunks) }));
    req.on('error', reject);
    req.end(body);
  });
}

describe('HTTP/2 towards clients', () => {
  test('one TLS port: h2 by ALPN and http/1.1 for clients that only speak it; many streams on one connection', async () => {
    const s = session();
    const replies = await Promise.all(
      Array.from({ length: 20 }, (_, i) => request(s, { ':path': `/slow?ms=${50 + i}` })),
    );
    assert.equal(s.alpnProtocol, 'h2');
    assert.ok(replies.every((r) => r.status === 200));
    assert.equal(replies[0].headers.via, '1.1 sluice');
    assert.match(String(replies[0].headers['x-request-id']), /^[0-9A-Z]{26}$/);
    assert.match(String(replies[0].headers['server-timing']), /sluice;desc="gateway"/);
    s.close();

    const h1 = await new Promise<{ status: number; alpn: string | false }>((resolve, reject) => {
      https
        .get(
          {
            host: 'localhost',
            port: sluice.port,
            path: '/fast',
            ca,
            agent: false,
            ALPNProtocols: ['http/1.1'],
          } as https.RequestOptions,
          (res) => {
            res.resume();
            res.on('end', () =>
              resolve({
                status: res.statusCode ?? 0,
                alpn: (res.socket as { alpnProtocol?: string | false }).alpnProtocol ?? false,
              }),
            );
          },
        )
        .on('error', reject);
    });
    assert.deepEqual(h1, { status: 200, alpn: 'http/1.1' });
  });

  test('an 8 MiB upload arrives byte for byte; flow control paces the client', async () => {
    const body = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < body.length; i += 4096) body.writeUInt32LE((i * 2654435761) >>> 0, i);
    const want = createHash('sha256').update(body).digest('hex');
    const s = session();
    const r = await request(s, { ':method': 'POST', ':path': '/echo' }, body);
    s.close();
    assert.equal(r.status, 200);
    const echo = JSON.parse(r.body.toString()) as { body_bytes: number; body_sha256: string };
    assert.equal(echo.body_bytes, body.length);
    assert.equal(echo.body_sha256, want);
    const e = await log.next((x) => x.request_id === r.headers['x-request-id']);
    assert.equal(e.bytes_in, body.length);
    assert.equal(e.protocol, 'HTTP/2.0');
  });

  test('a body over max_body in DATA frames (no Content-Length) is 413; a Host that disagrees with :authority is 400; max_headers without pseudo-headers', async () => {
    const s = session();
    const big = await request(
      s,
      { ':method': 'POST', ':path': '/small/echo' },
      Buffer.alloc(2 * 1024 * 1024),
    );
    assert.equal(big.status, 413);
    assert.equal(JSON.parse(big.body.toString()).type, 'https://sluice.dev/problems/body-too-large');
    const authority = `localhost:${sluice.port}`;
    const two = await request(s, { ':path': '/fast', ':authority': authority, host: 'other.example' });
    assert.equal(two.status, 400);
    assert.match(JSON.parse(two.body.toString()).detail, /more than one Host/);
    const same = await request(s, { ':path': '/fast', ':authority': authority, host: authority });
    assert.equal(same.status, 200);
    // client.max_headers counts the request's own headers, not the pseudo-headers.
    const ten = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`x-h${i}`, 'v']));
    assert.equal((await request(s, { ':path': '/fast', ...ten })).status, 200);
    const eleven = { ...ten, 'x-h10': 'v' };
    assert.equal((await request(s, { ':path': '/fast', ...eleven })).status, 431);
    s.close();
  });

  test('a slow reader pauses the upstream (flow control is back-pressure); the read timeout does not run meanwhile', async () => {
    const s = session();
    const req = s.request({ ':path': '/r/size/8m' });
    const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
    assert.equal(headers[':status'], 200);
    req.pause();
    await sleep(800); // four times the route's 200 ms read timeout
    let bytes = 0;
    req.on('data', (c: Buffer) => {
      bytes += c.length;
    });
    req.resume();
    await once(req, 'end');
    assert.equal(req.rstCode, http2.constants.NGHTTP2_NO_ERROR);
    assert.equal(bytes, 8 * 1024 * 1024);
    const e = await log.next((x) => x.request_id === headers['x-request-id']);
    assert.equal(e.outcome, 'ok');
    s.close();
  });

  test('a client that stops reading is reset after client.send_timeout, never ended cleanly; the upstream is aborted', async () => {
    const aborted = once(demo.events, 'aborted');
    const s = session();
    const req = s.request({ ':path': '/size/64m' });
    req.on('error', () => {}); // the reset below
    const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
    req.pause();
    const e = await log.next((x) => x.request_id === headers['x-request-id']);
    assert.equal(e.outcome, 'client_aborted');
    assert.equal(e.error, 'client-send-timeout');
    await aborted;
    req.resume();
    if (!req.closed) await once(req, 'close');
    assert.equal(req.rstCode, http2.constants.NGHTTP2_INTERNAL_ERROR);
    s.close();
  });

  test("the client's RST_STREAM aborts the upstream call at once; the connection's other streams go on", async () => {
    const s = session();
    const other = request(s, { ':path': '/slow?ms=300' });
    const aborted = once(demo.events, 'aborted');
    const req = s.request({ ':path': '/hang' });
    await once(demo.events, 'request');
    const t0 = performance.now();
    req.close(http2.constants.NGHTTP2_CANCEL);
    await aborted;
    assert.ok(performance.now() - t0 < 1_000, 'the upstream saw its request aborted');
    const e = await log.next((x) => x.path === '/hang');
    assert.equal(e.outcome, 'client_aborted');
    assert.equal((await other).status, 200);
    s.close();
  });

  test('a client that resets its stream during a slow access check is logged 499 at once, never sent upstream', async () => {
    const before = demo.stats.requests;
    const s = session();
    const req = s.request({
      ':path': '/auth/fast',
      authorization: `Basic ${Buffer.from('slow:pw').toString('base64')}`,
    });
    req.on('error', () => {});
    await sleep(50);
    req.close(http2.constants.NGHTTP2_CANCEL);
    const t0 = performance.now();
    const e = await log.next((x) => x.route === 'auth');
    assert.equal(e.status, 499);
    assert.equal(e.outcome, 'client_aborted');
    assert.ok(performance.now() - t0 < 3_000, 'logged when the check ended, not at the route budget');
    await sleep(200);
    assert.equal(demo.stats.requests, before, 'nothing reached the upstream');
    s.close();
  });

  test('an upstream 103 Early Hints is skipped: the final response reaches h2 and HTTP/1.1 clients', async (t) => {
    const s = session();
    const r = await request(s, { ':path': '/early' });
    s.close();
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), 'final');
    const plain = await startTestGateway(`
upstreams: { early: { targets: ["${early.url}"] } }
routes: [{ name: early, match: { path: / }, upstream: early }]
`);
    t.after(() => plain.close());
    const h1 = await fetch(plain.url('/early'));
    assert.equal(h1.status, 200);
    assert.equal(await h1.text(), 'final');
  });

  test('repeated upstream headers reach an h2 client as repeated fields, whatever their case; a __proto__ header too', async () => {
    const s = session();
    try {
      const r = await request(s, { ':path': '/repeated' });
      assert.equal(r.status, 200);
      assert.deepEqual(r.headers['set-cookie'], ['a=1', 'b=2']);
      assert.equal(r.headers['x-multi'], 'one, two');
      assert.equal(Object.getOwnPropertyDescriptor(r.headers, '__proto__')?.value, 'kept');
      assert.equal(r.headers['content-type'], 'text/plain');
      assert.match(String(r.headers.via), /sluice/);
      assert.equal(r.body.toString(), 'ok');
    } finally {
      s.close();
    }
  });

  test('client.max_header_size holds on the first stream of a connection (before SETTINGS are acknowledged)', async () => {
    const s = session();
    const r = await request(s, { ':path': '/fast', 'x-big': 'v'.repeat(60_000) });
    s.close();
    assert.equal(r.status, 431);
    assert.equal(JSON.parse(r.body.toString()).type, 'https://sluice.dev/problems/headers-too-large');
  });

  test('a drain lets the streams in flight finish before GOAWAY', async () => {
    const own = await startSluice(
      loadConfigText(
        `
listen: [{ address: "127.0.0.1:0", tls: { cert: "${certs.path('gw.pem')}", key: "${certs.path('gw.key')}" } }]
upstreams: { demo: { targets: ["${demo.url}"] } }
routes: [{ name: all, match: { path: / }, upstream: demo }]
`,
        'drain.yaml',
      ),
      { accessLog: new MemoryAccessLog(), admin: false },
    );
    const s = http2.connect(`https://localhost:${own.port}`, { ca });
    s.on('error', () => {});
    const inflight = Array.from({ length: 5 }, () => request(s, { ':path': '/slow?ms=500' }));
    await sleep(150);
    const goaway = once(s, 'goaway');
    const closed = own.close(5_000);
    const replies = await Promise.all(inflight);
    assert.deepEqual(
      replies.map((r) => r.status),
      [200, 200, 200, 200, 200],
    );
    await goaway;
    await closed;
  });
});
