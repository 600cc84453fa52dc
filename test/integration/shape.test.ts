// biome-ignore-all lint/suspicious/noTemplateCurlyInString: header values and formats hold a literal ${name}
/**
 * Request and response shaping (SPEC §13) over real sockets: header edits both ways and their
 * precedence (route > upstream > defaults, per header name), reserved and environment variables,
 * refused headers at load, Host modes against a virtual-hosted upstream (retries included), prefix
 * and regex rewrites, rewrites that try to escape (refused with 400, never reaching the upstream).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { ConfigError, loadConfigText } from '../../src/config/load.ts';
import { sluice } from '../diagnose/run-cli.ts';
import { problemOf, send, startHttpServer, startTestGateway, type TestServer } from '../helpers.ts';

interface Seen {
  path: string;
  headers: IncomingHttpHeaders;
  raw: string[];
}

/** An upstream that answers with what it received (path and headers) and counts requests. */
async function echoUpstream(t: TestContext, respond: Record<string, string> = {}) {
  const seen: Seen[] = [];
  const server = await startHttpServer((req, res) => {
    seen.push({ path: req.url ?? '', headers: req.headers, raw: req.rawHeaders });
    res.writeHead(200, { 'content-type': 'application/json', ...respond });
    res.end(JSON.stringify({ path: req.url, headers: req.headers }));
  });
  t.after(() => server.close());
  return { server, seen };
}

/** Header values by lower-case name, every occurrence, from a raw header list. */
function all(raw: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === name) out.push(raw[i + 1]);
  return out;
}

test('request headers: set, add and remove merge per header name, route > upstream > defaults', async (t) => {
  const { server, seen } = await echoUpstream(t);
  const gw = await startTestGateway(`
defaults:
  headers:
    request:
      set: { X-A: from-defaults, X-B: from-defaults, X-E: from-defaults }
      remove: [X-Client-Secret]
upstreams:
  u:
    targets: ["${server.url}"]
    headers:
      request:
        set: { X-B: from-upstream }
        remove: [X-C]
routes:
  - name: r
    match: { path: / }
    upstream: u
    headers:
      request:
        set: { X-A: from-route }
        add: { X-D: [one, two], X-Kept: added }
        remove: [X-E, X-Forwarded-Proto]
`);
  t.after(() => gw.close());
  const r = await send(gw.port, '/p', {
    headers: { 'x-a': 'client', 'x-c': 'client', 'x-kept': 'client', 'x-client-secret': 's3cr3t' },
  });
  assert.equal(r.status, 200);
  const got = seen[0];
  assert.deepEqual(
    all(got.raw, 'x-a'),
    ['from-route'],
    'route set wins over defaults and replaces the client',
  );
  assert.deepEqual(all(got.raw, 'x-b'), ['from-upstream'], 'upstream set wins over defaults');
  assert.deepEqual(all(got.raw, 'x-c'), [], 'upstream remove drops the client header');
  assert.deepEqual(all(got.raw, 'x-d'), ['one', 'two'], 'add with a list adds each');
  assert.deepEqual(all(got.raw, 'x-kept'), ['client', 'added'], 'add keeps what was there');
  assert.deepEqual(all(got.raw, 'x-e'), [], "route remove beats defaults' set of the same name");
  assert.deepEqual(all(got.raw, 'x-client-secret'), [], 'defaults remove is inherited');
  assert.deepEqual(all(got.raw, 'x-forwarded-proto'), [], "remove applies to the gateway's own headers too");
  assert.equal(all(got.raw, 'x-forwarded-for').length, 1, 'other forwarding headers stay');
});

test('response headers: set, add, remove on proxied responses; gateway problem responses are left alone', async (t) => {
  const { server } = await echoUpstream(t, { server: 'gunicorn/21', 'x-powered-by': 'PHP/5', 'x-keep': '1' });
  const gw = await startTestGateway(`
defaults:
  headers:
    response:
      set: { Strict-Transport-Security: "max-age=63072000" }
      remove: [X-Powered-By]
upstreams:
  u: { targets: ["${server.url}"] }
  dead: { targets: ["http://127.0.0.1:1"] }
routes:
  - name: app
    match: { path: /app }
    upstream: u
    headers:
      response:
        set: { Server: front }
        add: { X-Route: "\${route}", X-Keep: "2" }
        remove: [Via]
  - name: down
    match: { path: /down }
    upstream: dead
    headers: { response: { set: { X-Shaped: "yes" } } }
`);
  t.after(() => gw.close());
  const r = await send(gw.port, '/app/x');
  assert.equal(r.status, 200);
  assert.deepEqual(all(r.rawHeaders, 'server'), ['front']);
  assert.deepEqual(all(r.rawHeaders, 'x-powered-by'), []);
  assert.deepEqual(all(r.rawHeaders, 'x-route'), ['app']);
  assert.deepEqual(all(r.rawHeaders, 'x-keep'), ['1', '2']);
  assert.deepEqual(all(r.rawHeaders, 'strict-transport-security'), ['max-age=63072000']);
  assert.deepEqual(all(r.rawHeaders, 'via'), [], "remove reaches the gateway's own Via");
  assert.equal(all(r.rawHeaders, 'x-request-id').length, 1);
  const down = await send(gw.port, '/down');
  assert.equal(down.status, 502);
  assert.equal(down.headers['x-shaped'], undefined, 'a problem response made by the gateway is not edited');
  assert.equal(down.headers['content-type'], 'application/problem+json');
});

test('values: reserved variables per request, any other name from the environment at load', async (t) => {
  process.env.SHAPE_TEST_TEAM = 'payments';
  t.after(() => delete process.env.SHAPE_TEST_TEAM);
  const { server, seen } = await echoUpstream(t);
  const gw = await startTestGateway(`
upstreams:
  u: { targets: ["${server.url}"] }
routes:
  - name: vars
    match: { path: / }
    upstream: u
    headers:
      request:
        set:
          X-Client: "ip=\${client_ip}"
          X-Req: "\${request_id}"
          X-Host: "\${host}"
          X-Route: "route \${route} of \${SHAPE_TEST_TEAM}"
          X-Team: "\${SHAPE_TEST_TEAM}"
      response:
        set: { X-Echo-Id: "id:\${request_id}" }
`);
  t.after(() => gw.close());
  const r = await send(gw.port, '/v', {
    headers: { 'x-request-id': 'req-shape-1', host: 'shop.example:8443' },
  });
  assert.equal(r.status, 200);
  const h = seen[0].headers;
  assert.equal(h['x-client'], 'ip=127.0.0.1');
  assert.equal(h['x-req'], 'req-shape-1');
  assert.equal(h['x-host'], 'shop.example:8443');
  assert.equal(h['x-route'], 'route vars of payments');
  assert.equal(h['x-team'], 'payments');
  assert.equal(r.headers['x-echo-id'], 'id:req-shape-1');
  // Per request, not once: a second request gets its own id.
  const r2 = await send(gw.port, '/v', { headers: { 'x-request-id': 'req-shape-2' } });
  assert.equal(r2.headers['x-echo-id'], 'id:req-shape-2');
  assert.equal(seen[1].headers['x-req'], 'req-shape-2');
});

test('client_ip behind a trusted proxy is the first untrusted X-Forwarded-For hop', async (t) => {
  const { server, seen } = await echoUpstream(t);
  const gw = await startTestGateway(`
client: { trusted_proxies: ["127.0.0.0/8", "10.0.0.0/8"] }
upstreams:
  u: { targets: ["${server.url}"] }
routes:
  - { name: r, match: { path: / }, upstream: u, headers: { request: { set: { X-Real-IP: "\${client_ip}" } } } }
`);
  t.after(() => gw.close());
  await send(gw.port, '/', { headers: { 'x-forwarded-for': '203.0.113.7, 10.1.2.3' } });
  assert.equal(seen[0].headers['x-real-ip'], '203.0.113.7');
});

function configError(yaml: string, env: NodeJS.ProcessEnv = {}): ConfigError {
  try {
    loadConfigText(yaml, 'shape.yaml', env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  assert.fail('expected a ConfigError');
}

test('refused at load with file, line and key: hop-by-hop and framing headers, Host, bad rewrites, unknown log variables', () => {
  const err = configError(`upstreams:
  u: { targets: ["http://127.0.0.1:9"] }
defaults:
  headers:
    response:
      remove: [Transfer-Encoding]
routes:
  - name: r
    upstream: u
    headers:
      request:
        set:
          Connection: close
          Host: other
        add: { Content-Length: "0" }
  - name: re
    upstream: u
    rewrite: { regex: "^/v1/(.*", to: /api/$1 }
  - name: groups
    upstream: u
    rewrite: { regex: "^/v1/(.*)$", to: /api/$2 }
  - name: both
    upstream: u
    strip_prefix: true
    rewrite: { prefix: /x }
access_log: { path: stdout, format: "$remote_addr $no_such_thing" }
`);
  const msg = err.message;
  assert.match(
    msg,
    /shape\.yaml:6: defaults\.headers\.response\.remove\[0\]: transfer-encoding is a hop-by-hop or framing header/,
  );
  assert.match(
    msg,
    /shape\.yaml:13: routes\[0\]\.headers\.request\.set\.Connection: connection is a hop-by-hop or framing header/,
  );
  assert.match(
    msg,
    /shape\.yaml:14: routes\[0\]\.headers\.request\.set\.Host: Host cannot be edited in headers: use `host: keep \| upstream \| NAME`/,
  );
  assert.match(
    msg,
    /shape\.yaml:15: routes\[0\]\.headers\.request\.add\.Content-Length: content-length is a hop-by-hop or framing header/,
  );
  assert.match(msg, /shape\.yaml:18: routes\[1\]\.rewrite\.regex: invalid regular expression: /);
  assert.match(
    msg,
    /shape\.yaml:21: routes\[2\]\.rewrite\.to: uses \$2 but the regex has 1 capturing group\(s\)/,
  );
  assert.match(msg, /shape\.yaml:25: routes\[3\]\.rewrite: rewrite and strip_prefix both change the path/);
  assert.match(msg, /shape\.yaml:26: access_log\.format: unknown variable \$no_such_thing/);
});

test('reserved names are never taken from the environment; other names must be set', () => {
  const yaml = `upstreams:
  u: { targets: ["http://127.0.0.1:9"] }
routes:
  - name: r
    upstream: u
    headers: { request: { set: { X-Who: "\${client_ip} \${request_id} \${host} \${route}", X-Env: "\${SHAPE_UNSET_VAR}" } } }
`;
  // Set in the environment: still left for the gateway (resolved per request, not at load).
  const err = configError(yaml, { client_ip: 'from-env', host: 'from-env' });
  assert.equal(err.issues.length, 1, err.message);
  assert.match(err.message, /shape\.yaml:6: .*environment variable SHAPE_UNSET_VAR is not set/);
  const ok = loadConfigText(yaml, 'shape.yaml', { client_ip: 'from-env', SHAPE_UNSET_VAR: 'v' });
  const set = ok.routes[0].shape?.request?.set ?? [];
  assert.deepEqual(set, [
    ['X-Who', '${client_ip} ${request_id} ${host} ${route}'],
    ['X-Env', 'v'],
  ]);
});

/** A virtual-hosted upstream: answers by the Host it is sent, and records it. */
async function vhost(t: TestContext, status = 200) {
  const hosts: string[] = [];
  let self = '';
  const server: TestServer = await startHttpServer((req, res) => {
    const host = req.headers.host ?? '';
    hosts.push(host);
    const site = host === 'a.internal' ? 'site-a' : host === self ? 'self' : `unknown:${host}`;
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ site, xfh: req.headers['x-forwarded-host'] ?? null }));
  });
  self = `127.0.0.1:${server.port}`;
  t.after(() => server.close());
  return { server, hosts, self };
}

test('host: keep sends the client Host, NAME a fixed one, upstream the target own; X-Forwarded-Host stays the client one', async (t) => {
  const v = await vhost(t);
  const gw = await startTestGateway(`
upstreams:
  u: { targets: ["${v.server.url}"] }
  named: { targets: ["${v.server.url}"], host: a.internal }
routes:
  - { name: keep, match: { path: /keep }, upstream: u }
  - { name: fixed, match: { path: /fixed }, upstream: u, host: a.internal }
  - { name: inherited, match: { path: /inherited }, upstream: named }
  - { name: own, match: { path: /own }, upstream: named, host: upstream }
`);
  t.after(() => gw.close());
  const ask = async (path: string) => {
    const r = await send(gw.port, path, { headers: { host: 'shop.example' } });
    assert.equal(r.status, 200, r.body);
    return JSON.parse(r.body) as { site: string; xfh: string };
  };
  assert.deepEqual(await ask('/keep'), { site: 'unknown:shop.example', xfh: 'shop.example' });
  assert.deepEqual(await ask('/fixed'), { site: 'site-a', xfh: 'shop.example' });
  assert.deepEqual(
    await ask('/inherited'),
    { site: 'site-a', xfh: 'shop.example' },
    'the upstream layer applies',
  );
  assert.deepEqual(
    await ask('/own'),
    { site: 'self', xfh: 'shop.example' },
    'the route overrides its upstream',
  );
});

test('host: upstream on a retry sends the new target its own host:port', async (t) => {
  const bad = await vhost(t, 503);
  const good = await vhost(t, 200);
  const gw = await startTestGateway(`
upstreams:
  u: { targets: ["${bad.server.url}", "${good.server.url}"], host: upstream }
routes:
  - { name: r, match: { path: / }, upstream: u, retry: { attempts: 2, on: [503], backoff: 1ms } }
`);
  t.after(() => gw.close());
  // Three requests: the retry budget allows at least 3 retries a second.
  for (let i = 0; i < 3; i++) {
    const r = await send(gw.port, '/x', { headers: { host: 'shop.example' } });
    assert.equal(r.status, 200, `request ${i}: ${r.body} ${JSON.stringify(gw.log.entries.at(-1))}`);
    assert.equal(JSON.parse(r.body).site, 'self');
  }
  assert.ok(bad.hosts.length >= 1, 'some tries went to the failing target first and were retried');
  assert.deepEqual(new Set(bad.hosts), new Set([bad.self]));
  assert.deepEqual(new Set(good.hosts), new Set([good.self]));
  assert.equal(good.hosts.length, 3);
});

test('rewrite: regex with groups, prefix replacement, prefix "/" as strip; the query is kept', async (t) => {
  const { server, seen } = await echoUpstream(t);
  const gw = await startTestGateway(`
upstreams:
  u: { targets: ["${server.url}/base"] }
routes:
  - name: re
    match: { path: /v1 }
    upstream: u
    rewrite: { regex: "^/v1/users/(\\\\d+)/posts/([a-z]+)$", to: "/api/u/$1/p/\${2}" }
  - { name: pre, match: { path: /old }, upstream: u, rewrite: { prefix: /new/place } }
  - { name: strip, match: { path: /strip }, upstream: u, rewrite: { prefix: / } }
`);
  t.after(() => gw.close());
  const path = async (p: string) => {
    const r = await send(gw.port, p);
    assert.equal(r.status, 200, r.body);
    return JSON.parse(r.body).path as string;
  };
  assert.equal(await path('/v1/users/42/posts/abc?x=1&y=%20'), '/base/api/u/42/p/abc?x=1&y=%20');
  assert.equal(await path('/v1/other'), '/base/v1/other', 'no match: the path is unchanged');
  assert.equal(
    await path('/v1/users//42/posts/abc'),
    '/base/api/u/42/p/abc',
    'matched on the normalised path',
  );
  assert.equal(await path('/old/a/b?q'), '/base/new/place/a/b?q');
  assert.equal(await path('/old'), '/base/new/place');
  assert.equal(await path('/strip/a'), '/base/a');
  assert.equal(await path('/strip'), '/base/');
  assert.equal(seen.length, 7);
});

test('a rewrite that would escape (dot segment, %2e%2e, %2F) is refused with 400 and never reaches the upstream', async (t) => {
  const { server, seen } = await echoUpstream(t);
  const gw = await startTestGateway(`
upstreams:
  u: { targets: ["${server.url}"] }
routes:
  - name: files
    match: { path: /files }
    upstream: u
    rewrite: { regex: "^/files/([^-]*)-([^-]*)$", to: "/static/$1$2" }
  - name: encoded
    match: { path: /enc }
    upstream: u
    rewrite: { regex: "^/enc/(.*)$", to: "/static/%2e%2e/$1" }
  - name: prefixed
    match: { path: /p }
    upstream: u
    rewrite: { prefix: /static }
`);
  t.after(() => gw.close());
  const refused = async (p: string) => {
    const r = await fetch(gw.url(p));
    assert.equal(r.status, 400, p);
    const problem = await problemOf(r);
    assert.equal(problem.type.endsWith('/bad-request'), true);
    assert.match(problem.detail, /would produce a dot segment or an encoded "\/"/);
    return problem;
  };
  await refused('/files/.-.'); // `..` made of two harmless halves
  await refused('/files/.-'); // `.`
  await refused('/files/a%2Fb-c'); // an encoded slash
  await refused('/files/a%2f..%2fb-'); // lower-case, with dots
  await refused('/enc/x'); // %2e%2e once decoded
  await refused('/p/a%2Fb'); // prefix rewrite keeps the %2F: refused too
  assert.equal(seen.length, 0, 'nothing reached the upstream');
  // Dots inside a segment are ordinary: forwarded.
  const ok = await send(gw.port, '/files/a.b-c.d');
  assert.equal(ok.status, 200);
  assert.equal(JSON.parse(ok.body).path, '/static/a.bc.d');
  const entry = gw.log.entries.find((e) => e.status === 400);
  assert.equal(entry?.error, 'bad-request');
  assert.equal(entry?.route, 'files');
});

test('response edits apply to copies served by the response cache too, with per-request values', async (t) => {
  const { server, seen } = await echoUpstream(t, { 'cache-control': 'max-age=60', 'x-powered-by': 'PHP/5' });
  const gw = await startTestGateway(`
upstreams:
  u: { targets: ["${server.url}"] }
routes:
  - name: cached
    match: { path: / }
    upstream: u
    cache: {}
    headers: { response: { set: { X-Id: "\${request_id}" }, remove: [X-Powered-By] } }
`);
  t.after(() => gw.close());
  const miss = await send(gw.port, '/c', { headers: { 'x-request-id': 'first' } });
  const hit = await send(gw.port, '/c', { headers: { 'x-request-id': 'second' } });
  assert.equal(seen.length, 1, 'the second was served from the cache');
  assert.match(String(hit.headers['cache-status']), /hit/);
  assert.equal(miss.headers['x-id'], 'first');
  assert.equal(hit.headers['x-id'], 'second');
  assert.equal(hit.headers['x-powered-by'], undefined);
  assert.equal(miss.headers['x-powered-by'], undefined);
});

test("`sluice check` shows each route's rewrite (and strip_prefix) in its table", async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'sluice-shape-check-')), 'sluice.yaml');
  writeFileSync(
    file,
    `upstreams:
  app: { targets: ["http://127.0.0.1:19000"] }
routes:
  - { name: users-v1, match: { path: /v1 }, upstream: app, rewrite: { regex: "^/v1/users/(\\\\d+)$", to: "/api/users/$1" } }
  - { name: legacy, match: { path: /old }, upstream: app, rewrite: { prefix: /new } }
  - { name: api, match: { path: /api }, upstream: app, strip_prefix: true }
  - { name: rest, match: { path: / }, upstream: app }
`,
  );
  const r = await sluice(['check', '-c', file]);
  assert.equal(r.code, 0, r.stderr);
  const rows = r.stdout.split('\n');
  assert.match(rows.find((l) => l.startsWith('route')) ?? '', /^route\s+match\s+rewrite\s+upstream/);
  assert.match(
    rows.find((l) => l.startsWith('users-v1')) ?? '',
    /\^\/v1\/users\/\(\\d\+\)\$ → \/api\/users\/\$1/,
  );
  assert.match(rows.find((l) => l.startsWith('legacy')) ?? '', /\/old → \/new/);
  assert.match(rows.find((l) => l.startsWith('api')) ?? '', /strip \/api/);
  assert.match(rows.find((l) => l.startsWith('rest')) ?? '', /^rest\s+\/\s+-\s+app/);
});
