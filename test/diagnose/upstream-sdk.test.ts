/**
 * sluice/upstream inside a real backend (examples/backend) behind a real Sluice: the deadline fires
 * before Sluice's budget ends, the rest of the budget reaches the next hop, Server-Timing reaches the
 * client and the access log. Then the packed package, installed into a temp project's node_modules,
 * imported by plain Node and type-checked by tsc; and the API on fetch-style and Fastify-like objects.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
// @ts-expect-error: the example is plain JavaScript without types.
import { createBackend } from '../../examples/backend/server.js';
import { budgetOf, deadline, fetchWithDeadline, remaining, timing } from '../../src/sdk/upstream.js';
import { startHttpServer, startTestGateway, type TestGateway, type TestServer } from '../helpers.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const run = (file: string, args: string[], cwd: string) =>
  new Promise<string>((resolve, reject) =>
    execFile(file, args, { cwd, encoding: 'utf8' }, (err, out, errOut) =>
      err ? reject(new Error(`${file} ${args.join(' ')}: ${err.message}\n${out}\n${errOut}`)) : resolve(out),
    ),
  );

let stripeDelay = 100;
const stripeSeen: (string | undefined)[] = [];
let stripe: TestServer;
let backend: Server;
let gateway: TestGateway;

before(async () => {
  stripe = await startHttpServer((req, res) => {
    stripeSeen.push(req.headers['x-timeout-ms'] as string | undefined);
    const t = setTimeout(() => res.end(JSON.stringify({ id: 'ch_1', status: 'succeeded' })), stripeDelay);
    res.on('close', () => clearTimeout(t));
  });
  backend = createBackend({ stripeUrl: `${stripe.url}/v1/charges` }) as Server;
  backend.listen(0, '127.0.0.1');
  await once(backend, 'listening');
  const port = (backend.address() as { port: number }).port;
  gateway = await startTestGateway(`
upstreams:
  app: { targets: [http://127.0.0.1:${port}] }
routes:
  - name: checkout
    match: { path: /checkout }
    upstream: app
    timeouts: { total: 1s }
`);
});

after(async () => {
  await gateway.close();
  backend.closeAllConnections();
  await new Promise((r) => backend.close(r));
  await stripe.close();
});

describe('sluice/upstream behind a real Sluice', () => {
  test('Server-Timing reaches the client and the access log; the next hop gets the rest of the budget', async () => {
    stripeDelay = 100;
    stripeSeen.length = 0;
    const res = await fetch(gateway.url('/checkout'), { method: 'POST' });
    assert.equal(res.status, 200);
    const st = res.headers.get('server-timing') ?? '';
    assert.match(st, /db;dur=\d+(\.\d)?, stripe;dur=\d+/);
    await res.text();
    const entry = await gateway.entry(res.headers.get('x-request-id')!);
    assert.ok(
      entry.upstream_timing?.db !== undefined && entry.upstream_timing.stripe >= 95,
      JSON.stringify(entry.upstream_timing),
    );
    const forwarded = Number(stripeSeen[0]);
    // Sluice sent ≤ 1000 ms; the backend kept its 50 ms margin and spent some on the db span.
    assert.ok(forwarded > 500 && forwarded < 950, `x-timeout-ms to stripe: ${stripeSeen[0]}`);
  });

  test('a hanging payment API: the backend answers before the budget ends, not Sluice with a 504', async () => {
    stripeDelay = 5000;
    const t0 = performance.now();
    const res = await fetch(gateway.url('/checkout'), { method: 'POST' });
    const elapsed = performance.now() - t0;
    assert.equal(res.status, 503);
    const body = (await res.json()) as { error: string; timings: Record<string, number> };
    assert.equal(body.error, 'payment provider did not answer in time');
    assert.ok(body.timings.stripe > 700, JSON.stringify(body.timings));
    assert.ok(elapsed > 850, `not long before the deadline: ${elapsed} ms`);
    const entry = await gateway.entry(res.headers.get('x-request-id')!);
    assert.equal(entry.status, 503);
    assert.ok(entry.total < 1000, `Sluice saw the answer after ${entry.total} ms of its 1000 ms budget`);
    assert.ok(
      entry.upstream_timing === undefined ||
        entry.upstream_timing.stripe === undefined ||
        entry.upstream_timing.stripe > 700,
    );
    assert.equal(entry.outcome === 'timeout', false, 'Sluice did not have to time out');
  });
});

describe('sluice/upstream API', () => {
  test('deadline(): x-timeout-ms minus the margin, same signal on later calls, never without a header', async () => {
    const req = { headers: { 'x-timeout-ms': '120' } };
    const t0 = performance.now();
    const signal = deadline(req, { margin: 20 });
    assert.equal(deadline(req), signal);
    assert.equal(budgetOf(req), 120);
    assert.ok(remaining(req) <= 100 && remaining(req) > 50);
    await once(signal, 'abort');
    const waited = performance.now() - t0;
    assert.ok(waited >= 95 && waited < 400, `fired after ${waited} ms`);
    assert.equal((signal.reason as DOMException).name, 'TimeoutError');
    assert.equal(remaining(signal), 0);

    const none = deadline({ headers: {} });
    assert.equal(none.aborted, false);
    assert.equal(remaining(none), Number.POSITIVE_INFINITY);
    assert.equal(budgetOf({ headers: { 'x-timeout-ms': 'soon' } }), undefined);
    const fallback = deadline({ headers: {} }, { fallback: 60, margin: 10 });
    await once(fallback, 'abort');
  });

  test('fetch Request, Fastify-style request/reply, and fetchWithDeadline refusing when the time is up', async () => {
    const request = new Request('http://x/', { headers: { 'x-timeout-ms': '1000' } });
    assert.ok(remaining(deadline(request)) > 900);
    const fastifyReq = { raw: { headers: { 'x-timeout-ms': '500' } }, headers: { 'x-timeout-ms': '500' } };
    assert.ok(remaining(fastifyReq) > 400 && remaining(fastifyReq) <= 450);
    const set: Record<string, string> = {};
    const reply = { raw: { headersSent: false, setHeader: (n: string, v: string) => (set[n] = v) } };
    const t = timing(reply);
    await t.span('db', async () => 1, 'database');
    t.mark('cache', 2).mark('cache', 3);
    assert.match(set['Server-Timing'], /^db;desc="database";dur=\d+(\.\d)?, cache;dur=5$/);
    const res = t.apply(Response.json({ ok: true }));
    assert.equal(res.headers.get('server-timing'), t.header());
    await assert.rejects(
      t.span('boom', () => {
        throw new Error('x');
      }),
    );
    assert.ok('boom' in t.entries(), 'a span that throws is still recorded');

    const spent = { headers: { 'x-timeout-ms': '10' } };
    deadline(spent, { margin: 10 });
    await assert.rejects(fetchWithDeadline('http://127.0.0.1:1/', {}, spent), { name: 'TimeoutError' });
  });
});

describe('the packed package', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'sluice-pack-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('npm pack, install into node_modules, import from plain Node and a .ts file, types check', async () => {
    await run('npm', ['pack', '--silent', '--pack-destination', dir], ROOT);
    const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'))!;
    const app = join(dir, 'app');
    mkdirSync(join(app, 'node_modules', 'sluice'), { recursive: true });
    // What `npm install ./sluice-x.tgz` puts in node_modules (without fetching the CLI's dependencies:
    // sluice/upstream has none).
    await run(
      'tar',
      ['-xzf', join(dir, tgz), '-C', join(app, 'node_modules', 'sluice'), '--strip-components=1'],
      dir,
    );
    writeFileSync(join(app, 'package.json'), '{"name":"app","type":"module","private":true}');
    const script = `import { deadline, timing, fetchWithDeadline } from 'sluice/upstream';
const s = deadline({ headers: { 'x-timeout-ms': '30' } }, { margin: 0 });
s.addEventListener('abort', () => console.log('aborted', typeof fetchWithDeadline, timing().mark('db', 1.25).header()));
setTimeout(() => {}, 200); // AbortSignal.timeout does not keep a process alive (a server does)`;
    writeFileSync(join(app, 'main.js'), script);
    writeFileSync(join(app, 'main.ts'), script.replace("'30'", "'30' as string"));
    assert.equal(await run(process.execPath, ['main.js'], app), 'aborted function db;dur=1.3\n');
    // A TypeScript user on Node 24 (type stripping of their own file; the package itself is JavaScript).
    assert.equal(await run(process.execPath, ['main.ts'], app), 'aborted function db;dur=1.3\n');
    writeFileSync(
      join(app, 'check.ts'),
      `import { deadline, timing, type Timing } from 'sluice/upstream';
const signal: AbortSignal = deadline(new Request('http://x/'), { margin: 10 });
const t: Timing = timing();
const n: Promise<number> = t.span('db', async () => 1);
// @ts-expect-error: margin is a number
deadline({ headers: {} }, { margin: '10' });
void signal; void n;
`,
    );
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          noEmit: true,
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          lib: ['es2022', 'dom'],
          types: [],
        },
        files: ['check.ts'],
      }),
    );
    await run(process.execPath, [tsc, '-p', '.'], app);
  });
});
