/**
 * Slow and abusive clients (issue 14, docs/reliability.md#slow-and-abusive-clients), full size: a real
 * `sluice start` child in front of a real `sluice demo-upstream` child.
 *
 * 1. A well-behaved client (2 keep-alive connections, `GET /fast` every 10 ms on each) measures its latency
 *    unloaded, then during each slowhttptest attack (slowloris `-H`, slow body `-B`, slow read `-X`),
 *    kept up for the whole window; p50/p99, the p99 ratio and the gateway's peak RSS per attack.
 * 2. Probes of each attack's shape on raw sockets time when the client timeouts cut them:
 *    `client.header_timeout`, `client.body_idle_timeout`, the route's `total` for a body that trickles,
 *    `client.send_timeout` (from the access log).
 * 3. 10,000 idle keep-alive connections plus 2,000 requests hanging at the upstream: RSS per
 *    connection, that the idle ones stay open, and when each hanging request got its 504.
 *
 *   node scripts/slow-clients.ts [--connections 2000] [--seconds 30] [--idle 10000] [--hanging 2000]
 *                                [--only loris,body,read,read64k,idle] [--json out.json]
 *                                [--gateway sluice|nginx]
 *   (with --gateway nginx, NGINX_REQUEST_BUFFERING=on buffers request bodies, nginx's default)
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  freePort,
  log,
  makeTmpDir,
  NODE,
  nginxConf,
  SLUICE_MAIN,
  SLUICE_NODE_FLAGS,
  sleep,
  spawnPinned,
  startDemoUpstreamProcess,
  startNginx,
  waitReady,
} from '../bench/macro/lib.ts';
import {
  type Cut,
  goodClient,
  hangingRequests,
  hasSlowhttptest,
  idleConnections,
  percentile,
  raiseOpenFiles,
  rssKiB,
  rssPeak,
  slowBodyProbes,
  slowhttptest,
  slowlorisProbes,
  slowReadProbes,
  stillOpen,
} from '../test/reliability/abusive-clients.ts';

const { values: args } = parseArgs({
  options: {
    connections: { type: 'string', default: '2000' },
    seconds: { type: 'string', default: '30' },
    idle: { type: 'string', default: '10000' },
    hanging: { type: 'string', default: '2000' },
    only: { type: 'string', default: 'loris,body,read,read64k,idle' },
    gateway: { type: 'string', default: 'sluice' },
    json: { type: 'string' },
  },
});
const C = Number(args.connections);
const SECONDS = Number(args.seconds);
const IDLE = Number(args.idle);
const HANGING = Number(args.hanging);
const ONLY = new Set((args.only as string).split(','));

// The gateway's client limits (shorter than the defaults so that a run takes minutes, not hours).
const HEADER_TIMEOUT = 5_000;
const BODY_IDLE = 5_000;
const SEND_TIMEOUT = 10_000;
const BODY_TOTAL = 15_000;
const HANG_TOTAL = 20_000;

function config(port: number, adminPort: number, upstream: string, dir: string): string {
  return `listen: 127.0.0.1:${port}
admin: { listen: 127.0.0.1:${adminPort} }
access_log: ${path.join(dir, 'access.log')}
shutdown_timeout: 2s
watch: false
client: { header_timeout: ${HEADER_TIMEOUT}ms, body_idle_timeout: ${BODY_IDLE}ms, send_timeout: ${SEND_TIMEOUT}ms, keepalive_timeout: 5m }
upstreams:
  demo: { targets: [${upstream}] }
routes:
  - { name: hang, match: { path: /hang }, upstream: demo, timeouts: { ttfb: ${HANG_TOTAL}ms, total: ${HANG_TOTAL}ms } }
  - { name: upload, match: { path: /echo }, upstream: demo, timeouts: { total: ${BODY_TOTAL}ms } }
  - { name: rest, match: { path: / }, upstream: demo, timeouts: { total: 60s } }
`;
}

/**
 * nginx with the same client limits in front of the same upstream (`--gateway nginx`), for comparison:
 * request bodies streamed as Sluice streams them (`proxy_request_buffering off`), upstream keep-alive.
 * Only the good client's figures and the attackers' are comparable; the probes expect Sluice's answers.
 */
function nginxConfig(dir: string, port: number, upstream: string): string {
  const s = (ms: number) => `${ms / 1000}s`;
  return nginxConf(
    dir,
    port,
    `    client_header_timeout ${s(HEADER_TIMEOUT)};
    client_body_timeout ${s(BODY_IDLE)};
    send_timeout ${s(SEND_TIMEOUT)};
    keepalive_timeout 5m;
    client_max_body_size 0;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_request_buffering ${process.env.NGINX_REQUEST_BUFFERING ?? 'off'};
    location /hang { proxy_pass http://demo; proxy_read_timeout ${s(HANG_TOTAL)}; }
    location / { proxy_pass http://demo; proxy_read_timeout 60s; }`,
    `upstream demo { server ${new URL(upstream).host}; keepalive 64; }`,
  );
}

/** The kernel's TCP memory in use (pages, /proc/net/sockstat) and its memory-pressure count so far. */
function tcpMemory(): { pages: number; pressures: number } {
  const pages = Number(/TCP: .* mem (\d+)/.exec(readFileSync('/proc/net/sockstat', 'utf8'))?.[1] ?? 0);
  const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n');
  const i = lines.findIndex((l) => l.startsWith('TcpExt:'));
  const names = lines[i].split(' ');
  const vals = lines[i + 1].split(' ');
  return { pages, pressures: Number(vals[names.indexOf('TCPMemoryPressures')] ?? 0) };
}

function tcpPeak(): { stop(): { peak_mib: number; pressures: number } } {
  const start = tcpMemory();
  let peak = start.pages;
  const timer = setInterval(() => (peak = Math.max(peak, tcpMemory().pages)), 250);
  return {
    stop() {
      clearInterval(timer);
      return { peak_mib: round((peak * 4) / 1024), pressures: tcpMemory().pressures - start.pressures };
    },
  };
}

const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
function cutFigures(cuts: Cut[]) {
  const ms = cuts.map((c) => c.ms).sort((a, b) => a - b);
  const statuses: Record<string, number> = {};
  for (const c of cuts) statuses[c.status] = (statuses[c.status] ?? 0) + 1;
  return {
    n: cuts.length,
    min_ms: round(ms[0]),
    p50_ms: round(percentile(ms, 50)),
    max_ms: round(ms.at(-1) ?? 0),
    statuses,
  };
}

async function main(): Promise<void> {
  if (!hasSlowhttptest()) throw new Error('slowhttptest not found: apt-get install slowhttptest');
  const nofile = raiseOpenFiles(65_536);
  const tmp = makeTmpDir();
  const { proc: upstream, url: upstreamUrl } = await startDemoUpstreamProcess(tmp);
  const [port, adminPort] = [await freePort(), await freePort()];
  const file = path.join(tmp, 'sluice.yaml');
  writeFileSync(file, config(port, adminPort, upstreamUrl, tmp));
  const nginxDir = path.join(tmp, 'nginx');
  const startGateway = async () => {
    const proc =
      args.gateway === 'nginx'
        ? startNginx('nginx', null, nginxDir, nginxConfig(nginxDir, port, upstreamUrl))
        : spawnPinned('sluice', null, NODE, [...SLUICE_NODE_FLAGS, SLUICE_MAIN, 'start', '-c', file], {
            logFile: path.join(tmp, 'gateway.log'),
          });
    await waitReady(`${url}/fast`, proc);
    return proc;
  };
  const url = `http://127.0.0.1:${port}`;
  let gw = await startGateway();
  log(
    `gateway pid ${gw.pid} on ${url} (open files ${nofile}); ${C} attack connections, ${SECONDS} s windows`,
  );
  const results: Record<string, unknown> = {
    command: `node scripts/slow-clients.ts --gateway ${args.gateway} --connections ${C} --seconds ${SECONDS} --idle ${IDLE} --hanging ${HANGING}`,
    started: new Date().toISOString(),
    client_limits_ms: {
      header_timeout: HEADER_TIMEOUT,
      body_idle_timeout: BODY_IDLE,
      send_timeout: SEND_TIMEOUT,
    },
  };

  // Warm-up, then the unloaded reference.
  await goodClient(url, { seconds: 3 });
  const rssIdle = rssKiB(gw.pid);
  const unloaded = await goodClient(url, { seconds: SECONDS });
  const { latencies: _u, ...unloadedFigures } = unloaded;
  results.unloaded = { ...unloadedFigures, rss_mib: round(rssIdle / 1024) };
  log(`unloaded: p50 ${unloaded.p50} ms, p99 ${unloaded.p99} ms (${unloaded.n} requests)`);

  const attacks: { name: string; path: string; args: string[]; probe: () => Promise<unknown> }[] = [
    {
      name: 'loris',
      path: '/fast',
      // One more header line every 2 s: only the whole-head deadline (header_timeout) cuts it.
      // 500 new connections/s: each lives header_timeout (5 s), so up to 2,500 are open at once.
      args: ['-H', '-c', String(C), '-i', '2', '-r', '500', '-x', '24', '-p', '3'],
      probe: async () => cutFigures(await slowlorisProbes(port, 20, 1_000, HEADER_TIMEOUT * 3)),
    },
    {
      name: 'body',
      path: '/echo',
      // 1–10 bytes of an 8 KB body every 2 s: under body_idle_timeout, so the route's total cuts it.
      args: [
        '-B',
        '-c',
        String(C),
        '-i',
        '2',
        '-r',
        '200',
        '-s',
        '8192',
        '-x',
        '10',
        '-t',
        'POST',
        '-p',
        '3',
      ],
      probe: async () => ({
        trickle: cutFigures(
          await slowBodyProbes(port, 20, {
            path: '/echo',
            contentLength: 1000,
            everyMs: 1_000,
            maxMs: BODY_TOTAL * 2,
          }),
        ),
        stop: cutFigures(
          await slowBodyProbes(port, 20, {
            path: '/echo',
            contentLength: 1000,
            everyMs: 100,
            stopAfter: 3,
            maxMs: BODY_IDLE * 3,
          }),
        ),
      }),
    },
    {
      name: 'read',
      path: '/size/1m',
      // A 512–1024 byte window, 32 bytes read every 5 s, 3 pipelined requests for 1 MiB each.
      args: [
        '-X',
        '-c',
        String(C),
        '-r',
        '200',
        '-w',
        '512',
        '-y',
        '1024',
        '-n',
        '5',
        '-z',
        '32',
        '-k',
        '3',
        '-p',
        '3',
      ],
      probe: async () => {
        await slowReadProbes(port, 20, {
          path: '/size/64m',
          idPrefix: 'slowread',
          holdMs: SEND_TIMEOUT + 5_000,
        });
        await sleep(1_000);
        if (args.gateway === 'nginx') return {}; // the figures come from Sluice's access log
        const ms = readFileSync(path.join(tmp, 'access.log'), 'utf8')
          .split('\n')
          .filter((l) => l.includes('"slowread-'))
          .map((l) => JSON.parse(l) as { total: number; error?: string })
          .map((e) => ({ ms: e.total, status: e.error === 'client-send-timeout' ? 1 : 0, body: '' }));
        return {
          ...cutFigures(ms),
          note: 'status 1 = error client-send-timeout in the access log; ms = its total',
        };
      },
    },
  ];
  // The same slow read for 64 KiB responses: what is parked per connection is what makes the difference.
  const read = attacks.find((a) => a.name === 'read');
  if (read) attacks.push({ ...read, name: 'read64k', path: '/size/64k', probe: async () => ({}) });
  for (const a of attacks) {
    if (!ONLY.has(a.name)) continue;
    const target = `${url}${a.path}`;
    const rssBefore = rssKiB(gw.pid);
    const peak = rssPeak(gw.pid);
    const tcp = tcpPeak();
    const attack = slowhttptest(target, a.args, SECONDS + C / 200 + 5);
    await sleep((C / 200) * 1000 + 2_000); // the attack's ramp-up
    const [good, probe] = await Promise.all([goodClient(url, { seconds: SECONDS }), a.probe()]);
    attack.stop();
    const run = await attack.done;
    const peakKiB = peak.stop();
    const kernel = tcp.stop();
    const { latencies: _l, ...goodFigures } = good;
    results[a.name] = {
      good: goodFigures,
      p99_ratio: round(good.p99 / unloaded.p99, 2),
      rss_before_mib: round(rssBefore / 1024),
      rss_peak_mib: round(peakKiB / 1024),
      attacker: { runs: run.runs, max_connected: run.maxConnected },
      kernel_tcp: kernel,
      probes: probe,
    };
    log(`${a.name}: ${JSON.stringify(results[a.name])}`);
    await sleep(5_000);
  }

  if (ONLY.has('idle')) {
    // A fresh gateway: memory freed after the attacks would hide what the idle connections cost.
    await gw.stop();
    gw = await startGateway();
    await goodClient(url, { seconds: 3 });
    const before = rssKiB(gw.pid);
    const peak = rssPeak(gw.pid);
    const t = performance.now();
    const idle = await idleConnections(port, IDLE);
    log(`${IDLE} idle connections open in ${round((performance.now() - t) / 1000)} s`);
    await sleep(2_000);
    const withIdle = rssKiB(gw.pid);
    const hung = hangingRequests(port, HANGING, '/hang');
    await sleep(HANG_TOTAL / 2);
    const withHanging = rssKiB(gw.pid);
    const good = await goodClient(url, { seconds: 5 });
    const answers = await hung;
    const peakKiB = peak.stop();
    const open = stillOpen(idle);
    for (const s of idle) s.destroy();
    const late = answers
      .filter((h) => h.status === 504)
      .map((h) => h.ms - HANG_TOTAL)
      .sort((a, b) => a - b);
    const bodyLate = answers
      .filter((h) => h.elapsed_ms !== undefined)
      .map((h) => (h.elapsed_ms as number) - HANG_TOTAL)
      .sort((a, b) => a - b);
    const statuses: Record<string, number> = {};
    for (const h of answers)
      statuses[`${h.status}${h.phase ? ` ${h.phase}` : ''}`] =
        (statuses[`${h.status}${h.phase ? ` ${h.phase}` : ''}`] ?? 0) + 1;
    const { latencies: _g, ...goodFigures } = good;
    results.idle = {
      idle: IDLE,
      hanging: HANGING,
      rss_before_mib: round(before / 1024),
      rss_with_idle_mib: round(withIdle / 1024),
      rss_with_hanging_mib: round(withHanging / 1024),
      rss_peak_mib: round(peakKiB / 1024),
      kib_per_idle_connection: round((withIdle - before) / IDLE, 2),
      kib_per_hanging_request: round((withHanging - withIdle) / HANGING, 2),
      idle_still_open: open,
      hanging_statuses: statuses,
      lateness_client_ms: {
        min: round(late[0]),
        p50: round(percentile(late, 50)),
        p99: round(percentile(late, 99)),
        max: round(late.at(-1) ?? 0),
      },
      lateness_gateway_ms: {
        min: bodyLate[0],
        p50: percentile(bodyLate, 50),
        p99: percentile(bodyLate, 99),
        max: bodyLate.at(-1),
      },
      good_meanwhile: goodFigures,
    };
    log(`idle: ${JSON.stringify(results.idle)}`);
  }
  await gw.stop();
  await upstream.stop();
  if (args.json) writeFileSync(args.json, JSON.stringify(results, null, 1));
  console.log(JSON.stringify(results, null, 2));
}

await main();
