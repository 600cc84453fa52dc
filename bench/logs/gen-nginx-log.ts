/**
 * Writes a synthetic nginx access log (combined + `$request_time $upstream_response_time
 * $upstream_status`) of about --size bytes for the `sluice logs` benchmark: 40 endpoints with ids in
 * their paths, realistic user agents, mostly 200s, 0.5 % 502s and 504s that come in bursts on two
 * endpoints (a slow report and a payment call). Deterministic (seeded), so runs compare.
 *
 *   npx node bench/logs/gen-nginx-log.ts --size 1GB --out /tmp/access.log
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { parseSize } from '../../src/config/units.ts';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '1GB' },
    out: { type: 'string', default: '/tmp/sluice-bench-access.log' },
    plain: { type: 'boolean', default: false },
  },
});
const target = parseSize(values.size as string);
if (!target) throw new Error(`--size: not a size: ${values.size}`);

let seed = 42;
/** xorshift32: fast and deterministic. */
const rand = () => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 0x100000000;
};
const pick = <T>(a: readonly T[]) => a[Math.floor(rand() * a.length)];
const hex = (n: number) => {
  let s = '';
  for (let i = 0; i < n; i++) s += '0123456789abcdef'[Math.floor(rand() * 16)];
  return s;
};
const uuid = () => `${hex(8)}-${hex(4)}-4${hex(3)}-a${hex(3)}-${hex(12)}`;
const id = () => String(1 + Math.floor(rand() * 5_000_000));

const ENDPOINTS: { method: string; path: () => string; ms: number; weight: number }[] = [
  { method: 'GET', path: () => `/api/users/${id()}`, ms: 20, weight: 20 },
  {
    method: 'GET',
    path: () => `/api/users/${id()}/orders?page=${1 + Math.floor(rand() * 9)}`,
    ms: 60,
    weight: 10,
  },
  { method: 'POST', path: () => `/api/orders/${uuid()}/pay`, ms: 400, weight: 4 },
  { method: 'GET', path: () => `/api/reports/${id()}`, ms: 2000, weight: 2 },
  { method: 'GET', path: () => `/api/products/${hex(24)}`, ms: 15, weight: 15 },
  { method: 'GET', path: () => '/healthz', ms: 1, weight: 10 },
  { method: 'GET', path: () => `/static/app.${hex(8)}.js`, ms: 2, weight: 10 },
];
for (let i = 0; i < 33; i++)
  ENDPOINTS.push({
    method: i % 4 === 0 ? 'POST' : 'GET',
    path: () => `/api/v1/resource${i}/${id()}`,
    ms: 30,
    weight: 1,
  });
const totalWeight = ENDPOINTS.reduce((a, e) => a + e.weight, 0);
const pickEndpoint = () => {
  let r = rand() * totalWeight;
  for (const e of ENDPOINTS) if ((r -= e.weight) < 0) return e;
  return ENDPOINTS[0];
};
const UAS = [
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1',
  'curl/8.5.0',
  'okhttp/4.12.0',
];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad = (n: number) => String(n).padStart(2, '0');
const clf = (t: number) => {
  const d = new Date(t);
  return `${pad(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`;
};

const fd = fs.openSync(values.out as string, 'w');
let written = 0;
let lines = 0;
let t = Date.UTC(2026, 10, 23, 9, 30, 0);
let batch: string[] = [];
let batchBytes = 0;
while (written < target) {
  t += Math.floor(rand() * 20); // ~100 requests per second on average
  const e = pickEndpoint();
  // 504 bursts: reports and payments between 10:00 and 10:20 each day of the log.
  const minuteOfDay = Math.floor((t / 60_000) % 1440);
  const burst = minuteOfDay >= 600 && minuteOfDay < 620 && (e.ms === 2000 || e.ms === 400);
  let status = 200;
  let secs = (e.ms * (0.5 + rand())) / 1000;
  const r = rand();
  if (burst && r < 0.6) {
    status = 504;
    secs = 30 + rand() * 0.004;
  } else if (r < 0.005) status = 502;
  else if (r < 0.01) status = 404;
  const rt = secs.toFixed(3);
  const urt = status === 404 ? '-' : (secs - 0.001 > 0 ? secs - 0.001 : 0).toFixed(3);
  const us = status === 404 ? '-' : String(status);
  const bytes = status === 200 ? 200 + Math.floor(rand() * 5000) : 167;
  const ip = `10.${Math.floor(rand() * 256)}.${Math.floor(rand() * 256)}.${1 + Math.floor(rand() * 254)}`;
  const line = values.plain
    ? `${ip} - - [${clf(t)}] "${e.method} ${e.path()} HTTP/1.1" ${status} ${bytes} "-" "${pick(UAS)}"\n`
    : `${ip} - - [${clf(t)}] "${e.method} ${e.path()} HTTP/1.1" ${status} ${bytes} "-" "${pick(UAS)}" ${rt} ${urt} ${us}\n`;
  batch.push(line);
  batchBytes += line.length;
  lines++;
  if (batchBytes > 4 * 1024 * 1024) {
    fs.writeSync(fd, batch.join(''));
    written += batchBytes;
    batch = [];
    batchBytes = 0;
  }
}
if (batch.length) fs.writeSync(fd, batch.join(''));
fs.closeSync(fd);
console.error(`wrote ${lines} lines (${written + batchBytes} bytes) to ${values.out}`);
