/**
 * Crash trials (issue 14, docs/reliability.md): kills `sluice start` with SIGKILL at random moments under
 * mixed traffic, restarts it on the same job store, and checks that every job that got a 202 reaches a
 * final state that polling shows. Exit 1 when any did not.
 *
 *   node scripts/crash-trials.ts --store sqlite|redis [--trials 100] [--seed S] [--redis URL] [--json]
 *
 * Redis: the server at --redis (default redis://127.0.0.1:6379/13), keys under a prefix of this run,
 * deleted at the end.
 */
import { parseArgs } from 'node:util';
import { runCrashTrials, type StoreKind, summary } from '../test/reliability/crash-trial.ts';

const { values } = parseArgs({
  options: {
    store: { type: 'string', default: 'sqlite' },
    trials: { type: 'string', default: '100' },
    seed: { type: 'string' },
    redis: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
if (values.store !== 'sqlite' && values.store !== 'redis') {
  console.error('--store must be sqlite or redis');
  process.exit(2);
}
const trials = Number(values.trials);
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
if (!Number.isInteger(trials) || trials < 1 || !Number.isInteger(seed)) {
  console.error('--trials and --seed take integers');
  process.exit(2);
}
const report = await runCrashTrials({
  store: values.store as StoreKind,
  trials,
  seed,
  redis: values.redis,
  log: values.json ? undefined : (line) => console.error(line),
});
if (values.json) console.log(JSON.stringify(report, null, 2));
else console.log(summary(report));
for (const p of report.problems) console.error(`trial ${p.trial} ${p.kind} ${p.id}: ${p.problem}`);
process.exit(report.problems.length === 0 ? 0 : 1);
