/**
 * `sluice probe` through the real CLI against real servers on 127.0.0.1: known header delays, a
 * slow body, a refused port, an HTTPS server with a self-signed certificate made by openssl in the
 * test, keep-alive reuse, concurrency, and TTFB checked against curl's on the same endpoint.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ProbeReport } from '../../src/diagnose/probe.ts';
import { startHttpServer, type TestServer } from '../helpers.ts';
import { sluice } from './run-cli.ts';

/** A child process's stdout, without blocking this process's event loop (the servers live here). */
const run = (file: string, args: string[]) =>
  new Promise<string>((resolve, reject) =>
    execFile(file, args, { encoding: 'utf8' }, (err, out) => (err ? reject(err) : resolve(out))),
  );

let connections = 0;
let inflight = 0;
let maxInflight = 0;
function handler(req: IncomingMessage, res: ServerResponse) {
  const url = new URL(req.url ?? '/', 'http://x');
  if (url.pathname === '/after') {
    setTimeout(() => res.end('late'), Number(url.searchParams.get('ms')));
  } else if (url.pathname === '/headers-after-200') {
    inflight++;
    maxInflight = Math.max(maxInflight, inflight);
    setTimeout(() => {
      inflight--;
      res.end('late');
    }, 200);
  } else if (url.pathname === '/slow-body') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.flushHeaders();
    let i = 0;
    const t = setInterval(() => {
      res.write('chunk\n');
      if (++i === 4) {
        clearInterval(t);
        res.end();
      }
    }, 100);
  } else if (url.pathname === '/timed') {
    // Long enough that ttfb dominates even when a loaded machine makes the connect slow.
    setTimeout(() => timed(req, res), 400);
  } else res.end('ok');
}

function timed(req: IncomingMessage, res: ServerResponse) {
  res.writeHead(200, {
    'server-timing': 'db;dur=12.5, stripe;desc="payments";dur=30',
    'proxy-status': 'sluice',
    via: '1.1 sluice',
    'x-timeout-ms': '2500',
  });
  res.end(
    JSON.stringify({
      method: req.method,
      body: req.headers['content-length'] ?? null,
      h: req.headers['x-probe'] ?? null,
    }),
  );
}

let plain: TestServer;
let tls: https.Server;
let tlsPort: number;
let dir: string;

before(async () => {
  plain = await startHttpServer(handler);
  plain.server.on('connection', () => connections++);
  dir = mkdtempSync(join(tmpdir(), 'sluice-probe-'));
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
      '-days',
      '2',
      '-subj',
      '/CN=localhost',
    ],
    { stdio: 'ignore' },
  );
  tls = https.createServer(
    { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) },
    handler,
  );
  tls.listen(0, '127.0.0.1');
  await once(tls, 'listening');
  tlsPort = (tls.address() as { port: number }).port;
});

after(async () => {
  await plain.close();
  tls.closeAllConnections();
  await new Promise((r) => tls.close(r));
  rmSync(dir, { recursive: true, force: true });
});

async function probeJson(
  args: string[],
): Promise<{ code: number | null; report: ProbeReport; stderr: string }> {
  const r = await sluice(['probe', ...args, '--json']);
  assert.ok(r.stdout.startsWith('{'), `stdout: ${r.stdout} stderr: ${r.stderr}`);
  return { code: r.code, report: JSON.parse(r.stdout) as ProbeReport, stderr: r.stderr };
}

describe('sluice probe', () => {
  test('headers after 200 ms: TTFB dominates, phases add up, fresh connection per run, exit 0 under budget', async () => {
    const before = connections;
    const { code, report, stderr } = await probeJson([`${plain.url}/headers-after-200`, '-n', '4']);
    assert.equal(code, 0);
    assert.equal(stderr, '', 'no progress bar when stderr is not a terminal');
    assert.equal(connections - before, 4, 'one new connection per run');
    assert.equal(report.runs.length, 4);
    for (const r of report.runs) {
      assert.equal(r.status, 200);
      assert.equal(r.bytes, 4);
      assert.equal(r.error, null);
      assert.equal(r.dns_ms, 0, 'an IP literal needs no lookup');
      assert.equal(r.tls_ms, 0);
      assert.ok(r.ttfb_ms! >= 195 && r.ttfb_ms! < 600, `ttfb ${r.ttfb_ms}`);
      const sum = r.dns_ms! + r.connect_ms! + r.tls_ms! + r.ttfb_ms! + r.transfer_ms!;
      assert.ok(Math.abs(sum - r.total_ms!) < 0.5, `phases ${sum} vs total ${r.total_ms}`);
    }
    const s = report.summary;
    assert.equal(s.dominant, 'ttfb');
    assert.equal(s.n, 4);
    assert.equal(s.errors, 0);
    assert.deepEqual(Object.keys(s.phases), ['dns', 'connect', 'tls', 'ttfb', 'transfer', 'total']);
    assert.equal(s.verdict, 'ok');
    assert.ok(s.headroom! > 0 && s.headroom! < 0.1);
    assert.deepEqual(Object.keys(report).sort(), ['budget_ms', 'runs', 'summary', 'url']);
    assert.equal(report.budget_ms, 29_000);
  });

  test('over the budget: exit 1, verdict over, a hint about the backend', async () => {
    const r = await sluice(['probe', `${plain.url}/headers-after-200`, '-n', '2', '--budget', '150ms']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /verdict over: p99 \d+ ms is \d+ % of the 150 ms budget/);
    assert.match(r.stdout, /hint: backend slow: the time goes before the first byte/);
    // 1 s of a 1.2 s budget: 83 % and more, with 200 ms of slack for a loaded machine.
    const near = await probeJson([`${plain.url}/after?ms=1000`, '-n', '1', '--budget', '1200ms']);
    assert.equal(near.code, 0);
    assert.equal(near.report.summary.verdict, 'near');
  });

  test('a slow body: transfer dominates', async () => {
    const { code, report } = await probeJson([`${plain.url}/slow-body`, '-n', '2']);
    assert.equal(code, 0);
    assert.equal(report.summary.dominant, 'transfer');
    for (const r of report.runs) {
      assert.ok(r.transfer_ms! >= 290, `transfer ${r.transfer_ms}`);
      assert.ok(r.ttfb_ms! < 100);
      assert.equal(r.bytes, 24);
    }
  });

  test('Server-Timing means, Proxy-Status, Via and x-timeout-ms, method, headers and body', async () => {
    const { report } = await probeJson([`${plain.url}/timed`, '-n', '3', '-d', 'a=1', '-H', 'X-Probe: yes']);
    assert.deepEqual(report.summary.server_timing, { db: 12.5, stripe: 30 });
    const txt = await sluice(['probe', `${plain.url}/timed`, '-n', '1', '-X', 'PUT', '-H', 'x-probe: 1']);
    assert.match(txt.stdout, /upstream Server-Timing \(mean\):\n\s+stripe\s+30\.0 ms\n\s+db\s+12\.5 ms/);
    assert.match(txt.stdout, /x-timeout-ms: 2500\nProxy-Status: sluice\nVia: 1\.1 sluice/);
    assert.match(txt.stdout, /its own Server-Timing says 'stripe' takes 30 ms/);
    assert.equal(report.runs[0].bytes, JSON.stringify({ method: 'POST', body: '3', h: 'yes' }).length);
  });

  test('--reuse keeps one connection: later runs have no connect; -c runs at a time', async () => {
    const before = connections;
    const { report } = await probeJson([`${plain.url}/`, '-n', '5', '--reuse']);
    assert.equal(connections - before, 1);
    assert.ok(report.runs[0].connect_ms! > 0);
    for (const r of report.runs.slice(1)) assert.deepEqual([r.dns_ms, r.connect_ms, r.tls_ms], [0, 0, 0]);
    maxInflight = 0;
    const c = await probeJson([`${plain.url}/headers-after-200`, '-n', '4', '-c', '4']);
    assert.equal(c.report.runs.length, 4);
    assert.equal(maxInflight, 4, 'four at a time, not one after the other');
  });

  test('a refused port: one line, exit 2, no stack trace', async () => {
    const r = await sluice(['probe', 'http://127.0.0.1:1/', '-n', '2']);
    assert.equal(r.code, 2);
    assert.equal(r.stderr, 'sluice probe: connect ECONNREFUSED 127.0.0.1:1 (is the service running?)\n');
    assert.equal(r.stdout, '');
  });

  test('a hanging endpoint is abandoned past the budget, counted as over (exit 1)', async () => {
    const hang = await startHttpServer(() => {});
    try {
      const { code, report } = await probeJson([`${hang.url}/`, '-n', '1', '--budget', '200ms']);
      assert.equal(code, 1);
      assert.equal(report.summary.errors, 1);
      assert.equal(report.summary.verdict, 'over');
      assert.equal(report.summary.dominant, 'ttfb');
      assert.ok(report.runs[0].total_ms! >= 200);
      assert.match(report.runs[0].error!, /no complete response within 1200 ms/);
    } finally {
      await hang.close();
    }
  });

  test('HTTPS with a self-signed certificate: refused without -k, timed with -k (TLS phase measured)', async () => {
    const url = `https://127.0.0.1:${tlsPort}/headers-after-200`;
    const refused = await sluice(['probe', url, '-n', '1']);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /^sluice probe: TLS: self-signed certificate \(use -k to accept it\)\n$/);
    const { code, report } = await probeJson([url, '-n', '3', '-k']);
    assert.equal(code, 0);
    for (const r of report.runs) {
      assert.ok(r.tls_ms! > 0, `tls ${r.tls_ms}`);
      assert.ok(r.ttfb_ms! >= 195);
      assert.equal(r.status, 200);
    }
  });

  test('usage errors: one line, exit 2', async () => {
    for (const [args, msg] of [
      [['probe'], /expected one URL/],
      [['probe', 'not a url'], /not a URL/],
      [['probe', 'ftp://x/'], /only http/],
      [['probe', 'http://x/', '-n', '0'], /-n must be a positive integer/],
      [['probe', 'http://x/', '--budget', 'soon'], /--budget must be a duration/],
      [['probe', 'http://x/', '--bogus'], /Unknown option '--bogus'/],
    ] as const) {
      const r = await sluice([...args]);
      assert.equal(r.code, 2, args.join(' '));
      assert.match(r.stderr, msg);
      assert.equal(r.stderr.trim().split('\n').length, 1);
    }
  });

  test("TTFB agrees with curl -w '%{time_starttransfer}' on the same endpoint", async () => {
    const url = `${plain.url}/headers-after-200`;
    const curl: number[] = [];
    for (let i = 0; i < 5; i++)
      curl.push(
        Number(await run('curl', ['-s', '-o', '/dev/null', '-w', '%{time_starttransfer}', url])) * 1000,
      );
    const { report } = await probeJson([url, '-n', '5']);
    // curl's time_starttransfer counts from the start: compare with everything before the first byte.
    const mine = report.runs
      .map((r) => r.dns_ms! + r.connect_ms! + r.tls_ms! + r.ttfb_ms!)
      .sort((a, b) => a - b);
    curl.sort((a, b) => a - b);
    const diff = Math.abs(mine[2] - curl[2]);
    assert.ok(diff < 20, `median probe ${mine[2].toFixed(1)} ms vs curl ${curl[2].toFixed(1)} ms`);
  });
});
