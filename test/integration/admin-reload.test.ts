/**
 * Reloading the config file through real sockets and a real file: POST /api/reload, file watching
 * (a plain write, an editor's atomic rename, an invalid file), the live overlay replaced by the file,
 * and a request in flight across a reload completing normally.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import pino from 'pino';
import { loadConfigFile } from '../../src/config/load.ts';
import { startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import { type Sluice, startSluice } from '../../src/main.ts';
import { MemoryAccessLog } from '../../src/observability/access-log.ts';
import { problemOf, sleep } from '../helpers.ts';
import { subscribe } from '../sse.ts';

type LogRecord = Record<string, unknown>;

/** A real pino logger whose lines are kept, parsed, for assertions. */
function memoryLogger() {
  const records: LogRecord[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void records.push(JSON.parse(line)) });
  return { logger, records };
}

function yaml(upstream: string, total: string, extra = ''): string {
  return `listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
shutdown_timeout: 2s
${extra}
upstreams:
  demo: { targets: ["${upstream}"] }
routes:
  - name: api
    match: { path: / }
    upstream: demo
    timeouts: { total: ${total} }
`;
}

async function start(
  text: string,
): Promise<{ sluice: Sluice; file: string; admin: string; logs: LogRecord[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-reload-'));
  const file = join(dir, 'sluice.yaml');
  writeFileSync(file, text);
  const { logger, records } = memoryLogger();
  const sluice = await startSluice(loadConfigFile(file), {
    accessLog: new MemoryAccessLog(),
    logger,
    configFile: file,
  });
  return { sluice, file, admin: `http://127.0.0.1:${sluice.adminPort}`, logs: records };
}

async function totalOf(admin: string): Promise<{ total: number; layer: string }> {
  const r = (await (await fetch(`${admin}/api/routes/api`)).json()) as {
    timeouts: { total: number };
    timeout_layers: { total: string };
  };
  return { total: r.timeouts.total, layer: r.timeout_layers.total };
}

/** Polls until `pred` holds (file events arrive after a debounce), or fails after `ms`. */
async function until(pred: () => Promise<boolean>, ms = 5_000): Promise<void> {
  const end = performance.now() + ms;
  while (!(await pred())) {
    if (performance.now() > end) throw new Error(`not within ${ms}ms`);
    await sleep(50);
  }
}

describe('config reload', () => {
  test('POST /api/reload applies the file, replaces a live change, and refuses an invalid file', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const gw = await start(yaml(demo.url, '5s', 'watch: false'));
    t.after(() => gw.sluice.close(500));
    const events = subscribe(`${gw.admin}/api/events`);
    t.after(() => events.close());

    // A live change is an overlay, shown as such...
    const patched = await fetch(`${gw.admin}/api/routes/api`, {
      method: 'PATCH',
      headers: { 'content-type': 'application/merge-patch+json' },
      body: JSON.stringify({ timeouts: { total: '7s' } }),
    });
    assert.equal(patched.status, 200);
    assert.deepEqual(await totalOf(gw.admin), { total: 7000, layer: 'live' });

    // ...that the next reload from the file replaces.
    writeFileSync(gw.file, yaml(demo.url, '3s', 'watch: false'));
    const ok = await fetch(`${gw.admin}/api/reload`, { method: 'POST' });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('cache-control'), 'no-store');
    const body = (await ok.json()) as { result: string; source: string; loaded_at: string };
    assert.equal(body.result, 'applied');
    assert.equal(body.source, gw.file);
    assert.ok(Date.parse(body.loaded_at) > Date.now() - 10_000);
    assert.deepEqual(await totalOf(gw.admin), { total: 3000, layer: 'route' });
    const config = (await (await fetch(`${gw.admin}/api/config`)).json()) as { loaded_at: string };
    assert.equal(config.loaded_at, body.loaded_at);
    await events.next('config', (d) => d.result === 'applied' && d.trigger === 'POST /api/reload');

    // An invalid file: refused with file:line, nothing applied, told to the log and live views.
    writeFileSync(gw.file, yaml(demo.url, '3s', 'watch: false').replace('total: 3s', 'total: 3 parsecs'));
    const bad = await fetch(`${gw.admin}/api/reload`, { method: 'POST' });
    assert.equal(bad.status, 422);
    const p = (await problemOf(bad)) as unknown as {
      type: string;
      detail: string;
      errors: { field: string; line: number | null; message: string }[];
    };
    assert.equal(p.type, 'https://sluice.dev/problems/invalid-config');
    assert.match(p.detail, /sluice\.yaml:11: routes\[0\]\.timeouts\.total/);
    assert.deepEqual(
      p.errors.map((e) => [e.field, e.line]),
      [['routes[0].timeouts.total', 11]],
    );
    assert.deepEqual(await totalOf(gw.admin), { total: 3000, layer: 'route' });
    const refused = await events.next('config', (d) => d.result === 'refused');
    assert.match(String(refused.error), /sluice\.yaml:11/);
    const line = gw.logs.find((r) => r.msg === 'config reload refused; the running config stays');
    assert.match(String(line?.error), /sluice\.yaml:11: routes\[0\]\.timeouts\.total/);
    assert.equal(line?.trigger, 'POST /api/reload');

    // The running gateway still serves.
    assert.equal((await fetch(`http://127.0.0.1:${gw.sluice.port}/fast`)).status, 200);

    const get = await fetch(`${gw.admin}/api/reload`);
    assert.equal(get.status, 405);
    assert.equal(get.headers.get('allow'), 'POST');
  });

  test('a gateway started without a file answers 409 to POST /api/reload', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const dir = mkdtempSync(join(tmpdir(), 'sluice-reload-'));
    const file = join(dir, 'sluice.yaml');
    writeFileSync(file, yaml(demo.url, '5s'));
    const sluice = await startSluice(loadConfigFile(file), { accessLog: new MemoryAccessLog() });
    t.after(() => sluice.close(500));
    const res = await fetch(`http://127.0.0.1:${sluice.adminPort}/api/reload`, { method: 'POST' });
    assert.equal(res.status, 409);
    assert.equal((await problemOf(res)).type, 'https://sluice.dev/problems/reload-unavailable');
  });

  test('watch: a saved file applies, an atomic rename applies, an invalid file is refused', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const gw = await start(yaml(demo.url, '5s'));
    t.after(() => gw.sluice.close(500));
    const events = subscribe(`${gw.admin}/api/events`);
    t.after(() => events.close());

    writeFileSync(gw.file, yaml(demo.url, '4s'));
    await until(async () => (await totalOf(gw.admin)).total === 4000);
    await events.next('config', (d) => d.result === 'applied' && d.trigger === 'watch');

    // An editor's save: a new file renamed over the old one (a new inode).
    const tmp = `${gw.file}.swp`;
    writeFileSync(tmp, yaml(demo.url, '2500ms'));
    renameSync(tmp, gw.file);
    await until(async () => (await totalOf(gw.admin)).total === 2500);

    // An invalid save is refused with file:line; the running config stays.
    writeFileSync(gw.file, yaml(demo.url, '2500ms').replace('upstream: demo', 'upstream: dmeo'));
    const refused = await events.next('config', (d) => d.result === 'refused' && d.trigger === 'watch');
    assert.match(String(refused.error), /sluice\.yaml:\d+: routes\[0\]\.upstream/);
    assert.ok(Array.isArray(refused.issues) && (refused.issues as { line?: number }[])[0].line);
    assert.equal((await totalOf(gw.admin)).total, 2500);
    assert.equal((await fetch(`http://127.0.0.1:${gw.sluice.port}/fast`)).status, 200);

    // Fixing it applies again; a save without changes reloads nothing.
    writeFileSync(gw.file, yaml(demo.url, '2s'));
    await until(async () => (await totalOf(gw.admin)).total === 2000);
    const reloads = () => gw.logs.filter((r) => r.msg === 'config reloaded').length;
    const before = reloads();
    writeFileSync(gw.file, yaml(demo.url, '2s'));
    await sleep(600);
    assert.equal(reloads(), before);
  });

  test('watch: false leaves a changed file alone', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const gw = await start(yaml(demo.url, '5s', 'watch: false'));
    t.after(() => gw.sluice.close(500));
    writeFileSync(gw.file, yaml(demo.url, '4s', 'watch: false'));
    await sleep(700);
    assert.equal((await totalOf(gw.admin)).total, 5000);
  });

  test('a request in flight across a reload completes normally under the budget it started with', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const gw = await start(yaml(demo.url, '5s', 'watch: false'));
    t.after(() => gw.sluice.close(500));
    const slow = fetch(`http://127.0.0.1:${gw.sluice.port}/slow?ms=900`);
    await sleep(200);
    // The new budget would cut this request; it keeps the one it started with.
    writeFileSync(gw.file, yaml(demo.url, '400ms', 'watch: false'));
    const r = await fetch(`${gw.admin}/api/reload`, { method: 'POST' });
    assert.equal(r.status, 200);
    const res = await slow;
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    // New requests get the new budget.
    const cut = await fetch(`http://127.0.0.1:${gw.sluice.port}/slow?ms=900`);
    assert.equal(cut.status, 504);
    await cut.arrayBuffer();
  });
});
