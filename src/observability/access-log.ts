/**
 * The access log: one JSON line per request (SPEC §7), batched and written off the request path
 * (BatchedLineWriter below) to stdout, stderr or a file.
 */
import fs from 'node:fs';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import type { Outcome, Phase } from '../errors.ts';
import { compileLogFormat, REQUEST_OF } from './log-format.ts';

export { REQUEST_OF } from './log-format.ts';

export interface AccessLogEntry {
  time: string;
  request_id: string;
  method: string;
  path: string;
  route: string | null;
  upstream: string | null;
  target: string | null;
  status: number;
  outcome: Outcome;
  phase: Phase | null;
  /** Stable error code (problem type suffix) when the gateway answered with an error. */
  error: string | null;
  client: string | undefined;
  bytes_in: number;
  bytes_out: number;
  attempts: number;
  retries: number;
  /** Why each earlier try ended (`connect`, `reset`, `ttfb-timeout`, `503`, `stale-connection`), when retried. */
  tries?: string[];
  /** The target of each earlier try (same order as `tries`), when retried. */
  tried_targets?: string[];
  /** Milliseconds; null when the phase did not happen (e.g. connect on a reused connection is 0). */
  dns: number | null;
  connect: number | null;
  tls: number | null;
  ttfb: number | null;
  total: number;
  /** Budget (ms) of the route's total timeout that applied to this request, 0 when disabled. */
  budget_ms: number;
  /**
   * Who set `budget_ms`: `route` (the route's configured total) or `client` (a shorter incoming
   * `x-timeout-ms`). A timeout with `client` was the client's choice and never counts against the
   * upstream (breaker, outlier ejection, retry budget, latency windows, headroom, alerts).
   */
  budget_source?: 'route' | 'client';
  /**
   * The job this line is about: on the 202 that created it, on every request to the job resource,
   * and on the line written when the job ends (outcome `job_completed | job_failed | job_cancelled`,
   * whose `request_id` is the one of the request that created the job and whose `total` is the
   * time from that request's arrival to the job's end).
   */
  job?: string;
  /** Upstream Server-Timing entries, name → duration in ms. */
  upstream_timing?: Record<string, number>;
  /** The RFC 9211 Cache-Status sent, on routes with a response cache. */
  cache?: string;
  /** The Content-Encoding Sluice gave the response (compress), when it did; `bytes_out` counts the body before it. */
  encoding?: string;
  /** `HTTP/2.0` for a request that came over HTTP/2; absent for HTTP/1.x. */
  protocol?: string;
  /** The request itself, for text formats (`$http_user_agent`…); a symbol key, never in the JSON line. */
  [REQUEST_OF]?: IncomingMessage;
}

export interface AccessLog {
  write(entry: AccessLogEntry): void;
  /** Flushes buffered lines; call before exit. */
  flush(): void;
  /** Reopens a log file by its path (SIGUSR1, after logrotate renamed it); no-op for stdout/stderr. */
  reopen?(): void;
}

export const nullAccessLog: AccessLog = { write() {}, flush() {} };

/**
 * Batches lines and writes them with one `fs.write` at a time off the main thread: a line costs an
 * array push, a batch (≥ 64 KiB, or whatever came within 200 ms) one syscall. pino's sonic-boom was
 * used first, but it measures the byte length of its whole growing buffer on every write, which cost
 * a quarter of the gateway's throughput (docs/benchmarks.md). A backlog beyond 16 MiB (a stuck disk)
 * drops lines and counts them rather than growing without bound or blocking requests.
 */
export class BatchedLineWriter {
  #fd: number;
  readonly #ownsFd: boolean;
  /** The file to open again on reopen() (undefined for stdout/stderr). */
  readonly #path: string | undefined;
  #reopenWanted = false;
  #pending: string[] = [];
  #pendingChars = 0;
  #writing = false;
  #closed = false;
  readonly #timer: NodeJS.Timeout;
  /**
   * Several processes write to this pipe (workers sharing stdout): each write holds whole lines and
   * at most PIPE_BUF bytes, which the kernel never interleaves with another process's write.
   */
  readonly #pipeShared: boolean;
  /** Lines dropped because the backlog was full. */
  dropped = 0;
  #reported = 0;

  constructor(fd: number, ownsFd: boolean, file?: string, shared = false) {
    let pipe = false;
    try {
      const st = fs.fstatSync(fd);
      pipe = st.isFIFO() || st.isSocket();
    } catch {}
    this.#pipeShared = shared && pipe;
    this.#fd = fd;
    this.#ownsFd = ownsFd;
    this.#path = file;
    this.#timer = setInterval(() => {
      this.#flushAsync();
      if (this.dropped > this.#reported) {
        // Say so on the operational log (stderr), at most every 200 ms.
        process.stderr.write(
          `${JSON.stringify({ level: 40, time: new Date().toISOString(), dropped: this.dropped - this.#reported, msg: 'access log backlog full: lines dropped' })}\n`,
        );
        this.#reported = this.dropped;
      }
    }, 200);
    this.#timer.unref();
  }

  write(line: string): void {
    if (this.#pendingChars > 16 * 1024 * 1024) {
      this.dropped++;
      return;
    }
    this.#pending.push(line);
    this.#pendingChars += line.length;
    if (this.#pendingChars >= 64 * 1024) this.#flushAsync();
  }

  #take(): Buffer | undefined {
    if (this.#pending.length === 0) return undefined;
    if (this.#pipeShared) return this.#takeAtomic();
    const data = Buffer.from(this.#pending.join(''));
    this.#pending = [];
    this.#pendingChars = 0;
    return data;
  }
  /** Whole lines up to PIPE_BUF (4096) bytes; a longer line goes alone (it cannot be atomic). */
  #takeAtomic(): Buffer {
    let bytes = 0;
    let n = 0;
    for (const line of this.#pending) {
      const b = Buffer.byteLength(line);
      if (n > 0 && bytes + b > 4096) break;
      bytes += b;
      n++;
    }
    const taken = this.#pending.splice(0, n);
    const data = Buffer.from(taken.join(''));
    for (const line of taken) this.#pendingChars -= line.length;
    return data;
  }

  /**
   * Opens the file again by its path (logrotate renamed it): lines written so far, and those pending,
   * go to the old file (the renamed one), every later line to the new one. A write in progress
   * finishes on the old file first.
   */
  reopen(): void {
    if (this.#path === undefined || this.#closed) return;
    this.#reopenWanted = true;
    if (!this.#writing) this.#swap();
  }

  #swap(): void {
    this.#reopenWanted = false;
    const data = this.#take();
    if (data !== undefined) this.#writeAllSync(data);
    let fd: number;
    try {
      fs.mkdirSync(path.dirname(this.#path as string), { recursive: true });
      fd = fs.openSync(this.#path as string, 'a');
    } catch (err) {
      process.stderr.write(
        `${JSON.stringify({ level: 50, time: new Date().toISOString(), file: this.#path, error: (err as Error).message, msg: 'access log could not be reopened; writing on to the old file' })}\n`,
      );
      return;
    }
    const old = this.#fd;
    this.#fd = fd;
    if (this.#ownsFd) fs.closeSync(old);
  }

  #writeAllSync(data: Buffer): void {
    let off = 0;
    while (off < data.length) {
      try {
        off += fs.writeSync(this.#fd, data, off);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') break;
      }
    }
  }

  #flushAsync(): void {
    if (this.#writing || this.#closed) return;
    if (this.#reopenWanted) this.#swap();
    const data = this.#take();
    if (data !== undefined) this.#send(data, 0);
  }

  #send(data: Buffer, offset: number): void {
    this.#writing = true;
    fs.write(this.#fd, data, offset, data.length - offset, null, (err, written) => {
      if (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
          // A full pipe (stdout to a slow reader): try again shortly.
          setTimeout(() => this.#send(data, offset), 20).unref();
          return;
        }
        this.#writing = false;
        if (this.#reopenWanted) this.#swap();
        return; // The log target is gone (disk, pipe): keep serving; lines of this batch are lost.
      }
      if (offset + written < data.length) return this.#send(data, offset + written);
      this.#writing = false;
      if (this.#reopenWanted) this.#swap();
      if (this.#pendingChars >= 64 * 1024 || (this.#pipeShared && this.#pending.length > 0))
        this.#flushAsync();
    });
  }

  /** Writes everything pending synchronously (at shutdown). */
  flushSync(): void {
    clearInterval(this.#timer);
    for (let data = this.#take(); data !== undefined; data = this.#take()) this.#writeAllSync(data);
  }

  close(): void {
    this.flushSync();
    this.#closed = true;
    if (this.#ownsFd) fs.closeSync(this.#fd);
  }
}

/**
 * `dest`: 'stdout' | 'stderr' | 'off' | a file path (created with its directory, appended to);
 * `format`: json | combined | an nginx-style template (log-format.ts), checked at config load.
 * `shared`: other processes write to the same stdout/stderr (workers).
 */
export function createAccessLog(dest: string, format = 'json', shared = false): AccessLog {
  if (dest === 'off') return nullAccessLog;
  let writer: BatchedLineWriter;
  if (dest === 'stdout' || dest === 'stderr')
    writer = new BatchedLineWriter(dest === 'stdout' ? 1 : 2, false, undefined, shared);
  else {
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    writer = new BatchedLineWriter(fs.openSync(dest, 'a'), true, dest);
  }
  const line = compileLogFormat(format);
  return {
    write(entry) {
      writer.write(line(entry));
    },
    flush() {
      writer.flushSync();
    },
    reopen() {
      writer.reopen();
    },
  };
}

/** A collecting access log for tests and tools. */
export class MemoryAccessLog implements AccessLog {
  readonly entries: AccessLogEntry[] = [];
  #waiters: { pred: (e: AccessLogEntry) => boolean; resolve: (e: AccessLogEntry) => void }[] = [];
  write(entry: AccessLogEntry): void {
    this.entries.push(entry);
    this.#waiters = this.#waiters.filter((w) => {
      if (!w.pred(entry)) return true;
      w.resolve(entry);
      return false;
    });
  }
  flush(): void {}
  /** Resolves with the first entry (already written or future) that satisfies `pred`. */
  next(pred: (e: AccessLogEntry) => boolean = () => true): Promise<AccessLogEntry> {
    const found = this.entries.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve) => this.#waiters.push({ pred, resolve }));
  }
}

let lastIsoMs = 0;
let lastIso = '';
let isoSecond = -1;
let isoPrefix = '';
/**
 * `new Date().toISOString()`, computed at most once per millisecond, and by V8's date formatting at
 * most once per second: within a second only the milliseconds change (callgrind: toISOString cost
 * ~7,600 instructions a call, which a quiet gateway paid on nearly every request).
 */
export function isoNow(ms = Date.now()): string {
  if (ms !== lastIsoMs) {
    lastIsoMs = ms;
    const second = Math.floor(ms / 1000);
    if (second !== isoSecond) {
      isoSecond = second;
      isoPrefix = new Date(second * 1000).toISOString().slice(0, 20); // 2026-12-03T07:00:00.
    }
    const frac = ms - second * 1000;
    lastIso = `${isoPrefix}${frac < 10 ? '00' : frac < 100 ? '0' : ''}${frac}Z`;
  }
  return lastIso;
}

/** What a line of a request the gateway answered itself (no upstream exchange) is made of. */
export interface AnsweredRequest {
  readonly method: string;
  readonly path: string;
  readonly requestId: string;
  /** performance.now() when the request arrived. */
  readonly startedAt: number;
  readonly client: string | undefined;
  /** The request, for text log formats ($http_NAME). */
  readonly req?: IncomingMessage;
  readonly route?: string | null;
  readonly upstream?: string | null;
  /** The route's total budget (ms), 0 when none. */
  readonly budgetMs?: number;
  readonly bytesIn?: number;
}

/** The access-log line of a request the gateway answered itself (no upstream exchange). */
export function answeredEntry(
  r: AnsweredRequest,
  status: number,
  outcome: Outcome,
  error: string | null,
): AccessLogEntry {
  return {
    time: isoNow(),
    request_id: r.requestId,
    method: r.method,
    path: r.path,
    route: r.route ?? null,
    upstream: r.upstream ?? null,
    target: null,
    status,
    outcome,
    phase: null,
    error,
    client: r.client,
    bytes_in: r.bytesIn ?? 0,
    bytes_out: 0,
    attempts: 0,
    retries: 0,
    dns: null,
    connect: null,
    tls: null,
    ttfb: null,
    total: Math.round((performance.now() - r.startedAt) * 100) / 100,
    budget_ms: r.budgetMs ?? 0,
    [REQUEST_OF]: r.req,
  };
}
