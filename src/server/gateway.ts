/**
 * The public listener: accepts client connections, protects against slow and oversized clients,
 * routes, and hands each request to an Exchange. Owns graceful shutdown (stop accepting, drain
 * in-flight requests up to a bound, close) and live config swaps.
 */

import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { peerAddress, TrustedProxies } from '../access/client-address.ts';
import { type Admission, isRefused, type Verdict } from '../access/gate.ts';
import type { RateLimiter } from '../access/rate-limit.ts';
import { ResponseCache } from '../cache/cache.ts';
import type { EffectiveConfig } from '../config/resolve.ts';
import { GatewayError, isClientGone, isGatewayError, sendProblem } from '../errors.ts';
import { acceptedResponse, isSafeToRepeat, parsePrefer, readBody } from '../jobs/accept.ts';
import { callbackFor } from '../jobs/callback.ts';
import { newJobId, ownerHash } from '../jobs/ids.ts';
import { isStoreUnavailable, type JobStore } from '../jobs/job-store.ts';
import {
  type AccessLog,
  type AccessLogEntry,
  answeredEntry,
  nullAccessLog,
  REQUEST_OF,
} from '../observability/access-log.ts';
import { type Logger, silentLogger } from '../observability/logger.ts';
import { Exchange, type ExchangeHost } from '../proxy/exchange.ts';
import { filterRequestHeaders, VIA } from '../proxy/headers.ts';
import { buildRuntime, type RouteRuntime, type Runtime } from '../proxy/route-runtime.ts';
import { rewriteRefusal, shapeRequest, upstreamPathOf } from '../proxy/shape.ts';
import type { ResponseTap } from '../proxy/tap.ts';
import { answerRaw, tunnel } from '../proxy/tunnel.ts';
import { parseTarget } from '../routing/normalize.ts';
import type { UpstreamEvent } from '../upstream/upstream.ts';
import { ClientErrors } from './client-errors.ts';
import { type JobPeers, JobsHost } from './jobs-host.ts';
import { createPublicListener, type PublicListener } from './listeners.ts';
import { framingRefusal, pipelinedBehind } from './request-framing.ts';
import { isValidRequestId, newRequestId } from './request-id.ts';

export interface GatewayOptions {
  accessLog?: AccessLog;
  logger?: Logger;
  /** Called once per finished request, right after its access-log line (metrics, latency windows). */
  onRequest?: (entry: AccessLogEntry) => void;
  /** Test seam: the job store to use instead of opening config.store. */
  jobStore?: JobStore;
  /** Upstream state changes (health, ejection, circuit); also logged. */
  onUpstreamEvent?: (event: UpstreamEvent) => void;
  /**
   * Several processes of one instance (`workers: N`): listen with SO_REUSEPORT, so each process's
   * socket takes a share of the new connections.
   */
  reusePort?: boolean;
  /**
   * Whether this process settles every running job at its start (the default: it is the store's one
   * user then). A worker process leaves that to its primary and recovers only expired leases.
   */
  exclusiveRecovery?: boolean;
  /** Queue-mode deliveries in flight in this process (default `jobs.workers`). */
  queueDeliveries?: number;
  /** The instance's other processes, for a shared SQLite job store (JobsHostOptions.peers). */
  jobPeers?: JobPeers;
  /**
   * Rate-limit buckets shared by the instance's processes (workers) when the store is not Redis: the
   * primary's LocalRateLimiter, or a worker's IpcRateLimiter asking it.
   */
  rateLimiter?: RateLimiter;
}

const now = performance.now.bind(performance);

/** How many HTTP/2 pseudo-headers (`:method`, `:path`…) lead `rawHeaders`: not counted by max_headers. */
function pseudoHeaders(req: IncomingMessage): number {
  if (req.httpVersionMajor !== 2) return 0;
  const raw = req.rawHeaders;
  let n = 0;
  while (n * 2 < raw.length && raw[n * 2].charCodeAt(0) === 58) n++;
  return n;
}

/** An HTTP/2 header list's size as SETTINGS_MAX_HEADER_LIST_SIZE counts it (RFC 9113 §6.5.2). */
function h2HeaderListSize(raw: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) n += raw[i].length + raw[i + 1].length + 32;
  return n;
}

/** The parts of an access-log line that every gateway-answered request has. */
function answered(
  req: IncomingMessage,
  requestId: string,
  startedAt: number,
  logPath: string,
  rt: RouteRuntime | undefined,
  bytesIn = 0,
) {
  return {
    method: req.method ?? '',
    path: logPath,
    requestId,
    startedAt,
    client: req.socket?.remoteAddress,
    req,
    route: rt?.name ?? null,
    upstream: rt?.upstream.name ?? null,
    budgetMs: rt?.timeouts.total ?? 0,
    bytesIn,
  };
}

export class Gateway implements ExchangeHost {
  /** The first public listener's server (every one is in `listeners`). */
  readonly server: Server;
  readonly listeners: readonly PublicListener[];
  readonly accessLog: AccessLog;
  readonly logger: Logger;
  readonly #onRequest: ((entry: AccessLogEntry) => void) | undefined;
  readonly #onUpstreamEvent: (event: UpstreamEvent) => void;
  readonly #options: GatewayOptions;
  /** Async offload; undefined while no route uses it. */
  jobs: JobsHost | undefined;
  /** The response cache of every route with `cache` (one store under cache_size). */
  readonly cache: ResponseCache;
  #runtime: Runtime;
  #trusted: TrustedProxies;
  #inflight = 0;
  /** Exchanges not finished yet (their client has no complete response), for the end of a drain. */
  readonly #live = new Set<Exchange>();
  #drainWaiters: (() => void)[] = [];
  #closing = false;
  clientBodyIdleMs: number;
  clientSendTimeoutMs: number;
  maxHeaders: number;
  maxHeaderSize: number;

  constructor(config: EffectiveConfig, options: GatewayOptions = {}) {
    this.accessLog = options.accessLog ?? nullAccessLog;
    this.logger = options.logger ?? silentLogger;
    this.#onRequest = options.onRequest;
    this.#options = options;
    this.#onUpstreamEvent = (event) => {
      const level =
        event.kind === 'health'
          ? event.healthy
            ? 'info'
            : 'warn'
          : event.kind === 'restored'
            ? 'info'
            : 'warn';
      this.logger[level]({ event: event.kind, ...event }, `upstream ${event.kind}`);
      options.onUpstreamEvent?.(event);
    };
    this.#runtime = buildRuntime(config, undefined, this.#onUpstreamEvent, this.logger, options.rateLimiter);
    this.jobs = config.routes.some((r) => r.async)
      ? new JobsHost(config, {
          logger: this.logger,
          runtime: () => this.#runtime,
          store: options.jobStore,
          record: this.#record,
          queueDeliveries: options.queueDeliveries,
          peers: options.jobPeers,
        })
      : undefined;
    this.cache = new ResponseCache(config.cacheSize);
    this.#trusted = new TrustedProxies(config.client.trusted_proxies);
    this.clientBodyIdleMs = config.client.body_idle_timeout;
    this.clientSendTimeoutMs = config.client.send_timeout;
    this.maxHeaders = config.client.max_headers;
    this.maxHeaderSize = config.client.max_header_size;
    const c = config.client;
    const serverOptions = {
      keepAliveTimeout: c.keepalive_timeout,
      headersTimeout: c.header_timeout,
      requestTimeout: 0,
      // Node checks header timeouts on this interval (30 s by default, which makes a 10 s
      // header timeout fire up to 40 s late): check often enough to be on time.
      connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(c.header_timeout / 10))),
      maxHeaderSize: c.max_header_size,
      // Checked in handle() instead: Node's own check answers a bare 400 (no problem+json, no log).
      requireHostHeader: false,
      noDelay: true,
    };
    this.listeners = config.listeners.map((l) =>
      createPublicListener(
        l,
        serverOptions,
        (req, res) => this.handle(req, res),
        (error, listener) => {
          const address = `${listener.address.host ?? '*'}:${listener.address.port}`;
          if (error)
            this.logger.error(
              { listen: address, error },
              'TLS certificate reload refused; the running one stays',
            );
          else this.logger.info({ listen: address }, 'TLS certificate reloaded');
        },
        { maxHeaderSize: c.max_header_size, maxHeaders: c.max_headers, idleMs: c.keepalive_timeout },
      ),
    );
    this.server = this.listeners[0].server;
    for (const { h2 } of this.listeners)
      h2?.on('checkContinue', (req, res) =>
        this.handle(req as unknown as IncomingMessage, res as unknown as ServerResponse, true),
      );
    for (const { server } of this.listeners) {
      // One more than allowed, so that "too many" is visible instead of silently truncated.
      server.maxHeadersCount = c.max_headers + 1;
      server.on('checkContinue', (req, res) => this.handle(req, res, true));
      server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
        this.upgrade(req, socket, head),
      );
      server.on('connect', (req: IncomingMessage, socket: Duplex) => this.#connect(req, socket));
      server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) =>
        this.#clientErrors.handle(err, socket),
      );
    }
  }

  get config(): EffectiveConfig {
    return this.#runtime.config;
  }

  get runtime(): Runtime {
    return this.#runtime;
  }

  get inflight(): number {
    return this.#inflight;
  }

  /** Swaps in a new config; requests in flight finish on the config they started with. */
  reload(config: EffectiveConfig): void {
    const old = this.#runtime;
    this.#runtime = buildRuntime(config, old, this.#onUpstreamEvent, this.logger, this.#options.rateLimiter);
    if (old.limiter !== undefined && old.limiter !== this.#runtime.limiter) void old.limiter.close();
    if (this.jobs === undefined && config.routes.some((r) => r.async)) {
      this.jobs = new JobsHost(config, {
        logger: this.logger,
        runtime: () => this.#runtime,
        record: this.#record,
        queueDeliveries: this.#options.queueDeliveries,
        peers: this.#options.jobPeers,
      });
      // Other processes may be serving this store by now: only expired leases are settled.
      void this.jobs.start(false);
    }
    for (const u of this.#runtime.upstreams.values()) u.start();
    this.cache.reload(config.cacheSize, new Set(config.routes.filter((r) => r.cache).map((r) => r.name)));
    this.#trusted = new TrustedProxies(config.client.trusted_proxies);
    this.clientBodyIdleMs = config.client.body_idle_timeout;
    this.clientSendTimeoutMs = config.client.send_timeout;
    // Client limits too (new connections pick up the size limit; the check interval stays as created).
    this.maxHeaders = config.client.max_headers;
    this.maxHeaderSize = config.client.max_header_size;
    for (const { server, tls } of this.listeners) {
      server.maxHeadersCount = config.client.max_headers + 1;
      server.headersTimeout = config.client.header_timeout;
      server.keepAliveTimeout = config.client.keepalive_timeout;
      (server as { maxHeaderSize?: number }).maxHeaderSize = config.client.max_header_size;
      // A reload reads the certificates again too (the listeners themselves change at the next start).
      const error = tls?.reload();
      if (tls && error === undefined)
        (server as unknown as { setSecureContext(o: object): void }).setSecureContext(tls.first);
    }
    for (const [name, u] of old.upstreams) {
      if (this.#runtime.upstreams.get(name) !== u) void u.close();
    }
  }

  listen(
    port = this.config.listen.port,
    host = this.config.listen.host,
  ): Promise<{ port: number; host: string }> {
    return this.#listen([port], host);
  }

  /** Listens on these ports, in listener order (a worker process: the ports its primary bound). */
  listenOn(ports: readonly number[]): Promise<{ port: number; host: string }> {
    return this.#listen(ports, this.config.listen.host);
  }

  async #listen(
    ports: readonly (number | undefined)[],
    host: string | undefined,
  ): Promise<{ port: number; host: string }> {
    // Jobs a previous process left running are settled before any new request is taken.
    await this.jobs?.start(this.#options.exclusiveRecovery ?? true);
    const reusePort = this.#options.reusePort === true;
    const bind = (server: Server, p: number | undefined, h: string | undefined) =>
      new Promise<{ port: number; host: string }>((resolve, reject) => {
        const onError = (err: Error) => reject(err);
        server.once('error', onError);
        server.listen({ port: p, host: h, reusePort }, () => {
          server.off('error', onError);
          const a = server.address() as { port: number; address: string };
          resolve({ port: a.port, host: a.address });
        });
      });
    const first = await bind(this.server, ports[0], host);
    try {
      for (const [i, l] of this.listeners.entries())
        if (i > 0) await bind(l.server, ports[i] ?? l.listener.address.port, l.listener.address.host);
    } catch (err) {
      for (const l of this.listeners) l.server.close();
      throw err;
    }
    for (const u of this.#runtime.upstreams.values()) u.start();
    return first;
  }

  /** The port each public listener is bound to (useful with port 0), in config order. */
  get ports(): number[] {
    return this.listeners.map((l) => (l.server.address() as { port: number } | null)?.port ?? 0);
  }

  /**
   * Graceful stop: no new connections, idle keep-alive connections closed, in-flight requests given
   * up to `graceMs` to finish, then everything closed.
   */
  async close(graceMs = this.config.shutdownTimeout): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    const stopAt = performance.now();
    const closed = Promise.all(
      this.listeners.map(({ server, tls, sessions }) => {
        tls?.close();
        const done = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        // HTTP/2: GOAWAY once each connection's streams in flight are done.
        for (const session of sessions) session.drain();
        return done;
      }),
    );
    const jobs = this.jobs?.running.size ?? 0;
    if (this.#inflight > 0 || jobs > 0) {
      this.logger.info(
        { inflight: this.#inflight, background_jobs: jobs, shutdown_timeout_ms: graceMs },
        `draining: ${this.#inflight} request(s) in flight and ${jobs} background job call(s) get up to ${graceMs}ms to finish`,
      );
    }
    if (this.#inflight > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.#drainWaiters.push(resolve)),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, graceMs);
        }),
      ]);
      clearTimeout(timer);
    }
    // Out of time: a request without response headers yet gets 503 shutting-down, one whose response
    // has begun is cut; both are logged with outcome `shutdown`, never blamed on the client.
    if (this.#live.size > 0) {
      let refused = 0;
      let cut = 0;
      const sent: Promise<unknown>[] = [];
      for (const ex of [...this.#live]) {
        const res = ex.res;
        const wasCut = ex.shutdown();
        if (wasCut === undefined) continue;
        if (wasCut) cut++;
        else {
          refused++;
          if (!res.writableFinished) sent.push(new Promise((resolve) => res.once('close', resolve)));
        }
      }
      this.logger.warn(
        { refused, cut, shutdown_timeout_ms: graceMs },
        `shutdown_timeout ran out: ${refused} request(s) answered 503 shutting-down, ${cut} response(s) cut`,
      );
      // Let the 503s reach their clients before the connections are closed.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all(sent),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, 200);
        }),
      ]);
      clearTimeout(timer);
    }
    for (const { server, sessions } of this.listeners) {
      server.closeAllConnections();
      for (const session of sessions) session.destroy();
    }
    await closed;
    // Background job calls get what is left of the grace period, then end `interrupted`.
    await this.jobs?.close(Math.max(0, graceMs - (performance.now() - stopAt)));
    await Promise.all([...this.#runtime.upstreams.values()].map((u) => u.close()));
    await this.#runtime.limiter?.close();
    this.accessLog.flush();
  }

  // ---- ExchangeHost ------------------------------------------------------------------------------

  /** A line that is not the end of a request in flight (job resource, job ends, refused connections). */
  readonly #record = (entry: AccessLogEntry): void => {
    if (entry[REQUEST_OF]?.httpVersionMajor === 2) entry.protocol = 'HTTP/2.0';
    this.accessLog.write(entry);
    this.#onRequest?.(entry);
  };
  readonly #clientErrors = new ClientErrors(this.#record);

  log(entry: AccessLogEntry, exchange?: Exchange): void {
    if (exchange !== undefined) this.#live.delete(exchange);
    this.#record(entry);
    if (--this.#inflight === 0 && this.#drainWaiters.length > 0) {
      for (const w of this.#drainWaiters.splice(0)) w();
    }
  }

  respondError(exchange: Exchange, err: GatewayError, close: boolean): void {
    const cacheStatus = exchange.tap?.cacheStatus;
    sendProblem(
      exchange.res,
      err,
      {
        requestId: exchange.requestId,
        elapsedMs: now() - exchange.startedAt,
        attempts: exchange.attempts,
        headers: cacheStatus === undefined ? undefined : ['cache-status', cacheStatus],
      },
      close || this.#closing,
    );
  }

  // ---- request handling --------------------------------------------------------------------------

  handle(req: IncomingMessage, res: ServerResponse, expectsContinue = false): void {
    if (pipelinedBehind(req, res, () => this.handle(req, res, expectsContinue))) return;
    const startedAt = now();
    const framing = framingRefusal(req);
    if (framing !== undefined) {
      this.#inflight++;
      res.shouldKeepAlive = false;
      const err = new GatewayError('bad-request', { detail: framing });
      return this.#early(req, res, newRequestId(), startedAt, err);
    }
    const jobs = this.jobs;
    if (jobs !== undefined && (req.url ?? '').startsWith(jobs.prefix)) {
      // The job resource (SPEC §5) answers polls, results and cancels itself.
      const t = parseTarget(req.url ?? '/');
      if (t !== undefined && jobs.resource.tryHandle(req, res, t.path)) return;
    }
    this.#inflight++;
    const incomingId = req.headers['x-request-id'];
    const requestId = isValidRequestId(incomingId as string | undefined)
      ? (incomingId as string)
      : newRequestId();
    if (req.httpVersionMajor === 2) {
      // HTTP/2 names the host in :authority; routing, checks and X-Forwarded-Host read Host.
      req.headers.host ??= req.headers[':authority'] as string | undefined;
    } else if (this.#closing) res.shouldKeepAlive = false;

    const target = parseTarget(req.url ?? '/');
    if (target === undefined) {
      return this.#early(
        req,
        res,
        requestId,
        startedAt,
        new GatewayError('bad-request', { detail: 'invalid request target' }),
      );
    }
    const logPath = target.path + target.query;
    // An empty Host names no host: an http URI without one is invalid (RFC 9110 §4.2.1).
    if (!req.headers.host && req.httpVersionMajor === 1 && req.httpVersionMinor >= 1) {
      return this.#early(
        req,
        res,
        requestId,
        startedAt,
        new GatewayError('bad-request', { detail: 'an HTTP/1.1 request must carry a non-empty Host header' }),
        logPath,
      );
    }
    if (target.authority !== undefined && target.authority !== (req.headers.host ?? '').toLowerCase()) {
      return this.#early(
        req,
        res,
        requestId,
        startedAt,
        new GatewayError('bad-request', {
          detail: 'the absolute-form request target names another host than Host',
        }),
        logPath,
      );
    }
    const raw = req.rawHeaders;
    if (raw.length > (this.maxHeaders + pseudoHeaders(req)) * 2) {
      return this.#early(
        req,
        res,
        requestId,
        startedAt,
        new GatewayError('headers-too-large', { detail: `more than ${this.maxHeaders} request headers` }),
        logPath,
      );
    }
    // HTTP/2: Node applies SETTINGS_MAX_HEADER_LIST_SIZE only once the client acknowledged it, so the
    // first streams of a connection are measured here (as RFC 9113 counts: name + value + 32 each).
    if (req.httpVersionMajor === 2 && h2HeaderListSize(raw) > this.maxHeaderSize) {
      return this.#early(
        req,
        res,
        requestId,
        startedAt,
        new GatewayError('headers-too-large', {
          detail: `request headers larger than ${this.maxHeaderSize} bytes`,
        }),
        logPath,
      );
    }
    // Before routing: an ambiguous Host is a 400 whichever route (or none) the first one selects.
    const filtered = filterRequestHeaders(raw, req.headers.connection);
    if (filtered.hostCount > 1) {
      return this.#early(
        req,
        res,
        requestId,
        startedAt,
        new GatewayError('bad-request', { detail: 'more than one Host header' }),
        logPath,
      );
    }
    const rt = this.#runtime.table.match(req.method ?? 'GET', req.headers.host, target.path, req.headers);
    if (rt === undefined) {
      return this.#early(
        req,
        res,
        requestId,
        startedAt,
        new GatewayError('no-route', { detail: `no route matches ${req.method} ${target.path}` }),
        logPath,
      );
    }
    // Access (SPEC §13): allow/deny → auth → rate limit, after the route match and before the body
    // size; synchronous unless a check has to wait (bcrypt, a JWT signature, the Redis limiter).
    const gate = rt.gate;
    if (gate === undefined)
      return this.#routed(
        req,
        res,
        expectsContinue,
        requestId,
        startedAt,
        target,
        logPath,
        filtered,
        rt,
        undefined,
      );
    const verdict = gate.check(req, this.clientAddress(req, filtered.incomingXff));
    const gated = (v: Verdict) => {
      if (isRefused(v)) return this.#early(req, res, requestId, startedAt, v, logPath, rt);
      if (isClientGone(res)) {
        // The client left while its credentials were being verified.
        this.log(
          answeredEntry(answered(req, requestId, startedAt, logPath, rt), 499, 'client_aborted', null),
        );
        return;
      }
      this.#routed(req, res, expectsContinue, requestId, startedAt, target, logPath, filtered, rt, v);
    };
    if (verdict instanceof Promise) void verdict.then(gated);
    else gated(verdict);
  }

  /** The client's address: the peer, or what a trusted proxy says in X-Forwarded-For (allow/deny, rate limits). */
  clientAddress(req: IncomingMessage, incomingXff: string | undefined): string {
    return this.#trusted.clientOf(peerAddress(req.socket), incomingXff);
  }

  /** The rest of a routed request, once the access gate (if any) admitted it. */
  #routed(
    req: IncomingMessage,
    res: ServerResponse,
    expectsContinue: boolean,
    requestId: string,
    startedAt: number,
    target: NonNullable<ReturnType<typeof parseTarget>>,
    logPath: string,
    filtered: ReturnType<typeof filterRequestHeaders>,
    rt: RouteRuntime,
    admission: Admission | undefined,
  ): void {
    const jobs = this.jobs;
    const cl = req.headers['content-length'];
    const chunked = req.headers['transfer-encoding'] !== undefined;
    if (cl !== undefined && Number(cl) > rt.maxBody) {
      return this.#early(
        req,
        res,
        requestId,
        startedAt,
        new GatewayError('body-too-large', {
          detail: `request body of ${cl} bytes exceeds the limit of ${rt.maxBody} bytes on route '${rt.name}'`,
          route: rt.name,
        }),
        logPath,
        rt,
      );
    }

    // Deadline propagation: a smaller incoming x-timeout-ms shortens this request's budget.
    let budget = rt.timeouts.total;
    let clientBudget = false;
    const incoming = req.headers['x-timeout-ms'];
    if (incoming !== undefined) {
      const ms = Number(incoming);
      if (Number.isInteger(ms) && ms >= 0 && (budget === 0 || ms < budget)) {
        budget = ms;
        clientBudget = true;
      }
    }

    const upstreamPath = upstreamPathOf(rt, target.path);
    if (upstreamPath === undefined) {
      return this.#early(
        req,
        res,
        requestId,
        startedAt,
        new GatewayError('bad-request', { detail: rewriteRefusal(rt, target.path), route: rt.name }),
        logPath,
        rt,
      );
    }
    let headers = this.#forwardingHeaders(req, filtered, requestId, rt);
    if (admission !== undefined && rt.gate?.rewritesHeaders)
      headers = rt.gate.forwardHeaders(headers, admission);

    // Expect: 100-continue is answered here, once the request passed every check (a 413 never
    // invites the body); the upstream never sees Expect (undici does not support it).
    if (expectsContinue) res.writeContinue();
    const path = upstreamPath + target.query;
    // HTTP/2 frames a body without Content-Length or chunking: there is one unless the HEADERS frame
    // ended the stream.
    const hasBody =
      req.httpVersionMajor === 2
        ? (req as unknown as { stream: { endAfterHeaders: boolean } }).stream.endAfterHeaders !== true
        : chunked || (cl !== undefined && cl !== '0');
    const cfg = rt.route.async;
    if (cfg !== undefined && jobs !== undefined && cfg.mode === 'queue') {
      void this.#enqueue(req, res, rt, requestId, startedAt, logPath, path, headers, hasBody);
      return;
    }
    const forward = (tap?: ResponseTap, validators?: readonly string[]) =>
      this.#forward(
        req,
        res,
        rt,
        requestId,
        startedAt,
        logPath,
        budget,
        clientBudget,
        path,
        headers,
        hasBody,
        tap,
        validators,
      );
    const cacheCfg = rt.route.cache;
    if (cacheCfg === undefined) return forward();
    // The response cache answers, waits for a concurrent miss, or forwards with its tap (SPEC §6).
    this.cache.handle({
      req,
      res,
      rt,
      cfg: cacheCfg,
      requestId,
      startedAt,
      logPath,
      path,
      headers,
      budget,
      forward,
      log: (entry) => this.log(entry),
    });
  }

  /**
   * The request headers as forwarded: X-Forwarded-* (kept only from trusted proxies), Via,
   * X-Request-Id, then the route's header edits and Host (SPEC §13).
   */
  #forwardingHeaders(
    req: IncomingMessage,
    filtered: ReturnType<typeof filterRequestHeaders>,
    requestId: string,
    rt: RouteRuntime,
  ): string[] {
    const headers = filtered.headers;
    const addr = peerAddress(req.socket);
    const trusted = this.#trusted.isTrusted(addr);
    headers.push(
      'x-forwarded-for',
      trusted && filtered.incomingXff ? `${filtered.incomingXff}, ${addr}` : addr,
      'x-forwarded-proto',
      trusted && filtered.incomingProto
        ? filtered.incomingProto
        : (req.socket as { encrypted?: boolean }).encrypted
          ? 'https'
          : 'http',
    );
    // An HTTP/1.0 request may name no host at all: then there is none to tell (never an empty one).
    const forwardedHost = trusted && filtered.incomingFwdHost ? filtered.incomingFwdHost : req.headers.host;
    if (forwardedHost) headers.push('x-forwarded-host', forwardedHost);
    headers.push(
      'via',
      filtered.incomingVia ? `${filtered.incomingVia}, ${VIA}` : VIA,
      'x-request-id',
      requestId,
    );
    // Shaping (SPEC §13): the route's edits and Host, after the gateway's own headers.
    shapeRequest(headers, rt, req, requestId);
    return headers;
  }

  /**
   * An Upgrade request (WebSocket): the same checks as any request, then a tunnel to a target (SPEC §3)
   * on routes that allow it.
   */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const startedAt = now();
    this.#inflight++;
    const incomingId = req.headers['x-request-id'];
    const requestId = isValidRequestId(incomingId as string | undefined)
      ? (incomingId as string)
      : newRequestId();
    const target = parseTarget(req.url ?? '/');
    const refuse = (err: GatewayError, rt?: RouteRuntime, logPath = req.url ?? '') => {
      answerRaw(socket, err, requestId, startedAt);
      this.log(
        answeredEntry(answered(req, requestId, startedAt, logPath, rt), err.status, err.outcome, err.code),
      );
    };
    socket.on('error', () => {});
    const framing = framingRefusal(req);
    if (framing !== undefined) return refuse(new GatewayError('bad-request', { detail: framing }));
    if (target === undefined)
      return refuse(new GatewayError('bad-request', { detail: 'invalid request target' }));
    const logPath = target.path + target.query;
    const filtered = filterRequestHeaders(req.rawHeaders, req.headers.connection);
    if (filtered.hostCount > 1)
      return refuse(
        new GatewayError('bad-request', { detail: 'more than one Host header' }),
        undefined,
        logPath,
      );
    const rt = this.#runtime.table.match(req.method ?? 'GET', req.headers.host, target.path, req.headers);
    if (rt === undefined)
      return refuse(
        new GatewayError('no-route', { detail: `no route matches ${req.method} ${target.path}` }),
        undefined,
        logPath,
      );
    if (rt.route.websocket === undefined)
      return refuse(
        new GatewayError('bad-request', {
          detail: `route '${rt.name}' does not proxy Upgrade requests (websocket: false)`,
          route: rt.name,
        }),
        rt,
        logPath,
      );
    const upstreamPath = upstreamPathOf(rt, target.path);
    if (upstreamPath === undefined)
      return refuse(
        new GatewayError('bad-request', { detail: rewriteRefusal(rt, target.path), route: rt.name }),
        rt,
        logPath,
      );
    const path = upstreamPath + target.query;
    const open = (admission: Admission | undefined) => {
      let headers = this.#forwardingHeaders(req, filtered, requestId, rt);
      if (admission !== undefined && rt.gate?.rewritesHeaders)
        headers = rt.gate.forwardHeaders(headers, admission);
      tunnel({
        rt,
        req,
        client: socket,
        head,
        requestId,
        startedAt,
        logPath,
        path,
        headers,
        log: (entry) => this.log(entry),
      });
    };
    // Access (SPEC §13): the same gate as any request of the route, at the same point.
    const gate = rt.gate;
    if (gate === undefined) return open(undefined);
    const verdict = gate.check(req, this.clientAddress(req, filtered.incomingXff));
    const gated = (v: Verdict) => {
      if (isRefused(v)) return refuse(v, rt, logPath);
      if (socket.destroyed) {
        this.log(
          answeredEntry(answered(req, requestId, startedAt, logPath, rt), 499, 'client_aborted', null),
        );
        return;
      }
      open(v);
    };
    if (verdict instanceof Promise) void verdict.then(gated);
    else gated(verdict);
  }

  /**
   * CONNECT (a forward proxy's tunnel) is not something a reverse proxy serves: answered 400
   * problem+json and logged. Without this listener Node drops the connection without a word.
   */
  #connect(req: IncomingMessage, socket: Duplex): void {
    const startedAt = now();
    const requestId = newRequestId();
    socket.on('error', () => {});
    const err = new GatewayError('bad-request', {
      detail: 'CONNECT is not supported: Sluice is a reverse proxy',
    });
    answerRaw(socket, err, requestId, startedAt);
    this.#inflight++;
    this.log(
      answeredEntry(
        answered(req, requestId, startedAt, req.url ?? '', undefined),
        err.status,
        err.outcome,
        err.code,
      ),
    );
  }

  /** Starts the upstream exchange of a request (with the cache's tap on a cached route). */
  #forward(
    req: IncomingMessage,
    res: ServerResponse,
    rt: RouteRuntime,
    requestId: string,
    startedAt: number,
    logPath: string,
    budget: number,
    clientBudget: boolean,
    path: string,
    headers: string[],
    hasBody: boolean,
    tap: ResponseTap | undefined,
    validators: readonly string[] | undefined,
  ): void {
    if (isClientGone(res)) {
      // The client left while the request waited for the cache (or an access check).
      this.log(answeredEntry(answered(req, requestId, startedAt, logPath, rt), 499, 'client_aborted', null));
      return;
    }
    if (validators !== undefined) {
      // A revalidation: the stored copy's validators replace the client's own conditionals.
      const kept: string[] = [];
      for (let i = 0; i < headers.length; i += 2) {
        const k = headers[i].toLowerCase();
        if (k !== 'if-none-match' && k !== 'if-modified-since') kept.push(headers[i], headers[i + 1]);
      }
      headers = [...kept, ...validators];
    }
    const jobs = this.jobs;
    const cfg = rt.route.async;
    const exchange = new Exchange(this, rt, req, res, requestId, startedAt, logPath, budget, clientBudget);
    exchange.tap = tap;
    this.#live.add(exchange);
    if (cfg !== undefined && jobs !== undefined) {
      // RFC 7240: respond-async asks for a 202 at once; wait=N sets how long to hold before one.
      const prefs = parsePrefer(req.headers.prefer);
      if (prefs.respondAsync) exchange.enableAsync(0, 'respond-async');
      else if (cfg.mode === 'auto') {
        if (prefs.waitMs !== undefined) {
          const hold = budget > 0 ? Math.min(prefs.waitMs, budget) : prefs.waitMs;
          exchange.enableAsync(hold, `wait=${Math.round(hold / 1000)}`);
        } else exchange.enableAsync(cfg.after, undefined);
      }
    }
    exchange.start(path, headers, hasBody);
  }

  /** queue mode: store the request durably, answer 202 at once; a queue worker delivers it. */
  async #enqueue(
    req: IncomingMessage,
    res: ServerResponse,
    rt: RouteRuntime,
    requestId: string,
    startedAt: number,
    logPath: string,
    path: string,
    headers: string[],
    hasBody: boolean,
  ): Promise<void> {
    const jobs = this.jobs as JobsHost;
    const cfg = rt.route.async as NonNullable<RouteRuntime['route']['async']>;
    let body: Buffer | undefined;
    try {
      if (hasBody) body = await readBody(req, cfg.max_body, rt.name);
    } catch (err) {
      const gerr = isGatewayError(err)
        ? err
        : new GatewayError('client-timeout', {
            detail: 'the request body could not be read',
            route: rt.name,
          });
      return this.#early(req, res, requestId, startedAt, gerr, logPath, rt);
    }
    const pairs: [string, string][] = [];
    for (let i = 0; i < headers.length; i += 2) {
      const lower = headers[i].toLowerCase();
      if (lower !== 'content-length' && lower !== 'host') pairs.push([headers[i], headers[i + 1]]);
    }
    pairs.push(['host', rt.shape.host.kind === 'name' ? rt.shape.host.name : (req.headers.host ?? '')]);
    const callback = callbackFor(req.headers['callback-url'], cfg.callback);
    try {
      const job = await jobs.store.create({
        id: newJobId(),
        request_id: requestId,
        received_at: Date.now() - (now() - startedAt),
        route: rt.name,
        mode: 'queue',
        status: 'queued',
        owner_hash: ownerHash(req.headers),
        request: { method: req.method ?? 'GET', path, headers: pairs, body },
        keep_ms: cfg.keep,
        max_result: cfg.max_result,
        idempotent: isSafeToRepeat(req.method ?? 'GET', req.headers),
        callback_url: callback.url,
      });
      const applied = parsePrefer(req.headers.prefer).respondAsync ? 'respond-async' : undefined;
      if (callback.refused) {
        jobs.logger.warn(
          { route: rt.name, job: job.id, request_id: requestId, reason: callback.refused },
          'Callback-Url ignored',
        );
      }
      acceptedResponse(res, job, jobs.prefix, 1, applied, requestId, callback.refused);
      jobs.worker.nudge();
      const entry = answeredEntry(
        answered(req, requestId, startedAt, logPath, rt, body?.length ?? 0),
        202,
        'async',
        null,
      );
      entry.job = job.id;
      this.log(entry);
    } catch (err) {
      const gerr = isStoreUnavailable(err)
        ? new GatewayError('store-unavailable', {
            detail: `the job store cannot take the request of route '${rt.name}' now`,
            route: rt.name,
            retryAfter: 5,
          })
        : new GatewayError('internal-error', { detail: 'the job could not be created', route: rt.name });
      this.#early(req, res, requestId, startedAt, gerr, logPath, rt);
    }
  }

  #early(
    req: IncomingMessage,
    res: ServerResponse,
    requestId: string,
    startedAt: number,
    err: GatewayError,
    logPath = req.url ?? '',
    rt?: RouteRuntime,
  ): void {
    // When the request has a body we have not read, close the connection after answering.
    const close =
      req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0';
    sendProblem(res, err, { requestId, elapsedMs: now() - startedAt, attempts: 0 }, close || this.#closing);
    this.log(
      answeredEntry(answered(req, requestId, startedAt, logPath, rt), err.status, err.outcome, err.code),
    );
  }
}
