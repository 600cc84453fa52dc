/**
 * WebSocket through the gateway (SPEC §3) with Node's own WebSocket client against a small real
 * WebSocket upstream (handshake and frames by RFC 6455): messages both ways, the access-log line when
 * the tunnel ends, an upstream that refuses the upgrade, a handshake that never comes (ttfb), an idle
 * tunnel closed by timeouts.idle, and a route that does not allow upgrades.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { describe, type TestContext, test } from 'node:test';
import { sleep, startTestGateway } from '../helpers.ts';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** One text frame from the server (unmasked, short payloads). */
function frame(text: string): Buffer {
  const payload = Buffer.from(text);
  return Buffer.concat([Buffer.from([0x81, payload.length]), payload]);
}

/** Unmasks the client frames in `buf` (short payloads), returning their texts and opcodes. */
function readFrames(buf: Buffer): { opcode: number; text: string }[] {
  const out: { opcode: number; text: string }[] = [];
  let i = 0;
  while (i + 6 <= buf.length) {
    const opcode = buf[i] & 0x0f;
    const len = buf[i + 1] & 0x7f;
    const mask = buf.subarray(i + 2, i + 6);
    const data = Buffer.from(buf.subarray(i + 6, i + 6 + len));
    for (let j = 0; j < data.length; j++) data[j] ^= mask[j % 4];
    out.push({ opcode, text: data.toString() });
    i += 6 + len;
  }
  return out;
}

type Mode = 'echo' | 'refuse' | 'silent';

/** A WebSocket upstream that echoes text messages upper-cased. */
async function wsUpstream(mode: Mode): Promise<{ server: Server; url: string; sockets: Socket[] }> {
  const sockets: Socket[] = [];
  const server = createServer((_req, res) => {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('no websocket here');
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    sockets.push(socket);
    if (mode === 'silent') return;
    if (mode === 'refuse') {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 6\r\nconnection: close\r\n\r\nno way');
      return;
    }
    const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}${GUID}`).digest('base64');
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\nx-seen-proto: ${req.headers['x-forwarded-proto']}\r\n\r\n`,
    );
    socket.on('data', (buf: Buffer) => {
      for (const f of readFrames(buf)) {
        if (f.opcode === 0x1) socket.write(frame(f.text.toUpperCase()));
        if (f.opcode === 0x8) socket.end(Buffer.from([0x88, 0x00]));
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, sockets };
}

async function gatewayFor(upstreamUrl: string, route = '') {
  return startTestGateway(
    `
upstreams: { ws: { targets: ["${upstreamUrl}"] } }
routes:
  - { name: live, match: { path: /live }, upstream: ws, timeouts: { ttfb: 300ms, idle: 400ms }${route} }
  - { name: closed, match: { path: /closed }, upstream: ws, websocket: false }
`,
    { admin: true },
  );
}

/** An echo upstream, a gateway in front of it and a WebSocket open through it; all closed after `t`. */
async function openTunnel(t: TestContext, path = '/live') {
  const up = await wsUpstream('echo');
  t.after(() => up.server.close());
  const gw = await gatewayFor(up.url);
  t.after(() => gw.close());
  const ws = new WebSocket(`ws://127.0.0.1:${gw.port}${path}`);
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error('handshake failed'));
  });
  return { gw, ws };
}

describe('WebSocket', () => {
  test('messages go both ways through the tunnel; one log line when it ends, with bytes each way', async (t) => {
    const { gw, ws } = await openTunnel(t, '/live/chat');
    const replies: string[] = [];
    const got = new Promise<void>((resolve) => {
      ws.onmessage = (e) => {
        replies.push(String(e.data));
        if (replies.length === 2) resolve();
      };
    });
    ws.send('hello');
    ws.send('again');
    await got;
    const metrics = await (await fetch(`http://127.0.0.1:${gw.sluice.adminPort}/metrics`)).text();
    assert.match(metrics, /^sluice_tunnels_open 1$/m);
    assert.deepEqual(replies, ['HELLO', 'AGAIN']);
    ws.close();
    const line = await gw.log.next((e) => e.route === 'live');
    assert.equal(line.status, 101);
    assert.equal(line.outcome, 'ok');
    assert.ok(line.bytes_in > 10 && line.bytes_out > 10, `${line.bytes_in} in, ${line.bytes_out} out`);
    assert.equal(line.path, '/live/chat');
    // Counted as a request, but a tunnel's minutes are no latency: the route's window stays empty.
    assert.equal(gw.sluice.observability.window('live')?.count, 0);
  });

  test('an upstream that refuses the upgrade answers the client with its own response', async (t) => {
    const up = await wsUpstream('refuse');
    t.after(() => up.server.close());
    const gw = await gatewayFor(up.url);
    t.after(() => gw.close());
    const reply = await rawUpgrade(gw.port, '/live');
    assert.match(reply, /^HTTP\/1\.1 403 Forbidden/);
    assert.match(reply, /no way$/);
    const line = await gw.log.next((e) => e.route === 'live');
    assert.equal(line.status, 403);
  });

  test('a handshake that never comes is a 504 at the ttfb deadline, and the upstream connection is closed', async (t) => {
    const up = await wsUpstream('silent');
    t.after(() => {
      for (const s of up.sockets) s.destroy();
      up.server.close();
    });
    const gw = await gatewayFor(up.url);
    t.after(() => gw.close());
    const t0 = performance.now();
    const reply = await rawUpgrade(gw.port, '/live');
    const took = performance.now() - t0;
    assert.match(reply, /^HTTP\/1\.1 504 /);
    assert.match(reply, /"phase":"ttfb"/);
    assert.ok(took >= 290 && took < 2_000, `after ${took} ms`);
    await sleep(50);
    assert.ok(up.sockets[0].destroyed || up.sockets[0].readableEnded, 'the upstream connection was closed');
  });

  test('timeouts.idle closes a silent tunnel; websocket: false refuses the upgrade', async (t) => {
    const { gw, ws } = await openTunnel(t);
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      ws.onclose = () => resolve();
    });
    const took = performance.now() - t0;
    assert.ok(took >= 350 && took < 2_000, `closed after ${took} ms of silence`);
    const line = await gw.log.next((e) => e.route === 'live');
    assert.equal(line.outcome, 'timeout');

    const refused = await rawUpgrade(gw.port, '/closed');
    assert.match(refused, /^HTTP\/1\.1 400 /);
    assert.match(refused, /websocket: false/);
  });

  test('traffic keeps a tunnel open past timeouts.idle; the idle clock counts from the last message', async (t) => {
    const { gw, ws } = await openTunnel(t);
    let closed = false;
    const closedAt = new Promise<number>((resolve) => {
      ws.onclose = () => {
        closed = true;
        resolve(performance.now());
      };
    });
    let replies = 0;
    ws.onmessage = () => replies++;
    // A message every 150 ms for 1.2 s: three times the 400 ms idle timeout, never 400 ms silent.
    const opened = performance.now();
    let lastSent = opened;
    while (performance.now() - opened < 1_200) {
      assert.equal(closed, false, `closed ${Math.round(performance.now() - opened)} ms in, with traffic`);
      ws.send('tick');
      lastSent = performance.now();
      await sleep(150);
    }
    const quietFor = (await closedAt) - lastSent;
    assert.ok(replies >= 6, `${replies} replies`);
    assert.ok(
      quietFor >= 350 && quietFor < 2_000,
      `closed ${Math.round(quietFor)} ms after the last message`,
    );
    const line = await gw.log.next((e) => e.route === 'live');
    assert.equal(line.outcome, 'timeout');
  });
});

/** A WebSocket handshake on a raw socket; everything the gateway sent until it closed. */
function rawUpgrade(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => {
      s.write(
        `GET ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
      );
    });
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (text += d));
    s.on('close', () => resolve(text));
    s.on('error', reject);
    setTimeout(() => s.destroy(), 5_000);
  });
}
