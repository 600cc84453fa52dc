/**
 * Reads access logs for `sluice logs`: files or `-` (stdin), gzip-compressed or not (told by the first
 * two bytes, whatever the name), line by line in chunks of bytes (parsers read the bytes in place: no
 * string per line), detecting the format from the first lines unless one is given. Lines that do not
 * parse are counted, never fatal. A large plain file is read by several threads at once (this one
 * and log-worker.ts ones): it is cut into pieces of PIECE_BYTES, each thread claims the next piece
 * from a shared counter until none is left (a thread slowed by the machine simply reads fewer), and
 * their sums are merged: parsing is the hot path.
 */
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import type { Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import zlib from 'node:zlib';
import { DETECT_LINES, detectFormat, PARSERS } from './formats/detect.ts';
import { type LogFormat, type LogParser, newRecord } from './formats/record.ts';
import type { AggregateState, FileSummary, LogAggregator } from './log-summary.ts';

const CHUNK = 1024 * 1024;
/** Plain files from this size on are read by worker threads. */
export const THREADS_FROM_BYTES = 64 * 1024 * 1024;

export interface FileResult extends FileSummary {
  /** The first line that did not parse (1-based number and up to 200 characters of it). */
  firstUnparsed?: { line: number; text: string };
  /** Reading stopped early (a truncated or corrupt .gz): what went wrong. */
  warning?: string;
}

/** The chunks of `src`, gunzipped when they start with the gzip magic bytes. */
async function* decompressed(src: Readable): AsyncGenerator<Buffer> {
  const it = src[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let head: Buffer = Buffer.alloc(0);
  while (head.length < 2) {
    const r = await it.next();
    if (r.done) {
      if (head.length > 0) yield head;
      return;
    }
    head = head.length === 0 ? r.value : Buffer.concat([head, r.value]);
  }
  if (head[0] !== 0x1f || head[1] !== 0x8b) {
    yield head;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
    return;
  }
  const gunzip = zlib.createGunzip({ chunkSize: CHUNK });
  const feed = (async () => {
    if (!gunzip.write(head)) await once(gunzip, 'drain');
    for (let r = await it.next(); !r.done; r = await it.next())
      if (!gunzip.write(r.value)) await once(gunzip, 'drain');
    gunzip.end();
  })();
  feed.catch((err: Error) => gunzip.destroy(err));
  yield* gunzip as AsyncIterable<Buffer>;
  await feed;
}

/** An opened log: a regular file (read in place) or a stream (stdin, a pipe, a FIFO). */
export type LogSource =
  | { path: string; kind: 'file'; fd: number; size: number }
  | { path: string; kind: 'stream'; stream: Readable };

/** Opens `path` (`-` = stdin) for reading; throws ENOENT/EACCES/EISDIR as they are. */
export function openLog(path: string): LogSource {
  if (path === '-') return { path, kind: 'stream', stream: process.stdin };
  const fd = fs.openSync(path, 'r');
  const st = fs.fstatSync(fd);
  if (st.isDirectory()) {
    fs.closeSync(fd);
    throw Object.assign(new Error(`EISDIR: is a directory, read '${path}'`), { code: 'EISDIR', path });
  }
  if (!st.isFile())
    return { path, kind: 'stream', stream: fs.createReadStream(path, { fd, highWaterMark: CHUNK }) };
  return { path, kind: 'file', fd, size: st.size };
}

/** Receives the bytes of one log and turns them into lines, records and counts. */
export class LineSink {
  readonly result: FileResult;
  readonly #agg: LogAggregator;
  readonly #rec = newRecord();
  /** undefined until detected; null when no format matched. */
  #parser: LogParser | null | undefined;
  readonly #pending: Buffer[] = [];

  constructor(path: string, agg: LogAggregator, parser: LogParser | undefined) {
    this.result = { path, format: parser?.format ?? null, lines: 0, unparsed: 0 };
    this.#agg = agg;
    this.#parser = parser;
  }

  #onLine(b: Buffer, start: number, end: number): void {
    const result = this.result;
    result.lines++;
    const parser = this.#parser;
    if (parser?.parse(b, start, end, this.#rec)) {
      if (!this.#rec.skip) this.#agg.add(this.#rec, parser);
      return;
    }
    result.unparsed++;
    result.firstUnparsed ??= {
      line: result.lines,
      text: b.toString('utf8', start, Math.min(end, start + 200)),
    };
  }

  #detect(): void {
    this.#parser = detectFormat(this.#pending);
    this.result.format = this.#parser?.format ?? null;
    for (const l of this.#pending) this.#onLine(l, 0, l.length);
    this.#pending.length = 0;
  }

  /** One line b[start, end) without its newline; blank lines are skipped. */
  line(b: Buffer, start: number, end: number): void {
    if (end > start && b[end - 1] === 13) end--;
    if (end === start) return;
    if (this.#parser !== undefined) return this.#onLine(b, start, end);
    this.#pending.push(Buffer.from(b.subarray(start, end)));
    if (this.#pending.length >= DETECT_LINES) this.#detect();
  }

  /** The complete lines of b[from, to); returns where the incomplete last one starts. */
  chunk(b: Buffer, from: number, to: number): number {
    let start = from;
    for (let nl = b.indexOf(10, start); nl !== -1 && nl < to; nl = b.indexOf(10, start)) {
      this.line(b, start, nl);
      start = nl + 1;
    }
    return start;
  }

  finish(): FileResult {
    if (this.#parser === undefined) this.#detect();
    return this.result;
  }
}

/** The read buffer of this thread, kept between calls (grown for a line longer than it). */
let readBuf: Buffer | undefined;

/** Reads the lines that start in [start, end) of a regular file (`start` is a line start). */
export function readFileRange(fd: number, start: number, end: number, sink: LineSink): void {
  let buf = (readBuf ??= Buffer.allocUnsafe(CHUNK));
  let filled = 0;
  let pos = start;
  while (pos < end) {
    if (filled === buf.length) {
      const bigger = Buffer.allocUnsafe(buf.length * 2); // a line longer than the buffer
      buf.copy(bigger, 0, 0, filled);
      buf = readBuf = bigger;
    }
    const n = fs.readSync(fd, buf, filled, Math.min(buf.length - filled, end - pos), pos);
    if (n === 0) break;
    pos += n;
    filled += n;
    const rest = sink.chunk(buf, 0, filled);
    buf.copy(buf, 0, rest, filled);
    filled -= rest;
  }
  if (filled > 0) sink.line(buf, 0, filled);
}

async function readStream(stream: Readable, sink: LineSink): Promise<void> {
  let carry: Buffer | undefined;
  try {
    for await (const chunk of decompressed(stream)) {
      let start = 0;
      if (carry !== undefined) {
        const nl = chunk.indexOf(10);
        if (nl === -1) {
          carry = Buffer.concat([carry, chunk]);
          continue;
        }
        const line = Buffer.concat([carry, chunk.subarray(0, nl)]);
        carry = undefined;
        sink.line(line, 0, line.length);
        start = nl + 1;
      }
      start = sink.chunk(chunk, start, chunk.length);
      if (start < chunk.length) carry = Buffer.from(chunk.subarray(start));
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    sink.result.warning =
      e.code === 'Z_DATA_ERROR' || e.code === 'Z_BUF_ERROR' || e.code === 'Z_STREAM_ERROR'
        ? `not a valid gzip file from here on (${e.message}); counted what came before`
        : e.message;
  }
  if (carry !== undefined) sink.line(carry, 0, carry.length);
}

/** How many threads read a large file: SLUICE_LOGS_THREADS, else the cores (at most 4). */
export function threadCount(): number {
  const env = Number(process.env.SLUICE_LOGS_THREADS);
  if (Number.isInteger(env) && env >= 1) return Math.min(env, 16);
  return Math.max(1, Math.min(4, os.availableParallelism()));
}

/** The format of a file from its first lines (read from the start of the file). */
function detectFileFormat(fd: number, size: number): LogParser | null {
  const buf = Buffer.allocUnsafe(Math.min(size, 256 * 1024));
  const n = fs.readSync(fd, buf, 0, buf.length, 0);
  const lines: Buffer[] = [];
  let start = 0;
  for (
    let nl = buf.indexOf(10);
    nl !== -1 && nl < n && lines.length < DETECT_LINES;
    nl = buf.indexOf(10, start)
  ) {
    let end = nl;
    if (end > start && buf[end - 1] === 13) end--;
    if (end > start) lines.push(buf.subarray(start, end));
    start = nl + 1;
  }
  if (lines.length === 0 && n > 0) lines.push(buf.subarray(0, n));
  return detectFormat(lines);
}

/** Bytes per piece of a file read by several threads. */
export const PIECE_BYTES = 8 * 1024 * 1024;

/** The first line start at or after `pos` in a file of `size` bytes (size when there is none). */
function lineStartFrom(fd: number, pos: number, size: number): number {
  if (pos <= 0) return 0;
  if (pos >= size) return size;
  let probe = Buffer.allocUnsafe(4096);
  for (let at = pos - 1; at < size; ) {
    if (at > pos && probe.length < 65536) probe = Buffer.allocUnsafe(65536); // a long line: bigger steps
    const n = fs.readSync(fd, probe, 0, probe.length, at);
    if (n === 0) break;
    const nl = probe.indexOf(10);
    if (nl !== -1 && nl < n) return at + nl + 1;
    at += n;
  }
  return size;
}

/** What one thread read of a file cut into pieces. */
export interface PiecesRead {
  /** The pieces it read, in order, and how many lines each held: [piece, lines, ...]. */
  pieces: number[];
  unparsed: number;
  /** Its first line that did not parse: in which piece, its number within the piece, its text. */
  firstUnparsed?: { piece: number; line: number; text: string };
}

/**
 * Reads pieces of `pieceBytes` of a file into `sink` while there are some left: each is claimed by
 * incrementing the shared counter `next`, and holds the lines that start in it.
 */
export function readPieces(
  fd: number,
  size: number,
  pieceBytes: number,
  next: Int32Array,
  sink: LineSink,
): PiecesRead {
  const count = Math.ceil(size / pieceBytes);
  const read: PiecesRead = { pieces: [], unparsed: 0 };
  const result = sink.result;
  for (let k = Atomics.add(next, 0, 1); k < count; k = Atomics.add(next, 0, 1)) {
    const before = result.lines;
    const start = lineStartFrom(fd, k * pieceBytes, size);
    const nominalEnd = Math.min(size, (k + 1) * pieceBytes);
    // No line starts in a piece that a long line covers.
    const end = start >= nominalEnd ? start : lineStartFrom(fd, nominalEnd, size);
    if (start < end) readFileRange(fd, start, end, sink);
    read.pieces.push(k, result.lines - before);
    if (result.firstUnparsed && !read.firstUnparsed)
      read.firstUnparsed = {
        piece: k,
        line: result.firstUnparsed.line - before,
        text: result.firstUnparsed.text,
      };
  }
  read.unparsed = result.unparsed;
  return read;
}

/** What a worker thread is given, and what it sends back. */
export interface WorkerTask {
  path: string;
  size: number;
  pieceBytes: number;
  next: Int32Array;
  format: LogFormat;
}
export interface WorkerReply {
  read: PiecesRead;
  state: AggregateState;
}

/**
 * Reads a plain file with `threads` threads: this one and threads - 1 workers claim its pieces. The
 * sums are those of one thread, except past MAX_ENDPOINTS: which endpoints get their own row then
 * depends on which thread saw them first (the rest is summed under OTHER_ENDPOINTS either way).
 */
async function readWithThreads(
  src: { path: string; fd: number; size: number },
  parser: LogParser,
  agg: LogAggregator,
  threads: number,
  pieceBytes: number,
): Promise<FileResult> {
  const task: WorkerTask = {
    path: src.path,
    size: src.size,
    pieceBytes,
    next: new Int32Array(new SharedArrayBuffer(4)),
    format: parser.format,
  };
  const replies = Array.from(
    { length: threads - 1 },
    () =>
      new Promise<WorkerReply>((resolve, reject) => {
        const w = new Worker(new URL('./log-worker.ts', import.meta.url), { workerData: task });
        w.once('message', (m: WorkerReply) => resolve(m));
        w.once('error', reject);
        w.once('exit', (code) => code !== 0 && reject(new Error(`log reader thread exited ${code}`)));
      }),
  );
  // This thread reads too, into `agg` directly, while the workers start.
  const sink = new LineSink(src.path, agg, parser);
  const reads = [readPieces(src.fd, src.size, pieceBytes, task.next, sink)];
  for (const { read, state } of await Promise.all(replies)) {
    agg.merge(state);
    reads.push(read);
  }
  // Line numbers: the lines of the pieces before.
  const lines: number[] = new Array(Math.ceil(src.size / pieceBytes)).fill(0);
  for (const r of reads) for (let i = 0; i < r.pieces.length; i += 2) lines[r.pieces[i]] = r.pieces[i + 1];
  const result: FileResult = { path: src.path, format: parser.format, lines: 0, unparsed: 0 };
  for (const n of lines) result.lines += n;
  let first: PiecesRead['firstUnparsed'];
  for (const r of reads) {
    result.unparsed += r.unparsed;
    if (r.firstUnparsed && (!first || r.firstUnparsed.piece < first.piece)) first = r.firstUnparsed;
  }
  if (first) {
    let line = first.line;
    for (let k = 0; k < first.piece; k++) line += lines[k];
    result.firstUnparsed = { line, text: first.text };
  }
  return result;
}

/**
 * Reads one log into `agg`. `forced`: the format of every line; otherwise detected. A plain file of
 * `threadsFromBytes` or more is read by `threads` threads (this one and worker threads), in pieces
 * of `pieceBytes`.
 */
export async function readLog(
  src: LogSource,
  agg: LogAggregator,
  forced: LogParser | undefined,
  opts: { threads?: number; threadsFromBytes?: number; pieceBytes?: number } = {},
): Promise<FileResult> {
  if (src.kind === 'stream') {
    const sink = new LineSink(src.path, agg, forced);
    await readStream(src.stream, sink);
    return sink.finish();
  }
  try {
    const magic = Buffer.alloc(2);
    const n = fs.readSync(src.fd, magic, 0, 2, 0);
    const gzipped = n === 2 && magic[0] === 0x1f && magic[1] === 0x8b;
    if (gzipped) {
      const sink = new LineSink(src.path, agg, forced);
      await readStream(
        fs.createReadStream(src.path, { fd: src.fd, start: 0, highWaterMark: CHUNK, autoClose: false }),
        sink,
      );
      return sink.finish();
    }
    const threads = opts.threads ?? threadCount();
    if (threads > 1 && src.size >= (opts.threadsFromBytes ?? THREADS_FROM_BYTES)) {
      const parser = forced ?? detectFileFormat(src.fd, src.size);
      if (parser) return await readWithThreads(src, parser, agg, threads, opts.pieceBytes ?? PIECE_BYTES);
    }
    const sink = new LineSink(src.path, agg, forced);
    readFileRange(src.fd, 0, src.size, sink);
    return sink.finish();
  } finally {
    fs.closeSync(src.fd);
  }
}

/** The parser of a format name (for worker threads). */
export const parserOf = (format: LogFormat): LogParser => PARSERS[format];
