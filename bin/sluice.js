#!/usr/bin/env -S node --max-semi-space-size=4
// --max-semi-space-size=4: a small young generation keeps GC pauses short while thousands of
// requests are in flight (504 lateness p99 ~70 ms → ~23 ms, docs/benchmarks.md).
//
// Sluice is TypeScript. A clone runs its source directly through Node's type stripping, with no
// build step; the published package (npm pack, whose prepack builds dist/ and which ships no
// src/cli/) runs the JavaScript in dist/, since Node does not strip types under node_modules. Either
// needs Node >= 22.18 (developed on Node 24). When the Node running this file is older (the system
// Node of a global or project install), this file finds a usable one and re-runs itself with it,
// same arguments, signals and exit code passed through: $SLUICE_NODE, else the Node 24 that
// `npm ci` installs next to Sluice (node_modules/node), else one installed in the project it runs
// from. This file is plain JavaScript so that any Node can parse it.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const MIN = [22, 18];

function tooOld(version) {
  const [major, minor] = version.replace(/^v/, '').split('.').map(Number);
  return major < MIN[0] || (major === MIN[0] && minor < MIN[1]);
}

const self = fileURLToPath(import.meta.url);
const pkg = dirname(dirname(self));

if (!tooOld(process.versions.node)) {
  // The source when it is there (a clone, even one where dist/ was built by npm pack: never a stale
  // build), else the build.
  const source = join(pkg, 'src', 'cli', 'main.ts');
  await import(existsSync(source) ? '../src/cli/main.ts' : '../dist/cli/main.js');
} else {
  const candidates = [
    process.env.SLUICE_NODE,
    join(pkg, 'node_modules', 'node', 'bin', 'node'),
    // Installed as a dependency: node_modules/sluice/bin/sluice.js beside node_modules/node.
    join(pkg, '..', 'node', 'bin', 'node'),
    join(process.cwd(), 'node_modules', 'node', 'bin', 'node'),
  ].filter((p) => p && existsSync(p));
  // A re-run that is still too old (a candidate that is not what it seems) must not loop.
  const node = process.env.SLUICE_REEXEC ? undefined : candidates[0];
  if (!node) {
    console.error(
      `sluice: needs Node.js 22.18 or newer (Node 24 recommended), this is ${process.version}: ` +
        'run `npm install node@24` in your project (then `npx sluice`), or set SLUICE_NODE=/path/to/node24',
    );
    process.exit(1);
  }
  // Its own process group: a Ctrl-C reaches this process only, which passes it on once (in the same
  // group the child would get it twice, and a second SIGINT means "exit now, skip the drain").
  const child = spawn(node, ['--max-semi-space-size=4', self, ...process.argv.slice(2)], {
    stdio: 'inherit',
    detached: true,
    env: { ...process.env, SLUICE_REEXEC: '1' },
  });
  const forward = (signal) => () => child.kill(signal);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'])
    process.on(signal, forward(signal));
  child.on('error', (err) => {
    console.error(`sluice: cannot run ${node}: ${err.message}`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    if (signal) {
      // Die of the same signal, as the child did (the shell then reports it the same way).
      process.removeAllListeners(signal);
      process.kill(process.pid, signal);
      return;
    }
    process.exit(code ?? 1);
  });
}
