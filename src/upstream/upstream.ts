/**
 * An upstream: named targets, each with a pooled keep-alive connection pool (undici Pool), and the
 * resilience policies of SPEC §6 composed around them. The gateway enforces every timeout with its own
 * timers; undici's own connect/headers/body timeouts are set only as a backstop, above any budget a
 * route can give.
 *
 * Order of calls for one request (docs/resilience.md draws it):
 *
 *   admit()                    circuit breaker      → 503 circuit-open + Retry-After when refused
 *   acquireSlot(deadline, sig) concurrency limiter  → 503 overloaded when false (sync true fast path)
 *   retryBudget.onRequest()    per route, once per request
 *   loop:
 *     pick(previousTarget)     healthy, non-ejected targets → 503 no-healthy-upstream when undefined
 *     … one try …
 *     report(target, result)   per try: passive outlier ejection
 *     retry? only if allowed by the route and retryBudget.tryRetry()
 *   complete(admission, result) per request: circuit breaker (the final result)
 *   releaseSlot()              when acquireSlot gave true
 *
 * Each policy that the config leaves out is `undefined` here and costs one comparison on the hot path.
 */
import type { Socket } from 'node:net';
import { buildConnector, Pool } from 'undici';
import { type Clock, systemClock } from '../clock.ts';
import type { BalanceKind, EffectiveUpstream } from '../config/resolve.ts';
import type { Balancer, RandomSource } from './balancers/balancer.ts';
import { LeastRequestBalancer } from './balancers/least-request.ts';
import { RandomBalancer } from './balancers/random.ts';
import { RoundRobinBalancer } from './balancers/round-robin.ts';
import {
  ADMITTED,
  type CircuitAdmission,
  CircuitBreaker,
  type CircuitRejection,
  type CircuitState,
} from './circuit-breaker.ts';
import { ConcurrencyLimiter } from './concurrency-limiter.ts';
import { HealthChecker } from './health-checker.ts';
import { ConsecutiveFailureOutlier } from './outlier.ts';
import { WindowedRetryBudget } from './retry-budget.ts';

export interface Target {
  /** Index in `Upstream.targets`; stable for the life of the Upstream. */
  readonly id: number;
  /** For logs and the admin API only, never for clients. */
  readonly origin: string;
  readonly basePath: string;
  /** Relative share of traffic (≥ 1). */
  readonly weight: number;
  readonly pool: Pool;
  /** Requests currently in flight to this target (kept by the exchange; read by least-request). */
  inflight: number;
  /** False while active health checks find it down. Written by Upstream only. */
  healthy: boolean;
  /** True while passive outlier detection keeps it out. Written by Upstream only. */
  ejected: boolean;
  /**
   * Timings of the connection this target opened last. undici hands a new connection its first
   * request before any other I/O callback runs, so that request's exchange reads its own timings here.
   */
  lastConnect: ConnectTimings | undefined;
}

/** Where the time of opening one connection went, in ms (null: the step did not happen). */
export interface ConnectTimings {
  readonly dns: number | null;
  readonly tcp: number;
  readonly tls: number | null;
}

/** Wraps undici's connector to time DNS, TCP and TLS of every new connection. */
function timedConnector(
  base: buildConnector.connector,
  record: (timings: ConnectTimings) => void,
): buildConnector.connector {
  return (opts, callback) => {
    const t0 = performance.now();
    let lookedUp = Number.NaN;
    let connected = Number.NaN;
    const socket = (base as unknown as (o: typeof opts, cb: typeof callback) => Socket | undefined)(
      opts,
      (err, sock) => {
        if (err === null) {
          const end = performance.now();
          const tcpStart = Number.isNaN(lookedUp) ? t0 : lookedUp;
          const tcpEnd = Number.isNaN(connected) ? end : connected;
          record({
            dns: Number.isNaN(lookedUp) ? null : lookedUp - t0,
            tcp: tcpEnd - tcpStart,
            tls: opts.protocol === 'https:' ? end - tcpEnd : null,
          });
        }
        (callback as (e: Error | null, s: Socket | null) => void)(err, sock);
      },
    );
    // Before undici's own listener: see endedByReset.
    socket?.on('error', noteReset);
    socket?.once('lookup', () => {
      lookedUp = performance.now();
    });
    socket?.once('connect', () => {
      connected = performance.now();
    });
  };
}

let resetting = false;
function noteReset(err: Error): void {
  if ((err as { code?: string }).code !== 'ECONNRESET' || resetting) return;
  resetting = true;
  queueMicrotask(() => {
    resetting = false;
  });
}

/**
 * Whether the response completing right now is being completed by undici because its connection was
 * reset. undici takes an ECONNRESET as the end of a response that is not kept alive (a workaround for
 * macOS), so a body that runs to the close would end "complete" with what the reset lost missing; the
 * exchange asks this from onComplete (called synchronously from the socket's error event, after this
 * module's listener) and cuts such a body instead.
 */
export function endedByReset(): boolean {
  return resetting;
}

/** How one try ended, as far as the upstream is concerned. */
export type TryResult = 'ok' | 'connect' | 'reset' | 'timeout' | 'status5xx';

/**
 * How a request ended: the result of its last try, or `none` when no try produced an upstream result
 * (the client went away, no healthy target, overloaded, the deadline ran out before a dispatch).
 */
export type RequestResult = TryResult | 'none';

export type Admission = CircuitAdmission;
export type AdmitResult = CircuitAdmission | CircuitRejection;

/** A state change, for the log and metrics. `target` is the target's origin + path prefix. */
export type UpstreamEvent =
  | { readonly kind: 'health'; readonly upstream: string; readonly target: string; readonly healthy: boolean }
  | {
      readonly kind: 'ejected';
      readonly upstream: string;
      readonly target: string;
      /** Length of this ejection. */
      readonly forMs: number;
      /** Recent ejections of this target, this one included (the n of base × 2^(n-1)). */
      readonly ejections: number;
      /** The failure that tipped it over. */
      readonly reason: Exclude<TryResult, 'ok'>;
    }
  | { readonly kind: 'restored'; readonly upstream: string; readonly target: string }
  | {
      readonly kind: 'circuit';
      readonly upstream: string;
      readonly state: CircuitState;
      readonly previous: CircuitState;
    };

export interface UpstreamOptions {
  /** Backstop for undici's own connect timeout: the largest connect budget of any route using it. */
  connectBackstopMs: number;
  /** Time for the policies; default performance.now. */
  clock?: Clock;
  /** State changes (health, ejection, circuit), for the log and metrics. Called synchronously. */
  onEvent?: (event: UpstreamEvent) => void;
  /** For deterministic tests of least-request and random. */
  random?: RandomSource;
}

export interface TargetSnapshot {
  origin: string;
  basePath: string;
  weight: number;
  inflight: number;
  healthy: boolean;
  ejected: boolean;
  /** Milliseconds until the ejection ends (0 when not ejected). */
  ejectedForMs: number;
  /** Recent ejections (null without outlier detection). */
  ejections: number | null;
  consecutiveFailures: number | null;
}

export interface UpstreamSnapshot {
  name: string;
  balance: BalanceKind;
  /** Targets a request can be sent to right now. */
  available: number;
  targets: TargetSnapshot[];
  circuit: { state: CircuitState; requests: number; errors: number; openForMs: number } | null;
  limiter: { max: number; inflight: number; queued: number } | null;
  retryBudgets: Record<string, { budget: number; requests: number; retries: number }>;
}

function createBalancer(kind: BalanceKind, random: RandomSource): Balancer {
  switch (kind) {
    case 'least-request':
      return new LeastRequestBalancer(random);
    case 'random':
      return new RandomBalancer(random);
    default:
      return new RoundRobinBalancer();
  }
}

export class Upstream {
  readonly name: string;
  readonly targets: readonly Target[];
  /** The config it was built from (compare it on reload before reusing this instance). */
  readonly config: EffectiveUpstream;

  readonly #clock: Clock;
  readonly #onEvent: (event: UpstreamEvent) => void;
  readonly #balancer: Balancer;
  /** Healthy and not ejected; rebuilt on every state change, never per request. */
  #available: Target[];
  readonly #breaker: CircuitBreaker | undefined;
  readonly #limiter: ConcurrencyLimiter | undefined;
  readonly #outlier: ConsecutiveFailureOutlier | undefined;
  readonly #ejectLast: boolean;
  #ejected = 0;
  #health: HealthChecker<Target> | undefined;
  readonly #budgets = new Map<string, WindowedRetryBudget>();
  #closed = false;

  constructor(config: EffectiveUpstream, options: UpstreamOptions) {
    this.name = config.name;
    this.config = config;
    this.#clock = options.clock ?? systemClock;
    this.#onEvent = options.onEvent ?? (() => {});
    this.targets = config.targets.map(
      (t, id): Target => ({
        id,
        origin: t.origin,
        basePath: t.basePath,
        weight: t.weight,
        inflight: 0,
        healthy: true,
        ejected: false,
        lastConnect: undefined,
        pool: new Pool(t.origin, {
          connections: config.maxConnections ?? null,
          pipelining: 1,
          keepAliveTimeout: 4_000,
          keepAliveMaxTimeout: 60_000,
          connect: timedConnector(
            buildConnector({
              timeout: options.connectBackstopMs > 0 ? options.connectBackstopMs + 1_000 : 0,
              // https:// targets: the configured CA and SNI name; verification stays on unless insecure.
              ...(config.tls?.ca === undefined ? {} : { ca: config.tls.ca }),
              ...(config.tls?.servername === undefined ? {} : { servername: config.tls.servername }),
              ...(config.tls?.insecure ? { rejectUnauthorized: false } : {}),
            }),
            (timings) => {
              (this.targets[id] as Target).lastConnect = timings;
            },
          ),
          // Per-request backstops are given on each dispatch.
          headersTimeout: 0,
          bodyTimeout: 0,
        }),
      }),
    );
    this.#available = [...this.targets];
    this.#balancer = createBalancer(config.balance, options.random ?? Math.random);
    this.#breaker =
      config.circuit &&
      new CircuitBreaker(config.circuit, this.#clock, (state, previous) =>
        this.#onEvent({ kind: 'circuit', upstream: this.name, state, previous }),
      );
    this.#limiter =
      config.maxConcurrent === undefined
        ? undefined
        : new ConcurrencyLimiter(config.maxConcurrent, config.queueTimeout, this.#clock);
    this.#outlier =
      config.outlier && new ConsecutiveFailureOutlier(config.outlier, this.targets.length, this.#clock);
    this.#ejectLast = config.outlier?.eject_last ?? false;
  }

  // ---- the request path ------------------------------------------------------------------------

  /**
   * Circuit breaker admission, first of all (before waiting for a slot). `ok: false` → answer
   * `503 circuit-open` with Retry-After = ceil(retryAfterMs / 1000) s. An `ok: true` admission must be
   * handed back to `complete()` exactly once. Without a breaker: always the same shared admission.
   */
  admit(): AdmitResult {
    const b = this.#breaker;
    return b === undefined ? ADMITTED : b.tryAcquire();
  }

  /**
   * A concurrency slot (max_concurrent). `true`: taken synchronously (always, without a limit).
   * `false`: refused at once. A Promise: queued (FIFO) until a slot frees (true) or until
   * min(queue_timeout, deadline) passes or `signal` fires (false). `false` → `503 overloaded`.
   * `deadlineMs` is absolute on performance.now's timeline (Exchange.totalDeadline; Infinity = none).
   * Whoever gets true calls `releaseSlot()` once, when the request is over (after its last try).
   */
  acquireSlot(deadlineMs: number, signal?: AbortSignal): boolean | Promise<boolean> {
    const l = this.#limiter;
    return l === undefined ? true : l.acquire(deadlineMs, signal);
  }

  releaseSlot(): void {
    this.#limiter?.release();
  }

  /**
   * A target for one try: healthy (active checks) and not ejected (outlier detection), chosen by the
   * balancer. `exclude` is the previous try's target: avoided when another is available.
   * undefined: no target is available → `503 no-healthy-upstream`.
   */
  pick(exclude?: Target): Target | undefined {
    if (
      this.#ejected > 0 &&
      this.#clock.now() >= (this.#outlier as ConsecutiveFailureOutlier).nextRestoreAt()
    ) {
      this.#restoreDue();
    }
    const c = this.#available;
    if (c.length <= 1) return c[0];
    return this.#balancer.pick(c, exclude);
  }

  /**
   * The result of ONE TRY on `target` (every try, retries included): feeds passive outlier ejection.
   * Not for a try the client cancelled (no verdict on the target). A no-op without `outlier`.
   */
  report(target: Target, result: TryResult): void {
    const o = this.#outlier;
    if (o === undefined) return;
    if (result === 'ok') {
      o.onSuccess(target.id);
      return;
    }
    // Never take out the last available target unless eject_last says so.
    const last = !this.#ejectLast && target.healthy && !target.ejected && this.#available.length <= 1;
    const ms = o.onFailure(target.id, !last);
    if (ms === 0) return;
    target.ejected = true;
    this.#ejected++;
    this.#rebuild();
    this.#onEvent({
      kind: 'ejected',
      upstream: this.name,
      target: target.origin + target.basePath,
      forMs: ms,
      ejections: o.state(target.id).ejections,
      reason: result,
    });
  }

  /**
   * The FINAL result of one request (its last try, after any retries): feeds the circuit breaker, which
   * thus counts requests, not tries. `none` (no upstream result) frees a half-open probe without
   * counting. Call exactly once per `ok: true` admission, whatever happened. A no-op without `circuit`.
   */
  complete(admission: Admission, result: RequestResult): void {
    const b = this.#breaker;
    if (b === undefined) return;
    if (result === 'none') b.cancel(admission);
    else b.onResult(admission, result === 'ok');
  }

  /**
   * The retry budget of one route on this upstream (retry.budget is per route). Get it once per
   * route when the route runtime is built, not per request: the same name and fraction return the
   * same budget; another fraction (a reload) replaces it.
   */
  retryBudgetFor(route: string, fraction: number): WindowedRetryBudget {
    let b = this.#budgets.get(route);
    if (b === undefined || b.fraction !== fraction) {
      b = new WindowedRetryBudget(fraction, this.#clock);
      this.#budgets.set(route, b);
    }
    return b;
  }

  // ---- lifecycle and state ---------------------------------------------------------------------

  /** Starts active health checks (when configured). Idempotent. */
  start(): void {
    const health = this.config.health;
    if (health === undefined || this.#closed) return;
    this.#health ??= new HealthChecker(health, this.targets, (t, healthy) => this.#healthChanged(t, healthy));
    this.#health.start();
  }

  /** Circuit state, or undefined without a breaker. */
  circuitState(): CircuitState | undefined {
    return this.#breaker?.state();
  }

  snapshot(): UpstreamSnapshot {
    if (this.#ejected > 0) this.#restoreDue();
    const now = this.#clock.now();
    const o = this.#outlier;
    const retryBudgets: UpstreamSnapshot['retryBudgets'] = {};
    for (const [route, b] of this.#budgets) retryBudgets[route] = b.snapshot();
    return {
      name: this.name,
      balance: this.config.balance,
      available: this.#available.length,
      targets: this.targets.map((t) => {
        const s = o?.state(t.id);
        return {
          origin: t.origin,
          basePath: t.basePath,
          weight: t.weight,
          inflight: t.inflight,
          healthy: t.healthy,
          ejected: t.ejected,
          ejectedForMs: s && s.ejectedUntil > 0 ? Math.max(0, Math.ceil(s.ejectedUntil - now)) : 0,
          ejections: s ? s.ejections : null,
          consecutiveFailures: s ? s.consecutiveFailures : null,
        };
      }),
      circuit: this.#breaker ? this.#breaker.snapshot() : null,
      limiter: this.#limiter
        ? { max: this.#limiter.max, inflight: this.#limiter.inflight, queued: this.#limiter.queued }
        : null,
      retryBudgets,
    };
  }

  async close(): Promise<void> {
    this.#stop();
    await Promise.all(this.targets.map((t) => t.pool.close().catch(() => t.pool.destroy())));
  }

  destroy(): void {
    this.#stop();
    for (const t of this.targets) t.pool.destroy().catch(() => {});
  }

  #stop(): void {
    this.#closed = true;
    this.#health?.stop();
  }

  #healthChanged(target: Target, healthy: boolean): void {
    target.healthy = healthy;
    this.#rebuild();
    this.#onEvent({ kind: 'health', upstream: this.name, target: target.origin + target.basePath, healthy });
  }

  #restoreDue(): void {
    const restored: Target[] = [];
    (this.#outlier as ConsecutiveFailureOutlier).restoreDue((id) => {
      const t = this.targets[id];
      t.ejected = false;
      this.#ejected--;
      restored.push(t);
    });
    this.#rebuild();
    for (const t of restored) {
      this.#onEvent({ kind: 'restored', upstream: this.name, target: t.origin + t.basePath });
    }
  }

  #rebuild(): void {
    this.#available = this.targets.filter((t) => t.healthy && !t.ejected);
  }
}
