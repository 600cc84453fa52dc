import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { lintTimeouts } from './lint.ts';
import { loadConfigText } from './load.ts';

/** Lints one route (plus optional defaults) and returns `level: message` lines. */
function lint(route: string, defaults = ''): string[] {
  const config = loadConfigText(
    `${defaults}
upstreams: { demo: { targets: [http://127.0.0.1:9000] } }
routes:
  - { name: r, match: { path: / }, upstream: demo, ${route} }
`,
    'test.yaml',
  );
  return lintTimeouts(config).map((f) => {
    assert.equal(f.route, 'r');
    return `${f.level}: ${f.message}`;
  });
}

test('the shipped defaults and the example config are clean', () => {
  assert.deepEqual(lint('timeouts: {}'), []);
  const example = loadConfigText(readFileSync('examples/sluice.yaml', 'utf8'), 'examples/sluice.yaml');
  assert.deepEqual(lintTimeouts(example), []);
});

test('ttfb above total is an error; the built-in 30s ttfb backstop is not reported', () => {
  assert.deepEqual(lint('timeouts: { ttfb: 20s, total: 10s }'), [
    "error: route 'r' ttfb 20s exceeds total 10s: the total budget ends the wait for response headers first; lower ttfb or raise total",
  ]);
  assert.deepEqual(lint('timeouts: { total: 10s }'), []);
  assert.deepEqual(lint('timeouts: { ttfb: 10s, total: 10s }'), []);
});

test('connect above total is a warning', () => {
  assert.deepEqual(lint('timeouts: { connect: 3s, total: 2s }'), [
    "warning: route 'r' connect 3s exceeds total 2s: the total budget ends a slow connect first",
  ]);
});

test('retry attempts × per_try (or × ttfb) above total is a warning', () => {
  assert.deepEqual(lint('timeouts: { total: 10s }, retry: { attempts: 3, per_try: 4s }'), [
    "warning: route 'r' retry: 3 attempts × per_try 4s = 12s exceeds total 10s: the last attempts never get their full budget; set retry.per_try to at most 3333ms",
  ]);
  assert.deepEqual(lint('timeouts: { ttfb: 5s, total: 10s }, retry: { attempts: 3 }'), [
    "warning: route 'r' retry: 3 attempts × ttfb (no per_try set) 5s = 15s exceeds total 10s: the last attempts never get their full budget; set retry.per_try to at most 3333ms",
  ]);
  assert.deepEqual(lint('timeouts: { total: 10s }, retry: { attempts: 2, per_try: 5s }'), []);
  assert.deepEqual(lint('timeouts: { total: 10s }, retry: { attempts: 1 }'), []);
});

test('async after ≥ total is an error (auto and prefer; queue answers 202 at once)', () => {
  assert.deepEqual(lint('timeouts: { total: 5s }, async: { mode: auto, after: 5s }'), [
    "error: route 'r' async after 5s is not below total 5s: the 504 comes before the 202 would; lower async.after or raise total",
  ]);
  assert.equal(lint('timeouts: { total: 5s }, async: { mode: prefer, after: 8s }').length, 1);
  assert.deepEqual(lint('timeouts: { total: 5s }, async: { mode: queue, after: 8s }'), []);
  assert.deepEqual(lint('timeouts: { total: 5s }, async: { mode: auto, after: 2s }'), []);
  assert.deepEqual(lint('timeouts: { total: 5s }, async: { mode: "off", after: 8s }'), []);
});

test('a total above client_timeout is a warning that suggests async', () => {
  const defaults = 'defaults: { client_timeout: 29s }';
  assert.deepEqual(lint('timeouts: { total: 2m }', defaults), [
    "warning: route 'r' total 2m exceeds client_timeout 29s: the load balancer will answer 504 first; use async",
  ]);
  assert.deepEqual(lint('timeouts: { total: 29s }', defaults), []);
  // Async: the 202 after `after` is what has to beat the load balancer.
  assert.deepEqual(lint('timeouts: { total: 2m }, async: { mode: auto, after: 5s }', defaults), []);
  assert.deepEqual(lint('timeouts: { total: 2m }, async: { mode: auto, after: 30s }', defaults), [
    "warning: route 'r' async after 30s is not below client_timeout 29s: the load balancer will answer 504 before the 202; lower async.after",
  ]);
  assert.deepEqual(lint('timeouts: { total: 0s }', defaults), [
    "warning: route 'r' has no total budget but client_timeout is 29s: the load balancer will answer 504 first on slow requests; set a total or use async",
  ]);
});

test('no total and an unbounded send/ttfb/read is a warning', () => {
  assert.deepEqual(lint('timeouts: { total: 0s, read: 0s }'), [
    "warning: route 'r' has no total budget and no read timeout: nothing ends an exchange whose upstream stalls mid-body; set total or read",
  ]);
  assert.deepEqual(lint('timeouts: { total: 0s, send: 0s, ttfb: 0s }'), [
    "warning: route 'r' has no total budget and no send/ttfb timeout: nothing ends an exchange whose upstream stops reading the request body or never answers; set total or send/ttfb",
  ]);
  assert.deepEqual(lint('timeouts: { total: 0s }'), []);
  assert.deepEqual(lint('timeouts: { total: 10s, read: 0s }'), []);
});
