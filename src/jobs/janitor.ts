/**
 * Periodic housekeeping of the job store: deletes jobs whose `keep` has passed (`purgeExpired`) and
 * settles jobs whose holder's lease ran out (`recoverInterrupted`, non-exclusive: safe with several
 * instances on one store). The startup recovery (exclusive, for a single SQLite instance) is the
 * gateway's to run once before serving; see docs/async.md.
 */
import { type Logger, silentLogger } from '../observability/logger.ts';
import type { JobStore, RecoveryReport } from './job-store.ts';

export interface JanitorOptions {
  readonly store: JobStore;
  /** Time between runs. Default 30 s. */
  readonly intervalMs?: number;
  readonly logger?: Logger;
}

export class Janitor {
  readonly #store: JobStore;
  readonly #intervalMs: number;
  readonly #logger: Logger;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> | undefined;

  constructor(options: JanitorOptions) {
    this.#store = options.store;
    this.#intervalMs = options.intervalMs ?? 30_000;
    this.#logger = options.logger ?? silentLogger;
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => {
      if (!this.#running) this.#running = this.runOnce().finally(() => (this.#running = undefined));
    }, this.#intervalMs);
    this.#timer.unref();
  }

  /** One pass; never rejects (failures are logged and retried next time). */
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

  /** Stops the timer and waits for a pass in progress. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }
}
