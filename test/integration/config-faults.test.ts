/**
 * Config faults (issue 14): every reload path (SIGHUP, POST /api/reload, the file watch) meets an
 * invalid file, a half-written one, an empty one, binary garbage, a missing file and a directory in its
 * place. Each is refused with a log line and a counted failure, and the running config keeps serving
 * (the upstream it names answers); afterwards a valid file still applies. Real `sluice start`
 * processes, real files.
 */
import assert from 'node:assert/strict';
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { describe, type TestContext, test } from 'node:test';
import { type GatewayProcess, sleep, spawnGateway, startHttpServer } from '../helpers.ts';

async function until(what: string, pred: () => boolean | Promise<boolean>, ms = 8_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await pred())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function body(gw: GatewayProcess): Promise<string> {
  return (await fetch(gw.url('/x'))).text();
}

async function failures(gw: GatewayProcess): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${gw.adminPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('sluice_config_reloads_total{result="failure"}'));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

const refusedLines = (gw: GatewayProcess) => (gw.stderr().match(/config reload refused/g) ?? []).length;

async function upstreams(t: TestContext) {
  const one = await startHttpServer((_req, res) => res.end('one'));
  const two = await startHttpServer((_req, res) => res.end('two'));
  t.after(() => Promise.all([one.close(), two.close()]));
  return { one, two };
}

/** The config as spawnGateway writes it: its own head, then ours. */
const head = 'listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\naccess_log: off\n';

/** Each fault leaves the path named by the config unusable in a different way. */
const FAULTS: [string, (file: string, valid: string) => void][] = [
  ['an unknown key', (f, valid) => writeFileSync(f, `${valid}bogus_key: 1\n`)],
  ['a half-written file', (f, valid) => writeFileSync(f, valid.slice(0, Math.floor(valid.length * 0.6)))],
  ['an empty file', (f) => writeFileSync(f, '')],
  ['binary garbage', (f) => writeFileSync(f, Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x7b, 0x0a, 0x00]))],
  ['a missing file', (f) => rmSync(f)],
  [
    'a directory in its place',
    (f) => {
      rmSync(f);
      mkdirSync(f);
    },
  ],
];

function restore(file: string, text: string): void {
  rmSync(file, { recursive: true, force: true });
  writeFileSync(file, text);
}

describe('config faults keep the running config', () => {
  test('SIGHUP and POST /api/reload: every fault refused, counted and logged; the old config serves on', async (t) => {
    const { one, two } = await upstreams(t);
    const config = (u: string) => `watch: false
upstreams: { one: { targets: ["${one.url}"] }, two: { targets: ["${two.url}"] } }
routes: [{ name: r, match: { path: / }, upstream: ${u} }]
`;
    const gw = await spawnGateway(config('one'));
    t.after(() => gw.stop());
    const valid = head + config('one');
    let expected = 0;
    for (const trigger of ['SIGHUP', 'POST /api/reload'] as const) {
      for (const [name, fault] of FAULTS) {
        fault(gw.file, head + config('two'));
        if (trigger === 'SIGHUP') process.kill(gw.pid, 'SIGHUP');
        else {
          const r = await fetch(`http://127.0.0.1:${gw.adminPort}/api/reload`, { method: 'POST' });
          assert.equal(r.status, 422, `${trigger}, ${name}: ${r.status}`);
          const p = (await r.json()) as { type: string; detail: string };
          assert.equal(p.type, 'https://sluice.dev/problems/invalid-config');
          assert.match(p.detail, /the running config stays/);
          assert.ok(p.detail.includes(gw.file), `${name}: the detail names the file: ${p.detail}`);
        }
        expected++;
        await until(`${trigger}, ${name}: refused`, async () => (await failures(gw)) === expected).catch(
          (e) => {
            throw new Error(`${e.message}; failures=${expected}; stderr: ${gw.stderr().slice(-600)}`);
          },
        );
        assert.equal(refusedLines(gw), expected, `${trigger}, ${name}: one log line per refusal`);
        assert.equal(await body(gw), 'one', `${trigger}, ${name}: the running config still serves`);
        restore(gw.file, valid);
      }
    }
    // And a good file still applies.
    restore(gw.file, head + config('two'));
    process.kill(gw.pid, 'SIGHUP');
    await until('the valid file applied', async () => (await body(gw)) === 'two');
    assert.equal(await failures(gw), expected);
  });

  test('the file watch: every fault refused while the old config serves; the fixed file applies', async (t) => {
    const { one, two } = await upstreams(t);
    const config = (u: string) => `watch: true
upstreams: { one: { targets: ["${one.url}"] }, two: { targets: ["${two.url}"] } }
routes: [{ name: r, match: { path: / }, upstream: ${u} }]
`;
    const gw = await spawnGateway(config('one'));
    t.after(() => gw.stop());
    const valid = head + config('one');
    for (const [name, fault] of FAULTS) {
      const before = await failures(gw);
      fault(gw.file, head + config('two'));
      // A missing file or a directory may not make a watch event that reads it: nothing to refuse then,
      // but the running config must serve on either way.
      if (name !== 'a missing file' && name !== 'a directory in its place')
        await until(`watch, ${name}: refused`, async () => (await failures(gw)) > before);
      else await sleep(600);
      assert.equal(await body(gw), 'one', `watch, ${name}: the running config still serves`);
      // Put the valid file back by renaming over (what editors and ConfigMaps do).
      rmSync(gw.file, { recursive: true, force: true });
      writeFileSync(`${gw.file}.tmp`, valid);
      renameSync(`${gw.file}.tmp`, gw.file);
      await sleep(400);
      assert.equal(await body(gw), 'one');
    }
    // The watch survived every fault: a real change applies.
    writeFileSync(`${gw.file}.tmp`, head + config('two'));
    renameSync(`${gw.file}.tmp`, gw.file);
    await until('the change applied by the watch', async () => (await body(gw)) === 'two');
    assert.doesNotMatch(gw.stderr(), /"level":60|uncaught|TypeError/);
  });
});
