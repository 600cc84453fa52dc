/**
 * A minimal HTTP server (100 B answers, no upstream) run as several processes, to compare how
 * connections are spread over them: `reuseport` (each process listens with SO_REUSEPORT and the
 * kernel picks one per connection: what Sluice's `workers` do), `cluster-rr` (node:cluster's default:
 * the primary accepts every connection and passes it to a worker over IPC) and `cluster-shared`
 * (node:cluster SCHED_NONE: the workers accept on one shared socket, woken together).
 *
 *   npx node bench/macro/contenders/multi-process-server.ts --mode reuseport --procs 2 --port 8080
 */

import { fork } from 'node:child_process';
import cluster from 'node:cluster';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    mode: { type: 'string', default: 'reuseport' },
    procs: { type: 'string', default: '2' },
    port: { type: 'string', default: '8080' },
    child: { type: 'boolean', default: false },
  },
});
const mode = values.mode as string;
const procs = Number(values.procs);
const port = Number(values.port);
const body = Buffer.alloc(100, 'x');

function serve(reusePort: boolean): void {
  createServer((_req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end(body);
  }).listen({ port, host: '127.0.0.1', reusePort });
}

if (mode === 'reuseport') {
  if (values.child) serve(true);
  else {
    serve(true);
    for (let i = 1; i < procs; i++)
      fork(import.meta.filename, ['--mode', mode, '--port', String(port), '--child'], { stdio: 'inherit' });
  }
} else if (mode === 'cluster-rr' || mode === 'cluster-shared') {
  if (cluster.isPrimary) {
    cluster.schedulingPolicy = mode === 'cluster-rr' ? cluster.SCHED_RR : cluster.SCHED_NONE;
    for (let i = 0; i < procs; i++) cluster.fork();
  } else serve(false);
} else {
  console.error(`unknown --mode ${mode}`);
  process.exit(2);
}
