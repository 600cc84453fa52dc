import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { lintConfig } from './lint.ts';
import { loadConfigText } from './load.ts';

/** Lints one route (plus optional top-level keys) and returns `level[code]: message` lines. */
function lint(route: string, top = ''): string[] {
  return lintText(`${top}
upstreams: { demo: { targets: [http://127.0.0.1:9000] } }
routes:
  - { name: r, match: { path: / }, upstream: demo, ${route} }
`);
}

function lintText(text: string, chain = {}): string[] {
  const config = loadConfigText(text, 'test.yaml');
  return lintConfig(config, chain).map((f) => `${f.level}[${f.code}]: ${f.message}`);
}

test('the shipped defaults and the example config are clean', () => {
  assert.deepEqual(lint('timeouts: {}'), []);
  const example = loadConfigText(readFileSync('examples/sluice.yaml', 'utf8'), 'examples/sluice.yaml');
  assert.deepEqual(lintConfig(example), []);
});

test('ttfb above total is an error; the built-in 30s ttfb backstop is not reported', () => {
  assert.deepEqual(lint('timeouts: { ttfb: 20s, total: 10s }'), [
    "error[ttfb-above-total]: route 'r' ttfb 20s exceeds total 10s: the total budget ends the wait for response headers first; lower ttfb or raise total",
  ]);
  assert.deepEqual(lint('timeouts: { total: 10s }'), []);
  assert.deepEqual(lint('timeouts: { ttfb: 10s, total: 10s }'), []);
});

test('connect above total is a warning', () => {
  assert.deepEqual(lint('timeouts: { connect: 3s, total: 2s }'), [
    "warning[connect-above-total]: route 'r' connect 3s exceeds total 2s: the total budget ends a slow connect first",
  ]);
});

test('retry attempts × per_try (or × ttfb) above total is a warning', () => {
  assert.deepEqual(lint('timeouts: { total: 10s }, retry: { attempts: 3, per_try: 4s }'), [
    "warning[retry-exceeds-total]: route 'r' retry: 3 attempts × per_try 4s = 12s exceeds total 10s: the last attempts never get their full budget; set retry.per_try to at most 3333ms",
  ]);
  assert.deepEqual(lint('timeouts: { ttfb: 5s, total: 10s }, retry: { attempts: 3, on: [connect, ttfb] }'), [
    "warning[retry-exceeds-total]: route 'r' retry: 3 attempts × ttfb (no per_try set) 5s = 15s exceeds total 10s: the last attempts never get their full budget; set retry.per_try to at most 3333ms",
  ]);
  assert.deepEqual(lint('timeouts: { total: 10s }, retry: { attempts: 2, per_try: 5s }'), []);
  assert.deepEqual(lint('timeouts: { total: 10s }, retry: { attempts: 1 }'), []);
});

test('async after ≥ total is an error (auto and prefer; queue answers 202 at once)', () => {
  assert.deepEqual(lint('timeouts: { total: 5s }, async: { mode: auto, after: 5s }'), [
    "error[async-after-total]: route 'r' async after 5s is not below total 5s: the 504 comes before the 202 would; lower async.after or raise total",
  ]);
  assert.equal(lint('timeouts: { total: 5s }, async: { mode: prefer, after: 8s }').length, 1);
  assert.deepEqual(lint('timeouts: { total: 5s }, async: { mode: queue, after: 8s }'), []);
  assert.deepEqual(lint('timeouts: { total: 5s }, async: { mode: auto, after: 2s }'), []);
  assert.deepEqual(lint('timeouts: { total: 5s }, async: { mode: "off", after: 8s }'), []);
});

test('no total and an unbounded send/ttfb/read is a warning', () => {
  assert.deepEqual(lint('timeouts: { total: 0s, read: 0s }'), [
    "warning[unbounded]: route 'r' has no total budget and no read timeout: nothing ends an exchange whose upstream stalls mid-body; set total or read",
  ]);
  assert.deepEqual(lint('timeouts: { total: 0s, send: 0s, ttfb: 0s }'), [
    "warning[unbounded]: route 'r' has no total budget and no send/ttfb timeout: nothing ends an exchange whose upstream stops reading the request body or never answers; set total or send/ttfb",
  ]);
  assert.deepEqual(lint('timeouts: { total: 0s }'), []);
  assert.deepEqual(lint('timeouts: { total: 10s, read: 0s }'), []);
});

const TTFB_BELOW =
  "warning[ttfb-below-total]: route 'r' ttfb 4s fires before total 10s: the upstream is told x-timeout-ms 4000 and a response not begun by then gets 504 phase ttfb, so total is never reached; raise ttfb to 10s or lower total to 4s (on a streaming route meant to be bounded by ttfb and read: lint: { ignore: [ttfb-below-total] })";

test('ttfb below total is a warning (total unreachable), also with the 30s ttfb default under a longer total', () => {
  assert.deepEqual(lint('timeouts: { ttfb: 4s, total: 10s }'), [TTFB_BELOW]);
  assert.match(
    lint('timeouts: { total: 60s }')[0],
    /^warning\[ttfb-below-total\]: route 'r' ttfb 30s fires before total 1m: .*x-timeout-ms 30000/,
  );
  // Not where ttfb cannot fire first or is meant per try.
  assert.deepEqual(lint('timeouts: { ttfb: 10s, total: 10s }'), []);
  assert.deepEqual(lint('timeouts: { ttfb: 0s, total: 10s }'), []);
  assert.deepEqual(lint('timeouts: { ttfb: 4s, total: 0s }'), []);
  assert.deepEqual(lint('timeouts: { ttfb: 4s, total: 10s }, async: { mode: auto, after: 2s }'), []);
  assert.deepEqual(lint('timeouts: { ttfb: 4s, total: 10s }, async: { mode: queue }'), []);
  assert.deepEqual(lint('timeouts: { ttfb: 4s, total: 10s }, retry: { attempts: 2, on: [ttfb] }'), []);
  assert.deepEqual(lint('timeouts: { ttfb: 4s, total: 10s }, retry: { attempts: 2, per_try: 3s }'), []);
});

test('a finding is silenced by its code on its route or at the top level, not elsewhere', () => {
  assert.deepEqual(lint('timeouts: { ttfb: 4s, total: 10s }, lint: { ignore: [ttfb-below-total] }'), []);
  assert.deepEqual(lint('timeouts: { ttfb: 4s, total: 10s }', 'lint: { ignore: [ttfb-below-total] }'), []);
  assert.deepEqual(lint('timeouts: { ttfb: 4s, total: 10s }, lint: { ignore: [unbounded] }'), [TTFB_BELOW]);
  // Only on the route that says so.
  const two = lintText(`upstreams: { demo: { targets: [http://127.0.0.1:9000] } }
routes:
  - { name: sse, match: { path: /events }, upstream: demo, timeouts: { ttfb: 4s, total: 10m }, lint: { ignore: [ttfb-below-total] } }
  - { name: api, match: { path: /api }, upstream: demo, timeouts: { ttfb: 4s, total: 10m } }
`);
  assert.equal(two.length, 1);
  assert.match(two[0], /^warning\[ttfb-below-total\]: route 'api' /);
  // An unknown code is a config error with a hint.
  assert.throws(
    () => lint('lint: { ignore: [ttfb-below-totl] }'),
    /test\.yaml:4: routes\[0\]\.lint\.ignore\[0\]: expected one of "ttfb-above-total"/,
  );
});

test('routes that never match: after a catch-all, shadowed by an earlier one, a host with a port', () => {
  const out = lintText(`upstreams: { demo: { targets: [http://127.0.0.1:9000] } }
routes:
  - { name: api, match: { path: /api, methods: [GET, POST] }, upstream: demo }
  - { name: api-users, match: { path: /api/users/, methods: [GET] }, upstream: demo }
  - { name: api-put, match: { path: /api/users, methods: [PUT] }, upstream: demo }
  - { name: port, match: { host: "api.example.com:8080" }, upstream: demo }
  - { name: wild, match: { host: "*.example.com", path: /v1 }, upstream: demo }
  - { name: sub, match: { host: "a.example.com", path: /v1/x, headers: { x-canary: "1" } }, upstream: demo }
  - { name: canary, match: { headers: { X-Canary: "1" } }, upstream: demo }
  - { name: all, match: { path: / }, upstream: demo }
  - { name: late, match: { path: /late }, upstream: demo }
`);
  assert.deepEqual(out, [
    "warning[shadowed]: route 'api-users' never matches: route 'api' before it matches every request it would (path /api, methods GET,POST); move it above 'api' or narrow 'api'",
    "warning[host-with-port]: route 'port' host 'api.example.com:8080' never matches: ports are not part of the match, use 'api.example.com'",
    "warning[shadowed]: route 'sub' never matches: route 'wild' before it matches every request it would (path /v1, host *.example.com); move it above 'wild' or narrow 'wild'",
    "warning[after-catch-all]: route 'late' comes after the catch-all route 'all' (path / with no host, methods or headers) and never matches; move it above 'all'",
  ]);
});

// ---- the chain lint -----------------------------------------------------------------------------

test('chain: a consistent chain is clean; an outer layer not above what is inside it is an error naming the fix', () => {
  assert.deepEqual(lint('timeouts: {}', 'chain: { client: 60s, lb: 60s, app: 25s }'), []);
  assert.deepEqual(lint('timeouts: { total: 2m, ttfb: 2m }', 'chain: { client: 60s, lb: 60s, app: 25s }'), [
    'error[chain-client]: chain.client 1m is not above chain.lb 1m: the client gives up before the layer inside it does; raise chain.client to over 1m (e.g. 61s) or lower chain.lb to under 1m',
    "error[chain-lb]: route 'r' total 2m is not below chain.lb 1m: the load balancer answers its own 504 before Sluice names the phase; lower total to under 1m (e.g. 59s) or use async (after under 1m), or raise chain.lb to over 2m",
  ]);
  // The earliest layer inside is what an outer one must outlast: a client at 20s in front of an
  // API Gateway (29s) and a load balancer (25s) is only wrong because the route itself takes 20s.
  assert.deepEqual(lint('timeouts: { total: 20s }', 'chain: { client: 20s, apigw: true, lb: 25s }'), [
    "error[chain-client]: route 'r' total 20s is not below chain.client 20s: the client gives up before Sluice names the phase; lower total to under 20s (e.g. 19s) or use async (after under 20s), or raise chain.client to over 20s",
  ]);
  assert.deepEqual(lint('timeouts: { total: 2m }, async: { mode: queue }', 'chain: { lb: 1s }'), []);
});

test('chain: API Gateway caps at 29s; an async route is judged by its 202; a route without total', () => {
  assert.deepEqual(lint('timeouts: {}', 'chain: { apigw: true }'), [
    `error[chain-apigw]: route 'r' total 29s is not below API Gateway's 29s integration timeout: API Gateway answers its own 504 ("Endpoint request timed out") before Sluice names the phase; lower total to under 29s (e.g. 28s) or use async (after under 29s)`,
  ]);
  assert.deepEqual(lint('timeouts: { total: 28s }', 'chain: { apigw: true }'), []);
  assert.deepEqual(
    lint('timeouts: { total: 2m, ttfb: 2m }, async: { mode: auto, after: 5s }', 'chain: { apigw: true }'),
    [],
  );
  assert.deepEqual(
    lint('timeouts: { total: 2m, ttfb: 2m }, async: { mode: auto, after: 30s }', 'chain: { lb: 29s }'),
    [
      "error[chain-lb]: route 'r' async.after 30s is not below chain.lb 29s: the load balancer answers its own 504 before the 202; lower async.after to under 29s (e.g. 28s), or raise chain.lb to over 30s",
    ],
  );
  assert.deepEqual(lint('timeouts: { total: 0s }', 'chain: { lb: 60s }'), [
    "error[chain-lb]: route 'r' has no total: chain.lb 1m ends its slow requests first (the load balancer answers its own 504); set a total under 1m (e.g. 59s) or use async with after under 1m",
  ]);
});

test("chain: the app's timeout below Sluice's per-try budget, and room for retries after it", () => {
  assert.deepEqual(lint('timeouts: { ttfb: 20s, total: 29s }', 'chain: { app: 25s }').slice(1), [
    "error[chain-app]: route 'r' per-try budget 20s (ttfb) is not above chain.app 25s: Sluice answers 504 while the app is still working; lower the app's timeout to under 20s (e.g. 19s) or raise ttfb to over 25s",
  ]);
  assert.deepEqual(
    lint('timeouts: { total: 29s }, retry: { attempts: 3, per_try: 9s, on: [503] }', 'chain: { app: 5s }'),
    [],
  );
  assert.deepEqual(
    lint('timeouts: { total: 29s }, retry: { attempts: 3, per_try: 9s, on: [503] }', 'chain: { app: 9s }'),
    [
      "error[chain-app]: route 'r' per-try budget 9s (retry.per_try) is not above chain.app 9s: Sluice answers 504 while the app is still working; lower the app's timeout to under 9s (e.g. 8s) or raise retry.per_try to over 9s",
    ],
  );
  assert.deepEqual(
    lint('timeouts: { total: 29s, ttfb: 29s }, retry: { attempts: 3, on: [503] }', 'chain: { app: 25s }'),
    [
      "warning[retry-exceeds-total]: route 'r' retry: 3 attempts × ttfb (no per_try set) 29s = 87s exceeds total 29s: the last attempts never get their full budget; set retry.per_try to at most 9666ms",
      "error[chain-retries]: route 'r' retry.attempts 3 × chain.app 25s = 75s exceeds total 29s: after an app timeout there is no time left for the retries; raise total to over 75s, lower the app's timeout to under 9666ms, or lower retry.attempts",
    ],
  );
  // On an async route the call runs under async.timeout.
  assert.deepEqual(
    lint('timeouts: { total: 2m, ttfb: 2m }, async: { mode: auto, after: 5s }', 'chain: { app: 20m }'),
    [
      "error[chain-app]: route 'r' per-try budget 15m (async.timeout) is not above chain.app 20m: Sluice answers 504 while the app is still working; lower the app's timeout to under 15m (e.g. 14m) or raise async.timeout to over 20m",
    ],
  );
});

test('chain: defaults.client_timeout is chain.client; --chain overrides the file key by key; silenced by code', () => {
  assert.deepEqual(lint('timeouts: { total: 2m, ttfb: 2m }', 'defaults: { client_timeout: 29s }'), [
    "error[chain-client]: route 'r' total 2m is not below chain.client 29s: the client gives up before Sluice names the phase; lower total to under 29s (e.g. 28s) or use async (after under 29s), or raise chain.client to over 2m",
  ]);
  assert.throws(
    () => lint('timeouts: {}', 'defaults: { client_timeout: 29s }\nchain: { client: 60s }'),
    /test\.yaml:1: defaults\.client_timeout: is an alias of chain\.client, which is set to another value: keep only chain\.client/,
  );
  assert.deepEqual(lint('timeouts: {}', 'defaults: { client_timeout: 60s }\nchain: { client: 60s }'), []);
  const text =
    'chain: { lb: 60s }\nupstreams: { demo: { targets: [http://127.0.0.1:9000] } }\nroutes:\n  - { name: r, upstream: demo }\n';
  assert.deepEqual(lintText(text), []);
  assert.match(
    lintText(text, { lb: 10_000 })[0],
    /^error\[chain-lb\]: route 'r' total 29s is not below chain\.lb 10s/,
  );
  assert.deepEqual(lintText(`lint: { ignore: [chain-lb] }\n${text}`, { lb: 10_000 }), []);
});
