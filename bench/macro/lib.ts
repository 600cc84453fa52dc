/**
 * Shared helpers of the macro benchmarks: process spawning with CPU pinning and guaranteed cleanup,
 * readiness polling, /proc sampling (CPU ticks, RSS), wrk invocation and parsing, nginx configs and the
 * contenders (direct, nginx, fastify, bare, sluice).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const ROOT = path.resolve(import.meta.dirname, '..', '..');
const localNode = path.join(ROOT, 'node_modules', '.bin', 'node');
/** The Node 24 binary of the project (never the machine's older `node` on PATH). */
export const NODE = existsSync(localNode) ? localNode : process.execPath;
export const NGINX = process.env['NGINX'] ?? (existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx');
export const WRK = process.env['WRK'] ?? 'wrk';
/** Core of the proxy under test, and of everything else (load generator, upstream, this runner). */
export const PROXY_CORE = 0;
export const LOAD_CORE = 1;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function log(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

// ---------------------------------------------------------------------------------------------------------
// Processes and cleanup

/** A child process we started; every one is killed (with its descendants) when the runner exits. */
export interface Proc {
  name: string;
  pid: number;
  child: ChildProcess;
  logFile: string;
  exited: boolean;
  exitInfo: string;
  stop(): Promise<void>;
  logTail(bytes?: number): string;
}

const live = new Set<Proc>();
const tmpDirs = new Set<string>();
let cleanupInstalled = false;

/** All descendants of `pid` (children, grandchildren …), read from /proc. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(entry));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const todo = [pid];
  while (todo.length > 0) {
    for (const c of children.get(todo.pop()!) ?? []) {
      out.push(c);
      todo.push(c);
    }
  }
  return out;
}

function killTree(pid: number, signal: NodeJS.Signals): void {
  let pids: number[] = [];
  try {
    pids = descendants(pid);
  } catch {}
  for (const p of [pid, ...pids]) {
    try {
      process.kill(p, signal);
    } catch {}
  }
}

/** Kills everything still running, synchronously (usable from 'exit'), and removes the temp dirs. */
export function cleanupSync(): void {
  for (const p of live) if (!p.exited) killTree(p.pid, 'SIGKILL');
  live.clear();
  if (process.env['BENCH_KEEP_TMP'] !== '1')
    for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
  tmpDirs.clear();
}

function installCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  process.on('exit', cleanupSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      log(`${sig}: stopping all processes`);
      cleanupSync();
      process.exit(130);
    });
  }
  process.on('uncaughtException', (err) => {
    console.error(err);
    cleanupSync();
    process.exit(1);
  });
  process.on('unhandledRejection', (err) => {
    console.error(err);
    cleanupSync();
    process.exit(1);
  });
}

export function makeTmpDir(): string {
  installCleanup();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-bench-'));
  tmpDirs.add(dir);
  return dir;
}

/**
 * Starts `cmd args` pinned to `core` (through `taskset`, which execs, so the pid is the program's own),
 * stdout+stderr to `logFile`.
 */
export function spawnPinned(
  name: string,
  core: number | null,
  cmd: string,
  args: string[],
  opts: { logFile: string; cwd?: string; env?: NodeJS.ProcessEnv },
): Proc {
  installCleanup();
  const fd = openSync(opts.logFile, 'a');
  const [file, argv] = core === null ? [cmd, args] : ['taskset', ['-c', String(core), cmd, ...args]];
  const child = spawn(file, argv, {
    cwd: opts.cwd ?? ROOT,
    env: opts.env ?? process.env,
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  if (child.pid === undefined) throw new Error(`${name}: cannot spawn ${cmd}`);
  let resolveExit: () => void = () => {};
  const exitPromise = new Promise<void>((r) => (resolveExit = r));
  const proc: Proc = {
    name,
    pid: child.pid,
    child,
    logFile: opts.logFile,
    exited: false,
    exitInfo: '',
    async stop() {
      if (!proc.exited) {
        killTree(proc.pid, 'SIGTERM');
        const t = setTimeout(() => killTree(proc.pid, 'SIGKILL'), 3000);
        await exitPromise;
        clearTimeout(t);
      }
      live.delete(proc);
    },
    logTail(bytes = 1500) {
      try {
        const s = readFileSync(opts.logFile, 'utf8');
        return s.slice(-bytes).trim();
      } catch {
        return '';
      }
    },
  };
  child.on('error', (err) => {
    proc.exitInfo = String(err);
  });
  child.on('exit', (code, signal) => {
    proc.exited = true;
    proc.exitInfo ||= signal ? `killed by ${signal}` : `exited with code ${code}`;
    resolveExit();
  });
  live.add(proc);
  return proc;
}

/** Runs a command to completion (pinned), returns its stdout. Registered for cleanup while running. */
export async function runPinned(
  name: string,
  core: number | null,
  cmd: string,
  args: string[],
  logFile: string,
) {
  writeFileSync(logFile, '');
  const p = spawnPinned(name, core, cmd, args, { logFile });
  await new Promise<void>((r) => (p.exited ? r() : p.child.once('exit', () => r())));
  live.delete(p);
  const out = readFileSync(logFile, 'utf8');
  if (p.exitInfo !== 'exited with code 0') throw new Error(`${name} ${p.exitInfo}:\n${out.slice(-1500)}`);
  return out;
}

/** Pins this process (all its threads) to a core, so the runner never competes with the proxy. */
export function pinSelf(core: number): void {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', String(core), String(process.pid)], { stdio: 'ignore' });
  } catch {
    log(`warning: could not pin the runner to core ${core}`);
  }
}

/** Soft and hard open-files limits of this process. */
export function nofileLimits(): { soft: number; hard: number } {
  const line = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const [soft, hard] = (line ?? '')
    .split(/\s+/)
    .slice(3, 5)
    .map((v) => (v === 'unlimited' ? 1 << 20 : Number(v)));
  return { soft: soft || 1024, hard: hard || 1024 };
}

/** Raises this process's soft open-files limit (inherited by the children) to at least `want`. */
export function raiseNofile(want: number): number {
  const { soft, hard: hardN } = nofileLimits();
  let target = Math.max(soft, Math.min(want, hardN));
  if (target > soft) {
    try {
      execFileSync('prlimit', [
        '--pid',
        String(process.pid),
        `--nofile=${target}:${Math.max(target, hardN)}`,
      ]);
    } catch {
      target = soft;
    }
  }
  if (target < want)
    log(`warning: open-files limit is ${target} (< ${want}); raise it with 'ulimit -n ${want}'`);
  return target;
}

export function requireTools(tools: string[]): void {
  for (const t of tools) {
    try {
      execFileSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' });
    } catch {
      throw new Error(
        `'${t}' not found: install the prerequisites (apt-get install nginx-light wrk util-linux)`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Ports, readiness

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** One GET on a fresh connection; resolves with status and body length. */
export function httpGet(url: string, timeoutMs = 2000): Promise<{ status: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      url,
      { agent: false, headers: { connection: 'close' }, timeout: timeoutMs },
      (res) => {
        let bytes = 0;
        res.on('data', (c: Buffer) => (bytes += c.length));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** Polls `url` until it answers 200 (the server accepts connections and proxies), or throws. */
export async function waitReady(url: string, proc: Proc | null, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (proc?.exited) throw new Error(`${proc.name} ${proc.exitInfo} before accepting connections`);
    try {
      const r = await httpGet(url, 1000);
      if (r.status === 200) return;
      last = `HTTP ${r.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(100);
  }
  throw new Error(`${url} not ready after ${timeoutMs} ms (last: ${last})`);
}

// ---------------------------------------------------------------------------------------------------------
// /proc sampling

export const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** utime+stime (clock ticks) of a process, all threads included; 0 if it is gone. */
function procTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]); // fields 14 and 15 of stat(5)
  } catch {
    return 0;
  }
}

/** CPU ticks of a process and all its descendants (nginx master + worker, a node child and its helpers). */
export function treeTicks(pid: number): number {
  return [pid, ...descendants(pid)].reduce((sum, p) => sum + procTicks(p), 0);
}

/** VmRSS (KiB) of a process and all its descendants. */
export function treeRssKiB(pid: number): number {
  let sum = 0;
  for (const p of [pid, ...descendants(pid)]) {
    try {
      const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) sum += Number(m[1]);
    } catch {}
  }
  return sum;
}

// ---------------------------------------------------------------------------------------------------------
// Machine description

export function machineInfo(): Record<string, string> {
  const cpu = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown';
  const sh = (cmd: string) => {
    try {
      return execFileSync('sh', ['-c', cmd], { encoding: 'utf8' }).trim();
    } catch {
      return 'unknown';
    }
  };
  return {
    cpu: `${cpu} (${os.cpus().length} cores)`,
    kernel: `${os.type()} ${os.release()}`,
    node: sh(`${NODE} --version`),
    nginx: sh(`${NGINX} -v 2>&1`).replace(/^nginx version:\s*/, ''),
    wrk: sh(`${WRK} --version 2>&1 | head -1`).replace(/ Copyright.*/, ''),
    date: new Date().toISOString(),
  };
}

// ---------------------------------------------------------------------------------------------------------
// wrk

export interface WrkResult {
  requests: number;
  seconds: number;
  rps: number;
  p50us: number;
  p75us: number;
  p90us: number;
  p99us: number;
  non2xx: number;
  socketErrors: number;
}

const UNIT_US: Record<string, number> = { us: 1, ms: 1e3, s: 1e6, m: 60e6, h: 3600e6 };

function toUs(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(v.trim());
  if (!m) throw new Error(`bad wrk duration '${v}'`);
  return Number(m[1]) * UNIT_US[m[2]];
}

export function parseWrk(out: string): WrkResult {
  const pct = (p: string) => {
    const m = new RegExp(`^\\s*${p}%\\s+(\\S+)`, 'm').exec(out);
    if (!m) throw new Error(`wrk output without ${p}% latency:\n${out}`);
    return toUs(m[1]);
  };
  const total = /(\d+) requests in ([\d.]+)(\w+),/.exec(out);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!total || !rps) throw new Error(`unexpected wrk output:\n${out}`);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    requests: Number(total[1]),
    seconds: toUs(total[2] + total[3]) / 1e6,
    rps: Number(rps[1]),
    p50us: pct('50'),
    p75us: pct('75'),
    p90us: pct('90'),
    p99us: pct('99'),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
    socketErrors: sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
  };
}

/** `wrk -t1 -cC -dDs --latency [-s SCRIPT] URL` on the load core. */
export async function wrk(
  url: string,
  connections: number,
  seconds: number,
  logFile: string,
  script?: string,
): Promise<WrkResult> {
  const args = [
    '-t1',
    `-c${connections}`,
    `-d${seconds}s`,
    '--latency',
    ...(script ? ['-s', script] : []),
    url,
  ];
  return parseWrk(await runPinned('wrk', LOAD_CORE, WRK, args, logFile));
}

// ---------------------------------------------------------------------------------------------------------
// nginx

const isRoot = process.getuid?.() === 0;

export function nginxConf(dir: string, port: number, body: string, extra = ''): string {
  for (const t of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'])
    mkdirSync(path.join(dir, `${t}_temp`), { recursive: true });
  return `${isRoot ? 'user root;' : ''}
worker_processes 1;
worker_rlimit_nofile ${Math.min(nofileLimits().hard, 65536)};
error_log ${dir}/error.log warn;
events { worker_connections ${Math.min(nofileLimits().hard, 65536) >> 1}; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  default_type application/octet-stream;
  client_body_temp_path ${dir}/client_body_temp;
  proxy_temp_path ${dir}/proxy_temp;
  fastcgi_temp_path ${dir}/fastcgi_temp;
  uwsgi_temp_path ${dir}/uwsgi_temp;
  scgi_temp_path ${dir}/scgi_temp;
  ${extra}
  server {
    listen 127.0.0.1:${port} backlog=4096;
${body}
  }
}
`;
}

export function startNginx(name: string, core: number | null, dir: string, conf: string): Proc {
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'nginx.conf'), conf);
  const args = [
    '-p',
    dir,
    '-c',
    'nginx.conf',
    '-e',
    `${dir}/error.log`,
    '-g',
    `daemon off; pid ${dir}/nginx.pid;`,
  ];
  return spawnPinned(name, core, NGINX, args, { logFile: path.join(dir, 'stdout.log') });
}

export const BODIES = { small: 100, '16k': 16 * 1024 } as const;
export type BodyName = keyof typeof BODIES;

/** The upstream: nginx, 1 worker, on the load core, serving /small (100 B) and /16k (16 KiB) as static files. */
export async function startUpstreamNginx(tmp: string): Promise<{ proc: Proc; url: string }> {
  const dir = path.join(tmp, 'upstream-nginx');
  mkdirSync(path.join(dir, 'www'), { recursive: true });
  for (const [name, size] of Object.entries(BODIES)) {
    writeFileSync(path.join(dir, 'www', name), Buffer.alloc(size, 'x'));
  }
  const port = await freePort();
  const body = `    root ${dir}/www;
    sendfile on;
    open_file_cache max=16 inactive=600s;
    open_file_cache_valid 3600s;
    location / { }`;
  const proc = startNginx('upstream-nginx', LOAD_CORE, dir, nginxConf(dir, port, body));
  const url = `http://127.0.0.1:${port}`;
  await waitReady(`${url}/small`, proc);
  return { proc, url };
}

// ---------------------------------------------------------------------------------------------------------
// Contenders

/** The V8 flags Sluice ships with (bin/sluice.js, npm start): benchmark it as users run it. */
export const SLUICE_NODE_FLAGS = process.env['SLUICE_BENCH_NODE_FLAGS']?.split(' ').filter(Boolean) ?? [
  '--max-semi-space-size=4',
];

export const ALL_CONTENDERS = ['direct', 'nginx', 'fastify', 'bare', 'sluice'] as const;
export type ContenderName = (typeof ALL_CONTENDERS)[number];

export interface Contender {
  name: ContenderName;
  /** Base URL the load generator hits. */
  url: string;
  /** The proxy process (root of its tree); null for `direct`. */
  proc: Proc | null;
  stop(): Promise<void>;
}

export interface ContenderOptions {
  /** Upstream timeout, ms: sluice `defaults.timeouts.total`, nginx proxy_read_timeout, undici headersTimeout. */
  timeoutMs?: number;
  /** Most upstream connections of fastify's undici pool (its default is 128). */
  fastifyConnections?: number;
  /** Sluice access_log setting (default off, like nginx's). */
  sluiceAccessLog?: string;
  /** A command the Node contenders run under (e.g. valgrind and its flags); nginx ignores it. */
  wrapper?: string[];
  /** How long to wait for the contender to proxy its first request (default 15 s). */
  readyTimeoutMs?: number;
  /** V8/Node flags for the bare and fastify proxies (Sluice always runs with SLUICE_NODE_FLAGS). */
  nodeFlags?: string[];
  /**
   * Terminate TLS with this certificate (bare and sluice only): HTTP/1.1 and h2 by ALPN on one port,
   * the URL becomes https://localhost:PORT.
   */
  tls?: BenchCert;
}

export interface BenchCert {
  readonly cert: string;
  readonly key: string;
}

/** A throw-away P-256 ECDSA certificate for localhost in `dir` (TLS 1.3 with both sides' defaults). */
export function makeBenchCert(dir: string): BenchCert {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '2',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost',
    ],
    { stdio: 'ignore' },
  );
  return { cert, key };
}

/** Waits until `url/small` answers 200 over curl (TLS without verification: a bench certificate). */
export async function waitReadyTls(url: string, proc: Proc, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exited) throw new Error(`${proc.name} ${proc.exitInfo}: ${proc.logTail()}`);
    try {
      const out = execFileSync('curl', ['-sk', '-o', '/dev/null', '-w', '%{http_code}', `${url}/small`], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      if (out === '200') return;
    } catch {}
    await sleep(100);
  }
  throw new Error(`${proc.name} did not answer ${url}/small`);
}

export const SLUICE_MAIN = path.join(ROOT, 'src', 'cli', 'main.ts');

export function sluiceYaml(
  port: number,
  adminPort: number,
  upstream: string,
  accessLog: string,
  timeoutMs?: number,
  tls?: BenchCert,
) {
  // `total` only, as a user would write it; ttfb too when it must go past its 30 s default.
  const ttfb = timeoutMs !== undefined && timeoutMs > 30_000 ? `, ttfb: ${timeoutMs}ms` : '';
  const t = timeoutMs === undefined ? '' : `defaults: { timeouts: { total: ${timeoutMs}ms${ttfb} } }\n`;
  const listen = tls
    ? `[{ address: "127.0.0.1:${port}", tls: { cert: "${tls.cert}", key: "${tls.key}" } }]`
    : `127.0.0.1:${port}`;
  return `listen: ${listen}
admin: { listen: 127.0.0.1:${adminPort} }
access_log: ${accessLog}
${t}upstreams:
  up: { targets: [${upstream}] }
routes:
  - { name: all, match: { path: / }, upstream: up }
`;
}

function spawnNode(name: string, args: string[], logFile: string, wrapper: string[] = []): Proc {
  const [cmd, ...pre] = wrapper.length > 0 ? wrapper : [NODE];
  return spawnPinned(name, PROXY_CORE, cmd!, wrapper.length > 0 ? [...pre, NODE, ...args] : args, {
    logFile,
  });
}

/**
 * Starts one contender pinned to the proxy core and waits until it proxies `readyPath` with a 200.
 * Throws (after stopping what it started) if it cannot start.
 */
export async function startContender(
  name: ContenderName,
  tmp: string,
  upstream: string,
  readyPath: string,
  opts: ContenderOptions = {},
): Promise<Contender> {
  if (name === 'direct') return { name, url: upstream, proc: null, stop: async () => {} };
  const dir = path.join(tmp, name);
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const tls = opts.tls;
  if (tls !== undefined && name !== 'bare' && name !== 'sluice')
    throw new Error(`${name}: TLS is set up for bare and sluice only here (bench/macro/tls.ts has nginx)`);
  const url = tls ? `https://localhost:${port}` : `http://127.0.0.1:${port}`;
  const logFile = path.join(dir, 'out.log');
  let proc: Proc;
  if (name === 'nginx') {
    const t = opts.timeoutMs === undefined ? '' : `proxy_read_timeout ${opts.timeoutMs}ms;`;
    const extra = `upstream up {
    server ${upstream.replace('http://', '')};
    keepalive 64;
    keepalive_requests 1000000;
  }`;
    const body = `    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      ${t}
    }`;
    proc = startNginx('nginx', PROXY_CORE, dir, nginxConf(dir, port, body, extra));
  } else if (name === 'sluice') {
    if (!existsSync(SLUICE_MAIN)) throw new Error(`${path.relative(ROOT, SLUICE_MAIN)} does not exist yet`);
    const file = path.join(dir, 'sluice.yaml');
    const accessLog = opts.sluiceAccessLog ?? 'off';
    writeFileSync(file, sluiceYaml(port, await freePort(), upstream, accessLog, opts.timeoutMs, tls));
    const args = [...SLUICE_NODE_FLAGS, SLUICE_MAIN, 'start', '-c', file];
    proc = spawnNode('sluice', args, logFile, opts.wrapper);
  } else {
    const script = path.join(
      import.meta.dirname,
      'contenders',
      `${name === 'bare' ? 'bare' : 'fastify'}-proxy.ts`,
    );
    const args = [...(opts.nodeFlags ?? []), script, '--port', String(port), '--upstream', upstream];
    if (opts.timeoutMs !== undefined) args.push('--timeout-ms', String(opts.timeoutMs));
    if (name === 'fastify' && opts.fastifyConnections)
      args.push('--connections', String(opts.fastifyConnections));
    if (tls) args.push('--cert', tls.cert, '--key', tls.key);
    proc = spawnNode(name, args, logFile, opts.wrapper);
  }
  try {
    if (tls) await waitReadyTls(url, proc, opts.readyTimeoutMs);
    else await waitReady(`${url}${readyPath}`, proc, opts.readyTimeoutMs);
  } catch (err) {
    await proc.stop();
    const tail = proc.logTail(600);
    throw new Error(
      `${(err as Error).message}${tail ? `\n    log: ${tail.replaceAll('\n', '\n         ')}` : ''}`,
    );
  }
  return { name, url, proc, stop: () => proc.stop() };
}

// ---------------------------------------------------------------------------------------------------------
// Statistics and formatting

export function median(xs: number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Percentile (0..100) of an ascending-sorted array, nearest-rank. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export function fmtUs(us: number): string {
  if (!Number.isFinite(us)) return '–';
  if (Math.abs(us) >= 1e6) return `${(us / 1e6).toFixed(2)} s`;
  if (Math.abs(us) >= 1e3) return `${(us / 1e3).toFixed(2)} ms`;
  return `${us.toFixed(0)} µs`;
}

export function fmtInt(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–';
}

/** A Markdown table, padded the way Biome formats Markdown (so it can be pasted into docs/ as is). */
export function mdTable(head: string[], rows: string[][], align?: ('l' | 'r')[]): string {
  const right = (i: number) => (align?.[i] ?? 'l') === 'r';
  const width = head.map((h, i) => Math.max(3, h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    `| ${r.map((c, i) => (right(i) ? c.padStart(width[i]) : c.padEnd(width[i]))).join(' | ')} |`;
  const sep = `| ${width.map((w, i) => (right(i) ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w))).join(' | ')} |`;
  return [line(head), sep, ...rows.map(line)].join('\n');
}

/** Comma list from a flag, validated against `allowed`. */
export function listFlag<T extends string>(
  value: string | undefined,
  allowed: readonly T[],
  flag: string,
): T[] {
  if (!value) return [...allowed];
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const i of items) {
    if (!allowed.includes(i as T)) throw new Error(`${flag}: unknown '${i}' (one of ${allowed.join(', ')})`);
  }
  return items as T[];
}

// ---------------------------------------------------------------------------------------------------------
// Added for failover.ts, async.ts and observability.ts

/** A sluice process started by `startSluiceWith`. */
export interface SluiceProc {
  url: string;
  adminUrl: string;
  proc: Proc;
  /** Its own directory in the temp dir (config, logs). */
  dir: string;
  /** Its stdout + stderr: the operational log (pino JSON lines), and the access log if `stdout`. */
  logFile: string;
  stop(): Promise<void>;
}

/**
 * Starts `sluice start -c <yaml>` pinned to the proxy core with a config written by `yaml(port, adminPort,
 * dir)` and extra environment variables, and waits until `GET readyPath` through it answers 200.
 * Throws (after stopping it, with the tail of its log) if it cannot start.
 */
export async function startSluiceWith(
  tmp: string,
  name: string,
  yaml: (port: number, adminPort: number, dir: string) => string,
  opts: { env?: Record<string, string>; readyPath?: string; core?: number } = {},
): Promise<SluiceProc> {
  if (!existsSync(SLUICE_MAIN)) throw new Error(`${path.relative(ROOT, SLUICE_MAIN)} does not exist yet`);
  const dir = path.join(tmp, name);
  mkdirSync(dir, { recursive: true });
  const [port, adminPort] = [await freePort(), await freePort()];
  const file = path.join(dir, 'sluice.yaml');
  writeFileSync(file, yaml(port, adminPort, dir));
  const logFile = path.join(dir, 'out.log');
  const proc = spawnPinned(
    name,
    opts.core ?? PROXY_CORE,
    NODE,
    [...SLUICE_NODE_FLAGS, SLUICE_MAIN, 'start', '-c', file],
    {
      logFile,
      env: { ...process.env, ...opts.env },
    },
  );
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitReady(`${url}${opts.readyPath ?? '/'}`, proc);
  } catch (err) {
    await proc.stop();
    const tail = proc.logTail(600);
    throw new Error(
      `${name}: ${(err as Error).message}${tail ? `\n    log: ${tail.replaceAll('\n', '\n         ')}` : ''}`,
    );
  }
  return { url, adminUrl: `http://127.0.0.1:${adminPort}`, proc, dir, logFile, stop: () => proc.stop() };
}

/** What `fixedRateLoad` needs of an undici Pool (or Client, Agent…). */
export interface RequestDispatcher {
  request(opts: {
    path: string;
    method: 'GET';
    headers?: Record<string, string>;
    headersTimeout?: number;
    bodyTimeout?: number;
  }): Promise<{ statusCode: number; body: { dump(opts?: { limit?: number }): Promise<void> } }>;
}

export interface FixedRateLoad {
  /** `performance.now()` at which request 0 was scheduled. */
  t0: number;
  sent: number;
  /** Per request, in issue order: when it was issued, ms after t0. */
  issuedMs: Float64Array;
  /** Per request: from issue to the end of the response (or the error), µs. */
  latUs: Float64Array;
  /** Per request: how late it was issued against its schedule, µs. */
  lagUs: Float64Array;
  /** Per request: the HTTP status, 0 for a socket error or client timeout. */
  status: Uint16Array;
  achievedRate: number;
}

/**
 * Open-loop fixed-rate GETs (the generator of added-latency.ts, with per-request results): `rate` requests/s
 * for `seconds`, issued on schedule whatever the server does, through `dispatcher` (a Pool bounds the
 * connections; time queued for one counts as latency). `startAt` (a `performance.now()` time, default
 * now + 5 ms) lets the caller schedule other actions against the same clock. Each request's body is read
 * and dropped; `timeoutMs` (default 10 s) bounds headers and body, a request over it counts as status 0.
 */
export async function fixedRateLoad(
  dispatcher: RequestDispatcher,
  opts: {
    path: string;
    rate: number;
    seconds: number;
    startAt?: number;
    timeoutMs?: number;
    headers?: Record<string, string>;
  },
): Promise<FixedRateLoad> {
  const total = Math.round(opts.rate * opts.seconds);
  const every = 1000 / opts.rate;
  const timeout = opts.timeoutMs ?? 10_000;
  const issued = new Float64Array(total);
  const lat = new Float64Array(total);
  const lag = new Float64Array(total);
  const status = new Uint16Array(total);
  const t0 = opts.startAt ?? performance.now() + 5;
  let finished = 0;
  let lastDone = t0;
  if (total > 0)
    await new Promise<void>((resolve) => {
      let i = 0;
      const fire = (k: number, scheduled: number) => {
        const at = performance.now();
        issued[k] = at - t0;
        lag[k] = (at - scheduled) * 1000;
        dispatcher
          .request({
            path: opts.path,
            method: 'GET',
            headers: opts.headers,
            headersTimeout: timeout,
            bodyTimeout: timeout,
          })
          .then(async (res) => {
            await res.body.dump({ limit: 1 << 20 });
            status[k] = res.statusCode;
          })
          .catch(() => {
            status[k] = 0;
          })
          .finally(() => {
            lastDone = performance.now();
            lat[k] = (lastDone - at) * 1000;
            if (++finished === total) resolve();
          });
      };
      const tick = () => {
        const now = performance.now();
        while (i < total && t0 + i * every <= now) fire(i, t0 + i++ * every);
        if (i < total) setTimeout(tick, 1);
      };
      setTimeout(tick, Math.max(0, t0 - performance.now()));
    });
  return {
    t0,
    sent: total,
    issuedMs: issued,
    latUs: lat,
    lagUs: lag,
    status,
    achievedRate: total / ((lastDone - t0) / 1000),
  };
}

/** Ascending copy of a typed array (for `percentile`). */
export function sortedCopy(xs: Float64Array | number[]): Float64Array {
  return Float64Array.from(xs).sort();
}

/**
 * Node's `--inspect` flag for a child (through `NODE_OPTIONS`), so `inspectorGcAndMemory` can force a full
 * GC in it: Node's RSS otherwise carries garbage not yet collected, which blurs per-item memory figures.
 */
export const inspectEnv = (port: number) => ({ NODE_OPTIONS: `--inspect=127.0.0.1:${port}` });

/**
 * Through the inspector of a Node process started with `inspectEnv(port)`: runs two full GCs, then returns
 * its `process.memoryUsage()` (bytes: rss, heapTotal, heapUsed, external, arrayBuffers).
 */
export async function inspectorGcAndMemory(port: number): Promise<Record<string, number>> {
  const list = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as {
    webSocketDebuggerUrl: string;
  }[];
  const ws = new WebSocket(list[0].webSocketDebuggerUrl);
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error(`inspector on port ${port}: cannot connect`));
  });
  let id = 0;
  const pending = new Map<number, (r: { result?: { result?: { value?: unknown } } }) => void>();
  ws.onmessage = (ev) => {
    const msg = JSON.parse(String(ev.data)) as { id?: number };
    if (msg.id !== undefined) pending.get(msg.id)?.(msg as never);
  };
  const call = (method: string, params: Record<string, unknown> = {}) =>
    new Promise<{ result?: { result?: { value?: unknown } } }>((resolve, reject) => {
      const n = ++id;
      const t = setTimeout(() => reject(new Error(`inspector ${method}: no answer`)), 30_000);
      pending.set(n, (r) => {
        clearTimeout(t);
        resolve(r);
      });
      ws.send(JSON.stringify({ id: n, method, params }));
    });
  try {
    await call('HeapProfiler.collectGarbage');
    await call('HeapProfiler.collectGarbage');
    const r = await call('Runtime.evaluate', {
      expression: 'JSON.stringify(process.memoryUsage())',
      returnByValue: true,
    });
    return JSON.parse(String(r.result?.result?.value)) as Record<string, number>;
  } finally {
    ws.close();
  }
}

/** `sluice demo-upstream` as its own process (not pinned) on a free port, once it answers /fast. */
export async function startDemoUpstreamProcess(tmp: string): Promise<{ proc: Proc; url: string }> {
  const port = await freePort();
  const proc = spawnPinned(
    'demo-upstream',
    null,
    NODE,
    [SLUICE_MAIN, 'demo-upstream', '--port', String(port)],
    {
      logFile: path.join(tmp, 'upstream.log'),
    },
  );
  const url = `http://127.0.0.1:${port}`;
  await waitReady(`${url}/fast`, proc);
  return { proc, url };
}
