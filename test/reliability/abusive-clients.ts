/**
 * Clients for the slow-and-abusive-clients battery (issue 14, docs/reliability.md): a well-behaved
 * client that measures its own latency, `slowhttptest` attacks kept up for a window, raw-socket probes
 * that time when the gateway's client timeouts cut them, idle keep-alive connections and requests
 * that hang at the upstream. Used by test/reliability/slow-clients.test.ts (bounded) and
 * scripts/slow-clients.ts (full size). Real sockets on loopback only; everything is bounded in count
 * and time and closed by its caller.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'undici';

export const SLOWHTTPTEST = '/usr/bin/slowhttptest';
export const hasSlowhttptest = () => existsSync(SLOWHTTPTEST);

/** p-th percentile (0–100) of an ascending array (nearest rank). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export interface LatencyFigures {
  n: number;
  errors: number;
  p50: number;
  p99: number;
  max: number;
}

export function figures(latencies: number[], errors: number): LatencyFigures {
  const s = [...latencies].sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 100) / 100;
  return { n: s.length, errors, p50: r(percentile(s, 50)), p99: r(percentile(s, 99)), max: r(s.at(-1) ?? 0) };
}

/**
 * The well-behaved client: `concurrency` (default 2) keep-alive connections, each sending `GET path`
 * one after the other with `pauseMs` (default 10) between them, for `seconds`: a paced client (about
 * 150 requests/s), not a load generator; the latency of every request in ms. A request
 * that fails or is not answered within `timeoutMs` counts as an error (and its latency is kept, so a
 * stall shows in p99).
 */
export async function goodClient(
  origin: string,
  opts: { path?: string; seconds: number; concurrency?: number; timeoutMs?: number; pauseMs?: number },
): Promise<LatencyFigures & { latencies: number[] }> {
  const concurrency = opts.concurrency ?? 2;
  const pauseMs = opts.pauseMs ?? 10;
  const pool = new Pool(origin, { connections: concurrency });
  const latencies: number[] = [];
  let errors = 0;
  const end = performance.now() + opts.seconds * 1000;
  const worker = async () => {
    while (performance.now() < end) {
      const t = performance.now();
      try {
        const res = await pool.request({
          path: opts.path ?? '/fast',
          method: 'GET',
          headersTimeout: opts.timeoutMs ?? 5_000,
          bodyTimeout: opts.timeoutMs ?? 5_000,
        });
        await res.body.dump();
        if (res.statusCode !== 200) errors++;
      } catch {
        errors++;
      }
      latencies.push(performance.now() - t);
      if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  await pool.close();
  return { ...figures(latencies, errors), latencies };
}

/** One slowhttptest run's CSV: per second, connections closed / pending / connected. */
export interface AttackRow {
  seconds: number;
  closed: number;
  pending: number;
  connected: number;
}

export interface Attack {
  /** Resolves when the window is over and the last run has exited. */
  readonly done: Promise<{ runs: number; maxConnected: number; rows: AttackRow[] }>;
  /** Ends the current run at once (SIGTERM to the slowhttptest process it started). */
  stop(): void;
}

/**
 * Keeps a slowhttptest attack up for `seconds`: slowhttptest ends once the server has closed all its
 * connections (which a gateway with client timeouts does), so it is started again until the window
 * is over. `args` are slowhttptest's own (`-H`, `-B`, `-X` …, without `-u`, `-l`, `-g`, `-o`).
 */
export function slowhttptest(url: string, args: string[], seconds: number): Attack {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-slowhttptest-'));
  const end = Date.now() + seconds * 1000;
  let current: ChildProcess | undefined;
  let stopped = false;
  const rows: AttackRow[] = [];
  let runs = 0;
  let maxConnected = 0;
  const done = (async () => {
    while (!stopped && Date.now() < end - 1_000) {
      const left = Math.max(1, Math.ceil((end - Date.now()) / 1000));
      const out = join(dir, `run${runs}`);
      runs++;
      current = spawn(SLOWHTTPTEST, [...args, '-l', String(left), '-u', url, '-g', '-o', out], {
        stdio: 'ignore',
        cwd: dir,
      });
      await new Promise<void>((resolve) => current?.once('exit', () => resolve()));
      current = undefined;
      const csv = `${out}.csv`;
      if (existsSync(csv))
        for (const line of readFileSync(csv, 'utf8').trim().split('\n').slice(1)) {
          const [s, closed, pending, connected] = line.split(',').map(Number);
          rows.push({ seconds: s, closed, pending, connected });
          maxConnected = Math.max(maxConnected, connected);
        }
    }
    rmSync(dir, { recursive: true, force: true });
    return { runs, maxConnected, rows };
  })();
  return {
    done,
    stop() {
      stopped = true;
      current?.kill('SIGTERM');
    },
  };
}

/** Resident memory of a process, KiB (VmRSS). */
export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** Samples a process's RSS every `everyMs` until stopped; returns the peak (KiB). */
export function rssPeak(pid: number, everyMs = 250): { stop(): number } {
  let peak = rssKiB(pid);
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, rssKiB(pid));
    } catch {}
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, rssKiB(pid));
    },
  };
}

export interface Cut {
  /** ms from the connection's open (or the request's first byte) until the gateway closed it. */
  ms: number;
  /** The status line's code the gateway answered with before closing, 0 for none. */
  status: number;
  body: string;
}

function collect(socket: Socket, t0: number): Promise<Cut> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => {});
    socket.once('close', () => {
      const raw = Buffer.concat(chunks).toString('latin1');
      const status = /^HTTP\/1\.1 (\d{3})/.exec(raw);
      resolve({
        ms: performance.now() - t0,
        status: status ? Number(status[1]) : 0,
        body: raw.slice(raw.indexOf('\r\n\r\n') + 4),
      });
    });
  });
}

/**
 * Slowloris probes: `n` connections that send a request head one header line every `everyMs` and
 * never finish it. Resolves with when (after connecting) the gateway cut each one. `maxMs` bounds the
 * wait (a probe still open then counts with status 0 and is destroyed).
 */
export async function slowlorisProbes(
  port: number,
  n: number,
  everyMs: number,
  maxMs: number,
): Promise<Cut[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const socket = connect(port, '127.0.0.1');
      socket.setNoDelay(true);
      await new Promise<void>((r) => socket.once('connect', () => r()));
      const t0 = performance.now();
      socket.write('GET /fast HTTP/1.1\r\nHost: probe\r\n');
      let i = 0;
      const drip = setInterval(() => {
        if (socket.writable) socket.write(`X-Drip-${i++}: ${'a'.repeat(8)}\r\n`);
      }, everyMs);
      const guard = setTimeout(() => socket.destroy(), maxMs);
      const cut = await collect(socket, t0);
      clearInterval(drip);
      clearTimeout(guard);
      return cut;
    }),
  );
}

/**
 * Slow-body probes: `n` requests `POST path` announcing `contentLength` bytes and sending one byte
 * every `everyMs` (`stopAfter` bytes, then nothing). Times from the end of the head to the cut.
 */
export async function slowBodyProbes(
  port: number,
  n: number,
  opts: { path: string; contentLength: number; everyMs: number; stopAfter?: number; maxMs: number },
): Promise<Cut[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const socket = connect(port, '127.0.0.1');
      socket.setNoDelay(true);
      await new Promise<void>((r) => socket.once('connect', () => r()));
      const t0 = performance.now();
      socket.write(
        `POST ${opts.path} HTTP/1.1\r\nHost: probe\r\nContent-Type: text/plain\r\nContent-Length: ${opts.contentLength}\r\n\r\n`,
      );
      let sent = 0;
      const drip = setInterval(() => {
        if (sent < (opts.stopAfter ?? opts.contentLength - 1) && socket.writable) {
          socket.write('x');
          sent++;
        }
      }, opts.everyMs);
      const guard = setTimeout(() => socket.destroy(), opts.maxMs);
      const cut = await collect(socket, t0);
      clearInterval(drip);
      clearTimeout(guard);
      return cut;
    }),
  );
}

/**
 * Slow-read probes: `n` connections that send `GET path` with an `X-Request-Id` of `idPrefix-i` and
 * never read the response (the socket is paused, so the kernel buffers fill and the gateway's writes
 * wait). They are held for `holdMs`, then destroyed; the gateway's access log tells when it cut them.
 */
export async function slowReadProbes(
  port: number,
  n: number,
  opts: { path: string; idPrefix: string; holdMs: number },
): Promise<void> {
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const socket = connect(port, '127.0.0.1');
      socket.on('error', () => {});
      socket.pause();
      await new Promise<void>((r) => socket.once('connect', () => r()));
      socket.write(`GET ${opts.path} HTTP/1.1\r\nHost: probe\r\nX-Request-Id: ${opts.idPrefix}-${i}\r\n\r\n`);
      await new Promise((r) => setTimeout(r, opts.holdMs));
      socket.destroy();
    }),
  );
}

/**
 * Opens `n` keep-alive connections, each after one complete `GET path`, and leaves them idle (at most
 * `parallel` opening at a time). The caller destroys them.
 */
export async function idleConnections(
  port: number,
  n: number,
  path = '/fast',
  parallel = 200,
): Promise<Socket[]> {
  const sockets: Socket[] = [];
  let next = 0;
  const one = () =>
    new Promise<Socket>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1');
      socket.on('error', reject);
      let got = '';
      const onData = (c: Buffer) => {
        got += c.toString('latin1');
        const end = got.indexOf('\r\n\r\n');
        if (end === -1) return;
        const length = Number(/content-length: *(\d+)/i.exec(got.slice(0, end))?.[1] ?? 0);
        if (got.length - end - 4 < length) return;
        socket.off('data', onData);
        socket.off('error', reject);
        socket.on('error', () => {});
        resolve(socket);
      };
      socket.on('data', onData);
      socket.write(`GET ${path} HTTP/1.1\r\nHost: idle\r\n\r\n`);
    });
  await Promise.all(
    Array.from({ length: Math.min(parallel, n) }, async () => {
      while (next < n) {
        next++;
        sockets.push(await one());
      }
    }),
  );
  return sockets;
}

/** How many of these sockets the other side has not closed. */
export const stillOpen = (sockets: readonly Socket[]) =>
  sockets.filter((s) => !s.destroyed && s.readyState === 'open').length;

export interface Hung {
  /** Client-side ms from sending the request to the complete response. */
  ms: number;
  status: number;
  /** From the problem body. */
  phase?: string;
  timeout_ms?: number;
  elapsed_ms?: number;
}

/**
 * Sends `n` requests `GET path` that the upstream never answers, each on its own connection (all
 * sent at once, at most `parallel` connecting at a time), and resolves with each one's answer.
 */
export async function hangingRequests(
  port: number,
  n: number,
  path: string,
  parallel = 500,
): Promise<Hung[]> {
  const out: Promise<Hung>[] = [];
  const one = () =>
    new Promise<Hung>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      let t0 = 0;
      socket.once('connect', () => {
        t0 = performance.now();
        socket.write(`GET ${path} HTTP/1.1\r\nHost: hang\r\nConnection: close\r\n\r\n`);
      });
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('error', () => {});
      socket.once('close', () => {
        const raw = Buffer.concat(chunks).toString('latin1');
        const ms = performance.now() - t0;
        const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1] ?? 0);
        let body: Partial<Hung> = {};
        try {
          body = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4));
        } catch {}
        resolve({ ms, status, phase: body.phase, timeout_ms: body.timeout_ms, elapsed_ms: body.elapsed_ms });
      });
    });
  // Connections are opened in waves so that the listen backlog never overflows.
  for (let i = 0; i < n; i += parallel) {
    const wave = Array.from({ length: Math.min(parallel, n - i) }, one);
    out.push(...wave);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Promise.all(out);
}

/** Raises this process's open-files limit (children inherit it); returns the soft limit now in force. */
export function raiseOpenFiles(want: number): number {
  const limits = () => {
    const m = /Max open files\s+(\d+)\s+(\d+)/.exec(readFileSync(`/proc/${process.pid}/limits`, 'utf8'));
    return m ? { soft: Number(m[1]), hard: Number(m[2]) } : { soft: 0, hard: 0 };
  };
  const { soft, hard } = limits();
  if (soft >= want) return soft;
  try {
    // Above the hard limit only as root; never lowers it.
    const h = Math.max(want, hard);
    execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${want}:${h}`], { stdio: 'ignore' });
  } catch {
    try {
      execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${hard}:${hard}`], {
        stdio: 'ignore',
      });
    } catch {}
  }
  return limits().soft;
}
