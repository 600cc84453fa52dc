/**
 * What access control costs per request (issue 16, docs/benchmarks.md "Access control"), in one run
 * and one Sluice process with one route per case, all to the same upstream:
 *
 *   plain · allow list · local rate limit · API key · basic (cached verification) ·
 *   JWT ES256 with the verified-token cache · JWT ES256 and RS256 verified on every request (cache: false) ·
 *   headers + regex rewrite + local rate limit (issue 16's ≤ 10 % case) · the same + JWT
 *
 *   npx node bench/macro/access.ts [--rounds 3] [--duration 3] [--connections 64] [--json out.json]
 *
 * Rounds are interleaved (the order of the cases rotates each round). Sluice is pinned to core 0;
 * wrk, the upstream nginx and this runner to core 1. The rate limit is set high enough never to refuse,
 * so it measures the bucket arithmetic, not 429s.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import { parseArgs } from 'node:util';
import bcrypt from 'bcryptjs';
import { exportSPKI, generateKeyPair, SignJWT } from 'jose';
import { Gate } from '../../src/access/gate.ts';
import { LocalRateLimiter } from '../../src/access/rate-limit.ts';
import { loadConfigText } from '../../src/config/load.ts';
import {
  CLK_TCK,
  fmtInt,
  fmtUs,
  freePort,
  LOAD_CORE,
  log,
  machineInfo,
  makeTmpDir,
  mdTable,
  median,
  nginxConf,
  pinSelf,
  raiseNofile,
  requireTools,
  startNginx,
  startSluiceWith,
  treeTicks,
  waitReady,
  wrk,
} from './lib.ts';

const { values: flags } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '3' },
    connections: { type: 'string', default: '64' },
    json: { type: 'string' },
  },
});
const rounds = Number(flags.rounds);
const duration = Number(flags.duration);
const connections = Number(flags.connections);

requireTools(['nginx', 'wrk', 'taskset']);
raiseNofile(8192);
pinSelf(LOAD_CORE);
const tmp = makeTmpDir();
const machine = machineInfo();
log(`cpu ${machine.cpu}; node ${machine.node}; nginx ${machine.nginx}; ${machine.wrk}`);

// The upstream: nginx on the load core, a static 100-byte /small.
const upDir = path.join(tmp, 'upstream');
mkdirSync(path.join(upDir, 'www'), { recursive: true });
writeFileSync(path.join(upDir, 'www', 'small'), Buffer.alloc(100, 'x'));
const upPort = await freePort();
const upstreamProc = startNginx(
  'upstream',
  LOAD_CORE,
  upDir,
  nginxConf(upDir, upPort, `    root ${upDir}/www;\n    location / { try_files $uri =404; }`),
);
const upstream = `http://127.0.0.1:${upPort}`;
await waitReady(`${upstream}/small`, upstreamProc);

// Credentials.
const creds = path.join(tmp, 'creds');
mkdirSync(creds, { recursive: true });
writeFileSync(path.join(creds, 'users'), `bench:${bcrypt.hashSync('bench-password', 10)}\n`);
writeFileSync(path.join(creds, 'keys'), 'bench:bench-key-0000000000001\n');
const { publicKey, privateKey } = await generateKeyPair('ES256');
writeFileSync(path.join(creds, 'jwt.pem'), await exportSPKI(publicKey));
const rsa = await generateKeyPair('RS256');
writeFileSync(path.join(creds, 'jwt-rs.pem'), await exportSPKI(rsa.publicKey));
const rsToken = await new SignJWT({ sub: 'bench' })
  .setProtectedHeader({ alg: 'RS256' })
  .setIssuer('bench-issuer')
  .setAudience('bench-api')
  .setExpirationTime('2h')
  .sign(rsa.privateKey);
const token = await new SignJWT({ sub: 'bench' })
  .setProtectedHeader({ alg: 'ES256' })
  .setIssuer('bench-issuer')
  .setAudience('bench-api')
  .setExpirationTime('2h')
  .sign(privateKey);

// Issue 16's shaping case: three request headers set (one from a variable), one removed, one response
// header set, and a regex rewrite.
const SHAPE = `{ request: { set: { X-Request-Start: "\${request_id}", X-Env: prod, X-Tenant: acme }, remove: [Cookie] }, response: { set: { Strict-Transport-Security: "max-age=63072000" } } }`;
const jwt = (cache: boolean, pem = 'jwt.pem') =>
  `{ jwt: { public_key: "${creds}/${pem}", issuer: bench-issuer, audience: bench-api, cache: ${cache} } }`;
const sluice = await startSluiceWith(
  tmp,
  'sluice',
  (port, adminPort) => `listen: 127.0.0.1:${port}
admin: { listen: 127.0.0.1:${adminPort} }
access_log: off
upstreams: { up: { targets: ["${upstream}"] } }
routes:
  - { name: plain, match: { path: /plain }, upstream: up, strip_prefix: true }
  - { name: allow, match: { path: /allow }, upstream: up, strip_prefix: true, allow: ["10.0.0.0/8", "127.0.0.0/8"], deny: ["192.0.2.0/24"] }
  - { name: ratelimit, match: { path: /rl }, upstream: up, strip_prefix: true, rate_limit: { rate: 100000000/s, burst: 1000000 } }
  - { name: apikey, match: { path: /key }, upstream: up, strip_prefix: true, auth: { api_key: { keys: "${creds}/keys" }, identity_header: X-Client } }
  - { name: basic, match: { path: /basic }, upstream: up, strip_prefix: true, auth: { basic: { users: "${creds}/users" }, identity_header: X-User } }
  - { name: jwt, match: { path: /jwt }, upstream: up, strip_prefix: true, auth: ${jwt(true)} }
  - { name: jwt-nocache, match: { path: /jwtv }, upstream: up, strip_prefix: true, auth: ${jwt(false)} }
  - { name: jwt-rs-nocache, match: { path: /jwtrs }, upstream: up, strip_prefix: true, auth: ${jwt(false, 'jwt-rs.pem')} }
  - { name: shaped, match: { path: /shaped }, upstream: up, rewrite: { regex: "^/shaped/(.*)$", to: "/$1" }, rate_limit: { rate: 100000000/s, burst: 1000000 }, headers: ${SHAPE} }
  - { name: shaped-jwt, match: { path: /sjwt }, upstream: up, rewrite: { regex: "^/sjwt/(.*)$", to: "/$1" }, rate_limit: { rate: 100000000/s, burst: 1000000, key: identity }, headers: ${SHAPE}, auth: ${jwt(true)} }
`,
  { readyPath: '/plain/small' },
);

const headerScript = (name: string, header: string, value: string) => {
  const file = path.join(tmp, `${name}.lua`);
  writeFileSync(file, `wrk.headers["${header}"] = "${value}"\n`);
  return file;
};
interface Case {
  name: string;
  path: string;
  script?: string;
}
const cases: Case[] = [
  { name: 'plain route', path: '/plain/small' },
  { name: 'allow + deny lists', path: '/allow/small' },
  { name: 'local rate limit', path: '/rl/small' },
  {
    name: 'API key',
    path: '/key/small',
    script: headerScript('key', 'X-Api-Key', 'bench-key-0000000000001'),
  },
  {
    name: 'basic (bcrypt, cached)',
    path: '/basic/small',
    script: headerScript(
      'basic',
      'Authorization',
      `Basic ${Buffer.from('bench:bench-password').toString('base64')}`,
    ),
  },
  {
    name: 'JWT ES256, token cache',
    path: '/jwt/small',
    script: headerScript('jwt', 'Authorization', `Bearer ${token}`),
  },
  {
    name: 'JWT ES256, verified every request',
    path: '/jwtv/small',
    script: headerScript('jwtv', 'Authorization', `Bearer ${token}`),
  },
  {
    name: 'JWT RS256, verified every request',
    path: '/jwtrs/small',
    script: headerScript('jwtrs', 'Authorization', `Bearer ${rsToken}`),
  },
  { name: 'headers + regex rewrite + local rate limit', path: '/shaped/small' },
  {
    name: 'headers + rewrite + rate limit by identity + JWT (token cache)',
    path: '/sjwt/small',
    script: headerScript('sjwt', 'Authorization', `Bearer ${token}`),
  },
];

interface Row {
  rps: number[];
  p50: number[];
  p99: number[];
  cpu: number[];
  errors: number;
}
const rows = new Map<string, Row>(
  cases.map((c) => [c.name, { rps: [], p50: [], p99: [], cpu: [], errors: 0 }]),
);
const wrkLog = path.join(tmp, 'wrk.log');
// Warm-up: V8 optimises the hot path of every case once.
for (const c of cases) await wrk(`${sluice.url}${c.path}`, connections, 1, wrkLog, c.script);
for (let round = 1; round <= rounds; round++) {
  log(`round ${round}/${rounds}`);
  const order = [...cases.slice(round - 1), ...cases.slice(0, round - 1)];
  for (const c of order) {
    const row = rows.get(c.name) as Row;
    await wrk(`${sluice.url}${c.path}`, connections, 1, wrkLog, c.script);
    const t0 = treeTicks(sluice.proc.pid);
    const r = await wrk(`${sluice.url}${c.path}`, connections, duration, wrkLog, c.script);
    const t1 = treeTicks(sluice.proc.pid);
    if (r.requests === 0) {
      // A run that completed nothing (the shared machine stalled the proxy core): not a figure.
      log(`${c.name}: no request completed, run discarded:\n${readFileSync(wrkLog, 'utf8').slice(-600)}`);
      continue;
    }
    row.rps.push(r.rps);
    row.p50.push(r.p50us);
    row.p99.push(r.p99us);
    row.cpu.push((((t1 - t0) / CLK_TCK) * 1e6) / Math.max(1, r.requests));
    row.errors += r.non2xx + r.socketErrors;
    log(`${c.name}: ${fmtInt(r.rps)} req/s, p99 ${fmtUs(r.p99us)}${r.non2xx ? `, ${r.non2xx} non-2xx` : ''}`);
  }
}
await Promise.all([sluice.stop(), upstreamProc.stop()]);

const plainRps = median(rows.get('plain route')?.rps ?? [0]);
const plainCpu = median(rows.get('plain route')?.cpu ?? [0]);
const table = cases.map((c) => {
  const r = rows.get(c.name) as Row;
  const rps = median(r.rps);
  const cpu = median(r.cpu);
  return [
    c.name,
    fmtInt(rps),
    `${fmtInt(Math.min(...r.rps))}–${fmtInt(Math.max(...r.rps))}`,
    `${(((rps - plainRps) / plainRps) * 100).toFixed(1)} %`,
    fmtUs(median(r.p50)),
    fmtUs(median(r.p99)),
    cpu.toFixed(1),
    `${cpu - plainCpu >= 0 ? '+' : ''}${(cpu - plainCpu).toFixed(1)}`,
    String(r.errors),
  ];
});
console.log(
  `\n${machine.cpu}; ${machine.node}; ${rounds} rounds × ${duration} s, wrk -t1 -c${connections}\n`,
);
console.log(
  `${mdTable(
    ['case', 'req/s', 'range', 'vs plain', 'p50', 'p99', 'CPU µs/req', 'vs plain', 'errors'],
    table,
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
  )}\n`,
);

// The gate alone, in this process (core 1): what each check costs without HTTP around it, a figure
// the shared machine disturbs far less than req/s.
const config = loadConfigText(
  readFileSync(path.join(sluice.dir, 'sluice.yaml'), 'utf8').replace(/^listen: .*$/m, 'listen: 127.0.0.1:0'),
  'bench.yaml',
);
const gateOf = (name: string) => {
  const access = config.routes.find((r) => r.name === name)?.access;
  if (access === undefined) throw new Error(`route ${name} has no access settings`);
  return new Gate(name, access, new LocalRateLimiter());
};
const fakeReq = (headers: Record<string, string>) => ({ headers }) as unknown as IncomingMessage;
async function perCheck(route: string, headers: Record<string, string>, n: number): Promise<number> {
  const gate = gateOf(route);
  const req = fakeReq(headers);
  const first = await gate.check(req, '127.0.0.1');
  if (first instanceof Error) throw new Error(`${route}: refused: ${first.message}`);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const v = gate.check(req, '127.0.0.1');
    if (v instanceof Promise) await v;
  }
  return ((performance.now() - t0) * 1e6) / n;
}
const basicAuth = `Basic ${Buffer.from('bench:bench-password').toString('base64')}`;
const bearer = { authorization: `Bearer ${token}` };
const checks: [string, number][] = [
  ['allow + deny lists', await perCheck('allow', {}, 1_000_000)],
  ['local rate limit', await perCheck('ratelimit', {}, 1_000_000)],
  ['API key', await perCheck('apikey', { 'x-api-key': 'bench-key-0000000000001' }, 200_000)],
  ['basic (bcrypt, cached)', await perCheck('basic', { authorization: basicAuth }, 200_000)],
  ['JWT ES256, token cache', await perCheck('jwt', bearer, 1_000_000)],
  ['JWT ES256, verified every request', await perCheck('jwt-nocache', bearer, 5_000)],
  [
    'JWT RS256, verified every request',
    await perCheck('jwt-rs-nocache', { authorization: `Bearer ${rsToken}` }, 5_000),
  ],
];
// A bcrypt verification that is not cached (a client's first request, or after 60 s).
{
  const t0 = performance.now();
  for (let i = 0; i < 5; i++) await gateOf('basic').check(fakeReq({ authorization: basicAuth }), '127.0.0.1');
  checks.push(['basic, not cached (bcrypt cost 10)', ((performance.now() - t0) * 1e6) / 5]);
}
console.log(
  `${mdTable(
    ['check (in process)', 'ns per request'],
    checks.map(([n, ns]) => [n, fmtInt(ns)]),
    ['l', 'r'],
  )}\n`,
);
if (flags.json)
  writeFileSync(flags.json, JSON.stringify({ machine, rows: Object.fromEntries(rows), checks }, null, 2));
process.exit(0);
