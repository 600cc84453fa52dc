/**
 * Access control over real sockets (SPEC §13): allow/deny on the client address as trusted_proxies
 * resolve it, basic / API-key / JWT authentication, the identity sent upstream, credentials stripped,
 * and config errors naming file and line. Every upstream counts its requests, to prove that a refused
 * request never reached it.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes, scryptSync } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { exportJWK, exportSPKI, generateKeyPair, type JWTPayload, SignJWT } from 'jose';
import { loadConfigText } from '../../src/config/load.ts';
import { startSluice } from '../../src/main.ts';
import type { AccessLogEntry } from '../../src/observability/access-log.ts';
import {
  problemOf,
  rawRequest,
  send,
  sleep,
  startHttpServer,
  startTestGateway,
  type TestGateway,
} from '../helpers.ts';

interface Counted {
  url: string;
  count: () => number;
  last: () => IncomingHttpHeaders | undefined;
}

async function countingUpstream(t: TestContext): Promise<Counted> {
  let n = 0;
  let last: IncomingHttpHeaders | undefined;
  const up = await startHttpServer((req, res) => {
    n++;
    last = req.headers;
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok');
  });
  t.after(() => up.close());
  return { url: up.url, count: () => n, last: () => last };
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'sluice-access-'));
}

async function entryOf(gw: TestGateway, id: string): Promise<AccessLogEntry> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      gw.entry(id),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no access-log entry for ${id}`)), 3_000);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const basicHeader = (user: string, pass: string) =>
  `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

test('allow and deny: 403 forbidden problem+json, logged, never sent upstream; deny wins over allow', async (t) => {
  const up = await countingUpstream(t);
  const gw = await startTestGateway(`
upstreams:
  u: { targets: ["${up.url}"] }
routes:
  - { name: open, match: { path: /open }, upstream: u, allow: ["127.0.0.0/8", "::1"] }
  - { name: closed, match: { path: /closed }, upstream: u, allow: ["10.0.0.0/8"] }
  - { name: both, match: { path: /both }, upstream: u, allow: ["127.0.0.0/8"], deny: ["127.0.0.1"] }
`);
  t.after(() => gw.close());
  assert.equal((await fetch(gw.url('/open'))).status, 200);
  assert.equal(up.count(), 1);
  for (const path of ['/closed', '/both']) {
    const res = await fetch(gw.url(path), { headers: { 'x-request-id': `forbid-${path.slice(1)}` } });
    assert.equal(res.status, 403);
    const p = await problemOf(res);
    assert.match(p.type, /\/forbidden$/);
    assert.match(p.detail, /client 127\.0\.0\.1 (is not in the allow list|is denied)/);
    const e = await entryOf(gw, `forbid-${path.slice(1)}`);
    assert.equal(e.outcome, 'forbidden');
    assert.equal(e.status, 403);
  }
  assert.equal(up.count(), 1, 'refused requests never reached the upstream');
});

test('allow/deny see the client that trusted proxies name in X-Forwarded-For (IPv4 and IPv6), and ignore an untrusted peer', async (t) => {
  const up = await countingUpstream(t);
  const trusted = await startTestGateway(`
client: { trusted_proxies: ["127.0.0.1"] }
upstreams:
  u: { targets: ["${up.url}"] }
routes:
  - { name: v4, match: { path: /v4 }, upstream: u, deny: ["198.51.100.0/24"] }
  - { name: v6, match: { path: /v6 }, upstream: u, allow: ["2001:db8::/32"] }
`);
  t.after(() => trusted.close());
  const get = async (gw: TestGateway, path: string, xff: string) =>
    (await send(gw.port, path, { headers: { host: 'x', 'x-forwarded-for': xff } })).status;
  assert.equal(await get(trusted, '/v4', '198.51.100.7'), 403);
  // The right-most untrusted entry counts: a client cannot hide behind a forged left-most one.
  assert.equal(await get(trusted, '/v4', '203.0.113.1, 198.51.100.7'), 403);
  assert.equal(await get(trusted, '/v4', '203.0.113.1'), 200);
  assert.equal(await get(trusted, '/v6', '2001:db8::7'), 200);
  assert.equal(await get(trusted, '/v6', '2001:db9::1'), 403);
  assert.equal(up.count(), 2);

  // 127.0.0.1 is not a trusted proxy here: its X-Forwarded-For is ignored, the peer is the client.
  const untrusted = await startTestGateway(`
client: { trusted_proxies: ["10.0.0.0/8"] }
upstreams:
  u: { targets: ["${up.url}"] }
routes:
  - { name: only, match: { path: / }, upstream: u, allow: ["203.0.113.1"] }
`);
  t.after(() => untrusted.close());
  assert.equal(await get(untrusted, '/', '203.0.113.1'), 403);
  assert.equal(up.count(), 2);
});

test('basic auth with bcrypt and scrypt: missing and wrong get 401 with a Basic challenge; the identity goes upstream, Authorization does not', async (t) => {
  const up = await countingUpstream(t);
  const dir = tmp();
  const salt = randomBytes(16);
  const scrypted = scryptSync('s3cret-b', salt, 32, { N: 2 ** 14, r: 8, p: 1 });
  const users = join(dir, 'users');
  writeFileSync(
    users,
    `# comment\nalice:${bcrypt.hashSync('s3cret-a', 10)}\nbob:$scrypt$ln=14,r=8,p=1$${salt.toString('base64')}$${scrypted.toString('base64')}\n`,
  );
  const gw = await startTestGateway(`
upstreams:
  u: { targets: ["${up.url}"] }
routes:
  - name: api
    match: { path: /api }
    upstream: u
    auth: { basic: { users: "${users}", realm: "Sluice API" }, identity_header: X-User }
  - name: fwd
    match: { path: /fwd }
    upstream: u
    auth: { basic: { users: "${users}" }, forward_auth: true }
`);
  t.after(() => gw.close());

  const missing = await fetch(gw.url('/api'), { headers: { 'x-request-id': 'basic-missing' } });
  assert.equal(missing.status, 401);
  assert.equal(missing.headers.get('www-authenticate'), 'Basic realm="Sluice API", charset="UTF-8"');
  assert.match((await problemOf(missing)).type, /\/unauthorized$/);
  assert.equal((await entryOf(gw, 'basic-missing')).outcome, 'unauthorized');

  for (const [user, pass] of [
    ['alice', 'wrong'],
    ['bob', 's3cret-a'],
    ['nobody', 's3cret-a'],
  ]) {
    const res = await fetch(gw.url('/api'), { headers: { authorization: basicHeader(user, pass) } });
    assert.equal(res.status, 401, `${user}:${pass}`);
    assert.match(res.headers.get('www-authenticate') ?? '', /^Basic realm=/);
    await res.text();
  }
  assert.equal(up.count(), 0, 'no refused request reached the upstream');

  for (const [user, pass] of [
    ['alice', 's3cret-a'],
    ['bob', 's3cret-b'],
  ]) {
    // A client-sent X-User is never believed: it is replaced by the verified identity.
    const res = await fetch(gw.url('/api'), {
      headers: { authorization: basicHeader(user, pass), 'x-user': 'root' },
    });
    assert.equal(res.status, 200, user);
    await res.text();
    assert.equal(up.last()?.['x-user'], user);
    assert.equal(up.last()?.authorization, undefined, 'Authorization stripped');
  }
  // A repeated verification is served from the cache of verified credentials: far below bcrypt's cost.
  const started = performance.now();
  for (let i = 0; i < 20; i++) {
    const r = await fetch(gw.url('/api'), { headers: { authorization: basicHeader('alice', 's3cret-a') } });
    assert.equal(r.status, 200);
    await r.text();
  }
  const perRequest = (performance.now() - started) / 20;
  assert.ok(perRequest < 20, `cached basic verification took ${perRequest.toFixed(1)} ms per request`);

  const fwd = await fetch(gw.url('/fwd'), { headers: { authorization: basicHeader('alice', 's3cret-a') } });
  assert.equal(fwd.status, 200);
  assert.equal(up.last()?.authorization, basicHeader('alice', 's3cret-a'), 'forward_auth: true forwards it');
});

test('API keys (plain and sha256 lines): missing and wrong get 401, the key name is the identity, the key header is stripped', async (t) => {
  const up = await countingUpstream(t);
  const dir = tmp();
  const keys = join(dir, 'keys');
  const hashed = createHash('sha256').update('key-of-the-mobile-app-0001').digest('hex');
  writeFileSync(keys, `web:key-of-the-web-app-000001\nmobile:sha256:${hashed}\n`);
  const gw = await startTestGateway(`
upstreams:
  u: { targets: ["${up.url}"] }
routes:
  - name: api
    upstream: u
    auth: { api_key: { keys: "${keys}" }, identity_header: X-Client }
`);
  t.after(() => gw.close());
  const missing = await fetch(gw.url('/'));
  assert.equal(missing.status, 401);
  assert.equal(missing.headers.get('www-authenticate'), 'ApiKey header="X-Api-Key"');
  await missing.text();
  const wrong = await fetch(gw.url('/'), { headers: { 'x-api-key': 'key-of-the-web-app-000002' } });
  assert.equal(wrong.status, 401);
  assert.match((await problemOf(wrong)).detail, /unknown API key/);
  assert.equal(up.count(), 0);
  for (const [key, name] of [
    ['key-of-the-web-app-000001', 'web'],
    ['key-of-the-mobile-app-0001', 'mobile'],
  ]) {
    const res = await fetch(gw.url('/'), { headers: { 'x-api-key': key } });
    assert.equal(res.status, 200);
    await res.text();
    assert.equal(up.last()?.['x-client'], name);
    assert.equal(up.last()?.['x-api-key'], undefined);
  }
});

/** A JWKS endpoint on loopback: serves `keys`, or never answers while `hang` is set. */
async function jwksServer(t: TestContext, keys: object[]) {
  const state = { hang: false, fetches: 0 };
  const server = createServer((_req, res) => {
    state.fetches++;
    if (state.hang) return; // accepts, never answers
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/jwks.json`, state };
}

test('JWT against a local JWKS: valid passes; expired, nbf beyond leeway, wrong issuer, wrong audience, unknown kid and bad signature get 401 Bearer invalid_token', async (t) => {
  const up = await countingUpstream(t);
  const { publicKey, privateKey } = await generateKeyPair('ES256');
  const other = await generateKeyPair('ES256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  const jwks = await jwksServer(t, [jwk]);
  const gw = await startTestGateway(`
upstreams:
  u: { targets: ["${up.url}"] }
routes:
  - name: api
    upstream: u
    auth:
      jwt: { jwks: "${jwks.url}", issuer: https://issuer.test, audience: sluice-api, leeway: 30s, cache: false }
      identity_header: X-Sub
`);
  t.after(() => gw.close());
  const now = Math.floor(Date.now() / 1000);
  const sign = (claims: JWTPayload, opts: { kid?: string; key?: CryptoKey } = {}) =>
    new SignJWT({
      iss: 'https://issuer.test',
      aud: 'sluice-api',
      sub: 'user-42',
      iat: now,
      exp: now + 300,
      ...claims,
    })
      .setProtectedHeader({ alg: 'ES256', kid: opts.kid ?? 'k1' })
      .sign(opts.key ?? privateKey);
  const call = (token: string) => fetch(gw.url('/'), { headers: { authorization: `Bearer ${token}` } });

  const ok = await call(await sign({}));
  assert.equal(ok.status, 200, await ok.text());
  assert.equal(up.last()?.['x-sub'], 'user-42');
  assert.equal(up.last()?.authorization, undefined);
  // Within the leeway: accepted.
  const skewed = await call(await sign({ exp: now - 10 }));
  assert.equal(skewed.status, 200);
  await skewed.text();
  assert.equal(up.count(), 2);

  const valid = await sign({});
  const [h, p] = valid.split('.');
  const tampered = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), sub: 'admin' })).toString('base64url')}.${valid.split('.')[2]}`;
  const cases: [string, string, RegExp][] = [
    ['expired', await sign({ exp: now - 120 }), /expired/],
    ['nbf in the future', await sign({ nbf: now + 120 }), /not valid yet/],
    ['wrong issuer', await sign({ iss: 'https://evil.test' }), /wrong issuer/],
    ['wrong audience', await sign({ aud: 'another-api' }), /wrong audience/],
    ['unknown kid', await sign({}, { kid: 'k9', key: other.privateKey }), /no key of the JWKS/],
    ['bad signature', tampered, /signature/],
    ['signed by another key under the known kid', await sign({}, { key: other.privateKey }), /signature/],
  ];
  for (const [what, token, why] of cases) {
    const res = await call(token);
    assert.equal(res.status, 401, what);
    const challenge = res.headers.get('www-authenticate') ?? '';
    assert.match(challenge, /^Bearer error="invalid_token", error_description="[^"]+"$/, what);
    assert.match(challenge, why, what);
    assert.match((await problemOf(res)).type, /\/unauthorized$/);
  }
  const none = await fetch(gw.url('/'));
  assert.equal(none.status, 401);
  assert.equal(none.headers.get('www-authenticate'), 'Bearer');
  await none.text();
  assert.equal(up.count(), 2, 'no refused token reached the upstream');
});

test('a JWKS server that hangs gives 503 auth-unavailable within jwks_timeout, never a hang', async (t) => {
  const up = await countingUpstream(t);
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const jwks = await jwksServer(t, [{ ...(await exportJWK(publicKey)), kid: 'r1', alg: 'RS256' }]);
  jwks.state.hang = true;
  const gw = await startTestGateway(`
upstreams:
  u: { targets: ["${up.url}"] }
routes:
  - name: api
    upstream: u
    auth: { jwt: { jwks: "${jwks.url}", issuer: iss, audience: aud, jwks_timeout: 400ms } }
`);
  t.after(() => gw.close());
  const token = await new SignJWT({ sub: 's' })
    .setProtectedHeader({ alg: 'RS256', kid: 'r1' })
    .setIssuer('iss')
    .setAudience('aud')
    .setExpirationTime('5m')
    .sign(privateKey);
  const started = performance.now();
  const res = await fetch(gw.url('/'), {
    headers: { authorization: `Bearer ${token}`, 'x-request-id': 'jwks-hang' },
  });
  const took = performance.now() - started;
  assert.equal(res.status, 503);
  assert.equal(res.headers.get('retry-after'), '5');
  const p = await problemOf(res);
  assert.match(p.type, /\/auth-unavailable$/);
  assert.match(p.detail, /did not answer within 400 ms/);
  assert.ok(took >= 350 && took < 2_500, `answered after ${took.toFixed(0)} ms`);
  assert.equal((await entryOf(gw, 'jwks-hang')).status, 503);
  assert.equal(jwks.state.fetches, 1);
  // Once the JWKS answers, the same token passes.
  jwks.state.hang = false;
  const again = await fetch(gw.url('/'), { headers: { authorization: `Bearer ${token}` } });
  assert.equal(again.status, 200, await again.text());
  assert.equal(up.count(), 1);
});

test('JWT with a PEM public_key file, and the verified-token cache', async (t) => {
  const up = await countingUpstream(t);
  const { privateKey, publicKey } = await generateKeyPair('EdDSA');
  const dir = tmp();
  const pem = join(dir, 'key.pem');
  writeFileSync(pem, await exportSPKI(publicKey));
  const gw = await startTestGateway(`
upstreams:
  u: { targets: ["${up.url}"] }
routes:
  - name: api
    upstream: u
    auth: { jwt: { public_key: "${pem}", issuer: iss, audience: [a1, a2], identity_claim: client_id }, identity_header: X-Client }
`);
  t.after(() => gw.close());
  const token = await new SignJWT({ client_id: 'svc-7' })
    .setProtectedHeader({ alg: 'EdDSA' })
    .setIssuer('iss')
    .setAudience('a2')
    .setExpirationTime('5m')
    .sign(privateKey);
  for (let i = 0; i < 3; i++) {
    const res = await fetch(gw.url('/'), { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 200, await res.text());
    assert.equal(up.last()?.['x-client'], 'svc-7');
  }
  const noClaim = await new SignJWT({})
    .setProtectedHeader({ alg: 'EdDSA' })
    .setIssuer('iss')
    .setAudience('a1')
    .setExpirationTime('5m')
    .sign(privateKey);
  const res = await fetch(gw.url('/'), { headers: { authorization: `Bearer ${noClaim}` } });
  assert.equal(res.status, 401);
  assert.match(res.headers.get('www-authenticate') ?? '', /no 'client_id' claim/);
  // An identity that is not plain visible ASCII reaches the upstream percent-encoded, never as raw bytes.
  const odd = await new SignJWT({ client_id: 'jürgen\r\nX-Admin: yes' })
    .setProtectedHeader({ alg: 'EdDSA' })
    .setIssuer('iss')
    .setAudience('a1')
    .setExpirationTime('5m')
    .sign(privateKey);
  const oddRes = await fetch(gw.url('/'), { headers: { authorization: `Bearer ${odd}` } });
  assert.equal(oddRes.status, 200);
  assert.equal(up.last()?.['x-client'], 'j%C3%BCrgen%0D%0AX-Admin%3A%20yes');
  assert.equal(up.last()?.['x-admin'], undefined);
});

test('an Upgrade request meets the same gate at the same point', async (t) => {
  const up = await countingUpstream(t);
  const gw = await startTestGateway(`
upstreams:
  u: { targets: ["${up.url}"] }
routes:
  - { name: ws, upstream: u, allow: ["10.0.0.0/8"] }
`);
  t.after(() => gw.close());
  const r = await rawRequest(
    gw.port,
    'GET /socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
  );
  assert.equal(r.status, 403);
  assert.match(r.body, /forbidden/);
  assert.equal(up.count(), 0);
});

test('a reload reads the credentials files again', async (t) => {
  const up = await countingUpstream(t);
  const dir = tmp();
  const keys = join(dir, 'keys');
  writeFileSync(keys, 'one:first-key-0000000000\n');
  const yaml = `listen: 127.0.0.1:0\nupstreams:\n  u: { targets: ["${up.url}"] }\nroutes:\n  - { name: api, upstream: u, auth: { api_key: { keys: "${keys}" } } }\n`;
  const gw = await startTestGateway(yaml.replace('listen: 127.0.0.1:0\n', ''));
  t.after(() => gw.close());
  const status = async (key: string) => {
    const r = await fetch(gw.url('/'), { headers: { 'x-api-key': key } });
    await r.text();
    return r.status;
  };
  assert.equal(await status('first-key-0000000000'), 200);
  assert.equal(await status('second-key-000000000'), 401);
  writeFileSync(keys, 'two:second-key-000000000\n');
  gw.sluice.reload(loadConfigText(yaml, 'test.yaml'));
  assert.equal(await status('second-key-000000000'), 200);
  assert.equal(await status('first-key-0000000000'), 401);
});

test('config errors name the config file and line, and the credentials file and line', () => {
  const dir = tmp();
  const users = join(dir, 'users');
  writeFileSync(users, `alice:${bcrypt.hashSync('x', 4)}\nbob:plaintext\n`);
  const keys = join(dir, 'keys');
  writeFileSync(keys, 'good:a-long-enough-key-0001\nbad:sha256:xyz\n');
  const load = (routes: string) =>
    loadConfigText(
      `listen: 127.0.0.1:0\nupstreams:\n  u: { targets: ["http://127.0.0.1:9"] }\nroutes:\n${routes}`,
      'sluice.yaml',
    );
  assert.throws(
    () => load('  - name: a\n    upstream: u\n    allow:\n      - 10.0.0.0/8\n      - 10.0.0.0/33\n'),
    /sluice\.yaml:9: routes\[0\]\.allow\[1\]: "10\.0\.0\.0\/33": the prefix length must be 0\.\.32$/m,
  );
  assert.throws(
    () => load('  - name: a\n    upstream: u\n    auth:\n      basic: { users: /nonexistent/users }\n'),
    /sluice\.yaml:8: routes\[0\]\.auth\.basic\.users: \/nonexistent\/users: file not found/,
  );
  assert.throws(
    () => load(`  - name: a\n    upstream: u\n    auth:\n      basic:\n        users: ${users}\n`),
    (err: Error) => {
      assert.match(err.message, /sluice\.yaml:9: routes\[0\]\.auth\.basic\.users: /);
      assert.ok(err.message.includes(`${users}:2: user "bob": not a bcrypt`), err.message);
      return true;
    },
  );
  assert.throws(
    () => load(`  - name: a\n    upstream: u\n    auth: { api_key: { keys: ${keys} } }\n`),
    (err: Error) => err.message.includes(`${keys}:2: key "bad": sha256: needs 64 hex digits`),
  );
  assert.throws(
    () => load('  - name: a\n    upstream: u\n    rate_limit: { rate: 10/s, key: identity }\n'),
    /sluice\.yaml:7: routes\[0\]\.rate_limit\.key: key: identity needs auth/,
  );
  assert.throws(
    () => load('  - name: a\n    upstream: u\n    auth: { jwt: { issuer: i, audience: a } }\n'),
    /routes\[0\]\.auth\.jwt: set exactly one of jwks/,
  );
  assert.throws(
    () =>
      loadConfigText(
        'client: { trusted_proxies: ["10.0.0.0/8", "nope"] }\nupstreams:\n  u: { targets: ["http://127.0.0.1:9"] }\nroutes:\n  - { name: a, upstream: u }\n',
        'sluice.yaml',
      ),
    /sluice\.yaml:1: client\.trusted_proxies\[1\]: "nope" is not an IPv4 or IPv6 address/,
  );
});

test('the order of the checks: deny (403) before auth (401) before rate limit (429), all before the body size (413)', async (t) => {
  const up = await countingUpstream(t);
  const dir = tmp();
  writeFileSync(join(dir, 'keys'), 'k:the-only-key-000000001\n');
  const gw = await startTestGateway(`
upstreams:
  u: { targets: ["${up.url}"] }
routes:
  - name: denied
    match: { path: /denied }
    upstream: u
    deny: ["127.0.0.1"]
    auth: { api_key: { keys: "${join(dir, 'keys')}" } }
  - name: limited
    match: { path: /limited }
    upstream: u
    max_body: 1KB
    auth: { api_key: { keys: "${join(dir, 'keys')}" } }
    rate_limit: { rate: 1/m, burst: 1 }
`);
  t.after(() => gw.close());
  const post = (path: string, headers: Record<string, string>) =>
    send(gw.port, path, { method: 'POST', headers: { host: 'x', 'content-length': '5000', ...headers } });
  assert.equal((await post('/denied', {})).status, 403, 'a denied client learns nothing about auth');
  assert.equal((await post('/limited', {})).status, 401, 'auth before the body size');
  // Unauthenticated requests do not spend the bucket.
  assert.equal((await post('/limited', { 'x-api-key': 'the-only-key-000000001' })).status, 413);
  assert.equal(
    (await post('/limited', { 'x-api-key': 'the-only-key-000000001' })).status,
    429,
    'the 413 spent the token',
  );
  assert.equal(up.count(), 0);
});

test('concurrent requests with the same new credentials share one bcrypt verification', async (t) => {
  const up = await countingUpstream(t);
  const dir = tmp();
  // Cost 12: about 0.25–0.5 s per verification, so 24 separate ones would take several seconds.
  writeFileSync(join(dir, 'users'), `carol:${bcrypt.hashSync('pw-of-carol', 12)}\n`);
  const gw = await startTestGateway(`
upstreams:
  u: { targets: ["${up.url}"] }
routes:
  - { name: api, upstream: u, auth: { basic: { users: "${join(dir, 'users')}" } } }
`);
  t.after(() => gw.close());
  const one = performance.now();
  const single = await send(gw.port, '/', {
    headers: { host: 'x', authorization: basicHeader('carol', 'wrong') },
  });
  const singleMs = performance.now() - one;
  assert.equal(single.status, 401);
  const started = performance.now();
  const statuses = await Promise.all(
    Array.from({ length: 24 }, async () => {
      const r = await send(gw.port, '/', {
        headers: { host: 'x', authorization: basicHeader('carol', 'pw-of-carol') },
      });
      return r.status;
    }),
  );
  const took = performance.now() - started;
  assert.ok(
    statuses.every((s) => s === 200),
    statuses.join(' '),
  );
  assert.ok(
    took < singleMs * 3,
    `24 concurrent first requests took ${took.toFixed(0)} ms, one verification ${singleMs.toFixed(0)} ms`,
  );
});

test('an IPv6 client (a [::1] listener) is matched by IPv6 allow and deny entries', async (t) => {
  const up = await countingUpstream(t);
  const config = loadConfigText(
    `listen: "[::1]:0"
admin: { listen: 127.0.0.1:0 }
access_log: off
upstreams:
  u: { targets: ["${up.url}"] }
routes:
  - { name: in, match: { path: /in }, upstream: u, allow: ["::1/128"] }
  - { name: out, match: { path: /out }, upstream: u, deny: ["::/0"] }
  - { name: v4only, match: { path: /v4only }, upstream: u, allow: ["0.0.0.0/0"] }
`,
    'test.yaml',
  );
  const sluice = await startSluice(config, { admin: false });
  t.after(() => sluice.close(500));
  const get = async (path: string) => {
    const r = await fetch(`http://[::1]:${sluice.port}${path}`);
    await r.text();
    return r.status;
  };
  assert.deepEqual([await get('/in'), await get('/out'), await get('/v4only')], [200, 403, 403]);
  assert.equal(up.count(), 1);
});

test('a JWKS server that goes down after a first fetch: the keys it gave keep verifying tokens (stale-if-error), bounded waits', async (t) => {
  const up = await countingUpstream(t);
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const jwks = await jwksServer(t, [{ ...(await exportJWK(publicKey)), kid: 'e1', alg: 'ES256' }]);
  const gw = await startTestGateway(`
upstreams:
  u: { targets: ["${up.url}"] }
routes:
  - name: api
    upstream: u
    auth: { jwt: { jwks: "${jwks.url}", issuer: iss, audience: aud, jwks_timeout: 300ms, jwks_cache: 200ms, cache: false } }
`);
  t.after(() => gw.close());
  const token = async (kid = 'e1') =>
    new SignJWT({ sub: 's' })
      .setProtectedHeader({ alg: 'ES256', kid })
      .setIssuer('iss')
      .setAudience('aud')
      .setExpirationTime('5m')
      .sign(privateKey);
  const call = async (tok: string) => {
    const started = performance.now();
    const r = await fetch(gw.url('/'), { headers: { authorization: `Bearer ${tok}` } });
    await r.text();
    return { status: r.status, ms: performance.now() - started };
  };
  assert.equal((await call(await token())).status, 200);
  assert.equal(jwks.state.fetches, 1);
  jwks.state.hang = true;
  await sleep(300); // the fetched set is now older than jwks_cache
  const first = await call(await token());
  assert.equal(first.status, 200, 'verified with the last key set');
  assert.ok(first.ms >= 250 && first.ms < 2_000, `the first request waited ${first.ms.toFixed(0)} ms`);
  const second = await call(await token());
  assert.equal(second.status, 200);
  assert.ok(second.ms < 250, `later requests do not wait for the server (${second.ms.toFixed(0)} ms)`);
  assert.equal(jwks.state.fetches, 2, 'the server is not asked again meanwhile');
  // An unknown kid cannot be checked while the server is down: 503, not 401.
  const unknown = await fetch(gw.url('/'), { headers: { authorization: `Bearer ${await token('e2')}` } });
  assert.equal(unknown.status, 503);
  assert.match((await problemOf(unknown)).detail, /no key it gave before matches/);
  assert.equal(up.count(), 3);
});

test('routes naming the same JWKS share one fetch, and a reload keeps the fetched set', async (t) => {
  const up = await countingUpstream(t);
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const jwks = await jwksServer(t, [{ ...(await exportJWK(publicKey)), kid: 'p1', alg: 'ES256' }]);
  const yaml = `listen: 127.0.0.1:0
upstreams:
  u: { targets: ["${up.url}"] }
defaults:
  auth: { jwt: { jwks: "${jwks.url}", issuer: iss, audience: aud } }
routes:
  - { name: a, match: { path: /a }, upstream: u }
  - { name: b, match: { path: /b }, upstream: u }
`;
  const gw = await startTestGateway(yaml.replace('listen: 127.0.0.1:0\n', ''));
  t.after(() => gw.close());
  const token = await new SignJWT({ sub: 's' })
    .setProtectedHeader({ alg: 'ES256', kid: 'p1' })
    .setIssuer('iss')
    .setAudience('aud')
    .setExpirationTime('5m')
    .sign(privateKey);
  const status = async (path: string) => {
    const r = await fetch(gw.url(path), { headers: { authorization: `Bearer ${token}` } });
    await r.text();
    return r.status;
  };
  assert.deepEqual(await Promise.all([status('/a'), status('/b')]), [200, 200]);
  assert.equal(jwks.state.fetches, 1);
  gw.sluice.reload(loadConfigText(yaml, 'test.yaml'));
  assert.deepEqual([await status('/a'), await status('/b')], [200, 200]);
  assert.equal(jwks.state.fetches, 1, 'the reload did not fetch the JWKS again');
});
