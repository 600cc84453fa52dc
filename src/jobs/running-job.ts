/**
 * What the data plane needs from the async-offload host, as types only: the exchange of an auto/prefer
 * job (src/proxy/exchange.ts) reaches the job store and the registry of calls running in this process
 * through this, and JobsHost (src/server/jobs-host.ts) implements it. Kept here, below both, so that the
 * proxy layer never imports the server layer.
 */
import type { Logger } from '../observability/logger.ts';
import type { JobStore } from './job-store.ts';

/** An auto/prefer job whose upstream call runs in this process (the exchange holding it). */
export interface RunningJob {
  /** DELETE on the job (made on any instance): abort the upstream call. */
  cancelJob(): void;
  /** The gateway stops: abort the call, the job ends `failed` with `interrupted`. */
  interruptJob(): Promise<void>;
}

/** The part of JobsHost an exchange uses. */
export interface OffloadHost {
  readonly store: JobStore;
  /** Auto/prefer jobs whose upstream call runs in this process, by job id. */
  readonly running: Map<string, RunningJob>;
  readonly logger: Logger;
  /** Public path of the job resource, without a trailing slash. */
  readonly prefix: string;
}
