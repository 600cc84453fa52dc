/**
 * Header rewriting for both directions (SPEC §3): hop-by-hop headers and every header named by
 * `Connection` are dropped; X-Forwarded-* are set from what the gateway saw (a trusted proxy's values
 * are kept and extended); `Via` and `X-Request-Id` are added. Works on flat raw header arrays so the
 * original case and order reach the other side and nothing is parsed twice.
 */

import { headerName, headerText } from './header-text.ts';

/** Never forwarded in either direction (RFC 9110 §7.6.1, plus legacy ones). */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'proxy-authenticate',
  'proxy-authorization',
]);

/** Request headers the gateway sets itself (any client value is replaced). */
const REQUEST_OWN = new Set(['x-request-id', 'x-timeout-ms', 'expect', 'via']);
const FORWARDED = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host']);

export const VIA = '1.1 sluice';

/** Header names listed in a Connection header value, other than the standard options. */
export function connectionNamed(value: string | undefined): Set<string> | undefined {
  if (!value) return undefined;
  // Nearly every message says just one of these: no need to split.
  const v = value.length <= 10 ? value.toLowerCase() : '';
  if (v === 'keep-alive' || v === 'close') return undefined;
  let out: Set<string> | undefined;
  for (const token of value.split(',')) {
    const t = token.trim().toLowerCase();
    if (t === '' || t === 'close' || t === 'keep-alive') continue;
    (out ??= new Set()).add(t);
  }
  return out;
}

export interface RequestHeaderResult {
  headers: string[];
  hostCount: number;
  incomingVia: string | undefined;
  incomingXff: string | undefined;
  incomingProto: string | undefined;
  incomingFwdHost: string | undefined;
}

/**
 * Copies a request's raw headers minus hop-by-hop, Connection-named and gateway-owned ones. The
 * X-Forwarded-* values the client sent are returned apart (the caller decides whether to trust them).
 */
export function filterRequestHeaders(
  raw: readonly string[],
  connection: string | undefined,
): RequestHeaderResult {
  const named = connectionNamed(connection);
  const headers: string[] = [];
  let hostCount = 0;
  let incomingVia: string | undefined;
  let incomingXff: string | undefined;
  let incomingProto: string | undefined;
  let incomingFwdHost: string | undefined;
  let authority: string | undefined;
  let host: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    // HTTP/2 pseudo-headers (`:method`, `:path`, `:scheme`, `:authority`) are never forwarded; the
    // authority becomes the HTTP/1.1 Host the upstream gets (RFC 9113 §8.3.1).
    if (name.charCodeAt(0) === 58) {
      if (name === ':authority') authority = raw[i + 1];
      continue;
    }
    const lower = name.toLowerCase();
    if (lower === 'host') {
      hostCount++;
      host = raw[i + 1];
      headers.push(name, raw[i + 1]);
      continue;
    }
    if (HOP_BY_HOP.has(lower) || REQUEST_OWN.has(lower)) {
      if (lower === 'via') incomingVia = incomingVia ? `${incomingVia}, ${raw[i + 1]}` : raw[i + 1];
      continue;
    }
    if (FORWARDED.has(lower)) {
      const v = raw[i + 1];
      if (lower === 'x-forwarded-for') incomingXff = incomingXff ? `${incomingXff}, ${v}` : v;
      else if (lower === 'x-forwarded-proto') incomingProto ??= v;
      else incomingFwdHost ??= v;
      continue;
    }
    if (named?.has(lower)) continue;
    headers.push(name, raw[i + 1]);
  }
  if (authority !== undefined) {
    if (hostCount === 0) {
      headers.push('host', authority);
      hostCount = 1;
    } else if (hostCount === 1 && host?.toLowerCase() !== authority.toLowerCase()) hostCount = 2; // ambiguous: 400
  }
  return { headers, hostCount, incomingVia, incomingXff, incomingProto, incomingFwdHost };
}

const RESPONSE_DROP = new Set([...HOP_BY_HOP, 'via']);
/** Reused by filterResponseHeaders (synchronous, so never shared between two calls). */
const NAME = { text: '', lower: '' };

/**
 * Converts undici's raw response headers (Buffers or strings) to a flat string array for
 * `res.writeHead`, minus hop-by-hop and Connection-named headers. Returns the upstream's
 * Server-Timing value(s) and Via apart.
 */
export function filterResponseHeaders(raw: readonly (Buffer | string)[]): {
  headers: string[];
  serverTiming: string | undefined;
  via: string | undefined;
  /**
   * Why the framing is refused, else undefined: Content-Length with Transfer-Encoding (ambiguous, RFC
   * 9112 §6.3), or a Transfer-Encoding other than one `chunked` (chunked twice, a coding the gateway
   * would strip with the header and so hand on undecoded, one it cannot frame by), as nginx refuses.
   */
  malformed: string | undefined;
  /** Neither Content-Length nor Transfer-Encoding: the body (if the status has one) runs to the close. */
  toClose: boolean;
} {
  const headers: string[] = [];
  let hasLength = false;
  let encoding: string | undefined;
  let connection: string | undefined;
  let serverTiming: string | undefined;
  let via: string | undefined;
  const n = NAME;
  for (let i = 0; i < raw.length; i += 2) {
    headerName(raw[i], n);
    const name = n.text;
    const lower = n.lower;
    const value = headerText(raw[i + 1]);
    if (lower === 'content-length') hasLength = true;
    if (RESPONSE_DROP.has(lower)) {
      if (lower === 'transfer-encoding') encoding = encoding === undefined ? value : `${encoding}, ${value}`;
      if (lower === 'connection') connection = connection ? `${connection}, ${value}` : value;
      else if (lower === 'via') via = via ? `${via}, ${value}` : value;
      continue;
    }
    if (lower === 'server-timing') serverTiming = serverTiming ? `${serverTiming}, ${value}` : value;
    headers.push(name, value);
  }
  const malformed =
    encoding === undefined
      ? undefined
      : hasLength
        ? 'Content-Length with Transfer-Encoding'
        : // A tab after it makes llhttp read no chunked at all (the body runs to the close): refused.
          /^[ \t]*chunked *$/i.test(encoding)
          ? undefined
          : `Transfer-Encoding "${encoding}" is not one chunked coding`;
  const toClose = !hasLength && encoding === undefined;
  const named = connectionNamed(connection);
  if (named) {
    const kept: string[] = [];
    for (let i = 0; i < headers.length; i += 2) {
      if (!named.has(headers[i].toLowerCase())) kept.push(headers[i], headers[i + 1]);
    }
    return { headers: kept, serverTiming, via, malformed, toClose };
  }
  return { headers, serverTiming, via, malformed, toClose };
}

/**
 * The flat response header list as the object HTTP/2's compatibility `writeHead` takes best: names
 * lower-cased, a repeated name's values in one array (sent as one field each, as `appendHeader`
 * would). Given the flat list, node:http2's writeHead appends header by header, validating each one
 * twice and probing its header object per name: callgrind counted ~4,000 instructions per header
 * that way against ~700 through the object.
 */
export function h2HeaderObject(flat: readonly string[]): Record<string, string | string[]> {
  // No prototype: an upstream header named __proto__ is a header like any other.
  const out: Record<string, string | string[]> = Object.create(null);
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i].toLowerCase();
    const value = flat[i + 1];
    const had = out[name];
    if (had === undefined) out[name] = value;
    else if (typeof had === 'string') out[name] = [had, value];
    else had.push(value);
  }
  return out;
}
