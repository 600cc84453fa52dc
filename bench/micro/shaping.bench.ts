// biome-ignore-all lint/suspicious/noTemplateCurlyInString: header values hold a literal ${request_id}
/**
 * Micro-benchmark of the per-request work of shaping (SPEC §13), plain loops timed with
 * performance.now, no dependency: the request header edits of bench/macro/shaping.ts (3 set, one with
 * ${request_id}, 1 remove) on a realistic forwarded header list, the regex rewrite, and one access-log
 * line as json against combined. Run: `npx node bench/micro/shaping.bench.ts`. Each case is warmed up,
 * then timed in a few rounds; the best round is reported (least disturbed by other load on the
 * machine). Numbers are only comparable on the same machine.
 */
import { resolveShape } from '../../src/config/shape-config.ts';
import type { AccessLogEntry } from '../../src/observability/access-log.ts';
import { compileLogFormat, REQUEST_OF } from '../../src/observability/log-format.ts';
import { applyEdits, compileShape, rewritePath } from '../../src/proxy/shape.ts';

const ITERATIONS = 1_000_000;
const ROUNDS = 5;
let sink = 0;

function measure(name: string, fn: () => number): number {
  for (let i = 0; i < 100_000; i++) sink += fn();
  let best = Number.POSITIVE_INFINITY;
  for (let r = 0; r < ROUNDS; r++) {
    const t = performance.now();
    for (let i = 0; i < ITERATIONS; i++) sink += fn();
    best = Math.min(best, performance.now() - t);
  }
  const ns = (best * 1e6) / ITERATIONS;
  console.log(`${name.padEnd(58)} ${ns.toFixed(1).padStart(7)} ns/op`);
  return ns;
}

const shape = compileShape(
  resolveShape(
    [
      {
        path: ['routes', 0],
        headers: {
          request: {
            set: { 'X-Tenant': 'acme', 'X-Gateway': 'sluice', 'X-Trace': 'req-${request_id}' },
            remove: ['X-Debug'],
          },
        },
        host: undefined,
      },
    ],
    { rewrite: { regex: '^/api/v1/(.*)$', to: '/$1' }, stripPrefix: false, path: ['routes', 0] },
    [],
    () => undefined,
  ),
  '',
);
const edits = shape.request as NonNullable<typeof shape.request>;
const rewrite = shape.rewrite as NonNullable<typeof shape.rewrite>;
// What #forwardingHeaders hands over for a typical browser-ish request.
const forwarded = [
  'Host',
  'api.example.com',
  'User-Agent',
  'Mozilla/5.0 (X11; Linux x86_64)',
  'Accept',
  'application/json',
  'Accept-Encoding',
  'gzip, br',
  'Accept-Language',
  'en',
  'Cookie',
  'session=abc',
  'x-forwarded-for',
  '203.0.113.7',
  'x-forwarded-proto',
  'https',
  'x-forwarded-host',
  'api.example.com',
  'via',
  '1.1 sluice',
  'x-request-id',
  '01M8VPPQ4B8ZG3AKJA1JNVTN7T',
];
const values = {
  clientIp: '203.0.113.7',
  requestId: '01M8VPPQ4B8ZG3AKJA1JNVTN7T',
  host: 'api.example.com',
  route: 'all',
};

console.log('shaping, per request');
const copy = measure('copy of the forwarded headers (baseline)', () => forwarded.slice().length);
const withEdits = measure('copy + header edits (3 set, 1 with ${request_id}, 1 remove)', () => {
  const h = forwarded.slice();
  applyEdits(h, edits, values);
  return h.length;
});
const rw = measure(
  'regex rewrite ^/api/v1/(.*)$ → /$1',
  () => (rewritePath(rewrite, '/api/v1/users/42/orders') as string).length,
);
console.log(
  `${'= edits + rewrite, per request'.padEnd(58)} ${(withEdits - copy + rw).toFixed(1).padStart(7)} ns`,
);

const entry: AccessLogEntry = {
  time: '2026-12-02T15:41:52.123Z',
  request_id: '01M8VPPQ4B8ZG3AKJA1JNVTN7T',
  method: 'GET',
  path: '/users/42/orders?page=2',
  route: 'all',
  upstream: 'up',
  target: 'http://127.0.0.1:9001',
  status: 200,
  outcome: 'ok',
  phase: null,
  error: null,
  client: '203.0.113.7',
  bytes_in: 0,
  bytes_out: 512,
  attempts: 1,
  retries: 0,
  dns: null,
  connect: 0.02,
  tls: null,
  ttfb: 1.25,
  total: 1.61,
  budget_ms: 29000,
  budget_source: 'route',
  [REQUEST_OF]: {
    httpVersion: '1.1',
    headers: { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64)', referer: 'https://shop.example.com/cart' },
  } as unknown as NonNullable<AccessLogEntry[typeof REQUEST_OF]>,
};
console.log('\naccess-log line, per request');
const json = compileLogFormat('json');
const combined = compileLogFormat('combined');
const template = compileLogFormat(
  '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time route=$route outcome=$outcome ttfb_ms=$ttfb',
);
measure('json', () => json(entry).length);
measure('combined', () => combined(entry).length);
measure('combined + $request_time and 3 Sluice fields', () => template(entry).length);
if (sink === -1) console.log(sink);
