/**
 * Fuzzed request framing (issue 14, docs/reliability.md): raw HTTP/1.1 requests from a grammar with
 * mutations (request-grammar.ts) sent to a real gateway on loopback in front of a strict recording
 * upstream (recording-upstream.ts). Each request must be refused (4xx problem+json, nothing complete
 * upstream) or reach the upstream as exactly one well-framed request with the method, normalised
 * path, Host, end-to-end headers and body it meant; never a 5xx, a second response or a hang.
 * Single requests, pipelines, writes split at random offsets and one byte per write; then the heap
 * after a few hundred more cases must not have grown beyond a bounded margin.
 *
 * Seeded: `FUZZ_SEED=n FUZZ_RUNS=n` override the fixed defaults; a failure prints the seed, the
 * fast-check path and the shrunk counterexample (its bytes as a latin1 string). The long run is
 * `scripts/fuzz-requests.ts`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { H1_ONLY, startTestGateway, type TestGateway } from '../helpers.ts';
import { exchange, GATEWAY_YAML, judge } from './framing.ts';
import { type RecordingUpstream, startRecordingUpstream } from './recording-upstream.ts';
import { type FuzzRequest, fuzzRequest, pipeline } from './request-grammar.ts';

const SEED = Number(process.env.FUZZ_SEED ?? 20261202);
const RUNS = Number(process.env.FUZZ_RUNS ?? 250);

let up: RecordingUpstream;
let gw: TestGateway;

before(async () => {
  up = await startRecordingUpstream();
  gw = await startTestGateway(GATEWAY_YAML(up.url));
});
after(async () => {
  await gw?.close();
  await up?.close();
});

/** One connection's requests through the gateway; the judge's findings (empty: all well). */
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

/** fc.assert with the seed and a replay line in the failure message. */
async function check<T>(name: string, arb: fc.Arbitrary<T>, runs: number, body: (v: T) => Promise<string[]>) {
  try {
    await fc.assert(
      fc.asyncProperty(arb, async (v) => {
        const problems = await body(v);
        assert.deepEqual(problems, [], problems.join('\n'));
      }),
      { seed: SEED, numRuns: runs, endOnFailure: true },
    );
  } catch (err) {
    (err as Error).message =
      `${name}: FUZZ_SEED=${SEED} FUZZ_RUNS=${runs} to replay\n${(err as Error).message}`;
    throw err;
  }
}

const splitsOf = (n: number) => fc.array(fc.nat(n), { maxLength: 6 });

describe('fuzzed request framing (HTTP/1.1)', H1_ONLY, () => {
  test('single requests: refused, or forwarded exactly as meant', async () => {
    await check('single', fuzzRequest, RUNS, (r) => run([r]));
  });

  test('pipelined requests on one connection', async () => {
    await check('pipeline', pipeline, Math.ceil(RUNS / 3), (rs) => run(rs));
  });

  test('writes split at random offsets', async () => {
    await check('split', fc.tuple(pipeline, splitsOf(400)), Math.ceil(RUNS / 3), ([rs, splits]) =>
      run(rs, splits),
    );
  });

  test('one byte per write', async () => {
    await check('byte-by-byte', fuzzRequest, Math.ceil(RUNS / 10), (r) =>
      run(
        [r],
        Array.from({ length: r.bytes.length }, (_, i) => i),
      ),
    );
  });

  test('the heap does not grow across a few hundred more cases', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const samples = fc.sample(
      fc.oneof(
        fuzzRequest.map((r) => [r]),
        pipeline,
      ),
      { seed: SEED + 1, numRuns: 300 },
    );
    const heap = () => {
      gc();
      gc();
      return process.memoryUsage().heapUsed;
    };
    // A warm-up half, then the measured half: what stays after it is what requests leak.
    for (const rs of samples.slice(0, 150)) await run(rs);
    const before = heap();
    for (const rs of samples.slice(150)) await run(rs);
    const grown = heap() - before;
    assert.ok(grown < 3 * 1024 * 1024, `heap grew by ${(grown / 1024).toFixed(0)} KiB over 150 cases`);
  });
});
