// biome-ignore-all lint/suspicious/noTemplateCurlyInString: header values and formats hold a literal ${name}
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AccessLogEntry } from './access-log.ts';
import { compileLogFormat, logFormatProblem, REQUEST_OF } from './log-format.ts';

const entry = (over: Partial<AccessLogEntry> = {}): AccessLogEntry => ({
  time: '2026-11-22T00:00:00.000Z',
  request_id: 'rid-1',
  method: 'GET',
  path: '/a?b=1',
  route: 'r',
  upstream: 'u',
  target: 'http://127.0.0.1:9001',
  status: 200,
  outcome: 'ok',
  phase: null,
  error: null,
  client: '::ffff:10.1.2.3',
  bytes_in: 0,
  bytes_out: 512,
  attempts: 1,
  retries: 0,
  dns: null,
  connect: 0.5,
  tls: null,
  ttfb: 12.25,
  total: 13.6,
  budget_ms: 29000,
  ...over,
});

const req = (headers: Record<string, string>, httpVersion = '1.1') =>
  ({ headers, httpVersion }) as unknown as NonNullable<AccessLogEntry[typeof REQUEST_OF]>;

test('combined is nginx combined; request headers come from the entry, escaped as nginx does', () => {
  const line = compileLogFormat('combined')({
    ...entry(),
    [REQUEST_OF]: req({ 'user-agent': 'ua "x"\\ é', referer: 'https://r/' }, '1.0'),
  });
  assert.match(
    line,
    /^10\.1\.2\.3 - - \[\d\d\/[A-Z][a-z]{2}\/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET \/a\?b=1 HTTP\/1\.0" 200 512 "https:\/\/r\/" "ua \\x22x\\x22\\x5C \\xC3\\xA9"\n$/,
  );
  const bare = compileLogFormat('combined')(entry({ method: '', path: '', client: undefined }));
  assert.match(bare, /^- - - \[.*\] "-" 200 512 "-" "-"\n$/);
});

test('templates: nginx variables, Sluice ones, ${name} form; json unchanged by the request field', () => {
  const f = compileLogFormat(
    '$request_time ${status}x $upstream_addr $upstream_header_time $route/$outcome $ttfb $http_x_tenant $args $uri',
  );
  assert.equal(
    f({ ...entry(), [REQUEST_OF]: req({ 'x-tenant': 'acme' }) }),
    '0.014 200x 127.0.0.1:9001 0.013 r/ok 12.25 acme b=1 /a\n',
  );
  const json = compileLogFormat('json')({ ...entry(), [REQUEST_OF]: req({ a: 'b' }) });
  assert.deepEqual(JSON.parse(json), entry());
});

test('unknown variables are named; json and combined need no check', () => {
  assert.equal(logFormatProblem('json'), undefined);
  assert.equal(logFormatProblem('combined'), undefined);
  assert.equal(logFormatProblem('$status $http_x_any'), undefined);
  assert.match(
    logFormatProblem('$status $sent_http_x') ?? '',
    /^unknown variable \$sent_http_x \(known: \$remote_addr/,
  );
});
