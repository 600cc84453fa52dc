/**
 * The nginx differential's table for docs/reliability.md (issue 14): runs the differential corpus
 * through nginx and a `sluice start` process (test/reliability/differential.ts) and prints the
 * table per source and per decision, then each disagreement with its outcomes (`--details`).
 *
 *   npx node scripts/nginx-differential.ts [--details]
 *
 * Exit 1 when a disagreement is not explained by a decision (test/reliability/nginx-decisions.ts).
 */
import { parseArgs } from 'node:util';
import { compareAll, type Decided, describe, startSides, table } from '../test/reliability/differential.ts';
import { differentialCorpus } from '../test/reliability/differential-corpus.ts';
import { NGINX } from '../test/reliability/nginx.ts';
import { DECISIONS, decide } from '../test/reliability/nginx-decisions.ts';

const { values } = parseArgs({ options: { details: { type: 'boolean', default: false } } });
if (NGINX === undefined) {
  console.error('nginx-differential: nginx is not installed (apt-get install nginx-light)');
  process.exit(2);
}
const sides = await startSides();
const started = performance.now();
const results: Decided[] = (await compareAll(sides, differentialCorpus())).map((r) => ({
  ...r,
  decisions: r.agree ? undefined : decide(r.c, r.sluice, r.nginx),
}));
const secs = ((performance.now() - started) / 1000).toFixed(1);
await sides.close();
console.log(table(results, DECISIONS));
console.log(`\n${results.length} cases in ${secs}s`);
const undecided = results.filter((r) => !r.agree && r.decisions === undefined);
for (const r of results.filter((x) => !x.agree && (values.details || x.decisions === undefined))) {
  console.log(
    `\n${r.c.source}/${r.c.name} [${r.decisions?.join(', ') ?? 'UNDECIDED'}]\n  ${JSON.stringify(r.c.bytes.toString('latin1')).slice(0, 240)}\n` +
      `  sluice: ${describe(r.sluice)}\n  nginx:  ${describe(r.nginx)}`,
  );
}
process.exit(undecided.length === 0 ? 0 : 1);
