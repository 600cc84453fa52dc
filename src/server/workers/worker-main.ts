/**
 * Entry module of a worker process (forked by the primary's WorkerPool, never run by hand): the
 * config, ports and role arrive over IPC.
 */
import { runWorker } from './worker.ts';

runWorker().catch((err: Error) => {
  process.stderr.write(`sluice worker: ${err.message}\n`);
  process.exit(1);
});
