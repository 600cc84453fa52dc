/**
 * The published package as a user gets it: `npm pack` (its prepack builds dist/), then `npm install
 * <tarball>` into a project of its own, where npm copies Sluice under node_modules/ and Node would
 * refuse to strip types. The installed `sluice` runs `--version`, `check`, `logs` (one thread and
 * worker threads), `start` (proxying, the dashboard's files) and `sluice/upstream` imports. npm is
 * asked for packages offline first, then with the registry for what its cache lacks; without a
 * registry the tests are skipped, saying so. Temp dirs and children are removed when the tests end.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * A shell's environment with this Node first on PATH (the `#!/usr/bin/env node` of bin/sluice.js and
 * npm itself find it) and nothing of an outer `npm test` run (npm_package_*, npm_lifecycle_*, its
 * local prefix...) but npm's cache, registry, proxy and TLS settings.
 */
function userEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k === 'INIT_CWD' || k.startsWith('SLUICE_') || k === 'NODE_OPTIONS') continue;
    if (
      /^npm_/i.test(k) &&
      !/^npm_config_(cache|userconfig|cafile|strict_ssl|(https_)?proxy|noproxy|.*registry)$/i.test(k)
    )
      continue;
    env[k] = v;
  }
  const rest = (env.PATH ?? '').split(':').filter((d) => d && !d.includes('node_modules'));
  env.PATH = [dirname(process.execPath), ...rest].join(':');
  env.NODE_COMPILE_CACHE = join(tmpdir(), 'sluice-test-compile-cache');
  env.NO_COLOR = '1';
  return env;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(
  cmd: string,
  args: string[],
  opts: { cwd: string; env?: NodeJS.ProcessEnv; timeout?: number },
): Run {
  const r = spawnSync(cmd, args, {
    cwd: opts.cwd,
    env: opts.env ?? userEnv(),
    encoding: 'utf8',
    timeout: opts.timeout ?? 20_000,
    killSignal: 'SIGKILL',
  });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A Node older than 22.18 on PATH (the system Node), outside node_modules; undefined when none. */
function oldNode(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (!dir || dir.includes('node_modules') || !existsSync(join(dir, 'node'))) continue;
    const r = spawnSync(join(dir, 'node'), ['-p', 'process.versions.node'], { encoding: 'utf8' });
    const [major, minor] = r.stdout.trim().split('.').map(Number);
    if (major < 22 || (major === 22 && minor < 18)) return join(dir, 'node');
  }
  return undefined;
}

const NETWORK = /E(NOTFOUND|AI_AGAIN|CONNREFUSED|CONNRESET|TIMEDOUT|NETUNREACH|HOSTUNREACH)|network/;

describe('the packed package, installed from its tarball', { timeout: 180_000 }, () => {
  let work = '';
  let app = '';
  let bin = '';
  let packed: { size: number; unpackedSize: number; files: { path: string }[] } | undefined;
  let unavailable: string | undefined;
  let diagnostic = '';

  before(
    () => {
      work = realpathSync(mkdtempSync(join(tmpdir(), 'sluice-pack-')));
      // prepack builds dist/ in this checkout (bin/sluice.js here keeps running the source).
      const pack = run('npm', ['pack', '--json', '--loglevel=error', '--pack-destination', work], {
        cwd: ROOT,
        timeout: 120_000,
      });
      assert.equal(pack.code, 0, `npm pack failed:\n${pack.stderr}\n${pack.stdout}`);
      // The build's own lines come first on stdout, then npm's JSON.
      const json = pack.stdout.slice(pack.stdout.search(/^\[/m));
      packed = JSON.parse(json)[0];
      const tarball = join(work, (JSON.parse(json)[0] as { filename: string }).filename);

      app = join(work, 'my-app');
      mkdirSync(app);
      writeFileSync(join(app, 'package.json'), '{"name":"my-app","version":"1.0.0","private":true}\n');
      const install = (mode: string) =>
        run('npm', ['install', mode, '--no-audit', '--no-fund', '--loglevel=error', tarball], {
          cwd: app,
          timeout: 120_000,
        });
      // Offline when npm's cache has everything (metadata too); else the registry fills the gaps.
      let r = install('--offline');
      let mode = '--offline';
      if (r.code !== 0 && /ENOTCACHED/.test(r.stderr)) r = install((mode = '--prefer-offline'));
      if (r.code !== 0 && NETWORK.test(r.stderr)) {
        unavailable = `npm install <tarball>: no npm registry reachable and its cache is incomplete (${r.stderr.trim().split('\n')[0]})`;
        return;
      }
      assert.equal(r.code, 0, `npm install <tarball> failed:\n${r.stderr}`);
      bin = join(app, 'node_modules', '.bin', 'sluice');
      const kB = (n: number) => `${Math.round(n / 1000)} kB`;
      diagnostic = `${packed!.files.length} files, ${kB(packed!.size)} packed, ${kB(packed!.unpackedSize)} unpacked; installed with ${mode}`;
    },
    { timeout: 180_000 },
  );
  after(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const sluice = (args: string[], env: NodeJS.ProcessEnv = userEnv()) => run(bin, args, { cwd: app, env });
  const skipped = (t: TestContext) => {
    if (unavailable) t.skip(unavailable);
    return unavailable !== undefined;
  };

  test('ships bin/, dist/ (with the dashboard files), src/sdk/, schema/, examples/, docs; no tests, no source', (t) => {
    if (diagnostic) t.diagnostic(diagnostic);
    const files = packed!.files.map((f) => f.path);
    for (const f of [
      'bin/sluice.js',
      'dist/cli/main.js',
      'dist/diagnose/log-worker.js',
      'dist/admin/dashboard/index.html',
      'dist/admin/dashboard/app.js',
      'dist/admin/dashboard/style.css',
      'src/sdk/upstream.js',
      'src/sdk/upstream.d.ts',
      'schema/sluice.schema.json',
      'examples/sluice.yaml',
      'docs/operations.md',
      'README.md',
      'package.json',
    ])
      assert.ok(files.includes(f), `${f} is missing from the tarball`);
    const stray = files.filter(
      (f) =>
        (f.endsWith('.ts') && !f.endsWith('.d.ts')) ||
        /^(test|bench|scripts)\/|\.test\.|^src\/(?!sdk\/)/.test(f),
    );
    assert.deepEqual(stray, [], 'no TypeScript, tests, benches or scripts in the tarball');
  });

  test('sluice --version, run by the Node on PATH from node_modules/.bin', (t) => {
    if (skipped(t)) return;
    const r = sluice(['--version']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version);
    assert.equal(r.stderr, '');
  });

  test('sluice check -c: a small config, and one with a typo (exit 1, one line)', (t) => {
    if (skipped(t)) return;
    writeFileSync(
      join(app, 'sluice.yaml'),
      'listen: 127.0.0.1:0\nupstreams:\n  app:\n    targets: [http://127.0.0.1:3000]\nroutes:\n  - name: all\n    match: { path: / }\n    upstream: app\n',
    );
    const ok = sluice(['check', '-c', 'sluice.yaml']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /sluice\.yaml: ok, 1 route\(s\), 1 upstream\(s\)/);
    writeFileSync(join(app, 'bad.yaml'), 'listen: 127.0.0.1:0\nroutes: []\nlisen: 1\n');
    const bad = sluice(['check', '-c', 'bad.yaml']);
    assert.equal(bad.code, 1, bad.stdout);
    assert.match(bad.stderr, /bad\.yaml:3: .*lisen/);
  });

  test('sluice logs: a small nginx log (one thread) and a 64 MB one (worker threads from dist/)', (t) => {
    if (skipped(t)) return;
    const line = (path: string, status: number, rt: string) =>
      `10.0.0.1 - - [10/Oct/2024:13:55:36 +0000] "GET ${path} HTTP/1.1" ${status} 512 "-" "curl/8.5" rt=${rt} urt=${rt}\n`;
    writeFileSync(
      join(app, 'access.log'),
      line('/api/users/42', 200, '0.120') +
        line('/api/users/7', 200, '0.080') +
        line('/api/orders/9', 504, '29.001'),
    );
    const small = sluice(['logs', 'access.log']);
    assert.equal(small.code, 0, small.stderr);
    assert.match(small.stdout, /^access\.log: nginx, 3 lines/m);
    assert.match(small.stdout, /GET \/api\/users\/:id +2 /);
    assert.match(small.stdout, /GET \/api\/orders\/:id +1 +1 /);

    // From 64 MB on a plain file is read by worker threads too, whose entry file must be dist's .js.
    const big = line('/api/users/42', 504, '29.001');
    writeFileSync(join(app, 'big.log'), big.repeat(Math.ceil((64 * 1024 * 1024) / big.length)));
    const threaded = sluice(['logs', '--json', 'big.log'], { ...userEnv(), SLUICE_LOGS_THREADS: '2' });
    assert.equal(threaded.code, 0, threaded.stderr);
    const report = JSON.parse(threaded.stdout);
    assert.equal(report.files[0].format, 'nginx');
    assert.equal(report.files[0].lines, Math.ceil((64 * 1024 * 1024) / big.length));
    rmSync(join(app, 'big.log'));
  });

  test('on a Node older than 22.18: re-runs itself on $SLUICE_NODE (no node devDependency here)', (t) => {
    if (skipped(t)) return;
    const old = oldNode();
    if (!old) return t.skip('no Node older than 22.18 on PATH');
    const env: NodeJS.ProcessEnv = { ...userEnv(), SLUICE_NODE: process.execPath };
    env.PATH = [dirname(old), ...(env.PATH ?? '').split(':')].join(':');
    const r = run(old, [bin, '--version'], { cwd: app, env });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^\d+\.\d+\.\d+$/m);
    const { SLUICE_NODE: _, ...without } = env;
    const refused = run(old, [bin, '--version'], { cwd: app, env: without });
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^sluice: needs Node\.js 22\.18 or newer .*npm install node@24/);
  });

  test("import('sluice/upstream') and its types entry from the project", (t) => {
    if (skipped(t)) return;
    const script =
      "const m = await import('sluice/upstream');" +
      "const pkg = (await import('sluice/package.json', { with: { type: 'json' } })).default;" +
      'console.log(Object.keys(m).sort().join(","), pkg.exports["./upstream"].types);';
    const r = run(process.execPath, ['--input-type=module', '-e', script], { cwd: app });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\bdeadline\b.*\bfetchWithDeadline\b.*\btiming\b/);
    assert.match(r.stdout, /\.\/src\/sdk\/upstream\.d\.ts$/m);
  });

  test('sluice start: proxies to an upstream and serves the dashboard from dist/', async (t) => {
    if (skipped(t)) return;
    const upstream = http.createServer((_req, res) => res.end('hello from the app'));
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    t.after(() => upstream.close());
    const { port } = upstream.address() as AddressInfo;
    writeFileSync(
      join(app, 'gateway.yaml'),
      `listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\naccess_log: off\nupstreams:\n  app:\n    targets: [http://127.0.0.1:${port}]\nroutes:\n  - name: all\n    match: { path: / }\n    upstream: app\n`,
    );
    const child = spawn(bin, ['start', '-c', 'gateway.yaml'], {
      cwd: app,
      env: userEnv(),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const exited = once(child, 'close');
    t.after(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const deadline = Date.now() + 15_000;
    let m: RegExpMatchArray | null;
    while (!(m = stderr.match(/listening on (http:\/\/\S+), admin on (http:\/\/[\d.:]+)/))) {
      assert.ok(Date.now() < deadline && child.exitCode === null, `no "listening" line; stderr:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const [, gateway, admin] = m;
    const proxied = await fetch(`${gateway}/anything`);
    assert.equal(proxied.status, 200);
    assert.equal(await proxied.text(), 'hello from the app');
    const page = await fetch(`${admin}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(await page.text(), /<html/i);
    for (const asset of ['/assets/app.js', '/assets/style.css'])
      assert.equal((await fetch(`${admin}${asset}`)).status, 200, asset);
    child.kill('SIGTERM');
    const [code] = await exited;
    assert.equal(code, 0, stderr);
  });
});
