/**
 * HTTPS upstreams that fail their TLS handshake, through real sockets and real certificates made by
 * openssl in the test: each failure is a 502 whose Proxy-Status says what went wrong in TLS terms
 * (RFC 9209 tls_certificate_error / tls_protocol_error), never proxy_internal_error.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ConfigError } from '../../src/config/errors.ts';
import { loadConfigText } from '../../src/config/load.ts';
import { certDir } from '../certs.ts';
import { problemOf, startHttpServer, startTestGateway, type TestServer } from '../helpers.ts';

const certs = certDir('sluice-tls-');
const dir = certs.dir;

async function httpsServer(key: string, cert: string): Promise<{ url: string; close(): void }> {
  const server = https.createServer(
    { key: readFileSync(join(dir, key)), cert: readFileSync(join(dir, cert)) },
    (_q, r) => r.end('secret'),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `https://127.0.0.1:${(server.address() as { port: number }).port}`,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

let selfSigned: Awaited<ReturnType<typeof httpsServer>>;
let trusted: Awaited<ReturnType<typeof httpsServer>>;
let named: Awaited<ReturnType<typeof httpsServer>>;
let unknownCa: Awaited<ReturnType<typeof httpsServer>>;
let plain: TestServer;

before(async () => {
  // A self-signed leaf; a leaf signed by a CA nobody trusts (no names); leaves of that CA with names.
  certs.selfSigned('self', '127.0.0.1');
  certs.ca();
  certs.issue('leaf', 'email:none@test');
  certs.issue('ip', 'IP:127.0.0.1');
  certs.issue('dns', 'DNS:api.internal');
  selfSigned = await httpsServer('self.key', 'self.pem');
  trusted = await httpsServer('ip.key', 'ip.pem');
  named = await httpsServer('dns.key', 'dns.pem');
  unknownCa = await httpsServer('leaf.key', 'leaf.pem');
  plain = await startHttpServer((_q, r) => r.end('plain'));
});

after(async () => {
  selfSigned?.close();
  trusted?.close();
  named?.close();
  unknownCa?.close();
  await plain?.close();
  certs.remove();
});

describe('HTTPS upstreams that fail TLS', () => {
  for (const [name, target, error] of [
    ['a self-signed certificate', () => selfSigned.url, 'tls_certificate_error'],
    [
      'a certificate from an unknown CA (UNABLE_TO_VERIFY_LEAF_SIGNATURE)',
      () => unknownCa.url,
      'tls_certificate_error',
    ],
    [
      'a plain-HTTP server behind an https:// target',
      () => plain.url.replace('http://', 'https://'),
      'tls_protocol_error',
    ],
  ] as const) {
    test(`${name}: 502 upstream-unreachable with Proxy-Status error=${error}`, async (t) => {
      const gw = await startTestGateway(`
upstreams: { app: { targets: ["${target()}"] } }
routes: [{ name: r, match: { path: / }, upstream: app, timeouts: { total: 5s } }]
`);
      t.after(() => gw.close());
      const res = await fetch(gw.url('/x'));
      assert.equal(res.status, 502);
      assert.match(res.headers.get('proxy-status') ?? '', new RegExp(`error=${error}`));
      const p = await problemOf(res);
      assert.equal(p.type, 'https://sluice.dev/problems/upstream-unreachable');
      assert.match(String(p.detail), /TLS|certificate/);
      const entry = gw.log.entries.at(-1);
      assert.equal(entry?.outcome, 'upstream_error');
      assert.equal(entry?.phase, 'connect');
    });
  }
});

describe('HTTPS upstreams with tls settings', () => {
  const through = async (target: string, tls: string) => {
    const gw = await startTestGateway(`
upstreams: { app: { targets: ["${target}"], tls: ${tls} } }
routes: [{ name: r, match: { path: / }, upstream: app, timeouts: { total: 5s } }]
`);
    try {
      const res = await fetch(gw.url('/x'));
      return { status: res.status, body: await res.text(), ps: res.headers.get('proxy-status') };
    } finally {
      await gw.close();
    }
  };

  test('tls.ca trusts an internal CA; verification stays on for everything else', async () => {
    const ca = join(dir, 'ca.pem');
    assert.deepEqual(await through(trusted.url, `{ ca: "${ca}" }`), {
      status: 200,
      body: 'secret',
      ps: null,
    });
    const other = await through(selfSigned.url, `{ ca: "${ca}" }`);
    assert.equal(other.status, 502);
    assert.match(other.ps ?? '', /tls_certificate_error/);
  });

  test('tls.servername is sent as SNI and verified against; insecure accepts any certificate', async () => {
    const ca = join(dir, 'ca.pem');
    assert.equal(
      (await through(named.url, `{ ca: "${ca}" }`)).status,
      502,
      'the certificate names api.internal, not 127.0.0.1',
    );
    assert.equal((await through(named.url, `{ ca: "${ca}", servername: api.internal }`)).body, 'secret');
    assert.equal((await through(selfSigned.url, '{ insecure: true }')).body, 'secret');
  });

  test('a CA file that cannot be read is a config error naming the key and line', () => {
    assert.throws(
      () =>
        loadConfigText(
          `upstreams:\n  app:\n    targets: ["https://127.0.0.1:1"]\n    tls: { ca: /nonexistent/ca.pem }\nroutes: [{ name: r, upstream: app }]\n`,
          'sluice.yaml',
          {},
        ),
      (err: ConfigError) =>
        /sluice\.yaml:4: upstreams\.app\.tls\.ca: \/nonexistent\/ca\.pem: file not found/.test(err.message),
    );
  });
});
