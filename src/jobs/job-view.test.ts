import assert from 'node:assert/strict';
import { test } from 'node:test';
import { upstreamTimeout } from '../errors.ts';
import type { JobRecord } from './job-store.ts';
import { jobErrorFrom, problemFromJob, retryAfterFor, retryAfterSeconds } from './job-view.ts';

test('Retry-After grows with age: 1 s, 2 s, 5 s, 10 s, capped at 30 s', () => {
  assert.deepEqual(
    [0, 9_999, 10_000, 59_999, 60_000, 299_999, 300_000, 1_799_999, 1_800_000, 86_400_000].map(
      retryAfterSeconds,
    ),
    [1, 1, 2, 2, 5, 5, 10, 10, 30, 30],
  );
});

test('a queued job waiting for its retry is not polled before it is due', () => {
  const job = { status: 'queued', created_at: 0, run_at: 12_000 } as JobRecord;
  assert.equal(retryAfterFor(job, 1_000), 11);
  assert.equal(retryAfterFor({ ...job, status: 'completed' }, 1_000), undefined);
});

test('a gateway error survives the round trip through the store', () => {
  const err = upstreamTimeout('ttfb', 'reports', 'api', 30_000);
  const stored = jobErrorFrom(err);
  assert.deepEqual(stored, {
    code: 'upstream-timeout',
    status: 504,
    detail: err.detail,
    phase: 'ttfb',
    timeout_ms: 30_000,
    proxy_error: 'http_response_timeout',
  });
  const back = problemFromJob({ id: 'J', route: 'reports', status: 'failed', error: stored } as JobRecord);
  assert.equal(back.code, 'upstream-timeout');
  assert.equal(back.status, 504);
  assert.equal(back.phase, 'ttfb');
  assert.equal(back.proxyError, 'http_response_timeout');
  const unknown = problemFromJob({
    id: 'J',
    route: 'r',
    status: 'failed',
    error: { code: 'from-the-future', status: 599, detail: 'd' },
  } as JobRecord);
  assert.equal(unknown.status, 502);
});
