/**
 * Test helpers: a real gateway on 127.0.0.1:0 from YAML text, stub upstreams on real sockets, raw
 * HTTP/1.1 exchanges, and a collecting access log. No fakes on the data path.
 */
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import http, { createServer, type RequestListener, type Server } from 'node:http';
import http2 from 'node:http2';
import { connect, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { Agent, setGlobalDispatcher } from 'undici';
import { loadConfigText } from '../src/config/load.ts';
import type { JobStore } from '../src/jobs/job-store.ts';
import { type Sluice, startSluice } from '../src/main.ts';
import { type AccessLogEntry, MemoryAccessLog } from '../src/observability/access-log.ts';
import { certDir } from './certs.ts';

/**
 * `SLUICE_TEST_PROTOCOL=h2`: the suites that talk to the gateway through `fetch` run again with the
 * gateway's listener on TLS and every fetch over HTTP/2 (ALPN h2), so each behaviour they check is
 * checked for both protocols (package.json's test script runs them twice). Tests that speak raw
 * HTTP/1.1 are skipped there with `H1_ONLY`.
 */
export const H2 = process.env.SLUICE_TEST_PROTOCOL === 'h2';
/** `test(name, H1_ONLY, fn)`: a test about HTTP/1.1 framing, raw sockets or node:http clients. */
export const H1_ONLY = { skip: H2 ? 'HTTP/1.1 only (raw sockets or node:http client)' : false };

let h2Ca = '';
const h2Listen = (() => {
  if (!H2) return undefined;
  const certs = certDir('sluice-h2-');
  certs.ca();
  certs.issue('gw', 'DNS:localhost');
  process.once('exit', () => certs.remove());
  h2Ca = readFileSync(certs.path('ca.pem'), 'utf8');
  setGlobalDispatcher(new Agent({ allowH2: true, connect: { ca: h2Ca } }));
  return `[{ address: "127.0.0.1:0", tls: { cert: "${certs.path('gw.pem')}", key: "${certs.path('gw.key')}" } }]`;
})();

export interface StreamedBody {
  status: number;
  headers: Record<string, unknown>;
  body: string;
  /** false when the response was cut (aborted, reset) instead of ending. */
  complete: boolean;
}

/**
 * GETs on a connection of its own and reports how the body ended: complete, or cut. Over node:http,
 * or node:http2 in the h2 run (fetch cannot tell a cut body from a complete one in every case).
 */
export function getBody(url: string): Promise<StreamedBody> {
  if (H2) {
    return new Promise((resolve, reject) => {
      const u = new URL(url);
      const session = http2.connect(u.origin, { ca: h2Ca });
      session.on('error', reject);
      const req = session.request({ ':path': u.pathname + u.search });
      let status = 0;
      let headers: Record<string, unknown> = {};
      let body = '';
      req.setEncoding('latin1');
      req.on('response', (h) => {
        status = Number(h[':status']);
        headers = h;
      });
      req.on('data', (c: string) => {
        body += c;
      });
      const done = (complete: boolean) => {
        session.destroy();
        resolve({ status, headers, body, complete });
      };
      // A stream the gateway resets (RST_STREAM) ends with an error, or closes without 'end'.
      let ended = false;
      req.on('end', () => {
        ended = true;
      });
      req.on('error', () => done(false));
      req.on('close', () => done(ended && req.rstCode === http2.constants.NGHTTP2_NO_ERROR));
      req.end();
    });
  }
  return new Promise((resolve, reject) => {
    const req = http.request(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (c) => {
        body += c;
      });
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, complete: res.complete }),
      );
      res.on('error', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, complete: false }),
      );
      res.on('aborted', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, complete: false }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

export interface TestGateway {
  readonly sluice: Sluice;
  readonly port: number;
  readonly log: MemoryAccessLog;
  url(path?: string): string;
  /** The access-log entry of the request with this id (waits for it). */
  entry(requestId: string): Promise<AccessLogEntry>;
  close(): Promise<void>;
}

/** Starts Sluice from YAML text; `listen`/`admin` default to port 0 on loopback, access log in memory. */
export async function startTestGateway(
  yaml: string,
  opts: { admin?: boolean; jobStore?: JobStore; adminToken?: string } = {},
): Promise<TestGateway> {
  const token = opts.adminToken ? `, token: "${opts.adminToken}"` : '';
  const head = `listen: ${h2Listen ?? '127.0.0.1:0'}\nadmin: { listen: 127.0.0.1:0${token} }\nshutdown_timeout: 2s\n`;
  const config = loadConfigText(head + yaml, 'test.yaml');
  const log = new MemoryAccessLog();
  const sluice = await startSluice(config, {
    accessLog: log,
    admin: opts.admin ?? false,
    jobStore: opts.jobStore,
  });
  return {
    sluice,
    port: sluice.port,
    log,
    url: (path = '/') =>
      H2 ? `https://localhost:${sluice.port}${path}` : `http://127.0.0.1:${sluice.port}${path}`,
    entry: (id) => log.next((e) => e.request_id === id),
    close: () => sluice.close(500),
  };
}

export interface TestServer<S = Server> {
  readonly server: S;
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/** A node:http upstream on 127.0.0.1:0. */
export async function startHttpServer(handler: RequestListener): Promise<TestServer> {
  const server = createServer(handler);
  server.keepAliveTimeout = 30_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  return {
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A raw TCP upstream: `onSocket` gets every connection (for malformed responses, stalls, resets). */
export async function startRawServer(onSocket: (socket: Socket) => void): Promise<TestServer<NetServer>> {
  const sockets = new Set<Socket>();
  const server = createNetServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    onSocket(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  return {
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** The whole text received. */
  raw: string;
  /** Whether the server closed the connection. */
  closed: boolean;
}

/**
 * Sends raw bytes and collects what comes back until the connection closes or `waitMs` passes
 * without data. For requests that fetch() or node:http would refuse to send.
 */
export async function rawRequest(port: number, text: string | Buffer, waitMs = 1_500): Promise<RawResponse> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  await once(socket, 'connect');
  socket.write(text);
  const chunks: Buffer[] = [];
  let closed = false;
  await new Promise<void>((resolve) => {
    let timer = setTimeout(resolve, waitMs);
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      clearTimeout(timer);
      timer = setTimeout(resolve, Math.min(waitMs, 300));
    });
    socket.on('close', () => {
      closed = true;
      clearTimeout(timer);
      resolve();
    });
  });
  socket.destroy();
  return parseRaw(Buffer.concat(chunks).toString('latin1'), closed);
}

export function parseRaw(raw: string, closed: boolean): RawResponse {
  const end = raw.indexOf('\r\n\r\n');
  const head = end === -1 ? raw : raw.slice(0, end);
  const [statusLine, ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  return {
    status: Number(statusLine.split(' ')[1] ?? 0),
    headers,
    body: end === -1 ? '' : raw.slice(end + 4),
    raw,
    closed,
  };
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  message: string;
  phase?: string;
  route?: string;
  timeout_ms?: number;
  elapsed_ms: number;
  attempts?: number;
  request_id: string;
}

/** Reads a fetch Response as a problem+json, asserting the content type. */
export async function problemOf(res: Response): Promise<Problem> {
  const type = res.headers.get('content-type');
  if (type !== 'application/problem+json')
    throw new Error(`expected application/problem+json, got ${type}: ${await res.text()}`);
  return (await res.json()) as Problem;
}

/** Resolves after `ms` (only for letting a deadline pass in tests that assert order, never for sync). */
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface GatewayProcess {
  readonly pid: number;
  readonly port: number;
  /** The admin listener's port. */
  readonly adminPort: number;
  /** The config file it runs from (rewrite it and send SIGHUP to reload). */
  readonly file: string;
  url(path?: string): string;
  /** What it wrote to stderr so far (operational log lines). */
  stderr(): string;
  /** What it wrote to stdout so far (the access log, with `accessLog: 'stdout'`). */
  stdout(): string;
  /** The stdout pipe (with `accessLog: 'stdout'`): pause it to make the gateway's writes wait. */
  readonly stdoutPipe: import('node:stream').Readable | null;
  /** Resolves with the exit code (or signal) once the process is gone. */
  readonly exited: Promise<number | string | null>;
  /** Resident memory of the gateway process, KiB: current and peak (VmRSS, VmHWM). */
  memory(): { rssKiB: number; peakKiB: number };
  stop(): Promise<number | null>;
  /** `kill -9`: resolves once the process is gone. */
  kill(): Promise<void>;
}

/** Runs the real CLI (`sluice start -c FILE`) as a child process with the given YAML. */
export async function spawnGateway(
  yaml: string,
  opts: { accessLog?: 'stdout' } = {},
): Promise<GatewayProcess> {
  const { mkdtempSync, writeFileSync, readFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { spawn } = await import('node:child_process');
  const dir = mkdtempSync(join(tmpdir(), 'sluice-test-'));
  const file = join(dir, 'sluice.yaml');
  const accessLog = opts.accessLog ?? 'off';
  writeFileSync(
    file,
    `listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\naccess_log: ${accessLog}\n${yaml}`,
  );
  const bin = new URL('../bin/sluice.js', import.meta.url).pathname;
  const child = spawn(process.execPath, [bin, 'start', '-c', file], {
    stdio: ['ignore', opts.accessLog ? 'pipe' : 'ignore', 'pipe'],
  });
  let stderr = '';
  let stdout = '';
  child.stdout?.on('data', (d) => {
    stdout += d;
  });
  const exited = new Promise<number | string | null>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal)),
  );
  const [port, adminPort] = await new Promise<[number, number]>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not start: ${stderr}`)), 15_000);
    child.stderr?.on('data', (d) => {
      stderr += d;
      // A whole line: a port cut between two chunks must not be taken.
      const m = /listening on http:\/\/[^:]+:(\d+)(?:, admin on http:\/\/[^\n]*:(\d+))?\r?\n/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve([Number(m[1]), Number(m[2] ?? 0)]);
      }
    });
    child.once('exit', (code) => reject(new Error(`gateway exited ${code}: ${stderr}`)));
  });
  const pid = child.pid as number;
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  return {
    pid,
    port,
    adminPort,
    file,
    exited,
    stderr: () => stderr,
    stdout: () => stdout,
    stdoutPipe: child.stdout,
    url: (path = '/') => `http://127.0.0.1:${port}${path}`,
    memory() {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const kib = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
      return { rssKiB: kib('VmRSS'), peakKiB: kib('VmHWM') };
    },
    async stop() {
      if (gone()) return child.exitCode;
      child.kill('SIGTERM');
      const [code] = (await once(child, 'exit')) as [number | null];
      return code;
    },
    async kill() {
      if (gone()) return;
      child.kill('SIGKILL');
      await once(child, 'exit');
    },
  };
}

/** `send` over HTTP/2 (the h2 run): the same Reply, pseudo-headers left out. */
function sendH2(
  port: number,
  path: string,
  opts: { method?: string; headers?: http.OutgoingHttpHeaders | string[]; body?: string },
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://localhost:${port}`, { ca: h2Ca });
    session.on('error', reject);
    const headers: http2.OutgoingHttpHeaders = { ':method': opts.method ?? 'GET', ':path': path };
    const given = opts.headers ?? {};
    const pairs: [string, string][] = Array.isArray(given)
      ? given.flatMap((v, i, a) => (i % 2 === 0 ? [[v, String(a[i + 1])] as [string, string]] : []))
      : Object.entries(given).flatMap(([k, v]) =>
          v === undefined ? [] : (Array.isArray(v) ? v : [v]).map((x) => [k, String(x)] as [string, string]),
        );
    for (const [k, v] of pairs) {
      const name = k.toLowerCase();
      if (name === 'host') headers[':authority'] = v;
      else {
        const prev = headers[name];
        headers[name] = prev === undefined ? v : [...(Array.isArray(prev) ? prev : [String(prev)]), v];
      }
    }
    const req = session.request(headers);
    const chunks: Buffer[] = [];
    let status = 0;
    const rawHeaders: string[] = [];
    const out: http.IncomingHttpHeaders = {};
    req.on('response', (h, _flags, raw: string[]) => {
      status = Number(h[':status']);
      for (let i = 0; i < raw.length; i += 2) {
        if (raw[i].startsWith(':')) continue;
        rawHeaders.push(raw[i], raw[i + 1]);
      }
      for (const [k, v] of Object.entries(h)) if (!k.startsWith(':')) out[k] = v as string;
    });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', reject);
    req.on('end', () => {
      session.close();
      resolve({ status, headers: out, rawHeaders, body: Buffer.concat(chunks).toString() });
    });
    req.end(opts.body);
  });
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: string;
}

/** One request on its own connection, with exactly the headers given (and the path as written). */
export function send(
  port: number,
  path: string,
  opts: { method?: string; headers?: http.OutgoingHttpHeaders | string[]; body?: string } = {},
): Promise<Reply> {
  if (H2) return sendH2(port, path, opts);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            rawHeaders: res.rawHeaders,
            body: Buffer.concat(chunks).toString(),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}
