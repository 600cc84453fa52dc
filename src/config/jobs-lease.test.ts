import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, loadConfigText } from './load.ts';

const BASE = `upstreams:
  api:
    targets: [http://127.0.0.1:9001]
routes:
  - { name: r, upstream: api }
`;

test('jobs.lease: 10s by default, a duration, at least 1s (refusals name the file, line and key)', () => {
  assert.equal(loadConfigText(BASE, 'sluice.yaml', {}).jobs.lease, 10_000);
  assert.equal(loadConfigText(`${BASE}jobs:\n  lease: 2s\n`, 'sluice.yaml', {}).jobs.lease, 2_000);
  for (const [value, message] of [
    ['500ms', /^sluice\.yaml:7: jobs\.lease: 500ms is too short: a lease is at least 1s/],
    ['10', /^sluice\.yaml:7: jobs\.lease: `10` is not a duration/],
  ] as const) {
    assert.throws(
      () => loadConfigText(`${BASE}jobs:\n  lease: ${value}\n`, 'sluice.yaml', {}),
      (err: unknown) => err instanceof ConfigError && message.test(err.message),
    );
  }
});
