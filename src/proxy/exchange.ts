/**
 * One client request forwarded to one upstream target: the streaming, the five phase timeouts of
 * SPEC §4, cancellation both ways, and the access-log line. This is the hot path, so it is a single
 * object per request that is itself the undici dispatch handler (no per-phase closures or promises),
 * with one lazily re-armed timer: a phase change that pushes the next deadline later leaves the timer
 * alone, and the timer re-arms itself for what is left when it fires early.
 *
 * Phases (SPEC §4): connect = dispatch → connection ready; send = idle gap writing the request body
 * (only while the upstream is not draining it); ttfb = request fully sent → response headers; read =
 * idle gap between response chunks (not while the client applies back-pressure); total = request
 * arrival → response complete.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import {
  fromUpstreamFailure,
  GatewayError,
  isGatewayError,
  type Outcome,
  type Phase,
  upstreamTimeout,
} from '../errors.ts';
import type { AccessLogEntry } from '../observability/access-log.ts';
import { gatewayTiming, parseServerTiming } from '../observability/server-timing.ts';
import type { Target } from '../upstream/upstream.ts';
import { filterResponseHeaders, VIA } from './headers.ts';
import type { RouteRuntime } from './route-runtime.ts';

const CONNECTING = 0;
const SENDING = 1;
const WAITING = 2;
const READING = 3;
const DONE = 4;

/** What an exchange needs from the gateway around it. */
export interface ExchangeHost {
  readonly clientBodyIdleMs: number;
  readonly clientSendTimeoutMs: number;
  respondError(exchange: Exchange, err: GatewayError, close: boolean): void;
  log(entry: AccessLogEntry): void;
}

const now = performance.now.bind(performance);

/** An error used to abort the upstream request when the client went away. */
class ClientGoneError extends Error {
  override name = 'ClientGoneError';
  readonly code = 'client-aborted';
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
  readonly totalDeadline: number;
  readonly client: string | undefined;

  target: Target | undefined = undefined;
  attempts = 0;
  state = CONNECTING;
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

  #abortUpstream: ((err: Error) => void) | null = null;
  #pendingAbort: Error | null = null;
  #resume: (() => void) | null = null;
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
    this.totalDeadline = budget > 0 ? startedAt + budget : Number.POSITIVE_INFINITY;
    // Read now: undici detaches req.socket when it aborts the request body stream.
    this.client = req.socket.remoteAddress;
    res.once('close', this.#onClose);
  }

  /** Sends the request to `target`. `headers` are the filtered request headers (x-timeout-ms is added here). */
  dispatch(target: Target, path: string, headers: string[], hasBody: boolean): void {
    this.target = target;
    this.attempts++;
    const t = now();
    this.dispatchedAt = t;
    this.state = CONNECTING;
    if (this.budget > 0) {
      const left = Math.max(0, Math.floor(this.totalDeadline - t));
      headers.push('x-timeout-ms', String(left));
      if (left === 0) {
        this.#timeout('total');
        return;
      }
    }
    const to = this.rt.timeouts;
    target.inflight++;
    this.#arm();
    target.pool.dispatch(
      {
        path,
        method: this.method,
        headers,
        body: hasBody ? this.req : null,
        // Backstops only: the gateway's own timers fire first.
        headersTimeout: to.ttfb > 0 ? to.ttfb + 2_000 : 0,
        bodyTimeout: to.read > 0 ? to.read + 2_000 : 0,
      },
      // undici's typings give onBodySent(size, total); at runtime it passes the chunk itself.
      this as unknown as Dispatcher.DispatchHandler,
    );
  }

  // ---- undici handler ----------------------------------------------------------------------------

  onConnect(abort: (err?: Error) => void): void {
    if (this.state === DONE) {
      abort(this.#pendingAbort ?? new ClientGoneError('request already finished'));
      return;
    }
    this.#abortUpstream = abort;
    const t = now();
    this.connectedAt = t;
    this.lastActivity = t;
    this.state = SENDING;
    this.#arm();
  }

  onBodySent(chunk: { length: number }): void {
    this.bytesIn += chunk.length;
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
    this.#arm();
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    if (this.state === DONE) return false;
    const t = now();
    this.state = READING;
    this.headersAt = t;
    if (this.sentAt === 0) this.sentAt = t; // answered before the body was fully sent
    this.lastActivity = t;
    this.#resume = resume;
    this.status = statusCode;
    this.#arm();
    const { headers, serverTiming, via, ambiguous } = filterResponseHeaders(rawHeaders);
    if (ambiguous) {
      this.state = WAITING;
      this.#fail(this.#malformed('Content-Length with Transfer-Encoding'));
      return false;
    }
    this.upstreamTiming = serverTiming;
    const upstreamMs = t - this.dispatchedAt;
    headers.push(
      'via',
      via ? `${via}, ${VIA}` : VIA,
      'x-request-id',
      this.requestId,
      'server-timing',
      gatewayTiming(this.dispatchedAt - this.startedAt, upstreamMs),
    );
    this.rt.decorateResponse?.(this, headers);
    try {
      this.res.writeHead(statusCode, statusText || undefined, headers);
    } catch {
      // An upstream header Node refuses to write (invalid characters): malformed response.
      this.state = WAITING;
      this.#fail(this.#malformed('invalid header'));
      return false;
    }
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.state === DONE) return false;
    this.bytesOut += chunk.length;
    const t = now();
    this.lastActivity = t;
    if (this.res.write(chunk)) return true;
    // The client is slower than the upstream: stop reading the upstream until it drains. The read
    // timer is suspended meanwhile; the client send timeout runs instead.
    this.paused = true;
    this.pausedAt = t;
    this.res.once('drain', this.#onDrain);
    this.#arm();
    return false;
  }

  onComplete(): void {
    if (this.state === DONE) return;
    this.state = DONE;
    this.#release();
    this.res.end();
    this.#finish();
  }

  onError(err: Error): void {
    if (this.state === DONE) return;
    this.#fail(fromUpstreamFailure(err, this.#phaseForFailure(err), this.rt.name, this.rt.upstream.name));
  }

  // ---- timers ------------------------------------------------------------------------------------

  #nextDeadline(precise: boolean): number {
    const to = this.rt.timeouts;
    let d = this.totalDeadline;
    switch (this.state) {
      case CONNECTING:
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
    if (t >= this.totalDeadline) return this.#timeout('total');
    const to = this.rt.timeouts;
    switch (this.state) {
      case CONNECTING:
        if (to.connect > 0 && t >= this.dispatchedAt + to.connect) return this.#timeout('connect');
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
        if (to.ttfb > 0 && t >= this.sentAt + to.ttfb) return this.#timeout('ttfb');
        break;
      case READING:
        if (this.paused) {
          if (this.host.clientSendTimeoutMs > 0 && t >= this.pausedAt + this.host.clientSendTimeoutMs) {
            // The client stopped reading: close it; the upstream call is aborted with it.
            this.outcome = 'client_aborted';
            this.errorCode = 'client-send-timeout';
            this.res.destroy();
            return;
          }
        } else if (to.read > 0 && t >= this.lastActivity + to.read) return this.#timeout('read');
        break;
    }
    this.#arm(true);
  }

  #timeout(phase: Phase): void {
    const to = this.rt.timeouts;
    const budget = phase === 'total' ? this.budget : to[phase];
    this.#fail(upstreamTimeout(phase, this.rt.name, this.rt.upstream.name, budget));
  }

  #drained(): void {
    this.paused = false;
    this.lastActivity = now();
    if (this.state === DONE) return;
    this.#arm();
    this.#resume?.();
  }

  #malformed(why: string): GatewayError {
    const err = Object.assign(new Error(`malformed upstream response: ${why}`), {
      code: 'HPE_INVALID_RESPONSE',
    });
    return fromUpstreamFailure(err, 'ttfb', this.rt.name, this.rt.upstream.name);
  }

  // ---- endings -----------------------------------------------------------------------------------

  #phaseForFailure(err: Error): Phase {
    const code = (err as { code?: string }).code;
    if (this.state === CONNECTING || code === 'ECONNREFUSED' || code === 'UND_ERR_CONNECT_TIMEOUT')
      return 'connect';
    if (this.state === READING) return 'read';
    return 'ttfb';
  }

  #release(): void {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    if (this.target) this.target.inflight--;
    this.target = this.target; // keep for the log
  }

  /** Ends the exchange with an error: aborts the upstream call, answers or cuts the client, logs. */
  #fail(err: GatewayError): void {
    if (this.state === DONE) return;
    const headersSent = this.state === READING;
    this.state = DONE;
    if (this.attempts > 0) this.#release();
    else if (this.#timer !== null) clearTimeout(this.#timer);
    if (this.#abortUpstream) this.#abortUpstream(err);
    else this.#pendingAbort = err;
    this.outcome = err.outcome;
    this.phase = err.phase ?? null;
    this.errorCode = err.code;
    if (headersSent || this.res.headersSent) {
      // Too late for an error response: end the client response abruptly so it can never be taken
      // for a complete one.
      this.res.destroy();
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
    const gone = new ClientGoneError('client closed the connection');
    this.state = DONE;
    if (this.attempts > 0) this.#release();
    if (this.#abortUpstream) this.#abortUpstream(gone);
    else this.#pendingAbort = gone;
    if (this.outcome === 'ok') this.outcome = 'client_aborted';
    if (this.status === 0 || this.outcome === 'client_aborted') this.status = this.status || 499;
    this.#finish();
  }

  #finish(): void {
    this.res.off('close', this.#onClose);
    const t = now();
    const r = (x: number) => Math.round(x * 100) / 100;
    this.host.log({
      time: new Date().toISOString(),
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
      dns: null,
      connect: this.connectedAt > 0 ? r(this.connectedAt - this.dispatchedAt) : null,
      tls: null,
      ttfb: this.headersAt > 0 ? r(this.headersAt - this.sentAt) : null,
      total: r(t - this.startedAt),
      budget_ms: this.budget,
      upstream_timing: this.upstreamTiming === undefined ? undefined : parseServerTiming(this.upstreamTiming),
    });
  }
}

export function isClientGone(err: unknown): boolean {
  return err instanceof ClientGoneError || (isGatewayError(err) && err.outcome === 'client_aborted');
}
