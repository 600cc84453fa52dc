import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http';
import { describe, test } from 'node:test';
import type { EffectiveRoute } from '../config/resolve.ts';
import { buildRouteTable, hostOnly } from './route-table.ts';

interface MatchSpec {
  path?: string;
  host?: string;
  methods?: string[];
  headers?: Record<string, string>;
}

/** A route as resolve.ts makes it (prefix without trailing slash, host and header names lower-cased). */
function route(name: string, m: MatchSpec = {}): { route: EffectiveRoute } {
  return {
    route: {
      name,
      match: {
        path: (m.path ?? '/').replace(/\/+$/, ''),
        host: m.host?.toLowerCase(),
        methods: m.methods,
        headers: m.headers,
      },
      upstream: 'u',
      retry: undefined,
      async: undefined,
      stripPrefix: false,
      timeouts: { connect: 5_000, send: 30_000, ttfb: 30_000, read: 60_000, total: 29_000 },
      maxBody: 1024,
      timeoutLayers: {
        connect: 'defaults',
        send: 'defaults',
        ttfb: 'defaults',
        read: 'defaults',
        total: 'defaults',
      },
    },
  };
}

function matcher(...routes: { route: EffectiveRoute }[]) {
  const table = buildRouteTable(routes);
  return (path: string, opts: { method?: string; host?: string; headers?: IncomingHttpHeaders } = {}) =>
    table.match(opts.method ?? 'GET', opts.host, path, opts.headers ?? {})?.route.name;
}

describe('route table', () => {
  test('the first matching route wins, in order', () => {
    const m = matcher(route('a', { path: '/api' }), route('b', { path: '/api/special' }), route('c'));
    assert.equal(m('/api/special'), 'a');
    assert.equal(m('/api'), 'a');
    assert.equal(m('/other'), 'c');
    const n = matcher(route('b', { path: '/api/special' }), route('a', { path: '/api' }));
    assert.equal(n('/api/special/x'), 'b');
    assert.equal(n('/api/x'), 'a');
  });

  test('path prefixes match on whole segments', () => {
    const m = matcher(route('api', { path: '/api' }));
    assert.equal(m('/api'), 'api');
    assert.equal(m('/api/'), 'api');
    assert.equal(m('/api/x/y'), 'api');
    assert.equal(m('/apix'), undefined);
    assert.equal(m('/ap'), undefined);
    assert.equal(m('/'), undefined);
    assert.equal(m('/v1/api'), undefined);
  });

  test('a prefix written with a trailing slash behaves the same', () => {
    const m = matcher(route('api', { path: '/api/' }));
    assert.equal(m('/api'), 'api');
    assert.equal(m('/api/x'), 'api');
    assert.equal(m('/apix'), undefined);
  });

  test('"/" (or no path) matches everything', () => {
    const m = matcher(route('all'));
    for (const p of ['/', '/x', '/a/b/c']) assert.equal(m(p), 'all');
  });

  test('methods: listed ones only, and a GET route serves HEAD', () => {
    const m = matcher(
      route('read', { path: '/r', methods: ['GET'] }),
      route('write', { methods: ['POST', 'PUT'] }),
    );
    assert.equal(m('/r', { method: 'GET' }), 'read');
    assert.equal(m('/r', { method: 'HEAD' }), 'read');
    assert.equal(m('/r', { method: 'POST' }), 'write');
    assert.equal(m('/r', { method: 'DELETE' }), undefined);
    assert.equal(m('/x', { method: 'HEAD' }), undefined);
  });

  test('host: exact, case-insensitive, port ignored', () => {
    const m = matcher(route('api', { host: 'API.example.com' }));
    assert.equal(m('/', { host: 'api.example.com' }), 'api');
    assert.equal(m('/', { host: 'Api.Example.COM:8080' }), 'api');
    assert.equal(m('/', { host: 'www.example.com' }), undefined);
    assert.equal(m('/', { host: 'api.example.com.evil' }), undefined);
    assert.equal(m('/', {}), undefined);
  });

  test('host: *.example.com matches subdomains only', () => {
    const m = matcher(route('wild', { host: '*.example.com' }));
    assert.equal(m('/', { host: 'a.example.com' }), 'wild');
    assert.equal(m('/', { host: 'a.b.example.com:80' }), 'wild');
    assert.equal(m('/', { host: 'example.com' }), undefined);
    assert.equal(m('/', { host: '.example.com' }), undefined);
    assert.equal(m('/', { host: 'evil-example.com' }), undefined);
    assert.equal(m('/', { host: 'example.com.evil' }), undefined);
  });

  test('headers: every listed header must have exactly that value', () => {
    const m = matcher(route('v2', { headers: { 'x-version': '2', 'x-tenant': 'a' } }), route('other'));
    assert.equal(m('/', { headers: { 'x-version': '2', 'x-tenant': 'a' } }), 'v2');
    assert.equal(m('/', { headers: { 'x-version': '2' } }), 'other');
    assert.equal(m('/', { headers: { 'x-version': '3', 'x-tenant': 'a' } }), 'other');
    assert.equal(m('/', { headers: {} }), 'other');
  });

  test('all conditions of a route must hold together', () => {
    const m = matcher(
      route('strict', { path: '/api', host: 'api.example.com', methods: ['POST'], headers: { 'x-k': 'v' } }),
    );
    const ok = { method: 'POST', host: 'api.example.com', headers: { 'x-k': 'v' } };
    assert.equal(m('/api/x', ok), 'strict');
    assert.equal(m('/web', ok), undefined);
    assert.equal(m('/api/x', { ...ok, method: 'GET' }), undefined);
    assert.equal(m('/api/x', { ...ok, host: 'web.example.com' }), undefined);
    assert.equal(m('/api/x', { ...ok, headers: {} }), undefined);
  });

  test('no routes: nothing matches', () => {
    assert.equal(matcher()('/'), undefined);
  });
});

describe('hostOnly', () => {
  test('lower-cases and drops the port', () => {
    assert.equal(hostOnly(undefined), '');
    assert.equal(hostOnly(''), '');
    assert.equal(hostOnly('Example.com'), 'example.com');
    assert.equal(hostOnly('example.com:8080'), 'example.com');
    assert.equal(hostOnly('[::1]:8080'), '[::1]');
    assert.equal(hostOnly('[::1]'), '[::1]');
  });
});
