/**
 * Compression levels for the gateway (src/proxy/compress.ts). Run: `npx node bench/micro/compress.bench.ts`
 * (≈ 1 min; `--quick` for fewer rounds, `--no-nginx` to skip the nginx part).
 *
 * 1. In process, through `createEncoder` as the proxy uses it (64 KiB writes, as the upstream socket
 *    delivers them, output consumed as it comes): br / zstd / gzip at a few levels each, on a 100 KB
 *    JSON API page and a 1 MB HTML page (bench/micro/compress-corpus.ts, seeded). Per case: input
 *    MB/s (wall; zlib runs on libuv's thread pool), CPU ms per input MB (process.cpuUsage: every
 *    thread of this process, stream machinery included) and ratio (identity ÷ encoded). Best of
 *    ROUNDS rounds (least disturbed by other load).
 * 2. Memory per open stream at the chosen levels: RSS growth with 200 encoders that each got the
 *    first 64 KiB of the HTML page (with and without a size hint).
 * 3. If nginx is installed: nginx (1 worker, `gzip on; gzip_comp_level 1`, its default level) serving
 *    the same two files over loopback, a bounded number of keep-alive requests with
 *    `accept-encoding: gzip` (2 at a time), measured by the worker's CPU time (utime + stime from
 *    /proc/PID/stat) per MB served; and the same files with `gzip off`, the cost of serving alone.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { Transform } from 'node:stream';
import zlib from 'node:zlib';
import { createEncoder, type Encoding, LEVELS } from '../../src/proxy/compress.ts';
import {
  CLK_TCK,
  descendants,
  freePort,
  makeTmpDir,
  NGINX,
  NODE,
  nginxConf,
  PROXY_CORE,
  startNginx,
  treeTicks,
  waitReady,
} from '../macro/lib.ts';
import { htmlBody, jsonBody } from './compress-corpus.ts';

const quick = process.argv.includes('--quick');
const ROUNDS = quick ? 2 : 5;
/** Input MB per case and round. */
const MB_PER_ROUND = quick ? 6 : 10;
const MB = 1024 * 1024;

const CASES: [Encoding, number[]][] = [
  ['gzip', [1, 2, 3, 4, 6]],
  ['br', [1, 2, 3, 4, 5]],
  ['zstd', [1, 2, 3, 6]],
];

const bodies = { 'json 100 KB': jsonBody(100 * 1024), 'html 1 MB': htmlBody(MB) };

function encodeOnce(encoding: Encoding, level: number, body: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const enc = createEncoder(encoding, { level, sizeHint: body.length });
    let out = 0;
    enc.on('data', (c: Buffer) => (out += c.length));
    enc.on('end', () => resolve(out));
    enc.on('error', reject);
    let at = 0;
    const pump = () => {
      while (at < body.length) {
        const chunk = body.subarray(at, at + 65536);
        at += chunk.length;
        if (!enc.write(chunk)) return void enc.once('drain', pump);
      }
      enc.end();
    };
    pump();
  });
}

interface Row {
  body: string;
  encoding: Encoding;
  level: number;
  mbps: number;
  cpuMsPerMb: number;
  ratio: number;
}

async function measure(encoding: Encoding, level: number, name: string, body: Buffer): Promise<Row> {
  const n = Math.max(1, Math.round((MB_PER_ROUND * MB) / body.length));
  let out = 0;
  for (let i = 0; i < Math.max(2, n / 8); i++) out = await encodeOnce(encoding, level, body); // warm-up
  let bestWall = Number.POSITIVE_INFINITY;
  let bestCpu = Number.POSITIVE_INFINITY;
  for (let r = 0; r < ROUNDS; r++) {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await encodeOnce(encoding, level, body);
    const wall = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    bestWall = Math.min(bestWall, wall);
    bestCpu = Math.min(bestCpu, (cpu.user + cpu.system) / 1000);
  }
  const inMb = (n * body.length) / MB;
  return {
    body: name,
    encoding,
    level,
    mbps: inMb / (bestWall / 1000),
    cpuMsPerMb: bestCpu / inMb,
    ratio: body.length / out,
  };
}

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    `| ${r.map((c, i) => (i < 2 ? c.padEnd(w[i]) : c.padStart(w[i]))).join(' | ')} |`;
  return [
    line(head),
    `| ${w.map((n, i) => (i < 2 ? '-'.repeat(n) : `${'-'.repeat(n - 1)}:`)).join(' | ')} |`,
    ...rows.map(line),
  ].join('\n');
}

// ---- 1. levels ---------------------------------------------------------------------------------------

// ---- 2. memory per open stream -------------------------------------------------------------------------

/**
 * In a fresh child process (RSS never shrinks, so freed memory of earlier cases would hide later
 * ones): RSS growth with N encoders that each got `bytes` of the HTML page and wait for more, ÷ N.
 */
async function memChild(encoding: Encoding, sizeHint: number | undefined, bytes: number): Promise<void> {
  const N = 200;
  const data = bodies['html 1 MB'].subarray(0, bytes);
  const fill = (e: Transform) =>
    new Promise<void>((resolve) => {
      e.on('data', () => {});
      e.write(data, () => resolve());
    });
  const warm = createEncoder(encoding, { sizeHint });
  await fill(warm);
  warm.destroy();
  await new Promise((r) => setTimeout(r, 20));
  const before = process.memoryUsage.rss();
  const encs = Array.from({ length: N }, () => createEncoder(encoding, { sizeHint }));
  for (const e of encs) await fill(e);
  console.log(((process.memoryUsage.rss() - before) / N / 1024).toFixed(0));
  for (const e of encs) e.destroy();
}

const child = process.argv.indexOf('--mem-child');
if (child !== -1) {
  const [encoding, hint, bytes] = process.argv.slice(child + 1);
  await memChild(encoding as Encoding, hint === '-' ? undefined : Number(hint), Number(bytes));
  process.exit(0);
}

function memoryPerStream(encoding: Encoding, sizeHint: number | undefined, bytes: number): number {
  const args = [import.meta.filename, '--mem-child', encoding, String(sizeHint ?? '-'), String(bytes)];
  return Number(execFileSync(NODE, args, { encoding: 'utf8' }).trim());
}

async function levelsPart(): Promise<void> {
  console.log(
    `# Compression — Node ${process.version}, zlib ${process.versions.zlib}, brotli ${process.versions.brotli}, zstd ${process.versions.zstd}`,
  );
  console.log(`chosen levels (LEVELS in src/proxy/compress.ts): ${JSON.stringify(LEVELS)}\n`);
  const rows: Row[] = [];
  for (const [name, body] of Object.entries(bodies)) {
    for (const [encoding, levels] of CASES) {
      for (const level of levels) {
        const row = await measure(encoding, level, name, body);
        rows.push(row);
        process.stderr.write(`  ${name} ${encoding} ${level}: ${row.mbps.toFixed(0)} MB/s\n`);
      }
    }
  }
  console.log(
    table(
      ['body', 'encoding', 'MB/s in', 'CPU ms/MB', 'ratio'],
      rows.map((r) => [
        r.body,
        `${r.encoding} ${r.level}${LEVELS[r.encoding] === r.level ? ' (chosen)' : ''}`,
        r.mbps.toFixed(0),
        r.cpuMsPerMb.toFixed(2),
        r.ratio.toFixed(2),
      ]),
    ),
  );
}

// ---- 3. nginx -------------------------------------------------------------------------------------------

function getAll(url: string, n: number, agent: http.Agent): Promise<{ bytes: number; first: Buffer }> {
  let bytes = 0;
  let first: Buffer | undefined;
  let issued = 0;
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      issued++;
      const keep = first === undefined;
      http
        .get(url, { agent, headers: { 'accept-encoding': 'gzip' } }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => {
            bytes += c.length;
            if (keep) chunks.push(c);
          });
          res.on('end', () => {
            if (keep && first === undefined) {
              const raw = Buffer.concat(chunks);
              first = res.headers['content-encoding'] === 'gzip' ? zlib.gunzipSync(raw) : raw;
            }
            resolve();
          });
          res.on('error', reject);
        })
        .on('error', reject);
    });
  const worker = async () => {
    while (issued < n) await one();
  };
  return Promise.all([worker(), worker()]).then(() => ({ bytes, first: first as Buffer }));
}

async function nginxPart(): Promise<void> {
  if (process.argv.includes('--no-nginx')) return;
  if (!existsSync(NGINX)) {
    console.log(`\nnginx: SKIP (${NGINX} not found)`);
    return;
  }
  const tmp = makeTmpDir();
  const dir = path.join(tmp, 'nginx');
  mkdirSync(path.join(dir, 'www'), { recursive: true });
  writeFileSync(path.join(dir, 'www', 'body.json'), bodies['json 100 KB']);
  writeFileSync(path.join(dir, 'www', 'body.html'), bodies['html 1 MB']);
  const port = await freePort();
  const extra = `types { text/html html; application/json json; }
  gzip_types application/json;
  gzip_min_length 1024;`;
  const body = `    root ${dir}/www;
    location /gzip/ { alias ${dir}/www/; gzip on; gzip_comp_level 1; }
    location /plain/ { alias ${dir}/www/; gzip off; }`;
  const proc = startNginx('nginx', PROXY_CORE, dir, nginxConf(dir, port, body, extra));
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitReady(`${base}/plain/body.json`, proc);
    const worker = descendants(proc.pid)[0] ?? proc.pid;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
    const out: string[][] = [];
    for (const [name, file, requests] of [
      ['json 100 KB', 'body.json', quick ? 160 : 480],
      ['html 1 MB', 'body.html', quick ? 16 : 48],
    ] as const) {
      const original = name === 'json 100 KB' ? bodies['json 100 KB'] : bodies['html 1 MB'];
      for (const mode of ['gzip', 'plain'] as const) {
        await getAll(`${base}/${mode}/${file}`, 8, agent); // warm-up
        const t0 = treeTicks(worker);
        const { bytes, first } = await getAll(`${base}/${mode}/${file}`, requests, agent);
        const ticks = treeTicks(worker) - t0;
        if (!first.equals(original)) throw new Error(`nginx ${mode} ${file}: body differs from the file`);
        const inMb = (requests * original.length) / MB;
        out.push([
          name,
          mode === 'gzip' ? 'nginx gzip 1' : 'nginx gzip off',
          String(requests),
          ((ticks * 1000) / CLK_TCK / inMb).toFixed(2),
          ((requests * original.length) / bytes).toFixed(2),
        ]);
      }
    }
    agent.destroy();
    const v = execFileSync(NGINX, ['-v'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
    console.log(
      `\nnginx (${v || execFileSync('sh', ['-c', `${NGINX} -v 2>&1`], { encoding: 'utf8' }).trim()}), 1 worker, loopback, keep-alive, 2 requests at a time; worker CPU per identity MB served (/proc ticks of ${1000 / CLK_TCK} ms):\n`,
    );
    console.log(table(['body', 'server', 'requests', 'CPU ms/MB', 'ratio'], out));
  } finally {
    await proc.stop();
  }
}

await levelsPart();
console.log(
  '\nmemory per open stream at the chosen levels (RSS growth ÷ 200 encoders waiting for more, fresh process each):\n',
);
const mem: string[][] = [];
for (const encoding of ['br', 'zstd', 'gzip'] as const) {
  mem.push([
    `${encoding} ${LEVELS[encoding]}`,
    `${memoryPerStream(encoding, undefined, MB)} KiB`,
    `${memoryPerStream(encoding, 100 * 1024, 100 * 1024)} KiB`,
  ]);
}
console.log(table(['encoding', 'size unknown, 1 MB written', 'Content-Length 100 KB, all written'], mem));

await nginxPart();
