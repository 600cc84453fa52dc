/**
 * Routing (SPEC §2, §3): first match wins, prefixes on segment boundaries, methods, host, headers,
 * strip_prefix, 404 no-route, and path normalisation — what matches is what the upstream receives, and
 * no encoding trick escapes a route's prefix.
 */
import assert from 'node:assert/strict';
import type { OutgoingHttpHeaders } from 'node:http';
import { type TestContext, test } from 'node:test';
import type { AccessLogEntry } from '../../src/observability/access-log.ts';
import {
  type Reply,
  rawRequest,
  send,
  startHttpServer,
  startTestGateway,
  type TestGateway,
} from '../helpers.ts';

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

/** An upstream that answers every request with what it received, and counts them. */
async function startEcho(t: TestContext) {
  let requests = 0;
  const server = await startHttpServer((req, res) => {
    requests++;
    const body = JSON.stringify({ method: req.method, url: req.url, host: req.headers.host });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  t.after(() => server.close());
  return { ...server, requests: () => requests };
}

interface Routed {
  status: number;
  /** The route that served the request (from the access log), null for none. */
  route: string | null;
  /** The request target the upstream received, when it was forwarded. */
  url: string | undefined;
  reply: Reply;
}

async function setup(t: TestContext, routes: string) {
  const echo = await startEcho(t);
  const gw = await startTestGateway(`
upstreams:
  a: { targets: ["${echo.url}"] }
  based: { targets: ["${echo.url}/base/"] }
routes:
${routes}
`);
  t.after(() => gw.close());
  const call = async (
    path: string,
    opts: { method?: string; headers?: OutgoingHttpHeaders } = {},
  ): Promise<Routed> => {
    const reply = await send(gw.port, path, opts);
    const id = reply.headers['x-request-id'] as string;
    const entry = await entryOf(gw, id);
    const url =
      reply.status === 200 && opts.method !== 'HEAD'
        ? (JSON.parse(reply.body) as { url: string }).url
        : undefined;
    return { status: reply.status, route: entry.route, url, reply };
  };
  return { gw, echo, call };
}

/** Asserts a 404 no-route problem and its log line. */
async function assertNoRoute(gw: TestGateway, r: Routed): Promise<void> {
  assert.equal(r.status, 404, r.reply.body);
  assert.equal(r.reply.headers['content-type'], 'application/problem+json');
  const p = JSON.parse(r.reply.body);
  assert.equal(p.type, 'https://sluice.dev/problems/no-route');
  assert.equal(p.status, 404);
  assert.equal(p.request_id, r.reply.headers['x-request-id']);
  assert.equal(r.reply.headers['proxy-status'], undefined);
  const e = await entryOf(gw, p.request_id);
  assert.equal(e.status, 404);
  assert.equal(e.outcome, 'no_route');
  assert.equal(e.error, 'no-route');
  assert.equal(e.route, null);
}

test('first match wins, prefixes match on segment boundaries, no match is a 404 problem', async (t) => {
  const { gw, echo, call } = await setup(
    t,
    `
  - { name: api, match: { path: /api }, upstream: a }
  - { name: api-special, match: { path: /api/special }, upstream: a }
  - { name: docs, match: { path: /docs/ }, upstream: a }
`,
  );
  assert.deepEqual(
    [await call('/api'), await call('/api/'), await call('/api/x/y')].map((r) => [r.route, r.url]),
    [
      ['api', '/api'],
      ['api', '/api/'],
      ['api', '/api/x/y'],
    ],
  );
  assert.equal((await call('/api/special/x')).route, 'api', 'the earlier, broader route wins');
  assert.equal((await call('/docs')).route, 'docs', 'a prefix written with a trailing slash matches itself');
  assert.equal((await call('/docs/x')).route, 'docs');
  const before = echo.requests();
  for (const path of ['/apix', '/ap', '/', '/v1/api', '/docsx']) await assertNoRoute(gw, await call(path));
  assert.equal(echo.requests(), before, 'nothing unmatched reached the upstream');
});

test('methods: listed only, and a GET route also serves HEAD', async (t) => {
  const { gw, call } = await setup(
    t,
    `
  - { name: read, match: { path: /r, methods: [GET] }, upstream: a }
  - { name: write, match: { path: /r, methods: [POST, PUT] }, upstream: a }
`,
  );
  const get = await call('/r/1');
  assert.equal(get.route, 'read');
  assert.equal(get.url, '/r/1');
  const head = await call('/r/1', { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.route, 'read');
  assert.equal(head.reply.body, '');
  assert.equal((await call('/r/1', { method: 'POST' })).route, 'write');
  assert.equal((await call('/r/1', { method: 'PUT' })).route, 'write');
  await assertNoRoute(gw, await call('/r/1', { method: 'DELETE' }));
});

test('host: exact (case-insensitive, port ignored) and *.example.com', async (t) => {
  const { gw, call } = await setup(
    t,
    `
  - { name: exact, match: { host: api.example.com }, upstream: a }
  - { name: wild, match: { host: "*.example.com" }, upstream: a }
`,
  );
  assert.equal((await call('/x', { headers: { host: 'api.example.com' } })).route, 'exact');
  assert.equal((await call('/x', { headers: { host: 'API.Example.com:8080' } })).route, 'exact');
  assert.equal((await call('/x', { headers: { host: 'www.example.com' } })).route, 'wild');
  assert.equal((await call('/x', { headers: { host: 'a.b.example.com' } })).route, 'wild');
  await assertNoRoute(gw, await call('/x', { headers: { host: 'example.com' } }));
  await assertNoRoute(gw, await call('/x', { headers: { host: 'evil-example.com' } }));
  await assertNoRoute(gw, await call('/x', { headers: { host: 'api.example.com.evil' } }));
});

test('header match', async (t) => {
  const { gw, call } = await setup(
    t,
    `
  - { name: v2, match: { path: /v, headers: { X-Version: "2" } }, upstream: a }
`,
  );
  assert.equal((await call('/v/x', { headers: { 'x-version': '2' } })).route, 'v2');
  await assertNoRoute(gw, await call('/v/x', { headers: { 'x-version': '3' } }));
  await assertNoRoute(gw, await call('/v/x'));
});

test('strip_prefix removes the matched prefix; the query is kept', async (t) => {
  const { call } = await setup(
    t,
    `
  - { name: svc, match: { path: /svc }, upstream: a, strip_prefix: true }
  - { name: based, match: { path: /based/ }, upstream: based, strip_prefix: true }
  - { name: keep, match: { path: /keep }, upstream: based }
`,
  );
  const cases: [string, string, string][] = [
    ['/svc/x/y?q=1', 'svc', '/x/y?q=1'],
    ['/svc', 'svc', '/'],
    ['/svc/', 'svc', '/'],
    ['/svc?q=1', 'svc', '/?q=1'],
    ['/svc//x', 'svc', '/x'],
    ['/based/x', 'based', '/base/x'],
    ['/based', 'based', '/base/'],
    ['/keep/x', 'keep', '/base/keep/x'],
  ];
  for (const [path, route, url] of cases) {
    const r = await call(path);
    assert.deepEqual([r.route, r.url], [route, url], path);
  }
});

test('the normalised path is matched and forwarded; the query string is passed untouched', async (t) => {
  const { call } = await setup(
    t,
    `
  - { name: admin, match: { path: /admin }, upstream: a }
  - { name: api, match: { path: /api }, upstream: a }
`,
  );
  const cases: [string, string, string][] = [
    ['/api/../admin', 'admin', '/admin'],
    ['/api/%2e%2e/admin', 'admin', '/admin'],
    ['/api/%2E%2E/admin/x', 'admin', '/admin/x'],
    ['/api/.%2e/admin', 'admin', '/admin'],
    ['/api/x/../../admin', 'admin', '/admin'],
    ['/api//x', 'api', '/api/x'],
    ['//api///x', 'api', '/api/x'],
    ['/%61pi/x', 'api', '/api/x'],
    ['/api/./x', 'api', '/api/x'],
    ['/api/a%2Fb', 'api', '/api/a%2Fb'],
    ['/api/a%2fb', 'api', '/api/a%2Fb'],
    ['/api/..%2Fadmin', 'api', '/api/..%2Fadmin'],
    ['/api/a%20b', 'api', '/api/a%20b'],
    ['/api/x?a=%2e%2e/../b&c=%41&d=a//b', 'api', '/api/x?a=%2e%2e/../b&c=%41&d=a//b'],
    ['/api/../admin?next=/api/../x', 'admin', '/admin?next=/api/../x'],
  ];
  for (const [path, route, url] of cases) {
    const r = await call(path);
    assert.deepEqual([r.status, r.route, r.url], [200, route, url], path);
  }
});

test('no path trick escapes a route prefix when nothing else matches', async (t) => {
  const { gw, echo, call } = await setup(t, '  - { name: api, match: { path: /api }, upstream: a }');
  for (const path of [
    '/api/../admin',
    '/api/%2e%2e/admin',
    '/api/%2e%2E/%2e%2e/etc/passwd',
    '/api/x/../../admin',
    '/api/../../../api-internal',
    '/api/.%2E/apix',
  ]) {
    await assertNoRoute(gw, await call(path));
  }
  assert.equal(echo.requests(), 0);
  // What does match stays under the prefix at the upstream.
  const r = await call('/api/x/../y');
  assert.equal(r.url, '/api/y');
});

test('an invalid percent-encoding is a 400 problem', async (t) => {
  const { gw, echo, call } = await setup(t, '  - { name: api, match: { path: /api }, upstream: a }');
  const r = await call('/api/%zz');
  assert.equal(r.status, 400);
  assert.equal(r.reply.headers['content-type'], 'application/problem+json');
  const p = JSON.parse(r.reply.body);
  assert.equal(p.type, 'https://sluice.dev/problems/bad-request');
  assert.equal(p.request_id, r.reply.headers['x-request-id']);
  const e = await entryOf(gw, p.request_id);
  assert.equal(e.status, 400);
  assert.equal(e.outcome, 'rejected');
  assert.equal(e.error, 'bad-request');
  assert.equal(echo.requests(), 0);
});

test('two Host headers are a 400 even where no route (or a host route) would match', async (t) => {
  const { gw, echo } = await setup(
    t,
    `
  - { name: api, match: { path: /api }, upstream: a }
  - { name: host, match: { host: a.example.com }, upstream: a }
`,
  );
  for (const [path, hosts] of [
    ['/nothing', ['x.example', 'y.example']],
    ['/api/x', ['x.example', 'y.example']],
    ['/other', ['a.example.com', 'b.example.com']],
    ['/other', ['b.example.com', 'a.example.com']],
  ] as const) {
    const r = await rawRequest(
      gw.port,
      `GET ${path} HTTP/1.1\r\nHost: ${hosts[0]}\r\nHost: ${hosts[1]}\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(r.status, 400, `${path} ${hosts}: ${r.raw}`);
    assert.equal(r.headers['content-type'], 'application/problem+json');
    const p = JSON.parse(r.body);
    assert.equal(p.type, 'https://sluice.dev/problems/bad-request');
    assert.equal(p.request_id, r.headers['x-request-id']);
    const e = await entryOf(gw, p.request_id);
    assert.deepEqual([e.status, e.outcome, e.error], [400, 'rejected', 'bad-request']);
  }
  assert.equal(echo.requests(), 0);
});
