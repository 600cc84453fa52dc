/**
 * The compiled, per-route view the data plane runs on: built once per config load (and per reload),
 * so a request only reads precomputed values.
 */
import type { EffectiveConfig, EffectiveRoute, Timeouts } from '../config/resolve.ts';
import { buildRouteTable, type RouteMatcher } from '../routing/route-table.ts';
import { Upstream } from '../upstream/upstream.ts';
import type { Exchange } from './exchange.ts';

export interface RouteRuntime {
  readonly name: string;
  readonly route: EffectiveRoute;
  readonly upstream: Upstream;
  readonly timeouts: Timeouts;
  readonly maxBody: number;
  /** Characters of the path to drop before forwarding (strip_prefix), else 0. */
  readonly stripLength: number;
  /** Optional hook adding response headers (Server-Timing, cache status…). */
  readonly decorateResponse: ((exchange: Exchange, headers: string[]) => void) | undefined;
}

export interface Runtime {
  readonly config: EffectiveConfig;
  readonly routes: readonly RouteRuntime[];
  readonly upstreams: ReadonlyMap<string, Upstream>;
  readonly table: RouteMatcher<RouteRuntime>;
}

export function buildRuntime(config: EffectiveConfig, previous?: Runtime): Runtime {
  const upstreams = new Map<string, Upstream>();
  for (const u of Object.values(config.upstreams)) {
    const connectBackstop = Math.max(
      0,
      ...config.routes.filter((r) => r.upstream === u.name).map((r) => r.timeouts.connect),
    );
    // Keep pools (and their warm connections) of upstreams whose targets did not change.
    const old = previous?.upstreams.get(u.name);
    const same =
      old &&
      old.targets.length === u.targets.length &&
      old.targets.every((t, i) => t.origin === u.targets[i].origin && t.basePath === u.targets[i].basePath);
    upstreams.set(u.name, same ? old : new Upstream(u, { connectBackstopMs: connectBackstop }));
  }
  const routes = config.routes.map(
    (route): RouteRuntime => ({
      name: route.name,
      route,
      upstream: upstreams.get(route.upstream) as Upstream,
      timeouts: route.timeouts,
      maxBody: route.maxBody,
      stripLength: route.stripPrefix ? route.match.path.length : 0,
      decorateResponse: undefined,
    }),
  );
  return { config, routes, upstreams, table: buildRouteTable(routes) };
}
