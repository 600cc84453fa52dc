/**
 * The primary's side of `workers: N` (SPEC §10): N − 1 worker processes beside the primary, which
 * serves traffic too. Each is a `child_process.fork` of worker-main.ts that listens on the primary's
 * ports with SO_REUSEPORT, so the kernel hands each new connection to one of the listening processes
 * (no connection passes through the primary, unlike node:cluster's round-robin mode; see
 * docs/operations.md#workers for why and the figures).
 *
 * A worker that exits while the instance is running is started again after a back-off (100 ms,
 * doubling up to 10 s; reset once a worker has run for 30 s), and both are logged. Finished requests
 * reach `onEntries`; each worker's gauges are kept from its last snapshot.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Decision, RateLimiter } from '../../access/rate-limit.ts';
import type { EffectiveConfig } from '../../config/resolve.ts';
import type { PeerMessage } from '../../jobs/sqlite-job-store.ts';
import type { AccessLogEntry } from '../../observability/access-log.ts';
import type { Logger } from '../../observability/logger.ts';
import { type ToPrimary, type ToWorker, WORKER_ENTRY, type WorkerSnapshot } from './protocol.ts';

const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 10_000;
/** A worker that ran this long is healthy: its next exit restarts after the minimum back-off. */
const STABLE_MS = 30_000;
/** How long a worker may take to start (load, open the job store, listen). */
const START_TIMEOUT_MS = 15_000;

export interface WorkerPoolOptions {
  /** Worker processes to run beside the primary. */
  readonly count: number;
  /** The config a (re)started worker gets: the current one, live changes included. */
  readonly config: () => EffectiveConfig;
  /** The ports the primary bound, in listener order. */
  readonly ports: readonly number[];
  /** Queue-mode deliveries each worker runs (the instance's `jobs.workers`, shared out). */
  readonly queueDeliveries: number;
  readonly logger: Logger;
  /** A batch of finished requests from worker `index` (1…count). */
  readonly onEntries: (entries: readonly AccessLogEntry[], index: number) => void;
  /** The instance's rate-limit buckets, which workers' requests take their tokens from. */
  readonly rateLimiter?: RateLimiter;
  /** A shared SQLite store's peer message from worker `index` (already relayed to the others). */
  readonly onJobPeer?: (msg: PeerMessage) => void;
}

interface Slot {
  readonly index: number;
  child: ChildProcess | undefined;
  pid: number | undefined;
  startedAt: number;
  failures: number;
  snapshot: WorkerSnapshot | undefined;
  timer: NodeJS.Timeout | undefined;
  exited: Promise<void>;
}

/** Node flags to pass on to workers (heap and GC tuning), not those of a test runner or debugger. */
function execArgv(): string[] {
  return process.execArgv.filter(
    (a) => !a.startsWith('--test') && !a.startsWith('--inspect') && !a.startsWith('--experimental-test'),
  );
}

export class WorkerPool {
  readonly #o: WorkerPoolOptions;
  readonly #slots: Slot[];
  #stopping = false;
  /** Workers started again after an exit, since the instance started. */
  restarts = 0;

  constructor(options: WorkerPoolOptions) {
    this.#o = options;
    this.#slots = Array.from({ length: options.count }, (_, i) => ({
      index: i + 1,
      child: undefined,
      pid: undefined,
      startedAt: 0,
      failures: 0,
      snapshot: undefined,
      timer: undefined,
      exited: Promise.resolve(),
    }));
  }

  /** Starts every worker; rejects (after stopping those that did start) if one cannot start. */
  async start(): Promise<void> {
    try {
      await Promise.all(this.#slots.map((s) => this.#spawn(s)));
    } catch (err) {
      await this.stop(0);
      throw err;
    }
  }

  /** Worker processes running now (not counting the primary). */
  get running(): number {
    return this.#slots.filter((s) => s.child !== undefined).length;
  }

  /** Process ids of the running workers, in slot order. */
  get pids(): number[] {
    return this.#slots.flatMap((s) => (s.pid === undefined ? [] : [s.pid]));
  }

  /** The last snapshot of every running worker. */
  get snapshots(): WorkerSnapshot[] {
    return this.#slots.flatMap((s) => (s.snapshot === undefined ? [] : [s.snapshot]));
  }

  /** Sends to every running worker (but the one numbered `except`). */
  broadcast(message: ToWorker, except?: number): void {
    for (const s of this.#slots) {
      if (s.index === except) continue;
      const c = s.child;
      if (!c?.connected) continue;
      try {
        c.send(message, (err) => err && this.#o.logger.debug({ err: err.message }));
      } catch (err) {
        this.#o.logger.error({ worker: s.index, error: (err as Error).message }, 'message to worker failed');
      }
    }
  }

  /** Tells every worker to drain for up to `graceMs` and waits for them (killed 5 s after that). */
  async stop(graceMs: number): Promise<void> {
    this.#stopping = true;
    for (const s of this.#slots) clearTimeout(s.timer);
    this.broadcast({ type: 'shutdown', graceMs });
    const deadline = setTimeout(() => {
      for (const s of this.#slots) s.child?.kill('SIGKILL');
    }, graceMs + 5_000);
    await Promise.all(this.#slots.map((s) => s.exited));
    clearTimeout(deadline);
  }

  #spawn(slot: Slot, initial = true): Promise<void> {
    const child = fork(fileURLToPath(WORKER_ENTRY), [], {
      execArgv: execArgv(),
      serialization: 'advanced',
      env: { ...process.env, SLUICE_WORKER: String(slot.index) },
    });
    slot.child = child;
    slot.pid = child.pid;
    slot.startedAt = performance.now();
    slot.snapshot = undefined;
    let resolveExit = () => {};
    slot.exited = new Promise<void>((resolve) => {
      resolveExit = resolve;
    });
    return new Promise<void>((resolve, reject) => {
      let started = false;
      const startTimer = setTimeout(() => {
        if (started) return;
        reject(new Error(`worker ${slot.index} did not start within ${START_TIMEOUT_MS / 1000}s`));
        child.kill('SIGKILL');
      }, START_TIMEOUT_MS);
      child.on('message', (m: ToPrimary) => {
        switch (m.type) {
          case 'ready':
            started = true;
            clearTimeout(startTimer);
            this.#o.logger.info({ worker: slot.index, pid: m.pid }, 'worker started');
            resolve();
            break;
          case 'entries':
            this.#o.onEntries(m.entries, slot.index);
            break;
          case 'snapshot':
            slot.snapshot = m.snapshot;
            break;
          case 'rate': {
            const { seq, key, policy } = m.request;
            const answer = (decision: Decision) =>
              child.connected && child.send({ type: 'rate-result', seq, decision } satisfies ToWorker);
            const d = this.#o.rateLimiter?.take(key, policy);
            if (d === undefined) answer({ allowed: true, remaining: 0, resetMs: 0, retryAfterMs: 0 });
            else if (d instanceof Promise) void d.then(answer);
            else answer(d);
            break;
          }
          case 'job-peer':
            this.broadcast(m, slot.index);
            this.#o.onJobPeer?.(m.msg);
            break;
          case 'failed':
            clearTimeout(startTimer);
            if (!started) reject(new Error(`worker ${slot.index}: ${m.error}`));
            else this.#o.logger.error({ worker: slot.index, error: m.error }, 'worker failed');
            break;
          case 'bye':
            break;
        }
      });
      child.on('error', (err) =>
        this.#o.logger.error({ worker: slot.index, error: err.message }, 'worker error'),
      );
      child.once('exit', (code, signal) => {
        clearTimeout(startTimer);
        slot.child = undefined;
        slot.pid = undefined;
        slot.snapshot = undefined;
        resolveExit();
        if (!started)
          reject(new Error(`worker ${slot.index} exited while starting (code ${code}, signal ${signal})`));
        // A worker that cannot start at all stops the instance's start; a restart that fails is tried
        // again, further apart each time.
        if (this.#stopping || (!started && initial)) return;
        const ranMs = performance.now() - slot.startedAt;
        slot.failures = ranMs >= STABLE_MS ? 0 : slot.failures + 1;
        const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.max(0, slot.failures - 1));
        this.#o.logger.warn(
          {
            worker: slot.index,
            pid: child.pid,
            code,
            signal,
            ran_ms: Math.round(ranMs),
            restart_in_ms: delay,
          },
          'worker exited; starting a new one',
        );
        slot.timer = setTimeout(() => {
          if (this.#stopping) return;
          this.restarts++;
          this.#spawn(slot, false).catch((err: Error) =>
            this.#o.logger.error({ worker: slot.index, error: err.message }, 'worker restart failed'),
          );
        }, delay);
      });
      try {
        child.send({
          type: 'init',
          config: this.#o.config(),
          ports: [...this.#o.ports],
          index: slot.index,
          queueDeliveries: this.#o.queueDeliveries,
        } satisfies ToWorker);
      } catch (err) {
        // A config that cannot cross (not structured-cloneable): this worker can never start.
        clearTimeout(startTimer);
        reject(new Error(`worker ${slot.index}: the config cannot be sent: ${(err as Error).message}`));
        child.kill('SIGKILL');
      }
    });
  }
}
