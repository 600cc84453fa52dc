import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ConfigError, closest, loadConfigFile, loadConfigText } from './load.ts';
import { BUILTIN_TIMEOUTS, type EffectiveConfig } from './resolve.ts';
import { configJsonSchema } from './schema.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));

/** A minimal valid config (lines 1–6); tests append to the route on line 5. */
const BASE = `upstreams:
  api:
    targets: [http://127.0.0.1:9001]
routes:
  - name: r
    upstream: api
`;

function load(text: string, env: NodeJS.ProcessEnv = {}): EffectiveConfig {
  return loadConfigText(text, 'sluice.yaml', env);
}

/** Loads text that must fail; returns the ConfigError. */
function fail(text: string, env: NodeJS.ProcessEnv = {}): ConfigError {
  try {
    load(text, env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
    assert.equal(err.file, 'sluice.yaml');
    // One line per issue, each naming the file (and the line when known).
    const lines = err.message.split('\n');
    assert.equal(lines.length, err.issues.length);
    for (const l of lines) assert.match(l, /^sluice\.yaml(:\d+)?: /);
    return err;
  }
  assert.fail('expected the config to be refused');
}

/** Asserts that the error has a line `sluice.yaml:<line>: <path>: …` matching `message`. */
function hasIssue(err: ConfigError, line: number | undefined, path: string, message: RegExp): void {
  const prefix = `sluice.yaml${line === undefined ? '' : `:${line}`}: ${path ? `${path}: ` : ''}`;
  const found = err.message.split('\n').find((l) => l.startsWith(prefix) && message.test(l));
  assert.ok(found, `no issue "${prefix}…" matching ${message} in:\n${err.message}`);
  const issue = err.issues.find((i) => i.path === path && i.line === line && message.test(i.message));
  assert.ok(issue, `issue ${path} on line ${line} not in .issues`);
}

// ---------------------------------------------------------------------------------------------------
// Errors: every class names the file, the line and the key path.

test('invalid YAML: reported with its line', () => {
  const err = fail(`listen: 127.0.0.1:8080\nadmin: { listen: 127.0.0.1:8081\n${BASE}`);
  assert.ok(err.issues.length >= 1);
  assert.match(err.message, /^sluice\.yaml:\d+: invalid YAML: /);
  assert.ok(err.issues.every((i) => typeof i.line === 'number' && i.line >= 2));
});

test('invalid YAML: bad indentation on a later line', () => {
  const err = fail(`${BASE}    timeouts:\n      connect: 2s\n     total: 5s\n`);
  assert.match(err.message, /invalid YAML/);
  assert.ok(
    err.issues.some((i) => i.line === 9),
    err.message,
  );
});

test('duplicate keys: the key path and both lines', () => {
  const top = fail(`listen: :8080\nlisten: :9090\n${BASE}`);
  hasIssue(top, 2, 'listen', /duplicate key \(first set on line 1\)/);

  const nested = fail(`${BASE}    timeouts:\n      connect: 1s\n      total: 5s\n      connect: 2s\n`);
  hasIssue(nested, 10, 'routes[0].timeouts.connect', /duplicate key \(first set on line 8\)/);
});

test('unknown key with a did-you-mean hint, on the line of the key', () => {
  const err = fail(`${BASE}    timeouts:\n      total: 5s\n      conect: 2s\n`);
  assert.equal(err.issues.length, 1);
  hasIssue(err, 9, 'routes[0].timeouts.conect', /unknown key "conect" \(did you mean "connect"\?\)/);
  assert.equal(
    err.message,
    'sluice.yaml:9: routes[0].timeouts.conect: unknown key "conect" (did you mean "connect"?)',
  );
});

test('unknown keys: hints in nested sections, under a named upstream and in flow mappings', () => {
  const err = fail(
    `client: { header_timout: 1s }\ndefaults: { timeout: { total: 1s } }\n` +
      `upstreams:\n  api:\n    targets: [http://127.0.0.1:9001]\n    max_conections: 4\n` +
      `routes:\n  - name: r\n    upstream: api\n    match: { pth: /a }\n    strip_prefx: true\n`,
  );
  hasIssue(err, 1, 'client.header_timout', /did you mean "header_timeout"/);
  hasIssue(err, 2, 'defaults.timeout', /did you mean "timeouts"/);
  hasIssue(err, 6, 'upstreams.api.max_conections', /did you mean "max_connections"/);
  hasIssue(err, 10, 'routes[0].match.pth', /did you mean "path"/);
  hasIssue(err, 11, 'routes[0].strip_prefx', /did you mean "strip_prefix"/);
});

test('unknown key with no close match lists the known keys', () => {
  const err = fail(`${BASE}    colour: blue\n`);
  hasIssue(
    err,
    7,
    'routes[0].colour',
    /unknown key "colour" \(known keys: name, match, upstream, .*timeouts.*\)/,
  );
  assert.doesNotMatch(err.message, /did you mean/);

  const top = fail(`zzzzqqq: 1\n${BASE}`);
  hasIssue(
    top,
    1,
    'zzzzqqq',
    /known keys: listen, admin, access_log, watch, cache_size, shutdown_timeout, client, defaults, chain, lint, workers, store, jobs, alerts, upstreams, routes/,
  );
});

test('closest: edit distance within a third of the word, case-insensitive', () => {
  assert.equal(closest('conect', ['connect', 'send', 'ttfb']), 'connect');
  assert.equal(closest('TTFB', ['connect', 'send', 'ttfb']), 'ttfb');
  assert.equal(closest('colour', ['connect', 'send', 'ttfb']), undefined);
  assert.equal(closest('x', []), undefined);
});

test('wrong type: listen as a number', () => {
  const err = fail(`listen: 8080\n${BASE}`);
  hasIssue(err, 1, 'listen', /expected host:port.*got number 8080 \(write ":8080"/);
});

test('wrong types elsewhere: a list, a mapping, a boolean', () => {
  const err = fail(`${BASE}    match: { methods: GET }\n    strip_prefix: "yes"\n`);
  hasIssue(err, 7, 'routes[0].match.methods', /expected a list, got string "GET"/);
  hasIssue(err, 8, 'routes[0].strip_prefix', /expected true or false, got string "yes"/);

  const routes = fail(`upstreams:\n  api:\n    targets: [http://127.0.0.1:9001]\nroutes: { a: 1 }\n`);
  hasIssue(routes, 4, 'routes', /expected a list, got a mapping/);
});

test('bad duration: echoed with what to write (5x, a bare number, a space, a negative one, a unit word)', () => {
  const x = fail(`${BASE}    timeouts: { connect: 5x }\n`);
  hasIssue(
    x,
    7,
    'routes[0].timeouts.connect',
    /`5x` is not a duration: write e\.g\. 250ms, 5s, 2m or 1h \(units ms, s, m, h\)$/,
  );

  const bare = fail(`${BASE}    timeouts:\n      ttfb: 5\n`);
  hasIssue(
    bare,
    8,
    'routes[0].timeouts.ttfb',
    /`5` is not a duration: write 5s or 5ms \(units ms, s, m, h\)$/,
  );

  const quoted = fail(`${BASE}    timeouts: { total: "60" }\n`);
  hasIssue(quoted, 7, 'routes[0].timeouts.total', /`60` is not a duration: write 60s or 60ms/);

  const neg = fail(`defaults:\n  timeouts: { read: -5s }\n${BASE}`);
  hasIssue(
    neg,
    2,
    'defaults.timeouts.read',
    /`-5s` is not a duration: a duration cannot be negative \(0s disables\)/,
  );

  const client = fail(`client:\n  header_timeout: 2 s\n${BASE}`);
  hasIssue(client, 2, 'client.header_timeout', /`2 s` is not a duration: write 2s \(units ms, s, m, h\)$/);

  const word = fail(`shutdown_timeout: 10sec\n${BASE}`);
  hasIssue(word, 1, 'shutdown_timeout', /`10sec` is not a duration: write 10s /);

  const list = fail(`shutdown_timeout: [1s]\n${BASE}`);
  hasIssue(list, 1, 'shutdown_timeout', /expected a duration such as 250ms, 5s, 2m or 1h, got a list$/);
  // One line per bad value, never one per failed check.
  assert.equal(list.issues.length, 1);
});

test('bad size: echoed with what to write', () => {
  const err = fail(`${BASE}    max_body: 10 MB\n`);
  hasIssue(err, 7, 'routes[0].max_body', /`10 MB` is not a size: write 10MB \(units B, KB, MB, GB\)$/);

  const bare = fail(`defaults:\n  max_body: 1024\n${BASE}`);
  hasIssue(bare, 2, 'defaults.max_body', /`1024` is not a size: write 1024B, 1024KB or 1024MB/);

  const unit = fail(`client: { max_header_size: 16kb }\n${BASE}`);
  hasIssue(unit, 1, 'client.max_header_size', /`16kb` is not a size: write 16KB /);
});

test('a target without a scheme: reported once, with the URL it meant', () => {
  const err = fail(
    `upstreams:\n  api:\n    targets: [127.0.0.1:3000, { url: "localhost:4000" }]\nroutes:\n  - name: r\n    upstream: api\n`,
  );
  assert.equal(err.issues.length, 2, err.message);
  hasIssue(
    err,
    3,
    'upstreams.api.targets[0]',
    /`127\.0\.0\.1:3000` is not an http:\/\/ or https:\/\/ URL: did you mean http:\/\/127\.0\.0\.1:3000\?$/,
  );
  hasIssue(err, 3, 'upstreams.api.targets[1].url', /did you mean http:\/\/localhost:4000\?$/);
});

test('0 (the bare number) disables a phase as 0s does', () => {
  const c = load(`${BASE}    timeouts: { ttfb: 0, total: 0, read: 0s }\n`);
  assert.equal(c.routes[0].timeouts.ttfb, 0);
  assert.equal(c.routes[0].timeouts.total, 0);
  assert.equal(c.routes[0].timeouts.read, 0);
});

test('missing required: routes absent, upstreams absent, a route without upstream', () => {
  const noRoutes = fail(`listen: :8080\nupstreams:\n  api:\n    targets: [http://127.0.0.1:9001]\n`);
  assert.equal(noRoutes.issues.length, 1);
  hasIssue(noRoutes, 1, 'routes', /is required \(expected a list\)/);

  const noUpstreams = fail(`routes:\n  - name: r\n    upstream: api\n`);
  hasIssue(noUpstreams, 1, 'upstreams', /is required \(expected a mapping\)/);

  // A missing key points at the mapping that lacks it.
  const noUpstreamKey = fail(
    `upstreams:\n  api:\n    targets: [http://127.0.0.1:9001]\nroutes:\n  - name: r\n    match: { path: /a }\n`,
  );
  hasIssue(noUpstreamKey, 5, 'routes[0].upstream', /is required/);

  const noTargets = fail(
    `upstreams:\n  api:\n    max_connections: 3\nroutes:\n  - name: r\n    upstream: api\n`,
  );
  hasIssue(noTargets, 3, 'upstreams.api.targets', /is required \(expected a list\)/);
});

test('an empty file says what is missing', () => {
  const err = fail('');
  hasIssue(err, undefined, 'upstreams', /is required/);
  hasIssue(err, undefined, 'routes', /is required/);
  const scalar = fail('hello');
  assert.match(scalar.message, /^sluice\.yaml:1: expected a mapping of settings at the top level$/);
});

test('empty routes list (and an empty key)', () => {
  const err = fail(`upstreams:\n  api:\n    targets: [http://127.0.0.1:9001]\nroutes: []\n`);
  hasIssue(err, 4, 'routes', /at least one route is needed/);

  const nothing = fail(`upstreams:\n  api:\n    targets: [http://127.0.0.1:9001]\nroutes:\n`);
  hasIssue(nothing, 4, 'routes', /expected a list, got nothing/);
});

test('a route naming an unknown upstream lists the defined ones', () => {
  const err = fail(
    `upstreams:\n  api:\n    targets: [http://127.0.0.1:9001]\n  web:\n    targets: [http://127.0.0.1:9002]\n` +
      `routes:\n  - name: r\n    upstream: apii\n`,
  );
  hasIssue(err, 8, 'routes[0].upstream', /no upstream named "apii" \(defined: api, web\)/);
});

test('duplicate route names', () => {
  const err = fail(`${BASE}  - name: other\n    upstream: api\n  - name: r\n    upstream: api\n`);
  hasIssue(err, 9, 'routes[2].name', /duplicate route name "r"/);
});

test('bad values: target URL, name, port range, method case', () => {
  const err = fail(
    `listen: ":70000"\nupstreams:\n  api:\n    targets: [ftp://127.0.0.1]\nroutes:\n  - name: "a b"\n    upstream: api\n    match: { methods: [get] }\n`,
  );
  hasIssue(err, 1, 'listen', /port must be 0\.\.65535/);
  hasIssue(
    err,
    4,
    'upstreams.api.targets[0]',
    /`ftp:\/\/127\.0\.0\.1` is not an http:\/\/ or https:\/\/ URL$/,
  );
  hasIssue(err, 6, 'routes[0].name', /names use letters/);
  hasIssue(err, 8, 'routes[0].match.methods[0]', /upper-case/);
});

test(`ENV interpolation: \${VAR} set, unset (error with line), \${VAR:-default}`, () => {
  const text = `listen: "\${SLUICE_T_LISTEN}"\nadmin:\n  token: "\${SLUICE_T_TOKEN:-dev-token}"\n${BASE}`;
  const c = load(text, { SLUICE_T_LISTEN: '127.0.0.1:9999' });
  assert.deepEqual(c.listen, { host: '127.0.0.1', port: 9999 });
  assert.equal(c.admin.token, 'dev-token');

  const set = load(text, { SLUICE_T_LISTEN: ':1', SLUICE_T_TOKEN: 's3cret' });
  assert.equal(set.admin.token, 's3cret');

  const err = fail(text, {});
  hasIssue(err, 1, 'listen', /environment variable SLUICE_T_LISTEN is not set/);

  // Inside a string, in a list, and on a later line.
  const mixed = load(
    `upstreams:\n  api:\n    targets: ["http://\${SLUICE_T_HOST}:\${SLUICE_T_PORT:-9001}/v1"]\n` +
      `routes:\n  - name: r\n    upstream: api\n`,
    { SLUICE_T_HOST: 'backend' },
  );
  assert.deepEqual(mixed.upstreams.api.targets, [
    { origin: 'http://backend:9001', basePath: '/v1', weight: 1 },
  ]);

  const deep = fail(`${BASE}    match: { host: "\${SLUICE_T_NOPE}.example.com" }\n`);
  hasIssue(deep, 7, 'routes[0].match.host', /SLUICE_T_NOPE is not set/);

  // An interpolated value is validated like a written one.
  const bad = fail(`${BASE}    timeouts: { total: "\${SLUICE_T_TOTAL}" }\n`, { SLUICE_T_TOTAL: '5x' });
  hasIssue(bad, 7, 'routes[0].timeouts.total', /`5x` is not a duration/);
});

test('several errors are reported at once, one line each, in file order', () => {
  const err = fail(
    `listen: 8080\nzz: 1\nupstreams:\n  api:\n    targets: [http://127.0.0.1:9001]\n` +
      `routes:\n  - name: r\n    upstream: api\n    timeouts: { conect: 1s, total: 5x }\n    max_body: 10 MB\n`,
  );
  assert.equal(err.issues.length, 5, err.message);
  const lines = err.message.split('\n');
  assert.equal(lines.length, 5);
  hasIssue(err, 1, 'listen', /expected host:port/);
  hasIssue(err, 2, 'zz', /unknown key/);
  hasIssue(err, 9, 'routes[0].timeouts.conect', /did you mean "connect"/);
  hasIssue(err, 9, 'routes[0].timeouts.total', /`5x` is not a duration/);
  hasIssue(err, 10, 'routes[0].max_body', /`10 MB` is not a size/);
  const order = err.issues.map((i) => i.line ?? 0);
  assert.deepEqual(
    order,
    [...order].sort((a, b) => a - b),
  );
});

test('files: not found, a directory, and a file with errors (the message names the path)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-load-'));
  try {
    const missing = join(dir, 'nope.yaml');
    assert.throws(
      () => loadConfigFile(missing, {}),
      (err: unknown) =>
        err instanceof ConfigError && err.file === missing && err.message === `${missing}: file not found`,
    );
    assert.throws(
      () => loadConfigFile(dir, {}),
      (err: unknown) => err instanceof ConfigError && err.message === `${dir}: is a directory`,
    );
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, `${BASE}    timeouts:\n      conect: 2s\n`);
    assert.throws(
      () => loadConfigFile(bad, {}),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message === `${bad}:8: routes[0].timeouts.conect: unknown key "conect" (did you mean "connect"?)`,
    );
    const good = join(dir, 'good.yaml');
    writeFileSync(good, BASE);
    assert.equal(loadConfigFile(good, {}).routes[0].name, 'r');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------------
// The effective config.

test('built-in defaults when nothing is set', () => {
  const c = load(BASE);
  assert.deepEqual({ ...c.routes[0].timeouts }, { ...BUILTIN_TIMEOUTS });
  assert.deepEqual(
    { ...c.routes[0].timeouts },
    { connect: 5_000, send: 30_000, ttfb: 30_000, read: 60_000, total: 29_000 },
  );
  assert.equal(c.routes[0].maxBody, 10 * 1024 * 1024);
  assert.deepEqual(c.listen, { host: '0.0.0.0', port: 8080 });
  assert.deepEqual(c.admin.listen, { host: '127.0.0.1', port: 8081 });
  assert.equal(c.admin.token, undefined);
  assert.equal(c.accessLog, 'stdout');
  assert.equal(c.shutdownTimeout, 30_000);
  assert.equal(c.client.header_timeout, 10_000);
  assert.equal(c.client.max_header_size, 16 * 1024);
  assert.equal(c.routes[0].match.path, '');
  assert.equal(c.routes[0].stripPrefix, false);
});

test('precedence per route: route > upstream > defaults > built-in (timeouts and max_body)', () => {
  const c = load(`defaults:
  timeouts: { connect: 4s, send: 20s, total: 25s }
  max_body: 5MB
upstreams:
  slow:
    targets: [http://127.0.0.1:9001]
    timeouts: { connect: 3s, ttfb: 40s }
    max_body: 2MB
  plain:
    targets: [http://127.0.0.1:9002]
routes:
  - name: both
    upstream: slow
    timeouts: { ttfb: 45s, total: 60s }
    max_body: 1MB
  - name: upstream-only
    upstream: slow
  - name: defaults-only
    upstream: plain
  - name: route-only
    upstream: plain
    timeouts: { read: 5s }
    max_body: 512KB
`);
  const by = Object.fromEntries(c.routes.map((r) => [r.name, r]));
  //                                   connect     send      ttfb      read      total
  assert.deepEqual(
    { ...by.both.timeouts },
    { connect: 3_000, send: 20_000, ttfb: 45_000, read: 60_000, total: 60_000 },
  );
  assert.deepEqual(
    { ...by['upstream-only'].timeouts },
    { connect: 3_000, send: 20_000, ttfb: 40_000, read: 60_000, total: 25_000 },
  );
  assert.deepEqual(
    { ...by['defaults-only'].timeouts },
    { connect: 4_000, send: 20_000, ttfb: 30_000, read: 60_000, total: 25_000 },
  );
  assert.deepEqual(
    { ...by['route-only'].timeouts },
    { connect: 4_000, send: 20_000, ttfb: 30_000, read: 5_000, total: 25_000 },
  );
  assert.equal(by.both.maxBody, 1024 * 1024);
  assert.equal(by['upstream-only'].maxBody, 2 * 1024 * 1024);
  assert.equal(by['defaults-only'].maxBody, 5 * 1024 * 1024);
  assert.equal(by['route-only'].maxBody, 512 * 1024);
});

test('0s disables a phase, and a route can disable what the upstream or defaults set', () => {
  const c = load(`defaults:
  timeouts: { read: 0s }
upstreams:
  api:
    targets: [http://127.0.0.1:9001]
    timeouts: { total: 0s, connect: "0" }
routes:
  - name: off
    upstream: api
  - name: back-on
    upstream: api
    timeouts: { total: 10s, ttfb: 0ms }
`);
  assert.deepEqual(
    { ...c.routes[0].timeouts },
    { connect: 0, send: 30_000, ttfb: 30_000, read: 0, total: 0 },
  );
  assert.deepEqual(
    { ...c.routes[1].timeouts },
    { connect: 0, send: 30_000, ttfb: 0, read: 0, total: 10_000 },
  );
});

test('match, listen and target details are normalised', () => {
  const c = load(`listen: "[::1]:8443"
admin: { listen: ":0", token: "t0k" }
upstreams:
  api:
    targets: [http://127.0.0.1:9001/base/, https://example.com]
routes:
  - name: r
    upstream: api
    match: { path: /api/, host: API.Example.com, methods: [GET, POST], headers: { X-Tenant: a } }
    strip_prefix: true
`);
  assert.deepEqual(c.listen, { host: '::1', port: 8443 });
  assert.deepEqual(c.admin, { listen: { host: undefined, port: 0 }, token: 't0k' });
  assert.deepEqual(c.upstreams.api.targets, [
    { origin: 'http://127.0.0.1:9001', basePath: '/base', weight: 1 },
    { origin: 'https://example.com', basePath: '', weight: 1 },
  ]);
  const r = c.routes[0];
  assert.equal(r.match.path, '/api');
  assert.equal(r.match.host, 'api.example.com');
  assert.deepEqual(r.match.methods, ['GET', 'POST']);
  assert.deepEqual(r.match.headers, { 'x-tenant': 'a' });
  assert.equal(r.stripPrefix, true);
});

test('the effective config is deeply frozen', () => {
  const c = load(`client: { trusted_proxies: [10.0.0.0/8] }
upstreams:
  api:
    targets: [http://127.0.0.1:9001]
routes:
  - name: r
    upstream: api
    match: { methods: [GET], headers: { x-a: b } }
`);
  const frozen: [string, unknown][] = [
    ['config', c],
    ['listen', c.listen],
    ['admin', c.admin],
    ['admin.listen', c.admin.listen],
    ['client', c.client],
    ['client.trusted_proxies', c.client.trusted_proxies],
    ['upstreams', c.upstreams],
    ['upstreams.api', c.upstreams.api],
    ['upstreams.api.targets', c.upstreams.api.targets],
    ['upstreams.api.targets[0]', c.upstreams.api.targets[0]],
    ['routes', c.routes],
    ['routes[0]', c.routes[0]],
    ['routes[0].match', c.routes[0].match],
    ['routes[0].match.methods', c.routes[0].match.methods],
    ['routes[0].match.headers', c.routes[0].match.headers],
    ['routes[0].timeouts', c.routes[0].timeouts],
  ];
  for (const [name, v] of frozen) assert.ok(Object.isFrozen(v), `${name} is not frozen`);
  assert.throws(() => {
    (c.routes[0].timeouts as { total: number }).total = 1;
  }, TypeError);
  assert.throws(() => {
    (c.routes as unknown as unknown[]).push({});
  }, TypeError);
  // Two loads share nothing mutable; the built-in defaults themselves are frozen.
  assert.ok(Object.isFrozen(BUILTIN_TIMEOUTS));
  assert.notEqual(load(BASE).routes[0].timeouts, load(BASE).routes[0].timeouts);
});

// ---------------------------------------------------------------------------------------------------
// The JSON Schema and the example.

test('schema/sluice.schema.json is what configJsonSchema() generates (npm run schema)', () => {
  const onDisk = readFileSync(join(root, 'schema/sluice.schema.json'), 'utf8');
  assert.equal(onDisk, `${JSON.stringify(configJsonSchema(), null, 2)}\n`, 'stale: run `npm run schema`');
});

test('the JSON Schema forbids unknown keys and documents fields', () => {
  const s = configJsonSchema() as {
    additionalProperties?: unknown;
    properties: Record<string, { description?: string }>;
  };
  assert.equal(s.additionalProperties, false);
  assert.ok(s.properties.listen.description);
  assert.deepEqual(Object.keys(s.properties).sort(), [
    'access_log',
    'admin',
    'alerts',
    'cache_size',
    'chain',
    'client',
    'defaults',
    'jobs',
    'lint',
    'listen',
    'routes',
    'shutdown_timeout',
    'store',
    'upstreams',
    'watch',
    'workers',
  ]);
});

test('examples/sluice.yaml loads, with the effective timeouts its comments promise', () => {
  const file = join(root, 'examples/sluice.yaml');
  const c = loadConfigFile(file, {});
  assert.deepEqual(
    c.routes.map((r) => r.name),
    ['reports', 'catalog', 'stream', 'demo'],
  );
  const by = Object.fromEntries(c.routes.map((r) => [r.name, r.timeouts]));
  assert.equal(by.reports.connect, 2_000); // from the upstream
  assert.equal(by.reports.ttfb, 45_000);
  assert.equal(by.reports.total, 60_000);
  assert.equal(by.stream.read, 5_000);
  assert.equal(by.stream.total, 0);
  assert.equal(by.demo.total, 29_000);
  assert.equal(c.shutdownTimeout, 10_000);
});

test('a route cache and compression resolve with their defaults; workers: auto is one per core', () => {
  const base = `upstreams:\n  u: { targets: ["http://127.0.0.1:9000"] }\nroutes:\n  - name: r\n    upstream: u\n`;
  const c = loadConfigText(
    `${base}    cache: { ttl: 30s, stale_if_error: 10m }\n    compress: true\n`,
    'sluice.yaml',
    {},
  );
  assert.deepEqual(c.routes[0].cache, {
    ttl: 30_000,
    staleWhileRevalidate: undefined,
    staleIfError: 600_000,
    maxEntry: 1024 * 1024,
    varyLimit: 16,
  });
  assert.deepEqual(c.routes[0].compress?.algorithms, ['br', 'zstd', 'gzip']);
  assert.equal(c.routes[0].compress?.minSize, 1024);
  assert.equal(c.cacheSize, 64 * 1024 * 1024);
  const d = loadConfigText(
    `defaults: { compress: { min_size: 2KB, algorithms: [gzip] } }\n${base}`,
    'sluice.yaml',
    {},
  );
  assert.deepEqual(d.routes[0].compress?.algorithms, ['gzip']);
  assert.equal(d.routes[0].cache, undefined);
  assert.throws(
    () => loadConfigText(`${base}    compress: { algorithms: [lz4] }\n`, 'sluice.yaml', {}),
    (err: ConfigError) => /routes\[0\]\.compress/.test(err.message),
  );
  assert.equal(loadConfigText(`workers: auto\n${base}`, 'sluice.yaml', {}).workers, availableParallelism());
  assert.equal(loadConfigText(`workers: 4\n${base}`, 'sluice.yaml', {}).workers, 4);
  assert.equal(loadConfigText(base, 'sluice.yaml', {}).workers, 1);
  for (const bad of ['0', 'many', '2.5'])
    assert.throws(
      () => loadConfigText(`workers: ${bad}\n${base}`, 'sluice.yaml', {}),
      (err: ConfigError) =>
        err.message.startsWith('sluice.yaml:1: workers: expected auto (one process per core) or a number'),
    );
});

test(`an unset \${VAR} is reported with its line and validation goes on: every problem at once`, () => {
  const err = fail(
    `upstreams:\n  app:\n    targets: ["\${APP_URL}"]\nroutes:\n  - name: r\n    upstream: app\n    timeouts: { total: 2 s }\n  - name: s\n    upstream: nope\n`,
  );
  hasIssue(err, 3, 'upstreams.app.targets[0]', /environment variable APP_URL is not set/);
  hasIssue(err, 7, 'routes[0].timeouts.total', /`2 s` is not a duration/);
  // The empty value the variable left is not reported a second time.
  assert.equal(err.issues.length, 2, err.message);

  // With the schema satisfied, the resolver's checks still run beside the unset variable.
  const later = fail(`admin: { token: "\${NOPE_TOKEN}" }\n${BASE}  - name: s\n    upstream: nope\n`);
  hasIssue(later, 1, 'admin.token', /NOPE_TOKEN is not set/);
  hasIssue(later, 9, 'routes[1].upstream', /no upstream named "nope"/);
  assert.equal(later.issues.length, 2, later.message);
});

test('what start refuses is refused at load, with its line: admin beyond loopback without a token, a malformed Redis store URL', () => {
  const admin = fail(`admin:\n  listen: 0.0.0.0:8081\n${BASE}`);
  hasIssue(admin, 2, 'admin.listen', /0\.0\.0\.0:8081 is not loopback: set admin\.token/);
  const empty = fail(`admin: { listen: ":8081", token: "" }\n${BASE}`);
  hasIssue(empty, 1, 'admin.listen', /:8081 is not loopback/);
  for (const ok of ['127.0.0.1:8081', 'localhost:8081', '[::1]:8081'])
    assert.equal(load(`admin: { listen: "${ok}" }\n${BASE}`).admin.token, undefined);
  assert.equal(load(`admin: { listen: ":8081", token: s3cret }\n${BASE}`).admin.token, 's3cret');

  const redis = fail(`store: redis://127.0.0.1:6379/zero\n${BASE}`);
  hasIssue(redis, 1, 'store', /database "zero" is not a number: redis:\/\/host:port\/db/);
  const option = fail(`store: rediss://cache:6380/1?ttl=5\n${BASE}`);
  hasIssue(option, 1, 'store', /unknown option ttl=5 \(supported: prefix=KEY_PREFIX\)/);
});

test('a Redis store is accepted: redis:// or rediss://, with a password, a db and a key prefix', () => {
  const env = { REDIS_PW: 's3cret' };
  for (const url of [
    'redis://127.0.0.1:6379/0',
    'redis://localhost',
    `rediss://:\${REDIS_PW}@cache.internal:6380/2`,
    `redis://gw:\${REDIS_PW}@10.0.0.5:6379/9?prefix=sluice-eu:`,
  ]) {
    assert.equal(load(`store: "${url}"\n${BASE}`, env).store, url.replace(`\${REDIS_PW}`, 's3cret'));
  }
});

test('an access_log (or job store) path that cannot be created is refused naming the key, and nothing is created', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-load-'));
  try {
    const file = join(dir, 'plain.txt');
    writeFileSync(file, 'x');
    const under = fail(`access_log: ${file}/logs/access.log\n${BASE}`);
    hasIssue(under, 1, 'access_log', new RegExp(`cannot create directory ${file}/logs: ${file} is a file$`));
    const isDir = fail(`access_log: ${dir}\n${BASE}`);
    hasIssue(isDir, 1, 'access_log', /is a directory: name a file in it$/);
    // A directory that does not exist yet is fine (start creates it); check creates nothing.
    const later = join(dir, 'new', 'deeper', 'access.log');
    assert.equal(load(`access_log: ${later}\n${BASE}`).accessLog, later);
    assert.equal(existsSync(join(dir, 'new')), false);
    // The job store's directory, when a route uses async.
    const store = fail(`store: sqlite:${file}/jobs.db\n${BASE}    async: { mode: auto }\n`);
    hasIssue(store, 1, 'store', /cannot create directory .*plain\.txt: .*plain\.txt is a file$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("start's refusals are reported beside the schema's issues, not only once those are fixed", () => {
  const err = fail(
    `admin: { listen: "0.0.0.0:8081" }\nstore: redis://127.0.0.1:6379/x\n${BASE}    timeouts: { total: 2 s }\n`,
  );
  hasIssue(err, 1, 'admin.listen', /is not loopback/);
  hasIssue(err, 2, 'store', /database "x" is not a number/);
  hasIssue(err, 9, 'routes[0].timeouts.total', /`2 s` is not a duration/);
  assert.equal(err.issues.length, 3, err.message);
});
