/**
 * Late bytes after a complete response on a kept-alive upstream connection (docs/reliability.md, "Late
 * bytes"). A raw upstream answers `/first` with `ok` (Content-Length: 2), then writes a whole second
 * response (`evil`) on the same socket: in the same write, or `delay` ms later. `/warm` gets a plain
 * answer; any other request `second`, after the late bytes when they are still to come, so the wire
 * order is what a server that sent an extra response would produce. The upstream logs which of its
 * connections each request head arrived on and when the late bytes were handed to the kernel.
 *
 * A trial sends request 1 through the gateway (after a few plain exchanges, if asked) and request 2 the
 * moment its answer is complete (or later, if asked), on the same client connection or on a second one
 * opened beforehand; it records what request 2 got. Used by late-bytes.test.ts; run directly
 * (`npx node test/reliability/late-bytes.ts [trials]`) it prints the table in reliability.md.
 */
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { sleep, startRawServer, startTestGateway, type TestServer } from '../helpers.ts';
import { NGINX, startNginxProxy } from './nginx.ts';

export const FIRST = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';
export const LATE = 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil';
export const SECOND = 'HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond';
/** The answer to `/warm`: a plain exchange, for a connection that has carried a few before the case. */
export const WARM = 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwarm';

/** `same-write`: the late response in the very write that ends the first; a number: ms after it. */
export type Delay = 'same-write' | number;

export interface HeadSeen {
  /** The upstream connection it arrived on, numbered from 1 in accept order. */
  readonly conn: number;
  /** Its position on that connection, from 1. */
  readonly nth: number;
  readonly path: string;
  /** Whether the late bytes had been written on this connection when the head was read. */
  readonly afterLate: boolean | null;
}

export interface LateUpstream extends TestServer<import('node:net').Server> {
  readonly heads: HeadSeen[];
  /** When (performance.now) the late bytes were handed to the kernel, by connection. */
  readonly lateAt: Map<number, number>;
  /** Connections accepted so far. */
  connections(): number;
  /** Resolves when connection `conn` has been closed (by the gateway or by the upstream's close). */
  whenClosed(conn: number): Promise<void>;
}

/**
 * `nagle`: leave Nagle's algorithm on, as node:net servers do by default (and the response-fuzz rig's
 * raw upstream): a small write made while an earlier segment is unacknowledged is held in the kernel
 * until the ACK comes, which the gateway may delay (up to about 40 ms on Linux) or send with its next
 * request. Off (TCP_NODELAY, as node:http, nginx and most servers set it), a write goes out at once.
 */
export async function startLateUpstream(delay: Delay, opts: { nagle?: boolean } = {}): Promise<LateUpstream> {
  const heads: HeadSeen[] = [];
  const lateAt = new Map<number, number>();
  const closed = new Map<number, Promise<void>>();
  let conns = 0;
  const server = await startRawServer((s) => {
    if (!opts.nagle) s.setNoDelay(true);
    const conn = ++conns;
    closed.set(conn, new Promise((resolve) => s.once('close', () => resolve())));
    let buffered = '';
    let nth = 0;
    /** The late bytes of the last `/first` on this connection: written yet, and when. */
    let late: { written: boolean; done: Promise<void> } | null = null;
    s.on('data', (d: Buffer) => {
      buffered += d.toString('latin1');
      for (let end = buffered.indexOf('\r\n\r\n'); end !== -1; end = buffered.indexOf('\r\n\r\n')) {
        const head = buffered.slice(0, end);
        buffered = buffered.slice(end + 4);
        const path = head.split(' ')[1] ?? '';
        heads.push({ conn, nth: ++nth, path, afterLate: late === null ? null : late.written });
        if (path.startsWith('/first')) {
          if (delay === 'same-write') {
            s.write(FIRST + LATE);
            lateAt.set(conn, performance.now());
            late = { written: true, done: Promise.resolve() };
            continue;
          }
          s.write(FIRST);
          const l = { written: false, done: Promise.resolve() };
          l.done = new Promise<void>((resolve) => {
            const write = () => {
              if (!s.destroyed) s.write(LATE);
              lateAt.set(conn, performance.now());
              l.written = true;
              resolve();
            };
            if (delay === 0) setImmediate(write);
            else setTimeout(write, delay);
          });
          late = l;
        } else if (path.startsWith('/warm')) {
          s.write(WARM);
        } else if (late === null || late.written) {
          s.write(SECOND);
        } else {
          void late.done.then(() => {
            if (!s.destroyed) s.write(SECOND);
          });
        }
      }
    });
  });
  return Object.assign(server, {
    heads,
    lateAt,
    connections: () => conns,
    whenClosed: (conn: number) => closed.get(conn) ?? Promise.reject(new Error(`no connection ${conn}`)),
  });
}

/** What request 2's client got: the body of a complete response, or how it failed. */
export interface Outcome {
  readonly status: number;
  /** The body when complete; `closed` / `hang` / `malformed` otherwise. */
  readonly body: string;
  /** ms from request 1's answer being complete to request 2's. */
  readonly ms: number;
}

/** Reads one response from the front of `data` (Content-Length or chunked); undefined while incomplete. */
export function takeResponse(data: string): { status: number; body: string; rest: string } | undefined {
  const end = data.indexOf('\r\n\r\n');
  if (end === -1) return undefined;
  const head = data.slice(0, end);
  const status = Number(head.split(' ')[1]);
  if (!/^HTTP\/1\.1 \d{3} /.test(head)) return { status: -1, body: 'malformed', rest: '' };
  const cl = /\r\ncontent-length: *(\d+)/i.exec(head);
  let pos = end + 4;
  if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
    let body = '';
    for (;;) {
      const lf = data.indexOf('\r\n', pos);
      if (lf === -1) return undefined;
      const size = Number.parseInt(data.slice(pos, lf), 16);
      if (size === 0) {
        if (data.length < lf + 4) return undefined;
        return { status, body, rest: data.slice(lf + 4) };
      }
      if (data.length < lf + 2 + size + 2) return undefined;
      body += data.slice(lf + 2, lf + 2 + size);
      pos = lf + 2 + size + 2;
    }
  }
  const n = cl ? Number(cl[1]) : 0;
  if (data.length < pos + n) return undefined;
  return { status, body: data.slice(pos, pos + n), rest: data.slice(pos + n) };
}

const req = (path: string) => `GET ${path} HTTP/1.1\r\nHost: late.test\r\n\r\n`;

/** One request on `s` and its whole answer (a plain exchange before the case). */
async function exchange(s: Socket, path: string): Promise<string> {
  let data = '';
  return new Promise<string>((resolve, reject) => {
    const onData = (d: Buffer) => {
      data += d.toString('latin1');
      const r = takeResponse(data);
      if (r === undefined) return;
      s.off('data', onData);
      s.off('close', onClose);
      if (r.body === 'warm') resolve(r.body);
      else reject(new Error(`${path} got ${r.status} ${r.body}`));
    };
    const onClose = () => reject(new Error(`closed before the answer to ${path}`));
    s.on('data', onData);
    s.once('close', onClose);
    s.write(req(path));
  });
}

async function open(port: number): Promise<Socket> {
  const s = connect(port, '127.0.0.1');
  s.on('error', () => {});
  await once(s, 'connect');
  return s;
}

/**
 * Request 1 (`/first`), then request 2 (`/second`) the moment request 1's answer is complete: on the
 * same client connection (`same`) or on one opened before request 1 (`other`). Waits `waitMs` at most.
 */
export async function trial(
  port: number,
  mode: 'same' | 'other',
  tag: string | number,
  opts: {
    /** Send request 2 this long after request 1's answer, or once this resolves; default at once. */
    gap?: number | (() => Promise<void>);
    /** Plain exchanges on the client connection before request 1 (so that the upstream one is not new). */
    warm?: number;
    waitMs?: number;
  } = {},
): Promise<Outcome> {
  const waitMs = opts.waitMs ?? 3_000;
  const gap = opts.gap ?? 0;
  const c1 = await open(port);
  for (let i = 0; i < (opts.warm ?? 0); i++) await exchange(c1, `/warm?t=${tag}&i=${i}`);
  const c2 = mode === 'other' ? await open(port) : c1;
  try {
    let data1 = '';
    let data2 = '';
    let t1 = 0;
    return await new Promise<Outcome>((resolve) => {
      const finish = (o: Omit<Outcome, 'ms'>) => {
        clearTimeout(timer);
        resolve({ ...o, ms: t1 === 0 ? -1 : Math.round((performance.now() - t1) * 10) / 10 });
      };
      const timer = setTimeout(
        () => finish({ status: 0, body: t1 === 0 ? 'hang (request 1)' : 'hang' }),
        waitMs,
      );
      const second = () => {
        const r = takeResponse(data2);
        if (r !== undefined) finish({ status: r.status, body: r.body });
      };
      c1.on('data', (d: Buffer) => {
        if (t1 === 0) {
          data1 += d.toString('latin1');
          const r = takeResponse(data1);
          if (r === undefined) return;
          t1 = performance.now();
          if (r.body !== 'ok') return finish({ status: r.status, body: `request 1 got ${r.body}` });
          const send2 = () => c2.write(req(`/second?t=${tag}`));
          if (typeof gap === 'function')
            gap().then(send2, (e: Error) => finish({ status: 0, body: e.message }));
          else if (gap > 0) setTimeout(send2, gap);
          else send2();
          if (mode === 'same') {
            data2 = r.rest;
            second();
          }
        } else if (mode === 'same') {
          data2 += d.toString('latin1');
          second();
        }
      });
      if (mode === 'other')
        c2.on('data', (d: Buffer) => {
          data2 += d.toString('latin1');
          second();
        });
      c2.on('close', () => finish({ status: 0, body: 'closed' }));
      if (mode === 'other')
        c1.on('close', () => t1 === 0 && finish({ status: 0, body: 'closed (request 1)' }));
      c1.write(req(`/first?t=${tag}`));
    });
  } finally {
    c1.destroy();
    c2.destroy();
  }
}

/** Where request 1 and request 2 of trial `tag` reached the upstream. */
export function placed(heads: readonly HeadSeen[], tag: string | number) {
  const first = heads.find((h) => h.path === `/first?t=${tag}`);
  const second = heads.find((h) => h.path === `/second?t=${tag}`);
  return {
    first,
    second,
    /** Request 2 went out on request 1's upstream connection. */
    reused: first !== undefined && second !== undefined && first.conn === second.conn,
  };
}

export interface Front {
  readonly name: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Sluice in this process in front of `upstreamUrl`, pooling as configured by default. */
export async function sluiceFront(up: { url: string }): Promise<Front> {
  const gw = await startTestGateway(`
upstreams:
  late: { targets: ["${up.url}"] }
routes:
  - { name: late, match: { path: / }, upstream: late, timeouts: { total: 3s } }
`);
  return { name: 'sluice', port: gw.port, close: () => gw.close() };
}

/** Why the nginx side is skipped (not installed, outside CI), or false. */
export const NGINX_SKIP: string | false =
  NGINX === undefined && !process.env.CI ? 'nginx is not installed (apt-get install nginx-light)' : false;

/** nginx with `keepalive 8` in front of the upstream on `up.port`. */
export async function nginxFront(up: { port: number }): Promise<Front> {
  const n = await startNginxProxy(up.port, { keepalive: 8 });
  return { name: 'nginx', port: n.port, close: () => n.stop() };
}

interface Scenario {
  readonly name: string;
  readonly delay: Delay;
  readonly nagle?: boolean;
  /** When request 2 goes: at once (0), ms later, or `closed`: once the gateway closed request 1's connection. */
  readonly gap: number | 'closed';
}

const SCENARIOS: Scenario[] = [
  { name: 'same write, request 2 at once', delay: 'same-write', gap: 0 },
  { name: '1 ms later, request 2 once the gateway closed the connection', delay: 1, gap: 'closed' },
  { name: '0 ms later (next loop turn), request 2 at once', delay: 0, gap: 0 },
  { name: '1 ms later, request 2 at once', delay: 1, gap: 0 },
  { name: '5 ms later, request 2 at once', delay: 5, gap: 0 },
  { name: '50 ms later, request 2 at once', delay: 50, gap: 0 },
  { name: '1 ms later, request 2 10 ms after request 1', delay: 1, gap: 10 },
  { name: 'Nagle on: 1 ms later, request 2 10 ms after request 1 (the rig)', delay: 1, nagle: true, gap: 10 },
];

/**
 * The experiment behind the table in docs/reliability.md: `npx node test/reliability/late-bytes.ts [trials]`.
 * Each cell: what request 2 got over `trials` trials, and how often it went out on request 1's upstream
 * connection. The last column: of Sluice's `evil` answers, how many had the late bytes written before
 * undici wrote request 2 (both clocks in this process; 0 means every one arrived after request 2 went out).
 */
async function main(): Promise<void> {
  const trials = Number(process.argv[2] ?? 10);
  const sentAt = new Map<string, number>();
  const { subscribe } = await import('node:diagnostics_channel');
  subscribe('undici:client:sendHeaders', (m) => {
    sentAt.set((m as { request: { path: string } }).request.path, performance.now());
  });
  const fronts = NGINX === undefined ? [sluiceFront] : [sluiceFront, nginxFront];
  console.log(
    `| late response (upstream TCP_NODELAY unless said) | Sluice, same client conn | Sluice, other | ${NGINX === undefined ? '' : 'nginx, same | nginx, other | '}Sluice's evil, late bytes written before request 2 |`,
  );
  console.log(`| --- | --- | --- |${NGINX === undefined ? '' : ' --- | --- |'} --- |`);
  for (const sc of SCENARIOS) {
    const cells: string[] = [];
    let evil = 0;
    let early = 0;
    for (const start of fronts) {
      for (const mode of ['same', 'other'] as const) {
        const up = await startLateUpstream(sc.delay, { nagle: sc.nagle ?? false });
        const front = await start(up);
        const got = new Map<string, number>();
        let reused = 0;
        for (let t = 0; t < trials; t++) {
          const gap =
            sc.gap === 'closed' ? () => up.whenClosed((placed(up.heads, t).first as HeadSeen).conn) : sc.gap;
          const o = await trial(front.port, mode, t, { warm: 2, gap });
          const key = o.status === 200 ? o.body : `${o.status} ${o.body.slice(0, 40)}`;
          got.set(key, (got.get(key) ?? 0) + 1);
          // Settled: request 1's connection is closed once its surplus bytes came while idle, and request 2's
          // head has been read (it can be answered by late bytes before the upstream reads it).
          const first = placed(up.heads, t).first;
          if (first) await Promise.race([up.whenClosed(first.conn), sleep(300)]);
          const p = placed(up.heads, t);
          if (!p.reused || p.first === undefined) continue;
          reused++;
          if (start === sluiceFront && o.body === 'evil') {
            evil++;
            const lateAt = up.lateAt.get(p.first.conn) ?? Number.POSITIVE_INFINITY;
            if (lateAt < (sentAt.get(`/second?t=${t}`) ?? 0)) early++;
          }
        }
        cells.push(`${[...got].map(([k, v]) => `${k} ${v}`).join(', ')} (reused ${reused})`);
        await front.close();
        await up.close();
      }
    }
    console.log(`| ${sc.name} | ${cells.join(' | ')} | ${evil === 0 ? '–' : `${early} of ${evil}`} |`);
  }
}

if (import.meta.main) await main();
