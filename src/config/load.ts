/**
 * Reads sluice.yaml: YAML → `${ENV}` interpolation → schema validation → effective per-route config.
 * Every problem is reported at once, each as `file:line: key.path: message`, with a "did you mean"
 * hint for misspelt keys. Loading has no side effects: resources are opened later, by the gateway.
 */
import { readFileSync } from 'node:fs';
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
import { ConfigError, type ConfigIssue } from './errors.ts';
import { type EffectiveConfig, resolveConfig } from './resolve.ts';
import { ADDRESS_PATTERN, configJsonSchema, configSchema } from './schema.ts';
import { DURATION_PATTERN, SIZE_PATTERN } from './units.ts';

export { ConfigError, type ConfigIssue } from './errors.ts';

/** Keys SPEC names for features that are planned but not built yet: a clearer error than "unknown". */
const PLANNED: Record<string, string> = {
  'routes.cache': 'the response cache (stale_if_error, coalescing)',
  'upstreams.cache': 'the response cache (stale_if_error, coalescing)',
  'routes.compression': 'response compression',
};

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out;
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
  // ${VAR} and ${VAR:-default} in any scalar string, resolved in place so line numbers survive.
  visit(doc, {
    Scalar(_key, node, path) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return;
      node.value = node.value.replace(
        /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g,
        (_m, v: string, def?: string) => {
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
  if (issues.length > 0) throw new ConfigError(file, issues);

  const raw = doc.toJS() ?? {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(file, [
      { path: '', line: 1, message: 'expected a mapping of settings at the top level' },
    ]);
  }
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const found = result.error.issues.flatMap((issue) => describeIssue(issue, doc.contents as Node, lineOf));
    // In file order, like a compiler; issues without a line (missing top-level keys) first.
    throw new ConfigError(
      file,
      found.sort((a, b) => (a.line ?? 0) - (b.line ?? 0)),
    );
  }
  try {
    return resolveConfig(result.data, (path) => lineOf(nodeAt(doc.contents as Node, path)));
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(file, err.issues);
    throw err;
  }
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

function describeIssue(
  issue: z.core.$ZodIssue,
  root: Node,
  lineOf: (n: Node | undefined | null) => number | undefined,
): ConfigIssue[] {
  if (issue.code === 'unrecognized_keys') {
    const known = knownKeys(issue.path);
    return issue.keys.map((key) => {
      const planned =
        PLANNED[`${issue.path.length > 0 && typeof issue.path[0] === 'string' ? issue.path[0] : ''}.${key}`];
      if (planned) {
        return {
          path: formatPath([...issue.path, key]),
          line: lineOf(keyNodeAt(root, issue.path, key)),
          message: `${planned} is not available in this version yet: remove "${key}" (see the README's status list)`,
        };
      }
      const hint = closest(key, known);
      return {
        path: formatPath([...issue.path, key]),
        line: lineOf(keyNodeAt(root, issue.path, key)),
        message: `unknown key "${key}"${hint ? ` (did you mean "${hint}"?)` : known.length ? ` (known keys: ${known.join(', ')})` : ''}`,
      };
    });
  }
  let message = issue.message;
  let line = lineOf(nodeAt(root, issue.path));
  if (issue.code === 'invalid_type') {
    const found = valueAt(root, issue.path);
    const expected = unitHint(issue.path) ?? TYPE_WORDS[issue.expected] ?? issue.expected;
    if (found === undefined) {
      message = `is required (expected ${expected})`;
      // A missing key has no line of its own: point at the mapping that lacks it.
      line ??= lineOf(nodeAt(root, issue.path.slice(0, -1)));
    } else {
      message = `expected ${expected}, got ${describe(found)}`;
      if (typeof found === 'number') message += numberHint(issue.path, found);
    }
  } else if (issue.code === 'invalid_value' && 'values' in issue && issue.message.startsWith('Invalid')) {
    message = `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
  }
  return [{ path: formatPath(issue.path), line, message }];
}

/** A bare number where a string with a unit (or a host:port) was expected: say what to write. */
function numberHint(path: readonly PropertyKey[], n: number): string {
  const pattern = schemaAt(path)?.pattern;
  if (pattern === ADDRESS_PATTERN) return ` (write ":${n}" for every interface)`;
  if (pattern === DURATION_PATTERN) return n === 0 ? ' (write 0s to disable)' : ' (a unit is required)';
  if (pattern === SIZE_PATTERN) return n === 0 ? '' : ' (a unit is required)';
  return '';
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
function unitHint(path: readonly PropertyKey[]): string | undefined {
  const pattern = schemaAt(path)?.pattern;
  if (pattern === DURATION_PATTERN) return 'a duration such as 250ms, 5s, 2m or 1h';
  if (pattern === SIZE_PATTERN) return 'a size such as 512KB or 10MB';
  if (pattern === ADDRESS_PATTERN) return 'host:port, e.g. 0.0.0.0:8080 or :8080';
  return undefined;
}

function valueAt(root: Node, path: readonly PropertyKey[]): unknown {
  const node = nodeAt(root, path);
  if (!node || nodeAt(root, path.slice(0, -1)) === node) return undefined;
  return isScalar(node) ? node.value : isSeq(node) ? [] : isMap(node) ? {} : undefined;
}

function describe(v: unknown): string {
  if (v === null) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

type JsonSchema = {
  pattern?: string;
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
    if (typeof key === 'number') s = s.items;
    else
      s =
        s.properties?.[String(key)] ??
        (typeof s.additionalProperties === 'object' ? s.additionalProperties : undefined);
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
