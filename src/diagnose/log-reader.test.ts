import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { openLog, readLog } from './log-reader.ts';
import { LogAggregator } from './log-summary.ts';

test('a file read by several threads sums exactly as one read by one thread', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-reader-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const lines: string[] = [];
  for (let i = 0; i < 20_000; i++) {
    const status = i % 97 === 0 ? 504 : i % 89 === 0 ? 502 : 200;
    const minute = String(i % 60).padStart(2, '0');
    lines.push(
      i % 5_003 === 4_000
        ? `garbage ${i}`
        : `10.0.0.${i % 250} - - [23/Nov/2026:10:${minute}:00 +0000] "GET /api/${i % 7 === 0 ? 'caf\u00e9' : 'items'}/${i}?q=${i} HTTP/1.1" ${status} 12 "-" "curl/8" ${(i % 1000) / 1000} 0.1 ${status}${i % 3 === 0 ? '\r' : ''}`,
    );
  }
  // A long line across the 1 MiB buffer, and no newline at the end.
  lines.splice(
    10_000,
    0,
    `10.0.0.1 - - [23/Nov/2026:10:00:00 +0000] "GET /long/${'x'.repeat(3_000_000)} HTTP/1.1" 200 1 "-" "-" 0.5`,
  );
  const file = join(dir, 'access.log');
  writeFileSync(file, lines.join('\n'));

  const one = new LogAggregator();
  const r1 = await readLog(openLog(file), one, undefined, { threads: 1 });
  const many = new LogAggregator();
  const r3 = await readLog(openLog(file), many, undefined, { threads: 3, threadsFromBytes: 0 });
  assert.deepEqual(r3, r1);
  // Pieces of a few lines: cut inside lines, inside CRLF, inside multi-byte characters; and pieces
  // that a line longer than the read buffer covers.
  for (const pieceBytes of [977, 256 * 1024 + 1]) {
    const small = new LogAggregator();
    const r = await readLog(openLog(file), small, undefined, { threads: 2, threadsFromBytes: 0, pieceBytes });
    assert.deepEqual(r, r1, `pieces of ${pieceBytes} bytes`);
    assert.deepEqual(small.finish(), one.finish(), `pieces of ${pieceBytes} bytes`);
  }
  assert.equal(r1.lines, 20_001);
  assert.equal(r1.unparsed, 4);
  assert.equal(r1.firstUnparsed?.line, 4_001);
  assert.deepEqual(many.finish(), one.finish());
  const items = one.finish().endpoints.find((e) => e.endpoint === 'GET /api/items/:id');
  const cafe = one.finish().endpoints.find((e) => e.endpoint === 'GET /api/caf\u00e9/:id');
  const garbage = [4_000, 9_003, 14_006, 19_009];
  const is504 = (i: number) => i % 97 === 0 && !garbage.includes(i);
  let want = 0;
  let wantCafe = 0;
  for (let i = 0; i < 20_000; i++) if (is504(i)) i % 7 === 0 ? wantCafe++ : want++;
  assert.equal(items?.status_504, want);
  assert.equal(cafe?.status_504, wantCafe);
});
