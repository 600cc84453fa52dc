/**
 * What the data plane needs to turn a request into a job (SPEC §5): the `202 Accepted` response,
 * RFC 7240 `Prefer` parsing, the "safe to send again" rule, the bounded read of a queue-mode body, and
 * a push-side sink that streams an auto/prefer result into the store.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { GatewayError } from '../errors.ts';
import type { CompleteOutcome, JobRecord, JobStore, ResultHead } from './job-store.ts';
import { jobUrl } from './job-view.ts';

/**
 * Writes SPEC §5's `202 Accepted` for `job` and ends the response:
 *
 * ```
 * HTTP/1.1 202 Accepted
 * Location: /_sluice/jobs/J…
 * Retry-After: 2
 * Content-Type: application/json
 *
 * {"id":"J…","status":"running","poll_url":"/_sluice/jobs/J…","retry_after":2}
 * ```
 *
 * plus `Preference-Applied` when given (e.g. `respond-async`), `X-Request-Id` when given,
 * `Content-Length` and `Cache-Control: no-store`. Call it only after the job was created (committed).
 */
export function acceptedResponse(
  res: ServerResponse,
  job: Pick<JobRecord, 'id' | 'status'>,
  prefix: string,
  retryAfterS: number,
  preferenceApplied?: string,
  requestId?: string,
  callbackRefused?: string,
): void {
  const url = jobUrl(prefix.replace(/\/+$/, ''), job.id);
  const retry = Math.max(1, Math.round(retryAfterS));
  const body = JSON.stringify({ id: job.id, status: job.status, poll_url: url, retry_after: retry });
  const headers = [
    'location',
    url,
    'retry-after',
    String(retry),
    'content-type',
    'application/json',
    'content-length',
    String(Buffer.byteLength(body)),
    'cache-control',
    'no-store',
  ];
  if (preferenceApplied) headers.push('preference-applied', preferenceApplied);
  if (requestId) headers.push('x-request-id', requestId);
  // A Callback-Url that will not be called is said, not silently dropped.
  if (callbackRefused) headers.push('sluice-callback', `refused; reason="${callbackRefused}"`);
  res.writeHead(202, headers);
  res.end(body);
}

export interface Preferences {
  /** `Prefer: respond-async` was sent. */
  readonly respondAsync: boolean;
  /** `Prefer: wait=N` (N seconds, a non-negative integer), in milliseconds. */
  readonly waitMs?: number;
}

/** Splits on `sep` outside double-quoted strings. */
function splitOutsideQuotes(text: string, sep: string): string[] {
  const out: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"' && text[i - 1] !== '\\') quoted = !quoted;
    else if (c === sep && !quoted) {
      out.push(text.slice(start, i));
      start = i + 1;
    }
  }
  out.push(text.slice(start));
  return out;
}

/**
 * Parses `Prefer` (RFC 7240): comma-separated preferences, names case-insensitive, values optionally
 * quoted, the first occurrence of a preference wins (§2), unknown ones ignored. Lenient like most
 * servers: `respond-async; wait=10` (wait written as a parameter) counts as both preferences. Several
 * `Prefer` header lines are read as one list.
 */
export function parsePrefer(header: string | readonly string[] | undefined): Preferences {
  if (header === undefined) return { respondAsync: false };
  const text = typeof header === 'string' ? header : header.join(',');
  let respondAsync = false;
  let waitMs: number | undefined;
  let waitSeen = false;
  for (const pref of splitOutsideQuotes(text, ',')) {
    for (const part of splitOutsideQuotes(pref, ';')) {
      const eq = part.indexOf('=');
      const name = (eq === -1 ? part : part.slice(0, eq)).trim().toLowerCase();
      let value = eq === -1 ? undefined : part.slice(eq + 1).trim();
      if (value?.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
      if (name === 'respond-async') respondAsync = true;
      else if (name === 'wait' && !waitSeen) {
        waitSeen = true;
        if (value !== undefined && /^\d{1,9}$/.test(value)) waitMs = Number(value) * 1000;
      }
    }
  }
  return waitMs === undefined ? { respondAsync } : { respondAsync, waitMs };
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/**
 * Whether a request may be sent to the upstream again after an interruption or failure: an idempotent
 * method (RFC 9110 §9.2.2) or an `Idempotency-Key` header.
 */
export function isSafeToRepeat(method: string, headers: IncomingHttpHeaders): boolean {
  return IDEMPOTENT.has(method.toUpperCase()) || headers['idempotency-key'] !== undefined;
}

/**
 * Reads a request body into memory for queue mode, refusing more than `maxBytes` (413
 * `body-too-large`; the rest is not read). Resolves with an empty buffer for a bodiless request.
 */
export function readBody(req: IncomingMessage, maxBytes: number, route?: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    const tooLarge = () =>
      new GatewayError('body-too-large', {
        detail: `request body exceeds the limit of ${maxBytes} bytes for queued requests${route ? ` on route '${route}'` : ''}`,
        route,
      });
    if (declared > maxBytes) return reject(tooLarge());
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > maxBytes) {
        cleanup();
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(c);
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onAborted = () =>
      onError(Object.assign(new Error('client closed the connection'), { code: 'ECONNRESET' }));
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onAborted);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onAborted);
  });
}

/**
 * Push-side adapter for storing a result while it arrives through callbacks (undici's dispatch
 * handler: onHeaders → onData… → onComplete / onError), as the exchange does for an auto/prefer job
 * after its 202:
 *
 * ```ts
 * const sink = resultSink(store, job.id, { status, headers });       // in onHeaders
 * sink.done.then((o) => { if (o !== 'completed') abortUpstream(); }, (err) => store.fail(job.id, …));
 * onData(chunk)  { if (!sink.write(chunk)) { sink.onDrain(resume); return false; } return true; }
 * onComplete()   { sink.end(); }
 * onError(err)   { sink.abort(err); }   // `done` rejects with err: fail the job with the mapped error
 * ```
 *
 * `write` applies back-pressure (false above `highWaterMark` until the store has taken the data).
 * `done` settles with `complete`'s outcome: `'too-large'` or `'refused'` (cancelled meanwhile) mean
 * the store stopped reading — abort the upstream call; writes after that are ignored.
 */
export interface ResultSink {
  write(chunk: Buffer): boolean;
  onDrain(cb: () => void): void;
  end(): void;
  abort(err: Error): void;
  readonly done: Promise<CompleteOutcome>;
}

export function resultSink(
  store: JobStore,
  id: string,
  head: ResultHead,
  owner?: string,
  highWaterMark = 256 * 1024,
): ResultSink {
  let drain: (() => void) | undefined;
  const readable = new Readable({
    highWaterMark,
    read() {
      const d = drain;
      drain = undefined;
      d?.();
    },
  });
  const done = store.complete(id, head, readable, owner);
  return {
    write(chunk) {
      if (readable.destroyed) return false;
      return readable.push(chunk);
    },
    onDrain(cb) {
      if (readable.destroyed) return;
      drain = cb;
    },
    end() {
      if (!readable.destroyed) readable.push(null);
    },
    abort(err) {
      if (!readable.destroyed) readable.destroy(err);
    },
    done,
  };
}
