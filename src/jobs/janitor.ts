/**
 * Periodic housekeeping of the job store: deletes jobs whose `keep` has passed (`purgeExpired`, every
 * 30 s), settles jobs whose holder's lease ran out (`recoverInterrupted`, non-exclusive: safe with several
 * instances on one store) every `recoverEveryMs` — a few seconds, so that a job held by an instance that
 * stopped is recovered within one `jobs.lease` plus 5 s (SPEC §10); the pass is cheap (Redis: one
 * ZRANGEBYSCORE over the lease deadlines, O(expired); SQLite: the running rows via an index) — and keeps a recent copy of the job counts for the metrics scrape (which
 * is synchronous). The startup recovery (exclusive, for a single SQLite instance) is the gateway's to
 * run once before serving; see docs/async.md.
 */
import { type Logger, silentLogger } from '../observability/logger.ts';
import type { JobCounts, JobStore, RecoveryReport } from './job-store.ts';

export interface JanitorOptions {
  readonly store: JobStore;
  /** Time between purge passes. Default 30 s. */
  readonly intervalMs?: number;
  /**
   * Time between recovery passes. Default 2 s: with `jobs.lease` L, a stopped instance's last lease ends
   * at most L after it stopped, and the next pass settles it (recovered within L + 2 s + a reply).
   */
  readonly recoverEveryMs?: number;
  /** Time between refreshes of `counts`. Default 5 s. */
  readonly countsEveryMs?: number;
  readonly logger?: Logger;
}

export class Janitor {
  readonly #store: JobStore;
  readonly #intervalMs: number;
  readonly #recoverEveryMs: number;
  readonly #countsEveryMs: number;
  readonly #logger: Logger;
  #timer: NodeJS.Timeout | undefined;
  #countsTimer: NodeJS.Timeout | undefined;
  #recoverTimer: NodeJS.Timeout | undefined;
  #recovering: Promise<unknown> | undefined;
  #running: Promise<unknown> | undefined;
  #counts: JobCounts = {};
  #storeUp = true;

  constructor(options: JanitorOptions) {
    this.#store = options.store;
    this.#intervalMs = options.intervalMs ?? 30_000;
    this.#recoverEveryMs = options.recoverEveryMs ?? 2_000;
    this.#countsEveryMs = options.countsEveryMs ?? 5_000;
    this.#logger = options.logger ?? silentLogger;
  }

  /** Job counts by route and status as of the last refresh (for `sluice_jobs{route,status}`). */
  get counts(): Readonly<JobCounts> {
    return this.#counts;
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => {
      if (!this.#running) this.#running = this.runOnce().finally(() => (this.#running = undefined));
    }, this.#intervalMs);
    this.#timer.unref();
    this.#recoverTimer = setInterval(() => {
      if (!this.#recovering) this.#recovering = this.recover().finally(() => (this.#recovering = undefined));
    }, this.#recoverEveryMs);
    this.#recoverTimer.unref();
    void this.refreshCounts();
    this.#countsTimer = setInterval(() => void this.refreshCounts(), this.#countsEveryMs);
    this.#countsTimer.unref();
  }

  /**
   * Whether the store answered the last counts refresh (every few seconds): false while it is down
   * (for /readyz, `sluice_job_store_up` and the log).
   */
  get storeUp(): boolean {
    return this.#storeUp;
  }

  async refreshCounts(): Promise<void> {
    try {
      this.#counts = await this.#store.counts();
      if (!this.#storeUp) this.#logger.info('job store reachable again');
      this.#storeUp = true;
    } catch (err) {
      // Keep the last known counts; say once that the store is down.
      if (this.#storeUp)
        this.#logger.warn(
          { error: (err as Error).message },
          'job store unavailable: offloads answer 503 until it is back',
        );
      this.#storeUp = false;
    }
  }

  /**
   * One recovery pass (jobs whose holder stopped renewing); never rejects. A store that is down is said
   * by the counts refresh, not here every 2 s.
   */
  async recover(): Promise<RecoveryReport | undefined> {
    try {
      const recovered = await this.#store.recoverInterrupted();
      if (recovered.failed > 0 || recovered.requeued > 0) {
        this.#logger.info({ ...recovered }, 'job store: recovered jobs whose instance stopped renewing');
      }
      return recovered;
    } catch {
      return undefined;
    }
  }

  /** One purge and recovery pass; never rejects (failures are logged and retried next time). */
  async runOnce(): Promise<{ purged: number; recovered: RecoveryReport } | undefined> {
    try {
      const recovered = await this.#store.recoverInterrupted();
      const purged = await this.#store.purgeExpired();
      if (purged > 0 || recovered.failed > 0 || recovered.requeued > 0) {
        this.#logger.info({ purged, ...recovered }, 'job store housekeeping');
      }
      return { purged, recovered };
    } catch (err) {
      this.#logger.warn({ err }, 'job store housekeeping failed');
      return undefined;
    }
  }

  /** Stops the timers and waits for a pass in progress. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    clearInterval(this.#countsTimer);
    clearInterval(this.#recoverTimer);
    this.#timer = undefined;
    this.#countsTimer = undefined;
    this.#recoverTimer = undefined;
    await Promise.all([this.#running, this.#recovering]);
  }
}
