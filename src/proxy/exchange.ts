/**
 * One client request forwarded upstream: admission (circuit breaker, concurrency slot), target choice,
 * tries and retries, the streaming, the five phase timeouts of SPEC §4, cancellation both ways, and
 * the access-log line. This is the hot path: one Exchange per request plus one small Attempt per try
 * (the undici dispatch handler, which lets a retried or abandoned try's late callbacks be ignored),
 * no per-phase closures or promises, and one lazily re-armed timer: a phase change that pushes the
 * next deadline later leaves the timer alone; the timer re-arms itself for what is left when it fires.
 *
 * Phases (SPEC §4): connect = dispatch → connection ready; send = idle gap writing the request body
 * (only while the upstream is not draining it); ttfb = request fully sent → response headers; read =
 * idle gap between response chunks (not while the client applies back-pressure); total = request
 * arrival → response complete, across all tries.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import {
  cutResponse,
  fromUpstreamFailure,
  GatewayError,
  type Outcome,
  type Phase,
  upstreamTimeout,
} from '../errors.ts';
import { acceptedResponse, isSafeToRepeat, type ResultSink, resultSink } from '../jobs/accept.ts';
import { callbackFor } from '../jobs/callback.ts';
import { newJobId, ownerHash } from '../jobs/ids.ts';
import { jobErrorFrom } from '../jobs/job-view.ts';
import type { OffloadHost as JobsHost } from '../jobs/running-job.ts';
import { type AccessLogEntry, isoNow, REQUEST_OF } from '../observability/access-log.ts';
import { gatewayTiming, parseServerTiming } from '../observability/server-timing.ts';
import {
  type Admission,
  type ConnectTimings,
  endedByReset,
  type RequestResult,
  type Target,
  type TryResult,
} from '../upstream/upstream.ts';
import {
  addVary,
  type CompressingWriter,
  compressible,
  compressingWriter,
  encodeHeaders,
  negotiate,
} from './compress.ts';
import { declaredLengthBody } from './declared-length.ts';
import { filterResponseHeaders, h2HeaderObject, VIA } from './headers.ts';
import type { RouteRuntime } from './route-runtime.ts';
import { setHost, shapeResponse, targetHost } from './shape.ts';
import type { ResponseTap } from './tap.ts';

const QUEUED = 0; // waiting for a concurrency slot or a retry's backoff
const CONNECTING = 1;
const SENDING = 2;
const WAITING = 3;
const READING = 4;
const DONE = 5;

/** What an exchange needs from the gateway around it. */
export interface ExchangeHost {
  readonly clientBodyIdleMs: number;
  readonly clientSendTimeoutMs: number;
  /** Async offload (SPEC §5), when any route uses it. */
  readonly jobs: JobsHost | undefined;
  respondError(exchange: Exchange, err: GatewayError, close: boolean): void;
  /** The exchange's one access-log line (it is finished for the gateway once this is called). */
  log(entry: AccessLogEntry, exchange: Exchange): void;
}

/** Offload states of an auto/prefer exchange. */
const NO_JOB = 0;
const CREATING = 1; // the job is being committed; the client still waits
const OFFLOADED = 2; // 202 sent: the upstream call runs on, its result goes to the store
const TOO_LATE = 3; // answered synchronously after all (headers came first, or the store refused)

const now = performance.now.bind(performance);

/**
 * Request bodies kept for retries (retry.buffer) by every exchange together, and the most they may
 * hold: 10,000 concurrent 64 KB uploads cannot pin 640 MB; past the cap bodies stream uncopied.
 */
let keptBodyBytes = 0;
const KEPT_BODY_CAP = 64 * 1024 * 1024;

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/** An error used to abort the upstream request when the client went away or a try is abandoned. */
class AbandonedError extends Error {
  override name = 'AbandonedError';
  readonly code = 'abandoned';
}

/**
 * Aborts an upstream request without stack traces for the errors undici makes on the way (its
 * 'aborted' InformationalError, which the socket's destroy then formats): nobody reads them, and in a
 * burst of timeouts they were a tenth of the CPU.
 */
function abortQuietly(abort: (err?: Error) => void, reason: Error): void {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    abort(reason);
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/**
 * The undici handler of one try. Callbacks of a try that the exchange gave up on (retried, timed
 * out, client gone) are ignored, and its request is aborted as soon as undici hands it over.
 */
class Attempt {
  readonly ex: Exchange;
  live = true;
  abort: ((err?: Error) => void) | null = null;
  reason: Error | null = null;

  constructor(ex: Exchange) {
    this.ex = ex;
  }

  /** Gives up this try: aborts its upstream request now or as soon as undici connects it. */
  abandon(reason: Error): void {
    if (!this.live) return;
    this.live = false;
    this.reason = reason;
    if (this.abort !== null) abortQuietly(this.abort, reason);
  }

  onConnect(abort: (err?: Error) => void): void {
    if (!this.live) {
      abortQuietly(abort, this.reason ?? new AbandonedError('try abandoned'));
      return;
    }
    this.abort = abort;
    this.ex.onConnect();
  }
  onBodySent(chunk: { length: number }): void {
    if (this.live) this.ex.onBodySent(chunk);
  }
  onRequestSent(): void {
    if (this.live) this.ex.onRequestSent();
  }
  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    return this.live ? this.ex.onHeaders(statusCode, rawHeaders, resume, statusText) : false;
  }
  onData(chunk: Buffer): boolean {
    return this.live ? this.ex.onData(chunk) : false;
  }
  onComplete(): void {
    if (this.live) {
      this.live = false;
      this.ex.onComplete();
    }
  }
  onError(err: Error): void {
    if (this.live) {
      this.live = false;
      this.ex.onError(err);
    }
  }
}

export class Exchange {
  readonly host: ExchangeHost;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly rt: RouteRuntime;
  readonly requestId: string;
  readonly startedAt: number;
  readonly method: string;
  /** Normalised path (+ query) as received, for the log. */
  readonly logPath: string;
  /** Milliseconds of total budget (0 = none), after any incoming x-timeout-ms. */
  readonly budget: number;
  /** The budget came from a shorter incoming x-timeout-ms: its timeout is the client's choice. */
  readonly clientBudget: boolean;
  /** Absolute (performance.now) end of the total budget; after a 202 it becomes async.timeout. */
  totalDeadline: number;
  readonly client: string | undefined;

  target: Target | undefined = undefined;
  attempts = 0;
  state = QUEUED;
  dispatchedAt = 0;
  connectedAt = 0;
  sentAt = 0;
  headersAt = 0;
  lastActivity = 0;
  paused = false;
  pausedAt = 0;
  bytesIn = 0;
  bytesOut = 0;
  status = 0;
  outcome: Outcome = 'ok';
  phase: Phase | null = null;
  errorCode: string | null = null;
  upstreamTiming: string | undefined = undefined;
  /** Why each try ended, for the log (`connect`, `reset`, `ttfb`, `503`…); only kept when > 1 try. */
  tries: string[] | undefined = undefined;
  /** The target of each earlier try, in the same order as `tries`. */
  triedTargets: string[] | undefined = undefined;

  #path = '';
  #headers: string[] = [];
  #hasBody = false;
  /**
   * The request body as sent, kept for a retry (retry.buffer): undefined when not kept, or once it grew
   * past the buffer.
   */
  #bodyCopy: Buffer[] | undefined = undefined;
  #bodyCopied = 0;
  /** The current try sends the kept copy, not the client's stream (its bytes were counted once). */
  #resending = false;
  #attempt: Attempt | null = null;
  #admission: Admission | null = null;
  #slot = false;
  #lastResult: RequestResult = 'none';
  #tryDeadline = Number.POSITIVE_INFINITY;
  #staleRetried = false;
  #reused = false;
  #connectTimings: ConnectTimings | undefined = undefined;
  #resume: (() => void) | null = null;
  /** When an auto/prefer request becomes a job if no response headers came (Infinity: never). */
  #asyncAt = Number.POSITIVE_INFINITY;
  /** Where the background call of an auto/prefer request ends (arrival + async.timeout). */
  #asyncEnd = Number.POSITIVE_INFINITY;
  #preferenceApplied: string | undefined = undefined;
  #offload = NO_JOB;
  #jobId: string | undefined = undefined;
  #sink: ResultSink | undefined = undefined;
  /** Watches the response and may answer instead of it (the response cache); set before start(). */
  tap: ResponseTap | undefined = undefined;
  /** The tap answered the client itself: the upstream's body is read and dropped. */
  #answered = false;
  /** The response body's way to the client when it is compressed (SPEC §6 compress), else undefined. */
  #out: CompressingWriter | undefined = undefined;
  /** The response's body runs to the close of the upstream connection (no length, not chunked). */
  #toClose = false;
  /** The encoding the response got, for the log. */
  #encoding: string | undefined = undefined;
  #logged = false;
  #timer: NodeJS.Timeout | null = null;
  #timerAt = Number.POSITIVE_INFINITY;
  #onTimer = () => this.#timerFired();
  #onDrain = () => this.#drained();
  #onClose = () => this.#clientClosed();

  constructor(
    host: ExchangeHost,
    rt: RouteRuntime,
    req: IncomingMessage,
    res: ServerResponse,
    requestId: string,
    startedAt: number,
    logPath: string,
    budget: number,
    clientBudget = false,
  ) {
    this.host = host;
    this.rt = rt;
    this.req = req;
    this.res = res;
    this.requestId = requestId;
    this.startedAt = startedAt;
    this.method = req.method ?? 'GET';
    this.logPath = logPath;
    this.budget = budget;
    this.clientBudget = clientBudget;
    this.totalDeadline = budget > 0 ? startedAt + budget : Number.POSITIVE_INFINITY;
    // Read now: undici detaches req.socket when it aborts the request body stream.
    this.client = req.socket.remoteAddress;
    res.once('close', this.#onClose);
  }

  /**
   * Makes this an auto/prefer request (SPEC §5): if no response headers came within `holdMs` of its
   * arrival, it becomes a job: 202 to the client, the upstream call goes on, its result is stored.
   * `holdMs` 0 (Prefer: respond-async) offloads at once. `applied` is echoed in Preference-Applied.
   */
  enableAsync(holdMs: number, applied: string | undefined): void {
    this.#asyncAt = this.startedAt + holdMs;
    this.#preferenceApplied = applied;
    const timeout = this.rt.route.async?.timeout ?? 0;
    this.#asyncEnd = timeout > 0 ? this.startedAt + timeout : Number.POSITIVE_INFINITY;
  }

  /**
   * Starts forwarding. `path` is the upstream path without the target's base path; `headers` the
   * filtered request headers (x-timeout-ms is added per try).
   */
  start(path: string, headers: string[], hasBody: boolean): void {
    this.#path = path;
    this.#headers = headers;
    this.#hasBody = hasBody;
    const retry = this.rt.retry;
    if (hasBody && retry !== undefined && retry.attempts > 1 && this.#safeToRepeat()) {
      const cl = Number(this.req.headers['content-length'] ?? Number.NaN);
      if (!(cl > retry.buffer)) this.#bodyCopy = [];
    }
    if (this.#asyncAt <= this.startedAt) this.#beginOffload();
    const upstream = this.rt.upstream;
    const admission = upstream.admit();
    if (!admission.ok) {
      return this.#fail(
        new GatewayError('circuit-open', {
          detail: `the circuit of upstream '${upstream.name}' is open after too many errors; retry in ${Math.ceil(admission.retryAfterMs / 1000)}s`,
          route: this.rt.name,
          upstream: upstream.name,
          proxyError: 'destination_unavailable',
          retryAfter: Math.max(1, Math.ceil(admission.retryAfterMs / 1000)),
        }),
      );
    }
    this.#admission = admission;
    this.rt.retryBudget?.onRequest();
    const slot = upstream.acquireSlot(this.totalDeadline);
    if (slot === true) {
      this.#slot = true;
      return this.#try();
    }
    if (slot === false) return this.#overloaded();
    // Waiting for a slot counts against the total budget (the total timer runs meanwhile).
    this.#arm();
    slot.then((ok) => {
      if (ok) {
        this.#slot = true;
        if (this.state === DONE) {
          upstream.releaseSlot();
          this.#slot = false;
          return;
        }
        this.#try();
      } else if (this.state !== DONE) this.#overloaded();
    });
  }

  #overloaded(): void {
    const u = this.rt.upstream;
    this.#fail(
      new GatewayError('overloaded', {
        detail: `upstream '${u.name}' has ${u.config.maxConcurrent} requests in flight (max_concurrent) and none finished within queue_timeout ${u.config.queueTimeout}ms`,
        route: this.rt.name,
        upstream: u.name,
        proxyError: 'connection_limit_reached',
        retryAfter: 1,
      }),
    );
  }

  /** One try on a target (another than the previous try's when there is one). */
  #try(): void {
    if (this.state === DONE) return;
    if (this.attempts === 0 && this.budget > 0 && this.#offload === NO_JOB) {
      // Shed a request whose remaining budget is below the route's recent 5th-percentile latency: it
      // would almost surely time out, and sending it only adds load to a slow upstream. Only when part
      // of the route's own budget is gone (a shorter incoming x-timeout-ms, or time spent waiting for a
      // slot): a route whose full budget is below its usual latency is left alone.
      const p5 = this.rt.recent.p5;
      const left = this.totalDeadline - now();
      const shortened = this.clientBudget || left < this.budget - 10;
      if (p5 > 0 && left < p5 && shortened && this.#asyncAt >= this.totalDeadline) {
        return this.#fail(
          new GatewayError('budget-exhausted', {
            detail: `only ${Math.round(left)}ms of the budget were left, below the 5th-percentile latency ${Math.round(p5)}ms of route '${this.rt.name}': answered at once instead of a certain timeout`,
            route: this.rt.name,
            upstream: this.rt.upstream.name,
            timeoutMs: this.budget,
            proxyError: 'http_response_timeout',
          }),
        );
      }
    }
    const upstream = this.rt.upstream;
    const target = upstream.pick(this.target);
    if (target === undefined) {
      return this.#fail(
        new GatewayError('no-healthy-upstream', {
          detail: `upstream '${upstream.name}' has no healthy target on route '${this.rt.name}'`,
          route: this.rt.name,
          upstream: upstream.name,
          proxyError: 'destination_unavailable',
          retryAfter: 5,
        }),
      );
    }
    this.target = target;
    this.attempts++;
    const t = now();
    this.dispatchedAt = t;
    this.connectedAt = 0;
    this.sentAt = 0;
    this.state = CONNECTING;
    const perTry = this.rt.retry?.per_try;
    this.#tryDeadline = perTry !== undefined && perTry > 0 ? t + perTry : Number.POSITIVE_INFINITY;
    if (this.totalDeadline - t <= 0) return this.#timeout('total');
    // Deadline propagation: the upstream is told the time until the earliest deadline that can end
    // this call (SPEC §3): the job's async.timeout once the call is to outlive the client's wait, else
    // what is left of total, or ttfb when that fires first; per_try caps both.
    const end = this.#callEnd(t);
    const hostUpstream = this.rt.shape.host.kind === 'upstream';
    const headers =
      this.attempts === 1 && end === Number.POSITIVE_INFINITY && !hostUpstream
        ? this.#headers
        : this.#headers.slice();
    if (end !== Number.POSITIVE_INFINITY)
      headers.push('x-timeout-ms', String(Math.max(1, Math.floor(end - t))));
    // host: upstream (SPEC §13): each try sends its own target's host:port.
    if (hostUpstream) setHost(headers, targetHost(target.origin));
    target.inflight++;
    const attempt = new Attempt(this);
    this.#attempt = attempt;
    this.#arm();
    target.pool.dispatch(
      {
        path: target.basePath + this.#path,
        method: this.method,
        headers,
        body: this.#hasBody ? this.#bodyFor() : null,
        // The gateway's own timer enforces every phase (undici's own are coarse and would cost a
        // timer per request); the pool keeps its connect backstop.
        headersTimeout: 0,
        bodyTimeout: 0,
      },
      // undici's typings give onBodySent(size, total); at runtime it passes the chunk itself.
      attempt as unknown as Dispatcher.DispatchHandler,
    );
  }

  /** The earliest deadline that can end a try dispatched at `t` (Infinity: none). */
  #callEnd(t: number): number {
    const ttfb = this.rt.timeouts.ttfb;
    let end: number;
    if (this.#offload === OFFLOADED) end = this.totalDeadline;
    else {
      end = this.totalDeadline;
      if (ttfb > 0) end = Math.min(end, t + ttfb);
      // An auto/prefer request offloaded before that goes on under async.timeout instead.
      if (this.#asyncAt < end) end = this.#asyncEnd;
    }
    return Math.min(end, this.#tryDeadline);
  }

  // ---- the current try's undici callbacks (through Attempt) ---------------------------------------

  onConnect(): void {
    // A new connection left its DNS/TCP/TLS timings on the target (see Target.lastConnect); the first
    // request on it takes them. Finding none means the connection is a reused keep-alive one.
    const target = this.target as Target;
    this.#connectTimings = target.lastConnect;
    target.lastConnect = undefined;
    this.#reused = this.#connectTimings === undefined;
    const t = now();
    this.connectedAt = t;
    this.lastActivity = t;
    this.state = SENDING;
    this.#arm();
  }

  onBodySent(chunk: { length: number }): void {
    if (this.#resending) {
      this.lastActivity = now();
      return;
    }
    this.bytesIn += chunk.length;
    const copy = this.#bodyCopy;
    if (copy !== undefined) {
      this.#bodyCopied += chunk.length;
      keptBodyBytes += chunk.length;
      // Past the route's buffer, or the process-wide cap on kept bodies: streamed without a copy.
      if (this.#bodyCopied > (this.rt.retry?.buffer ?? 0) || keptBodyBytes > KEPT_BODY_CAP)
        this.#dropBodyCopy();
      else copy.push(chunk as Buffer);
    }
    this.lastActivity = now();
    if (this.bytesIn > this.rt.maxBody && this.state !== DONE) {
      this.#fail(
        new GatewayError('body-too-large', {
          detail: `request body exceeds ${this.rt.maxBody} bytes on route '${this.rt.name}'`,
          route: this.rt.name,
        }),
      );
    }
  }

  onRequestSent(): void {
    if (this.state !== SENDING) return;
    this.state = WAITING;
    this.sentAt = now();
    if (this.#offload === NO_JOB && this.sentAt >= this.#asyncAt) this.#beginOffload();
    this.#arm();
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    if (this.state === DONE) return false;
    // An informational response (103 Early Hints, a stray 100) is not the answer: the final one follows.
    if (statusCode < 200) return true;
    const t = now();
    if (this.sentAt === 0) this.sentAt = t; // answered before the body was fully sent
    const target = this.target as Target;
    if (statusCode >= 500) {
      this.#lastResult = 'status5xx';
      this.rt.upstream.report(target, 'status5xx');
      if (this.#retryStatuses?.has(statusCode) && this.#mayRetry(false)) {
        this.#retry(String(statusCode));
        return false;
      }
    } else {
      this.#lastResult = 'ok';
      this.rt.upstream.report(target, 'ok');
    }
    const { headers, serverTiming, via, malformed, toClose } = filterResponseHeaders(rawHeaders);
    this.#toClose = toClose && statusCode !== 204 && statusCode !== 304 && this.method !== 'HEAD';
    if (statusCode === 204) {
      // RFC 9110 §8.6: never a Content-Length on a 204 (HTTP/2 clients reset the stream over one).
      for (let i = headers.length - 2; i >= 0; i -= 2)
        if (headers[i].length === 14 && headers[i].toLowerCase() === 'content-length') headers.splice(i, 2);
    }
    if (malformed !== undefined) {
      this.#fail(this.#malformed(malformed));
      return false;
    }
    // No retry is possible once the response begins: the kept body is released.
    this.#dropBodyCopy();
    this.state = READING;
    this.headersAt = t;
    this.lastActivity = t;
    this.#resume = resume;
    this.status = statusCode;
    this.#arm();
    this.upstreamTiming = serverTiming;
    if (this.#offload === OFFLOADED) {
      // The client has its 202: the response goes into the store, streamed.
      const jobs = this.host.jobs as JobsHost;
      const pairs: [string, string][] = [];
      for (let i = 0; i < headers.length; i += 2) pairs.push([headers[i], headers[i + 1]]);
      const sink = resultSink(jobs.store, this.#jobId as string, { status: statusCode, headers: pairs });
      this.#sink = sink;
      sink.done.then(
        (outcome) => this.#jobStored(outcome),
        () => {}, // the body broke off: #fail records why
      );
      return true;
    }
    if (this.#offload === CREATING) this.#offload = TOO_LATE; // answered in time after all
    // Compression (SPEC §6): before the cache's tap, which keeps the encoded variant.
    const compress = this.rt.route.compress;
    let sizeHint: number | undefined;
    if (compress !== undefined) {
      const enc = negotiate(compress, this.req.headers['accept-encoding'], this.method, statusCode, headers);
      if (enc !== undefined) {
        for (let i = 0; i < headers.length; i += 2)
          if (headers[i].length === 14 && headers[i].toLowerCase() === 'content-length')
            sizeHint = Number(headers[i + 1]);
        encodeHeaders(headers, enc);
        this.#encoding = enc;
      } else if (compressible(compress, this.method, statusCode, headers)) addVary(headers);
    }
    const viaValue = via ? `${via}, ${VIA}` : VIA;
    const timing = gatewayTiming(this.dispatchedAt - this.startedAt, t - this.dispatchedAt);
    const tap = this.tap;
    if (
      tap?.head(statusCode, headers, [
        'via',
        viaValue,
        'x-request-id',
        this.requestId,
        'server-timing',
        timing,
      ])
    ) {
      this.#answered = true;
      this.status = tap.answeredStatus;
      this.outcome = tap.answeredOutcome;
      this.bytesOut = tap.answeredBytes;
      return true;
    }
    headers.push('via', viaValue, 'x-request-id', this.requestId, 'server-timing', timing);
    // Shaping (SPEC §13): the route's response edits, after the gateway's own headers.
    shapeResponse(headers, this.rt, this.req, this.requestId, this.client);
    try {
      // HTTP/2 has no reason phrase, and takes its headers best as an object.
      if (this.req.httpVersionMajor === 2) this.res.writeHead(statusCode, h2HeaderObject(headers));
      else this.res.writeHead(statusCode, statusText || undefined, headers);
    } catch {
      // An upstream header or reason phrase Node refuses to write (invalid characters): malformed
      // response. writeHead kept what it refused (HTTP/1.1: the reason phrase; HTTP/2: every header, a
      // repeated single-value one such as ETag among them): the problem's own writeHead would refuse it
      // again, and carry the upstream's headers.
      this.res.statusMessage = '';
      for (const name of this.res.getHeaderNames()) this.res.removeHeader(name);
      this.state = WAITING;
      this.#fail(this.#malformed('invalid header'));
      return false;
    }
    if (this.#encoding !== undefined) {
      const out = compressingWriter(this.res, this.#encoding as 'br' | 'zstd' | 'gzip', { sizeHint });
      this.#out = out;
      // The cache sees the encoded body, and the end of it once the encoder is done.
      if (tap !== undefined)
        out.observe(
          (c) => tap.data(c),
          () => tap.end(),
        );
    }
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.state === DONE) return false;
    if (this.#answered) return true;
    this.bytesOut += chunk.length;
    const t = now();
    this.lastActivity = t;
    const sink = this.#sink;
    if (sink !== undefined) {
      if (sink.write(chunk)) return true;
      this.paused = true;
      this.pausedAt = t;
      sink.onDrain(this.#onDrain);
      return false;
    }
    const out = this.#out;
    if (out === undefined) {
      this.tap?.data(chunk);
      if (this.res.write(chunk)) return true;
    } else if (out.write(chunk)) return true;
    // The client is slower than the upstream: stop reading the upstream until it drains. The read
    // timer is suspended meanwhile; the client send timeout runs instead.
    this.paused = true;
    this.pausedAt = t;
    if (out === undefined) this.res.once('drain', this.#onDrain);
    else out.once('drain', this.#onDrain);
    this.#arm();
    return false;
  }

  onComplete(): void {
    if (this.state === DONE) return;
    if (this.#toClose && endedByReset()) {
      // A body that runs to the close, ended by a reset: what the reset lost is missing, so it is cut,
      // never completed.
      this.#lastResult = 'reset';
      this.rt.upstream.report(this.target as Target, 'reset');
      const err = Object.assign(
        new Error('the upstream reset the connection during a body that runs to the close'),
        {
          code: 'ECONNRESET',
        },
      );
      return this.#fail(fromUpstreamFailure(err, 'read', this.rt.name, this.rt.upstream.name));
    }
    this.state = DONE;
    this.#release();
    if (this.#sink !== undefined) this.#sink.end();
    else if (this.#out !== undefined)
      this.#out.end(); // the tap's end follows the encoder's
    else if (!this.#answered) {
      this.tap?.end();
      this.res.end();
    }
    this.#finish();
  }

  onError(err: Error): void {
    if (this.state === DONE) return;
    const phase = this.#phaseForFailure(err);
    if (
      this.state === READING &&
      (this.status === 304 || this.status === 204) &&
      (err as { code?: string }).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH'
    ) {
      // undici holds a Content-Length against the body even where the status has none (RFC 9110 §8.6
      // lets a 304 carry the selected representation's length): the response is complete.
      return this.onComplete();
    }
    if (this.state === READING) {
      this.#lastResult = 'reset';
      this.rt.upstream.report(this.target as Target, 'reset');
      return this.#fail(fromUpstreamFailure(err, phase, this.rt.name, this.rt.upstream.name));
    }
    const condition = phase === 'connect' ? 'connect' : 'reset';
    const result: TryResult = condition;
    this.#lastResult = result;
    // A pooled keep-alive connection the upstream had already closed: retried once, transparently,
    // when nothing was sent that cannot be sent again. A harmless race, so no verdict on the target.
    const code = (err as { code?: string }).code;
    if (
      !this.#staleRetried &&
      condition === 'reset' &&
      (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET') &&
      !this.#hasBody &&
      this.#reused &&
      this.#safeToRepeat()
    ) {
      this.#staleRetried = true;
      return this.#retry('stale-connection', 0);
    }
    this.rt.upstream.report(this.target as Target, result);
    if (this.#retryOn(condition) && this.#mayRetry(condition === 'connect')) return this.#retry(condition);
    this.#fail(fromUpstreamFailure(err, phase, this.rt.name, this.rt.upstream.name));
  }

  // ---- retries -----------------------------------------------------------------------------------

  get #retryStatuses(): ReadonlySet<number> | undefined {
    return this.rt.retryStatuses;
  }

  #retryOn(condition: 'connect' | 'reset' | 'ttfb'): boolean {
    return this.rt.retryConditions?.has(condition) === true;
  }

  #safeToRepeat(): boolean {
    return IDEMPOTENT.has(this.method) || this.req.headers['idempotency-key'] !== undefined;
  }

  /**
   * Whether another try is allowed: the route retries, tries are left, the request is safe to repeat
   * (idempotent or Idempotency-Key) and its body, if any, was not consumed yet (only a connect
   * failure leaves it untouched), time is left for a try, and the retry budget allows it.
   */
  #mayRetry(bodyUntouched: boolean): boolean {
    const retry = this.rt.retry;
    if (retry === undefined || this.attempts >= retry.attempts) return false;
    if (!this.#safeToRepeat() || (this.#hasBody && !bodyUntouched && !this.#bodyKept())) return false;
    if (this.res.headersSent) return false;
    const left = this.totalDeadline - now();
    const need = (retry.per_try ?? 0) > 0 ? (retry.per_try as number) : 50;
    if (left < need + retry.backoff) return false;
    return this.rt.retryBudget?.tryRetry() !== false;
  }

  /** Releases the kept request body (the response began, or it cannot be kept). */
  #dropBodyCopy(): void {
    if (this.#bodyCopy === undefined) return;
    keptBodyBytes -= this.#bodyCopied;
    this.#bodyCopy = undefined;
  }

  /** The whole request body was sent and kept (retry.buffer): a retry can send it again. */
  #bodyKept(): boolean {
    return this.#bodyCopy !== undefined && this.req.complete && this.#bodyCopied === this.bytesIn;
  }

  /** The body of a try: the client's stream the first time, the kept copy on a retry after it was sent. */
  #bodyFor(): Readable | Buffer {
    this.#resending = this.attempts > 1 && this.#bodyKept();
    if (this.#resending) return Buffer.concat(this.#bodyCopy as Buffer[], this.#bodyCopied);
    // HTTP/2: the content-length is the client's word, not the framing; held to it (declared-length.ts).
    const cl = this.req.httpVersionMajor === 2 ? this.req.headers['content-length'] : undefined;
    return cl === undefined ? this.req : declaredLengthBody(this.req, Number(cl));
  }

  /** Abandons the current try and starts another after a jittered exponential backoff. */
  #retry(why: string, backoffMs?: number): void {
    (this.tries ??= []).push(why);
    (this.triedTargets ??= []).push((this.target as Target).origin);
    this.#attempt?.abandon(new AbandonedError(`retrying after ${why}`));
    this.#attempt = null;
    if (this.target) this.target.inflight--;
    this.state = QUEUED;
    const base = this.rt.retry?.backoff ?? 0;
    const delay = backoffMs ?? base * 2 ** (this.attempts - 1) * (0.5 + Math.random());
    if (delay <= 0) return this.#try();
    setTimeout(() => this.#try(), delay);
  }

  // ---- timers ------------------------------------------------------------------------------------

  #nextDeadline(precise: boolean): number {
    const to = this.rt.timeouts;
    let d = this.totalDeadline;
    if (this.#offload === NO_JOB && this.state < READING) d = Math.min(d, this.#asyncAt);
    switch (this.state) {
      case CONNECTING:
        d = Math.min(d, this.#tryDeadline);
        if (to.connect > 0) d = Math.min(d, this.dispatchedAt + to.connect);
        break;
      case SENDING: {
        // Who is slow decides which limit applies: the upstream not draining (send) or the client
        // not sending (body_idle_timeout). Pausing flips without a phase change, so outside of a
        // timer check arm for the nearer of the two; the check then re-arms for the one that applies.
        const send = to.send > 0 ? to.send : Number.POSITIVE_INFINITY;
        const idle = this.host.clientBodyIdleMs > 0 ? this.host.clientBodyIdleMs : Number.POSITIVE_INFINITY;
        const gap = precise ? (this.req.isPaused() ? send : idle) : Math.min(send, idle);
        d = Math.min(d, this.lastActivity + gap);
        break;
      }
      case WAITING:
        d = Math.min(d, this.#tryDeadline);
        if (to.ttfb > 0) d = Math.min(d, this.sentAt + to.ttfb);
        break;
      case READING:
        if (this.paused) {
          if (this.host.clientSendTimeoutMs > 0)
            d = Math.min(d, this.pausedAt + this.host.clientSendTimeoutMs);
        } else if (to.read > 0) d = Math.min(d, this.lastActivity + to.read);
        break;
    }
    return d;
  }

  #arm(precise = false): void {
    const d = this.#nextDeadline(precise);
    if (d === Number.POSITIVE_INFINITY) return;
    if (this.#timer !== null) {
      if (this.#timerAt <= d) return; // fires earlier and re-arms itself
      clearTimeout(this.#timer);
    }
    this.#timerAt = d;
    this.#timer = setTimeout(this.#onTimer, Math.max(0, Math.ceil(d - now())));
  }

  #timerFired(): void {
    this.#timer = null;
    this.#timerAt = Number.POSITIVE_INFINITY;
    if (this.state === DONE) return;
    const t = now() + 1; // timers may fire up to 1 ms early through rounding
    if (this.#offload === NO_JOB && t >= this.#asyncAt && this.state < READING) {
      // A request body still on its way waits for onRequestSent: the 202 must not cut it short.
      if (!(this.#hasBody && this.state <= SENDING)) this.#beginOffload();
    }
    if (t >= this.totalDeadline) {
      // The body is still on its way and the upstream is taking it (not paused): the client is the
      // one holding the request up, so the answer is its 408, with no verdict on the upstream. A
      // 504 here let a few slow uploads (slowhttptest -B) open the upstream's circuit for everyone.
      if (this.state === SENDING && !this.req.complete && !this.req.isPaused() && this.#offload !== OFFLOADED)
        return this.#fail(
          new GatewayError('client-timeout', {
            detail: `client had not sent the whole request body when the total budget of ${this.budget}ms ran out`,
            route: this.rt.name,
          }),
        );
      return this.#timeout('total');
    }
    const to = this.rt.timeouts;
    switch (this.state) {
      case CONNECTING:
        if (t >= this.#tryDeadline) return this.#tryTimeout('connect');
        if (to.connect > 0 && t >= this.dispatchedAt + to.connect) return this.#tryTimeout('connect');
        break;
      case SENDING:
        if (this.req.isPaused()) {
          if (to.send > 0 && t >= this.lastActivity + to.send) return this.#timeout('send');
        } else if (this.host.clientBodyIdleMs > 0 && t >= this.lastActivity + this.host.clientBodyIdleMs) {
          return this.#fail(
            new GatewayError('client-timeout', {
              detail: `client sent no request body data for ${this.host.clientBodyIdleMs}ms`,
              route: this.rt.name,
            }),
          );
        }
        break;
      case WAITING:
        if (t >= this.#tryDeadline) return this.#tryTimeout('ttfb');
        if (to.ttfb > 0 && this.#offload !== OFFLOADED && t >= this.sentAt + to.ttfb)
          return this.#tryTimeout('ttfb');
        break;
      case READING:
        if (this.paused) {
          if (
            this.#sink === undefined &&
            this.host.clientSendTimeoutMs > 0 &&
            t >= this.pausedAt + this.host.clientSendTimeoutMs
          ) {
            // The client stopped reading: close it; the upstream call is aborted with it.
            this.outcome = 'client_aborted';
            this.errorCode = 'client-send-timeout';
            cutResponse(this.res);
            return;
          }
        } else if (to.read > 0 && t >= this.lastActivity + to.read) return this.#timeout('read');
        break;
    }
    this.#arm(true);
  }

  /** A connect or ttfb deadline of the current try (phase budget or per_try): retry or 504. */
  #tryTimeout(phase: 'connect' | 'ttfb'): void {
    this.#lastResult = phase === 'connect' ? 'connect' : 'timeout';
    this.rt.upstream.report(this.target as Target, this.#lastResult);
    const condition = phase === 'connect' ? 'connect' : 'ttfb';
    if (this.#retryOn(condition) && this.#mayRetry(phase === 'connect'))
      return this.#retry(`${condition}-timeout`);
    const perTry = this.rt.retry?.per_try;
    const phaseBudget = this.rt.timeouts[phase];
    const byPerTry = perTry !== undefined && perTry > 0 && (phaseBudget === 0 || perTry < phaseBudget);
    this.#fail(
      upstreamTimeout(
        phase,
        this.rt.name,
        this.rt.upstream.name,
        byPerTry ? (perTry as number) : phaseBudget,
      ),
    );
  }

  #timeout(phase: Phase): void {
    const offloaded = this.#offload === OFFLOADED;
    if (phase === 'total' || phase === 'read' || phase === 'send') {
      // A total budget that only the client's shorter x-timeout-ms set is the client's choice: no
      // verdict on the upstream (circuit breaker). Outlier ejection never sees total timeouts.
      this.#lastResult = phase === 'total' && this.clientBudget && !offloaded ? 'none' : 'timeout';
    }
    if (phase === 'total' && offloaded) {
      const timeout = (this.rt.route.async as NonNullable<RouteRuntime['route']['async']>).timeout;
      return this.#fail(
        upstreamTimeout(phase, this.rt.name, this.rt.upstream.name, timeout, 'async.timeout'),
      );
    }
    const budget = phase === 'total' ? this.budget : this.rt.timeouts[phase];
    this.#fail(upstreamTimeout(phase, this.rt.name, this.rt.upstream.name, budget));
  }

  #drained(): void {
    this.paused = false;
    this.lastActivity = now();
    if (this.state === DONE) return;
    this.#arm();
    this.#resume?.();
  }

  // ---- async offload (SPEC §5) ------------------------------------------------------------------

  /** Commits a job for this request; once committed, answers 202 and goes on in the background. */
  #beginOffload(): void {
    const jobs = this.host.jobs;
    const cfg = this.rt.route.async;
    if (jobs === undefined || cfg === undefined || this.#offload !== NO_JOB) return;
    this.#offload = CREATING;
    const req = this.req;
    const id = newJobId();
    const callback = callbackFor(req.headers['callback-url'], cfg.callback);
    jobs.store
      .create({
        id,
        route: this.rt.name,
        mode: cfg.mode === 'prefer' ? 'prefer' : 'auto',
        status: 'running',
        owner_hash: ownerHash(req.headers),
        request_id: this.requestId,
        received_at: Date.now() - (now() - this.startedAt),
        keep_ms: cfg.keep,
        max_result: cfg.max_result,
        idempotent: isSafeToRepeat(this.method, req.headers),
        callback_url: callback.url,
      })
      .then(
        (job) => {
          if (this.#offload !== CREATING || this.state === DONE || this.res.headersSent) {
            // Answered synchronously meanwhile: nobody will ever see this job's id.
            this.#offload = TOO_LATE;
            void jobs.store.cancel(id).catch(() => {});
            return;
          }
          this.#offload = OFFLOADED;
          this.#jobId = id;
          // A job's result goes to the job store, not to a cache.
          this.tap?.abort();
          this.tap = undefined;
          jobs.running.set(id, this);
          // The client leaving now changes nothing: the call goes on for the job.
          this.res.off('close', this.#onClose);
          const p50 = this.rt.recent.p50;
          const elapsed = now() - this.startedAt;
          const retryAfter = p50 > elapsed ? Math.min(30, Math.ceil((p50 - elapsed) / 1000)) : 2;
          if (callback.refused) {
            jobs.logger.warn(
              { route: this.rt.name, job: id, request_id: this.requestId, reason: callback.refused },
              'Callback-Url ignored',
            );
          }
          acceptedResponse(
            this.res,
            job,
            jobs.prefix,
            retryAfter,
            this.#preferenceApplied,
            this.requestId,
            callback.refused,
          );
          this.status = 202;
          this.outcome = 'async';
          this.#finish();
          // From now on the budget is the background one, and its deadline fires on time.
          this.totalDeadline = this.#asyncEnd;
          this.#arm();
        },
        (err: Error) => {
          // SPEC §5: a job that cannot be stored is never acknowledged; the client gets 503 with
          // Retry-After (unless the upstream answered meanwhile). Routes without async are unaffected.
          this.#offload = TOO_LATE;
          jobs.logger.warn(
            { route: this.rt.name, request_id: this.requestId, error: err.message },
            'job store unavailable: request refused with 503',
          );
          if (this.state !== DONE && this.state !== READING) {
            this.#fail(
              new GatewayError('store-unavailable', {
                detail: `the job store cannot take a job for route '${this.rt.name}' now`,
                route: this.rt.name,
                retryAfter: 5,
              }),
            );
          }
        },
      );
  }

  #jobStored(outcome: string): void {
    const jobs = this.host.jobs as JobsHost;
    if (outcome === 'too-large' || outcome === 'refused') {
      // The store stopped reading (result over max_result, or the job was cancelled): stop the call.
      this.#attempt?.abandon(new AbandonedError(`job ${outcome}`));
    }
    // The job's end is logged when the store reports it final (JobsHost), like every other job's.
    jobs.running.delete(this.#jobId as string);
  }

  #endJob(err: GatewayError): void {
    const jobs = this.host.jobs as JobsHost;
    const id = this.#jobId as string;
    jobs.running.delete(id);
    void jobs.store.fail(id, jobErrorFrom(err)).catch(() => {});
  }

  /**
   * The drain ran out of time (SPEC §1): a request without response headers gets 503 shutting-down,
   * one whose response has begun is cut; both are logged with outcome `shutdown`. Returns whether the
   * response was cut, undefined when the exchange had already ended.
   */
  shutdown(): boolean | undefined {
    if (this.state === DONE) return undefined;
    const cut = this.res.headersSent;
    this.#lastResult = 'none';
    this.#fail(
      new GatewayError('shutting-down', {
        detail: `the gateway shut down before upstream '${this.rt.upstream.name}' completed the response on route '${this.rt.name}'`,
        route: this.rt.name,
        proxyError: 'proxy_internal_error',
        retryAfter: 1,
      }),
    );
    return cut;
  }

  /** DELETE on the job: the store already says cancelled; abort the upstream call. */
  cancelJob(): void {
    if (this.#offload !== OFFLOADED || this.state === DONE) return;
    this.state = DONE;
    this.#attempt?.abandon(new AbandonedError('job cancelled'));
    this.#release();
    this.#sink?.abort(new AbandonedError('job cancelled'));
    (this.host.jobs as JobsHost).running.delete(this.#jobId as string);
  }

  /** The gateway stops while this job's call runs: it ends failed with `interrupted`. */
  async interruptJob(): Promise<void> {
    if (this.#offload !== OFFLOADED || this.state === DONE) return;
    this.state = DONE;
    const err = new GatewayError('interrupted', {
      detail: `the gateway stopped while the upstream call of route '${this.rt.name}' was running`,
      route: this.rt.name,
    });
    this.#attempt?.abandon(err);
    this.#release();
    this.#sink?.abort(err);
    const jobs = this.host.jobs as JobsHost;
    jobs.running.delete(this.#jobId as string);
    await jobs.store.fail(this.#jobId as string, jobErrorFrom(err)).catch(() => {});
  }

  // ---- endings -----------------------------------------------------------------------------------

  #malformed(why: string): GatewayError {
    const err = Object.assign(new Error(`malformed upstream response: ${why}`), {
      code: 'HPE_INVALID_RESPONSE',
    });
    return fromUpstreamFailure(err, 'ttfb', this.rt.name, this.rt.upstream.name);
  }

  #phaseForFailure(err: Error): Phase {
    const code = (err as { code?: string }).code;
    if (this.state === CONNECTING || code === 'ECONNREFUSED' || code === 'UND_ERR_CONNECT_TIMEOUT')
      return 'connect';
    if (this.state === READING) return 'read';
    return 'ttfb';
  }

  /** Stops the timer and gives back the target, the slot and the breaker admission. */
  #release(): void {
    this.#dropBodyCopy();
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    if (this.#attempt !== null && this.target) this.target.inflight--;
    this.#attempt = null;
    const upstream = this.rt.upstream;
    if (this.#slot) {
      this.#slot = false;
      upstream.releaseSlot();
    }
    if (this.#admission !== null) {
      upstream.complete(this.#admission, this.#lastResult);
      this.#admission = null;
    }
  }

  /** Ends the exchange with an error: aborts the upstream call, answers or cuts the client, logs. */
  #fail(err: GatewayError): void {
    if (this.state === DONE) return;
    const headersSent = this.state === READING;
    this.state = DONE;
    this.#attempt?.abandon(err);
    this.#release();
    if (this.#offload === OFFLOADED) {
      // The client has its 202 already: the job records the failure in the SPEC §4 vocabulary.
      this.#sink?.abort(err);
      this.#endJob(err);
      return;
    }
    if (this.#answered) {
      // The tap answered the client already; only the upstream's discarded body failed.
      this.#finish();
      return;
    }
    this.outcome = err.outcome;
    this.phase = err.phase ?? null;
    this.errorCode = err.code;
    if (headersSent || this.res.headersSent) {
      // Too late for an error response: end the client response abruptly so it can never be taken
      // for a complete one.
      this.tap?.abort();
      cutResponse(this.res);
    } else if (this.tap?.rescue(err)) {
      // Served from the cache instead (stale-if-error): the client never sees the error.
      this.outcome = this.tap.answeredOutcome;
      this.status = this.tap.answeredStatus;
      this.bytesOut = this.tap.answeredBytes;
    } else {
      this.status = err.status;
      // Close the connection when the request body may not have been read to its end.
      const close = this.req.complete === false;
      this.host.respondError(this, err, close);
    }
    this.#finish();
  }

  #clientClosed(): void {
    if (this.state === DONE) return;
    // The client went away before the response was complete: abort the upstream call at once.
    this.state = DONE;
    this.#attempt?.abandon(new AbandonedError('client closed the connection'));
    // No verdict on the upstream from a try the client cancelled.
    if (this.#lastResult === 'ok' && !this.res.headersSent) this.#lastResult = 'none';
    this.#release();
    if (this.#answered) return this.#finish(); // the answer went out; the upstream's body is dropped
    this.tap?.abort();
    if (this.outcome === 'ok') this.outcome = 'client_aborted';
    this.#finish();
  }

  #finish(): void {
    if (this.#logged) return;
    this.#logged = true;
    this.res.off('close', this.#onClose);
    const t = now();
    const r = (x: number) => Math.round(x * 100) / 100;
    this.host.log(
      {
        time: isoNow(),
        request_id: this.requestId,
        method: this.method,
        path: this.logPath,
        route: this.rt.name,
        upstream: this.rt.upstream.name,
        target: this.target?.origin ?? null,
        status: this.outcome === 'client_aborted' && !this.res.headersSent ? 499 : this.status,
        outcome: this.outcome,
        phase: this.phase,
        error: this.errorCode,
        client: this.client,
        bytes_in: this.bytesIn,
        bytes_out: this.bytesOut,
        attempts: this.attempts,
        retries: Math.max(0, this.attempts - 1),
        tries: this.tries,
        tried_targets: this.triedTargets,
        dns: this.#connectTimings?.dns == null ? null : r(this.#connectTimings.dns),
        connect: this.#connectTimings
          ? r(this.#connectTimings.tcp)
          : this.connectedAt > 0
            ? r(this.connectedAt - this.dispatchedAt)
            : null,
        tls: this.#connectTimings?.tls == null ? null : r(this.#connectTimings.tls),
        ttfb: this.headersAt > 0 ? r(this.headersAt - this.sentAt) : null,
        total: r(t - this.startedAt),
        budget_ms: this.budget,
        budget_source: this.clientBudget ? 'client' : 'route',
        job: this.#jobId,
        cache: this.tap?.cacheStatus,
        encoding: this.#encoding,
        upstream_timing:
          this.upstreamTiming === undefined ? undefined : parseServerTiming(this.upstreamTiming),
        [REQUEST_OF]: this.req,
      },
      this,
    );
  }
}
