/**
 * The shaping settings of SPEC §13 (headers, host, rewrite) as resolved at load: checked (refused
 * header names, invalid patterns, each with its key path and line) and merged over the layers
 * route > upstream > defaults, per header name. proxy/shape.ts compiles the result for the hot path.
 */
import type { ConfigIssue } from './errors.ts';

/** The reserved `${…}` names, resolved per request; any other name is the environment (at load). */
export const RESERVED_VARIABLES: readonly string[] = ['client_ip', 'request_id', 'host', 'route'];

/** Headers that no edit may touch: hop-by-hop and framing ones (Host has its own option). */
export const UNSHAPEABLE: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'te',
  'trailer',
  'upgrade',
  'proxy-connection',
  'host',
]);

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Why a header name cannot be edited, or undefined. */
export function headerNameProblem(name: string): string | undefined {
  const lower = name.toLowerCase();
  if (!TOKEN.test(name)) return `"${name}" is not a valid header name`;
  if (lower === 'host') return 'Host cannot be edited in headers: use `host: keep | upstream | NAME`';
  if (UNSHAPEABLE.has(lower))
    return `${lower} is a hop-by-hop or framing header: Sluice sets it per connection, it cannot be edited`;
  return undefined;
}

/** One direction's edits as written (after schema validation). */
export interface EditsInput {
  set?: Record<string, string>;
  add?: Record<string, string | string[]>;
  remove?: string[];
}
export interface HeadersInput {
  request?: EditsInput;
  response?: EditsInput;
}
export type RewriteInput = { prefix: string } | { regex: string; to: string };

/** One direction's edits after the merge: names as written, values with `${reserved}` left in. */
export interface ResolvedEdits {
  readonly set: readonly (readonly [string, string])[];
  readonly add: readonly (readonly [string, string])[];
  readonly remove: readonly string[];
}

export type EffectiveHost = 'keep' | 'upstream' | { readonly name: string };

export type EffectiveRewrite =
  | { readonly prefix: string }
  | { readonly regex: string; readonly to: string; readonly flags: string };

/** What a route does besides forwarding (SPEC §13), resolved. */
export interface EffectiveShape {
  readonly request: ResolvedEdits | undefined;
  readonly response: ResolvedEdits | undefined;
  readonly host: EffectiveHost;
  readonly rewrite: EffectiveRewrite | undefined;
}

/** A layer of the config that can hold headers/host, with where it is (for messages). */
export interface ShapeLayer {
  readonly path: readonly PropertyKey[];
  readonly headers: HeadersInput | undefined;
  readonly host: string | undefined;
}

type LineOf = (path: PropertyKey[]) => number | undefined;

function fmt(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

/** Checks one layer's header names (refused ones are reported with their key and line). */
export function checkHeaders(layer: ShapeLayer, issues: ConfigIssue[], lineOf: LineOf): void {
  for (const dir of ['request', 'response'] as const) {
    const e = layer.headers?.[dir];
    if (e === undefined) continue;
    for (const op of ['set', 'add'] as const) {
      for (const name of Object.keys(e[op] ?? {})) {
        const why = headerNameProblem(name);
        const where = [...layer.path, 'headers', dir, op, name];
        if (why) issues.push({ path: fmt(where), line: lineOf(where), message: why });
      }
    }
    (e.remove ?? []).forEach((name, i) => {
      const why = headerNameProblem(name);
      const where = [...layer.path, 'headers', dir, 'remove', i];
      if (why) issues.push({ path: fmt(where), line: lineOf(where), message: why });
    });
  }
}

/**
 * Merges one direction over the layers, least specific first: a layer that names a header (in set,
 * add or remove) replaces everything the layers before it said about that header.
 */
function mergeEdits(layers: readonly (EditsInput | undefined)[]): ResolvedEdits | undefined {
  const byName = new Map<string, { set: [string, string][]; add: [string, string][]; remove: boolean }>();
  for (const e of layers) {
    if (e === undefined) continue;
    const touched = new Set<string>();
    const entry = (name: string) => {
      const k = name.toLowerCase();
      if (!touched.has(k)) {
        touched.add(k);
        byName.set(k, { set: [], add: [], remove: false });
      }
      return byName.get(k) as { set: [string, string][]; add: [string, string][]; remove: boolean };
    };
    for (const [name, value] of Object.entries(e.set ?? {})) entry(name).set.push([name, value]);
    for (const [name, value] of Object.entries(e.add ?? {}))
      for (const v of Array.isArray(value) ? value : [value]) entry(name).add.push([name, v]);
    for (const name of e.remove ?? []) entry(name).remove = true;
  }
  if (byName.size === 0) return undefined;
  const set: [string, string][] = [];
  const add: [string, string][] = [];
  const remove: string[] = [];
  for (const [k, v] of byName) {
    // Within the winning layer, remove applies after set and add.
    if (v.remove) {
      remove.push(k);
      continue;
    }
    set.push(...v.set);
    add.push(...v.add);
  }
  return Object.freeze({
    set: Object.freeze(set.map((p) => Object.freeze(p))),
    add: Object.freeze(add.map((p) => Object.freeze(p))),
    remove: Object.freeze(remove),
  });
}

const HOST_NAME = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(:\d{1,5})?$/;

/** The Host mode of the most specific layer that sets one (default keep). */
function hostOf(layers: readonly ShapeLayer[], issues: ConfigIssue[], lineOf: LineOf): EffectiveHost {
  let host: EffectiveHost = 'keep';
  for (const l of layers) {
    if (l.host === undefined) continue;
    if (l.host === 'keep' || l.host === 'upstream') host = l.host;
    else if (HOST_NAME.test(l.host)) host = Object.freeze({ name: l.host });
    else {
      const where = [...l.path, 'host'];
      issues.push({
        path: fmt(where),
        line: lineOf(where),
        message: `expected keep, upstream or a host name (e.g. api.internal or api.internal:8443), got "${l.host}"`,
      });
    }
  }
  return host;
}

/** Checks a route's rewrite (a pattern that does not compile, a `$N` beyond its groups, …). */
function rewriteOf(
  rewrite: RewriteInput | undefined,
  stripPrefix: boolean,
  at: readonly PropertyKey[],
  issues: ConfigIssue[],
  lineOf: LineOf,
): EffectiveRewrite | undefined {
  if (rewrite === undefined) return undefined;
  const where = [...at, 'rewrite'];
  if (stripPrefix) {
    issues.push({
      path: fmt(where),
      line: lineOf(where),
      message:
        'rewrite and strip_prefix both change the path: use only rewrite (`rewrite: { prefix: / }` is strip_prefix)',
    });
    return undefined;
  }
  if ('prefix' in rewrite) return Object.freeze({ prefix: rewrite.prefix.replace(/(.)\/+$/, '$1') });
  let re: RegExp;
  try {
    re = new RegExp(rewrite.regex);
  } catch (err) {
    const w = [...where, 'regex'];
    issues.push({
      path: fmt(w),
      line: lineOf(w),
      message: `invalid regular expression: ${(err as Error).message.replace(/^Invalid regular expression: /, '')}`,
    });
    return undefined;
  }
  const groups = groupCount(re);
  const used = highestGroup(compileReplacement(rewrite.to));
  if (used > groups) {
    const w = [...where, 'to'];
    issues.push({
      path: fmt(w),
      line: lineOf(w),
      message: `uses $${used} but the regex has ${groups} capturing group(s)`,
    });
  }
  return Object.freeze({ regex: rewrite.regex, to: rewrite.to, flags: '' });
}

/**
 * A route's shape from its layers (defaults, its upstream, itself: least specific first), or
 * undefined when it has none (the hot path then does nothing at all).
 */
export function resolveShape(
  layers: readonly ShapeLayer[],
  route: { rewrite: RewriteInput | undefined; stripPrefix: boolean; path: readonly PropertyKey[] },
  issues: ConfigIssue[],
  lineOf: LineOf,
): EffectiveShape | undefined {
  const request = mergeEdits(layers.map((l) => l.headers?.request));
  const response = mergeEdits(layers.map((l) => l.headers?.response));
  const host = hostOf(layers, issues, lineOf);
  const rewrite = rewriteOf(route.rewrite, route.stripPrefix, route.path, issues, lineOf);
  if (request === undefined && response === undefined && host === 'keep' && rewrite === undefined)
    return undefined;
  return Object.freeze({ request, response, host, rewrite });
}

// ---- rewrite replacement ---------------------------------------------------------------------------

/** Splits a replacement such as `/api/$1/${2}` into literals and group numbers; `$$` is a `$`. */
export function compileReplacement(to: string): (string | number)[] {
  const parts: (string | number)[] = [];
  let lit = '';
  for (let i = 0; i < to.length; i++) {
    const c = to[i];
    if (c !== '$') {
      lit += c;
      continue;
    }
    if (to[i + 1] === '$') {
      lit += '$';
      i++;
      continue;
    }
    const m = /^\$(?:(\d+)|\{(\d+)\})/.exec(to.slice(i));
    if (m === null) {
      lit += c;
      continue;
    }
    if (lit) parts.push(lit);
    lit = '';
    parts.push(Number(m[1] ?? m[2]));
    i += m[0].length - 1;
  }
  if (lit) parts.push(lit);
  return parts;
}

/** The highest group number a replacement uses. */
export function highestGroup(parts: readonly (string | number)[]): number {
  let n = 0;
  for (const p of parts) if (typeof p === 'number' && p > n) n = p;
  return n;
}

/** Number of capturing groups of a pattern. */
export function groupCount(re: RegExp): number {
  return (new RegExp(`${re.source}|`).exec('') as RegExpExecArray).length - 1;
}
