/**
 * The messages between an instance's primary process and its worker processes (SPEC §10 `workers`),
 * over the IPC channel of `child_process.fork` with advanced (structured-clone) serialization, so an
 * effective config crosses as it is.
 *
 * The primary serves traffic like any worker and also owns what must exist once per instance: the
 * admin listener, metrics, latency windows, headroom, alerts and live views. Workers send it what
 * those are made of (every finished request's access-log entry, in batches) and a snapshot of their
 * gauges once a second; it sends them config changes, cache purges and the routes' recent latency.
 */
import type { Decision } from '../../access/rate-limit.ts';
import type { EffectiveConfig } from '../../config/resolve.ts';
import type { PeerMessage } from '../../jobs/sqlite-job-store.ts';
import type { AccessLogEntry } from '../../observability/access-log.ts';
import type { RateRequest } from './ipc-rate-limiter.ts';

/** A worker's gauges, summed by the primary with its own. */
export interface WorkerSnapshot {
  inflight: number;
  tunnels: number;
  cache: {
    /** route → result → count, since the worker started. */
    results: [string, [string, number][]][];
    entries: number;
    bytes: number;
    evictions: number;
  };
}

export type ToWorker =
  /** First message: what to serve, and the ports the primary bound (a config's port 0 resolved). */
  | { type: 'init'; config: EffectiveConfig; ports: number[]; index: number; queueDeliveries: number }
  /** A new config (file reload, POST /api/reload, a PATCH): applied to new requests. */
  | { type: 'reload'; config: EffectiveConfig }
  | { type: 'purge'; route: string | undefined; path: string | undefined }
  /** Each route's recent p50 and p5 (Retry-After of a 202, budget shedding), once a second. */
  | { type: 'recent'; routes: [string, number, number][] }
  /** The primary's answer to a worker's rate-limit request. */
  | { type: 'rate-result'; seq: number; decision: Decision }
  /** A job cancelled or ended in another process of the instance (a shared SQLite store). */
  | { type: 'job-peer'; msg: PeerMessage }
  /** Open the access-log file again by its path (SIGUSR1 to the primary, for logrotate). */
  | { type: 'reopen-logs' }
  /** Drain for up to graceMs, then exit. */
  | { type: 'shutdown'; graceMs: number };

export type ToPrimary =
  | { type: 'ready'; pid: number }
  /** Finished requests (and job ends, job-resource requests) since the last batch. */
  | { type: 'entries'; entries: AccessLogEntry[] }
  | { type: 'snapshot'; snapshot: WorkerSnapshot }
  /** One token of a bucket kept by the primary (rate limits without Redis). */
  | { type: 'rate'; request: RateRequest }
  /** A job this worker cancelled or ended: for the primary and the other workers. */
  | { type: 'job-peer'; msg: PeerMessage }
  /** Sent once the drain is done and every entry is flushed: the worker exits next. */
  | { type: 'bye' }
  /** Start-up failed (e.g. a port that cannot be bound): the message says why. */
  | { type: 'failed'; error: string };

/** The worker process's entry module (rewritten to .js in the built package). */
export const WORKER_ENTRY = new URL('./worker-main.ts', import.meta.url);
