/**
 * The compiled, per-route view the data plane runs on: built once per config load (and per reload),
 * so a request only reads precomputed values.
 */
import { JwksPool } from '../access/auth.ts';
import { TrustedProxies } from '../access/client-address.ts';
import { Gate } from '../access/gate.ts';
import { LocalRateLimiter, type RateLimiter } from '../access/rate-limit.ts';
import { RedisRateLimiter } from '../access/redis-rate-limiter.ts';
import type { EffectiveConfig, EffectiveRoute, Timeouts } from '../config/resolve.ts';
import type { Logger } from '../observability/logger.ts';
import { buildRouteTable, type RouteMatcher } from '../routing/route-table.ts';
import type { RetryBudget } from '../upstream/retry-budget.ts';
import { Upstream, type UpstreamEvent } from '../upstream/upstream.ts';
import { compileShape, type Shape } from './shape.ts';

export interface RouteRuntime {
  readonly name: string;
  readonly route: EffectiveRoute;
  readonly upstream: Upstream;
  readonly timeouts: Timeouts;
  readonly maxBody: number;
  /** Characters of the path to drop before forwarding (strip_prefix), else 0. */
  readonly stripLength: number;
  readonly retry: EffectiveRoute['retry'];
  /** Retry conditions of the route, split for the hot path. */
  readonly retryConditions: ReadonlySet<string> | undefined;
  readonly retryStatuses: ReadonlySet<number> | undefined;
  readonly retryBudget: RetryBudget | undefined;
  /**
   * Recent latency of the route (ms), refreshed every second by observability; 0 = unknown. p50 sets
   * a 202's Retry-After, p5 the load shedding of requests whose budget is already too short.
   */
  readonly recent: { p50: number; p5: number };
  /** Header edits, Host and rewrite (SPEC §13), compiled; PLAIN_SHAPE when the route has none. */
  readonly shape: Shape;
  /** allow/deny, auth and rate limit (SPEC §13); undefined when the route has none of them. */
  readonly gate: Gate | undefined;
}

export interface Runtime {
  readonly config: EffectiveConfig;
  readonly routes: readonly RouteRuntime[];
  readonly upstreams: ReadonlyMap<string, Upstream>;
  readonly table: RouteMatcher<RouteRuntime>;
  /** Where the rate-limit buckets live (kept across reloads while the store stays); undefined: no limits. */
  readonly limiter: RateLimiter | undefined;
  /** JWKS fetched for `auth.jwt.jwks`, by URL: shared by the routes and kept across reloads. */
  readonly jwks: JwksPool;
}

/**
 * Rate-limit buckets: in Redis when the store is Redis (shared by instances), else `local` when the
 * instance has workers (shared by its processes), else in this process.
 */
function limiterFor(
  config: EffectiveConfig,
  previous: Runtime | undefined,
  logger: Logger | undefined,
  local: RateLimiter | undefined,
) {
  if (!config.routes.some((r) => r.access?.rateLimit)) return undefined;
  const redis = /^rediss?:\/\//.test(config.store) ? config.store : undefined;
  const old = previous?.limiter;
  if (redis === undefined && local !== undefined) return local;
  if (redis === undefined) return old instanceof LocalRateLimiter ? old : new LocalRateLimiter();
  if (old instanceof RedisRateLimiter && old.url === redis) return old;
  return new RedisRateLimiter(redis, { logger });
}

export function buildRuntime(
  config: EffectiveConfig,
  previous?: Runtime,
  onEvent?: (event: UpstreamEvent) => void,
  logger?: Logger,
  /** Where buckets live when the store is not Redis, if not in this process alone (workers). */
  localLimiter?: RateLimiter,
): Runtime {
  const limiter = limiterFor(config, previous, logger, localLimiter);
  const jwks = new JwksPool(previous?.jwks);
  const upstreams = new Map<string, Upstream>();
  for (const u of Object.values(config.upstreams)) {
    const connectBackstop = Math.max(
      0,
      ...config.routes.filter((r) => r.upstream === u.name).map((r) => r.timeouts.connect),
    );
    // Keep the Upstream (warm connections, health, breaker and ejection state) when its config did
    // not change.
    const old = previous?.upstreams.get(u.name);
    const same = old !== undefined && JSON.stringify(old.config) === JSON.stringify(u);
    upstreams.set(u.name, same ? old : new Upstream(u, { connectBackstopMs: connectBackstop, onEvent }));
  }
  const trusted =
    config.client.trusted_proxies.length > 0 ? new TrustedProxies(config.client.trusted_proxies) : undefined;
  const routes = config.routes.map(
    (route): RouteRuntime => ({
      name: route.name,
      route,
      upstream: upstreams.get(route.upstream) as Upstream,
      timeouts: route.timeouts,
      maxBody: route.maxBody,
      stripLength: route.stripPrefix ? route.match.path.length : 0,
      retry: route.retry,
      retryConditions: route.retry ? new Set(route.retry.on.filter((c) => typeof c === 'string')) : undefined,
      retryStatuses: route.retry
        ? new Set(route.retry.on.filter((c): c is number => typeof c === 'number'))
        : undefined,
      retryBudget: route.retry
        ? (upstreams.get(route.upstream) as Upstream).retryBudgetFor(route.name, route.retry.budget)
        : undefined,
      recent: previous?.routes.find((r) => r.name === route.name)?.recent ?? { p50: 0, p5: 0 },
      shape: compileShape(route.shape, route.match.path, trusted),
      gate: route.access && new Gate(route.name, route.access, limiter, jwks),
    }),
  );
  jwks.seal();
  return { config, routes, upstreams, table: buildRouteTable(routes), limiter, jwks };
}
