/**
 * Writes a synthetic nginx access log with timing fields ($request_time $upstream_response_time
 * $upstream_status), for benchmarking `sluice logs`: 40 endpoints with ids in their paths, ~1 % 504s
 * concentrated on two endpoints, one line per 5 ms of log time.
 *
 *   node bench/diagnose/gen-nginx-log.ts OUT [SIZE_MB=1024]
 */
import fs from 'node:fs';

const [out, sizeArg] = process.argv.slice(2);
if (!out) {
  console.error('usage: node bench/diagnose/gen-nginx-log.ts OUT [SIZE_MB]');
  process.exit(2);
}
const target = Number(sizeArg ?? 1024) * 1024 * 1024;

// mulberry32: a small deterministic PRNG (the same log on every run).
let seed = 42;
const rand = () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
  return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
};
const hex = (n: number) => Array.from({ length: n }, () => Math.floor(rand() * 16).toString(16)).join('');
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad = (n: number) => String(n).padStart(2, '0');
const clf = (t: number) => {
  const d = new Date(t);
  return `${pad(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`;
};
const ENDPOINTS = Array.from({ length: 40 }, (_, i) => {
  const kind = i % 4;
  return (): string =>
    kind === 0
      ? `/api/v1/users/${Math.floor(rand() * 1e6)}`
      : kind === 1
        ? `/api/v1/orders/${hex(24)}/items`
        : kind === 2
          ? `/api/v1/res${i}/${hex(8)}-${hex(4)}-4${hex(3)}-8${hex(3)}-${hex(12)}?page=${Math.floor(rand() * 10)}`
          : `/static/page${i}.html`;
});
const UAS = [
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36',
  'curl/8.5.0',
  'okhttp/4.12.0',
];

const fd = fs.openSync(out, 'w');
let t = Date.UTC(2024, 4, 1, 0, 0, 0);
let written = 0;
while (written < target) {
  const lines: string[] = [];
  for (let k = 0; k < 5000; k++) {
    t += 5;
    const e = Math.floor(rand() * ENDPOINTS.length);
    const method = e % 5 === 0 ? 'POST' : 'GET';
    let status = 200;
    let rt = rand() * rand() * 0.8;
    // Two hot spots: 504s (proxy_read_timeout 30s) for a stretch of the day.
    if ((e === 6 || e === 13) && rand() < 0.1 && t % 3_600_000 < 1_200_000) {
      status = 504;
      rt = 30 + rand() * 0.005;
    } else if (rand() < 0.002) status = 502;
    else if (rand() < 0.01) status = 404;
    const urt = status === 504 ? rt.toFixed(3) : (rt * 0.95).toFixed(3);
    lines.push(
      `10.${Math.floor(rand() * 255)}.${Math.floor(rand() * 255)}.${Math.floor(rand() * 255)} - - [${clf(t)}] "${method} ${ENDPOINTS[e]()} HTTP/1.1" ${status} ${Math.floor(rand() * 20000)} "-" "${UAS[e % 3]}" ${rt.toFixed(3)} ${urt} ${status}\n`,
    );
  }
  const chunk = lines.join('');
  fs.writeSync(fd, chunk);
  written += Buffer.byteLength(chunk);
}
fs.closeSync(fd);
console.error(`${out}: ${(written / 1024 / 1024).toFixed(0)} MiB`);
