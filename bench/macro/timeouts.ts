/**
 * Timeout and memory benchmark against a hanging upstream. See bench/README.md.
 *
 * 1. Lateness burst: each proxy has a 2 s upstream timeout (sluice `defaults.timeouts.total`, nginx
 *    `proxy_read_timeout`, undici `headersTimeout` for bare/fastify); 2,000 requests to /hang are sent evenly
 *    over 2 s, each on its own pre-opened connection; lateness = (504 arrival − send) − 2,000 ms.
 * 2. RSS: (a) 5,000 idle keep-alive client connections (each sent one GET /small, got its answer and stays
 *    open) → KiB per connection; (b) 2,000 in-flight requests to /hang (timeout 60 s) → KiB per request.
 *
 *   node bench/macro/timeouts.ts [--contenders sluice,nginx,bare,fastify] [--tests lateness,rss]
 *        [--requests 2000] [--spread 2000] [--timeout 2000] [--idle 5000] [--inflight 2000] [--json FILE]
 */
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  type Contender,
  type ContenderName,
  fmtInt,
  freePort,
  LOAD_CORE,
  listFlag,
  log,
  machineInfo,
  makeTmpDir,
  mdTable,
  NODE,
  PROXY_CORE,
  percentile,
  pinSelf,
  raiseNofile,
  requireTools,
  sleep,
  spawnPinned,
  startContender,
  treeRssKiB,
  waitReady,
  wrk,
} from './lib.ts';

const PROXIES = ['sluice', 'nginx', 'bare', 'fastify'] as const;
const TESTS = ['lateness', 'rss'] as const;
const { values: flags } = parseArgs({
  options: {
    contenders: { type: 'string' },
    tests: { type: 'string' },
    requests: { type: 'string', default: '2000' },
    spread: { type: 'string', default: '2000' },
    timeout: { type: 'string', default: '2000' },
    idle: { type: 'string', default: '5000' },
    inflight: { type: 'string', default: '2000' },
    json: { type: 'string' },
  },
});
const proxies = listFlag(flags.contenders, PROXIES, '--contenders');
const tests = listFlag(flags.tests, TESTS, '--tests');
const nRequests = Number(flags.requests);
const spreadMs = Number(flags.spread);
const timeoutMs = Number(flags.timeout);
const nIdle = Number(flags.idle);
const nInflight = Number(flags.inflight);
const TIMEOUT_KIND: Record<string, string> = {
  sluice: 'defaults.timeouts.total',
  nginx: 'proxy_read_timeout',
  bare: 'undici headersTimeout',
  fastify: 'undici headersTimeout',
};
// Fastify's undici pool defaults to 128 connections: raise it so every request reaches the upstream.
const FASTIFY_CONNECTIONS = 8192;

requireTools(['nginx', 'wrk', 'taskset', 'prlimit']);
raiseNofile(2 * Math.max(nIdle, nInflight, nRequests) + 2000);
pinSelf(LOAD_CORE);
const tmp = makeTmpDir();
const machine = machineInfo();
log(`cpu ${machine.cpu}; node ${machine.node}; nginx ${machine.nginx}`);

// The hanging upstream, on the load core with this process.
const upPort = await freePort();
const upstreamUrl = `http://127.0.0.1:${upPort}`;
const hangScript = path.join(import.meta.dirname, 'contenders', 'hang-upstream.ts');
const upProc = spawnPinned('hang-upstream', LOAD_CORE, NODE, [hangScript, '--port', String(upPort)], {
  logFile: path.join(tmp, 'hang-upstream.log'),
});
await waitReady(`${upstreamUrl}/small`, upProc);
const upStats = async () => {
  const r = await fetch(`${upstreamUrl}/__stats`);
  return (await r.json()) as { pending: number; received: number };
};
const release = async () => (await fetch(`${upstreamUrl}/__release`)).json();

// ---------------------------------------------------------------------------------------------------------
// Raw HTTP/1.1 client connections (one request each; kept open afterwards)

interface Conn {
  sock: net.Socket;
  closed: boolean;
}

async function openConns(url: string, n: number): Promise<Conn[]> {
  const { port } = new URL(url);
  const conns: Conn[] = [];
  const BATCH = 250;
  for (let i = 0; i < n; i += BATCH) {
    const batch = Array.from(
      { length: Math.min(BATCH, n - i) },
      () =>
        new Promise<Conn>((resolve, reject) => {
          const sock = net.connect(Number(port), '127.0.0.1');
          const c: Conn = { sock, closed: false };
          sock.once('connect', () => resolve(c));
          sock.once('error', reject);
          sock.once('close', () => (c.closed = true));
        }),
    );
    conns.push(...(await Promise.all(batch)));
  }
  for (const c of conns) c.sock.on('error', () => {});
  return conns;
}

interface Answer {
  status: number; // 0: connection closed (or timed out) without a response
  sentAt: number;
  firstByteAt: number;
}

/** Writes `GET path` on the connection; resolves when the whole response (or an error/close) arrived. */
function send(c: Conn, reqPath: string, waitMs: number): Promise<Answer> {
  return new Promise((resolve) => {
    const a: Answer = { status: 0, sentAt: performance.now(), firstByteAt: Number.NaN };
    let buf = Buffer.alloc(0);
    let need = -1;
    const done = () => {
      c.sock.off('data', onData);
      c.sock.off('close', done);
      clearTimeout(timer);
      resolve(a);
    };
    const onData = (chunk: Buffer) => {
      if (Number.isNaN(a.firstByteAt)) a.firstByteAt = performance.now();
      buf = Buffer.concat([buf, chunk]);
      if (need < 0) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        a.status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
        const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        need = end + 4 + (cl ? Number(cl[1]) : 0);
        if (!cl && /\r\ntransfer-encoding:\s*chunked/i.test(head)) need = Number.POSITIVE_INFINITY;
      }
      if (
        buf.length >= need ||
        (need === Number.POSITIVE_INFINITY && buf.subarray(-5).toString() === '0\r\n\r\n')
      ) {
        done();
      }
    };
    const timer = setTimeout(done, waitMs);
    c.sock.on('data', onData);
    c.sock.once('close', done);
    c.sock.write(`GET ${reqPath} HTTP/1.1\r\nHost: bench\r\n\r\n`);
  });
}

function closeAll(conns: Conn[]): void {
  for (const c of conns) c.sock.destroy();
}

async function start(name: ContenderName, timeout: number): Promise<Contender | null> {
  try {
    return await startContender(name, tmp, upstreamUrl, '/small', {
      timeoutMs: timeout,
      fastifyConnections: FASTIFY_CONNECTIONS,
    });
  } catch (err) {
    log(`SKIP ${name}: ${(err as Error).message}`);
    return null;
  }
}

// ---------------------------------------------------------------------------------------------------------
// 1. Lateness of the 504s

interface Lateness {
  contender: string;
  timeout: string;
  requests: number;
  got504: number;
  non504: number;
  otherStatuses: Record<string, number>;
  p50ms: number;
  p99ms: number;
  maxMs: number;
}

async function lateness(name: ContenderName): Promise<Lateness | null> {
  const c = await start(name, timeoutMs);
  if (!c) return null;
  await release();
  const conns = await openConns(c.url, nRequests);
  await sleep(200);
  const answers: Promise<Answer>[] = [];
  const t0 = performance.now() + 10;
  const every = spreadMs / nRequests;
  await new Promise<void>((resolve) => {
    let i = 0;
    const tick = () => {
      const now = performance.now();
      while (i < nRequests && t0 + i * every <= now)
        answers.push(send(conns[i++], '/hang', timeoutMs + 15_000));
      if (i < nRequests) setTimeout(tick, 1);
      else resolve();
    };
    setTimeout(tick, 1);
  });
  const got = await Promise.all(answers);
  closeAll(conns);
  const late = got
    .filter((a) => a.status === 504)
    .map((a) => a.firstByteAt - a.sentAt - timeoutMs)
    .sort((a, b) => a - b);
  const other: Record<string, number> = {};
  for (const a of got) if (a.status !== 504) other[a.status || 'none'] = (other[a.status || 'none'] ?? 0) + 1;
  await c.stop();
  await release();
  const r: Lateness = {
    contender: name,
    timeout: `${TIMEOUT_KIND[name]} ${timeoutMs} ms`,
    requests: nRequests,
    got504: late.length,
    non504: nRequests - late.length,
    otherStatuses: other,
    p50ms: percentile(late, 50),
    p99ms: percentile(late, 99),
    maxMs: late.length ? late[late.length - 1] : Number.NaN,
  };
  log(
    `lateness ${name}: ${r.got504} × 504, ${r.non504} other ${JSON.stringify(other)}; ` +
      `p50 ${r.p50ms.toFixed(1)} ms, p99 ${r.p99ms.toFixed(1)} ms, max ${r.maxMs.toFixed(1)} ms`,
  );
  return r;
}

// ---------------------------------------------------------------------------------------------------------
// 2. Memory per idle connection and per in-flight request

interface Rss {
  contender: string;
  idleBaseKiB: number;
  idleKiB: number;
  idleOpen: number;
  kibPerConn: number;
  inflightBaseKiB: number;
  inflightKiB: number;
  inflight: number;
  kibPerInflight: number;
}

async function warmAndBaseline(c: Contender): Promise<number> {
  await wrk(`${c.url}/small`, 16, 2, path.join(tmp, 'wrk.log'));
  await sleep(1500);
  return treeRssKiB(c.proc!.pid);
}

async function rss(name: ContenderName): Promise<Rss | null> {
  // (a) idle keep-alive connections
  let c = await start(name, 60_000);
  if (!c) return null;
  const idleBaseKiB = await warmAndBaseline(c);
  const conns = await openConns(c.url, nIdle);
  const answers = await Promise.all(conns.map((k) => send(k, '/small', 10_000)));
  const bad = answers.filter((a) => a.status !== 200).length;
  await sleep(1000);
  const idleKiB = treeRssKiB(c.proc!.pid);
  const idleOpen = conns.filter((k) => !k.closed).length;
  closeAll(conns);
  await c.stop();
  if (bad) log(`rss ${name}: ${bad} of ${nIdle} GET /small did not answer 200`);

  // (b) in-flight requests on a hanging upstream (fresh process)
  c = await start(name, 60_000);
  if (!c) return null;
  await release();
  const inflightBaseKiB = await warmAndBaseline(c);
  const held = await openConns(c.url, nInflight);
  for (const k of held) void send(k, '/hang', 120_000);
  const deadline = Date.now() + 15_000;
  let inflight = 0;
  while (Date.now() < deadline && (inflight = (await upStats()).pending) < nInflight) await sleep(200);
  await sleep(1000);
  inflight = (await upStats()).pending;
  const inflightKiB = treeRssKiB(c.proc!.pid);
  closeAll(held);
  await c.stop();
  await release();
  const r: Rss = {
    contender: name,
    idleBaseKiB,
    idleKiB,
    idleOpen,
    kibPerConn: (idleKiB - idleBaseKiB) / idleOpen,
    inflightBaseKiB,
    inflightKiB,
    inflight,
    kibPerInflight: (inflightKiB - inflightBaseKiB) / inflight,
  };
  log(
    `rss ${name}: base ${fmtInt(idleBaseKiB)} KiB, ${idleOpen} idle conns → ${fmtInt(idleKiB)} KiB ` +
      `(${r.kibPerConn.toFixed(1)} KiB/conn); base ${fmtInt(inflightBaseKiB)} KiB, ${inflight} in flight → ` +
      `${fmtInt(inflightKiB)} KiB (${r.kibPerInflight.toFixed(1)} KiB/request)`,
  );
  return r;
}

// ---------------------------------------------------------------------------------------------------------

const late: Lateness[] = [];
const mem: Rss[] = [];
for (const name of proxies) {
  if (tests.includes('lateness')) {
    const r = await lateness(name);
    if (r) late.push(r);
  }
  if (tests.includes('rss')) {
    const r = await rss(name);
    if (r) mem.push(r);
  }
}

const ms = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '–');
const out = [
  '',
  `Machine: ${machine.cpu}; ${machine.kernel}; Node ${machine.node}; nginx ${machine.nginx}. Proxy on core ` +
    `${PROXY_CORE}; hanging upstream (node:http) and this client on core ${LOAD_CORE}.`,
  '',
];
if (late.length) {
  out.push(
    `504 lateness: ${nRequests} requests to a never-answering upstream, sent evenly over ${spreadMs} ms, each on its ` +
      `own pre-opened connection; lateness = time from send to the 504's first byte − ${timeoutMs} ms.`,
    '',
    mdTable(
      ['contender', 'timeout', '504s', 'non-504', 'p50 lateness', 'p99 lateness', 'max lateness'],
      late.map((r) => [
        r.contender,
        r.timeout,
        String(r.got504),
        r.non504 ? `${r.non504} ${JSON.stringify(r.otherStatuses)}` : '0',
        `${ms(r.p50ms)} ms`,
        `${ms(r.p99ms)} ms`,
        `${ms(r.maxMs)} ms`,
      ]),
      ['l', 'l', 'r', 'r', 'r', 'r', 'r'],
    ),
    '',
  );
}
if (mem.length) {
  out.push(
    `Memory (VmRSS of the proxy, all its processes): idle = ${nIdle} keep-alive client connections that each ` +
      `sent one GET /small, got the answer and stay open; in flight = ${nInflight} requests held by the upstream. ` +
      `Each part starts a fresh proxy and takes its baseline after a 2 s wrk warm-up.`,
    '',
    mdTable(
      [
        'contender',
        'baseline',
        'with idle conns',
        'KiB / idle conn',
        'baseline',
        'with in-flight',
        'KiB / in-flight',
      ],
      mem.map((r) => [
        r.contender,
        `${fmtInt(r.idleBaseKiB)} KiB`,
        `${fmtInt(r.idleKiB)} KiB (${r.idleOpen} open)`,
        r.kibPerConn.toFixed(1),
        `${fmtInt(r.inflightBaseKiB)} KiB`,
        `${fmtInt(r.inflightKiB)} KiB (${r.inflight} held)`,
        r.kibPerInflight.toFixed(1),
      ]),
      ['l', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
    '',
  );
}
console.log(out.join('\n'));
if (flags.json) {
  const settings = {
    nRequests,
    spreadMs,
    timeoutMs,
    nIdle,
    nInflight,
    fastifyConnections: FASTIFY_CONNECTIONS,
  };
  writeFileSync(flags.json, `${JSON.stringify({ machine, settings, lateness: late, rss: mem }, null, 2)}\n`);
  log(`wrote ${flags.json}`);
}
await upProc.stop();
