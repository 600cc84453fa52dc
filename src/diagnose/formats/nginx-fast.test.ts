/**
 * The fast paths of the nginx parser (the request line and `$request_time` read in one pass) must
 * give exactly the record the general path gives, on every line: both run over many varied lines,
 * well-formed and not, and are compared field by field.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseNginx } from './nginx.ts';
import { type LogRecord, newRecord } from './record.ts';

const REQUESTS = [
  'GET /api/v1/users/123 HTTP/1.1',
  'POST /orders/507f1f77bcf86cd799439011/items?page=2 HTTP/2.0',
  'GET / HTTP/1.0',
  'GET /caf\u00e9/\u00fcber/\u65e5\u672c/42 HTTP/1.1', // non-ASCII, as nginx writes it (raw UTF-8)
  'GET /a b HTTP/1.1', // a space inside the target
  'GET /only-two-parts',
  'GET  /double-space HTTP/1.1',
  'GET /x HTTP/1.1 ',
  '-',
  '',
  'GET',
  'GET /q\\"uoted HTTP/1.1', // an escaped quote
  'GET /back\\\\slash HTTP/1.1',
  'GET /x HTTP/1.1\\', // the closing quote escaped: the request runs on
  'GET /x\\ HTTP/1.1',
  'GET /tab\there HTTP/1.1',
  '\\x16\\x03\\x01\\x00',
  'PROPFIND http://example.com:8080/dav/1 HTTP/1.1',
];
const TAILS = [
  '',
  ' "-" "curl/8.5.0"',
  ' "-" "curl/8.5.0" 0.123 0.120 200',
  ' "-" "curl/8.5.0" 30.001 30.000 504',
  ' "-" "curl/8.5.0" 1. 1.000 504',
  ' "-" "curl/8.5.0" .5 - -',
  ' "-" "curl/8.5.0" 0.500, 1.001 502, 504',
  ' "-" "curl/8.5.0" 0.5,0.7 0.1 200',
  ' "-" "curl/8.5.0" 0.5:0.7 0.1 200',
  ' "-" "curl/8.5.0" - 0.250 200',
  ' "-" "curl/8.5.0" 342 0.120 0.119 200',
  ' "-" "curl/8.5.0" -1.5 0.1 200',
  ' "-" "curl/8.5.0" 123456789.5 0.1 200',
  ' "-" "curl/8.5.0" 12345678.5',
  ' "-" "curl/8.5.0"rt=1.004 uct="0.000" urt="1.003"',
  ' "-" "Mozilla \\"quoted\\" agent" 0.031',
  ' "https://ex.com/\u00e9" "agent" "198.51.100.1, 10.0.0.1" 0.031',
  ' "-" "curl/8.5.0" 0.123 ',
  ' "-" "curl/8.5.0"  0.123',
  ' "-" "curl/8.5.0" 0.1x3',
];

function snapshot(rec: LogRecord) {
  const text = (s: number, e: number) => Buffer.from(rec.buf.subarray(s, e)).toString('latin1');
  return {
    method: text(rec.methodAt, rec.methodEnd),
    target: text(rec.targetAt, rec.targetEnd),
    status: rec.status,
    latencyMs: rec.latencyMs,
    timeAt: rec.timeAt,
    templated: rec.templated,
    skip: rec.skip,
  };
}

test('the fast paths agree with the general parser on varied lines', () => {
  let lines = 0;
  let fastTaken = 0;
  for (const request of REQUESTS)
    for (const status of ['200', '504', '5x4'])
      for (const tail of TAILS) {
        const line = `203.0.113.7 - - [23/Nov/2026:10:00:05 +0000] "${request}" ${status} 167${tail}`;
        // At offset 3 in a bigger buffer, as in a chunk: offsets must not assume the line starts at 0.
        const b = Buffer.concat([Buffer.from('x\ny'), Buffer.from(line), Buffer.from('\nz')]);
        const end = b.length - 2;
        const fast = newRecord();
        const general = newRecord();
        const okFast = parseNginx(b, 3, end, fast, true);
        const okGeneral = parseNginx(b, 3, end, general, false);
        assert.equal(okFast, okGeneral, line);
        if (okGeneral) assert.deepEqual(snapshot(fast), snapshot(general), line);
        lines++;
        if (okGeneral && !Number.isNaN(general.latencyMs)) fastTaken++;
      }
  assert.ok(lines > 900 && fastTaken > 100, `${lines} lines, ${fastTaken} with a latency`);
});

test('truncated lines: every prefix of a line parses the same both ways', () => {
  const line =
    '203.0.113.7 - - [23/Nov/2026:10:00:05 +0000] "GET /api/\u00e9/42 HTTP/1.1" 504 167 "-" "curl/8.5.0" 30.001 30.000 504';
  const b = Buffer.from(line);
  for (let end = 1; end <= b.length; end++) {
    const fast = newRecord();
    const general = newRecord();
    const okFast = parseNginx(b, 0, end, fast, true);
    assert.equal(okFast, parseNginx(b, 0, end, general, false), `prefix of ${end} bytes`);
    if (okFast) assert.deepEqual(snapshot(fast), snapshot(general), `prefix of ${end} bytes`);
  }
});
