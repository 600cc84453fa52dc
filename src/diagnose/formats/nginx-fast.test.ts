/**
 * The fast paths of the nginx parser (the request line read and its path folded in one pass,
 * `$request_time` read directly) must give exactly the record and the endpoint the general path
 * gives, on every line: both run over many varied lines, well-formed and not, compared field by field.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bytesHash, foldedHash, foldPieces, piecesBytes } from '../fold.ts';
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
  'GET /api/v1/res6/550e8400-e29b-41d4-a716-446655440000?page=3 HTTP/1.1',
  'GET /static/app.3f9a1c2e.js#top HTTP/1.1',
  'GET /static/page35.html HTTP/1.1',
  'GET /users/:id/orders/ HTTP/1.1',
  'GET //a//1 HTTP/1.1',
  'GET /a?b c HTTP/1.1', // a space in the query
  'GET /a?b"c HTTP/1.1',
  'GET /a?x=1&y=%22 HTTP/1.1',
  'GET /x\\x22y/1 HTTP/1.1', // nginx's escape of a quote
  'GET /users/%E2%82%AC123 HTTP/1.1',
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

/**
 * A record's fields, and the endpoint its target folds to: as the parser folded it (rec.folded),
 * else as the aggregator would (foldPieces). Taken right after parsing: fold.ts holds the pieces.
 */
function snapshot(rec: LogRecord) {
  const text = (s: number, e: number) => Buffer.from(rec.buf.subarray(s, e)).toString('latin1');
  const b = rec.buf;
  const n =
    rec.folded >= 0
      ? rec.folded
      : foldPieces(b, rec.targetAt, rec.targetEnd, false, bytesHash(b, rec.methodAt, rec.methodEnd));
  return {
    endpoint: piecesBytes(b, n).toString('latin1'),
    hash: foldedHash(),
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
  let folded = 0;
  let withLatency = 0;
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
        const fastSeen = okFast ? snapshot(fast) : undefined;
        const okGeneral = parseNginx(b, 3, end, general, false);
        assert.equal(okFast, okGeneral, line);
        if (okGeneral) assert.deepEqual(fastSeen, snapshot(general), line);
        lines++;
        if (fast.folded >= 0) folded++;
        if (okGeneral && !Number.isNaN(general.latencyMs)) withLatency++;
      }
  assert.ok(
    folded > 300 && withLatency > 300,
    `${lines} lines, ${folded} folded, ${withLatency} with a latency`,
  );
});

test('truncated lines: every prefix of a line parses the same both ways', () => {
  const line =
    '203.0.113.7 - - [23/Nov/2026:10:00:05 +0000] "GET /api/\u00e9/42 HTTP/1.1" 504 167 "-" "curl/8.5.0" 30.001 30.000 504';
  const b = Buffer.from(line);
  for (let end = 1; end <= b.length; end++) {
    const fast = newRecord();
    const general = newRecord();
    const okFast = parseNginx(b, 0, end, fast, true);
    const fastSeen = okFast ? snapshot(fast) : undefined;
    assert.equal(okFast, parseNginx(b, 0, end, general, false), `prefix of ${end} bytes`);
    if (okFast) assert.deepEqual(fastSeen, snapshot(general), `prefix of ${end} bytes`);
  }
});
