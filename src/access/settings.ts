/**
 * The access settings of one route, resolved at config load (route > defaults; `false` switches a
 * default off): CIDR lists checked, credentials files read and checked, the rate policy compiled.
 * Every problem is a config issue with the key's line; a credentials file's problem names that
 * file's line too. The result is data: the stateful parts (buckets, JWKS, caches) are made per
 * runtime by gate.ts.
 */

import type { KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { BlockList } from 'node:net';
import type { z } from 'zod';
import type { accessShape, authSchema, rateLimitSchema } from '../config/access-schema.ts';
import type { ConfigIssue } from '../config/errors.ts';
import type { JwtSettings } from './auth.ts';
import { createPemPublicKey } from './auth.ts';
import { buildBlockList } from './client-address.ts';
import { CredentialsError, loadKeys, loadUsers, type PasswordHash } from './credentials.ts';
import { parseRate, type RatePolicy, ratePolicy } from './rate-limit.ts';

type AuthInput = z.output<typeof authSchema>;
type RateInput = z.output<typeof rateLimitSchema>;
export interface AccessInput {
  allow?: string[];
  deny?: string[];
  auth?: AuthInput | false;
  rate_limit?: RateInput | false;
}
// Keeps AccessInput in step with the schema.
type _Check = AccessInput extends { [K in keyof typeof accessShape]?: unknown } ? true : never;
const _check: _Check = true;
void _check;

export type AuthSettings = (
  | { readonly kind: 'basic'; readonly users: ReadonlyMap<string, PasswordHash>; readonly realm: string }
  | { readonly kind: 'api_key'; readonly header: string; readonly keys: ReadonlyMap<string, string> }
  | ({ readonly kind: 'jwt' } & JwtSettings)
) & {
  readonly identityHeader: string | undefined;
  readonly forwardAuth: boolean;
  /** The file the credentials came from (for views and messages). */
  readonly source: string;
};

export interface AccessSettings {
  readonly allow: BlockList | undefined;
  readonly deny: BlockList | undefined;
  /** As written, for views. */
  readonly allowText: readonly string[] | undefined;
  readonly denyText: readonly string[] | undefined;
  readonly auth: AuthSettings | undefined;
  readonly rateLimit: RatePolicy | undefined;
}

type Path = (string | number)[];

function formatKey(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

/**
 * The effective access settings of a route (`route` its keys, `routePath` e.g. ['routes', 2]), or
 * undefined when it has none. Pushes every problem to `issues`.
 */
export function resolveAccess(
  route: AccessInput,
  defaults: AccessInput,
  routePath: Path,
  lineOf: (path: PropertyKey[]) => number | undefined,
  issues: ConfigIssue[],
): AccessSettings | undefined {
  const issue = (path: Path, message: string) =>
    issues.push({ path: formatKey(path), line: lineOf(path), message });
  const pick = <K extends keyof AccessInput>(k: K): [AccessInput[K], Path] =>
    route[k] !== undefined ? [route[k], [...routePath, k]] : [defaults[k], ['defaults', k]];

  const list = (k: 'allow' | 'deny'): [BlockList | undefined, string[] | undefined] => {
    const [v, path] = pick(k);
    if (v === undefined || v.length === 0) return [undefined, undefined];
    let ok = true;
    v.forEach((c, i) => {
      try {
        buildBlockList([c]);
      } catch (err) {
        ok = false;
        issue([...path, i], (err as Error).message);
      }
    });
    return ok ? [buildBlockList(v), [...v]] : [undefined, undefined];
  };
  const [allow, allowText] = list('allow');
  const [deny, denyText] = list('deny');

  const [authIn, authPath] = pick('auth');
  const auth = authIn ? resolveAuth(authIn, authPath, issue) : undefined;

  const [rateIn, ratePath] = pick('rate_limit');
  let rateLimit: RatePolicy | undefined;
  if (rateIn) {
    const rate = parseRate(rateIn.rate);
    if (rate === undefined) issue([...ratePath, 'rate'], 'the rate must be above 0');
    else {
      const key: RatePolicy['key'] = rateIn.key.startsWith('header:')
        ? { kind: 'header', header: rateIn.key.slice(7).toLowerCase() }
        : { kind: rateIn.key as 'client_ip' | 'identity' | 'route' };
      if (key.kind === 'identity' && authIn === undefined)
        issue([...ratePath, 'key'], 'key: identity needs auth on the route (or in defaults)');
      else if (key.kind === 'identity' && !authIn)
        issue([...ratePath, 'key'], 'key: identity needs auth, which this route switches off');
      rateLimit = ratePolicy(rateIn.rate, rateIn.burst ?? Math.max(1, Math.ceil(rate.count)), key);
    }
  }
  if (!allow && !deny && !auth && !rateLimit) return undefined;
  return Object.freeze({ allow, deny, allowText, denyText, auth, rateLimit });
}

function resolveAuth(
  a: AuthInput,
  path: Path,
  issue: (path: Path, message: string) => void,
): AuthSettings | undefined {
  const kinds = (['basic', 'api_key', 'jwt'] as const).filter((k) => a[k] !== undefined);
  if (kinds.length !== 1) {
    issue(
      path,
      kinds.length === 0 ? 'needs one of basic, api_key or jwt' : `set only one of ${kinds.join(', ')}`,
    );
    return undefined;
  }
  const common = { identityHeader: a.identity_header, forwardAuth: a.forward_auth };
  const fileIssue = (where: Path, err: unknown) =>
    issue(where, err instanceof CredentialsError ? err.message : String((err as Error).message));
  if (a.basic) {
    try {
      return Object.freeze({
        kind: 'basic',
        users: loadUsers(a.basic.users),
        realm: a.basic.realm,
        source: a.basic.users,
        ...common,
      });
    } catch (err) {
      fileIssue([...path, 'basic', 'users'], err);
      return undefined;
    }
  }
  if (a.api_key) {
    try {
      return Object.freeze({
        kind: 'api_key',
        header: a.api_key.header,
        keys: loadKeys(a.api_key.keys),
        source: a.api_key.keys,
        ...common,
      });
    } catch (err) {
      fileIssue([...path, 'api_key', 'keys'], err);
      return undefined;
    }
  }
  const j = a.jwt as NonNullable<AuthInput['jwt']>;
  if ((j.jwks === undefined) === (j.public_key === undefined)) {
    issue([...path, 'jwt'], 'set exactly one of jwks (a URL) or public_key (a PEM file)');
    return undefined;
  }
  let publicKey: KeyObject | undefined;
  if (j.public_key !== undefined) {
    let pem: string;
    try {
      pem = readFileSync(j.public_key, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      issue(
        [...path, 'jwt', 'public_key'],
        `${j.public_key}: ${code === 'ENOENT' ? 'file not found' : `cannot read it (${code})`}`,
      );
      return undefined;
    }
    if (pem.includes('PRIVATE KEY-----')) {
      issue([...path, 'jwt', 'public_key'], `${j.public_key}: holds a private key; give the public key`);
      return undefined;
    }
    try {
      publicKey = createPemPublicKey(pem);
    } catch {
      issue([...path, 'jwt', 'public_key'], `${j.public_key}: not a PEM public key`);
      return undefined;
    }
  }
  return Object.freeze({
    kind: 'jwt',
    jwks: j.jwks,
    publicKey,
    issuer: Object.freeze(Array.isArray(j.issuer) ? [...j.issuer] : j.issuer),
    audience: Object.freeze(Array.isArray(j.audience) ? [...j.audience] : j.audience),
    leewaySec: Math.round(j.leeway / 1000),
    algorithms: j.algorithms && Object.freeze([...j.algorithms]),
    identityClaim: j.identity_claim,
    jwksTimeoutMs: j.jwks_timeout,
    jwksCacheMs: j.jwks_cache,
    cache: j.cache,
    source: j.jwks ?? (j.public_key as string),
    ...common,
  });
}

/** What the admin API shows of a route's access settings: never a hash, a key or a user list. */
export function accessView(a: AccessSettings | undefined) {
  if (a === undefined) return null;
  const auth = a.auth;
  const rl = a.rateLimit;
  return {
    allow: a.allowText ?? null,
    deny: a.denyText ?? null,
    auth: auth
      ? {
          kind: auth.kind,
          source: auth.source,
          identity_header: auth.identityHeader ?? null,
          forward_auth: auth.forwardAuth,
        }
      : null,
    rate_limit: rl
      ? {
          rate: rl.text,
          burst: rl.burst,
          key: rl.key.kind === 'header' ? `header:${rl.key.header}` : rl.key.kind,
        }
      : null,
  };
}
