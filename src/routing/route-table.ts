/**
 * Routes in order; the first match wins. Each route is compiled once into a predicate over
 * (method, host, normalised path, headers), so matching a request allocates nothing.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { EffectiveRoute } from '../config/resolve.ts';

export interface RouteMatcher<T> {
  match(method: string, host: string | undefined, path: string, headers: IncomingHttpHeaders): T | undefined;
}

type Predicate = (method: string, host: string, path: string, headers: IncomingHttpHeaders) => boolean;

function compile(route: EffectiveRoute): Predicate {
  const checks: Predicate[] = [];
  const prefix = route.match.path;
  if (prefix !== '') {
    const withSlash = `${prefix}/`;
    checks.push((_m, _h, path) => path === prefix || path.startsWith(withSlash));
  }
  const methods = route.match.methods;
  if (methods) {
    const set = new Set(methods);
    // HEAD is served by GET routes, as every HTTP server does.
    if (set.has('GET')) set.add('HEAD');
    checks.push((m) => set.has(m));
  }
  const host = route.match.host;
  if (host) {
    if (host.startsWith('*.')) {
      const suffix = host.slice(1);
      checks.push((_m, h) => h.endsWith(suffix) && h.length > suffix.length);
    } else checks.push((_m, h) => h === host);
  }
  const headers = route.match.headers;
  if (headers) {
    const entries = Object.entries(headers);
    checks.push((_m, _h, _p, hs) => entries.every(([k, v]) => hs[k] === v));
  }
  if (checks.length === 0) return () => true;
  if (checks.length === 1) return checks[0];
  return (m, h, p, hs) => {
    for (const c of checks) if (!c(m, h, p, hs)) return false;
    return true;
  };
}

/** Lower-cased host without port; '' when absent. */
export function hostOnly(host: string | undefined): string {
  if (!host) return '';
  if (host.charCodeAt(0) === 91 /* [ */) return host.slice(0, host.indexOf(']') + 1).toLowerCase();
  const i = host.indexOf(':');
  return (i === -1 ? host : host.slice(0, i)).toLowerCase();
}

export function buildRouteTable<T extends { route: EffectiveRoute }>(entries: readonly T[]): RouteMatcher<T> {
  const compiled = entries.map((e) => ({ entry: e, test: compile(e.route) }));
  return {
    match(method, host, path, headers) {
      const h = hostOnly(host);
      for (const c of compiled) if (c.test(method, h, path, headers)) return c.entry;
      return undefined;
    },
  };
}
