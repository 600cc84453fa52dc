/** A worker thread of `sluice logs`: reads one byte range of a file and sends its sums back. */
import fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import type { LogFormat } from './formats/record.ts';
import { LineSink, parserOf, readFileRange, type WorkerReply } from './log-reader.ts';
import { LogAggregator } from './log-summary.ts';

const { path, start, end, format } = workerData as {
  path: string;
  start: number;
  end: number;
  format: LogFormat;
};
const agg = new LogAggregator();
const sink = new LineSink(path, agg, parserOf(format));
const fd = fs.openSync(path, 'r');
try {
  readFileRange(fd, start, end, sink);
} finally {
  fs.closeSync(fd);
}
parentPort?.postMessage({ result: sink.finish(), state: agg.export() } satisfies WorkerReply);
