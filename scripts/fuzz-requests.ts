/**
 * The long run of the request-framing fuzz (issue 14, docs/reliability.md): the properties of
 * test/reliability/request-fuzz.test.ts with a budget of your choosing, against a gateway in this
 * process in front of the strict recording upstream.
 *
 *   npx node scripts/fuzz-requests.ts [--runs 20000] [--seed N] [--save]
 *
 * `--runs` is split over single requests (60%), pipelines (20%), random write splits (15%) and one
 * byte per write (5%). Each failure prints its seed, the fast-check path and the shrunk
 * counterexample; with `--save` it is also written to test/corpus/requests/ as a new regression case.
 * Exit 1 on any failure. The heap (after GC) is printed before and after.
 */
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { startTestGateway } from '../test/helpers.ts';
import { saveCase } from '../test/reliability/corpus.ts';
import { exchange, GATEWAY_YAML, judge } from '../test/reliability/framing.ts';
import { startRecordingUpstream } from '../test/reliability/recording-upstream.ts';
import { type FuzzRequest, fuzzRequest, pipeline } from '../test/reliability/request-grammar.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '20000' },
    seed: { type: 'string', default: String(Date.now() % 2 ** 31) },
    save: { type: 'boolean', default: false },
  },
});
const runs = Number(values.runs);
const seed = Number(values.seed);

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const heapMiB = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed / 2 ** 20;
};

const up = await startRecordingUpstream();
const gw = await startTestGateway(GATEWAY_YAML(up.url));

async function run(requests: FuzzRequest[], splits: readonly number[] = []): Promise<string[]> {
  up.reset();
  // The test gateway's in-memory access log keeps every line (and its request): not a leak of the
  // gateway's, so it is emptied for the heap figures.
  gw.log.entries.length = 0;
  const bytes = Buffer.concat(requests.map((r) => r.bytes));
  const got = await exchange(
    gw.port,
    bytes,
    requests.map((r) => r.meant.method),
    { splits },
  );
  return judge(requests, got, up);
}

const suites: [string, number, fc.Arbitrary<[FuzzRequest[], number[]]>][] = [
  ['single', 0.6, fuzzRequest.map((r) => [[r], []])],
  ['pipeline', 0.2, pipeline.map((rs) => [rs, []])],
  ['split', 0.15, fc.tuple(pipeline, fc.array(fc.nat(400), { maxLength: 6 }))],
  ['byte-by-byte', 0.05, fuzzRequest.map((r) => [[r], Array.from({ length: r.bytes.length }, (_, i) => i)])],
];

let failed = 0;
const started = performance.now();
const heapBefore = heapMiB();
console.log(`fuzz-requests: seed ${seed}, ${runs} runs`);
for (const [name, share, arb] of suites) {
  const n = Math.max(1, Math.round(runs * share));
  const t = performance.now();
  const result = await fc.check(
    fc.asyncProperty(arb, async ([rs, splits]) => (await run(rs, splits)).length === 0),
    { seed, numRuns: n },
  );
  const secs = ((performance.now() - t) / 1000).toFixed(1);
  if (!result.failed) {
    console.log(`  ${name}: ${n} runs, ok (${secs}s)`);
    continue;
  }
  failed++;
  const [rs, splits] = result.counterexample?.[0] ?? [[], []];
  const problems = await run(rs, splits);
  console.log(
    `  ${name}: FAILED after ${result.numRuns} runs (${secs}s): seed ${seed}, path "${result.counterexamplePath}"`,
  );
  for (const p of problems) console.log(`    ${p}`);
  for (const r of rs)
    console.log(`    ${r.expect} ${r.mutation}: ${JSON.stringify(r.bytes.toString('latin1'))}`);
  if (values.save) {
    const file = saveCase(
      `fuzz-${seed}-${name}`,
      `scripts/fuzz-requests.ts --seed ${seed} (${name}, path ${result.counterexamplePath})`,
      problems.join('; '),
      rs,
      splits.length > 0 ? splits : undefined,
    );
    console.log(`    saved to ${file}`);
  }
}
const heapAfter = heapMiB();
console.log(
  `fuzz-requests: ${failed === 0 ? 'ok' : `${failed} suite(s) failed`} in ${((performance.now() - started) / 1000).toFixed(1)}s; ` +
    `heap ${heapBefore.toFixed(1)} MiB before, ${heapAfter.toFixed(1)} MiB after`,
);
await gw.close();
await up.close();
process.exit(failed === 0 ? 0 : 1);
