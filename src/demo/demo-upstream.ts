/**
 * Demo upstream (SPEC §9): a deliberately unreliable HTTP/1.1 server used by
 * `npm start`, the tests and the benchmarks.
 *
 * Endpoints (any method unless noted; bad query/path values → 400 JSON
 * `{ "error": "..." }`; unknown paths → 404 JSON):
 *
 *   /fast                     200 text/plain `ok\n`.
 *   /slow?ms=N                sleeps N ms (default 1000, 0..3_600_000), then 200 `{ "slept_ms": N }`.
 *   /hang                     reads the request, never answers.
 *   /drip?chunks=N&every=ms&size=B
 *                             200 chunked text/plain at once, then N chunks (default 10, 0..100_000) of
 *                             B bytes (default 16, 1..1 MiB). The first chunk is sent immediately, the next
 *                             ones every `every` ms (default 100, 0..3_600_000), so the body takes about
 *                             (N-1)*every ms. Each chunk is `<index>:` padded with '.' and ends in '\n'
 *                             (truncated when B is too small).
 *   /stall?after=N            200 with `Content-Length: N+1000`, writes N bytes (default 10, 0..16 MiB) of
 *                             'x', then silence forever.
 *   /reset                    TCP reset (socket.resetAndDestroy()) without any response.
 *   /reset?after_headers=1    200 headers (chunked) + one partial chunk, then a TCP reset ~20 ms later.
 *   /status/{code}            that status (200..599), JSON `{ "status": code }`; 503 adds `Retry-After: 1`;
 *                             204, 205 and 304 have no body.
 *   /size/{bytes}             200 application/octet-stream of exactly that many bytes (with Content-Length),
 *                             streamed in 64 KiB chunks honouring back-pressure. `{bytes}` is a plain
 *                             integer with an optional case-insensitive suffix `k` (KiB), `m` (MiB) or
 *                             `g` (GiB): `/size/512`, `/size/16k`, `/size/200M`. Max 10 GiB.
 *   /echo                     reads (and sha256-hashes, streaming) the whole body, then 200 JSON
 *                             `{ method, path, headers, body_bytes, body_sha256 }`; `path` is the request
 *                             target as received (path + query), `headers` maps lowercase names to a
 *                             string, or to an array of strings when the header was repeated.
 *   /timing?ms=N              200 JSON with `Server-Timing: db;dur=..;desc="database",
 *                             ext;dur=..;desc="external call", transform;dur=..`. Without `ms` nothing
 *                             sleeps and nominal durations (12, 34, 3) are reported; with `ms`
 *                             (0..3_600_000) it really sleeps 50% / 40% / 10% of N in three phases and
 *                             reports the measured durations (ms, one decimal).
 *   /catalog?max-age=N        200 JSON product list (about 5 KB) with `Cache-Control: max-age=N` (default 5),
 *                             `ETag: "catalog-v1"` (a matching If-None-Match gets 304) and the time it was
 *                             generated in `X-Demo-Generated-At`; 503 while /healthz is toggled down.
 *   /healthz                  200 `{"status":"ok"}`, or 503 `{"status":"down"}` once toggled down.
 *   POST /_demo/health/up|down toggles /healthz (other methods → 405). Answers `{ "healthy": bool }`.
 *
 * Every response except /reset and /hang carries `X-Demo-Upstream: 1`; every response echoes a received
 * `x-timeout-ms` request header as `x-received-timeout-ms`.
 *
 * `stats.aborted` / the `'aborted'` event count requests whose connection closed before the response
 * finished, EXCEPT the deliberate /reset ones and connections destroyed by close() itself.
 */

import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface DemoUpstreamOptions {
  /** Default 9000; 0 picks a free port (then `url`/`port` carry the real one). */
  port?: number;
  /** Default '127.0.0.1'. */
  host?: string;
}

export interface DemoUpstreamStats {
  /** Requests received (any path, including /hang and /reset). */
  requests: number;
  /** Requests whose client went away before the response finished (see header comment). */
  aborted: number;
}

export interface DemoUpstream {
  readonly url: string;
  readonly port: number;
  readonly server: http.Server;
  /** Live counters (the same object is mutated in place). */
  readonly stats: DemoUpstreamStats;
  /** Emits `'request'` (path) for every request and `'aborted'` (path) for every aborted one. */
  readonly events: EventEmitter;
  /** Whether /healthz currently answers 200. */
  readonly healthy: boolean;
  /** Same as `POST /_demo/health/{up|down}`. */
  setHealthy(up: boolean): void;
  /** Stops listening, destroys every open connection (hanging ones included), clears every timer. */
  close(): Promise<void>;
}

const MAX_SLEEP_MS = 3_600_000;
const MAX_SIZE_BYTES = 10 * 1024 ** 3;
const SIZE_CHUNK = 64 * 1024;
const MAX_DRIP_CHUNKS = 100_000;
const MAX_DRIP_SIZE = 1024 * 1024;
const MAX_STALL_BYTES = 16 * 1024 * 1024;
const RESET_DELAY_MS = 20;

class BadRequest extends Error {}

/** One 64 KiB block of printable bytes, reused (never mutated) for every /size write. */
const SIZE_BLOCK = Buffer.alloc(SIZE_CHUNK, 'abcdefghijklmnopqrstuvwxyz0123456789\n');

function intParam(params: URLSearchParams, name: string, def: number, min: number, max: number): number {
  const raw = params.get(name);
  if (raw === null) return def;
  if (!/^\d{1,16}$/.test(raw)) {
    throw new BadRequest(`invalid ${name}=${JSON.stringify(raw)}: expected an integer in [${min}, ${max}]`);
  }
  const n = Number(raw);
  if (n < min || n > max) {
    throw new BadRequest(`invalid ${name}=${raw}: expected an integer in [${min}, ${max}]`);
  }
  return n;
}

function parseSize(raw: string): number {
  const m = /^(\d{1,12})([kmg]?)$/i.exec(raw);
  if (!m) throw new BadRequest(`invalid size ${JSON.stringify(raw)}: expected <integer>[k|m|g]`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g'];
  const n = Number(m[1]) * mult;
  if (n > MAX_SIZE_BYTES) throw new BadRequest(`invalid size ${raw}: max is ${MAX_SIZE_BYTES} bytes`);
  return n;
}

const CATALOG = {
  products: Array.from({ length: 40 }, (_, i) => ({
    id: 1000 + i,
    name: `Product ${i + 1}`,
    description: 'A product of the demo catalog, large enough to be worth compressing and caching.',
    price_cents: 499 + i * 100,
    in_stock: i % 3 !== 0,
  })),
};
const CATALOG_ETAG = '"catalog-v1"';

function sendJson(
  res: http.ServerResponse,
  status: number,
  body: unknown,
  headers?: http.OutgoingHttpHeaders,
) {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function dripChunk(index: number, size: number): Buffer {
  const buf = Buffer.alloc(size, '.');
  buf.write(`${index}:`, 0, 'latin1');
  buf[size - 1] = 0x0a;
  return buf;
}

export function startDemoUpstream(opts: DemoUpstreamOptions = {}): Promise<DemoUpstream> {
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? 9000;
  const stats: DemoUpstreamStats = { requests: 0, aborted: 0 };
  const events = new EventEmitter();
  const sockets = new Set<Socket>();
  const allTimers = new Set<NodeJS.Timeout>();
  let healthy = true;
  let closing = false;
  let closePromise: Promise<void> | undefined;

  const server = http.createServer({ keepAliveTimeout: 65_000, requestTimeout: 0 }, (req, res) =>
    handle(req, res),
  );
  server.keepAliveTimeout = 65_000;
  server.requestTimeout = 0;

  server.on('connection', (socket: Socket) => {
    if (closing) {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  // Malformed requests / client-side resets: answer 400 when possible, never crash.
  server.on('clientError', (_err, socket: Socket) => {
    if (socket.writable && !socket.destroyed) {
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    }
    socket.destroy();
  });

  function handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    stats.requests++;
    const target = req.url ?? '/';
    let url: URL;
    try {
      url = new URL(target, 'http://demo.invalid');
    } catch {
      url = new URL('http://demo.invalid/');
    }
    const path = url.pathname;
    events.emit('request', path);

    // Per-request timers, all cleared when the response closes (finished or aborted).
    const timers = new Set<NodeJS.Timeout>();
    const later = (ms: number, fn: () => void): void => {
      const t = setTimeout(() => {
        timers.delete(t);
        allTimers.delete(t);
        fn();
      }, ms);
      timers.add(t);
      allTimers.add(t);
    };
    const sleep = (ms: number) => new Promise<void>((resolve) => later(ms, resolve));

    let deliberateReset = false;
    res.on('error', () => {});
    req.on('error', () => {});
    res.on('close', () => {
      for (const t of timers) {
        clearTimeout(t);
        allTimers.delete(t);
      }
      timers.clear();
      if (!res.writableFinished && !deliberateReset && !closing) {
        stats.aborted++;
        events.emit('aborted', path);
      }
    });

    const timeoutHeader = req.headers['x-timeout-ms'];
    if (timeoutHeader !== undefined) res.setHeader('x-received-timeout-ms', timeoutHeader);
    if (path !== '/reset' && path !== '/hang') res.setHeader('x-demo-upstream', '1');

    try {
      route(req, res, url, { later, sleep, markReset: () => (deliberateReset = true) });
    } catch (err) {
      if (err instanceof BadRequest) {
        req.resume();
        sendJson(res, 400, { error: err.message });
      } else {
        req.resume();
        sendJson(res, 500, { error: String(err) });
      }
    }
  }

  interface Ctx {
    later(ms: number, fn: () => void): void;
    sleep(ms: number): Promise<void>;
    markReset(): void;
  }

  function route(req: http.IncomingMessage, res: http.ServerResponse, url: URL, ctx: Ctx): void {
    const path = url.pathname;
    const q = url.searchParams;

    if (path === '/echo') {
      echo(req, res);
      return;
    }
    // Every other endpoint ignores the request body: drain it so keep-alive keeps working.
    req.resume();

    switch (path) {
      case '/fast': {
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': 3 });
        res.end('ok\n');
        return;
      }
      case '/slow': {
        const ms = intParam(q, 'ms', 1000, 0, MAX_SLEEP_MS);
        ctx.later(ms, () => sendJson(res, 200, { slept_ms: ms }));
        return;
      }
      case '/hang':
        return; // never answer
      case '/drip': {
        const chunks = intParam(q, 'chunks', 10, 0, MAX_DRIP_CHUNKS);
        const every = intParam(q, 'every', 100, 0, MAX_SLEEP_MS);
        const size = intParam(q, 'size', 16, 1, MAX_DRIP_SIZE);
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
        res.flushHeaders();
        let i = 0;
        const tick = (): void => {
          if (res.destroyed) return;
          if (i >= chunks) {
            res.end();
            return;
          }
          res.write(dripChunk(i, size));
          i++;
          if (i >= chunks) res.end();
          else ctx.later(every, tick);
        };
        tick();
        return;
      }
      case '/stall': {
        const after = intParam(q, 'after', 10, 0, MAX_STALL_BYTES);
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': after + 1000 });
        if (after > 0) res.write(Buffer.alloc(after, 'x'));
        else res.flushHeaders();
        return; // silence forever
      }
      case '/reset': {
        const afterHeaders = intParam(q, 'after_headers', 0, 0, 1) === 1;
        ctx.markReset();
        if (!afterHeaders) {
          req.socket.resetAndDestroy();
          return;
        }
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
        res.write('partial body, then a reset\n', () => {
          // Give the client a moment to read the headers before the RST discards them.
          ctx.later(RESET_DELAY_MS, () => {
            if (!req.socket.destroyed) req.socket.resetAndDestroy();
          });
        });
        return;
      }
      case '/timing': {
        const ms = q.has('ms') ? intParam(q, 'ms', 0, 0, MAX_SLEEP_MS) : undefined;
        timing(res, ms, ctx).catch((err: unknown) => sendJson(res, 500, { error: String(err) }));
        return;
      }
      case '/catalog': {
        // Cacheable: max-age (default 5 s) and a stable ETag; 503 while toggled down, so that a
        // cache's stale-if-error can be seen answering for it.
        if (!healthy) {
          sendJson(res, 503, { error: 'catalog service down' }, { 'retry-after': '1' });
          return;
        }
        const maxAge = intParam(q, 'max-age', 5, 0, 86_400);
        const headers = {
          'cache-control': `max-age=${maxAge}`,
          etag: CATALOG_ETAG,
          'x-demo-generated-at': new Date().toISOString(),
        };
        // If-None-Match uses weak comparison (RFC 9110 §13.1.2): a W/ tag a cache holds matches too.
        const inm = String(req.headers['if-none-match'] ?? '');
        if (inm.split(',').some((t) => t.trim().replace(/^W\//, '') === CATALOG_ETAG)) {
          res.writeHead(304, headers);
          res.end();
          return;
        }
        sendJson(res, 200, CATALOG, headers);
        return;
      }
      case '/healthz': {
        if (healthy) sendJson(res, 200, { status: 'ok' });
        else sendJson(res, 503, { status: 'down' }, { 'retry-after': '1' });
        return;
      }
    }

    if (path.startsWith('/status/')) {
      const raw = path.slice('/status/'.length);
      if (!/^\d{3}$/.test(raw) || Number(raw) < 200 || Number(raw) > 599) {
        throw new BadRequest(`invalid status ${JSON.stringify(raw)}: expected an integer in [200, 599]`);
      }
      const code = Number(raw);
      const headers: http.OutgoingHttpHeaders = code === 503 ? { 'retry-after': '1' } : {};
      if (code === 204 || code === 205 || code === 304) {
        if (code === 205) headers['content-length'] = 0;
        res.writeHead(code, headers);
        res.end();
      } else {
        sendJson(res, code, { status: code }, headers);
      }
      return;
    }

    if (path.startsWith('/size/')) {
      const n = parseSize(path.slice('/size/'.length));
      size(req, res, n);
      return;
    }

    const health = /^\/_demo\/health\/(up|down)$/.exec(path);
    if (health) {
      if (req.method !== 'POST') {
        sendJson(res, 405, { error: 'use POST' }, { allow: 'POST' });
        return;
      }
      healthy = health[1] === 'up';
      sendJson(res, 200, { healthy });
      return;
    }

    sendJson(res, 404, { error: `not found: ${path}` });
  }

  function echo(req: http.IncomingMessage, res: http.ServerResponse): void {
    const hash = createHash('sha256');
    let bytes = 0;
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      hash.update(chunk);
    });
    req.on('end', () => {
      const headers: Record<string, string | string[]> = {};
      for (const [name, values] of Object.entries(req.headersDistinct)) {
        if (!values) continue;
        headers[name] = values.length === 1 ? values[0] : values;
      }
      sendJson(res, 200, {
        method: req.method,
        path: req.url,
        headers,
        body_bytes: bytes,
        body_sha256: hash.digest('hex'),
      });
    });
  }

  function size(req: http.IncomingMessage, res: http.ServerResponse, total: number): void {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total });
    if (req.method === 'HEAD' || total === 0) {
      res.end();
      return;
    }
    let remaining = total;
    const pump = (): void => {
      while (remaining > 0) {
        if (res.destroyed) return;
        const n = Math.min(remaining, SIZE_CHUNK);
        remaining -= n;
        const ok = res.write(n === SIZE_CHUNK ? SIZE_BLOCK : SIZE_BLOCK.subarray(0, n));
        if (remaining === 0) break;
        if (!ok) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
  }

  async function timing(res: http.ServerResponse, ms: number | undefined, ctx: Ctx): Promise<void> {
    let db = 12;
    let ext = 34;
    let transform = 3;
    if (ms !== undefined) {
      const phase = async (share: number): Promise<number> => {
        const t0 = performance.now();
        await ctx.sleep(Math.round(ms * share));
        return Math.round((performance.now() - t0) * 10) / 10;
      };
      db = await phase(0.5);
      if (res.destroyed) return;
      ext = await phase(0.4);
      if (res.destroyed) return;
      transform = await phase(0.1);
      if (res.destroyed) return;
    }
    const total = Math.round((db + ext + transform) * 10) / 10;
    sendJson(
      res,
      200,
      { db_ms: db, ext_ms: ext, transform_ms: transform, total_ms: total },
      {
        'server-timing': `db;dur=${db};desc="database", ext;dur=${ext};desc="external call", transform;dur=${transform}`,
      },
    );
  }

  return new Promise<DemoUpstream>((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      server.on('error', () => {});
      const addr = server.address() as AddressInfo;
      const urlHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
      resolve({
        url: `http://${urlHost}:${addr.port}`,
        port: addr.port,
        server,
        stats,
        events,
        get healthy() {
          return healthy;
        },
        setHealthy(up: boolean) {
          healthy = up;
        },
        close() {
          closePromise ??= new Promise<void>((resolveClose) => {
            closing = true;
            for (const t of allTimers) clearTimeout(t);
            allTimers.clear();
            server.close(() => resolveClose());
            server.closeAllConnections();
            for (const s of sockets) s.destroy();
            sockets.clear();
          });
          return closePromise;
        },
      });
    });
  });
}
