/**
 * Fuzzed upstream responses (issue 14): a raw upstream answers with mutated status lines, headers,
 * framing and truncations (test/reliability/response-grammar.ts); the client must get the response
 * exactly when it was well-formed, else a 502 problem before the headers or a visibly cut response
 * after them (HTTP/1.1: closed before the declared end; h2: RST_STREAM), never a well-framed response
 * with a wrong body; and after every case the pool recovers (test/reliability/response-harness.ts).
 *
 * A fixed budget per run (`FUZZ_RUNS`, default 400, 100 over h2), a seed printed on failure (`FUZZ_SEED` replays
 * it), shrinking by fast-check; the regression cases in test/corpus/responses/ replay first. The long
 * run is `scripts/fuzz-responses.ts`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { H2 } from '../helpers.ts';
import { responseCase } from './response-grammar.ts';
import { describeCase, type Harness, loadCorpus, startHarness } from './response-harness.ts';

const RUNS = Number(process.env.FUZZ_RUNS ?? (H2 ? 100 : 400));
const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));

describe('fuzzed upstream responses', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  test('the corpus of regression cases', async (t) => {
    for (const c of loadCorpus()) {
      await t.test(c.name, async () => {
        const wrong = await h.run(c);
        assert.equal(wrong, undefined, `${c.why}\n${describeCase(c)}`);
      });
    }
  });

  test(`${RUNS} generated cases (FUZZ_SEED=${SEED})`, async () => {
    try {
      await fc.assert(
        fc.asyncProperty(responseCase, async (c) => {
          const wrong = await h.run(c);
          if (wrong !== undefined) throw new Error(`${wrong}\n${describeCase(c)}`);
        }),
        { seed: SEED, numRuns: RUNS, interruptAfterTimeLimit: 240_000 },
      );
    } catch (err) {
      console.error(`response fuzz failed: replay with FUZZ_SEED=${SEED} FUZZ_RUNS=${RUNS}`);
      throw err;
    }
  });
});
