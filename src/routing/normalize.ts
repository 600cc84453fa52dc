/**
 * Request-target normalisation (SPEC §3): routes match, and the upstream receives, the normalised path:
 * percent-encoded unreserved characters decoded, hex digits of other escapes upper-cased, repeated
 * slashes merged, dot segments removed (RFC 3986 §5.2.4). `/api/../admin`, `/api/%2e%2e/admin` and
 * `//admin` therefore can never escape a route's prefix. Encoded slashes (`%2F`) stay encoded: they are
 * data, not separators.
 */

const UNRESERVED = /[A-Za-z0-9\-._~]/;

/** Returns the normalised path, or undefined when it is not a valid origin-form path. */
export function normalizePath(path: string): string | undefined {
  if (path.charCodeAt(0) !== 47 /* / */) return undefined;
  // Fast path: most paths need no work at all.
  if (!path.includes('%') && !path.includes('/.') && !path.includes('//')) return path;

  let decoded = path;
  if (path.includes('%')) {
    let out = '';
    for (let i = 0; i < path.length; i++) {
      const c = path[i];
      if (c !== '%') {
        out += c;
        continue;
      }
      const hex = path.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return undefined;
      const ch = String.fromCharCode(Number.parseInt(hex, 16));
      out += UNRESERVED.test(ch) ? ch : `%${hex.toUpperCase()}`;
      i += 2;
    }
    decoded = out;
  }
  return removeDotSegments(decoded.replace(/\/{2,}/g, '/'));
}

/** RFC 3986 §5.2.4 on an absolute path; `..` above the root stays at the root. */
export function removeDotSegments(path: string): string {
  if (!path.includes('/.')) return path;
  const segments = path.split('/');
  const out: string[] = [];
  for (let i = 1; i < segments.length; i++) {
    const s = segments[i];
    if (s === '.') {
      if (i === segments.length - 1) out.push('');
    } else if (s === '..') {
      out.pop();
      if (i === segments.length - 1) out.push('');
    } else out.push(s);
  }
  return `/${out.join('/')}`;
}

export interface RequestTarget {
  path: string;
  /** The query including its leading `?`, or ''. */
  query: string;
  /** For absolute-form targets (`GET http://host/x`), the authority given there. */
  authority: string | undefined;
}

/** Splits a request target; undefined when it is malformed. Query strings are passed on untouched. */
export function parseTarget(url: string): RequestTarget | undefined {
  let authority: string | undefined;
  let rest = url;
  if (url.charCodeAt(0) !== 47) {
    const m = /^https?:\/\/([^/?#]*)(.*)$/i.exec(url);
    if (!m) return undefined;
    authority = m[1].toLowerCase();
    rest = m[2] || '/';
    if (rest[0] === '?') rest = `/${rest}`;
  }
  // A fragment never belongs to a request (RFC 9112 §3.2); one sent anyway ends the target, query
  // included, so it reaches neither the route match nor the upstream.
  const hash = rest.indexOf('#');
  if (hash !== -1) rest = rest.slice(0, hash) || '/';
  const q = rest.indexOf('?');
  const rawPath = q === -1 ? rest : rest.slice(0, q);
  const path = normalizePath(rawPath);
  if (path === undefined) return undefined;
  return { path, query: q === -1 ? '' : rest.slice(q), authority };
}
