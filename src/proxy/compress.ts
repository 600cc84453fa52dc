/**
 * Response compression (SPEC §6): decides whether a response is encoded (Accept-Encoding with q-values,
 * RFC 9110 §12.5.3, and the skip rules below), rewrites its headers (Content-Encoding, Vary, a weakened
 * ETag, no Content-Length / Accept-Ranges / digests) and encodes the body as a stream (node:zlib only)
 * that flushes whenever the upstream pauses, so a dripping response still reaches the client chunk by
 * chunk, and that passes the client's back-pressure on to the caller.
 *
 * Self-contained: the exchange calls `negotiate` (or `compressible` + `addVary` for the identity case)
 * on the filtered response headers, `encodeHeaders` before `writeHead`, and then writes the body into
 * `compressingWriter(res, encoding)` instead of `res`.
 */
import type { ServerResponse } from 'node:http';
import type { Transform, Writable } from 'node:stream';
import zlib from 'node:zlib';
import type { CompressConfig } from '../config/resolve.ts';
import { cutResponse } from '../errors.ts';

export type Encoding = 'br' | 'zstd' | 'gzip';

// ---- negotiation -----------------------------------------------------------------------------------

/** A token (RFC 9110 §5.6.2), lower-cased before the test. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9a-z-]+$/;
/** qvalue (RFC 9110 §12.4.2): 0, 0.xyz, 1, 1.000. */
const QVALUE = /^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/;

/**
 * Accept-Encoding → q per lower-case coding (`*` and `identity` included). The first entry of a coding
 * counts; malformed entries (bad token, bad q) are ignored, other parameters too. `x-gzip` is gzip
 * (RFC 9110 §8.4.1.3) unless gzip is listed itself.
 */
export function parseAcceptEncoding(value: string): Map<string, number> {
  const out = new Map<string, number>();
  let xgzip: number | undefined;
  for (const part of value.split(',')) {
    const semi = part.indexOf(';');
    const token = (semi === -1 ? part : part.slice(0, semi)).trim().toLowerCase();
    if (token === '' || !TOKEN.test(token)) continue;
    let q = 1;
    let bad = false;
    if (semi !== -1) {
      for (const param of part.slice(semi + 1).split(';')) {
        const eq = param.indexOf('=');
        if (eq === -1) {
          if (param.trim() !== '') bad = true;
          continue;
        }
        if (param.slice(0, eq).trim().toLowerCase() !== 'q') continue;
        const v = param.slice(eq + 1).trim();
        if (!QVALUE.test(v)) bad = true;
        else q = Number(v);
      }
    }
    if (bad) continue;
    if (token === 'x-gzip') xgzip ??= q;
    else if (!out.has(token)) out.set(token, q);
  }
  if (xgzip !== undefined && !out.has('gzip')) out.set('gzip', xgzip);
  return out;
}

/** Statuses that never carry content (RFC 9110 §6.4.1, §15.3.6): 1xx, 204, 205, 304. */
function bodiless(status: number): boolean {
  return status < 200 || status === 204 || status === 205 || status === 304;
}

function hasToken(value: string, token: string): boolean {
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if ((eq === -1 ? part : part.slice(0, eq)).trim().toLowerCase() === token) return true;
  }
  return false;
}

/** `pattern` is a lower-case media type where `*` matches any run of characters (`text/*`, `application/*+json`). */
function typeMatches(pattern: string, type: string): boolean {
  const star = pattern.indexOf('*');
  if (star === -1) return pattern === type;
  const parts = pattern.split('*');
  if (!type.startsWith(parts[0])) return false;
  let at = parts[0].length;
  for (let i = 1; i < parts.length - 1; i++) {
    const j = type.indexOf(parts[i], at);
    if (j === -1) return false;
    at = j + parts[i].length;
  }
  const last = parts[parts.length - 1];
  return type.length - last.length >= at && type.endsWith(last);
}

/**
 * Whether this response could be encoded for some client (everything but Accept-Encoding): not HEAD,
 * a status with content other than 206, no Content-Range, no Content-Encoding but `identity`, no
 * `Cache-Control: no-transform`, a Content-Type in `cfg.types` (never text/event-stream) and a
 * Content-Length, when known, of at least `cfg.minSize` (and never 0). When true and the client gets
 * identity anyway, the caller still adds `Vary: Accept-Encoding` (`addVary`).
 */
export function compressible(
  cfg: CompressConfig,
  method: string,
  status: number,
  headers: readonly string[],
): boolean {
  if (method === 'HEAD' || bodiless(status) || status === 206) return false;
  let type: string | undefined;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i].toLowerCase();
    const value = headers[i + 1];
    switch (name) {
      case 'content-type': {
        const semi = value.indexOf(';');
        type = (semi === -1 ? value : value.slice(0, semi)).trim().toLowerCase();
        break;
      }
      case 'content-length': {
        const v = value.trim();
        // An invalid or list value is not a known length (and the exchange refuses it anyway).
        if (/^\d+$/.test(v)) {
          const n = Number(v);
          if (n === 0 || n < cfg.minSize) return false;
        }
        break;
      }
      case 'content-encoding':
        for (const c of value.split(',')) {
          const t = c.trim().toLowerCase();
          if (t !== '' && t !== 'identity') return false;
        }
        break;
      case 'content-range':
        return false;
      case 'cache-control':
        if (hasToken(value, 'no-transform')) return false;
        break;
    }
  }
  if (type === undefined || type === '' || type === 'text/event-stream') return false;
  for (const pattern of cfg.types) if (typeMatches(pattern, type)) return true;
  return false;
}

/**
 * The encoding for this response and client, or undefined for identity: `compressible`, and the
 * algorithm of `cfg.algorithms` with the highest q in Accept-Encoding (explicitly, or through `*`),
 * ties going to the earlier one in `cfg.algorithms`. q=0 refuses. No header or an empty one: identity
 * (an empty Accept-Encoding asks for none; with none at all, like every common gateway, only clients
 * that ask get an encoding). An explicit `identity` with a higher q than the best algorithm wins.
 */
export function negotiate(
  cfg: CompressConfig,
  acceptEncoding: string | undefined,
  method: string,
  status: number,
  headers: readonly string[],
): Encoding | undefined {
  if (acceptEncoding === undefined || acceptEncoding.trim() === '') return undefined;
  if (!compressible(cfg, method, status, headers)) return undefined;
  return pickEncoding(cfg.algorithms, acceptEncoding);
}

/** The Accept-Encoding part of `negotiate` alone. */
export function pickEncoding(algorithms: readonly Encoding[], acceptEncoding: string): Encoding | undefined {
  const accepted = parseAcceptEncoding(acceptEncoding);
  const star = accepted.get('*');
  let best: Encoding | undefined;
  let bestQ = 0;
  for (const a of algorithms) {
    const q = accepted.get(a) ?? star ?? 0;
    if (q > bestQ) {
      best = a;
      bestQ = q;
    }
  }
  const identity = accepted.get('identity');
  if (best !== undefined && identity !== undefined && identity > bestQ) return undefined;
  return best;
}

// ---- headers ---------------------------------------------------------------------------------------

/** Representation checksums that no longer match once the content is encoded. */
const DIGESTS = new Set(['content-md5', 'digest', 'content-digest', 'repr-digest']);

/**
 * Appends `Accept-Encoding` to Vary (in place): merged into the first Vary field, not repeated when
 * some Vary field lists it already, and nothing done when one says `*`.
 */
export function addVary(headers: string[]): void {
  let first = -1;
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i].toLowerCase() !== 'vary') continue;
    const v = headers[i + 1];
    for (const part of v.split(',')) {
      const t = part.trim().toLowerCase();
      if (t === '*' || t === 'accept-encoding') return;
    }
    if (first === -1) first = i;
  }
  if (first === -1) headers.push('vary', 'Accept-Encoding');
  else {
    const v = headers[first + 1].trim();
    headers[first + 1] = v === '' ? 'Accept-Encoding' : `${v}, Accept-Encoding`;
  }
}

/**
 * Rewrites the response headers (in place) for a body encoded with `encoding`: Content-Encoding set
 * (an `identity` one replaced), Content-Length removed (the length is not known before the end),
 * Vary: Accept-Encoding added (`addVary`), a strong ETag weakened (`"x"` → `W/"x"`: RFC 9110 §8.8.3, a
 * different representation must not share a strong validator; weak comparison still lets
 * If-None-Match revalidate it), digests (Content-MD5, Digest, Content-Digest, Repr-Digest) and
 * Accept-Ranges removed (ranges of the encoded form are not offered).
 */
export function encodeHeaders(headers: string[], encoding: Encoding): void {
  let w = 0;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i].toLowerCase();
    if (name === 'content-encoding' || name === 'content-length' || name === 'accept-ranges') continue;
    if (DIGESTS.has(name)) continue;
    let value = headers[i + 1];
    if (name === 'etag') {
      const v = value.trim();
      if (v.startsWith('"')) value = `W/${v}`;
    }
    headers[w] = headers[i];
    headers[w + 1] = value;
    w += 2;
  }
  headers.length = w;
  headers.push('content-encoding', encoding);
  addVary(headers);
}

// ---- encoding --------------------------------------------------------------------------------------

/**
 * Levels, for a gateway's throughput: every response pays the CPU, and compressing 100 KB costs far
 * more than proxying it (≈ 1 ms against tens of µs). Measured with `npx node bench/micro/compress.bench.ts`
 * (Node 24.21, its bundled zlib / brotli 1.2.0 / zstd 1.5.7, shared 2-core machine: CPU ms per input
 * MB, then ratio, 100 KB JSON | 1 MB HTML; full tables in docs/benchmarks.md § Compression):
 *
 * - gzip 1: 11.4 | 6.6 ms/MB, 3.93 | 5.45. Each level up costs 6–40 % more CPU for 1–4 % fewer
 *   bytes (gzip 4: 15.5 | 11.1, 4.22 | 5.89; gzip 6: 24 | 18, 4.49 | 6.12). nginx's default level
 *   too: its worker spends 9.2 | 8.8 ms/MB at level 1 for 3.69 | 5.25. gzip is what API clients
 *   (Go, Python, okhttp) ask for, on networks where CPU costs more than bytes.
 * - br 2: 8.9 | 10.7 ms/MB, 4.32 | 6.07: smaller than gzip 4 for gzip 1's CPU. Quality 3 gains 0.5–1.4 %
 *   for +18–25 % CPU; 4 gains 4–7 % for +70–95 % CPU and 5 MiB per stream (its hash tables); quality 1
 *   streams worse than gzip 1 on HTML (5.16). What browsers get (br comes first on equal q).
 * - zstd 2: 4.7 | 3.8 ms/MB, 4.40 | 6.18: the cheapest; zstd 3 (its own default) gains 1–3 % for
 *   +30–35 % CPU, zstd 1 saves little CPU for 4 % more bytes on HTML.
 *
 * Memory per open stream (1 MB written, size unknown): br 2 ≈ 1.0 MiB, zstd 2 ≈ 1.1 MiB, gzip 1 ≈
 * 0.4 MiB; about half with a 100 KB Content-Length as the size hint.
 */
export const LEVELS: Readonly<Record<Encoding, number>> = Object.freeze({ br: 2, zstd: 2, gzip: 1 });

/** Flush operation per encoding: ends the current block so that everything written so far can be decoded. */
const FLUSH: Readonly<Record<Encoding, number>> = Object.freeze({
  gzip: zlib.constants.Z_SYNC_FLUSH, // not flush()'s default Z_FULL_FLUSH, which also resets the dictionary
  br: zlib.constants.BROTLI_OPERATION_FLUSH,
  zstd: zlib.constants.ZSTD_e_flush,
});

export interface EncoderOptions {
  /** Content-Length of the identity body when known: brotli's size hint, and a smaller window for small bodies. */
  readonly sizeHint?: number;
  /** Overrides `LEVELS` (the benchmark). */
  readonly level?: number;
}

/** log2 window for a body of `size` bytes (at least `min`, at most `max`). */
function windowBits(size: number | undefined, min: number, max: number): number {
  if (size === undefined || !(size > 0)) return max;
  return Math.max(min, Math.min(max, Math.ceil(Math.log2(size))));
}

function zlibStream(encoding: Encoding, opts: EncoderOptions): Transform & zlib.Zlib {
  const level = opts.level ?? LEVELS[encoding];
  const size = opts.sizeHint !== undefined && opts.sizeHint > 0 ? opts.sizeHint : undefined;
  const c = zlib.constants;
  switch (encoding) {
    case 'gzip': {
      // As nginx does: a body known to be small gets a smaller window and hash (256 KiB by default).
      const bits = windowBits(size, 9, 15);
      return zlib.createGzip({ level, windowBits: bits, memLevel: Math.max(1, Math.min(8, bits - 7)) });
    }
    case 'br': {
      const params: Record<number, number> = {
        [c.BROTLI_PARAM_QUALITY]: level,
        [c.BROTLI_PARAM_MODE]: c.BROTLI_MODE_TEXT,
        // Brotli's default window (lgwin 22, 4 MiB) grows its ring buffer with the body: 1.45 MiB per
        // stream after 1 MB at quality 2. 256 KiB keeps it at 0.95 MiB for the same ratio (±0.2 %).
        [c.BROTLI_PARAM_LGWIN]: windowBits(size, 10, 18),
      };
      if (size !== undefined) params[c.BROTLI_PARAM_SIZE_HINT] = Math.min(size, 2 ** 30);
      return zlib.createBrotliCompress({ params });
    }
    case 'zstd':
      // No pledgedSrcSize: it must match exactly, and an upstream may send less than it announced.
      // Window 512 KiB at most (level 2 takes 1 MiB, level 3 2 MiB): after 1 MB at level 2, 1.05 MiB
      // per stream instead of 1.4, ratio −0.1 %.
      return zlib.createZstdCompress({
        params: { [c.ZSTD_c_compressionLevel]: level, [c.ZSTD_c_windowLog]: windowBits(size, 10, 19) },
      });
  }
}

/**
 * The encoder for `encoding` at `LEVELS`, flushing by itself when the input pauses: once the encoder
 * has consumed every chunk written so far and a turn of the event loop went by without another one
 * (one `setImmediate` per burst), it flushes, so whatever was written can be decoded by the client
 * now. A fast body keeps the encoder busy (a chunk queued behind the one being compressed) and is not
 * flushed until it pauses or ends; a dripping one is flushed after each drip.
 */
export function createEncoder(encoding: Encoding, opts: EncoderOptions = {}): Transform {
  const enc = zlibStream(encoding, opts);
  const kind = FLUSH[encoding];
  let dirty = false;
  let scheduled = false;
  const check = () => {
    scheduled = false;
    if (!dirty || enc.writableLength > 0 || enc.writableEnded || enc.destroyed) return;
    dirty = false;
    enc.flush(kind);
  };
  const transform = enc._transform;
  enc._transform = (chunk: Buffer, e: BufferEncoding, cb: (err?: Error | null, data?: unknown) => void) => {
    // Flush markers and the final empty chunk of end() pass through as they are.
    if (chunk.length === 0) return transform.call(enc, chunk, e, cb);
    dirty = true;
    transform.call(enc, chunk, e, (err?: Error | null, data?: unknown) => {
      if (!scheduled && !err) {
        scheduled = true;
        setImmediate(check);
      }
      cb(err, data);
    });
  };
  return enc;
}

/** What the proxy writes the body into instead of the ServerResponse. */
export interface CompressingWriter {
  /** false: back-pressure (the encoder or, through it, the client is full); 'drain' follows. */
  write(chunk: Buffer | Uint8Array | string): boolean;
  once(event: 'drain', fn: () => void): this;
  off(event: 'drain', fn: () => void): this;
  /** Ends the encoded body; `res` is ended after the last compressed bytes. */
  end(): void;
  /** Tears down the encoder and `res` (no error is emitted on either). */
  destroy(err?: Error): void;
  readonly destroyed: boolean;
  /** Identity bytes written so far. */
  readonly bytesIn: number;
  /** Encoded bytes produced so far. */
  readonly bytesOut: number;
  /**
   * Sees the encoded body as it goes to `res` (the response cache keeps the encoded variant):
   * `onData` per encoded chunk, `onEnd` once the last one was produced.
   */
  observe(onData: (chunk: Buffer) => void, onEnd: () => void): void;
}

/**
 * The encoder piped into `res`: a slow client fills `res`, the pipe stops reading the encoder, the
 * encoder's buffers fill and `write` returns false until they drain, so the caller stops reading the
 * upstream (and its read timeout gives way to the client send timeout) exactly as with `res` itself.
 * When `res` closes before the end (client gone, `res.destroy()` on a timeout), the encoder is
 * destroyed with it; `destroy()` tears down both. `end()` ends `res` after the encoder's last bytes.
 */
export function compressingWriter(
  res: ServerResponse | Writable,
  encoding: Encoding,
  opts: EncoderOptions = {},
): CompressingWriter {
  const enc = createEncoder(encoding, opts);
  let bytesIn = 0;
  let bytesOut = 0;
  let destroyed = false;
  const teardown = () => {
    if (destroyed) return;
    destroyed = true;
    res.off('close', onResClose);
    enc.unpipe(res);
    enc.destroy();
    if (!res.destroyed) cutResponse(res);
  };
  const onResClose = () => {
    // Closed after the whole body was written: nothing to tear down.
    if (!enc.readableEnded) teardown();
  };
  enc.on('data', (c: Buffer) => (bytesOut += c.length));
  // Should zlib fail (it does not for valid input), the response is cut, never left hanging.
  enc.on('error', teardown);
  enc.pipe(res);
  res.on('close', onResClose);
  enc.once('end', () => res.off('close', onResClose));
  const writer: CompressingWriter = {
    write(chunk) {
      if (destroyed) return false;
      bytesIn += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.byteLength;
      return enc.write(chunk);
    },
    once(event, fn) {
      enc.once(event, fn);
      return writer;
    },
    off(event, fn) {
      enc.off(event, fn);
      return writer;
    },
    end() {
      if (!destroyed && !enc.writableEnded) enc.end();
    },
    destroy() {
      teardown();
    },
    get destroyed() {
      return destroyed;
    },
    get bytesIn() {
      return bytesIn;
    },
    get bytesOut() {
      return bytesOut;
    },
    observe(onData, onEnd) {
      enc.on('data', onData);
      enc.once('end', onEnd);
    },
  };
  return writer;
}
