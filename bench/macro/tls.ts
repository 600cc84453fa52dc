/**
 * TLS and HTTP/2 towards clients (SPEC §3): nginx (ssl, http2), the bare Node proxy over TLS
 * (node:http2 allowHTTP1 + undici) and Sluice with a TLS listener, each terminating TLS and proxying
 * to the same plain upstream nginx; plus Sluice and the bare proxy over plain HTTP, so that the cost
 * of TLS per request can be read as (TLS CPU µs/req − plain CPU µs/req).
 *
 * Loads, on the load core: `wrk -t1 -cC` for HTTP/1.1 (plain and over TLS, keep-alive: handshakes are
 * amortised), `h2load -t1 -c(C/4) -m4` for HTTP/2 (C concurrent streams on C/4 connections).
 * Proxies on core 0, wrk/h2load and the upstream nginx on core 1. Interleaved rounds, medians.
 *
 *   npx node bench/macro/tls.ts [--rounds 3] [--duration 4] [--connections 64]
 * Needs: nginx, wrk, h2load (Debian nghttp2-client), openssl, taskset.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  CLK_TCK,
  fmtInt,
  freePort,
  LOAD_CORE,
  log,
  machineInfo,
  makeBenchCert,
  makeTmpDir,
  mdTable,
  NGINX,
  NODE,
  nginxConf,
  PROXY_CORE,
  type Proc,
  pinSelf,
  requireTools,
  runPinned,
  SLUICE_MAIN,
  SLUICE_NODE_FLAGS,
  spawnPinned,
  startNginx,
  startUpstreamNginx,
  treeTicks,
  waitReadyTls,
  wrk,
} from './lib.ts';

const { values: flags } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '4' },
    connections: { type: 'string', default: '64' },
  },
});
const rounds = Number(flags.rounds);
const duration = Number(flags.duration);
const connections = Number(flags.connections);

requireTools(['nginx', 'wrk', 'h2load', 'openssl', 'taskset']);
pinSelf(LOAD_CORE);
const tmp = makeTmpDir();
const { cert, key } = makeBenchCert(tmp);
// Each side's TLS session ticket/cipher choices left at their defaults (TLS 1.3, P-256 ECDSA).
const upstream = await startUpstreamNginx(tmp);

type Load = 'h1' | 'h1-tls' | 'h2';
interface Contender {
  readonly name: string;
  readonly loads: readonly Load[];
  start(): Promise<{ proc: Proc; url: string }>;
}

const bare = (tlsOn: boolean): Contender => ({
  name: tlsOn ? 'bare Node (TLS)' : 'bare Node',
  loads: tlsOn ? ['h1-tls', 'h2'] : ['h1'],
  async start() {
    const port = await freePort();
    const script = path.join(import.meta.dirname, 'contenders', 'bare-proxy.ts');
    const args = [script, '--port', String(port), '--upstream', upstream.url];
    if (tlsOn) args.push('--cert', cert, '--key', key);
    const proc = spawnPinned(`bare${tlsOn ? '-tls' : ''}`, PROXY_CORE, NODE, args, {
      logFile: path.join(tmp, `bare-${tlsOn}.log`),
    });
    const url = `${tlsOn ? 'https://localhost' : 'http://127.0.0.1'}:${port}`;
    await waitReadyTls(url, proc);
    return { proc, url };
  },
});

const sluice = (tlsOn: boolean): Contender => ({
  name: tlsOn ? 'sluice (TLS)' : 'sluice',
  loads: tlsOn ? ['h1-tls', 'h2'] : ['h1'],
  async start() {
    const port = await freePort();
    const file = path.join(tmp, `sluice-${tlsOn}.yaml`);
    const listen = tlsOn
      ? `[{ address: "127.0.0.1:${port}", tls: { cert: "${cert}", key: "${key}" } }]`
      : `127.0.0.1:${port}`;
    writeFileSync(
      file,
      `listen: ${listen}
admin: { listen: 127.0.0.1:${await freePort()} }
access_log: off
upstreams: { up: { targets: [${upstream.url}] } }
routes: [{ name: all, match: { path: / }, upstream: up }]
`,
    );
    const proc = spawnPinned(
      `sluice${tlsOn ? '-tls' : ''}`,
      PROXY_CORE,
      NODE,
      [...SLUICE_NODE_FLAGS, SLUICE_MAIN, 'start', '-c', file],
      { logFile: path.join(tmp, `sluice-${tlsOn}.log`) },
    );
    const url = `${tlsOn ? 'https://localhost' : 'http://127.0.0.1'}:${port}`;
    await waitReadyTls(url, proc);
    return { proc, url };
  },
});

const nginxTls: Contender = {
  name: 'nginx (TLS)',
  loads: ['h1-tls', 'h2'],
  async start() {
    const port = await freePort();
    const dir = path.join(tmp, 'nginx-tls');
    mkdirSync(dir, { recursive: true });
    const conf = nginxConf(
      dir,
      port,
      `    ssl_certificate ${cert};
    ssl_certificate_key ${key};
    ssl_protocols TLSv1.3;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }`,
      `upstream up { server ${upstream.url.replace('http://', '')}; keepalive 64; keepalive_requests 1000000; }`,
    ).replace(`listen 127.0.0.1:${port} backlog=4096;`, `listen 127.0.0.1:${port} ssl http2 backlog=4096;`);
    const proc = startNginx('nginx-tls', PROXY_CORE, dir, conf);
    const url = `https://localhost:${port}`;
    await waitReadyTls(url, proc);
    return { proc, url };
  },
};

/** h2load's figures: requests/s, completed requests, mean latency (µs). */
async function h2load(
  url: string,
  seconds: number,
): Promise<{ rps: number; requests: number; meanUs: number }> {
  const conns = Math.max(1, Math.floor(connections / 4));
  const out = await runPinned(
    'h2load',
    LOAD_CORE,
    'h2load',
    ['-t1', `-c${conns}`, '-m4', `-D${seconds}`, `${url}/small`],
    path.join(tmp, 'h2load.log'),
  );
  const rps = Number(/finished in [\d.]+s, ([\d.]+) req\/s/.exec(out)?.[1] ?? 0);
  const done = Number(/requests: \d+ total, \d+ started, (\d+) done/.exec(out)?.[1] ?? 0);
  const m = /time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)/.exec(out);
  const meanUs = m ? Number(m[1]) * (m[2] === 'us' ? 1 : m[2] === 'ms' ? 1e3 : 1e6) : 0;
  if (rps === 0) throw new Error(`unexpected h2load output:\n${out}`);
  return { rps, requests: done, meanUs };
}

const contenders = [nginxTls, bare(false), bare(true), sluice(false), sluice(true)];
const results = new Map<string, { rps: number[]; cpu: number[] }>();
const key2 = (c: string, l: Load) => `${c}|${l}`;
for (let round = 0; round < rounds; round++) {
  for (const c of contenders) {
    const { proc, url } = await c.start();
    for (const load of c.loads) {
      const run = async (seconds: number) =>
        load === 'h2'
          ? await h2load(url, seconds)
          : await wrk(`${url}/small`, connections, seconds, path.join(tmp, 'wrk.log'));
      await run(2); // warm-up
      const before = treeTicks(proc.pid);
      const r = await run(duration);
      const ticks = treeTicks(proc.pid) - before;
      const e = results.get(key2(c.name, load)) ?? { rps: [], cpu: [] };
      e.rps.push(r.rps);
      e.cpu.push((ticks * (1e6 / CLK_TCK)) / r.requests);
      results.set(key2(c.name, load), e);
      log(`round ${round + 1} ${c.name} ${load}: ${fmtInt(r.rps)} req/s`);
    }
    await proc.stop();
  }
}
await upstream.proc.stop();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fig = (c: string, l: Load) => {
  const e = results.get(key2(c, l));
  return e ? { rps: median(e.rps), cpu: median(e.cpu) } : undefined;
};
const rows: string[][] = [];
for (const load of ['h1', 'h1-tls', 'h2'] as const) {
  const ng = fig('nginx (TLS)', load);
  for (const c of contenders) {
    const f = fig(c.name, load);
    if (!f) continue;
    rows.push([
      load === 'h1' ? 'HTTP/1.1' : load === 'h1-tls' ? 'HTTP/1.1 + TLS' : 'HTTP/2 + TLS',
      c.name,
      fmtInt(f.rps),
      ng && load !== 'h1' ? `${(f.rps / ng.rps).toFixed(2)}×` : '–',
      f.cpu.toFixed(1),
    ]);
  }
}
const tlsCost = (name: string, plain: string) => {
  const t = fig(name, 'h1-tls');
  const p = fig(plain, 'h1');
  return t && p ? t.cpu - p.cpu : Number.NaN;
};
const sluiceCost = tlsCost('sluice (TLS)', 'sluice');
const bareCost = tlsCost('bare Node (TLS)', 'bare Node');
console.log(`\nmachine: ${JSON.stringify(machineInfo())}, nginx ${NGINX}`);
console.log(
  `${rounds} interleaved rounds × ${duration}s (medians); wrk -t1 -c${connections}; h2load -t1 -c${Math.floor(connections / 4)} -m4; proxies on core ${PROXY_CORE}, load and upstream nginx on core ${LOAD_CORE}\n`,
);
console.log(mdTable(['protocol', 'contender', 'req/s', 'vs nginx', 'proxy CPU µs/req'], rows));
console.log(
  `\nTLS cost per request (HTTP/1.1 + TLS minus plain, CPU µs/req): sluice ${sluiceCost.toFixed(1)}, bare Node ${bareCost.toFixed(1)}, ratio ${(sluiceCost / bareCost).toFixed(2)}×`,
);
