/**
 * The "plain Node proxy" floor: node:http server + undici.Pool streaming, status and headers copied, no
 * routing, no logging. Usage: node bench/macro/contenders/bare-proxy.ts --port P --upstream URL [--timeout-ms N]
 * (--timeout-ms: undici headersTimeout/bodyTimeout; a headers timeout answers 504, other upstream errors 502).
 * With --cert FILE --key FILE it listens with TLS and offers h2 and http/1.1 by ALPN (node:http2
 * createSecureServer with allowHTTP1, the compatibility API: the same handler for both).
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    upstream: { type: 'string' },
    'timeout-ms': { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
  },
});
const timeout = values['timeout-ms'] === undefined ? undefined : Number(values['timeout-ms']);
const pool = new Pool(values.upstream!, {
  headersTimeout: timeout,
  bodyTimeout: timeout,
  keepAliveTimeout: 60_000,
});
const HOP = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'proxy-connection',
]);

function strip(h: http.IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h))
    if (v !== undefined && !HOP.has(k) && k.charCodeAt(0) !== 58) out[k] = v;
  return out;
}

const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
  const ac = new AbortController();
  res.on('close', () => res.writableFinished || ac.abort());
  const body = req.method === 'GET' || req.method === 'HEAD' ? undefined : req;
  pool.stream(
    { path: req.url!, method: req.method as 'GET', headers: strip(req.headers), body, signal: ac.signal },
    ({ statusCode, headers }) => res.writeHead(statusCode, strip(headers)),
    (err) => {
      if (!err || res.headersSent) return err && res.destroy();
      const code = (err as { code?: string }).code;
      res.writeHead(code === 'UND_ERR_HEADERS_TIMEOUT' ? 504 : 502, { 'content-type': 'text/plain' });
      res.end(`${code ?? err.message}\n`);
    },
  );
};
const tls = values.cert !== undefined && values.key !== undefined;
const server = tls
  ? (http2.createSecureServer(
      { cert: readFileSync(values.cert!), key: readFileSync(values.key!), allowHTTP1: true },
      handler as unknown as Parameters<typeof http2.createSecureServer>[1],
    ) as unknown as http.Server)
  : http.createServer(handler);
server.keepAliveTimeout = 75_000; // like nginx and sluice (node's default is 5 s)
server.headersTimeout = 80_000;
server.requestTimeout = 0;
server.listen(Number(values.port), '127.0.0.1');
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
