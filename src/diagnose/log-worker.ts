/** A worker thread of `sluice logs`: reads pieces of a file (log-reader.ts) and sends its sums back. */
import fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { LineSink, parserOf, readPieces, type WorkerReply, type WorkerTask } from './log-reader.ts';
import { LogAggregator } from './log-summary.ts';

const { path, size, pieceBytes, next, format } = workerData as WorkerTask;
const agg = new LogAggregator();
const sink = new LineSink(path, agg, parserOf(format));
const fd = fs.openSync(path, 'r');
let read: WorkerReply['read'];
try {
  read = readPieces(fd, size, pieceBytes, next, sink);
} finally {
  fs.closeSync(fd);
}
parentPort?.postMessage({ read, state: agg.export() } satisfies WorkerReply);
