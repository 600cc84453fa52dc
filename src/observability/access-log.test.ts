import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { type AccessLogEntry, createAccessLog, isoNow } from './access-log.ts';

const entry = (i: number): AccessLogEntry => ({
  time: '2026-11-22T00:00:00.000Z',
  request_id: `r${i}`,
  method: 'GET',
  path: `/p?q="${i}"`,
  route: 'r',
  upstream: 'u',
  target: 'http://127.0.0.1:1',
  status: 200,
  outcome: 'ok',
  phase: null,
  error: null,
  client: '127.0.0.1',
  bytes_in: 0,
  bytes_out: i,
  attempts: 1,
  retries: 0,
  dns: null,
  connect: 0,
  tls: null,
  ttfb: 1,
  total: 2,
  budget_ms: 29000,
});

test('the access log writes one JSON line per entry to a file, in order, created with its directory', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'sluice-log-')), 'nested', 'access.log');
  const log = createAccessLog(file);
  for (let i = 0; i < 5000; i++) log.write(entry(i)); // more than one 64 KiB batch
  log.flush();
  const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
  assert.equal(lines.length, 5000);
  for (let i = 0; i < 5000; i += 997) assert.deepEqual(JSON.parse(lines[i]), entry(i));
});

test('a quiet gateway log is written within the 200 ms batch window, without a flush', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'sluice-log-')), 'access.log');
  const log = createAccessLog(file);
  log.write(entry(1));
  const deadline = performance.now() + 2_000;
  let text = '';
  while (performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    text = readFileSync(file, 'utf8');
    if (text !== '') break;
  }
  assert.equal(JSON.parse(text).request_id, 'r1');
  log.flush();
});

test('isoNow is Date#toISOString for every millisecond, across seconds and days', () => {
  const start = Date.UTC(2026, 11, 31, 23, 59, 58, 990);
  for (let ms = start; ms < start + 2_100; ms += 7) assert.equal(isoNow(ms), new Date(ms).toISOString());
  for (const ms of [0, 5, 50, 999, 1_000, Date.UTC(2027, 0, 1)])
    assert.equal(isoNow(ms), new Date(ms).toISOString());
  assert.match(isoNow(), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
});
