/**
 * Client-side protection (SPEC §3, §4): header size and count (431), slowloris heads (408), idle request
 * bodies (408), body size per route (413), and strict framing (400 + connection closed).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { type TestContext, test } from 'node:test';
import { type DemoUpstream, startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import type { AccessLogEntry } from '../../src/observability/access-log.ts';
import {
  parseRaw,
  type RawResponse,
  rawRequest,
  startHttpServer,
  startTestGateway,
  type TestGateway,
} from '../helpers.ts';

const HEADER_TIMEOUT = 300;
const BODY_IDLE = 300;
/** Generous upper margin for a timer on a shared 2-core machine. */
const LATE = 1_000;

interface Setup {
  gw: TestGateway;
  demo: DemoUpstream;
}

async function setup(t: TestContext): Promise<Setup> {
  const demo = await startDemoUpstream({ port: 0 });
  t.after(() => demo.close());
  const gw = await startTestGateway(`
client:
  header_timeout: ${HEADER_TIMEOUT}ms
  body_idle_timeout: ${BODY_IDLE}ms
  max_header_size: 2KB
  max_headers: 10
upstreams:
  demo: { targets: ["${demo.url}"] }
routes:
  - { name: small, match: { path: /small }, upstream: demo, max_body: 1KB, strip_prefix: true }
  - { name: all, match: { path: / }, upstream: demo }
`);
  t.after(() => gw.close());
  return { gw, demo };
}

/** `p`, or a failure naming `what` after `ms`: a missing event must fail the test, not hang it. */
async function within<T>(p: Promise<T>, what: string, ms = 2_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The access-log entry of a request, failing instead of hanging when there is none. */
function entryOf(gw: TestGateway, id: string): Promise<AccessLogEntry> {
  return within(gw.entry(id), `the access-log entry of request ${id}`);
}

/** Asserts a gateway problem response (and its access-log line); returns the problem. */
async function assertProblem(
  gw: TestGateway,
  r: RawResponse,
  status: number,
  code: string,
): Promise<Record<string, unknown>> {
  assert.equal(r.status, status, r.raw);
  assert.equal(r.headers['content-type'], 'application/problem+json');
  const p = JSON.parse(r.body) as Record<string, unknown>;
  assert.equal(p.type, `https://sluice.dev/problems/${code}`);
  assert.equal(p.status, status);
  assert.equal(typeof r.headers['x-request-id'], 'string');
  assert.equal(p.request_id, r.headers['x-request-id']);
  assert.equal(r.headers['proxy-status'], undefined, '4xx carry no Proxy-Status');
  const e = await entryOf(gw, p.request_id as string);
  assert.equal(e.status, status);
  assert.equal(e.outcome, 'rejected');
  assert.equal(e.error, code);
  return p;
}

/** Opens a socket, writes `first`, and collects the response; `elapsed` is from the first byte written. */
async function openRaw(port: number) {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  await once(socket, 'connect');
  const chunks: Buffer[] = [];
  let firstDataAt = 0;
  socket.on('data', (c: Buffer) => {
    if (firstDataAt === 0) firstDataAt = performance.now();
    chunks.push(c);
  });
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  return {
    socket,
    closed,
    firstDataAt: () => firstDataAt,
    response: (isClosed: boolean) => parseRaw(Buffer.concat(chunks).toString('latin1'), isClosed),
  };
}

function waitClosed(s: { closed: Promise<void> }, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    s.closed.then(() => true),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Resolves when the demo upstream reports `n` aborted requests (or fails after `ms`). */
async function upstreamAborted(demo: DemoUpstream, n = 1, ms = 2_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (demo.stats.aborted < n) {
    if (performance.now() > deadline)
      assert.fail(`upstream saw ${demo.stats.aborted} aborted requests, not ${n}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('431 when the request head is larger than max_header_size', async (t) => {
  const { gw, demo } = await setup(t);
  const r = await rawRequest(gw.port, `GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(3_000)}\r\n\r\n`);
  await assertProblem(gw, r, 431, 'headers-too-large');
  assert.ok(r.closed, 'the connection is closed');
  assert.equal(demo.stats.requests, 0, 'the upstream never saw the request');
});

test('431 when there are more headers than max_headers, and exactly max_headers is fine', async (t) => {
  const { gw, demo } = await setup(t);
  const headers = (n: number) => Array.from({ length: n }, (_, i) => `X-H${i}: v\r\n`).join('');
  // Host + Connection + 8 = 10 headers: allowed.
  const ok = await rawRequest(
    gw.port,
    `GET /echo HTTP/1.1\r\nHost: x\r\n${headers(8)}Connection: close\r\n\r\n`,
  );
  assert.equal(ok.status, 200);
  assert.equal(demo.stats.requests, 1);
  // Host + 10 = 11, and far more: refused.
  for (const n of [10, 40]) {
    const r = await rawRequest(gw.port, `GET /echo HTTP/1.1\r\nHost: x\r\n${headers(n)}\r\n`);
    await assertProblem(gw, r, 431, 'headers-too-large');
  }
  assert.equal(demo.stats.requests, 1, 'the upstream never saw the refused requests');
});

test('slowloris: a head trickled slower than header_timeout gets 408 on time', async (t) => {
  const { gw, demo } = await setup(t);
  const c = await openRaw(gw.port);
  t.after(() => c.socket.destroy());
  const t0 = performance.now();
  c.socket.write('GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: ');
  // One more byte of a never-ending header every 50 ms: the connection is never idle, the head never
  // complete.
  const trickle = setInterval(() => {
    if (c.socket.writable) c.socket.write('a');
  }, 50);
  t.after(() => clearInterval(trickle));
  const closed = await waitClosed(c, HEADER_TIMEOUT + LATE + 1_000);
  clearInterval(trickle);
  const elapsed = c.firstDataAt() - t0;
  const r = c.response(closed);
  await assertProblem(gw, r, 408, 'client-timeout');
  assert.ok(closed, 'the connection is closed');
  assert.ok(
    elapsed >= HEADER_TIMEOUT - 5,
    `408 came after ${elapsed} ms, before the ${HEADER_TIMEOUT} ms deadline`,
  );
  assert.ok(elapsed <= HEADER_TIMEOUT + LATE, `408 came after ${elapsed} ms`);
  assert.equal(demo.stats.requests, 0);
});

test('a connection that never sends a byte is closed at header_timeout, with no 408 and no access-log line', async (t) => {
  // Found by the soak (docs/reliability.md#soak): a keep-alive pool's spare connection, opened and
  // not used within header_timeout, got a 408 and a "rejected" log line for a request that never
  // existed (and a client whose first request crossed that 408 would have read it as its answer).
  // Like nginx, a connection with nothing received is closed quietly.
  const { gw, demo } = await setup(t);
  const c = await openRaw(gw.port);
  t.after(() => c.socket.destroy());
  const t0 = performance.now();
  const closed = await waitClosed(c, HEADER_TIMEOUT + LATE + 1_000);
  const elapsed = performance.now() - t0;
  assert.ok(closed, 'the connection is closed');
  assert.equal(c.response(closed).raw, '', 'nothing is written to it');
  assert.ok(elapsed >= HEADER_TIMEOUT - 5, `closed after ${elapsed} ms, before header_timeout`);
  assert.ok(elapsed <= HEADER_TIMEOUT + LATE, `closed after ${elapsed} ms`);
  // A partial head still gets its 408 and its line; the quiet one left none.
  const r = await rawRequest(gw.port, 'GET / HTTP/1.1\r\nHost: x\r\n', HEADER_TIMEOUT + LATE + 1_000);
  await assertProblem(gw, r, 408, 'client-timeout');
  assert.equal(gw.log.entries.length, 1, JSON.stringify(gw.log.entries));
  assert.equal(demo.stats.requests, 0);
});

test('an idle request body gets 408 after body_idle_timeout and the upstream request is aborted', async (t) => {
  const { gw, demo } = await setup(t);
  const c = await openRaw(gw.port);
  t.after(() => c.socket.destroy());
  const requestSeen = once(demo.events, 'request');
  const t0 = performance.now();
  c.socket.write('POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789');
  await within(requestSeen, 'the upstream request');
  const closed = await waitClosed(c, BODY_IDLE + LATE + 5_000);
  const elapsed = c.firstDataAt() - t0;
  const r = c.response(closed);
  const p = await assertProblem(gw, r, 408, 'client-timeout');
  assert.equal(p.route, 'all');
  assert.ok(closed, 'the connection is closed (the rest of the body will never be read)');
  assert.ok(elapsed >= BODY_IDLE - 5, `408 came after ${elapsed} ms, before the ${BODY_IDLE} ms deadline`);
  assert.ok(elapsed <= BODY_IDLE + LATE, `408 came after ${elapsed} ms, expected about ${BODY_IDLE} ms`);
  await upstreamAborted(demo);
});

test('a body that trickles past the route total: 408 client-timeout, and no verdict on the upstream (the circuit stays closed)', async (t) => {
  // Found by the slow-body battery (slowhttptest -B, docs/reliability.md): a client sending its body
  // one byte at a time, faster than body_idle_timeout, ran into the route's total and got
  // 504 upstream-timeout, counted against the upstream: a few such clients opened its circuit
  // for everyone. The upstream was waiting for the client the whole time.
  const demo = await startDemoUpstream({ port: 0 });
  t.after(() => demo.close());
  const TOTAL = 600;
  const gw = await startTestGateway(`
client: { body_idle_timeout: 5s }
upstreams:
  demo:
    targets: ["${demo.url}"]
    circuit: { error_rate: 50%, min_requests: 3, window: 10s, open_for: 30s }
routes:
  - { name: upload, match: { path: / }, upstream: demo, timeouts: { total: ${TOTAL}ms } }
`);
  t.after(() => gw.close());
  const trickle = async () => {
    const c = await openRaw(gw.port);
    t.after(() => c.socket.destroy());
    const t0 = performance.now();
    c.socket.write('POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n');
    const drip = setInterval(() => c.socket.writable && c.socket.write('x'), 50);
    const closed = await waitClosed(c, TOTAL + LATE + 5_000);
    clearInterval(drip);
    return { r: c.response(closed), closed, elapsed: c.firstDataAt() - t0 };
  };
  const runs = await Promise.all([trickle(), trickle(), trickle(), trickle()]);
  for (const { r, closed, elapsed } of runs) {
    const p = await assertProblem(gw, r, 408, 'client-timeout');
    assert.equal(p.route, 'upload');
    assert.match(String(p.detail), /request body/);
    assert.ok(closed, 'the connection is closed (the rest of the body will never be read)');
    assert.ok(elapsed >= TOTAL - 5, `408 came after ${elapsed} ms, before the ${TOTAL} ms total`);
    assert.ok(elapsed <= TOTAL + LATE, `408 came after ${elapsed} ms, expected about ${TOTAL} ms`);
  }
  await upstreamAborted(demo, 4);
  assert.equal(gw.sluice.gateway.runtime.upstreams.get('demo')?.circuitState(), 'closed');
  const ok = await rawRequest(gw.port, 'GET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.equal(ok.status, 200, ok.raw);
});

test('413 for a Content-Length above max_body, before the body is read', async (t) => {
  const { gw, demo } = await setup(t);
  // Only the head is sent: the answer must not wait for the 2000 announced bytes.
  const t0 = performance.now();
  const r = await rawRequest(
    gw.port,
    'POST /small/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n',
    3_000,
  );
  const p = await assertProblem(gw, r, 413, 'body-too-large');
  assert.equal(p.route, 'small');
  assert.ok(r.closed, 'the connection is closed (the body was not read)');
  assert.ok(performance.now() - t0 < 1_500, 'answered without waiting for the body');
  assert.equal(demo.stats.requests, 0, 'the upstream never saw the request');
  // At the limit is fine.
  const ok = await rawRequest(
    gw.port,
    `POST /small/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n${'x'.repeat(1024)}`,
  );
  assert.equal(ok.status, 200);
  assert.equal(JSON.parse(ok.body).body_bytes, 1024);
});

test('a chunked body that grows past max_body gets 413 and the upstream request is aborted', async (t) => {
  const { gw, demo } = await setup(t);
  const c = await openRaw(gw.port);
  t.after(() => c.socket.destroy());
  const requestSeen = once(demo.events, 'request');
  c.socket.write('POST /small/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
  c.socket.write(`200\r\n${'x'.repeat(512)}\r\n`);
  await within(requestSeen, 'the upstream request'); // the request is on its way upstream before the body is too large
  for (let i = 0; i < 4 && c.socket.writable; i++) {
    c.socket.write(`200\r\n${'x'.repeat(512)}\r\n`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const closed = await waitClosed(c, 3_000);
  const r = c.response(closed);
  assert.ok(closed, 'the connection is closed');
  const p = await assertProblem(gw, r, 413, 'body-too-large');
  assert.equal(p.route, 'small');
  await upstreamAborted(demo);
});

test('a body past max_body after the response started: the client response is cut, the upstream aborted', async (t) => {
  let upstreamAborted_: () => void = () => {};
  const aborted = new Promise<void>((resolve) => {
    upstreamAborted_ = resolve;
  });
  // Answers at once (headers and a first chunk), then keeps reading the request body.
  const upstream = await startHttpServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('started\n');
    req.resume();
    res.on('close', () => {
      if (!res.writableFinished) upstreamAborted_();
    });
  });
  t.after(() => upstream.close());
  const gw = await startTestGateway(`
upstreams: { up: { targets: ["${upstream.url}"] } }
routes: [{ name: small, match: { path: / }, upstream: up, max_body: 1KB }]
`);
  t.after(() => gw.close());
  const c = await openRaw(gw.port);
  t.after(() => c.socket.destroy());
  c.socket.write(
    `POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n${'x'.repeat(512)}\r\n`,
  );
  // Wait for the response head, then push the body past the limit.
  const deadline = performance.now() + 2_000;
  while (c.firstDataAt() === 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.ok(c.firstDataAt() > 0, 'the response started');
  for (let i = 0; i < 4 && c.socket.writable; i++) {
    c.socket.write(`200\r\n${'x'.repeat(512)}\r\n`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const closed = await waitClosed(c, 3_000);
  assert.ok(closed, 'the client connection is closed');
  const r = c.response(closed);
  assert.equal(r.status, 200);
  assert.ok(
    !r.body.endsWith('0\r\n\r\n'),
    `the chunked body must not look complete: ${JSON.stringify(r.body)}`,
  );
  await within(aborted, 'the upstream request abort');
  const e = await within(
    gw.log.next((x) => x.route === 'small'),
    'the access-log entry',
  );
  assert.equal(e.error, 'body-too-large');
  assert.equal(e.outcome, 'rejected');
});

// ---- framing ---------------------------------------------------------------------------------------

test('Content-Length together with Transfer-Encoding: 400 and the connection closed', async (t) => {
  const { gw, demo } = await setup(t);
  const r = await rawRequest(
    gw.port,
    'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  );
  await assertProblem(gw, r, 400, 'bad-request');
  assert.ok(r.closed);
  assert.equal(demo.stats.requests, 0);
});

test('an invalid chunk size: 400 and the connection closed', async (t) => {
  const { gw, demo } = await setup(t);
  const r = await rawRequest(
    gw.port,
    'POST /small/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n',
  );
  assert.ok(r.closed);
  // The head was fine, so the request may already be on its way upstream: it must then be aborted.
  assert.equal(r.status, 400, r.raw);
  await assertProblem(gw, r, 400, 'bad-request');
  if (demo.stats.requests > 0) await upstreamAborted(demo);
});

test('a Transfer-Encoding other than chunked: 400 and the connection closed', async (t) => {
  const { gw, demo } = await setup(t);
  const r = await rawRequest(gw.port, 'POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc');
  await assertProblem(gw, r, 400, 'bad-request');
  assert.ok(r.closed);
  assert.equal(demo.stats.requests, 0);
});

test('two Host headers: 400, whichever route the first one would select', async (t) => {
  const { gw, demo } = await setup(t);
  for (const path of ['/echo', '/small/echo']) {
    const r = await rawRequest(
      gw.port,
      `GET ${path} HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n`,
    );
    await assertProblem(gw, r, 400, 'bad-request');
  }
  assert.equal(demo.stats.requests, 0);
});

test('absolute-form target: another authority than Host is 400, the same one is forwarded', async (t) => {
  const { gw, demo } = await setup(t);
  const bad = await rawRequest(
    gw.port,
    'GET http://evil.example/echo HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n',
  );
  await assertProblem(gw, bad, 400, 'bad-request');
  assert.equal(demo.stats.requests, 0);

  const ok = await rawRequest(
    gw.port,
    'GET http://Good.Example/echo?q=1 HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n',
  );
  assert.equal(ok.status, 200, ok.raw);
  const echo = JSON.parse(ok.body);
  assert.equal(echo.path, '/echo?q=1', 'the upstream gets the origin form');
  assert.equal(echo.headers.host, 'good.example');
});

test('HTTP/1.1 without Host: 400 problem; HTTP/1.0 without Host is fine', async (t) => {
  const { gw, demo } = await setup(t);
  const r = await rawRequest(gw.port, 'GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n');
  await assertProblem(gw, r, 400, 'bad-request');
  assert.equal(demo.stats.requests, 0);

  const old = await rawRequest(gw.port, 'GET /echo HTTP/1.0\r\n\r\n');
  assert.equal(old.status, 200, old.raw);
});

test('a malformed request target: 400', async (t) => {
  const { gw, demo } = await setup(t);
  const r = await rawRequest(gw.port, 'GET /echo/%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  await assertProblem(gw, r, 400, 'bad-request');
  assert.equal(demo.stats.requests, 0);
});

test('Expect: 100-continue: an oversized Content-Length gets 413 without a 100 Continue; a fitting one gets 100 then the answer', async (t) => {
  const demo = await startDemoUpstream({ port: 0 });
  const gw = await startTestGateway(`
upstreams:
  demo: { targets: ["${demo.url}"] }
routes:
  - { name: demo, match: { path: / }, upstream: demo, max_body: 1KB }
`);
  t.after(async () => {
    await gw.close();
    await demo.close();
  });
  const big = await rawRequest(
    gw.port,
    'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n',
  );
  assert.equal(big.status, 413);
  assert.doesNotMatch(big.raw, /100 Continue/);
  const small = await rawRequest(
    gw.port,
    'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello',
  );
  assert.match(small.raw, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK/);
  assert.match(small.raw, /"body_bytes":5/);
});
