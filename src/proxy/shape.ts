/**
 * Request and response shaping (SPEC §13): header edits both ways, the Host sent upstream, and path
 * rewrites. Everything is compiled once per config load into a `Shape` on the RouteRuntime: a header
 * value is an array of literal and variable parts (no parsing per request), a regex rewrite is a
 * RegExp plus its replacement split into literals and group numbers.
 *
 * Header layers merge per header name, the most specific layer winning (route > upstream > defaults,
 * as an nginx or Traefik user expects): whatever a route says about `X-Foo` (set, add or remove)
 * replaces what its upstream or `defaults` say about `X-Foo`; other names are inherited. Within the
 * winning layer, `remove` applies after `set` and `add`. Applying edits to a message: names that are
 * set or removed are dropped from what came in (also the gateway's own headers: X-Forwarded-*,
 * Via, …), then `set` and `add` values are appended.
 */
import type { IncomingMessage } from 'node:http';
import type { TrustedProxies } from '../access/client-address.ts';
import {
  compileReplacement,
  type EffectiveShape,
  RESERVED_VARIABLES,
  type ResolvedEdits,
} from '../config/shape-config.ts';
import { normalizePath } from '../routing/normalize.ts';

const CLIENT_IP = 0;
const REQUEST_ID = 1;
const HOST = 2;
const ROUTE = 3;

/** A compiled value: literal strings and variable numbers (CLIENT_IP…ROUTE), in order. */
export type ValueParts = readonly (string | number)[];

/** One header to append: its name as written, and its value (a plain string when it has no variable). */
export interface HeaderLine {
  readonly name: string;
  readonly value: string | ValueParts;
}

/** The compiled edits of one direction. */
export interface HeaderEdits {
  /** Lower-case names dropped from the message (removed, or replaced by `set`). */
  readonly drop: ReadonlySet<string>;
  /** Bit n set: some dropped name has length n (mod 32); other names are never lower-cased. */
  readonly dropLengths: number;
  /** What is appended after the drop (`set` values, then `add` values). */
  readonly append: readonly HeaderLine[];
}

export interface RewriteRule {
  readonly kind: 'prefix' | 'regex';
  /** For the `sluice check` table: `/api → /v2` or `^/v1/(.*)$ → /api/$1`. */
  readonly describe: string;
  /** prefix: the route's matched prefix ('' for `/`) and its replacement. */
  readonly from?: string;
  readonly to?: string;
  /** regex: the compiled pattern and the replacement as literals and group numbers. */
  readonly regex?: RegExp;
  readonly parts?: readonly (string | number)[];
}

export type HostMode =
  | { readonly kind: 'keep' }
  | { readonly kind: 'upstream' }
  | { readonly kind: 'name'; readonly name: string };

/** What a route does besides forwarding; `undefined` fields cost nothing on the hot path. */
export interface Shape {
  /** client.trusted_proxies, for `${client_ip}` (only when the route has header edits). */
  readonly trusted: TrustedProxies | undefined;
  readonly request: HeaderEdits | undefined;
  readonly response: HeaderEdits | undefined;
  readonly host: HostMode;
  readonly rewrite: RewriteRule | undefined;
}

export const PLAIN_SHAPE: Shape = Object.freeze({
  trusted: undefined,
  request: undefined,
  response: undefined,
  host: Object.freeze({ kind: 'keep' as const }),
  rewrite: undefined,
});

/**
 * Compiles a value with `${client_ip}`, `${request_id}`, `${host}` and `${route}` (any other `${…}`
 * was already replaced by the loader's environment interpolation). Returns the plain string when it
 * holds no variable.
 */
export function compileValue(value: string): string | ValueParts {
  if (!value.includes('${')) return value;
  const parts: (string | number)[] = [];
  const re = /\$\{(client_ip|request_id|host|route)\}/g;
  let last = 0;
  for (let m = re.exec(value); m !== null; m = re.exec(value)) {
    if (m.index > last) parts.push(value.slice(last, m.index));
    parts.push(RESERVED_VARIABLES.indexOf(m[1]));
    last = m.index + m[0].length;
  }
  if (parts.length === 0) return value;
  if (last < value.length) parts.push(value.slice(last));
  return Object.freeze(parts);
}

/** The per-request values a header value can hold. */
export interface ShapeValues {
  clientIp: string;
  requestId: string;
  host: string;
  route: string;
}

function render(v: string | ValueParts, x: ShapeValues): string {
  if (typeof v === 'string') return v;
  let out = '';
  for (let i = 0; i < v.length; i++) {
    const p = v[i];
    if (typeof p === 'string') out += p;
    else if (p === CLIENT_IP) out += x.clientIp;
    else if (p === REQUEST_ID) out += x.requestId;
    else if (p === HOST) out += x.host;
    else if (p === ROUTE) out += x.route;
  }
  return out;
}

/** Applies compiled edits to a flat [name, value, …] header list, in place. */
export function applyEdits(headers: string[], edits: HeaderEdits, x: ShapeValues): void {
  const drop = edits.drop;
  if (drop.size > 0) {
    const lengths = edits.dropLengths;
    let w = 0;
    for (let r = 0; r < headers.length; r += 2) {
      const name = headers[r];
      if ((lengths & (1 << (name.length & 31))) !== 0 && drop.has(name.toLowerCase())) continue;
      if (w !== r) {
        headers[w] = headers[r];
        headers[w + 1] = headers[r + 1];
      }
      w += 2;
    }
    headers.length = w;
  }
  const append = edits.append;
  for (let i = 0; i < append.length; i++) headers.push(append[i].name, render(append[i].value, x));
}

/** Replaces (or adds) the Host of a flat header list, in place. */
export function setHost(headers: string[], host: string): void {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i].length === 4 && headers[i].toLowerCase() === 'host') {
      headers[i + 1] = host;
      return;
    }
  }
  headers.push('host', host);
}

/** The Host a target answers to: its URL's authority (`origin` without the scheme). */
export function targetHost(origin: string): string {
  return origin.slice(origin.indexOf('//') + 2);
}

/** `${client_ip}` of a request: its peer (IPv4-mapped prefix dropped), resolved through trusted proxies. */
export function clientIpOf(
  shape: Shape,
  peer: string | undefined,
  xff: string | string[] | undefined,
): string {
  let a = peer ?? '';
  if (a.startsWith('::ffff:')) a = a.slice(7);
  const trusted = shape.trusted;
  if (trusted === undefined || xff === undefined) return a;
  return trusted.clientOf(a, Array.isArray(xff) ? xff.join(', ') : xff);
}

/**
 * Applies a route's request edits and fixed Host to the forwarded header list (after the gateway's
 * own headers, so that edits can replace or remove those too). Host `upstream` is set per try by the
 * exchange, once the target is known.
 */
export function shapeRequest(
  headers: string[],
  rt: { readonly name: string; readonly shape: Shape },
  req: IncomingMessage,
  requestId: string,
): void {
  const shape = rt.shape;
  const edits = shape.request;
  if (edits !== undefined)
    applyEdits(headers, edits, {
      clientIp: clientIpOf(shape, req.socket?.remoteAddress, req.headers['x-forwarded-for']),
      requestId,
      host: req.headers.host ?? '',
      route: rt.name,
    });
  if (shape.host.kind === 'name') setHost(headers, shape.host.name);
}

/**
 * Applies a route's response edits to a response head about to be written (proxied, or served by
 * the response cache); no-op without edits.
 */
export function shapeResponse(
  headers: string[],
  rt: { readonly name: string; readonly shape: Shape },
  req: IncomingMessage,
  requestId: string,
  peer: string | undefined,
): void {
  const edits = rt.shape.response;
  if (edits === undefined) return;
  applyEdits(headers, edits, {
    clientIp: clientIpOf(rt.shape, peer, req.headers['x-forwarded-for']),
    requestId,
    host: req.headers.host ?? '',
    route: rt.name,
  });
}

// ---- rewrites ------------------------------------------------------------------------------------

function compileEdits(e: ResolvedEdits | undefined): HeaderEdits | undefined {
  if (e === undefined) return undefined;
  const drop = new Set<string>(e.remove);
  for (const [name] of e.set) drop.add(name.toLowerCase());
  const append: HeaderLine[] = [];
  for (const [name, value] of [...e.set, ...e.add])
    append.push(Object.freeze({ name, value: compileValue(value) }));
  let dropLengths = 0;
  for (const name of drop) dropLengths |= 1 << (name.length & 31);
  return Object.freeze({ drop, dropLengths, append: Object.freeze(append) });
}

/** Compiles a route's resolved shape (`prefix`: the route's matched prefix, '' for `/`). */
export function compileShape(
  shape: EffectiveShape | undefined,
  prefix: string,
  trusted?: TrustedProxies,
): Shape {
  if (shape === undefined) return PLAIN_SHAPE;
  const host: HostMode =
    shape.host === 'keep'
      ? { kind: 'keep' }
      : shape.host === 'upstream'
        ? { kind: 'upstream' }
        : { kind: 'name', name: shape.host.name };
  let rewrite: RewriteRule | undefined;
  const rw = shape.rewrite;
  if (rw !== undefined && 'prefix' in rw)
    rewrite = Object.freeze({
      kind: 'prefix',
      from: prefix,
      to: rw.prefix,
      describe: `${prefix || '/'} → ${rw.prefix}`,
    });
  else if (rw !== undefined)
    rewrite = Object.freeze({
      kind: 'regex',
      regex: new RegExp(rw.regex, rw.flags),
      parts: Object.freeze(compileReplacement(rw.to)),
      describe: `${rw.regex} → ${rw.to}`,
    });
  return Object.freeze({
    trusted,
    request: compileEdits(shape.request),
    response: compileEdits(shape.response),
    host: Object.freeze(host),
    rewrite,
  });
}

const ENCODED_SLASH = /%2f/i;
const DOT_SEGMENT = /(^|\/)(\.|%2e){1,2}(\/|$)/i;

/**
 * The path the upstream receives after the route's rewrite (normalised again), or undefined when the
 * result must not be forwarded (a dot segment or an encoded `/`, once decoded: 400 bad-request; see
 * `rewriteRefusal` for why). `path` is the normalised path without the query.
 */
export function rewritePath(rule: RewriteRule, path: string): string | undefined {
  let out: string;
  if (rule.kind === 'prefix') {
    const from = rule.from as string;
    const to = rule.to as string;
    const rest = path.slice(from.length);
    out = to === '/' ? rest || '/' : to + rest;
  } else {
    const re = rule.regex as RegExp;
    const m = re.exec(path);
    if (m === null) return path;
    const parts = rule.parts as readonly (string | number)[];
    let r = '';
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      r += typeof p === 'string' ? p : (m[p] ?? '');
    }
    out = path.slice(0, m.index) + r + path.slice(m.index + m[0].length);
  }
  if (out.charCodeAt(0) !== 47) out = `/${out}`;
  if (out.includes('%') || out.includes('.')) {
    if (ENCODED_SLASH.test(out) || DOT_SEGMENT.test(out)) return undefined;
  }
  return normalizePath(out);
}

/**
 * The path a route sends upstream (without the target's base path): its rewrite, or strip_prefix,
 * applied to the normalised path; undefined when the rewrite's result is refused (400).
 */
export function upstreamPathOf(
  rt: { readonly shape: Shape; readonly stripLength: number },
  path: string,
): string | undefined {
  const rewrite = rt.shape.rewrite;
  if (rewrite !== undefined) return rewritePath(rewrite, path);
  const stripped = rt.stripLength > 0 ? path.slice(rt.stripLength) || '/' : path;
  return stripped.charCodeAt(0) === 47 ? stripped : `/${stripped}`;
}

/** Why a route's rewrite refused a path (the 400's detail; only computed on the refusal). */
export function rewriteRefusal(rt: { readonly shape: Shape }, path: string): string {
  const describe = rt.shape.rewrite?.describe ?? 'rewrite';
  return `the rewrite (${describe}) of ${path} would produce a dot segment or an encoded "/" (or an invalid escape): not forwarded`;
}
