/**
 * TLS towards clients (SPEC §2 `listen` list form, §3): a plain and an HTTPS listener side by side,
 * certificates chosen by SNI, X-Forwarded-Proto, certificate files reloaded when they change (new
 * connections get the new one, open ones keep working, a broken file is refused), and start-up errors
 * that name the file. Real sockets, certificates made by openssl in the test.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect, type PeerCertificate } from 'node:tls';
import type { ConfigError } from '../../src/config/errors.ts';
import { loadConfigText } from '../../src/config/load.ts';
import { startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import { startSluice } from '../../src/main.ts';
import { MemoryAccessLog } from '../../src/observability/access-log.ts';
import { certDir } from '../certs.ts';
import { sleep } from '../helpers.ts';

const certs = certDir('sluice-tls-listen-');
const dir = certs.dir;
const path = certs.path;

let ca: string;
before(() => {
  certs.ca();
  ca = readFileSync(path('ca.pem'), 'utf8');
  certs.issue('a', 'DNS:a.test');
  certs.issue('b', 'DNS:b.test');
  certs.issue('a2', 'DNS:a.test');
});
after(() => certs.remove());

/** The certificate a TLS handshake with `servername` gets. */
function peer(port: number, servername?: string): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    // Names are checked by the assertions, not by the client (an unknown SNI gets the first certificate).
    const s = connect(
      { host: '127.0.0.1', port, servername, ca, checkServerIdentity: () => undefined },
      () => {
        resolve(s.getPeerCertificate());
        s.end();
      },
    );
    s.on('error', reject);
  });
}

function get(port: number, p: string, agent?: https.Agent): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    https
      .get({ host: '127.0.0.1', port, path: p, ca, servername: 'a.test', agent }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

describe('TLS listeners', () => {
  test('plain and HTTPS side by side; SNI picks the certificate; X-Forwarded-Proto says https', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const config = loadConfigText(
      `listen:
  - 127.0.0.1:0
  - address: 127.0.0.1:0
    tls:
      - { cert: ${path('a.pem')}, key: ${path('a.key')} }
      - { cert: ${path('b.pem')}, key: ${path('b.key')} }
admin: { listen: 127.0.0.1:0 }
upstreams: { demo: { targets: ["${demo.url}"] } }
routes: [{ name: r, match: { path: / }, upstream: demo }]
`,
      'tls.yaml',
    );
    const sluice = await startSluice(config, { accessLog: new MemoryAccessLog(), admin: false });
    t.after(() => sluice.close(200));
    const [plainPort, tlsPort] = sluice.ports;
    assert.equal(sluice.port, plainPort);

    assert.equal((await peer(tlsPort, 'a.test')).subject.CN, 'a.test');
    assert.equal((await peer(tlsPort, 'b.test')).subject.CN, 'b.test');
    assert.equal((await peer(tlsPort, 'other.test')).subject.CN, 'a.test', 'no match: the first');

    const echoed = await get(tlsPort, '/echo');
    assert.equal(echoed.status, 200);
    assert.equal(JSON.parse(echoed.body).headers['x-forwarded-proto'], 'https');
    const plain = await (await fetch(`http://127.0.0.1:${plainPort}/echo`)).json();
    assert.equal((plain as { headers: Record<string, string> }).headers['x-forwarded-proto'], 'http');
  });

  test('changed certificate files apply to new connections; open ones keep working; a broken file is refused', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const live = mkdtempSync(join(dir, 'live-'));
    writeFileSync(join(live, 'cert.pem'), readFileSync(path('a.pem')));
    writeFileSync(join(live, 'key.pem'), readFileSync(path('a.key')));
    const config = loadConfigText(
      `listen: [{ address: 127.0.0.1:0, tls: { cert: ${join(live, 'cert.pem')}, key: ${join(live, 'key.pem')} } }]
admin: { listen: 127.0.0.1:0 }
upstreams: { demo: { targets: ["${demo.url}"] } }
routes: [{ name: r, match: { path: / }, upstream: demo }]
`,
      'tls.yaml',
    );
    const sluice = await startSluice(config, { accessLog: new MemoryAccessLog(), admin: false });
    t.after(() => sluice.close(200));
    const port = sluice.port;
    const before = (await peer(port, 'a.test')).fingerprint256;
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    t.after(() => agent.destroy());
    assert.equal((await get(port, '/fast', agent)).status, 200);

    // A renewal, as certbot does it: new files renamed into place.
    writeFileSync(join(live, 'cert.tmp'), readFileSync(path('a2.pem')));
    writeFileSync(join(live, 'key.tmp'), readFileSync(path('a2.key')));
    renameSync(join(live, 'key.tmp'), join(live, 'key.pem'));
    renameSync(join(live, 'cert.tmp'), join(live, 'cert.pem'));
    const deadline = performance.now() + 5_000;
    let after = before;
    while (after === before && performance.now() < deadline) {
      await sleep(100);
      after = (await peer(port, 'a.test')).fingerprint256;
    }
    assert.notEqual(after, before, 'new connections get the renewed certificate');
    assert.equal((await get(port, '/fast', agent)).status, 200, 'the open connection keeps working');

    // A broken file: refused, the running certificate stays.
    writeFileSync(join(live, 'cert.pem'), 'not a certificate');
    await sleep(600);
    assert.equal((await peer(port, 'a.test')).fingerprint256, after);
  });

  test('start-up refuses an unreadable file or a key that does not match, naming the key path and line', () => {
    const refuse = (tls: string, re: RegExp) =>
      assert.throws(
        () =>
          loadConfigText(
            `listen:\n  - address: 127.0.0.1:0\n    tls: ${tls}\nupstreams: { u: { targets: ["http://127.0.0.1:1"] } }\nroutes: [{ name: r, upstream: u }]\n`,
            'tls.yaml',
            {},
          ),
        (err: ConfigError) => re.test(err.message),
      );
    refuse(
      `{ cert: ${path('a.pem')}, key: ${path('b.key')} }`,
      /tls\.yaml:3: listen\[0\]\.tls: .*the key does not match the certificate/,
    );
    refuse(
      `{ cert: /nonexistent.pem, key: ${path('a.key')} }`,
      /tls\.yaml:3: listen\[0\]\.tls: cert \/nonexistent\.pem: file not found/,
    );
    refuse(
      `[{ cert: ${path('a.pem')}, key: ${path('a.key')} }, { cert: ${path('b.pem')}, key: /nope.key }]`,
      /listen\[0\]\.tls\[1\]: key \/nope\.key: file not found/,
    );
  });
});
