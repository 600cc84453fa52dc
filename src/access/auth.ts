/**
 * Authentication of a route (SPEC §13): basic (bcrypt or scrypt hashes), API keys (SHA-256 hashes) and
 * JWT (jose: signature, exp/nbf with leeway, issuer, audience; keys from a JWKS URL or a PEM file).
 *
 * Each Authenticator returns the verified identity (the user name, the key's name, the token's `sub`
 * or configured claim) or a GatewayError (401 unauthorized with WWW-Authenticate; 503 auth-unavailable
 * when a JWKS cannot be fetched in time). It returns a Promise only when it must wait: a bcrypt or
 * scrypt verification not in the cache, or a token not in the verified-token cache.
 */
import { createPublicKey, hash, type KeyObject, scrypt, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import bcrypt from 'bcryptjs';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  type JWTPayload,
  type JWTVerifyOptions,
  errors as joseErrors,
  jwtVerify,
} from 'jose';
import { GatewayError } from '../errors.ts';
import { keyHash, type PasswordHash } from './credentials.ts';

export type AuthResult = string | GatewayError;

export interface Authenticator {
  /** The request header holding the credentials (lower case): stripped before forwarding unless forward_auth. */
  readonly credentialHeader: string;
  verify(req: IncomingMessage, route: string): AuthResult | Promise<AuthResult>;
}

/** Verified credentials kept so the hot path does not pay bcrypt (or a signature check) per request. */
export class VerifiedCache {
  readonly #map = new Map<string, { identity: string; until: number }>();
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
  }

  get(key: string, now: number): string | undefined {
    const e = this.#map.get(key);
    if (e === undefined) return undefined;
    if (e.until <= now) {
      this.#map.delete(key);
      return undefined;
    }
    return e.identity;
  }

  set(key: string, identity: string, until: number): void {
    if (this.#map.size >= this.#max && !this.#map.has(key)) {
      for (const oldest of this.#map.keys()) {
        this.#map.delete(oldest);
        break;
      }
    }
    this.#map.set(key, { identity, until });
  }

  get size(): number {
    return this.#map.size;
  }
}

/** Successful basic verifications are kept this long (a changed password applies at the next reload). */
export const BASIC_CACHE_MS = 60_000;
export const VERIFIED_CACHE_ENTRIES = 10_000;

function unauthorized(route: string, detail: string, challenge: string): GatewayError {
  return new GatewayError('unauthorized', { detail, route, headers: ['www-authenticate', challenge] });
}

/** RFC 7235 quoted-string content: no quotes, backslashes or control characters. */
function quoted(text: string): string {
  let out = '';
  for (const ch of text) {
    const c = ch.charCodeAt(0);
    out += c < 0x20 || c === 0x7f || ch === '"' || ch === '\\' ? "'" : ch;
  }
  return out;
}

// A bcrypt hash verified for unknown users, so that "no such user" takes as long as "wrong password".
const DUMMY_BCRYPT = '$2b$10$CwTycUXWue0Thq9StjUM0uJ8pX0bYbR4x7bWnGz6F2b2KxQWzT1tC';

export class BasicAuthenticator implements Authenticator {
  readonly credentialHeader = 'authorization';
  readonly #users: ReadonlyMap<string, PasswordHash>;
  readonly #challenge: string;
  readonly #cache = new VerifiedCache(VERIFIED_CACHE_ENTRIES);
  /**
   * Verifications under way, by cache key: concurrent requests with the same credentials (a client
   * opening 64 connections at once) share one bcrypt run instead of 64.
   */
  readonly #pending = new Map<string, Promise<AuthResult>>();

  constructor(users: ReadonlyMap<string, PasswordHash>, realm: string) {
    this.#users = users;
    this.#challenge = `Basic realm="${quoted(realm)}", charset="UTF-8"`;
  }

  verify(req: IncomingMessage, route: string): AuthResult | Promise<AuthResult> {
    const header = req.headers.authorization;
    if (header === undefined || header.length < 7 || header.slice(0, 6).toLowerCase() !== 'basic ')
      return unauthorized(
        route,
        `route '${route}' needs basic credentials (Authorization: Basic …)`,
        this.#challenge,
      );
    const encoded = header.slice(6).trim();
    const now = Date.now();
    // Keyed by a hash of the credentials: the cache never holds a password.
    const cacheKey = hash('sha256', encoded, 'base64');
    const hit = this.#cache.get(cacheKey, now);
    if (hit !== undefined) return hit;
    const pending = this.#pending.get(cacheKey);
    if (pending !== undefined) return pending;
    const decoded = Buffer.from(encoded, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const wrong = () =>
      unauthorized(route, `wrong user name or password for route '${route}'`, this.#challenge);
    if (colon <= 0) return wrong();
    const user = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    const stored = this.#users.get(user);
    const check =
      stored === undefined
        ? bcrypt.compare(password, DUMMY_BCRYPT).then(() => false)
        : verifyPassword(password, stored);
    const result = check
      .then(
        (ok) => {
          if (!ok) return wrong();
          this.#cache.set(cacheKey, user, Date.now() + BASIC_CACHE_MS);
          return user;
        },
        () => wrong(),
      )
      .finally(() => this.#pending.delete(cacheKey));
    this.#pending.set(cacheKey, result);
    return result;
  }
}

/** Whether `password` matches `stored` (constant-time comparison of the derived bytes). */
export function verifyPassword(password: string, stored: PasswordHash): Promise<boolean> {
  if (stored.kind === 'bcrypt') return bcrypt.compare(password, stored.hash);
  return new Promise((resolve, reject) => {
    const { N, r, p, salt, hash } = stored;
    scrypt(password, salt, hash.length, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 }, (err, derived) => {
      if (err) reject(err);
      else resolve(timingSafeEqual(derived, hash));
    });
  });
}

export class ApiKeyAuthenticator implements Authenticator {
  readonly credentialHeader: string;
  readonly #keys: ReadonlyMap<string, string>;
  readonly #hashes: ReadonlyMap<string, Buffer>;
  readonly #challenge: string;

  constructor(keys: ReadonlyMap<string, string>, header: string) {
    this.credentialHeader = header.toLowerCase();
    this.#keys = keys;
    this.#hashes = new Map([...keys.keys()].map((h) => [h, Buffer.from(h, 'hex')]));
    this.#challenge = `ApiKey header="${quoted(header)}"`;
  }

  verify(req: IncomingMessage, route: string): AuthResult {
    const value = req.headers[this.credentialHeader];
    if (typeof value !== 'string' || value === '')
      return unauthorized(
        route,
        `route '${route}' needs an API key in ${this.credentialHeader}`,
        this.#challenge,
      );
    const hex = keyHash(value);
    // The lookup is by the SHA-256 of the key (its timing says nothing about the key itself); the
    // stored hash is then compared in constant time.
    const stored = this.#hashes.get(hex);
    if (stored !== undefined && timingSafeEqual(stored, Buffer.from(hex, 'hex')))
      return this.#keys.get(hex) as string;
    return unauthorized(route, `unknown API key for route '${route}'`, this.#challenge);
  }
}

export interface JwtSettings {
  readonly jwks: string | undefined;
  readonly publicKey: KeyObject | undefined;
  readonly issuer: string | readonly string[];
  readonly audience: string | readonly string[];
  /** Seconds of clock skew accepted on exp and nbf. */
  readonly leewaySec: number;
  readonly algorithms: readonly string[] | undefined;
  readonly identityClaim: string;
  readonly jwksTimeoutMs: number;
  readonly jwksCacheMs: number;
  /** Keep verified tokens (until their exp, at most 5 minutes) so a repeated token is not verified again. */
  readonly cache: boolean;
}

/** Longest a verified token stays in the cache (a JWKS key rotation applies within this). */
export const TOKEN_CACHE_MS = 300_000;
/** While the JWKS server cannot be reached, the last key set it gave is used this long before asking again. */
export const STALE_JWKS_MS = 30_000;

type LocalJwks = ReturnType<typeof createLocalJWKSet>;
export type RemoteJwks = ReturnType<typeof createRemoteJWKSet>;

/**
 * Remote key sets by URL and settings, shared by every route that names the same JWKS (one fetch and
 * one cache for all of them). A runtime's pool takes over the sets of the previous runtime that it
 * still uses, so a reload does not fetch them again; the others are dropped with the old runtime.
 */
export class JwksPool {
  #previous: JwksPool | undefined;
  readonly sets = new Map<string, RemoteJwks>();

  constructor(previous?: JwksPool) {
    this.#previous = previous;
  }

  get(s: JwtSettings): RemoteJwks {
    const id = `${s.jwks} ${s.jwksTimeoutMs} ${s.jwksCacheMs}`;
    let set = this.sets.get(id) ?? this.#previous?.sets.get(id);
    if (set === undefined)
      set = createRemoteJWKSet(new URL(s.jwks as string), {
        timeoutDuration: s.jwksTimeoutMs,
        cooldownDuration: 30_000,
        cacheMaxAge: s.jwksCacheMs,
      });
    this.sets.set(id, set);
    return set;
  }

  /** Lets go of the previous pool once every route took what it needs (no chain across reloads). */
  seal(): void {
    this.#previous = undefined;
  }
}

export class JwtAuthenticator implements Authenticator {
  readonly credentialHeader = 'authorization';
  readonly #s: JwtSettings;
  readonly #key: KeyObject | ReturnType<typeof createRemoteJWKSet>;
  readonly #remote: ReturnType<typeof createRemoteJWKSet> | undefined;
  /** The last key set fetched, used while the JWKS server cannot be reached (stale-if-error). */
  #stale: { readonly set: LocalJwks; readonly until: number } | undefined;
  readonly #cache: VerifiedCache | undefined;
  /** Verifications under way by token (with the cache on): concurrent requests share one. */
  readonly #pending = new Map<string, Promise<AuthResult>>();
  readonly #challenge: string;

  constructor(s: JwtSettings, pool?: JwksPool) {
    this.#s = s;
    this.#remote = s.publicKey === undefined ? (pool ?? new JwksPool()).get(s) : undefined;
    this.#key = s.publicKey ?? (this.#remote as ReturnType<typeof createRemoteJWKSet>);
    this.#cache = s.cache ? new VerifiedCache(VERIFIED_CACHE_ENTRIES) : undefined;
    this.#challenge = 'Bearer';
  }

  #fail(route: string, description: string): GatewayError {
    return new GatewayError('unauthorized', {
      detail: `${description} (route '${route}')`,
      route,
      headers: [
        'www-authenticate',
        `Bearer error="invalid_token", error_description="${quoted(description)}"`,
      ],
    });
  }

  verify(req: IncomingMessage, route: string): AuthResult | Promise<AuthResult> {
    const header = req.headers.authorization;
    if (header === undefined || header.length < 8 || header.slice(0, 7).toLowerCase() !== 'bearer ')
      return unauthorized(
        route,
        `route '${route}' needs a bearer token (Authorization: Bearer …)`,
        this.#challenge,
      );
    const token = header.slice(7).trim();
    const now = Date.now();
    const hit = this.#cache?.get(token, now);
    if (hit !== undefined) return hit;
    const pending = this.#pending.get(token);
    if (pending !== undefined) return pending;
    const s = this.#s;
    const options: JWTVerifyOptions = {
      issuer: s.issuer as string | string[],
      audience: s.audience as string | string[],
      clockTolerance: s.leewaySec,
      algorithms: s.algorithms as string[] | undefined,
    };
    const stale = this.#stale !== undefined && now < this.#stale.until ? this.#stale.set : undefined;
    let verified: Promise<{ payload: JWTPayload }>;
    if (stale !== undefined) verified = jwtVerify(token, stale, options);
    else if (this.#key instanceof Function) verified = jwtVerify(token, this.#key, options);
    else verified = jwtVerify(token, this.#key, options);
    const result = verified.then(
      ({ payload }) => this.#accept(route, token, payload),
      (err: unknown) =>
        stale !== undefined ? this.#refuseStale(route, err) : this.#unreachable(route, token, options, err),
    );
    if (this.#cache === undefined) return result;
    this.#pending.set(token, result);
    return result.finally(() => this.#pending.delete(token));
  }

  #accept(route: string, token: string, payload: JWTPayload): AuthResult {
    const identity = payload[this.#s.identityClaim];
    if (typeof identity !== 'string' || identity === '')
      return this.#fail(route, `the token has no '${this.#s.identityClaim}' claim`);
    if (this.#cache !== undefined) {
      const now = Date.now();
      let until = now + TOKEN_CACHE_MS;
      if (typeof payload.exp === 'number')
        until = Math.min(until, payload.exp * 1000 + this.#s.leewaySec * 1000);
      // A token not yet valid (nbf within the leeway) is verified again next time, not cached.
      if (until > now && !(typeof payload.nbf === 'number' && payload.nbf * 1000 > now))
        this.#cache.set(token, identity, until);
    }
    return identity;
  }

  /**
   * A failure with the live JWKS: when the server could not be reached and a key set was fetched
   * before, the token is verified against that one (and it is used, without asking the server, for
   * STALE_JWKS_MS); else the failure as it is.
   */
  #unreachable(
    route: string,
    token: string,
    options: JWTVerifyOptions,
    err: unknown,
  ): AuthResult | Promise<AuthResult> {
    const refused = this.#refuse(route, err);
    const last = refused.code === 'auth-unavailable' ? this.#remote?.jwks() : undefined;
    if (last === undefined) return refused;
    const set = createLocalJWKSet(last);
    this.#stale = { set, until: Date.now() + STALE_JWKS_MS };
    return jwtVerify(token, set, options).then(
      ({ payload }) => this.#accept(route, token, payload),
      (e: unknown) => this.#refuseStale(route, e),
    );
  }

  /** With the last key set while the server is unreachable, an unknown key may be a new one: 503. */
  #refuseStale(route: string, err: unknown): GatewayError {
    if ((err as { code?: string })?.code === 'ERR_JWKS_NO_MATCHING_KEY')
      return this.#unavailable(
        route,
        'the JWKS cannot be fetched and no key it gave before matches the token',
        err,
      );
    return this.#refuse(route, err);
  }

  #refuse(route: string, err: unknown): GatewayError {
    const code = (err as { code?: string })?.code;
    const e = err as { claim?: string; message?: string };
    switch (code) {
      case 'ERR_JWT_EXPIRED':
        return this.#fail(route, 'the token has expired');
      case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
        if (e.claim === 'nbf') return this.#fail(route, 'the token is not valid yet (nbf)');
        if (e.claim === 'iss') return this.#fail(route, 'the token has the wrong issuer');
        if (e.claim === 'aud') return this.#fail(route, 'the token has the wrong audience');
        return this.#fail(route, `the token's '${e.claim}' claim is not acceptable`);
      case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
        return this.#fail(route, 'the token signature does not verify');
      case 'ERR_JWKS_NO_MATCHING_KEY':
      case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
        return this.#fail(route, 'no key of the JWKS matches the token (kid, alg)');
      case 'ERR_JOSE_ALG_NOT_ALLOWED':
        return this.#fail(route, 'the token is signed with an algorithm this route does not accept');
      case 'ERR_JWKS_TIMEOUT':
      case 'ERR_JWKS_INVALID':
        return this.#unavailable(
          route,
          code === 'ERR_JWKS_TIMEOUT'
            ? `the JWKS did not answer within ${this.#s.jwksTimeoutMs} ms`
            : 'the JWKS is not a valid key set',
          err,
        );
      default:
        if (err instanceof joseErrors.JOSEError && !/JSON Web Key Set/.test(e.message ?? ''))
          return this.#fail(route, 'the token is malformed or not acceptable');
        // The JWKS could not be fetched (connection refused, DNS, a status other than 200, not JSON).
        return this.#unavailable(
          route,
          `the JWKS could not be fetched (${e.message ?? 'unknown error'})`,
          err,
        );
    }
  }

  #unavailable(route: string, why: string, cause: unknown): GatewayError {
    return new GatewayError('auth-unavailable', {
      detail: `cannot verify the token of route '${route}': ${why}`,
      route,
      retryAfter: 5,
      proxyError: 'proxy_internal_error',
      cause,
    });
  }
}

export function createPemPublicKey(pem: string): KeyObject {
  return createPublicKey(pem);
}
