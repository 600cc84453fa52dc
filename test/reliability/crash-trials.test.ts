/**
 * Crash trials, bounded (issue 14): `sluice start` killed with SIGKILL at random moments under mixed
 * traffic and restarted on the same store; every job that got a 202 must reach a final state that
 * polling shows (test/reliability/crash-trial.ts). A few trials per store here (`CRASH_TRIALS`,
 * default 2; `CRASH_SEED` replays a seed); the long run is `scripts/crash-trials.ts`. The Redis trials
 * use db 13 under a key prefix of their own (deleted afterwards) and are skipped when no Redis answers.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { redisUp, runCrashTrials, type StoreKind, summary } from './crash-trial.ts';

const TRIALS = Number(process.env.CRASH_TRIALS ?? 2);
const REDIS = process.env.SLUICE_TEST_REDIS_CRASH ?? 'redis://127.0.0.1:6379/13';

for (const store of ['sqlite', 'redis'] as StoreKind[]) {
  const seed = Number(process.env.CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
  test(`${TRIALS} crash trials on ${store} (CRASH_SEED=${seed})`, async (t) => {
    if (store === 'redis' && !(await redisUp(REDIS))) return t.skip(`no Redis at ${REDIS}`);
    const r = await runCrashTrials({ store, trials: TRIALS, seed, redis: REDIS, slowMaxMs: 600 });
    t.diagnostic(summary(r));
    const problems = r.problems.map((p) => `trial ${p.trial} ${p.kind} ${p.id}: ${p.problem}`);
    assert.deepEqual(problems, [], `replay with CRASH_SEED=${seed}`);
    assert.equal(r.final, r.accepted);
    assert.ok(r.answered > 0, 'the gateway answered requests before the kills');
  });
}
