import { readFileSync, writeFileSync } from 'node:fs';
import { ADDRESS_PATTERN, configJsonSchema } from '../src/config/schema.ts';
import { DURATION_PATTERN, SIZE_PATTERN } from '../src/config/units.ts';

interface Schema {
  type?: string | string[];
  description?: string;
  default?: unknown;
  pattern?: string;
  format?: string;
  enum?: unknown[];
  anyOf?: Schema[];
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: Schema | boolean;
  propertyNames?: Schema;
  items?: Schema;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  minItems?: number;
  minLength?: number;
}

const OUT = new URL('../docs/config.md', import.meta.url);
const EXAMPLE = new URL('../examples/sluice.yaml', import.meta.url);
const NAME_PATTERN = '^[A-Za-z0-9_.-]{1,64}$';
const PERCENT_PATTERN = '^\\d+(\\.\\d+)?%$';

/** Short introductions of top-level sections whose schema has no description of its own. */
const INTROS: Record<string, string> = {
  admin:
    'The admin listener: `/healthz`, `/readyz`, `/metrics` and the admin API. A bearer token is required ' +
    'for everything but `/healthz` whenever `token` is set, and Sluice refuses to start with an admin ' +
    'listener beyond loopback without one.',
  client:
    'Protection against slow or oversized clients. These apply to the connection, before any route is ' +
    'known, so they exist only at this level.',
  defaults:
    'Settings every route inherits unless its upstream or the route itself says otherwise ' +
    '(precedence: route > upstream > defaults > built-in).',
  jobs: 'The job resource of asynchronous routes (`routes[].async`).',
  alerts: 'Alert rules evaluated every second per route over a sliding window, and where notifications go.',
  upstreams:
    'Named groups of targets. Routes refer to them by name. `timeouts` and `max_body` set here apply to ' +
    'every route of the upstream unless the route sets its own.',
  routes:
    'Routes match in order; the first match wins. The path is forwarded as received (normalised), prefix ' +
    'included, unless `strip_prefix: true`. At least one route is required.',
};

// ---- rendering helpers -------------------------------------------------------------------------

/** Escapes text for a Markdown table cell. */
function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** GitHub's heading anchor for `text`. */
function anchor(text: string): string {
  return text
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');
}

function isObject(s: Schema): boolean {
  return s.type === 'object' && s.properties !== undefined;
}

function isMap(s: Schema): boolean {
  return s.type === 'object' && s.properties === undefined && typeof s.additionalProperties === 'object';
}

/** The "Default X." sentence of a description, moved to the default column. */
function splitDefault(description: string): { text: string; def: string | undefined } {
  const m = /(?:^|\s)Default ([^\s]+?)\.(?=\s|$)/.exec(description);
  if (!m) return { text: description, def: undefined };
  return {
    text: (description.slice(0, m.index) + description.slice(m.index + m[0].length)).trim(),
    def: m[1],
  };
}

function code(v: unknown): string {
  return `\`${typeof v === 'string' ? v : JSON.stringify(v)}\``;
}

function typeOf(s: Schema, link?: string): string {
  // A duration field also takes the bare number 0 (= 0s): it is still "a duration".
  if (s.anyOf?.some((a) => a.pattern === DURATION_PATTERN)) return 'duration';
  if (s.anyOf) return s.anyOf.map((a) => typeOf(a, link)).join(' or ');
  if (s.enum) return s.enum.map(code).join(' | ');
  switch (s.pattern) {
    case DURATION_PATTERN:
      return 'duration';
    case SIZE_PATTERN:
      return 'size';
    case ADDRESS_PATTERN:
      return 'host:port';
    case PERCENT_PATTERN:
      return 'percentage';
    case NAME_PATTERN:
      return 'name';
    case '^https?:\\/\\/':
    case '^https?://':
      return 'URL';
  }
  if (s.format === 'uri' || s.format === 'url') return 'URL';
  if (s.format === 'starts_with' && s.pattern === '^\\/.*') return 'path';
  if (s.type === 'integer' || s.type === 'number') {
    const min = s.exclusiveMinimum !== undefined ? s.exclusiveMinimum + 1 : s.minimum;
    const max = s.maximum !== undefined && s.maximum < 1e9 ? s.maximum : undefined;
    const word = s.type === 'integer' ? 'integer' : 'number';
    if (min !== undefined && max !== undefined) return `${word} ${min}–${max}`;
    if (min !== undefined) return `${word} ≥ ${min}`;
    return word;
  }
  if (s.type === 'array' && s.items) {
    if (isObject(s.items)) return link ? `list of [objects](#${link})` : 'list of objects';
    return `list of ${typeOf(s.items, link)}`;
  }
  if (isMap(s)) {
    const value = s.additionalProperties as Schema;
    const key = s.propertyNames?.pattern === NAME_PATTERN ? 'name' : 'string';
    return isObject(value) && link ? `map: ${key} → [object](#${link})` : `map: ${key} → ${typeOf(value)}`;
  }
  if (isObject(s)) return link ? `[object](#${link})` : 'object';
  return typeof s.type === 'string' ? s.type : 'any';
}

function defaultOf(s: Schema, required: boolean, inherits: boolean): { def: string; text: string } {
  const { text, def } = splitDefault(s.description ?? '');
  if (required) return { def: 'required', text };
  if (inherits) return { def: 'inherited', text };
  if (def !== undefined) return { def: code(def), text };
  if (s.default !== undefined && !(isObject(s) && JSON.stringify(s.default) === '{}'))
    return { def: code(s.default), text };
  return { def: '—', text };
}

// ---- walking the schema ------------------------------------------------------------------------

interface Table {
  path: string;
  description: string | undefined;
  /** When the same object shape was already documented: the path documenting it. */
  sameAs: string | undefined;
  rows: string[];
}

/** Objects already documented, by shape, so that repeated shapes (timeouts) are described once. */
const shapes = new Map<string, string>();

function shapeKey(s: Schema): string {
  const strip = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(strip);
    if (x && typeof x === 'object') {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(x)) if (k !== 'description' && k !== 'default') out[k] = strip(v);
      return out;
    }
    return x;
  };
  return JSON.stringify(strip(s.properties));
}

/**
 * Documents the object `s` at `path`, then every object below it. `inherits`: its fields fall back to
 * an outer level when unset (upstream and route timeouts / max_body).
 */
function walk(s: Schema, path: string, tables: Table[], inherits = false): void {
  const key = shapeKey(s);
  const seen = shapes.get(key);
  if (seen !== undefined) {
    tables.push({ path, description: s.description, sameAs: seen, rows: [] });
    return;
  }
  shapes.set(key, path);
  const table: Table = { path, description: s.description, sameAs: undefined, rows: [] };
  tables.push(table);
  const nested: [Schema, string, boolean][] = [];
  const required = new Set(s.required ?? []);
  for (const [name, field] of Object.entries(s.properties ?? {})) {
    const p = `${path}.${name}`;
    // At upstream and route level, these fall back to the level above (route > upstream > defaults).
    const inheritsHere =
      inherits ||
      ((path === 'upstreams.<name>' || path === 'routes[]') && (name === 'max_body' || name === 'timeouts'));
    let child: [Schema, string] | undefined;
    if (isObject(field)) child = [field, p];
    else if (field.type === 'array' && field.items && isObject(field.items)) child = [field.items, `${p}[]`];
    else if (field.type === 'array' && field.items?.anyOf?.some(isObject))
      child = [field.items.anyOf.find(isObject) as Schema, `${p}[]`];
    else if (isMap(field) && isObject(field.additionalProperties as Schema))
      child = [field.additionalProperties as Schema, `${p}.<name>`];
    const link = child ? anchor(child[1]) : undefined;
    const { def, text } = defaultOf(field, required.has(name), inheritsHere && !isObject(field));
    let description = text;
    if (child && !description)
      description = inheritsHere
        ? `Per-phase timeouts; unset phases are inherited. See [\`${child[1]}\`](#${link}).`
        : `See [\`${child[1]}\`](#${link}).`;
    table.rows.push(`| \`${p}\` | ${cell(typeOf(field, link))} | ${cell(def)} | ${cell(description)} |`);
    if (child) nested.push([child[0], child[1], inheritsHere]);
  }
  for (const [child, p, inh] of nested) walk(child, p, tables, inh);
}

function renderTables(tables: Table[], section: string): string {
  const out: string[] = [];
  for (const t of tables) {
    // The section's own table needs no heading of its own.
    if (t.path !== section) out.push(`### \`${t.path}\``, '');
    if (t.sameAs !== undefined) {
      out.push(
        `${t.description ? `${t.description} ` : ''}Same keys as [\`${t.sameAs}\`](#${anchor(t.sameAs)}); ` +
          'each key left out is inherited (route > upstream > defaults).',
        '',
      );
      continue;
    }
    if (t.description && t.path !== section) out.push(t.description, '');
    out.push('| key | type | default | description |', '| --- | --- | --- | --- |', ...t.rows, '');
  }
  return out.join('\n');
}

// ---- the page ----------------------------------------------------------------------------------

const HEADER = `<!-- Generated by scripts/gen-config-docs.ts from src/config/schema.ts. Do not edit: change the
schema's descriptions and run \`npm run docs\`. -->

# Configuration reference (\`sluice.yaml\`)

\`sluice start -c sluice.yaml\` reads one YAML file. It is validated completely at load: every problem is
reported at once as \`file:line: key.path: message\`, unknown keys are errors (with a "did you mean" hint),
and nothing is started unless the whole file is valid. \`sluice check -c sluice.yaml\` does the same
without starting anything, prints the effective timeouts of every route and lints the timeout chain
(see [timeouts.md](timeouts.md)). A JSON Schema for editors is in
[\`schema/sluice.schema.json\`](../schema/sluice.schema.json); start a file with
\`# yaml-language-server: $schema=…/schema/sluice.schema.json\` for completion and hover help.

Every key below is validated today. Some configure features that are still being built; the
[README's status list](../README.md#status) says which ones already take effect.

## Units

| kind | written as | notes |
| --- | --- | --- |
| duration | \`250ms\`, \`5s\`, \`2m\`, \`1h\` (fractions allowed: \`1.5s\`) | A bare number other than \`0\` is refused (\`5\` → "\`5\` is not a duration: write 5s or 5ms"), so a unit is never guessed. \`0s\` (or \`0\`) disables a timeout where its description says "0s disables". |
| size | \`512B\`, \`512KB\`, \`10MB\`, \`1GB\` | Binary multiples, like nginx: 1KB = 1024 bytes, 1MB = 1024 KB. \`KiB\`, \`MiB\`, \`GiB\` are accepted as synonyms. |
| percentage | \`20%\`, \`0.5%\` | A share of requests. |
| host:port | \`0.0.0.0:8080\`, \`127.0.0.1:8081\`, \`:8080\`, \`[::1]:8080\` | An empty host (\`:8080\`) listens on every interface. |
| name | \`api\`, \`reports-v2\` | Letters, digits, \`_\`, \`-\` and \`.\`; at most 64. |

In the tables below, *default* \`—\` means "not set": the feature is off, or the value comes from
elsewhere as the description says. *inherited* means the value falls back to the level above.

## Environment variables

Any string value may contain \`\${NAME}\` or \`\${NAME:-fallback}\`; it is replaced by the environment
variable \`NAME\` when the file is loaded (and reloaded). \`\${NAME}\` with \`NAME\` unset or empty is an error
naming the variable and the line; \`\${NAME:-fallback}\` uses \`fallback\` instead.

\`\`\`yaml
admin:
  listen: 127.0.0.1:8081
  token: "\${SLUICE_ADMIN_TOKEN}"
upstreams:
  api:
    targets: ["\${API_URL:-http://127.0.0.1:9001}"]
\`\`\`

Interpolation happens inside YAML scalars, after parsing: it cannot add keys or structure, only values.

## Precedence

\`timeouts\` (each phase separately) and \`max_body\` can be set at three levels. The most specific wins:
**route > upstream > \`defaults\` > built-in**. For example, with \`defaults.timeouts.total: 29s\`,
\`upstreams.api.timeouts.connect: 2s\` and \`routes[0].timeouts.total: 60s\`, route 0 gets \`connect 2s\`
(upstream), \`total 60s\` (route) and every other phase from \`defaults\`. \`sluice check\`, \`sluice start\` and
\`sluice proxy\` print the resulting table.
`;

function render(): string {
  const schema = configJsonSchema() as Schema;
  const required = new Set(schema.required ?? []);
  const sections: string[] = [HEADER, '## Top-level keys', ''];
  const keys = Object.keys(schema.properties ?? {});
  sections.push(
    keys.map((k) => `[\`${k}\`](#${anchor(k)})${required.has(k) ? ' (required)' : ''}`).join(' · '),
    '',
  );
  for (const [key, field] of Object.entries(schema.properties ?? {})) {
    sections.push(`## ${key}`, '');
    const intro = field.description && !isObject(field) && !isMap(field) ? undefined : INTROS[key];
    if (intro) sections.push(intro, '');
    const tables: Table[] = [];
    if (isObject(field)) {
      walk(field, key, tables);
    } else if (isMap(field) && isObject(field.additionalProperties as Schema)) {
      if (field.description && !intro) sections.push(field.description, '');
      walk(field.additionalProperties as Schema, `${key}.<name>`, tables);
    } else if (field.type === 'array' && field.items && isObject(field.items)) {
      walk(field.items, `${key}[]`, tables);
    } else {
      const { def, text } = defaultOf(field, required.has(key), false);
      sections.push(
        '| key | type | default | description |',
        '| --- | --- | --- | --- |',
        `| \`${key}\` | ${cell(typeOf(field))} | ${cell(def)} | ${cell(text)} |`,
        '',
      );
    }
    if (tables.length > 0) sections.push(renderTables(tables, key));
  }
  const example = readFileSync(EXAMPLE, 'utf8').trimEnd();
  sections.push(
    '## Full example',
    '',
    '[`examples/sluice.yaml`](../examples/sluice.yaml), which `npm start` runs in front of the demo upstream:',
    '',
    '```yaml',
    example,
    '```',
    '',
  );
  return sections.join('\n').replace(/\n{3,}/g, '\n\n');
}

const text = `${render().trimEnd()}\n`;
if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(OUT, 'utf8');
  } catch {}
  if (current !== text) {
    console.error('docs/config.md is stale: run `npm run docs` and commit it');
    process.exit(1);
  }
  console.log('docs/config.md is up to date');
} else {
  writeFileSync(OUT, text);
  console.log('wrote docs/config.md');
}
