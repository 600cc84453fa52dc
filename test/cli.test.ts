/**
 * The `sluice` command line through real child processes (`bin/sluice.js` on this Node): help, usage
 * errors, `check`, `start` (access log, graceful drain, SIGHUP reload, port in use), `proxy` and
 * `demo-upstream`. Every child is killed by its PID when its test ends.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type DemoUpstream, startDemoUpstream } from '../src/demo/demo-upstream.ts';

const BIN = fileURLToPath(new URL('../bin/sluice.js', import.meta.url));
const EXAMPLE = fileURLToPath(new URL('../examples/sluice.yaml', import.meta.url));

/** The children's environment: no debug stack traces, info-level operational log. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, SLUICE_LOG_LEVEL: 'info' };
  delete env.SLUICE_DEBUG;
  delete env.NODE_OPTIONS;
  // Children start faster from a compile cache shared between runs (Node >= 22.1).
  env.NODE_COMPILE_CACHE ??= join(tmpdir(), 'sluice-test-compile-cache');
  return env;
}

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `sluice ...args` to completion (killed after `timeoutMs`). */
async function sluice(
  args: string[],
  timeoutMs = 20_000,
  opts: { node?: string; bin?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<Result> {
  const child = spawn(opts.node ?? process.execPath, [opts.bin ?? BIN, ...args], {
    env: opts.env ?? childEnv(),
    cwd: opts.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  clearTimeout(timer);
  return { code, signal, stdout, stderr };
}

/** A long-running `sluice` child, killed (by PID) when the test ends. */
class Running {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #waiters = new Set<() => void>();

  constructor(t: TestContext, args: string[]) {
    this.child = spawn(process.execPath, [BIN, ...args], {
      env: childEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const pid = this.child.pid;
    assert.ok(pid, 'child did not start');
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.stdout += d;
      this.#wake();
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr += d;
      this.#wake();
    });
    this.exited = once(this.child, 'close').then(([code, signal]) => {
      this.#wake();
      return { code, signal } as { code: number | null; signal: NodeJS.Signals | null };
    });
    t.after(async () => {
      if (this.child.exitCode === null && this.child.signalCode === null) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {}
        await this.exited;
      }
    });
  }

  #wake(): void {
    for (const w of this.#waiters) w();
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Waits until `pred` holds on the output so far (re-checked on every chunk), at most `ms`: a bound
   * on how long a child may take to start on a loaded machine, not a timing assertion. */
  async until<T>(what: string, pred: () => T | undefined | false, ms = 20_000): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = pred();
      if (v) return v;
      if (!this.running) throw new Error(`sluice exited while waiting for ${what}:\n${this.stderr}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; stderr:\n${this.stderr}`);
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.#waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        this.#waiters.add(done);
      });
    }
  }

  stderrMatch(re: RegExp, ms?: number): Promise<RegExpMatchArray> {
    return this.until(String(re), () => this.stderr.match(re) ?? undefined, ms);
  }

  /** The access-log line (JSON on stdout) of the request with this id. */
  accessLog(requestId: string, ms?: number): Promise<Record<string, unknown>> {
    return this.until(
      `access log of ${requestId}`,
      () => {
        for (const line of this.stdout.split('\n')) {
          if (!line.includes(requestId)) continue;
          const entry = JSON.parse(line) as Record<string, unknown>;
          if (entry.request_id === requestId) return entry;
        }
        return undefined;
      },
      ms,
    );
  }

  signal(sig: NodeJS.Signals): void {
    process.kill(this.child.pid!, sig);
  }
}

interface Resp {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  ms: number;
}

/** One GET on a fresh connection, at most `timeoutMs`. */
function get(url: string, timeoutMs = 5_000): Promise<Resp> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('error', reject);
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, body, ms: performance.now() - started }),
      );
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer within ${timeoutMs}ms`)));
    req.on('error', reject);
  });
}

/** A port that was free a moment ago (listen on 0, close). */
async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function demoUpstream(t: TestContext): Promise<DemoUpstream> {
  const demo = await startDemoUpstream({ port: 0 });
  t.after(() => demo.close());
  return demo;
}

/** One line on stderr, nothing on stdout, non-zero exit, no stack trace. */
function assertOneLineError(r: Result, re: RegExp, code?: number): void {
  assert.notEqual(r.code, 0, `exit code 0; stderr: ${r.stderr}`);
  if (code !== undefined) assert.equal(r.code, code);
  assert.equal(r.signal, null);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'stack trace on stderr');
  assert.doesNotMatch(r.stderr, / {4}at /);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0], re);
  assert.equal(r.stdout, '');
}

function gatewayConfig(opts: { port: number; upstream: string; total?: string; extra?: string }): string {
  return `listen: 127.0.0.1:${opts.port}
admin: { listen: 127.0.0.1:0 }
access_log: stdout
shutdown_timeout: 5s
upstreams:
  demo:
    targets: [${opts.upstream}]
    timeouts: { connect: 2s }
routes:
  - name: main
    match: { path: / }
    upstream: demo
    timeouts: { total: ${opts.total ?? '2s'} }
${opts.extra ?? ''}`;
}

// -------------------------------------------------------------------------------------------------
// Help and usage errors.

// Bounded: these are many short-lived children; more at once only makes each start slower.
describe('help and usage', { concurrency: 3 }, () => {
  test('sluice --help (and -h, help) exits 0 with usage listing every command', async () => {
    for (const flag of ['--help', '-h']) {
      const r = await sluice([flag]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Usage: sluice <command> \[options\]/);
      for (const c of ['start', 'proxy', 'check', 'demo-upstream'])
        assert.match(r.stdout, new RegExp(`^  ${c} `, 'm'));
      assert.equal(r.stderr, '');
    }
  });

  for (const command of ['start', 'proxy', 'check', 'demo-upstream']) {
    test(`sluice ${command} --help exits 0 with its usage`, async () => {
      const r = await sluice([command, '--help']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^Usage: sluice ${command}`));
      assert.match(r.stdout, /-h, --help/);
      assert.equal(r.stderr, '');
    });
  }

  test('no command: usage and a non-zero exit', async () => {
    const r = await sluice([]);
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /Usage: sluice <command>/);
    assert.doesNotMatch(r.stderr, / {4}at /);
  });

  test('--version prints the package version', async () => {
    const r = await sluice(['--version']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^\d+\.\d+\.\d+\n$/);
  });

  test('unknown command: one line, exit 2, no stack trace', async () => {
    const r = await sluice(['strat', '-c', 'x.yaml']);
    assertOneLineError(
      r,
      /^sluice: unknown command 'strat' \(commands: start, proxy, check, probe, logs, demo-upstream\)$/,
      2,
    );
    // Names of Object.prototype members are not commands either.
    assertOneLineError(await sluice(['toString']), /^sluice: unknown command 'toString'/, 2);
  });

  test('unknown flags: one line naming the flag, exit 2, no stack trace', async () => {
    assertOneLineError(await sluice(['--bogus']), /^sluice: unknown option '--bogus'/, 2);
    for (const command of ['start', 'check']) {
      const r = await sluice([command, '--bogus']);
      assertOneLineError(
        r,
        new RegExp(`^sluice: ${command}: Unknown option '--bogus' \\(see 'sluice ${command} --help'\\)$`),
        2,
      );
    }
    assertOneLineError(await sluice(['check', 'stray']), /^sluice: check: Unexpected argument 'stray'/, 2);
    assertOneLineError(
      await sluice(['check', '-c']),
      /^sluice: check: Option '-c, --config <value>' argument missing/,
      2,
    );
  });

  test('proxy without --to: one line, non-zero', async () => {
    assertOneLineError(await sluice(['proxy']), /^sluice: proxy: --to URL is required/, 2);
  });

  test('proxy with a bad flag value: one line naming the flag', async () => {
    assertOneLineError(
      await sluice(['proxy', '--to', 'http://127.0.0.1:1', '--timeout', '5x']),
      /^sluice: proxy: --timeout: `5x` is not a duration: write e\.g\. 250ms, 5s, 2m or 1h \(units ms, s, m, h\)$/,
      2,
    );
    assertOneLineError(
      await sluice(['proxy', '--to', 'http://127.0.0.1:1', '--timeout', '60']),
      /^sluice: proxy: --timeout: `60` is not a duration: write 60s or 60ms \(units ms, s, m, h\)$/,
      2,
    );
    assertOneLineError(
      await sluice(['proxy', '--to', 'ftp://x']),
      /^sluice: proxy: --to: `ftp:\/\/x` is not an http:\/\/ or https:\/\/ URL$/,
      2,
    );
    assertOneLineError(
      await sluice(['proxy', '--to', '127.0.0.1:3000']),
      /^sluice: proxy: --to: `127\.0\.0\.1:3000` is not an http:\/\/ or https:\/\/ URL: did you mean http:\/\/127\.0\.0\.1:3000\?$/,
      2,
    );
  });

  test('demo-upstream with a bad port: one line', async () => {
    assertOneLineError(
      await sluice(['demo-upstream', '--port', 'abc']),
      /^sluice: demo-upstream: --port must be a port number, got 'abc'$/,
      2,
    );
  });
});

// -------------------------------------------------------------------------------------------------
// check

describe('check', { concurrency: 3 }, () => {
  test('a valid config: exit 0 and every route with its effective timeouts', async () => {
    const r = await sluice(['check', '-c', EXAMPLE]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.match(r.stdout, /ok, 4 route\(s\), 1 upstream\(s\)/);
    const rows = r.stdout.split('\n').map((l) => l.trim().split(/\s{2,}/));
    const header = rows.find((row) => row[0] === 'route');
    assert.deepEqual(header, [
      'route',
      'match',
      'upstream',
      'connect',
      'send',
      'ttfb',
      'read',
      'total',
      'max_body',
      'async',
    ]);
    const row = (name: string) => rows.find((x) => x[0] === name);
    // route > upstream (connect: 2s) > defaults
    assert.deepEqual(row('reports'), [
      'reports',
      'GET /slow',
      'demo',
      '2s',
      '30s',
      '45s',
      '1m',
      '1m',
      '10MB',
      'auto after 5s',
    ]);
    assert.deepEqual(row('stream'), [
      'stream',
      '/drip',
      'demo',
      '2s',
      '30s',
      '30s',
      '5s',
      'off',
      '10MB',
      'off',
    ]);
    assert.deepEqual(row('demo'), ['demo', '/', 'demo', '2s', '30s', '30s', '1m', '29s', '10MB', 'off']);
  });

  test('a misspelt key: exit 1 with file, line, key and the hint', async (t) => {
    const file = join(tempDir(t), 'sluice.yaml');
    writeFileSync(
      file,
      `${gatewayConfig({ port: 8080, upstream: 'http://127.0.0.1:9000' })}    retries: 3\n`.replace(
        'timeouts: { total: 2s }',
        'timeouts: { conect: 2s }',
      ),
    );
    const r = await sluice(['check', '-c', file]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.doesNotMatch(r.stderr, / {4}at /);
    const lines = r.stderr.trimEnd().split('\n');
    assert.deepEqual(lines, [
      `${file}:13: routes[0].timeouts.conect: unknown key "conect" (did you mean "connect"?)`,
      `${file}:14: routes[0].retries: unknown key "retries" (did you mean "retry"?)`,
    ]);
  });

  test('a missing file: one clear line, exit 1', async (t) => {
    const file = join(tempDir(t), 'nope.yaml');
    assertOneLineError(
      await sluice(['check', '-c', file]),
      new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: file not found$`),
      1,
    );
  });

  test('a directory and invalid YAML: one clear line each', async (t) => {
    const dir = tempDir(t);
    assertOneLineError(await sluice(['check', '--config', dir]), /: is a directory$/, 1);
    const file = join(dir, 'broken.yaml');
    writeFileSync(file, 'listen: [127.0.0.1:8080\nroutes: x\n');
    const r = await sluice(['check', '-c', file]);
    assert.equal(r.code, 1);
    assert.doesNotMatch(r.stderr, / {4}at /);
    for (const l of r.stderr.trimEnd().split('\n'))
      assert.match(l, new RegExp(`^${file}:\\d+: invalid YAML: `));
  });

  test('lint errors: no "ok" line, exit 1; warnings alone: ok, exit 0; each finding with its code', async (t) => {
    const dir = tempDir(t);
    const bad = join(dir, 'bad.yaml');
    writeFileSync(
      bad,
      gatewayConfig({ port: 8080, upstream: 'http://127.0.0.1:9000' }).replace(
        'timeouts: { total: 2s }',
        'timeouts: { total: 10s, ttfb: 20s }',
      ),
    );
    const r = await sluice(['check', '-c', bad]);
    assert.equal(r.code, 1, r.stderr);
    assert.doesNotMatch(r.stdout, /\bok\b/);
    assert.match(r.stdout, new RegExp(`^${bad}: 1 error\\(s\\), 1 route\\(s\\), 1 upstream\\(s\\)\n`));
    assert.match(r.stdout, /\nerror\[ttfb-above-total\]: route 'main' ttfb 20s exceeds total 10s/);

    const warn = join(dir, 'warn.yaml');
    writeFileSync(
      warn,
      gatewayConfig({ port: 8080, upstream: 'http://127.0.0.1:9000' }).replace(
        'timeouts: { total: 2s }',
        'timeouts: { total: 10s, ttfb: 4s }',
      ),
    );
    const w = await sluice(['check', '-c', warn]);
    assert.equal(w.code, 0, w.stderr);
    assert.match(w.stdout, new RegExp(`^${warn}: ok with 1 warning\\(s\\), 1 route\\(s\\)`));
    assert.match(
      w.stdout,
      /\nwarning\[ttfb-below-total\]: route 'main' ttfb 4s fires before total 10s: the upstream is told x-timeout-ms 4000 .*; raise ttfb to 10s or lower total to 4s/,
    );
    // Silenced on the route: clean.
    writeFileSync(warn, `${readFileSync(warn, 'utf8')}    lint: { ignore: [ttfb-below-total] }\n`);
    const quiet = await sluice(['check', '-c', warn]);
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.match(quiet.stdout, new RegExp(`^${warn}: ok, 1 route\\(s\\)`));
    assert.doesNotMatch(quiet.stdout, /warning/);
  });

  test('check refuses what start refuses (store, admin token, access_log path), with the same line, binding nothing', async (t) => {
    const dir = tempDir(t);
    const plain = join(dir, 'plain.txt');
    writeFileSync(plain, 'x');
    const port = await freePort();
    const base = gatewayConfig({ port, upstream: 'http://127.0.0.1:9000' });
    const cases: [string, string, RegExp][] = [
      [
        'store',
        base.replace('access_log: stdout', 'access_log: stdout\nstore: redis://127.0.0.1:6379/x'),
        /:4: store: database "x" is not a number: redis:\/\/host:port\/db$/,
      ],
      [
        'admin',
        base.replace('admin: { listen: 127.0.0.1:0 }', 'admin: { listen: 0.0.0.0:0 }'),
        /:2: admin\.listen: 0\.0\.0\.0:0 is not loopback: set admin\.token/,
      ],
      [
        'log',
        base.replace('access_log: stdout', `access_log: ${plain}/logs/access.log`),
        new RegExp(`:3: access_log: cannot create directory ${plain}/logs: ${plain} is a file$`),
      ],
    ];
    for (const [name, text, re] of cases) {
      const file = join(dir, `${name}.yaml`);
      writeFileSync(file, text);
      const checked = await sluice(['check', '-c', file]);
      assertOneLineError(checked, new RegExp(`^${file}${re.source}`), 1);
      const started = await sluice(['start', '-c', file]);
      assertOneLineError(started, new RegExp(`^${file}${re.source}`), 1);
      assert.equal(started.stderr, checked.stderr);
    }
    // Nothing was listening: the port is still free.
    await new Promise<void>((resolve, reject) => {
      const srv = createServer().once('error', reject);
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve()));
    });
  });

  test('routes that never match are warned about, and header conditions show in the match column', async (t) => {
    const file = join(tempDir(t), 'dead.yaml');
    writeFileSync(
      file,
      `upstreams: { demo: { targets: [http://127.0.0.1:9000] } }
routes:
  - { name: canary, match: { path: /api, headers: { X-Canary: "1" } }, upstream: demo }
  - { name: port, match: { host: "api.example.com:8080" }, upstream: demo }
  - { name: all, match: { path: / }, upstream: demo }
  - { name: late, match: { path: /late, methods: [GET] }, upstream: demo }
`,
    );
    const r = await sluice(['check', '-c', file]);
    assert.equal(r.code, 0, r.stderr);
    const rows = r.stdout.split('\n').map((l) => l.trim().split(/\s{2,}/));
    assert.deepEqual(rows.find((x) => x[0] === 'canary')?.slice(0, 2), ['canary', '/api x-canary=1']);
    assert.match(
      r.stdout,
      /\nwarning\[host-with-port\]: route 'port' host 'api\.example\.com:8080' never matches: ports are not part of the match, use 'api\.example\.com'\n/,
    );
    assert.match(
      r.stdout,
      /\nwarning\[after-catch-all\]: route 'late' comes after the catch-all route 'all' .*never matches; move it above 'all'/,
    );
  });

  test('the chain lint: chain: in the file and --chain, findings naming the value to change', async (t) => {
    const file = join(tempDir(t), 'chain.yaml');
    writeFileSync(
      file,
      `chain: { client: 60s, lb: 60s, app: 25s }
upstreams: { api: { targets: [http://127.0.0.1:9000] } }
routes:
  - { name: reports, match: { path: /reports }, upstream: api, timeouts: { total: 2m, ttfb: 2m } }
  - { name: api, match: { path: /api }, upstream: api, retry: { attempts: 3, per_try: 9s, on: [503] } }
`,
    );
    const r = await sluice(['check', '-c', file]);
    assert.equal(r.code, 1);
    const findings = r.stdout.split('\n').filter((l) => /^(error|warning)\[/.test(l));
    assert.deepEqual(findings, [
      'error[chain-client]: chain.client 1m is not above chain.lb 1m: the client gives up before the layer inside it does; raise chain.client to over 1m (e.g. 61s) or lower chain.lb to under 1m',
      "error[chain-lb]: route 'reports' total 2m is not below chain.lb 1m: the load balancer answers its own 504 before Sluice names the phase; lower total to under 1m (e.g. 59s) or use async (after under 1m), or raise chain.lb to over 2m",
      "error[chain-app]: route 'api' per-try budget 9s (retry.per_try) is not above chain.app 25s: Sluice answers 504 while the app is still working; lower the app's timeout to under 9s (e.g. 8s) or raise retry.per_try to over 25s",
    ]);
    // --chain overrides the file key by key: an API Gateway in front, the app at 5s.
    const flagged = await sluice(['check', '-c', file, '--chain', 'apigw,lb=2m30s,app=5s']);
    assert.equal(flagged.code, 2);
    assert.match(
      flagged.stderr,
      /^sluice: check: --chain: lb: `2m30s` is not a duration: write e\.g\. 250ms, 5s, 2m or 1h/,
    );
    const ok = await sluice(['check', '-c', file, '--chain', 'client=3m,lb=150s,app=5s']);
    assert.equal(ok.code, 0, ok.stdout);
    const gw = await sluice(['check', '-c', file, '--chain', 'apigw,lb=150s,client=3m,app=5s']);
    assert.equal(gw.code, 1);
    assert.match(
      gw.stdout,
      /\nerror\[chain-apigw\]: route 'reports' total 2m is not below API Gateway's 29s integration timeout: .*; lower total to under 29s \(e\.g\. 28s\) or use async \(after under 29s\)\n/,
    );
    assertOneLineError(
      await sluice(['check', '-c', file, '--chain', 'lbb=60s']),
      /^sluice: check: --chain: unknown layer 'lbb' \(did you mean 'lb'\?\) \(layers: client, apigw, lb, app\)$/,
      2,
    );
  });
});

// -------------------------------------------------------------------------------------------------
// start, proxy, demo-upstream: real listeners.

describe('running', { concurrency: true }, () => {
  test('start: serves through to the upstream, logs JSON on stdout, drains on SIGTERM and exits 0', async (t) => {
    const demo = await demoUpstream(t);
    const port = await freePort();
    const file = join(tempDir(t), 'sluice.yaml');
    writeFileSync(file, gatewayConfig({ port, upstream: demo.url }));
    const s = new Running(t, ['start', '-c', file]);
    await s.stderrMatch(/sluice listening on http:\/\/127\.0\.0\.1:(\d+)/);
    // The startup banner carries the effective timeouts of every route.
    assert.match(s.stderr, /^main\s+\/\s+demo\s+2s\s+30s\s+30s\s+1m\s+2s\s+10MB\s+off$/m);

    const res = await get(`http://127.0.0.1:${port}/fast`);
    assert.equal(res.status, 200);
    assert.equal(res.body, 'ok\n');
    const id = res.headers['x-request-id'] as string;
    assert.ok(id, 'x-request-id');
    const entry = await s.accessLog(id);
    for (const field of [
      'time',
      'request_id',
      'method',
      'path',
      'route',
      'upstream',
      'target',
      'status',
      'outcome',
      'phase',
      'bytes_in',
      'bytes_out',
      'retries',
      'dns',
      'connect',
      'tls',
      'ttfb',
      'total',
    ]) {
      assert.ok(field in entry, `access log has no "${field}": ${JSON.stringify(entry)}`);
    }
    assert.equal(entry.method, 'GET');
    assert.equal(entry.path, '/fast');
    assert.equal(entry.route, 'main');
    assert.equal(entry.upstream, 'demo');
    assert.equal(entry.status, 200);
    assert.equal(entry.outcome, 'ok');
    assert.equal(entry.phase, null);
    assert.equal(entry.bytes_out, 3);
    assert.equal(entry.retries, 0);
    assert.equal(typeof entry.total, 'number');
    assert.ok(!Number.isNaN(Date.parse(entry.time as string)));
    // The access log is stdout only; operational messages are on stderr.
    for (const line of s.stdout.trimEnd().split('\n')) JSON.parse(line);

    // SIGTERM with a request in flight: it completes, then the process exits 0.
    const arrived = once(demo.events, 'request');
    const slow = get(`http://127.0.0.1:${port}/slow?ms=500`);
    await arrived;
    s.signal('SIGTERM');
    const done = await slow;
    assert.equal(done.status, 200);
    assert.deepEqual(JSON.parse(done.body), { slept_ms: 500 });
    const exit = await s.exited;
    assert.deepEqual(exit, { code: 0, signal: null }, s.stderr);
    assert.match(s.stderr, /draining in-flight/);
    // The drained request was logged before exit.
    const last = await s.accessLog(done.headers['x-request-id'] as string, 100);
    assert.equal(last.status, 200);
    assert.doesNotMatch(s.stderr, / {4}at /);
  });

  test('start: SIGHUP applies a changed route timeout; an invalid file is refused and the old config stays', async (t) => {
    const demo = await demoUpstream(t);
    const port = await freePort();
    const file = join(tempDir(t), 'sluice.yaml');
    writeFileSync(file, gatewayConfig({ port, upstream: demo.url, total: '2s' }));
    const s = new Running(t, ['start', '-c', file]);
    await s.stderrMatch(/sluice listening on/);
    const url = `http://127.0.0.1:${port}/slow?ms=600`;

    assert.equal((await get(url)).status, 200);

    // Shrink the budget below the upstream's 600 ms.
    writeFileSync(file, gatewayConfig({ port, upstream: demo.url, total: '250ms' }));
    s.signal('SIGHUP');
    await s.stderrMatch(/config reloaded/);
    const timedOut = await get(url);
    assert.equal(timedOut.status, 504);
    assert.equal(timedOut.headers['content-type'], 'application/problem+json');
    const problem = JSON.parse(timedOut.body);
    assert.equal(problem.timeout_ms, 250);
    assert.equal(problem.phase, 'total');

    // An invalid file: refused with file:line on stderr; the 250 ms budget still applies.
    writeFileSync(
      file,
      gatewayConfig({ port, upstream: demo.url, total: '5s' }).replace(
        '{ total: 5s }',
        '{ total: 5s, conect: 1s }',
      ),
    );
    s.signal('SIGHUP');
    const refusal = await s.stderrMatch(/.*config reload refused.*/);
    assert.ok(refusal[0].includes(`${file}:13: routes[0].timeouts.conect`), refusal[0]);
    assert.ok(s.running);
    const still = await get(url);
    assert.equal(still.status, 504);
    assert.equal(JSON.parse(still.body).timeout_ms, 250);
    assert.equal((await get(`http://127.0.0.1:${port}/fast`)).status, 200);

    s.signal('SIGTERM');
    assert.deepEqual(await s.exited, { code: 0, signal: null });
  });

  test('start: port already in use → one clear line, non-zero, no stack trace', async (t) => {
    const blocker = createServer();
    blocker.listen(0, '127.0.0.1');
    await once(blocker, 'listening');
    t.after(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
    const { port } = blocker.address() as { port: number };
    const file = join(tempDir(t), 'sluice.yaml');
    writeFileSync(file, gatewayConfig({ port, upstream: 'http://127.0.0.1:9' }));
    const r = await sluice(['start', '-c', file]);
    assertOneLineError(r, new RegExp(`^sluice: address already in use \\(127\\.0\\.0\\.1:${port}\\)$`), 1);
  });

  test('start: port in use with an async route → the job store is closed too and the process exits', async (t) => {
    const blocker = createServer();
    blocker.listen(0, '127.0.0.1');
    await once(blocker, 'listening');
    t.after(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
    const { port } = blocker.address() as { port: number };
    const dir = tempDir(t);
    const file = join(dir, 'sluice.yaml');
    writeFileSync(
      file,
      `listen: 127.0.0.1:${port}
admin: { listen: 127.0.0.1:0 }
store: "sqlite:${join(dir, 'jobs.db')}"
upstreams: { u: { targets: ["http://127.0.0.1:9"] } }
routes: [{ name: r, match: { path: / }, upstream: u, async: { mode: auto, after: 1s } }]
`,
    );
    const r = await sluice(['start', '-c', file]);
    assertOneLineError(r, new RegExp(`^sluice: address already in use \\(127\\.0\\.0\\.1:${port}\\)$`), 1);
  });

  test('start: an invalid config → exit 1 with file:line messages, nothing started', async (t) => {
    const file = join(tempDir(t), 'sluice.yaml');
    writeFileSync(
      file,
      gatewayConfig({ port: 8080, upstream: 'http://127.0.0.1:9', total: '5x' }).replace(
        'upstream: demo',
        'upstream: demoo',
      ),
    );
    const r = await sluice(['start', '-c', file]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.doesNotMatch(r.stderr, / {4}at /);
    assert.deepEqual(r.stderr.trimEnd().split('\n'), [
      `${file}:13: routes[0].timeouts.total: \`5x\` is not a duration: write e.g. 250ms, 5s, 2m or 1h (units ms, s, m, h)`,
    ]);
    // Once the schema is satisfied, the reference check runs and names the defined upstreams.
    writeFileSync(
      file,
      gatewayConfig({ port: 8080, upstream: 'http://127.0.0.1:9' }).replace(
        'upstream: demo',
        'upstream: demoo',
      ),
    );
    assertOneLineError(
      await sluice(['start', '-c', file]),
      new RegExp(`^${file}:12: routes\\[0\\]\\.upstream: no upstream named "demoo" \\(defined: demo\\)$`),
      1,
    );
  });

  test('start: a missing config file → one line', async (t) => {
    const file = join(tempDir(t), 'missing.yaml');
    assertOneLineError(await sluice(['start', '-c', file]), /missing\.yaml: file not found$/, 1);
  });

  test('proxy: forwards, and a hanging upstream gets a 504 problem+json within ~1s', async (t) => {
    const demo = await demoUpstream(t);
    const port = await freePort();
    const s = new Running(t, ['proxy', '--to', demo.url, '--listen', `127.0.0.1:${port}`, '--timeout', '1s']);
    await s.stderrMatch(/sluice proxy: http:\/\/127\.0\.0\.1:\d+ → /);
    assert.doesNotMatch(s.stderr, /admin on/); // no admin listener unless --admin

    const ok = await get(`http://127.0.0.1:${port}/fast`);
    assert.equal(ok.status, 200);
    assert.equal(ok.body, 'ok\n');
    assert.equal(ok.headers['x-demo-upstream'], '1');

    const hung = await get(`http://127.0.0.1:${port}/hang`, 5_000);
    assert.equal(hung.status, 504);
    assert.ok(hung.ms >= 950 && hung.ms < 2_000, `504 after ${Math.round(hung.ms)}ms`);
    assert.equal(hung.headers['content-type'], 'application/problem+json');
    const problem = JSON.parse(hung.body);
    assert.equal(problem.status, 504);
    assert.equal(problem.type, 'https://sluice.dev/problems/upstream-timeout');
    assert.equal(problem.phase, 'total');
    assert.equal(problem.route, 'default');
    assert.equal(problem.timeout_ms, 1_000);
    assert.equal(problem.request_id, hung.headers['x-request-id']);
    const entry = await s.accessLog(problem.request_id);
    assert.equal(entry.outcome, 'timeout');
    assert.equal(entry.phase, 'total');

    s.signal('SIGTERM');
    assert.deepEqual(await s.exited, { code: 0, signal: null });
  });

  test('proxy --async-after: a slow request becomes a job (202), polled to completion', async (t) => {
    const demo = await demoUpstream(t);
    const port = await freePort();
    const store = `sqlite:${join(tempDir(t), 'jobs.db')}`;
    const s = new Running(t, [
      'proxy',
      '--to',
      demo.url,
      '--listen',
      `127.0.0.1:${port}`,
      '--async-after',
      '300ms',
      '--store',
      store,
    ]);
    await s.stderrMatch(/sluice proxy: http:\/\/127\.0\.0\.1:\d+ → /);
    const accepted = await get(`http://127.0.0.1:${port}/slow?ms=1000`);
    assert.equal(accepted.status, 202);
    const job = JSON.parse(accepted.body) as { poll_url: string };
    assert.equal(accepted.headers.location, job.poll_url);
    const done = await get(`http://127.0.0.1:${port}${job.poll_url}?wait=5s`, 10_000);
    assert.equal(JSON.parse(done.body).status, 'completed');
    const result = await get(`http://127.0.0.1:${port}${job.poll_url}/result`);
    assert.equal(result.status, 200);
    assert.deepEqual(JSON.parse(result.body), { slept_ms: 1000 });
    s.signal('SIGTERM');
    assert.deepEqual(await s.exited, { code: 0, signal: null });
  });

  test('proxy --async-after not below --timeout: refused in one line (the 504 would come first)', async () => {
    assertOneLineError(
      await sluice(['proxy', '--to', 'http://127.0.0.1:1', '--timeout', '5s', '--async-after', '5s']),
      /^sluice: proxy: .*after/,
    );
  });

  test('proxy --timeout 40s: total is the limit that fires (ttfb and read raised), the upstream is told so', async (t) => {
    const demo = await demoUpstream(t);
    const port = await freePort();
    const s = new Running(t, [
      'proxy',
      '--to',
      demo.url,
      '--listen',
      `127.0.0.1:${port}`,
      '--timeout',
      '40s',
    ]);
    await s.stderrMatch(/default {2}\/ {6}upstream {2}5s {7}30s {3}40s {3}1m {4}40s/);
    // The structured start line of the operational log.
    const listening = await s.until('the listening line', () =>
      s.stderr
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l))
        .find((l) => l.msg === 'listening'),
    );
    assert.equal(listening.listen, `http://127.0.0.1:${port}`);
    assert.equal(listening.command, 'proxy');
    assert.equal(listening.routes, 1);
    // Without the raise, the 30s ttfb default would fire first and the upstream would be told 30000.
    const echo = await get(`http://127.0.0.1:${port}/echo`);
    const told = Number(JSON.parse(echo.body).headers['x-timeout-ms']);
    assert.ok(told > 39_000 && told <= 40_000, `x-timeout-ms ${told}`);
    s.signal('SIGTERM');
    assert.deepEqual(await s.exited, { code: 0, signal: null });
  });

  test('proxy: SIGHUP is ignored with a log line and it keeps serving', async (t) => {
    const demo = await demoUpstream(t);
    const port = await freePort();
    const s = new Running(t, ['proxy', '--to', demo.url, '--listen', `127.0.0.1:${port}`]);
    await s.stderrMatch(/"msg":"listening"/);
    s.signal('SIGHUP');
    await s.stderrMatch(/"msg":"SIGHUP ignored: sluice proxy has no config file to reload"/);
    assert.ok(s.running);
    const ok = await get(`http://127.0.0.1:${port}/fast`);
    assert.equal(ok.status, 200);
    s.signal('SIGHUP');
    assert.equal((await get(`http://127.0.0.1:${port}/fast`)).status, 200);
    s.signal('SIGTERM');
    assert.deepEqual(await s.exited, { code: 0, signal: null });
  });

  test('a second SIGTERM during the drain exits at once with 1', async (t) => {
    const demo = await demoUpstream(t);
    const port = await freePort();
    const s = new Running(t, [
      'proxy',
      '--to',
      demo.url,
      '--listen',
      `127.0.0.1:${port}`,
      '--timeout',
      '20s',
    ]);
    await s.stderrMatch(/sluice proxy: /);
    const arrived = once(demo.events, 'request');
    const hung = get(`http://127.0.0.1:${port}/hang`, 5_000).catch((err: Error) => err);
    await arrived;
    s.signal('SIGTERM');
    await s.stderrMatch(/draining in-flight/);
    assert.ok(s.running, 'exited before the in-flight request finished');
    const started = performance.now();
    s.signal('SIGTERM');
    assert.deepEqual(await s.exited, { code: 1, signal: null });
    assert.ok(performance.now() - started < 2_000);
    assert.match(s.stderr, /second signal: exiting now/);
    assert.ok((await hung) instanceof Error, 'the hung request cannot complete');
  });

  test('demo-upstream --port P serves /fast and exits 0 on SIGTERM', async (t) => {
    const port = await freePort();
    const s = new Running(t, ['demo-upstream', '--port', String(port)]);
    await s.stderrMatch(new RegExp(`demo upstream listening on http://127\\.0\\.0\\.1:${port}`));
    const res = await get(`http://127.0.0.1:${port}/fast`);
    assert.equal(res.status, 200);
    assert.equal(res.body, 'ok\n');
    assert.equal(res.headers['x-demo-upstream'], '1');
    s.signal('SIGTERM');
    assert.deepEqual(await s.exited, { code: 0, signal: null });
  });
});

// -------------------------------------------------------------------------------------------------
// bin/sluice.js on a Node too old to run Sluice: it re-runs itself on the Node 24 beside it.

/** A Node older than 22.18 on PATH (the system Node), outside node_modules; undefined when none. */
function oldNode(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (!dir || dir.includes('node_modules')) continue;
    const candidate = join(dir, 'node');
    if (!existsSync(candidate)) continue;
    const r = spawnSync(candidate, ['-p', 'process.versions.node'], { encoding: 'utf8' });
    const [major, minor] = r.stdout.trim().split('.').map(Number);
    if (major < 22 || (major === 22 && minor < 18)) return candidate;
  }
  return undefined;
}

/** The environment of a shell without the project's node_modules/.bin on PATH (the system Node first). */
function systemEnv(node: string): NodeJS.ProcessEnv {
  const env = childEnv();
  const rest = (env.PATH ?? '').split(':').filter((d) => d && !d.includes('node_modules'));
  env.PATH = [dirname(node), ...rest].join(':');
  delete env.SLUICE_NODE;
  delete env.SLUICE_REEXEC;
  return env;
}

describe('bin/sluice.js on an older Node', { concurrency: 2 }, () => {
  const old = oldNode();
  const skip = old ? false : 'no Node older than 22.18 on PATH';

  test('re-runs itself on the Node 24 next to it: same arguments, output and exit codes', {
    skip,
  }, async () => {
    const node = old as string;
    const ok = await sluice(['check', '-c', EXAMPLE], 20_000, { node, env: systemEnv(node) });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /ok, 4 route\(s\)/);
    const usage = await sluice(['nope'], 20_000, { node, env: systemEnv(node) });
    assertOneLineError(usage, /^sluice: unknown command 'nope'/, 2);
    const missing = await sluice(['check', '-c', '/nonexistent/sluice.yaml'], 20_000, {
      node,
      env: systemEnv(node),
    });
    assertOneLineError(missing, /^\/nonexistent\/sluice\.yaml: file not found$/, 1);
  });

  test('passes signals through: SIGHUP and SIGINT reach the gateway once (a drain, exit 0)', {
    skip,
  }, async (t) => {
    const node = old as string;
    const demo = await demoUpstream(t);
    const port = await freePort();
    const child = spawn(node, [BIN, 'proxy', '--to', demo.url, '--listen', `127.0.0.1:${port}`], {
      env: systemEnv(node),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdout.resume();
    const exited = once(child, 'close');
    let gatewayPid: number | undefined;
    t.after(() => {
      // The gateway runs in its own process group: stop it by its PID if the test failed early.
      for (const pid of [child.pid, gatewayPid])
        try {
          if (pid) process.kill(pid, 'SIGKILL');
        } catch {}
    });
    const waitFor = async (re: RegExp) => {
      const deadline = Date.now() + 15_000;
      while (!re.test(stderr)) {
        assert.ok(Date.now() < deadline, `timed out waiting for ${re}; stderr:\n${stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    await waitFor(/"msg":"listening"/);
    const line = stderr.split('\n').find((l) => l.includes('"msg":"listening"')) as string;
    gatewayPid = JSON.parse(line).pid;
    assert.notEqual(gatewayPid, child.pid, 'the gateway runs in a re-executed Node');
    child.kill('SIGHUP');
    await waitFor(/SIGHUP ignored/);
    assert.equal((await get(`http://127.0.0.1:${port}/fast`)).status, 200);
    child.kill('SIGINT');
    const [code, signal] = await exited;
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, stderr);
    assert.match(stderr, /"signal":"SIGINT".*draining/);
    assert.doesNotMatch(stderr, /second signal/);
  });

  test('without a usable Node nearby: one line saying exactly what to do', { skip }, async (t) => {
    const node = old as string;
    const dir = tempDir(t);
    mkdirSync(join(dir, 'bin'));
    copyFileSync(BIN, join(dir, 'bin', 'sluice.js'));
    writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
    const r = await sluice(['--version'], 20_000, {
      node,
      bin: join(dir, 'bin', 'sluice.js'),
      env: systemEnv(node),
      cwd: dir,
    });
    assertOneLineError(
      r,
      /^sluice: needs Node\.js 22\.18 or newer \(Node 24 recommended\), this is v\d+\.\d+\.\d+: run `npm install node@24` in your project \(then `npx sluice`\), or set SLUICE_NODE=\/path\/to\/node24$/,
      1,
    );
  });

  test('installed into a project of its own (npm install <path-to-clone>, offline): npx sluice works there', {
    skip,
  }, async (t) => {
    const node = old as string;
    const dir = tempDir(t);
    writeFileSync(join(dir, 'package.json'), '{"name":"my-app","version":"1.0.0","private":true}');
    const env = systemEnv(node);
    const install = spawnSync(
      'npm',
      [
        'install',
        '--offline',
        '--no-audit',
        '--no-fund',
        '--loglevel=error',
        fileURLToPath(new URL('..', import.meta.url)),
      ],
      { cwd: dir, env, encoding: 'utf8', timeout: 60_000 },
    );
    assert.equal(install.status, 0, install.stderr);
    const r = spawnSync('npx', ['--offline', 'sluice', 'check', '-c', EXAMPLE], {
      cwd: dir,
      env,
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /ok, 4 route\(s\)/);
  });
});
