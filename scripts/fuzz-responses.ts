/**
 * The long run of the fuzzed upstream responses (issue 14, docs/reliability.md): the property of
 * test/reliability/response-fuzz.test.ts over many more cases, after the corpus.
 *
 *   node scripts/fuzz-responses.ts [--runs 5000] [--seed S]
 *   SLUICE_TEST_PROTOCOL=h2 node scripts/fuzz-responses.ts …   (the client side over TLS + HTTP/2)
 *
 * Prints the seed first and the shrunk counterexample on failure (exit 1); a case worth keeping goes
 * to test/corpus/responses/ as {"why", "bytes", "after"}.
 */
import { parseArgs } from 'node:util';
import fc from 'fast-check';
import { responseCase } from '../test/reliability/response-grammar.ts';
import { describeCase, loadCorpus, startHarness } from '../test/reliability/response-harness.ts';

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '5000' }, seed: { type: 'string' } },
});
const runs = Number(values.runs);
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
console.error(
  `fuzz-responses: seed ${seed}, ${runs} runs, ${process.env.SLUICE_TEST_PROTOCOL ?? 'h1'} clients`,
);
const h = await startHarness();
const t0 = performance.now();
let failed = false;
try {
  for (const c of loadCorpus()) {
    const wrong = await h.run(c);
    if (wrong !== undefined) {
      failed = true;
      console.error(`corpus ${c.name}: ${wrong}\n${describeCase(c)}`);
    }
  }
  let n = 0;
  await fc.assert(
    fc.asyncProperty(responseCase, async (c) => {
      if (++n % 500 === 0) console.error(`${n} cases, ${Math.round((performance.now() - t0) / 1000)}s`);
      const wrong = await h.run(c);
      if (wrong !== undefined) throw new Error(`${wrong}\n${describeCase(c)}`);
    }),
    { seed, numRuns: runs },
  );
  console.log(
    `${runs} cases and the corpus in ${Math.round((performance.now() - t0) / 1000)}s: ${failed ? 'corpus FAILED' : 'ok'}`,
  );
} catch (err) {
  failed = true;
  console.error(`FAILED (replay: --seed ${seed} --runs ${runs})\n${(err as Error).message}`);
} finally {
  await h.close();
}
process.exit(failed ? 1 : 0);
