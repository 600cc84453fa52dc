/**
 * Upstream for bench/macro/timeouts.ts. Usage: node bench/macro/contenders/hang-upstream.ts --port P
 *   /hang…       accepts the request and never answers (counted as pending until its connection closes)
 *   /small       200, 100-byte body
 *   /__stats     200 JSON { pending, received }
 *   /__release   destroys every pending /hang connection, 200 JSON { released }
 */
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string' } } });
const SMALL = Buffer.alloc(100, 'x');
const pending = new Set<http.ServerResponse>();
let received = 0;

const server = http.createServer((req, res) => {
  const url = req.url ?? '/';
  if (url.startsWith('/hang')) {
    received++;
    pending.add(res);
    res.on('close', () => pending.delete(res));
    req.resume();
    return;
  }
  let body: Buffer | string = SMALL;
  if (url === '/__stats') body = JSON.stringify({ pending: pending.size, received });
  else if (url === '/__release') {
    const released = pending.size;
    for (const r of pending) r.socket?.destroy();
    pending.clear();
    received = 0;
    body = JSON.stringify({ released });
  } else if (url !== '/small') {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
server.keepAliveTimeout = 75_000;
server.headersTimeout = 80_000;
server.requestTimeout = 0;
server.listen(Number(values.port), '127.0.0.1');
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
