/**
 * Access-log formats (SPEC §13) with the real CLI: `sluice start` as a child process writing the
 * `combined` format to a file, read back by a standard nginx combined regex and by `sluice logs`;
 * a template with timings, which `sluice logs` reads latencies from; and logrotate's way (rename,
 * then SIGUSR1) losing no line, with the new lines in the new file.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import type { LogsReport } from '../../src/diagnose/log-summary.ts';
import { childEnv, BIN as SLUICE_BIN, sluice } from '../diagnose/run-cli.ts';
import { send, sleep, startHttpServer } from '../helpers.ts';

/** fluentd's nginx parser expression, as log shippers use it for the combined format. */
const NGINX_COMBINED =
  /^(?<remote>[^ ]*) (?<host>[^ ]*) (?<user>[^ ]*) \[(?<time>[^\]]*)\] "(?<method>\S+)(?: +(?<path>[^"]*?)(?: +\S*)?)?" (?<code>[^ ]*) (?<size>[^ ]*)(?: "(?<referer>[^"]*)" "(?<agent>[^"]*)"(?:\s+(?<http_x_forwarded_for>[^ ]+))?)?$/;

interface Running {
  child: ChildProcess;
  port: number;
  stderr(): string;
  stop(): Promise<void>;
}

/** `sluice start -c FILE` as a child process; resolves once it listens. */
async function start(t: TestContext, yaml: string, dir: string): Promise<Running> {
  const file = join(dir, 'sluice.yaml');
  writeFileSync(file, `listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\nwatch: false\n${yaml}`);
  const child = spawn(process.execPath, [SLUICE_BIN, 'start', '-c', file], {
    env: childEnv(),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not start: ${stderr}`)), 15_000);
    const onData = () => {
      const m = /listening on http:\/\/[^:]+:(\d+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        child.stderr?.off('data', onData);
        resolve(Number(m[1]));
      }
    };
    child.stderr?.on('data', onData);
    child.once('exit', (code) => reject(new Error(`gateway exited ${code}: ${stderr}`)));
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    await once(child, 'exit');
  };
  t.after(stop);
  return { child, port, stderr: () => stderr, stop };
}

async function until(what: string, cond: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const lines = (file: string) =>
  existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
    : [];

test('combined: nginx combined lines a standard regex and `sluice logs` read; rename + SIGUSR1 loses no line', async (t) => {
  const upstream = await startHttpServer((req, res) => {
    res.writeHead(req.url?.startsWith('/missing') ? 404 : 200, { 'content-type': 'text/plain' });
    res.end('hello world');
  });
  t.after(() => upstream.close());
  const dir = mkdtempSync(join(tmpdir(), 'sluice-combined-'));
  const log = join(dir, 'logs', 'access.log');
  const gw = await start(
    t,
    `access_log: { path: "${log}", format: combined }
upstreams:
  u: { targets: ["${upstream.url}"] }
routes:
  - { name: r, match: { path: / }, upstream: u }
`,
    dir,
  );
  const ua = 'curl/8.5.0 "quoted"';
  for (let i = 0; i < 20; i++) {
    const path = i % 5 === 0 ? `/missing/${i}` : `/users/${1000 + i}?page=${i}`;
    const r = await send(gw.port, path, { headers: { 'user-agent': ua, referer: 'https://ref.example/' } });
    assert.ok(r.status === 200 || r.status === 404);
  }
  // logrotate: rename the file, then SIGUSR1; everything written so far stays in the renamed one.
  const rotated = `${log}.1`;
  renameSync(log, rotated);
  gw.child.kill('SIGUSR1');
  await until('the reopen', () => gw.stderr().includes('access log reopened'));
  for (let i = 0; i < 15; i++) {
    const r = await send(gw.port, `/after/${i}`, { headers: { 'user-agent': ua } });
    assert.equal(r.status, 200);
  }
  await gw.stop(); // SIGTERM flushes what is pending
  const before = lines(rotated);
  const after = lines(log);
  assert.equal(before.length, 20, 'every line before the signal is in the renamed file');
  assert.equal(after.length, 15, 'every line after it is in the new file');
  assert.ok(before.every((l) => !l.includes('/after/')));
  assert.ok(after.every((l) => l.includes('/after/')));
  assert.doesNotMatch(gw.stderr(), /Debugger listening/, "SIGUSR1 did not start Node's inspector");

  // Byte for byte nginx's combined layout.
  for (const line of [...before, ...after]) {
    const m = NGINX_COMBINED.exec(line);
    assert.ok(m?.groups, `not nginx combined: ${line}`);
    assert.equal(m.groups.remote, '127.0.0.1');
    assert.equal(m.groups.host, '-');
    assert.equal(m.groups.user, '-');
    assert.match(m.groups.time, /^\d\d\/[A-Z][a-z]{2}\/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}$/);
    assert.equal(m.groups.method, 'GET');
    assert.match(m.groups.code, /^(200|404)$/);
    assert.equal(m.groups.size, '11');
    assert.equal(m.groups.agent, 'curl/8.5.0 \\x22quoted\\x22');
  }
  assert.match(before[1], /"GET \/users\/1001\?page=1 HTTP\/1\.1" 200 11 "https:\/\/ref\.example\/" "curl/);
  assert.match(after[0], /"GET \/after\/0 HTTP\/1\.1" 200 11 "-" "curl/);

  // `sluice logs` reads it as nginx: every line, per endpoint.
  const res = await sluice(['logs', '--json', rotated, log]);
  assert.equal(res.code, 0, res.stderr);
  const report = JSON.parse(res.stdout) as LogsReport;
  assert.deepEqual(
    report.files.map((f) => [f.format, f.lines, f.unparsed]),
    [
      ['nginx', 20, 0],
      ['nginx', 15, 0],
    ],
  );
  const users = report.endpoints.find((e) => e.endpoint === 'GET /users/:id');
  assert.equal(users?.requests, 16);
  assert.equal(users?.p50_ms, null, 'combined has no timings');
});

test('a template with $request_time and Sluice variables; `sluice logs` takes latencies from it', async (t) => {
  const upstream = await startHttpServer((_req, res) => {
    setTimeout(() => res.end('ok'), 30);
  });
  t.after(() => upstream.close());
  const dir = mkdtempSync(join(tmpdir(), 'sluice-template-'));
  const log = join(dir, 'access.log');
  const format =
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time rid=$request_id route=$route outcome=$outcome ttfb_ms=$ttfb up=$upstream_addr';
  const gw = await start(
    t,
    `access_log: { path: "${log}", format: '${format}' }
upstreams:
  u: { targets: ["${upstream.url}"] }
routes:
  - { name: slow, match: { path: / }, upstream: u }
`,
    dir,
  );
  for (let i = 0; i < 5; i++) await send(gw.port, `/items/${i}`, { headers: { 'x-request-id': `tpl-${i}` } });
  await gw.stop();
  const got = lines(log);
  assert.equal(got.length, 5);
  const re =
    /^127\.0\.0\.1 - - \[[^\]]+\] "GET \/items\/0 HTTP\/1\.1" 200 2 "-" "-" (\d+\.\d{3}) rid=tpl-0 route=slow outcome=ok ttfb_ms=([\d.]+) up=127\.0\.0\.1:(\d+)$/;
  const m = re.exec(got[0]);
  assert.ok(m, got[0]);
  assert.ok(Number(m[1]) >= 0.025 && Number(m[1]) < 5, `request_time ${m[1]} s`);
  assert.ok(Number(m[2]) >= 25, `ttfb ${m[2]} ms`);
  assert.equal(Number(m[3]), upstream.port);
  const res = await sluice(['logs', '--json', log]);
  assert.equal(res.code, 0, res.stderr);
  const report = JSON.parse(res.stdout) as LogsReport;
  assert.equal(report.files[0].unparsed, 0);
  const items = report.endpoints.find((e) => e.endpoint === 'GET /items/:id');
  assert.equal(items?.requests, 5);
  assert.ok((items?.p50_ms ?? 0) >= 25, `p50 ${items?.p50_ms} ms from $request_time`);
});
