/**
 * The catalogue of every error the gateway itself answers with. Each has a stable `code` (the suffix of
 * the RFC 9457 problem `type`), an HTTP status, an access-log outcome and, for 5xx, the RFC 9209
 * Proxy-Status error token. docs/errors.md mirrors this file. Stages throw or return these; exactly one
 * function (`problemResponse`) turns them into a response.
 */
import type { ServerResponse } from 'node:http';
import { formatDuration } from './config/units.ts';

export type Phase = 'connect' | 'send' | 'ttfb' | 'read' | 'total';

export type Outcome =
  | 'ok'
  | 'timeout'
  | 'upstream_error'
  | 'async'
  | 'cache_hit'
  | 'stale'
  | 'shed'
  | 'circuit_open'
  | 'client_aborted'
  | 'no_route'
  | 'rejected'
  | 'shutdown'
  | 'forbidden'
  | 'unauthorized'
  | 'rate_limited'
  | 'job_completed'
  | 'job_failed'
  | 'job_cancelled';

export type ErrorCode =
  | 'upstream-timeout'
  | 'upstream-unreachable'
  | 'no-healthy-upstream'
  | 'circuit-open'
  | 'overloaded'
  | 'no-route'
  | 'bad-request'
  | 'client-timeout'
  | 'body-too-large'
  | 'headers-too-large'
  | 'internal-error'
  | 'job-not-found'
  | 'job-not-final'
  | 'job-final'
  | 'job-cancelled'
  | 'method-not-allowed'
  | 'interrupted'
  | 'result-too-large'
  | 'store-unavailable'
  | 'budget-exhausted'
  | 'shutting-down'
  | 'forbidden'
  | 'unauthorized'
  | 'auth-unavailable'
  | 'rate-limited';

interface Kind {
  status: number;
  title: string;
  message: string;
  outcome: Outcome;
}

const KINDS: Record<ErrorCode, Kind> = {
  'upstream-timeout': {
    status: 504,
    title: 'Upstream timed out',
    message: 'Endpoint request timed out',
    outcome: 'timeout',
  },
  'upstream-unreachable': {
    status: 502,
    title: 'Upstream unreachable',
    message: 'Bad gateway: the upstream could not be reached or answered incorrectly',
    outcome: 'upstream_error',
  },
  'no-healthy-upstream': {
    status: 503,
    title: 'No healthy upstream',
    message: 'Service unavailable: no healthy upstream',
    outcome: 'upstream_error',
  },
  'circuit-open': {
    status: 503,
    title: 'Circuit open',
    message: 'Service unavailable: the upstream is failing and is given time to recover',
    outcome: 'circuit_open',
  },
  overloaded: {
    status: 503,
    title: 'Upstream overloaded',
    message: 'Service unavailable: too many requests are waiting for this upstream',
    outcome: 'shed',
  },
  'no-route': {
    status: 404,
    title: 'No route',
    message: 'Not found: no route matches this request',
    outcome: 'no_route',
  },
  'bad-request': {
    status: 400,
    title: 'Bad request',
    message: 'The request is malformed or ambiguous',
    outcome: 'rejected',
  },
  'client-timeout': {
    status: 408,
    title: 'Request timeout',
    message: 'The request was not received in time',
    outcome: 'rejected',
  },
  'body-too-large': {
    status: 413,
    title: 'Request body too large',
    message: 'The request body exceeds the limit of this route',
    outcome: 'rejected',
  },
  'headers-too-large': {
    status: 431,
    title: 'Request headers too large',
    message: 'The request head has too many or too large headers',
    outcome: 'rejected',
  },
  'internal-error': {
    status: 500,
    title: 'Internal gateway error',
    message: 'The gateway failed to handle the request',
    outcome: 'upstream_error',
  },
  'job-not-found': {
    status: 404,
    title: 'Job not found',
    message: 'Not found: no such job (it may have expired)',
    outcome: 'rejected',
  },
  'job-not-final': {
    status: 409,
    title: 'Job not finished',
    message: 'The job has not finished yet: poll its status and retry after Retry-After',
    outcome: 'rejected',
  },
  'job-final': {
    status: 409,
    title: 'Job already finished',
    message: 'The job has already finished and can no longer be cancelled',
    outcome: 'rejected',
  },
  'job-cancelled': {
    status: 410,
    title: 'Job cancelled',
    message: 'The job was cancelled: it has no result',
    outcome: 'rejected',
  },
  'method-not-allowed': {
    status: 405,
    title: 'Method not allowed',
    message: 'This resource does not support the request method',
    outcome: 'rejected',
  },
  interrupted: {
    status: 502,
    title: 'Job interrupted',
    message: 'Bad gateway: the gateway stopped while the upstream call was in progress',
    outcome: 'upstream_error',
  },
  'result-too-large': {
    status: 502,
    title: 'Result too large',
    message: 'Bad gateway: the upstream response exceeds the largest result kept for this route',
    outcome: 'upstream_error',
  },
  'store-unavailable': {
    status: 503,
    title: 'Job store unavailable',
    message: 'Service unavailable: the job store cannot be used right now',
    outcome: 'upstream_error',
  },
  'budget-exhausted': {
    status: 504,
    title: 'Budget exhausted',
    message: 'Endpoint request timed out',
    outcome: 'shed',
  },
  'shutting-down': {
    status: 503,
    title: 'Shutting down',
    message: 'Service unavailable: the gateway is shutting down; retry',
    outcome: 'shutdown',
  },
  forbidden: {
    status: 403,
    title: 'Forbidden',
    message: 'Forbidden: this client address may not use this route',
    outcome: 'forbidden',
  },
  unauthorized: {
    status: 401,
    title: 'Unauthorized',
    message: 'Unauthorized: valid credentials are required for this route',
    outcome: 'unauthorized',
  },
  'auth-unavailable': {
    status: 503,
    title: 'Authentication unavailable',
    message: 'Service unavailable: the keys to verify the credentials could not be fetched; retry',
    outcome: 'unauthorized',
  },
  'rate-limited': {
    status: 429,
    title: 'Rate limited',
    message: 'Too many requests: slow down and retry after Retry-After',
    outcome: 'rate_limited',
  },
};

/** RFC 9209 error tokens used in Proxy-Status. */
export type ProxyErrorToken =
  | 'connection_timeout'
  | 'connection_write_timeout'
  | 'connection_read_timeout'
  | 'http_response_timeout'
  | 'connection_refused'
  | 'connection_terminated'
  | 'dns_error'
  | 'dns_timeout'
  | 'http_response_body_size'
  | 'destination_unavailable'
  | 'connection_limit_reached'
  | 'http_protocol_error'
  | 'http_response_header_section_size'
  | 'http_response_incomplete'
  | 'tls_protocol_error'
  | 'tls_certificate_error'
  | 'proxy_internal_error';

export interface GatewayErrorInit {
  detail: string;
  phase?: Phase;
  route?: string;
  upstream?: string;
  timeoutMs?: number;
  proxyError?: ProxyErrorToken;
  retryAfter?: number;
  /** More response headers, flat (WWW-Authenticate, RateLimit, …). */
  headers?: readonly string[];
  cause?: unknown;
}

/** An error the gateway answers with itself. `code` is stable; compare codes, not classes. */
export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly title: string;
  readonly outcome: Outcome;
  readonly publicMessage: string;
  readonly detail: string;
  readonly phase: Phase | undefined;
  readonly route: string | undefined;
  readonly upstream: string | undefined;
  readonly timeoutMs: number | undefined;
  readonly proxyError: ProxyErrorToken | undefined;
  readonly retryAfter: number | undefined;
  readonly headers: readonly string[] | undefined;

  constructor(code: ErrorCode, init: GatewayErrorInit) {
    // No stack trace: a GatewayError is an answer, not a bug (a cause keeps its own stack). Capturing
    // one was a tenth of the CPU of a burst of timeouts, and streams format it (err.stack) on destroy.
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(init.detail, init.cause === undefined ? undefined : { cause: init.cause });
    Error.stackTraceLimit = limit;
    const kind = KINDS[code];
    this.name = 'GatewayError';
    this.code = code;
    this.status = kind.status;
    this.title = kind.title;
    this.outcome = kind.outcome;
    this.publicMessage = kind.message;
    this.detail = init.detail;
    this.phase = init.phase;
    this.route = init.route;
    this.upstream = init.upstream;
    this.timeoutMs = init.timeoutMs;
    this.proxyError = init.proxyError ?? (kind.status === 500 ? 'proxy_internal_error' : undefined);
    this.retryAfter = init.retryAfter;
    this.headers = init.headers;
  }
}

export function isGatewayError(err: unknown): err is GatewayError {
  return err instanceof Error && (err as { name?: string }).name === 'GatewayError';
}

const PHASE_TEXT: Record<Phase, string> = {
  connect: 'could not be connected to within',
  send: 'did not accept request body data for',
  ttfb: 'sent no response headers within',
  read: 'sent no response body data for',
  total: 'did not complete the response within the total budget of',
};

const PHASE_PROXY_ERROR: Record<Phase, ProxyErrorToken> = {
  connect: 'connection_timeout',
  send: 'connection_write_timeout',
  ttfb: 'http_response_timeout',
  read: 'connection_read_timeout',
  total: 'http_response_timeout',
};

/**
 * The 504 of a phase that expired. `budget` names the setting behind `timeoutMs` when it is not the
 * phase's own (e.g. `async.timeout` for the total budget of a job's background call).
 */
export function upstreamTimeout(
  phase: Phase,
  route: string,
  upstream: string,
  timeoutMs: number,
  budget?: string,
): GatewayError {
  const what =
    budget === undefined
      ? `${PHASE_TEXT[phase]} ${formatDuration(timeoutMs)} (${phase})`
      : `did not complete the response within ${formatDuration(timeoutMs)} (${budget})`;
  return new GatewayError('upstream-timeout', {
    detail: `upstream '${upstream}' ${what} on route '${route}'`,
    phase,
    route,
    upstream,
    timeoutMs,
    proxyError: PHASE_PROXY_ERROR[phase],
  });
}

/**
 * Maps whatever the upstream client (undici, node:net) threw to a gateway error. Never re-wraps one of
 * ours. `phase` is where the exchange was when it failed.
 */
export function fromUpstreamFailure(
  err: unknown,
  phase: Phase,
  route: string,
  upstream: string,
): GatewayError {
  if (isGatewayError(err)) return err;
  const code = (err as { code?: string } | null)?.code ?? '';
  const unreachable = (what: string, proxyError: ProxyErrorToken) =>
    new GatewayError('upstream-unreachable', {
      detail: `upstream '${upstream}' ${what} (${phase}) on route '${route}'`,
      phase,
      route,
      upstream,
      proxyError,
      cause: err,
    });
  switch (code) {
    case 'ECONNREFUSED':
      return unreachable('refused the connection', 'connection_refused');
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_NONAME':
      return unreachable('could not be resolved (DNS)', 'dns_error');
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
      return unreachable('is not reachable', 'destination_unavailable');
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return unreachable('closed the connection', 'connection_terminated');
    case 'UND_ERR_HEADERS_OVERFLOW':
      return unreachable('sent response headers larger than allowed', 'http_response_header_section_size');
    case 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH':
      // Before the headers were accepted this is the parser refusing ambiguous framing (CL + TE).
      return phase === 'read'
        ? unreachable('sent a body that does not match its Content-Length', 'http_response_incomplete')
        : unreachable('sent a malformed response (ambiguous message length)', 'http_protocol_error');
    case 'UND_ERR_CONNECT_TIMEOUT':
      return unreachable('could not be connected to in time', 'connection_timeout');
    case 'UND_ERR_HEADERS_TIMEOUT':
      return unreachable('sent no response headers in time', 'http_response_timeout');
    case 'UND_ERR_BODY_TIMEOUT':
      return unreachable('stopped sending the response body', 'connection_read_timeout');
    default:
      if (code.startsWith('HPE_') || code === 'UND_ERR_INFO' || (err as Error)?.name === 'HTTPParserError') {
        return unreachable('sent a malformed response', 'http_protocol_error');
      }
      if (CERTIFICATE.test(code))
        return unreachable('presented a certificate that could not be verified', 'tls_certificate_error');
      if (code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL') || code === 'EPROTO')
        return unreachable('failed the TLS handshake', 'tls_protocol_error');
      return unreachable('failed', 'proxy_internal_error');
  }
}

/**
 * OpenSSL's certificate verification failures as Node reports them (UNABLE_TO_VERIFY_LEAF_SIGNATURE,
 * DEPTH_ZERO_SELF_SIGNED_CERT, CERT_HAS_EXPIRED, ERR_TLS_CERT_ALTNAME_INVALID, …): every one is a
 * certificate error, not only the codes that say CERT.
 */
const CERTIFICATE =
  /CERT|UNABLE_TO_(VERIFY|GET|DECRYPT|DECODE)|SELF_SIGNED|CRL|INVALID_CA|PATH_LENGTH_EXCEEDED|INVALID_PURPOSE|HOSTNAME_MISMATCH|ALTNAME|KEYUSAGE/;

export function clientError(
  code: 'bad-request' | 'client-timeout' | 'body-too-large' | 'headers-too-large' | 'no-route',
  detail: string,
  route?: string,
): GatewayError {
  return new GatewayError(code, { detail, route });
}

export interface ProblemExtras {
  requestId: string;
  elapsedMs: number;
  attempts: number;
  /** More response headers (e.g. Cache-Status on a cached route), flat. */
  headers?: readonly string[];
}

/** The RFC 9457 body of an error, as JSON text. */
export function problemBody(err: GatewayError, extras: ProblemExtras): string {
  const body: Record<string, unknown> = {
    type: `https://sluice.dev/problems/${err.code}`,
    title: err.title,
    status: err.status,
    detail: err.detail,
    message: err.publicMessage,
  };
  if (err.phase) body.phase = err.phase;
  if (err.route) body.route = err.route;
  if (err.timeoutMs !== undefined) body.timeout_ms = err.timeoutMs;
  body.elapsed_ms = Math.round(extras.elapsedMs);
  if (extras.attempts > 0 || err.upstream) body.attempts = extras.attempts;
  body.request_id = extras.requestId;
  return JSON.stringify(body);
}

/** `Proxy-Status` value for a gateway-generated 5xx (RFC 9209). */
export function proxyStatus(err: GatewayError): string | undefined {
  if (err.status < 500 || !err.proxyError) return undefined;
  return `sluice; error=${err.proxyError}`;
}

/** Writes `err` as a complete problem+json response. Headers must not have been sent. */
export function sendProblem(
  res: ServerResponse,
  err: GatewayError,
  extras: ProblemExtras,
  close = false,
): void {
  const body = problemBody(err, extras);
  const headers: string[] = [
    'content-type',
    'application/problem+json',
    'content-length',
    String(Buffer.byteLength(body)),
    'x-request-id',
    extras.requestId,
    'cache-control',
    'no-store',
    'server-timing',
    `sluice;desc="gateway";dur=${extras.elapsedMs.toFixed(1)}`,
  ];
  const ps = proxyStatus(err);
  if (ps) headers.push('proxy-status', ps);
  if (err.retryAfter !== undefined) headers.push('retry-after', String(err.retryAfter));
  if (err.headers) headers.push(...err.headers);
  if (extras.headers) headers.push(...extras.headers);
  // HTTP/2 has no Connection header (the stream ends; a GOAWAY would end the connection).
  if (close && res.req?.httpVersionMajor !== 2) headers.push('connection', 'close');
  res.writeHead(err.status, headers);
  res.end(body);
}

/**
 * Ends a response that has begun so that it can never pass for a complete one: HTTP/1.1 closes the
 * connection; HTTP/2 resets the stream with INTERNAL_ERROR (RFC 9113 §8.1: a reset with NO_ERROR
 * would read as a complete response), and the connection's other streams go on.
 */
export function cutResponse(res: { destroy(): unknown }): void {
  const stream = (res as unknown as { stream?: { close(code: number): void; destroyed: boolean } }).stream;
  if (stream !== undefined) {
    if (!stream.destroyed) stream.close(H2_INTERNAL_ERROR);
  } else res.destroy();
}

/**
 * Whether the client is gone (its connection, or its HTTP/2 stream, closed). `res.destroyed` alone
 * says it for HTTP/1.1 only: Node's Http2ServerResponse has no `destroyed`, its stream has.
 */
export function isClientGone(res: { destroyed?: boolean }): boolean {
  if (res.destroyed === true) return true;
  const stream = (res as { stream?: { destroyed: boolean; closed: boolean } }).stream;
  return stream !== undefined && (stream.destroyed || stream.closed);
}

/** NGHTTP2_INTERNAL_ERROR (node:http2 constants), without loading node:http2 here. */
const H2_INTERNAL_ERROR = 2;
