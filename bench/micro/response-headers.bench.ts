/**
 * Micro-benchmark of turning an upstream's raw response headers (undici hands them over as Buffers)
 * into the flat list Sluice writes: `filterResponseHeaders` as it is (names and short values looked
 * up in header-text.ts's cache) against converting every name and value with `Buffer#toString` and
 * `toLowerCase` (what it did before). Interleaved rounds, best round reported, so the machine's other
 * load matters little. Run: `npx node bench/micro/response-headers.bench.ts`.
 */
import { filterResponseHeaders } from '../../src/proxy/headers.ts';

const ITERATIONS = 300_000;
const ROUNDS = 7;
let sink = 0;

/** nginx's answer to a static file, as undici's parser delivers it: slices of one read buffer. */
const head = [
  ['Server', 'nginx/1.22.1'],
  ['Date', 'Wed, 02 Dec 2026 19:23:55 GMT'],
  ['Content-Type', 'application/json'],
  ['Content-Length', '100'],
  ['Last-Modified', 'Wed, 02 Dec 2026 19:20:31 GMT'],
  ['Connection', 'keep-alive'],
  ['ETag', '"6b106f7f-64"'],
  ['Accept-Ranges', 'bytes'],
  ['Cache-Control', 'no-cache'],
  ['Vary', 'Accept-Encoding'],
];
const wire = Buffer.from(head.map(([k, v]) => `${k}${v}`).join(''), 'latin1');
const raw: Buffer[] = [];
let at = 0;
for (const [k, v] of head) {
  raw.push(wire.subarray(at, (at += k.length)));
  raw.push(wire.subarray(at, (at += v.length)));
}

/** The conversion before header-text.ts: every name and value through toString and toLowerCase. */
function convertAll(r: readonly Buffer[]): number {
  let n = 0;
  for (let i = 0; i < r.length; i += 2) {
    const name = r[i].toString('latin1');
    const value = r[i + 1].toString('latin1');
    n += name.toLowerCase().length + value.length;
  }
  return n;
}

const cases: [string, () => number][] = [
  ['filterResponseHeaders (10 headers, cached text)', () => filterResponseHeaders(raw).headers.length],
  ['toString + toLowerCase of the same 10 (before)', () => convertAll(raw)],
];
const best = cases.map(() => Number.POSITIVE_INFINITY);
for (const [, fn] of cases) for (let i = 0; i < 100_000; i++) sink += fn();
for (let r = 0; r < ROUNDS; r++)
  cases.forEach(([, fn], c) => {
    const t = performance.now();
    for (let i = 0; i < ITERATIONS; i++) sink += fn();
    best[c] = Math.min(best[c], performance.now() - t);
  });
cases.forEach(([name], c) => {
  console.log(`${name.padEnd(52)} ${((best[c] * 1e6) / ITERATIONS).toFixed(0).padStart(6)} ns/op`);
});
if (sink === 42) console.log('');
