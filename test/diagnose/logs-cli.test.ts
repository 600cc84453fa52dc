/**
 * `sluice logs` as a user runs it (the CLI as a child process): a plain, a gzipped and a piped nginx
 * log, Sluice's own access log, garbage lines counted and never fatal, and the --json shape.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { sluice } from './run-cli.ts';

const NGINX = [
  '127.0.0.1 - - [01/Dec/2026:10:00:01 +0000] "GET /api/users/123 HTTP/1.1" 200 512 "-" "curl/8" 0.120 0.118 200',
  '127.0.0.1 - - [01/Dec/2026:10:00:02 +0000] "GET /api/users/456?x=1 HTTP/1.1" 504 167 "-" "curl/8" 29.001 29.000 504',
  '127.0.0.1 - - [01/Dec/2026:10:01:02 +0000] "GET /api/users/9f3c2a1b-0000-4000-8000-000000000000 HTTP/1.1" 504 167 "-" "curl/8" 29.002 29.001 504',
  '127.0.0.1 - - [01/Dec/2026:10:01:05 +0000] "POST /api/orders HTTP/1.1" 502 150 "-" "curl/8" 0.004 0.003 502',
  'garbage line here',
].join('\n');

interface Report {
  files: { path: string; format: string; lines: number; unparsed: number }[];
  endpoints: {
    endpoint: string;
    requests: number;
    status_504: number;
    status_502: number;
    timeouts: Record<string, number> | null;
    p99_ms: number | null;
    first_504: string | null;
    last_504: string | null;
  }[];
}

test('logs: plain, gzipped and piped nginx logs give the same hot spots; garbage is counted', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-logs-'));
  writeFileSync(join(dir, 'access.log'), `${NGINX}\n`);
  writeFileSync(join(dir, 'access.log.1.gz'), gzipSync(`${NGINX}\n`));
  const plain = await sluice(['logs', '--json', join(dir, 'access.log')]);
  assert.equal(plain.code, 0, plain.stderr);
  const r = JSON.parse(plain.stdout) as Report;
  assert.deepEqual(r.files[0], { path: join(dir, 'access.log'), format: 'nginx', lines: 5, unparsed: 1 });
  assert.equal(r.endpoints[0].endpoint, 'GET /api/users/:id');
  assert.equal(r.endpoints[0].requests, 3);
  assert.equal(r.endpoints[0].status_504, 2);
  assert.equal(r.endpoints[0].first_504, '2026-12-01T10:00:02.000Z');
  assert.equal(r.endpoints[0].last_504, '2026-12-01T10:01:02.000Z');
  assert.equal(r.endpoints[1].endpoint, 'POST /api/orders');
  assert.equal(r.endpoints[1].status_502, 1);

  const gz = JSON.parse((await sluice(['logs', '--json', join(dir, 'access.log.1.gz')])).stdout) as Report;
  assert.deepEqual(gz.endpoints, r.endpoints);
  const piped = await sluice(['logs', '--json', '-'], { stdin: `${NGINX}\n` });
  assert.deepEqual((JSON.parse(piped.stdout) as Report).endpoints, r.endpoints);

  const text = await sluice(['logs', join(dir, 'access.log')]);
  assert.equal(text.code, 0);
  assert.match(text.stdout, /1 unparsed/);
  assert.match(text.stdout, /GET \/api\/users\/:id +3 +2 +0/);
});

test("logs: Sluice's own access log names the phase of each timeout", async () => {
  const line = (status: number, outcome: string, phase: string | null, total: number, t: string) =>
    JSON.stringify({
      time: t,
      request_id: '01J',
      method: 'GET',
      path: '/reports/42',
      route: 'reports',
      status,
      outcome,
      phase,
      total,
      budget_ms: 30000,
    });
  const log = [
    line(200, 'ok', null, 120, '2026-12-01T10:00:00.000Z'),
    line(504, 'timeout', 'ttfb', 30001, '2026-12-01T10:00:30.000Z'),
    line(504, 'timeout', 'total', 30002, '2026-12-01T10:00:31.000Z'),
  ].join('\n');
  const res = await sluice(['logs', '--json', '-'], { stdin: `${log}\n` });
  assert.equal(res.code, 0, res.stderr);
  const r = JSON.parse(res.stdout) as Report;
  assert.equal(r.files[0].format, 'sluice');
  assert.equal(r.endpoints[0].endpoint, 'GET /reports/:id');
  assert.deepEqual(r.endpoints[0].timeouts, { ttfb: 1, total: 1 });
});

test('logs: a missing file is one clear line and exit 2', async () => {
  const res = await sluice(['logs', '/nonexistent/access.log']);
  assert.notEqual(res.code, 0);
  assert.doesNotMatch(res.stderr, /\n\s+at /, 'no stack trace');
  assert.match(res.stderr, /nonexistent\/access\.log/);
});
