/**
 * Differential tests against nginx (issue 14, docs/reliability.md): the differential corpus (the
 * published smuggling payloads, HTTP Garden trophies, RFC 9112's examples, the regression corpus and
 * a fixed fuzz sample) through a private nginx and through a real `sluice start` process, both in
 * front of the same strict recording upstream. Every disagreement must be explained by a decision
 * of nginx-decisions.ts (which checks that Sluice still does what it decided), neither side may hand
 * the upstream a malformed request, and the Sluice process must still be up at the end.
 *
 * Skipped, saying why, where nginx is not installed (CI installs nginx-light: .ci/run). The table
 * for the docs: `npx node scripts/nginx-differential.ts`.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { compareAll, type Decided, describe, type Sides, startSides, table } from './differential.ts';
import { differentialCorpus } from './differential-corpus.ts';
import { NGINX } from './nginx.ts';
import { DECISIONS, decide } from './nginx-decisions.ts';

const skip =
  NGINX === undefined && !process.env.CI ? 'nginx is not installed (apt-get install nginx-light)' : false;

let sides: Sides | undefined;
before(async () => {
  if (!skip) sides = await startSides();
});
after(async () => {
  await sides?.close();
});

test('every disagreement with nginx is a documented, tested decision', { skip }, async (t) => {
  const s = sides as Sides;
  const results: Decided[] = (await compareAll(s, differentialCorpus())).map((r) => ({
    ...r,
    decisions: r.agree ? undefined : decide(r.c, r.sluice, r.nginx),
  }));
  t.diagnostic(`\n${table(results, DECISIONS)}`);

  const undecided = results.filter((r) => !r.agree && r.decisions === undefined);
  assert.deepEqual(
    undecided.map(
      (r) =>
        `${r.c.source}/${r.c.name} ${JSON.stringify(r.c.bytes.toString('latin1')).slice(0, 200)}: ` +
        `sluice ${describe(r.sluice)}, nginx ${describe(r.nginx)}`,
    ),
    [],
  );
  const malformed = results.filter((r) => r.sluice.malformed.length > 0).map((r) => r.c.name);
  assert.deepEqual(malformed, [], 'Sluice handed the upstream a malformed request');
  const hung = results.filter((r) => r.sluice.timedOut).map((r) => r.c.name);
  assert.deepEqual(hung, [], 'Sluice neither answered nor closed');

  assert.equal(s.sluice.memory().rssKiB > 0, true);
  const alive = await Promise.race([
    s.sluice.exited.then(() => false),
    new Promise((r) => setTimeout(() => r(true), 50)),
  ]);
  assert.equal(alive, true, `the gateway process died: ${s.sluice.stderr().slice(-2000)}`);
});
