/**
 * RFC 9111 decisions for one stored response, on top of http-cache-semantics (storable or not, the
 * Authorization rule, freshness from s-maxage > max-age > Expires or the heuristic, age, merging a
 * 304 into the stored headers). What the library leaves to its caller is here: the route's `ttl` for
 * responses that give no freshness, the RFC 5861 stale windows (the response's own, else the
 * route's), the directives that forbid serving stale, request directives, and the validators.
 *
 * Conservative where it matters for a shared cache: a response that sets a cookie is never stored;
 * `must-revalidate` and `proxy-revalidate` responses are revalidated rather than served stale (the
 * library even revalidates them while fresh); `Vary: *` is never matched.
 */
import CachePolicy from 'http-cache-semantics';
import type { CacheConfig } from '../config/resolve.ts';

/** The library's documented `age()` and `maxAge()` (seconds), which its published types lack. */
type Semantics = CachePolicy & { age(): number; maxAge(): number };

/** Headers as http-cache-semantics takes them: lower-case names, one string value each. */
export type HeaderObject = Record<string, string>;

/** Statuses a route `ttl` may make fresh: those RFC 9110 §15.1 calls heuristically cacheable, but 206 and 5xx. */
const TTL_STATUSES = new Set([200, 203, 204, 300, 301, 308, 404, 405, 410, 414]);

const MAX_AGE = /(?:^|,)\s*(?:s-maxage|max-age)\s*=/i;

/** A flat header list (`[name, value, …]`) as an object; repeated names are joined with ", ". */
export function headerObject(flat: readonly string[]): HeaderObject {
  const out: HeaderObject = {};
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i].toLowerCase();
    const v = flat[i + 1];
    out[k] = k in out ? `${out[k]}, ${v}` : v;
  }
  return out;
}

/** Cache-Control directives: name → seconds (`max-age=60`) or true (`no-store`). */
export type Directives = ReadonlyMap<string, number | true>;

const NONE: Directives = new Map();

/** Parses a Cache-Control value once (names lower case; a value that is not a number counts as present). */
export function directives(cc: string | undefined): Directives {
  if (!cc) return NONE;
  const out = new Map<string, number | true>();
  for (const part of cc.split(',')) {
    const eq = part.indexOf('=');
    const k = (eq === -1 ? part : part.slice(0, eq)).trim().toLowerCase();
    if (k === '' || out.has(k)) continue;
    if (eq === -1) {
      out.set(k, true);
      continue;
    }
    const n = Number(
      part
        .slice(eq + 1)
        .trim()
        .replace(/^"|"$/g, ''),
    );
    out.set(k, Number.isFinite(n) && n >= 0 ? n : true);
  }
  return out;
}

/** One directive of a Cache-Control value: seconds, true, or undefined when absent. */
export function directive(cc: string | undefined, name: string): number | true | undefined {
  return directives(cc).get(name);
}

export interface RequestView {
  readonly method: string;
  readonly url: string;
  readonly headers: HeaderObject;
}

export interface Policy {
  readonly policy: Semantics;
  /** Seconds past freshness during which a stale copy may be served while refreshing. */
  readonly swr: number;
  /** Seconds past freshness during which a stale copy may replace an error. */
  readonly sie: number;
  /** The response forbids serving it stale (must-revalidate, proxy-revalidate, no-cache). */
  readonly noStale: boolean;
  /** May answer requests that carry Authorization (public, s-maxage or must-revalidate). */
  readonly shareable: boolean;
}

/**
 * The policy of a response if it may be stored, else undefined. `ttl` applies only when the upstream
 * gave no explicit freshness; a response that is neither fresh for a while nor usable stale is not
 * worth storing.
 */
export function storablePolicy(
  cfg: CacheConfig,
  req: RequestView,
  status: number,
  headers: HeaderObject,
): Policy | undefined {
  if (status === 206 || headers['set-cookie'] !== undefined || headers.vary?.trim() === '*') return undefined;
  const cc = headers['cache-control'];
  const explicit = MAX_AGE.test(cc ?? '') || headers.expires !== undefined;
  let policyHeaders = headers;
  if (!explicit && cfg.ttl !== undefined && TTL_STATUSES.has(status)) {
    const ttl = `s-maxage=${Math.max(1, Math.round(cfg.ttl / 1000))}`;
    policyHeaders = { ...headers, 'cache-control': cc ? `${cc}, ${ttl}` : ttl };
  }
  const policy = new CachePolicy(
    { method: req.method, url: req.url, headers: req.headers },
    { status, headers: policyHeaders },
    { shared: true },
  ) as Semantics;
  if (!policy.storable()) return undefined;
  const d = directives(cc);
  const noStale = d.has('must-revalidate') || d.has('proxy-revalidate') || d.has('no-cache');
  const window = (name: string, fallback: number | undefined) => {
    if (noStale) return 0;
    const own = d.get(name);
    if (typeof own === 'number') return own;
    return fallback === undefined ? 0 : fallback / 1000;
  };
  const swr = window('stale-while-revalidate', cfg.staleWhileRevalidate);
  const sie = window('stale-if-error', cfg.staleIfError);
  const hasValidator = headers.etag !== undefined || headers['last-modified'] !== undefined;
  if (policy.maxAge() <= 0 && swr <= 0 && sie <= 0 && !hasValidator) return undefined;
  const shareable = d.has('public') || d.has('s-maxage') || d.has('must-revalidate');
  return { policy, swr, sie, noStale, shareable };
}

/** How a stored response can serve a request now. */
export type Usability = 'fresh' | 'stale-while-revalidate' | 'stale';

export function usability(p: Policy, req: HeaderObject): Usability {
  const age = p.policy.age();
  const maxAge = p.policy.maxAge();
  const d = directives(req['cache-control']);
  const reqMaxAge = d.get('max-age');
  const minFresh = d.get('min-fresh');
  const maxStale = d.get('max-stale');
  const forced = d.has('no-cache') || (req.pragma !== undefined && /no-cache/i.test(req.pragma));
  if (forced) return 'stale';
  if (typeof reqMaxAge === 'number' && age > reqMaxAge) return 'stale';
  if (typeof minFresh === 'number' && maxAge - age < minFresh) return 'stale';
  if (age < maxAge) return 'fresh';
  if (!p.noStale && maxStale !== undefined && (maxStale === true || age - maxAge <= maxStale)) return 'fresh';
  if (p.swr > 0 && age - maxAge < p.swr) return 'stale-while-revalidate';
  return 'stale';
}

/** Whether a stale copy may stand in for an error now (stale-if-error). */
export function usableOnError(p: Policy): boolean {
  return p.sie > 0 && p.policy.age() - p.policy.maxAge() < p.sie;
}

/** RFC 9110 §13.1.2 weak comparison of an If-None-Match list against an entity tag. */
export function noneMatch(ifNoneMatch: string, etag: string | undefined): boolean {
  if (etag === undefined) return false;
  if (ifNoneMatch.trim() === '*') return true;
  const bare = (t: string) => t.trim().replace(/^W\//, '');
  const want = bare(etag);
  return ifNoneMatch.split(',').some((t) => bare(t) === want);
}

/**
 * Whether a client's conditional request is satisfied by the stored response (answer 304):
 * If-None-Match against ETag, else If-Modified-Since against Last-Modified (RFC 9110 §13.2.2).
 */
export function notModified(req: HeaderObject, stored: HeaderObject): boolean {
  const inm = req['if-none-match'];
  if (inm !== undefined) return noneMatch(inm, stored.etag);
  const ims = req['if-modified-since'];
  const lm = stored['last-modified'];
  if (ims === undefined || lm === undefined) return false;
  const since = Date.parse(ims);
  const modified = Date.parse(lm);
  return Number.isFinite(since) && Number.isFinite(modified) && modified <= since;
}

/** The conditional headers that revalidate a stored response (flat list). */
export function validatorsOf(stored: HeaderObject): string[] {
  const out: string[] = [];
  if (stored.etag !== undefined) out.push('if-none-match', stored.etag);
  else if (stored['last-modified'] !== undefined) out.push('if-modified-since', stored['last-modified']);
  return out;
}

/**
 * A 304 for a stored response: the new policy and headers (RFC 9111 §4.3.4), or undefined when the
 * 304 does not match the stored validators (the stored copy cannot be used then).
 */
export function afterNotModified(
  cfg: CacheConfig,
  p: Policy,
  status: number,
  req: RequestView,
  stored: HeaderObject,
  notModifiedHeaders: HeaderObject,
): { policy: Policy; headers: HeaderObject } | undefined {
  const { modified, matches } = p.policy.revalidatedPolicy(
    { method: req.method, url: req.url, headers: req.headers },
    { status: 304, headers: notModifiedHeaders },
  );
  if (modified || !matches) return undefined;
  const headers: HeaderObject = { ...stored };
  for (const [k, v] of Object.entries(notModifiedHeaders)) {
    // RFC 9111 §3.2: Content-Length and the like describe the stored body and stay.
    if (k === 'content-length' || k === 'content-encoding' || k === 'transfer-encoding') continue;
    headers[k] = v;
  }
  const next = storablePolicy(cfg, req, status, headers);
  return next === undefined ? undefined : { policy: next, headers };
}
