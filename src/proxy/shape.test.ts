// biome-ignore-all lint/suspicious/noTemplateCurlyInString: header values and formats hold a literal ${name}
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveShape, type ShapeLayer } from '../config/shape-config.ts';
import { applyEdits, compileShape, compileValue, rewritePath, targetHost } from './shape.ts';

const values = { clientIp: '10.0.0.1', requestId: 'rid', host: 'h.example', route: 'r' };

test('values compile once into literals and variables; a plain value stays a string', () => {
  assert.equal(compileValue('plain ${NOT_RESERVED}'), 'plain ${NOT_RESERVED}');
  assert.deepEqual(compileValue('a ${client_ip} b ${route}'), ['a ', 0, ' b ', 3]);
  const shape = compileShape(
    resolveShape(
      [
        {
          path: ['routes', 0],
          headers: { request: { set: { 'X-V': '${request_id}@${host}' } } },
          host: undefined,
        },
      ],
      { rewrite: undefined, stripPrefix: false, path: ['routes', 0] },
      [],
      () => undefined,
    ),
    '',
  );
  const headers = ['X-V', 'client', 'Accept', '*/*'];
  applyEdits(headers, shape.request as NonNullable<typeof shape.request>, values);
  assert.deepEqual(headers, ['Accept', '*/*', 'X-V', 'rid@h.example']);
});

test('layers merge per header name: the most specific layer that names a header decides it', () => {
  const layer = (path: string, request: object): ShapeLayer => ({
    path: [path],
    headers: { request },
    host: undefined,
  });
  const s = resolveShape(
    [
      layer('defaults', { set: { 'X-A': 'd', 'X-B': 'd' }, remove: ['X-C'] }),
      layer('upstream', { add: { 'x-a': 'u' } }),
      layer('route', { set: { 'X-C': 'r' }, remove: ['x-b'] }),
    ],
    { rewrite: undefined, stripPrefix: false, path: ['routes', 0] },
    [],
    () => undefined,
  );
  assert.deepEqual(s?.request, { set: [['X-C', 'r']], add: [['x-a', 'u']], remove: ['x-b'] });
});

test('rewritePath: prefix, regex groups, normalisation again, escapes refused', () => {
  const shape = (rewrite: { prefix: string } | { regex: string; to: string }, prefix = '/api') =>
    compileShape(
      resolveShape([], { rewrite, stripPrefix: false, path: ['routes', 0] }, [], () => undefined),
      prefix,
    ).rewrite as NonNullable<ReturnType<typeof compileShape>['rewrite']>;
  const p = shape({ prefix: '/v2' });
  assert.equal(rewritePath(p, '/api'), '/v2');
  assert.equal(rewritePath(p, '/api/x/y'), '/v2/x/y');
  const slash = shape({ prefix: '/' });
  assert.equal(rewritePath(slash, '/api/x'), '/x');
  assert.equal(rewritePath(slash, '/api'), '/');
  const re = shape({ regex: '^/api/(\\w+)/(\\d+)$', to: '/$2//$1/$$' });
  assert.equal(rewritePath(re, '/api/users/7'), '/7/users/$', 'normalised again: // merged');
  assert.equal(rewritePath(re, '/api/users/x'), '/api/users/x', 'no match: unchanged');
  const cap = shape({ regex: '^/api/(.*)$', to: '$1' });
  assert.equal(rewritePath(cap, '/api/a'), '/a', 'a leading / is added');
  for (const bad of ['/api/.', '/api/..', '/api/a/%2e%2E/b', '/api/a%2Fb', '/api/a%2fb', '/api/%2e'])
    assert.equal(rewritePath(cap, bad), undefined, bad);
  assert.equal(rewritePath(cap, '/api/a..b/.c'), '/a..b/.c', 'dots inside a segment are fine');
});

test('targetHost is the authority of the target URL (default ports omitted, as URL.origin does)', () => {
  assert.equal(targetHost('http://127.0.0.1:9001'), '127.0.0.1:9001');
  assert.equal(targetHost('https://api.internal'), 'api.internal');
  assert.equal(targetHost('http://[::1]:8080'), '[::1]:8080');
});
