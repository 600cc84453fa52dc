/**
 * WebSocket tunnels (SPEC §3): what 1,000 open idle tunnels cost Sluice in memory (RSS per tunnel),
 * and the echo round trip at a fixed 1,000 messages/s, direct and through Sluice.
 *
 * The upstream is a minimal RFC 6455 echo server (this script with --upstream, on the load core);
 * Sluice runs on core 0; the clients are Node's own WebSocket (undici), in this process on the load
 * core. Round trips are measured by the client (performance.now() in the message), so both runs pay
 * the same client cost.
 *
 *   npx node bench/macro/websocket.ts [--tunnels 1000] [--rate 1000] [--seconds 10]
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import { createServer as createNetServer, connect as netConnect, type Socket } from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  freePort,
  LOAD_CORE,
  log,
  machineInfo,
  makeTmpDir,
  mdTable,
  NODE,
  PROXY_CORE,
  pinSelf,
  SLUICE_MAIN,
  SLUICE_NODE_FLAGS,
  sleep,
  spawnPinned,
  treeRssKiB,
  waitReady,
} from './lib.ts';

const { values: flags } = parseArgs({
  options: {
    tunnels: { type: 'string', default: '1000' },
    rate: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '10' },
    upstream: { type: 'string' },
    relay: { type: 'string' },
  },
});

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** The echo upstream: every text frame back, unmasked. */
function runUpstream(port: number): void {
  const server = createServer((_req, res) => res.end('ws here'));
  server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}${GUID}`).digest('base64');
    socket.setNoDelay(true);
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`,
    );
    let buf: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (buf.length >= 6) {
        const opcode = buf[0] & 0x0f;
        const len = buf[1] & 0x7f; // short messages only (< 126 bytes)
        if (buf.length < 6 + len) break;
        const mask = buf.subarray(2, 6);
        const data = Buffer.from(buf.subarray(6, 6 + len));
        for (let j = 0; j < data.length; j++) data[j] ^= mask[j % 4];
        buf = buf.subarray(6 + len);
        if (opcode === 0x1) socket.write(Buffer.concat([Buffer.from([0x81, data.length]), data]));
        else if (opcode === 0x8) socket.end(Buffer.from([0x88, 0x00]));
      }
    });
    socket.on('error', () => {});
  });
  server.listen(port, '127.0.0.1');
}

/** A bare TCP relay (no parsing, no timers): what any Node proxy in the middle costs here. */
function runRelay(port: number, to: number): void {
  createNetServer((client) => {
    client.setNoDelay(true);
    const up = netConnect({ host: '127.0.0.1', port: to, noDelay: true });
    client.pipe(up).pipe(client);
    const done = () => {
      client.destroy();
      up.destroy();
    };
    client.on('error', done).on('close', done);
    up.on('error', done).on('close', done);
  }).listen(port, '127.0.0.1');
}

if (flags.relay !== undefined) {
  const [port, to] = flags.relay.split(':').map(Number);
  runRelay(port, to);
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
} else if (flags.upstream !== undefined) {
  runUpstream(Number(flags.upstream));
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
} else {
  await main();
}

function open(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error(`cannot open ${url}`));
  });
}

/** Echo round trips at `rate` messages/s for `seconds`, on one socket: p50/p99/max in ms. */
async function echo(url: string, rate: number, seconds: number) {
  const ws = await open(url);
  const rtts: number[] = [];
  ws.onmessage = (ev) => rtts.push(performance.now() - Number(String(ev.data)));
  const total = rate * seconds;
  const t0 = performance.now();
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    ws.send(String(performance.now()));
  }
  await sleep(500);
  ws.close();
  rtts.sort((a, b) => a - b);
  const q = (p: number) => rtts[Math.min(rtts.length - 1, Math.floor(p * rtts.length))];
  return { n: rtts.length, p50: q(0.5), p99: q(0.99), max: rtts[rtts.length - 1] };
}

async function main(): Promise<void> {
  pinSelf(LOAD_CORE);
  const tmp = makeTmpDir();
  const tunnels = Number(flags.tunnels);
  const rate = Number(flags.rate);
  const seconds = Number(flags.seconds);

  const upPort = await freePort();
  const upstream = spawnPinned(
    'ws-upstream',
    LOAD_CORE,
    NODE,
    [import.meta.filename, '--upstream', String(upPort)],
    {
      logFile: path.join(tmp, 'upstream.log'),
    },
  );
  await waitReady(`http://127.0.0.1:${upPort}/`, upstream);

  const port = await freePort();
  const file = path.join(tmp, 'sluice.yaml');
  writeFileSync(
    file,
    `listen: 127.0.0.1:${port}
admin: { listen: 127.0.0.1:${await freePort()} }
access_log: off
upstreams: { ws: { targets: ["http://127.0.0.1:${upPort}"] } }
routes: [{ name: ws, match: { path: / }, upstream: ws }]
`,
  );
  const sluice = spawnPinned(
    'sluice',
    PROXY_CORE,
    NODE,
    [...SLUICE_NODE_FLAGS, SLUICE_MAIN, 'start', '-c', file],
    {
      logFile: path.join(tmp, 'sluice.log'),
    },
  );
  await waitReady(`http://127.0.0.1:${port}/`, sluice);

  // Idle tunnels: RSS before and after opening them (after a settle, twice to see it is flat).
  await sleep(1_000);
  const before = treeRssKiB(sluice.pid);
  const sockets: WebSocket[] = [];
  for (let i = 0; i < tunnels; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, tunnels - i) }, () => open(`ws://127.0.0.1:${port}/`)),
    );
    sockets.push(...batch);
  }
  await sleep(2_000);
  const open1 = treeRssKiB(sluice.pid);
  await sleep(3_000);
  const open2 = treeRssKiB(sluice.pid);
  log(`${tunnels} tunnels open: RSS ${before} → ${open1} → ${open2} KiB`);

  // The same placement as Sluice (core 0) for a bare relay, so the table separates what crossing a
  // process on the other core costs on this machine from what Sluice adds.
  const relayPort = await freePort();
  const relay = spawnPinned(
    'relay',
    PROXY_CORE,
    NODE,
    [import.meta.filename, '--relay', `${relayPort}:${upPort}`],
    {
      logFile: path.join(tmp, 'relay.log'),
    },
  );
  await sleep(500);
  const direct = await echo(`ws://127.0.0.1:${upPort}/`, rate, seconds);
  const relayed = await echo(`ws://127.0.0.1:${relayPort}/`, rate, seconds);
  const through = await echo(`ws://127.0.0.1:${port}/`, rate, seconds);
  await relay.stop();
  for (const ws of sockets) ws.close();
  await sleep(500);
  await sluice.stop();
  await upstream.stop();

  console.log(`\nmachine: ${JSON.stringify(machineInfo())}`);
  console.log(
    `\n${tunnels} idle tunnels: Sluice RSS ${Math.round(before / 1024)} MiB before, ${Math.round(open2 / 1024)} MiB with them open = ${((open2 - before) / tunnels).toFixed(1)} KiB per tunnel (after 2 s: ${((open1 - before) / tunnels).toFixed(1)})\n`,
  );
  const f = (x: number) => x.toFixed(3);
  console.log(
    mdTable(
      ['echo at ' + rate + ' msg/s for ' + seconds + ' s', 'messages', 'p50 ms', 'p99 ms', 'max ms'],
      [
        ['direct', String(direct.n), f(direct.p50), f(direct.p99), f(direct.max)],
        ['bare TCP relay (core 0)', String(relayed.n), f(relayed.p50), f(relayed.p99), f(relayed.max)],
        ['through Sluice (core 0)', String(through.n), f(through.p50), f(through.p99), f(through.max)],
        ['Sluice − direct', '', f(through.p50 - direct.p50), f(through.p99 - direct.p99), ''],
        ['Sluice − bare relay', '', f(through.p50 - relayed.p50), f(through.p99 - relayed.p99), ''],
      ],
    ),
  );
}
