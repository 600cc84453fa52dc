/**
 * Reads one access log for `sluice logs`: a file or `-` (stdin), gzip-compressed or not (told by its
 * first two bytes, whatever the name), line by line in 1 MiB chunks of bytes (parsers read the bytes
 * in place: no string per line), detecting the format from the first lines unless one is given.
 * Lines that do not parse are counted, never fatal.
 */
import { once } from 'node:events';
import fs from 'node:fs';
import type { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { DETECT_LINES, detectFormat } from './formats/detect.ts';
import { type LogParser, newRecord } from './formats/record.ts';
import type { FileSummary, LogAggregator } from './log-summary.ts';

const CHUNK = 1024 * 1024;

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

/** Opens `path` (`-` = stdin) for reading; throws ENOENT/EACCES/EISDIR as they are. */
export function openLog(path: string): Readable {
  if (path === '-') return process.stdin;
  const fd = fs.openSync(path, 'r');
  if (fs.fstatSync(fd).isDirectory()) {
    fs.closeSync(fd);
    throw Object.assign(new Error(`EISDIR: is a directory, read '${path}'`), { code: 'EISDIR', path });
  }
  return fs.createReadStream(path, { fd, highWaterMark: CHUNK });
}

/** Reads every line of `src` into `agg`. */
export async function readLog(
  path: string,
  src: Readable,
  agg: LogAggregator,
  forced: LogParser | undefined,
): Promise<FileResult> {
  const result: FileResult = { path, format: forced?.format ?? null, lines: 0, unparsed: 0 };
  const rec = newRecord();
  let parser: LogParser | null | undefined = forced;
  const pending: Buffer[] = [];

  const onLine = (b: Buffer, start: number, end: number) => {
    result.lines++;
    if (parser?.parse(b, start, end, rec)) {
      if (!rec.skip) agg.add(rec, parser);
      return;
    }
    result.unparsed++;
    result.firstUnparsed ??= {
      line: result.lines,
      text: b.toString('utf8', start, Math.min(end, start + 200)),
    };
  };
  const flushPending = () => {
    parser = detectFormat(pending);
    result.format = parser?.format ?? null;
    for (const l of pending) onLine(l, 0, l.length);
    pending.length = 0;
  };
  /** One line b[start, end) without its newline; blank lines are skipped. */
  const feed = (b: Buffer, start: number, end: number) => {
    if (end > start && b[end - 1] === 13) end--;
    if (end === start) return;
    if (parser !== undefined) return onLine(b, start, end);
    pending.push(Buffer.from(b.subarray(start, end)));
    if (pending.length >= DETECT_LINES) flushPending();
  };

  /** The start of a line that continues in the next chunk. */
  let carry: Buffer | undefined;
  try {
    for await (const chunk of decompressed(src)) {
      let start = 0;
      if (carry !== undefined) {
        const nl = chunk.indexOf(10);
        if (nl === -1) {
          carry = Buffer.concat([carry, chunk]);
          continue;
        }
        const line = Buffer.concat([carry, chunk.subarray(0, nl)]);
        carry = undefined;
        feed(line, 0, line.length);
        start = nl + 1;
      }
      for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
        feed(chunk, start, nl);
        start = nl + 1;
      }
      if (start < chunk.length) carry = Buffer.from(chunk.subarray(start));
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    result.warning =
      e.code === 'Z_DATA_ERROR' || e.code === 'Z_BUF_ERROR' || e.code === 'Z_STREAM_ERROR'
        ? `not a valid gzip file from here on (${e.message}); counted what came before`
        : e.message;
  }
  if (carry !== undefined) feed(carry, 0, carry.length);
  if (parser === undefined) flushPending();
  return result;
}
