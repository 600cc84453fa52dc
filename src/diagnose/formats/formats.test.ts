/**
 * Every access-log format `sluice logs` reads, from lines in each product's documented format, and
 * the lines they must refuse. (Real nginx logs are produced by a real nginx in test/logs.test.ts.)
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { albParser } from './alb.ts';
import { detectFormat } from './detect.ts';
import { apigwParser, kongParser, sluiceParser } from './json-formats.ts';
import { nginxParser, parseTail } from './nginx.ts';
import { type LogParser, newRecord } from './record.ts';

function parse(parser: LogParser, line: string) {
  const b = Buffer.from(line);
  const rec = newRecord();
  if (!parser.parse(b, 0, b.length, rec)) return undefined;
  const text = (s: number, e: number) => Buffer.from(rec.buf.subarray(s, e)).toString();
  return {
    method: text(rec.methodAt, rec.methodEnd),
    target: text(rec.targetAt, rec.targetEnd),
    templated: rec.templated,
    status: rec.status,
    latencyMs: Number.isNaN(rec.latencyMs) ? null : Math.round(rec.latencyMs * 1000) / 1000,
    phase: rec.timeoutPhase,
    budgetMs: Number.isNaN(rec.budgetMs) ? null : rec.budgetMs,
    time: parser.time(rec),
    skip: rec.skip,
  };
}

const GARBAGE = [
  '',
  'garbage',
  '{"not":"a log"}',
  '{broken json',
  '127.0.0.1 - - [23/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" abc 12',
  '\u0000\u0001\u0002 binary',
  '2026-11-23 10:00:00 INFO started',
];

describe('nginx', () => {
  const prefix = '203.0.113.7 - alice [23/Nov/2026:10:00:05 +0100] "GET /api/users/42?x=1 HTTP/1.1" 504 167';
  const t = Date.UTC(2026, 10, 23, 9, 0, 5);

  test('combined, without timing fields', () => {
    assert.deepEqual(parse(nginxParser, `${prefix} "-" "curl/8.5.0"`), {
      method: 'GET',
      target: '/api/users/42?x=1',
      templated: false,
      status: 504,
      latencyMs: null,
      phase: null,
      budgetMs: null,
      time: t,
      skip: false,
    });
  });

  test('common (no referer, no user agent)', () => {
    const r = parse(
      nginxParser,
      '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326',
    );
    assert.equal(r?.target, '/apache_pb.gif');
    assert.equal(r?.status, 200);
    assert.equal(r?.time, Date.UTC(2000, 9, 10, 20, 55, 36));
  });

  test('with $request_time, $upstream_response_time, $upstream_status, bare', () => {
    assert.equal(parse(nginxParser, `${prefix} "-" "curl/8.5.0" 1.001`)?.latencyMs, 1001);
    assert.equal(parse(nginxParser, `${prefix} "-" "curl/8.5.0" 1.001 1.000 504`)?.latencyMs, 1001);
    // Only the upstream time: the latency falls back to it.
    assert.equal(parse(nginxParser, `${prefix} "-" "curl/8.5.0" rt=- urt=0.250`)?.latencyMs, 250);
    const tail = (s: string) => {
      const b = Buffer.from(s);
      return { ...parseTail(b, 0, b.length) };
    };
    assert.deepEqual(tail(' 1.001 1.000 504'), { requestTime: 1.001, upstreamTime: 1, upstreamStatus: 504 });
    assert.deepEqual(tail(' 0.002 - -'), {
      requestTime: 0.002,
      upstreamTime: Number.NaN,
      upstreamStatus: Number.NaN,
    });
    // Two upstreams tried: times summed, the last status.
    assert.deepEqual(tail(' 1.503 0.500, 1.001 502, 504'), {
      requestTime: 1.503,
      upstreamTime: 1.501,
      upstreamStatus: 504,
    });
    assert.deepEqual(tail(' 1.503 0.500 : 1.001 502 : 504'), {
      requestTime: 1.503,
      upstreamTime: 1.501,
      upstreamStatus: 504,
    });
    // `$request_length` before the times is not a status.
    assert.deepEqual(tail(' 342 0.120 0.119 200'), {
      requestTime: 0.12,
      upstreamTime: 0.119,
      upstreamStatus: 200,
    });
  });

  test("the nginx blog's key=value format, glued to the user agent", () => {
    const line = `${prefix} "-" "curl/8.5.0"rt=1.004 uct="0.000" uht="-" urt="1.003"`;
    assert.equal(parse(nginxParser, line)?.latencyMs, 1004);
    const b = Buffer.from(' rt=1.004 uct="0.000" uht="-" urt="0.500, 0.503" us="502, 504"');
    const t = parseTail(b, 0, b.length);
    assert.equal(t.requestTime, 1.004);
    assert.ok(Math.abs(t.upstreamTime - 1.003) < 1e-9, String(t.upstreamTime));
    assert.equal(t.upstreamStatus, 504);
  });

  test("nginx.org's `main` format: a quoted $http_x_forwarded_for, then the time", () => {
    assert.equal(
      parse(nginxParser, `${prefix} "-" "curl/8.5.0" "198.51.100.1, 10.0.0.1" 0.031`)?.latencyMs,
      31,
    );
  });

  test('escaped quotes in the user agent; a request line that is not one', () => {
    assert.equal(parse(nginxParser, `${prefix} "-" "evil \\"agent\\"" 0.5`)?.latencyMs, 500);
    const r = parse(
      nginxParser,
      '198.51.100.9 - - [23/Nov/2026:10:00:05 +0000] "\\x16\\x03\\x01" 400 157 "-" "-" 0.001',
    );
    assert.equal(r?.status, 400);
    assert.equal(r?.method, '\\x16\\x03\\x01');
  });

  test('$time_iso8601 instead of $time_local', () => {
    const r = parse(
      nginxParser,
      '127.0.0.1 - - [2026-11-23T10:00:05+00:00] "GET / HTTP/1.1" 504 0 "-" "-" 1.000',
    );
    assert.equal(r?.time, Date.UTC(2026, 10, 23, 10, 0, 5));
    assert.equal(r?.latencyMs, 1000);
  });

  test('refuses what is not nginx', () => {
    for (const g of GARBAGE) assert.equal(parse(nginxParser, g), undefined, g);
  });
});

describe('Kong', () => {
  // The file-log / http-log plugins' document (abridged from Kong's docs).
  const line = JSON.stringify({
    request: {
      method: 'GET',
      uri: '/orders/9f1c2ab8?x=1',
      url: 'http://kong:8000/orders/9f1c2ab8?x=1',
      size: 75,
      querystring: { x: '1' },
      headers: { host: 'kong' },
    },
    upstream_uri: '/orders/9f1c2ab8?x=1',
    response: { status: 504, size: 434, headers: {} },
    tries: [{ balancer_latency: 0, port: 8080, ip: '10.0.0.5' }],
    route: { name: 'orders', paths: ['/orders'] },
    service: { name: 'orders', read_timeout: 60000 },
    latencies: { request: 60012, kong: 10, proxy: 60002 },
    client_ip: '127.0.0.1',
    started_at: 1795420805000,
  });

  test('method, uri, status, latencies.request, started_at', () => {
    const r = parse(kongParser, line);
    assert.equal(r?.method, 'GET');
    assert.equal(r?.target, '/orders/9f1c2ab8?x=1');
    assert.equal(r?.status, 504);
    assert.equal(r?.latencyMs, 60012);
    assert.equal(r?.time, 1795420805000);
  });

  test('refuses other JSON and garbage', () => {
    for (const g of GARBAGE) assert.equal(parse(kongParser, g), undefined, g);
  });
});

describe('Sluice', () => {
  const entry = {
    time: '2026-11-23T10:00:05.123Z',
    request_id: '01JD0000000000000000000000',
    method: 'POST',
    path: '/api/reports/77',
    route: 'reports',
    status: 504,
    outcome: 'timeout',
    phase: 'ttfb',
    total: 2001.5,
    budget_ms: 2000,
  };

  test('phase and budget are known', () => {
    const r = parse(sluiceParser, JSON.stringify(entry));
    assert.equal(r?.phase, 'ttfb');
    assert.equal(r?.budgetMs, 2000);
    assert.equal(r?.latencyMs, 2001.5);
    assert.equal(r?.time, Date.parse(entry.time));
  });

  test('job lines are read but are not requests', () => {
    const r = parse(
      sluiceParser,
      JSON.stringify({ ...entry, status: 200, outcome: 'job_completed', phase: null }),
    );
    assert.equal(r?.skip, true);
  });

  test('refuses garbage', () => {
    for (const g of GARBAGE) assert.equal(parse(sluiceParser, g), undefined, g);
  });
});

describe('AWS ALB', () => {
  // Field layout of AWS's "Access log entries" page.
  const alb = (rpt: string, tpt: string, rspt: string, elb: string, target: string, tgt = '10.0.0.1:80') =>
    `https 2026-11-23T10:01:00.186641Z app/my-loadbalancer/50dc6c495c0c9188 192.168.131.39:2817 ${tgt} ${rpt} ${tpt} ${rspt} ${elb} ${target} 34 366 "GET https://www.example.com:443/api/items/123?x=1 HTTP/1.1" "curl/8.5.0" ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 "Root=1-58337262-36d228ad5d99923122bbe354" "www.example.com" "arn:aws:acm:us-east-2:123456789012:certificate/12345678-1234-1234-1234-123456789012" 1 2026-11-23T10:00:00.186000Z "forward" "-" "-" "10.0.0.1:80" "${target}" "-" "-" TID_1234abcd5678ef90`;

  test('a served request: the three times summed', () => {
    const r = parse(albParser, alb('0.000', '0.412', '0.001', '200', '200'));
    assert.equal(r?.method, 'GET');
    assert.equal(r?.target, 'https://www.example.com:443/api/items/123?x=1');
    assert.equal(r?.status, 200);
    assert.equal(r?.latencyMs, 413);
    assert.equal(r?.phase, null);
  });

  test('a 504 from the load balancer: -1, the wait from the creation time, the phase', () => {
    const r = parse(albParser, alb('0.000', '-1', '-1', '504', '-'));
    assert.equal(r?.status, 504);
    assert.equal(r?.latencyMs, 60000); // to the millisecond: time − request_creation_time
    assert.equal(r?.phase, 'ttfb');
    assert.equal(r?.time, Date.parse('2026-11-23T10:01:00.186Z'));
    assert.equal(parse(albParser, alb('-1', '-1', '-1', '504', '-', '-'))?.phase, 'connect');
    // A 504 the target sent itself is not a load-balancer timeout.
    assert.equal(parse(albParser, alb('0.000', '2.000', '0.000', '504', '504'))?.phase, null);
  });

  test('Classic ELB lines', () => {
    const r = parse(
      albParser,
      '2015-05-13T23:39:43.945958Z my-loadbalancer 192.168.131.39:2817 10.0.0.1:80 0.000073 0.001048 0.000057 200 200 0 29 "GET http://www.example.com:80/ HTTP/1.1" "curl/7.38.0" - -',
    );
    assert.equal(r?.status, 200);
    assert.equal(r?.target, 'http://www.example.com:80/');
    assert.ok(Math.abs((r?.latencyMs ?? 0) - 1.178) < 0.001);
  });

  test('refuses garbage', () => {
    for (const g of GARBAGE) assert.equal(parse(albParser, g), undefined, g);
  });
});

describe('API Gateway', () => {
  test("REST API: the console's JSON example plus latencies and error fields", () => {
    const line = JSON.stringify({
      requestId: 'c6af9ac6-7b61-11e6-9a41-93e8deadbeef',
      ip: '203.0.113.7',
      caller: '-',
      user: '-',
      requestTime: '23/Nov/2026:10:00:29 +0000',
      httpMethod: 'GET',
      resourcePath: '/reports/{reportId}',
      status: '504',
      protocol: 'HTTP/1.1',
      responseLength: '41',
      responseLatency: '29004',
      integrationLatency: '29001',
      errorResponseType: 'INTEGRATION_TIMEOUT',
      errorMessage: 'Endpoint request timed out',
    });
    const r = parse(apigwParser, line);
    assert.equal(r?.method, 'GET');
    assert.equal(r?.target, '/reports/{reportId}');
    assert.equal(r?.templated, true);
    assert.equal(r?.status, 504);
    assert.equal(r?.latencyMs, 29004);
    assert.equal(r?.phase, 'integration');
    assert.equal(r?.time, Date.UTC(2026, 10, 23, 10, 0, 29));
  });

  test('HTTP API: routeKey, requestTimeEpoch, integrationLatency only', () => {
    const line = JSON.stringify({
      requestId: 'JDh2vhH5oAMEV3Q=',
      ip: '203.0.113.7',
      requestTime: '23/Nov/2026:10:00:29 +0000',
      requestTimeEpoch: 1795428029000,
      httpMethod: 'POST',
      routeKey: 'POST /orders/{id}/pay',
      status: 200,
      protocol: 'HTTP/1.1',
      responseLength: 12,
      integrationLatency: 812,
    });
    const r = parse(apigwParser, line);
    assert.equal(r?.target, '/orders/{id}/pay');
    assert.equal(r?.latencyMs, 812);
    assert.equal(r?.time, 1795428029000);
    assert.equal(r?.phase, null);
  });

  test('refuses garbage and the other JSON formats', () => {
    for (const g of GARBAGE) assert.equal(parse(apigwParser, g), undefined, g);
    assert.equal(
      parse(apigwParser, JSON.stringify({ request: { method: 'GET' }, response: { status: 200 } })),
      undefined,
    );
  });
});

test('detection picks the format that parses most of the first lines', () => {
  const lines = (...l: string[]) => l.map((s) => Buffer.from(s));
  const nginx = '127.0.0.1 - - [23/Nov/2026:10:00:05 +0000] "GET / HTTP/1.1" 200 5 "-" "-" 0.001';
  assert.equal(detectFormat(lines(nginx, 'garbage', nginx))?.format, 'nginx');
  assert.equal(
    detectFormat(
      lines(
        JSON.stringify({ request_id: 'x', method: 'GET', path: '/', status: 200, outcome: 'ok', total: 1 }),
      ),
    )?.format,
    'sluice',
  );
  assert.equal(detectFormat(lines('garbage', 'more garbage')), null);
});
