/**
 * The oracle of the request batteries (issue 14): a raw TCP upstream with its own strict, small
 * HTTP/1.1 parser (RFC 9112, no leniency at all) that records every request it receives and answers
 * each well-framed one with a fixed `200` and a Content-Length body. Whatever a proxy in front of it
 * forwards is checked here, byte for byte, independently of Node's parser and of undici.
 *
 * Strict means: CRLF line ends only; a request line of token SP target SP HTTP/1.1; header names
 * are tokens immediately followed by `:`; values hold no CR, LF or NUL and no obs-fold; exactly one
 * framing (one Content-Length of digits, or one Transfer-Encoding that is exactly `chunked`);
 * chunk sizes are hex digits. Anything else is recorded as a framing problem and the connection is
 * closed without an answer. A request cut off by the connection closing is recorded `incomplete`.
 */
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';

export interface RecordedRequest {
  method: string;
  target: string;
  /** In arrival order, names as written. */
  headers: [string, string][];
  body: Buffer;
  /** Empty for a well-framed request. */
  problems: string[];
  /** The request was cut off (its connection closed) before it was complete. */
  incomplete: boolean;
  /** Which upstream connection it came on (0, 1, …) and its place there (0, 1, …). */
  connection: number;
  seq: number;
  /** How its body was framed: `none`, `length` or `chunked`. */
  framing: 'none' | 'length' | 'chunked';
}

export interface RecordingUpstream {
  readonly port: number;
  readonly url: string;
  /** Every request so far (well-framed or not), in arrival order. */
  readonly requests: RecordedRequest[];
  /** Connections accepted so far. */
  connections(): number;
  /** Forgets what was recorded (between cases). */
  reset(): void;
  close(): Promise<void>;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const FIELD_VALUE_BAD = /[\0\r\n]/;

interface Partial {
  method: string;
  target: string;
  headers: [string, string][];
  framing: 'none' | 'length' | 'chunked';
  length: number;
  body: Buffer[];
  bodyBytes: number;
  /** Chunked: 'size' (awaiting a size line), 'data', 'data-crlf', 'trailers'. */
  chunkState: 'size' | 'data' | 'data-crlf' | 'trailers';
  chunkLeft: number;
}

/** Parses the head of one request; a string is a problem. */
function parseHead(head: string): Partial | string {
  if (head.includes('\n') && head.split('\r\n').some((l) => l.includes('\n'))) return 'bare LF in head';
  const lines = head.split('\r\n');
  const m = /^([^ ]+) ([^ ]+) HTTP\/1\.1$/.exec(lines[0]);
  if (!m || !TOKEN.test(m[1])) return `bad request line ${JSON.stringify(lines[0])}`;
  const headers: [string, string][] = [];
  let length: number | undefined;
  let chunked = false;
  for (const line of lines.slice(1)) {
    if (line[0] === ' ' || line[0] === '\t') return 'obs-fold';
    const i = line.indexOf(':');
    if (i <= 0) return `header line without name ${JSON.stringify(line)}`;
    const name = line.slice(0, i);
    if (!TOKEN.test(name)) return `bad header name ${JSON.stringify(name)}`;
    const value = line.slice(i + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    if (FIELD_VALUE_BAD.test(value)) return `bad header value of ${name}`;
    headers.push([name, value]);
    const lower = name.toLowerCase();
    if (lower === 'content-length') {
      if (length !== undefined || !/^\d+$/.test(value)) return `bad or repeated content-length ${value}`;
      length = Number(value);
    } else if (lower === 'transfer-encoding') {
      if (chunked || value.toLowerCase() !== 'chunked') return `transfer-encoding other than one chunked`;
      chunked = true;
    }
  }
  if (chunked && length !== undefined) return 'content-length and transfer-encoding';
  return {
    method: m[1],
    target: m[2],
    headers,
    framing: chunked ? 'chunked' : length !== undefined && length > 0 ? 'length' : 'none',
    length: length ?? 0,
    body: [],
    bodyBytes: 0,
    chunkState: 'size',
    chunkLeft: 0,
  };
}

export async function startRecordingUpstream(): Promise<RecordingUpstream> {
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>();
  let connections = 0;

  const server: Server = createServer((socket) => {
    const connection = connections++;
    sockets.add(socket);
    socket.on('error', () => {});
    let buf: Buffer = Buffer.alloc(0);
    let seq = 0;
    let current: Partial | undefined;
    let dead = false;
    const record = (p: Partial | undefined, problems: string[], incomplete: boolean, raw?: string) => {
      requests.push({
        method: p?.method ?? '',
        target: p?.target ?? raw ?? '',
        headers: p?.headers ?? [],
        body: Buffer.concat(p?.body ?? []),
        problems,
        incomplete,
        connection,
        seq: seq++,
        framing: p?.framing ?? 'none',
      });
    };
    const fail = (problem: string) => {
      record(current, [problem], false);
      current = undefined;
      dead = true;
      socket.destroy();
    };
    const complete = () => {
      const p = current as Partial;
      current = undefined;
      record(p, [], false);
      const body = p.method === 'HEAD' ? '' : 'ok';
      socket.write(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\n${body}`);
    };
    /** Consumes as much of `buf` as possible. */
    const pump = () => {
      while (!dead) {
        if (current === undefined) {
          const end = buf.indexOf('\r\n\r\n');
          if (end === -1) {
            if (buf.length > 65_536) return fail('head larger than 64 KiB');
            return;
          }
          const head = buf.subarray(0, end).toString('latin1');
          buf = buf.subarray(end + 4);
          const parsed = parseHead(head);
          if (typeof parsed === 'string') {
            record(undefined, [parsed], false, head.split('\r\n')[0]);
            dead = true;
            socket.destroy();
            return;
          }
          current = parsed;
          if (parsed.framing === 'none') complete();
          continue;
        }
        const p = current;
        if (p.framing === 'length') {
          const take = Math.min(p.length - p.bodyBytes, buf.length);
          if (take === 0) return;
          p.body.push(buf.subarray(0, take));
          p.bodyBytes += take;
          buf = buf.subarray(take);
          if (p.bodyBytes === p.length) complete();
          continue;
        }
        // chunked
        if (p.chunkState === 'size') {
          const eol = buf.indexOf('\r\n');
          if (eol === -1) {
            if (buf.includes('\n')) return fail('bare LF in chunk size');
            return;
          }
          const line = buf.subarray(0, eol).toString('latin1');
          buf = buf.subarray(eol + 2);
          // Extensions are allowed by RFC 9112 §7.1.1 but undici never sends them: record them.
          const m = /^([0-9A-Fa-f]{1,8})(;.*)?$/.exec(line);
          if (!m) return fail(`bad chunk size ${JSON.stringify(line)}`);
          if (m[2] !== undefined) return fail(`chunk extension ${JSON.stringify(m[2])}`);
          p.chunkLeft = Number.parseInt(m[1], 16);
          p.chunkState = p.chunkLeft === 0 ? 'trailers' : 'data';
          continue;
        }
        if (p.chunkState === 'data') {
          const take = Math.min(p.chunkLeft, buf.length);
          if (take === 0) return;
          p.body.push(buf.subarray(0, take));
          p.bodyBytes += take;
          p.chunkLeft -= take;
          buf = buf.subarray(take);
          if (p.chunkLeft === 0) p.chunkState = 'data-crlf';
          continue;
        }
        if (p.chunkState === 'data-crlf') {
          if (buf.length < 2) return;
          if (buf[0] !== 13 || buf[1] !== 10) return fail('chunk data not followed by CRLF');
          buf = buf.subarray(2);
          p.chunkState = 'size';
          continue;
        }
        // trailers: lines until an empty one
        const eol = buf.indexOf('\r\n');
        if (eol === -1) return;
        const line = buf.subarray(0, eol).toString('latin1');
        buf = buf.subarray(eol + 2);
        if (line === '') complete();
        else
          p.headers.push([`(trailer)${line.slice(0, line.indexOf(':'))}`, line.slice(line.indexOf(':') + 1)]);
      }
    };
    socket.on('data', (d: Buffer) => {
      if (dead) return;
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      pump();
    });
    socket.on('close', () => {
      sockets.delete(socket);
      if (!dead && current !== undefined) record(current, [], true);
      else if (!dead && buf.length > 0) record(undefined, [], true, buf.toString('latin1').split('\r\n')[0]);
      current = undefined;
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    connections: () => connections,
    reset() {
      requests.length = 0;
    },
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
