/**
 * The access log: one JSON line per request (SPEC §7), written off the request path by pino's
 * asynchronous destination (sonic-boom), to stdout, stderr or a file.
 */
import pino from 'pino';
import type { Outcome, Phase } from '../errors.ts';

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
  /** Milliseconds; null when the phase did not happen (e.g. connect on a reused connection is 0). */
  dns: number | null;
  connect: number | null;
  tls: number | null;
  ttfb: number | null;
  total: number;
  /** Budget (ms) of the route's total timeout that applied to this request, 0 when disabled. */
  budget_ms: number;
  /** Upstream Server-Timing entries, name → duration in ms. */
  upstream_timing?: Record<string, number>;
}

export interface AccessLog {
  write(entry: AccessLogEntry): void;
  /** Flushes buffered lines; call before exit. */
  flush(): void;
}

export const nullAccessLog: AccessLog = { write() {}, flush() {} };

/** `dest`: 'stdout' | 'stderr' | 'off' | a file path. */
export function createAccessLog(dest: string): AccessLog {
  if (dest === 'off') return nullAccessLog;
  const fd = dest === 'stdout' ? 1 : dest === 'stderr' ? 2 : undefined;
  // Lines are batched into writes of ≥ 8 KiB (one syscall for dozens of requests) and flushed at
  // least every 200 ms, so a quiet gateway's log is never more than that behind.
  const stream = pino.destination({
    dest: fd ?? dest,
    sync: false,
    mkdir: fd === undefined,
    minLength: 8 * 1024,
    periodicFlush: 200,
  });
  return {
    write(entry) {
      // The entry is a flat record of our own: no need for pino's serializers, only its writer.
      stream.write(`${JSON.stringify(entry)}\n`);
    },
    flush() {
      try {
        stream.flushSync();
      } catch {
        // Not yet open or already closed: nothing to flush.
      }
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
