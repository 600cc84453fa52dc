/**
 * Header rewriting both ways (SPEC §3): hop-by-hop and Connection-named headers dropped, X-Forwarded-*
 * from what the gateway saw (kept and extended for trusted proxies), Via, X-Request-Id, x-timeout-ms,
 * and no internal target address in anything a client sees.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { OutgoingHttpHeaders } from 'node:http';
import { createServer } from 'node:net';
import { type TestContext, test } from 'node:test';
import { startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import type { AccessLogEntry } from '../../src/observability/access-log.ts';
import {
  H1_ONLY,
  H2,
  rawRequest,
  send,
  startHttpServer,
  startTestGateway,
  type TestGateway,
} from '../helpers.ts';

/** What the gateway's listener speaks in this run: plain HTTP/1.1, or TLS with h2. */
const SCHEME = H2 ? 'https' : 'http';

const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/;

interface Echo {
  method: string;
  path: string;
  headers: Record<string, string | string[]>;
}

async function entryOf(gw: TestGateway, id: string): Promise<AccessLogEntry> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      gw.entry(id),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no access-log entry for request ${id}`)), 2_000);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A gateway in front of the demo upstream; `client` is extra YAML for the client section. */
async function setup(t: TestContext, client = '{}', routeTotal = '29s') {
  const demo = await startDemoUpstream({ port: 0 });
  t.after(() => demo.close());
  const gw = await startTestGateway(`
client: ${client}
upstreams:
  demo: { targets: ["${demo.url}"] }
routes:
  - { name: all, match: { path: / }, upstream: demo, timeouts: { total: ${routeTotal} } }
`);
  t.after(() => gw.close());
  const echo = async (headers: OutgoingHttpHeaders | string[] = {}) => {
    const r = await send(gw.port, '/echo', { headers });
    assert.equal(r.status, 200, r.body);
    return { reply: r, echo: JSON.parse(r.body) as Echo };
  };
  return { gw, demo, echo };
}

test(
  'hop-by-hop request headers and every header named in Connection are not forwarded',
  H1_ONLY,
  async (t) => {
    const { gw } = await setup(t);
    // Raw, because node:http would refuse to send some of these (Trailer without chunking).
    const r = await rawRequest(
      gw.port,
      'GET /echo HTTP/1.1\r\nHost: h.example\r\n' +
        'Connection: close, X-Secret\r\nConnection: x-other\r\n' +
        'X-Secret: token\r\nX-Other: o\r\nKeep-Alive: timeout=5, max=100\r\nTE: trailers\r\n' +
        'Trailer: X-Checksum\r\nUpgrade: h2c\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n' +
        'Proxy-Connection: keep-alive\r\nX-Kept: yes\r\nAuthorization: Bearer end-to-end\r\n\r\n',
    );
    assert.equal(r.status, 200, r.raw);
    const e = JSON.parse(r.body) as Echo;
    for (const name of [
      'x-secret',
      'x-other',
      'keep-alive',
      'te',
      'trailer',
      'upgrade',
      'proxy-authorization',
      'proxy-connection',
    ]) {
      assert.equal(e.headers[name], undefined, `${name} must not be forwarded`);
    }
    // The upstream connection carries the gateway's own Connection value, never the client's.
    assert.doesNotMatch(String(e.headers.connection ?? ''), /secret|other/i);
    assert.equal(e.headers['x-kept'], 'yes');
    assert.equal(e.headers.authorization, 'Bearer end-to-end', 'end-to-end headers are forwarded');
  },
);

test('X-Forwarded-* are set from what the gateway saw; client-sent values are dropped', async (t) => {
  const { echo } = await setup(t);
  const { echo: e } = await echo({
    Host: 'api.example.com',
    'X-Forwarded-For': '1.2.3.4',
    'X-Forwarded-Proto': 'https',
    'X-Forwarded-Host': 'evil.example',
  });
  assert.equal(e.headers['x-forwarded-for'], '127.0.0.1');
  assert.equal(e.headers['x-forwarded-proto'], SCHEME);
  assert.equal(e.headers['x-forwarded-host'], 'api.example.com');
  assert.equal(e.headers.host, 'api.example.com', 'Host is forwarded as the client sent it');
});

test('X-Forwarded-* from a trusted proxy are kept and extended', async (t) => {
  const { echo } = await setup(t, '{ trusted_proxies: [127.0.0.0/8] }');
  const { echo: e } = await echo({
    Host: 'api.example.com',
    'X-Forwarded-For': '1.2.3.4',
    'X-Forwarded-Proto': 'https',
    'X-Forwarded-Host': 'public.example',
  });
  assert.equal(e.headers['x-forwarded-for'], '1.2.3.4, 127.0.0.1');
  assert.equal(e.headers['x-forwarded-proto'], 'https');
  assert.equal(e.headers['x-forwarded-host'], 'public.example');

  // Several X-Forwarded-For lines are one list.
  const { echo: e2 } = await echo([
    'Host',
    'h',
    'X-Forwarded-For',
    '1.1.1.1, 2.2.2.2',
    'X-Forwarded-For',
    '3.3.3.3',
  ]);
  assert.equal(e2.headers['x-forwarded-for'], '1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1');

  // A trusted client that sent none gets them set as for anyone.
  const { echo: e3 } = await echo({ Host: 'h.example' });
  assert.equal(e3.headers['x-forwarded-for'], '127.0.0.1');
  assert.equal(e3.headers['x-forwarded-proto'], SCHEME);
  assert.equal(e3.headers['x-forwarded-host'], 'h.example');
});

test('trusted_proxies that do not contain the client change nothing', async (t) => {
  const { echo } = await setup(t, '{ trusted_proxies: [10.0.0.0/8, 192.168.1.1] }');
  const { echo: e } = await echo({ Host: 'h', 'X-Forwarded-For': '1.2.3.4', 'X-Forwarded-Proto': 'https' });
  assert.equal(e.headers['x-forwarded-for'], '127.0.0.1');
  assert.equal(e.headers['x-forwarded-proto'], SCHEME);
});

test('Via: 1.1 sluice is added upstream and downstream, appended to an incoming Via', async (t) => {
  const { echo } = await setup(t);
  const { echo: e, reply } = await echo();
  assert.equal(e.headers.via, '1.1 sluice');
  assert.equal(reply.headers.via, '1.1 sluice');

  const { echo: e2 } = await echo({ Via: '1.0 edge, 1.1 cdn' });
  assert.equal(e2.headers.via, '1.0 edge, 1.1 cdn, 1.1 sluice');
});

test('X-Request-Id: a valid one is kept, forwarded, echoed and logged', async (t) => {
  const { gw, echo } = await setup(t);
  const id = 'client-req.42:abc';
  const { echo: e, reply } = await echo({ 'X-Request-Id': id });
  assert.equal(e.headers['x-request-id'], id);
  assert.equal(reply.headers['x-request-id'], id);
  const entry = await entryOf(gw, id);
  assert.equal(entry.status, 200);
  assert.equal(entry.outcome, 'ok');
});

test('X-Request-Id: generated (ULID) when absent or invalid, the same in response, upstream and log', async (t) => {
  const { gw, echo } = await setup(t);
  for (const headers of [{}, { 'X-Request-Id': 'not valid: spaces' }, { 'X-Request-Id': 'x'.repeat(200) }]) {
    const { echo: e, reply } = await echo(headers);
    const id = reply.headers['x-request-id'];
    assert.ok(typeof id === 'string' && ULID.test(id), `generated id ${id}`);
    assert.equal(e.headers['x-request-id'], id, 'the upstream got the same id (once)');
    const entry = await entryOf(gw, id);
    assert.equal(entry.path, '/echo');
  }
});

test('x-timeout-ms sent upstream is what is left of the route budget', async (t) => {
  const { echo } = await setup(t, '{}', '2s');
  const left = (e: Echo) => Number(e.headers['x-timeout-ms']);
  const { echo: e } = await echo();
  assert.ok(Number.isInteger(left(e)) && left(e) > 0 && left(e) <= 2_000, `x-timeout-ms ${left(e)}`);
  // A lower incoming deadline shortens the budget; a higher one is ignored.
  const { echo: lower } = await echo({ 'X-Timeout-Ms': '500' });
  assert.ok(left(lower) > 0 && left(lower) <= 500, `x-timeout-ms ${left(lower)}`);
  const { echo: higher } = await echo({ 'X-Timeout-Ms': '999999' });
  assert.ok(left(higher) > 500 && left(higher) <= 2_000, `x-timeout-ms ${left(higher)}`);
});

test('hop-by-hop response headers and those named in the upstream Connection are removed', async (t) => {
  const upstream = await startHttpServer((_req, res) => {
    // Chunked (no Content-Length): Node only lets a response announce a Trailer then.
    res.writeHead(200, [
      'Connection',
      'X-Internal, keep-alive',
      'X-Internal',
      '1',
      'Keep-Alive',
      'timeout=5, max=1000',
      'Proxy-Authenticate',
      'Basic realm="inner"',
      'Trailer',
      'X-Checksum',
      'Upgrade',
      'h2c',
      'Via',
      '1.0 inner',
      'X-Public',
      'yes',
      'Content-Type',
      'text/plain',
    ]);
    res.end('ok');
  });
  t.after(() => upstream.close());
  const gw = await startTestGateway(`
upstreams: { up: { targets: ["${upstream.url}"] } }
routes: [{ name: all, match: { path: / }, upstream: up }]
`);
  t.after(() => gw.close());
  const r = await send(gw.port, '/x');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'ok');
  assert.equal(r.headers['x-public'], 'yes');
  for (const name of ['x-internal', 'proxy-authenticate', 'trailer', 'upgrade']) {
    assert.equal(r.headers[name], undefined, `${name} must not reach the client`);
  }
  // Node adds the gateway's own keep-alive headers for the client connection; the upstream's are gone.
  assert.notEqual(r.headers['keep-alive'], 'timeout=5, max=1000');
  assert.doesNotMatch(String(r.headers.connection ?? ''), /internal/i);
  assert.equal(r.headers.via, '1.0 inner, 1.1 sluice');
  assert.match(String(r.headers['x-request-id']), ULID);
});

/** A port on loopback with nothing listening. */
async function closedPort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

test('a refused target: 502 problem that names no internal address', H1_ONLY, async (t) => {
  const port = await closedPort();
  const gw = await startTestGateway(`
upstreams: { backend: { targets: ["http://127.0.0.1:${port}/base"] } }
routes: [{ name: api, match: { path: /api }, upstream: backend }]
`);
  t.after(() => gw.close());
  const r = await rawRequest(
    gw.port,
    'GET /api/x HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n',
  );
  assert.equal(r.status, 502, r.raw);
  assert.equal(r.headers['content-type'], 'application/problem+json');
  assert.equal(r.headers['proxy-status'], 'sluice; error=connection_refused');
  const p = JSON.parse(r.body);
  assert.equal(p.type, 'https://sluice.dev/problems/upstream-unreachable');
  assert.equal(p.status, 502);
  assert.equal(p.phase, 'connect');
  assert.equal(p.route, 'api');
  assert.equal(p.request_id, r.headers['x-request-id']);
  // Nothing the client sees (status line, headers, body) names the target.
  assert.doesNotMatch(r.raw, /127\.0\.0\.1/);
  assert.ok(!r.raw.includes(String(port)), `the target port ${port} appears in: ${r.raw}`);
  assert.doesNotMatch(r.raw, /\/base/);
  // The log does name it.
  const e = await entryOf(gw, p.request_id);
  assert.equal(e.status, 502);
  assert.equal(e.outcome, 'upstream_error');
  assert.equal(e.error, 'upstream-unreachable');
  assert.equal(e.target, `http://127.0.0.1:${port}`);
});
