/**
 * The access gate of a route (SPEC §13), compiled once per config load into its RouteRuntime and
 * run by the gateway right after the route match, before the body-size check:
 *
 *   allow/deny (403 forbidden) → auth (401 unauthorized, 503 auth-unavailable) → rate limit (429).
 *
 * `check` answers synchronously when it can (allow/deny, API keys, a cached basic or JWT
 * verification, a local rate limit) and returns a Promise only when it must wait (bcrypt/scrypt, a
 * token signature, the Redis limiter).
 */
import { hash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { type BlockList, isIP } from 'node:net';
import { GatewayError } from '../errors.ts';
import {
  ApiKeyAuthenticator,
  type Authenticator,
  BasicAuthenticator,
  type JwksPool,
  JwtAuthenticator,
} from './auth.ts';
import { type Decision, type RateLimiter, type RatePolicy, rateLimitHeader } from './rate-limit.ts';
import type { AccessSettings } from './settings.ts';

/** What a request that passed the gate carries on: its verified identity, if the route has auth. */
export interface Admission {
  readonly identity: string | undefined;
}

export const ADMITTED: Admission = Object.freeze({ identity: undefined });

export type Verdict = Admission | GatewayError;

export function isRefused(v: Verdict): v is GatewayError {
  return v instanceof GatewayError;
}

/** Bucket keys longer than this are hashed, so a huge header value cannot make a huge key. */
const MAX_KEY = 64;

export class Gate {
  readonly #route: string;
  readonly #allow: BlockList | undefined;
  readonly #deny: BlockList | undefined;
  readonly #auth: Authenticator | undefined;
  readonly #policy: RatePolicy | undefined;
  readonly #limiter: RateLimiter | undefined;
  readonly #prefix: string;
  /** Lower-case request headers removed before forwarding (credentials, the identity header). */
  readonly #strip: readonly string[];
  readonly #identityHeader: string | undefined;

  constructor(route: string, s: AccessSettings, limiter: RateLimiter | undefined, jwks?: JwksPool) {
    this.#route = route;
    this.#allow = s.allow;
    this.#deny = s.deny;
    const a = s.auth;
    this.#auth =
      a === undefined
        ? undefined
        : a.kind === 'basic'
          ? new BasicAuthenticator(a.users, a.realm)
          : a.kind === 'api_key'
            ? new ApiKeyAuthenticator(a.keys, a.header)
            : new JwtAuthenticator(a, jwks);
    this.#policy = s.rateLimit;
    this.#limiter = s.rateLimit && limiter;
    this.#prefix = `${route}:`;
    const strip: string[] = [];
    if (a && this.#auth && !a.forwardAuth) strip.push(this.#auth.credentialHeader);
    if (a?.identityHeader) strip.push(a.identityHeader.toLowerCase());
    this.#strip = strip;
    this.#identityHeader = a?.identityHeader;
  }

  /** Whether a request that passed needs its forwarded headers changed (see `forwardHeaders`). */
  get rewritesHeaders(): boolean {
    return this.#strip.length > 0;
  }

  /** Runs the checks in order for a request from `client` (the address trusted_proxies resolve). */
  check(req: IncomingMessage, client: string): Verdict | Promise<Verdict> {
    if (this.#deny !== undefined || this.#allow !== undefined) {
      // An address that is not one (a socket already gone) is in no list: allow refuses it.
      const family = isIP(client);
      const type = family === 6 ? 'ipv6' : 'ipv4';
      if (this.#deny !== undefined && family !== 0 && this.#deny.check(client, type))
        return this.#forbidden(client, 'is denied');
      if (this.#allow !== undefined && (family === 0 || !this.#allow.check(client, type)))
        return this.#forbidden(client, 'is not in the allow list');
    }
    const auth = this.#auth;
    if (auth === undefined) return this.#limit(req, client, undefined);
    const result = auth.verify(req, this.#route);
    if (typeof result === 'string') return this.#limit(req, client, result);
    if (result instanceof GatewayError) return result;
    return result.then((r) => (typeof r === 'string' ? this.#limit(req, client, r) : r));
  }

  #forbidden(client: string, why: string): GatewayError {
    return new GatewayError('forbidden', {
      detail: `client ${client} ${why} on route '${this.#route}'`,
      route: this.#route,
    });
  }

  #limit(req: IncomingMessage, client: string, identity: string | undefined): Verdict | Promise<Verdict> {
    const admission: Admission = identity === undefined ? ADMITTED : { identity };
    const policy = this.#policy;
    const limiter = this.#limiter;
    if (policy === undefined || limiter === undefined) return admission;
    const decision = limiter.take(this.#bucket(req, client, identity, policy), policy);
    if ('allowed' in decision) return this.#decide(decision, policy, admission);
    return decision.then((d) => this.#decide(d, policy, admission));
  }

  #bucket(req: IncomingMessage, client: string, identity: string | undefined, policy: RatePolicy): string {
    const key = policy.key;
    let k: string;
    switch (key.kind) {
      case 'route':
        return this.#prefix;
      case 'identity':
        k = identity === undefined ? `ip:${client}` : `id:${identity}`;
        break;
      case 'header': {
        const v = req.headers[key.header];
        // No such header: the request is limited per client address instead (documented).
        k = typeof v === 'string' && v !== '' ? `h:${v}` : `ip:${client}`;
        break;
      }
      default:
        k = `ip:${client}`;
    }
    if (k.length > MAX_KEY) k = `#${hash('sha256', k, 'base64url')}`;
    return this.#prefix + k;
  }

  #decide(d: Decision, policy: RatePolicy, admission: Admission): Verdict {
    if (d.allowed) return admission;
    const retryAfter = Math.max(1, Math.ceil(d.retryAfterMs / 1000));
    return new GatewayError('rate-limited', {
      detail: `more than ${policy.text} (burst ${policy.burst}) on route '${this.#route}'`,
      route: this.#route,
      retryAfter,
      headers: ['ratelimit-policy', policy.policyHeader, 'ratelimit', rateLimitHeader(d)],
    });
  }

  /**
   * The forwarded request headers (flat) of an admitted request: credentials removed unless
   * forward_auth, any client-sent identity header removed, the verified identity added.
   */
  forwardHeaders(headers: string[], admission: Admission): string[] {
    const strip = this.#strip;
    if (strip.length === 0) return headers;
    const out: string[] = [];
    for (let i = 0; i < headers.length; i += 2) {
      const lower = headers[i].toLowerCase();
      if (!strip.includes(lower)) out.push(headers[i], headers[i + 1]);
    }
    if (this.#identityHeader !== undefined && admission.identity !== undefined)
      out.push(this.#identityHeader, headerSafe(admission.identity));
    return out;
  }
}

const VISIBLE = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;

/**
 * An identity as a header value: as it is when it is visible ASCII, else percent-encoded (UTF-8), so a
 * token's `sub` with non-ASCII or control characters can neither break nor inject a header.
 */
export function headerSafe(identity: string): string {
  return VISIBLE.test(identity) ? identity : encodeURIComponent(identity);
}
