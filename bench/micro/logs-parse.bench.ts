/**
 * Micro-benchmark of the `sluice logs` hot path, stage by stage, on the first 200,000 lines of a
 * log (default: a fresh one from bench/logs/gen-nginx-log.ts): line splitting, nginx line parse,
 * endpoint folding, and the whole aggregation of a line. Plain loops, CPU time, best of 5 rounds.
 *
 *   npx node bench/micro/logs-parse.bench.ts [FILE]
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { foldedHash, foldPieces } from '../../src/diagnose/fold.ts';
import { nginxParser } from '../../src/diagnose/formats/nginx.ts';
import { newRecord } from '../../src/diagnose/formats/record.ts';
import { LogAggregator } from '../../src/diagnose/log-summary.ts';

let file = process.argv[2];
if (!file) {
  file = '/tmp/sluice-logs-micro.log';
  if (!fs.existsSync(file))
    execFileSync(
      process.execPath,
      [new URL('../logs/gen-nginx-log.ts', import.meta.url).pathname, '--size', '40MB', '--out', file],
      { stdio: 'inherit' },
    );
}
const LINES = 200_000;
const buf = fs.readFileSync(file);
const starts = new Int32Array(LINES);
const ends = new Int32Array(LINES);
let lines = 0;
for (let s = 0, nl = buf.indexOf(10); nl !== -1 && lines < LINES; s = nl + 1, nl = buf.indexOf(10, s)) {
  starts[lines] = s;
  ends[lines++] = nl;
}
const tStarts = new Int32Array(lines);
const tEnds = new Int32Array(lines);
const r0 = newRecord();
for (let i = 0; i < lines; i++) {
  nginxParser.parse(buf, starts[i], ends[i], r0);
  tStarts[i] = r0.targetAt;
  tEnds[i] = r0.targetEnd;
}

let sink = 0;
/** Best of 5 rounds, in CPU time (less disturbed than wall time by other load on a shared machine). */
function measure(name: string, fn: () => void): void {
  for (let i = 0; i < 3; i++) fn();
  let best = Number.POSITIVE_INFINITY;
  for (let r = 0; r < 5; r++) {
    const c0 = process.cpuUsage();
    fn();
    const c = process.cpuUsage(c0);
    best = Math.min(best, (c.user + c.system) / 1000);
  }
  console.log(
    `${name.padEnd(30)} ${((best * 1e6) / lines).toFixed(0).padStart(6)} ns/line  ${(lines / best / 1000).toFixed(2)} M lines/s`,
  );
}

const rec = newRecord();
measure('split lines (Buffer.indexOf)', () => {
  for (
    let s = 0, nl = buf.indexOf(10), n = 0;
    nl !== -1 && n < LINES;
    s = nl + 1, nl = buf.indexOf(10, s), n++
  )
    sink += nl - s;
});
measure('nginx parse', () => {
  for (let i = 0; i < lines; i++) if (nginxParser.parse(buf, starts[i], ends[i], rec)) sink += rec.status;
});
measure('fold + hash', () => {
  for (let i = 0; i < lines; i++) sink += foldPieces(buf, tStarts[i], tEnds[i], false, 7) + foldedHash();
});
measure('parse + aggregate', () => {
  const agg = new LogAggregator();
  for (let i = 0; i < lines; i++)
    if (nginxParser.parse(buf, starts[i], ends[i], rec)) agg.add(rec, nginxParser);
});
if (sink === 42) console.log('');
