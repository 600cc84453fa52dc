/**
 * Builds dist/, the JavaScript the published package runs (`npm pack` runs it as prepack). Node does
 * not strip types under node_modules, so an installed Sluice cannot run src/*.ts; a clone still runs
 * its source directly and needs no build (bin/sluice.js picks one or the other).
 *
 * 1. tsc -p tsconfig.build.json: src/**\/*.ts minus tests into dist/, `./x.ts` imports rewritten to `./x.js`.
 * 2. The files under src/ that are not TypeScript (the dashboard's HTML, CSS and JS), copied next to
 *    the modules that read them relative to import.meta.url. src/sdk/ is shipped as it is, not copied.
 * 3. `new URL('./x.ts', import.meta.url)` (a worker's entry file) rewritten to `./x.js`, as tsc does
 *    for imports; every such target must exist in dist/.
 * 4. A check that no relative `.ts` specifier is left anywhere in dist/.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const src = join(root, 'src');
const dist = join(root, 'dist');

function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));
}

function fail(message: string): never {
  console.error(`build: ${message}`);
  process.exit(1);
}

rmSync(dist, { recursive: true, force: true });

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
if (r.status !== 0) fail(`tsc exited ${r.status ?? r.signal}`);
const modules = files(dist).length;

let assets = 0;
for (const file of files(src)) {
  const rel = relative(src, file);
  if (file.endsWith('.ts') || rel.startsWith('sdk/')) continue;
  cpSync(file, join(dist, rel));
  assets++;
}

const URL_OF_TS = /new URL\((['"])(\.\.?\/[^'"]+)\.ts\1, import\.meta\.url\)/g;
const LEFT_TS = /(['"])\.\.?\/[^'"\n]*\.ts\1/;
let rewritten = 0;
for (const file of files(dist)) {
  if (!file.endsWith('.js')) continue;
  const text = readFileSync(file, 'utf8');
  const out = text.replace(URL_OF_TS, (_m, q: string, path: string) => {
    if (!existsSync(join(dirname(file), `${path}.js`)))
      fail(`${relative(root, file)}: ${path}.js (from ${path}.ts) is not in dist/`);
    rewritten++;
    return `new URL(${q}${path}.js${q}, import.meta.url)`;
  });
  const left = LEFT_TS.exec(out);
  if (left) fail(`${relative(root, file)}: a relative .ts specifier is left: ${left[0]}`);
  if (out !== text) writeFileSync(file, out);
}

console.log(`build: dist/ has ${modules} modules, ${assets} assets, ${rewritten} worker URL(s) rewritten`);
