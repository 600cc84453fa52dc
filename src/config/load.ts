/**
 * Reads sluice.yaml: YAML → `${ENV}` interpolation → schema validation → effective per-route config.
 * Every problem is reported at once, each as `file:line: key.path: message`, with a "did you mean"
 * hint for misspelt keys. Loading has no side effects: resources are opened later, by the gateway.
 */
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { dirname, resolve as resolvePath } from 'node:path';
import {
  type Document,
  isMap,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  parseDocument,
  visit,
} from 'yaml';
import type { z } from 'zod';
import { redisStoreProblem } from '../jobs/redis-job-store.ts';
import { ConfigError, type ConfigIssue } from './errors.ts';
import { type EffectiveConfig, isLoopback, parseListen, resolveConfig } from './resolve.ts';
import {
  ADDRESS_PATTERN,
  type ConfigFile,
  configJsonSchema,
  configSchema,
  TARGET_PATTERN,
} from './schema.ts';
import { RESERVED_VARIABLES } from './shape-config.ts';
import { DURATION_PATTERN, durationProblem, SIZE_PATTERN, sizeProblem } from './units.ts';

export { ConfigError, type ConfigIssue } from './errors.ts';

/** Keys SPEC names for features that are planned but not built yet: a clearer error than "unknown". */
const PLANNED: Record<string, string> = {};

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out;
}

function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === 'object') {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

/** Loads and validates a config file. Throws ConfigError (never anything else for bad input). */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): EffectiveConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'file not found' : code === 'EISDIR' ? 'is a directory' : `cannot read (${code})`;
    throw new ConfigError(file, [{ path: '', message: why }]);
  }
  return loadConfigText(text, file, env);
}

/** Validates config text; `file` is only used in messages. */
export function loadConfigText(
  text: string,
  file: string,
  env: NodeJS.ProcessEnv = process.env,
): EffectiveConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const lineOf = (node: Node | undefined | null) =>
    node?.range ? lines.linePos(node.range[0]).line : undefined;

  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => {
        const line = lines.linePos(e.pos[0]).line;
        if (e.code === 'DUPLICATE_KEY') {
          // Name the key (and where it was first set), not just "Map keys must be unique".
          const dup = duplicateKeyAt(doc, e.pos[0]);
          if (dup) {
            const first = lineOf(dup.first);
            return {
              path: dup.path,
              line,
              message: `duplicate key${first ? ` (first set on line ${first})` : ''}`,
            };
          }
        }
        return { path: '', line, message: `invalid YAML: ${e.message.split('\n')[0]}` };
      }),
    );
  }

  const issues: ConfigIssue[] = [];
  // ${VAR} and ${VAR:-default} in any scalar string, resolved in place so line numbers survive. The
  // reserved names of header values (${client_ip}, ${request_id}, ${host}, ${route}) are left for
  // the gateway to fill in per request (SPEC §13).
  visit(doc, {
    Scalar(_key, node, path) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return;
      node.value = node.value.replace(
        /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g,
        (m, v: string, def?: string) => {
          if (def === undefined && RESERVED_VARIABLES.includes(v)) return m;
          const value = env[v];
          if (value !== undefined && value !== '') return value;
          if (def !== undefined) return def;
          issues.push({
            path: pathOf(path, node),
            line: lineOf(node),
            message: `environment variable ${v} is not set`,
          });
          return '';
        },
      );
    },
  });
  const raw = doc.toJS() ?? {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(file, [
      { path: '', line: 1, message: 'expected a mapping of settings at the top level' },
    ]);
  }
  const root = doc.contents as Node;
  // An unset variable is reported and validation goes on (every problem at once).
  return validateConfig(raw, file, issues, {
    value: (path) => getIn(raw, path),
    line: (path) => lineOf(nodeAt(root, path)),
    keyLine: (path, key) => lineOf(keyNodeAt(root, path, key)),
  });
}

/**
 * Validates a config given as a plain object (what `sluice proxy` builds from its flags) exactly as
 * a file is validated. Throws ConfigError, whose issues name key paths (no lines).
 */
export function loadConfigObject(raw: Record<string, unknown>, file = 'command line'): EffectiveConfig {
  return validateConfig(raw, file, [], { value: (path) => getIn(raw, path) });
}

function validateConfig(
  raw: unknown,
  file: string,
  earlier: ConfigIssue[],
  ctx: IssueContext,
): EffectiveConfig {
  // A value an earlier issue (an unset variable) left empty is not reported a second time.
  const skip = earlier.map((i) => i.path);
  const fail = (found: ConfigIssue[]): never => {
    const all = [
      ...earlier,
      ...found.filter((i) => !skip.some((p) => i.path === p || i.path.startsWith(`${p}.`))),
    ];
    // In file order, like a compiler; issues without a line (missing top-level keys) first.
    throw new ConfigError(
      file,
      all.sort((a, b) => (a.line ?? 0) - (b.line ?? 0)),
    );
  };
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    // What start would refuse is reported beside the schema's issues, not after they are fixed.
    const found = describeIssues(result.error.issues, ctx);
    const paths = new Set(found.map((i) => i.path));
    fail([...found, ...startRefusals(raw, ctx).filter((i) => !paths.has(i.path))]);
  }
  let config: EffectiveConfig | undefined;
  try {
    config = resolveConfig(result.data as ConfigFile, (path) => ctx.line?.(path));
  } catch (err) {
    if (err instanceof ConfigError) fail(err.issues);
    throw err;
  }
  const files = fileIssues(config as EffectiveConfig, ctx);
  if (earlier.length > 0 || files.length > 0) fail(files);
  return Object.freeze({ ...(config as EffectiveConfig), raw: deepFreeze(structuredClone(raw)) });
}

/**
 * What start would fail on when it opens the files the config names: checked here, without creating
 * anything, so that `sluice check` refuses it too and both say which key (start would otherwise fail
 * with a raw `EEXIST … mkdir`).
 */
function fileIssues(config: EffectiveConfig, ctx: IssueContext): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  const dest = config.accessLog;
  if (dest !== 'stdout' && dest !== 'stderr' && dest !== 'off') {
    const why = writableFileProblem(dest);
    const where = typeof ctx.value(['access_log']) === 'object' ? ['access_log', 'path'] : ['access_log'];
    if (why) out.push({ path: where.join('.'), line: ctx.line?.(where), message: why });
  }
  // The job store is opened (its directory created) when a route uses async.
  const store = /^sqlite:([^?]*)/.exec(config.store)?.[1];
  if (store && store !== ':memory:' && !store.startsWith('file:') && config.routes.some((r) => r.async)) {
    const why = writableFileProblem(store);
    if (why) out.push({ path: 'store', line: ctx.line?.(['store']), message: why });
  }
  return out;
}

/**
 * The refusals of start that resolveConfig and fileIssues make, from the raw values (when the schema
 * refused something else): admin beyond loopback without a token, a malformed
 * Redis store URL, an access_log path.
 */
function startRefusals(raw: unknown, ctx: IssueContext): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  const str = (path: PropertyKey[]) => {
    const v = getIn(raw, path);
    return typeof v === 'string' ? v : undefined;
  };
  const listen = str(['admin', 'listen']);
  if (listen !== undefined && new RegExp(ADDRESS_PATTERN).test(listen) && !str(['admin', 'token'])) {
    if (!isLoopback(parseListen(listen).host))
      out.push({
        path: 'admin.listen',
        line: ctx.line?.(['admin', 'listen']),
        message: `${listen} is not loopback: set admin.token (e.g. token: "\${SLUICE_ADMIN_TOKEN}"), or listen on 127.0.0.1`,
      });
  }
  const store = str(['store']) ?? '';
  const redisProblem = /^rediss?:\/\//.test(store) ? redisStoreProblem(store) : undefined;
  if (redisProblem) out.push({ path: 'store', line: ctx.line?.(['store']), message: redisProblem });
  const logAt = str(['access_log']) !== undefined ? ['access_log'] : ['access_log', 'path'];
  const dest = str(logAt);
  if (dest !== undefined && dest !== 'stdout' && dest !== 'stderr' && dest !== 'off') {
    const why = writableFileProblem(dest);
    if (why) out.push({ path: logAt.join('.'), line: ctx.line?.(logAt), message: why });
  }
  return out;
}

/** Why a file could not be opened for appending (its directory created as needed), or undefined. */
export function writableFileProblem(file: string): string | undefined {
  const abs = resolvePath(file);
  const st = statSync(abs, { throwIfNoEntry: false });
  if (st?.isDirectory()) return `${file} is a directory: name a file in it`;
  if (st) {
    try {
      accessSync(abs, constants.W_OK);
    } catch {
      return `cannot write ${file}: permission denied`;
    }
    return undefined;
  }
  const dir = dirname(abs);
  for (let d = dir; ; d = dirname(d)) {
    const s = statSync(d, { throwIfNoEntry: false });
    if (s) {
      if (!s.isDirectory()) return `cannot create directory ${dir}: ${d} is a file`;
      try {
        accessSync(d, constants.W_OK | constants.X_OK);
      } catch {
        return d === dir
          ? `cannot create ${abs}: permission denied in ${d}`
          : `cannot create directory ${dir}: permission denied in ${d}`;
      }
      return undefined;
    }
    if (dirname(d) === d) return undefined;
  }
}

/** The value at a key path of a plain object (undefined when absent). */
export function getIn(obj: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = obj;
  for (const key of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[key];
  }
  return v;
}

function pathOf(path: readonly unknown[], node: Node): string {
  // `visit` gives ancestors; rebuild the key path from pairs and sequence indexes.
  const keys: (string | number)[] = [];
  for (let i = 0; i < path.length; i++) {
    const p = path[i];
    const next = path[i + 1] ?? node;
    if (isPair(p) && isScalar(p.key)) keys.push(String(p.key.value));
    else if (isSeq(p)) keys.push(p.items.indexOf(next as never));
  }
  return formatPath(keys);
}

/** The key path of the duplicate key at `offset`, and the key node that first set it. */
function duplicateKeyAt(doc: Document, offset: number): { path: string; first: Node } | undefined {
  let found: { path: string; first: Node } | undefined;
  visit(doc, {
    Pair(_key, pair, path) {
      if (found || !isScalar(pair.key) || pair.key.range?.[0] !== offset) return;
      const parent = path[path.length - 1];
      const key = pair.key.value;
      const first = isMap(parent)
        ? parent.items.find((p) => isScalar(p.key) && p.key.value === key)?.key
        : undefined;
      found = { path: pathOf([...path, pair], pair.key), first: first as Node };
      return visit.BREAK;
    },
  });
  return found;
}

function nodeAt(root: Node | null, path: readonly PropertyKey[]): Node | undefined {
  let node: Node | null | undefined = root;
  for (const key of path) {
    if (isMap(node)) {
      const pair: { key: unknown; value: unknown } | undefined = node.items.find(
        (p) => isScalar(p.key) && p.key.value === key,
      );
      node = pair ? ((pair.value as Node | null) ?? (pair.key as Node)) : undefined;
    } else if (isSeq(node) && typeof key === 'number') {
      node = node.items[key] as Node | undefined;
    } else return node ?? undefined;
  }
  return node ?? undefined;
}

function keyNodeAt(root: Node | null, path: readonly PropertyKey[], key: string): Node | undefined {
  const parent = nodeAt(root, path);
  if (!isMap(parent)) return parent;
  const pair = parent.items.find((p) => isScalar(p.key) && p.key.value === key);
  return (pair?.key as Node | undefined) ?? parent;
}

/** Where the values and lines of the config being validated are (a YAML file, or a command line). */
export interface IssueContext {
  value(path: readonly PropertyKey[]): unknown;
  line?(path: readonly PropertyKey[]): number | undefined;
  keyLine?(path: readonly PropertyKey[], key: string): number | undefined;
}

/** zod's issues as one clear message per problem (a value echoed with what to write instead). */
export function describeIssues(issues: readonly z.core.$ZodIssue[], ctx: IssueContext): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  const seen = new Set<string>();
  for (const issue of issues)
    for (const i of describeIssue(issue, ctx)) {
      // One problem per key: a value failing several checks is reported once.
      const key = `${i.path}\n${i.message}`;
      if (seen.has(key) || (i.path !== '' && seen.has(i.path))) continue;
      seen.add(key);
      seen.add(i.path);
      out.push(i);
    }
  return out;
}

function describeIssue(issue: z.core.$ZodIssue, ctx: IssueContext): ConfigIssue[] {
  if (issue.code === 'unrecognized_keys') {
    const known = knownKeys(issue.path);
    return issue.keys.map((key) => {
      const line = ctx.keyLine?.(issue.path, key);
      const planned =
        PLANNED[`${issue.path.length > 0 && typeof issue.path[0] === 'string' ? issue.path[0] : ''}.${key}`];
      if (planned) {
        return {
          path: formatPath([...issue.path, key]),
          line,
          message: `${planned} is not available in this version yet: remove "${key}" (see the README's status list)`,
        };
      }
      const hint = closest(key, known);
      return {
        path: formatPath([...issue.path, key]),
        line,
        message: `unknown key "${key}"${hint ? ` (did you mean "${hint}"?)` : known.length ? ` (known keys: ${known.join(', ')})` : ''}`,
      };
    });
  }
  let message = issue.message;
  let line = ctx.line?.(issue.path);
  const found = ctx.value(issue.path);
  const kind = kindAt(issue.path);
  if (found === undefined && (issue.code === 'invalid_type' || issue.code === 'invalid_union')) {
    const expected =
      unitHint(kind) ?? (issue.code === 'invalid_type' ? (TYPE_WORDS[issue.expected] ?? issue.expected) : '');
    message = expected ? `is required (expected ${expected})` : 'is required';
    // A missing key has no line of its own: point at the mapping that lacks it.
    line ??= ctx.line?.(issue.path.slice(0, -1));
  } else if (kind === 'duration' && found !== undefined) {
    message = durationProblem(found);
  } else if (kind === 'size' && found !== undefined) {
    message = sizeProblem(found);
  } else if (kind === 'target' && typeof found === 'string') {
    message = targetProblem(found);
  } else if (issue.code === 'invalid_union' && kind === 'address' && !Array.isArray(found)) {
    // `listen`: an address, or a list of listeners; say what a single address looks like.
    message = `expected host:port, e.g. 0.0.0.0:8080 or :8080 (or a list of listeners), got ${describe(found)}`;
    if (typeof found === 'number') message += ` (write ":${found}" for every interface)`;
  } else if (issue.code === 'invalid_type') {
    const expected = unitHint(kind) ?? TYPE_WORDS[issue.expected] ?? issue.expected;
    message = `expected ${expected}, got ${describe(found)}`;
    if (typeof found === 'number' && kind === 'address')
      message += ` (write ":${found}" for every interface)`;
  } else if (issue.code === 'invalid_value' && 'values' in issue && issue.message.startsWith('Invalid')) {
    message = `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
  }
  return [{ path: formatPath(issue.path), line, message }];
}

/** A target that is not an http(s) URL, with the URL it most likely meant. */
function targetProblem(value: string): string {
  const head = `\`${value}\` is not an http:// or https:// URL`;
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) {
    try {
      const url = new URL(`http://${value}`);
      if (url.hostname) return `${head}: did you mean http://${value}?`;
    } catch {}
  }
  return head;
}

type Kind = 'duration' | 'size' | 'address' | 'target';
const KIND_OF_PATTERN: Record<string, Kind> = {
  [DURATION_PATTERN]: 'duration',
  [SIZE_PATTERN]: 'size',
  [ADDRESS_PATTERN]: 'address',
  [TARGET_PATTERN]: 'target',
};

/** Whether the value at a config path is a duration, a size, a host:port or a target URL. */
function kindAt(path: readonly PropertyKey[]): Kind | undefined {
  const s = schemaAt(path);
  if (!s) return undefined;
  for (const branch of [s, ...(s.anyOf ?? [])]) {
    const kind = branch.pattern === undefined ? undefined : KIND_OF_PATTERN[branch.pattern];
    if (kind) return kind;
  }
  return undefined;
}

/** How zod's type names read to someone writing YAML. */
const TYPE_WORDS: Record<string, string> = {
  array: 'a list',
  object: 'a mapping',
  record: 'a mapping',
  string: 'a string',
  number: 'a number',
  boolean: 'true or false',
};

/** For duration and size fields, what a valid value looks like (they are strings with a unit in YAML). */
function unitHint(kind: Kind | undefined): string | undefined {
  if (kind === 'duration') return 'a duration such as 250ms, 5s, 2m or 1h';
  if (kind === 'size') return 'a size such as 512KB or 10MB';
  if (kind === 'address') return 'host:port, e.g. 0.0.0.0:8080 or :8080';
  if (kind === 'target') return 'an http:// or https:// URL';
  return undefined;
}

function describe(v: unknown): string {
  if (v === null) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

type JsonSchema = {
  pattern?: string;
  anyOf?: JsonSchema[];
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  additionalProperties?: JsonSchema | boolean;
};
let schemaCache: JsonSchema | undefined;

/** The JSON Schema of the value at a config path (from the generated JSON Schema). */
function schemaAt(path: readonly PropertyKey[]): JsonSchema | undefined {
  schemaCache ??= configJsonSchema() as JsonSchema;
  let s: JsonSchema | undefined = schemaCache;
  for (const key of path) {
    if (!s) return undefined;
    if (typeof key === 'number') s = s.items ?? s.anyOf?.find((b) => b.items)?.items;
    else {
      const k = String(key);
      const branch: JsonSchema = s.anyOf?.find((b) => b.properties?.[k]) ?? s;
      s =
        branch.properties?.[k] ??
        (typeof branch.additionalProperties === 'object' ? branch.additionalProperties : undefined);
    }
  }
  return s;
}

/** Keys allowed at a config path. */
function knownKeys(path: readonly PropertyKey[]): string[] {
  return Object.keys(schemaAt(path)?.properties ?? {});
}

/** The known key nearest to `word` by edit distance, if it is close enough to be a typo. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDist = Math.max(2, Math.floor(word.length / 3)) + 1;
  for (const c of candidates) {
    // A shared stem (`retries` → `retry`, `timeout` → `timeouts`) is as good a hint as a typo.
    const w = word.toLowerCase();
    const k = c.toLowerCase();
    if (k.length >= 4 && (w.startsWith(k.slice(0, -1)) || k.startsWith(w))) return c;
    const d = editDistance(w, k);
    if (d < bestDist) {
      best = c;
      bestDist = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length];
}
