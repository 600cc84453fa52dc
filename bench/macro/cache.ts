/**
 * The response cache, measured (issue 12, docs/benchmarks.md "Response cache"), in one run:
 *
 *   1. hit throughput: wrk on one cached 16 KiB URL through Sluice and through nginx `proxy_cache`;
 *   2. the miss path: wrk on ever-new URLs of cacheable responses (each one a miss that is stored,
 *      the store evicting under cache_size), and on `no-store` responses, through Sluice with the
 *      route cache on and off: what the cache adds when it cannot help (target ≤ 5 %);
 *   3. a stampede: 1,000 clients at once on one cold key of a 200 ms upstream: upstream requests (1).
 *
 *   npx node bench/macro/cache.ts [--rounds 3] [--duration 5] [--json out.json]
 *
 * The proxy under test is pinned to core 0; wrk, the upstream nginx and this runner to core 1.
 */
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  CLK_TCK,
  fmtInt,
  fmtUs,
  freePort,
  LOAD_CORE,
  log,
  machineInfo,
  makeTmpDir,
  mdTable,
  median,
  nginxConf,
  PROXY_CORE,
  pinSelf,
  raiseNofile,
  requireTools,
  type SluiceProc,
  startNginx,
  startSluiceWith,
  treeTicks,
  waitReady,
  wrk,
} from './lib.ts';

const { values: flags } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '5' },
    json: { type: 'string' },
  },
});
const rounds = Number(flags.rounds);
const duration = Number(flags.duration);

requireTools(['nginx', 'wrk', 'taskset']);
raiseNofile(8192);
pinSelf(LOAD_CORE);
const tmp = makeTmpDir();
const machine = machineInfo();
log(`cpu ${machine.cpu}; node ${machine.node}; nginx ${machine.nginx}; ${machine.wrk}`);

// The upstream: nginx on the load core; /c/* cacheable for an hour, /n/* no-store; 16 KiB each.
const upDir = path.join(tmp, 'upstream');
const { mkdirSync } = await import('node:fs');
mkdirSync(path.join(upDir, 'www', 'c'), { recursive: true });
mkdirSync(path.join(upDir, 'www', 'n'), { recursive: true });
writeFileSync(path.join(upDir, 'www', 'c', 'f'), Buffer.alloc(16 * 1024, 'x'));
writeFileSync(path.join(upDir, 'www', 'n', 'f'), Buffer.alloc(16 * 1024, 'x'));
const upPort = await freePort();
const upstreamProc = startNginx(
  'upstream',
  LOAD_CORE,
  upDir,
  nginxConf(
    upDir,
    upPort,
    `    root ${upDir}/www;
    sendfile on;
    etag on;
    location /c/ { add_header Cache-Control "max-age=3600"; try_files /c/f =404; }
    location /n/ { add_header Cache-Control "no-store"; try_files /n/f =404; }`,
  ),
);
const upstream = `http://127.0.0.1:${upPort}`;
await waitReady(`${upstream}/c/f`, upstreamProc);

// nginx proxy_cache, the anchor users know.
const ngDir = path.join(tmp, 'nginx-cache');
const ngPort = await freePort();
const nginx = startNginx(
  'nginx',
  PROXY_CORE,
  ngDir,
  nginxConf(
    ngDir,
    ngPort,
    `    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache c;
      proxy_cache_lock on;
      proxy_cache_use_stale error timeout updating;
      add_header Cache-Status $upstream_cache_status;
    }`,
    `proxy_cache_path ${ngDir}/cache keys_zone=c:16m max_size=64m;
  upstream up { server 127.0.0.1:${upPort}; keepalive 64; }`,
  ),
);
const nginxUrl = `http://127.0.0.1:${ngPort}`;
await waitReady(`${nginxUrl}/c/f`, nginx);

const sluiceYaml = (cache: boolean) => (port: number, adminPort: number) =>
  `listen: 127.0.0.1:${port}
admin: { listen: 127.0.0.1:${adminPort} }
access_log: off
cache_size: 64MB
upstreams: { up: { targets: ["${upstream}"] } }
routes:
  - name: all
    match: { path: / }
    upstream: up
${cache ? '    cache: {}\n' : ''}`;
const cached = await startSluiceWith(tmp, 'sluice-cache', sluiceYaml(true), { readyPath: '/c/f' });
const plain = await startSluiceWith(tmp, 'sluice-plain', sluiceYaml(false), { readyPath: '/c/f' });

// A wrk script that asks for a new URL every time: every request a miss.
const unique = path.join(tmp, 'unique.lua');
writeFileSync(
  unique,
  `local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/c/f?u=" .. n .. "-" .. math.random(1e9))
end
`,
);

interface Row {
  case: string;
  contender: string;
  rps: number[];
  cpu: number[];
  p99: number[];
}
const rows = new Map<string, Row>();
const wrkLog = path.join(tmp, 'wrk.log');
async function measure(
  name: string,
  contender: string,
  url: string,
  pid: number,
  script?: string,
): Promise<void> {
  const key = `${name}|${contender}`;
  const row = rows.get(key) ?? { case: name, contender, rps: [], cpu: [], p99: [] };
  rows.set(key, row);
  await wrk(url, 64, 1, wrkLog, script);
  const t0 = treeTicks(pid);
  const r = await wrk(url, 64, duration, wrkLog, script);
  const t1 = treeTicks(pid);
  row.rps.push(r.rps);
  row.p99.push(r.p99us);
  row.cpu.push((((t1 - t0) / CLK_TCK) * 1e6) / Math.max(1, r.requests));
  log(
    `${name} ${contender}: ${fmtInt(r.rps)} req/s, p99 ${fmtUs(r.p99us)}${r.non2xx ? `, ${r.non2xx} non-2xx` : ''}`,
  );
}

const sluices: [string, SluiceProc][] = [
  ['sluice, cache on', cached],
  ['sluice, cache off', plain],
];
for (let round = 1; round <= rounds; round++) {
  log(`round ${round}/${rounds}`);
  await measure('hit, 16 KiB', 'nginx proxy_cache', `${nginxUrl}/c/f`, nginx.pid);
  await measure('hit, 16 KiB', 'sluice, cache on', `${cached.url}/c/f`, cached.proc.pid);
  for (const [name, s] of round % 2 ? sluices : [...sluices].reverse()) {
    await measure('miss, new URL each time (stored)', name, `${s.url}/c/f`, s.proc.pid, unique);
    await measure('no-store response', name, `${s.url}/n/f`, s.proc.pid);
  }
}

// The stampede: a cold key on a 200 ms upstream, 1,000 clients at once.
let upstreamHits = 0;
const slow = http.createServer((_req, res) => {
  upstreamHits++;
  setTimeout(() => {
    res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' });
    res.end('x'.repeat(4096));
  }, 200);
});
await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
const slowPort = (slow.address() as { port: number }).port;
const stampede = await startSluiceWith(
  tmp,
  'sluice-stampede',
  (port, adminPort) => `listen: 127.0.0.1:${port}
admin: { listen: 127.0.0.1:${adminPort} }
access_log: off
upstreams: { up: { targets: ["http://127.0.0.1:${slowPort}"] } }
routes:
  - { name: all, match: { path: / }, upstream: up, cache: {} }
`,
  { readyPath: '/warm' },
);
upstreamHits = 0;
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const t0 = performance.now();
const statuses = await Promise.all(
  Array.from(
    { length: 1000 },
    () =>
      new Promise<number>((resolve) => {
        http
          .get(`${stampede.url}/cold`, { agent }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          })
          .on('error', () => resolve(0));
      }),
  ),
);
const stampedeMs = performance.now() - t0;
const ok = statuses.filter((s) => s === 200).length;
log(`stampede: ${ok}/1000 answered 200 in ${stampedeMs.toFixed(0)} ms, upstream requests ${upstreamHits}`);

await Promise.all([cached.stop(), plain.stop(), stampede.stop(), nginx.stop(), upstreamProc.stop()]);
slow.close();

const table = [...rows.values()].map((r) => [
  r.case,
  r.contender,
  fmtInt(median(r.rps)),
  `${fmtInt(Math.min(...r.rps))}–${fmtInt(Math.max(...r.rps))}`,
  fmtUs(median(r.p99)),
  median(r.cpu).toFixed(1),
]);
console.log(
  `\n${mdTable(['case', 'contender', 'req/s', 'range', 'p99', 'proxy CPU µs/req'], table, ['l', 'l', 'r', 'r', 'r', 'r'])}\n`,
);
const med = (c: string, k: string) => median(rows.get(`${c}|${k}`)?.rps ?? [0]);
const hitRatio = med('hit, 16 KiB', 'sluice, cache on') / med('hit, 16 KiB', 'nginx proxy_cache');
console.log(`hit throughput, sluice / nginx proxy_cache: ${(hitRatio * 100).toFixed(0)} %`);
for (const c of ['miss, new URL each time (stored)', 'no-store response']) {
  const on = med(c, 'sluice, cache on');
  const off = med(c, 'sluice, cache off');
  console.log(
    `${c}: cache on ${fmtInt(on)} vs off ${fmtInt(off)} req/s (${(((on - off) / off) * 100).toFixed(1)} %)`,
  );
}
console.log(
  `stampede of 1,000 on one cold key: ${upstreamHits} upstream request(s), ${ok} × 200, ${stampedeMs.toFixed(0)} ms`,
);
if (flags.json)
  writeFileSync(
    flags.json,
    JSON.stringify(
      { machine, rows: [...rows.values()], stampede: { upstreamHits, ok, ms: stampedeMs } },
      null,
      2,
    ),
  );
process.exit(0);
