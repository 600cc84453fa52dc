import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isSafeToRepeat, parsePrefer, resultSink } from './accept.ts';
import { newJobId } from './ids.ts';
import { SqliteJobStore } from './sqlite-job-store.ts';

test('parsePrefer: RFC 7240 preferences, case-insensitive, first wins, lenient separators', () => {
  assert.deepEqual(parsePrefer(undefined), { respondAsync: false });
  assert.deepEqual(parsePrefer(''), { respondAsync: false });
  assert.deepEqual(parsePrefer('respond-async'), { respondAsync: true });
  assert.deepEqual(parsePrefer('Respond-Async, wait=10'), { respondAsync: true, waitMs: 10_000 });
  assert.deepEqual(parsePrefer('respond-async; wait=10'), { respondAsync: true, waitMs: 10_000 });
  assert.deepEqual(parsePrefer('WAIT="5"'), { respondAsync: false, waitMs: 5_000 });
  assert.deepEqual(parsePrefer('wait=5, wait=100'), { respondAsync: false, waitMs: 5_000 });
  assert.deepEqual(
    parsePrefer('wait=soon, wait=3'),
    { respondAsync: false },
    'an invalid first wait is not replaced',
  );
  assert.deepEqual(parsePrefer('return=minimal, handling=lenient'), { respondAsync: false });
  assert.deepEqual(parsePrefer(['return=minimal', 'respond-async']), { respondAsync: true });
  assert.deepEqual(
    parsePrefer('foo="a,respond-async"'),
    { respondAsync: false },
    'quoted commas do not split',
  );
  assert.deepEqual(parsePrefer('wait=0'), { respondAsync: false, waitMs: 0 });
  assert.deepEqual(parsePrefer('wait=-1'), { respondAsync: false });
});

test('isSafeToRepeat: idempotent methods or an Idempotency-Key', () => {
  for (const m of ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'get'])
    assert.equal(isSafeToRepeat(m, {}), true, m);
  for (const m of ['POST', 'PATCH']) assert.equal(isSafeToRepeat(m, {}), false, m);
  assert.equal(isSafeToRepeat('POST', { 'idempotency-key': 'k' }), true);
});

test('resultSink: pushed chunks are stored with back-pressure; too large ends the job', async () => {
  const store = new SqliteJobStore(':memory:', { heartbeatMs: 0 });
  try {
    const base = { route: 'r', mode: 'auto', status: 'running', keep_ms: 1_000, idempotent: false } as const;
    const job = await store.create({ ...base, id: newJobId(), max_result: 10 * 1024 * 1024 });
    const sink = resultSink(
      store,
      job.id,
      { status: 200, headers: [['content-type', 'text/plain']] },
      undefined,
      64,
    );
    const chunk = Buffer.alloc(1024, 97);
    let writes = 0;
    let paused = 0;
    // Push like an undici handler: stop on false, go on when drained.
    await new Promise<void>((resolve) => {
      const pump = () => {
        while (writes < 100) {
          writes++;
          if (!sink.write(chunk)) {
            paused++;
            sink.onDrain(pump);
            return;
          }
        }
        sink.end();
        resolve();
      };
      pump();
    });
    assert.equal(await sink.done, 'completed');
    assert.ok(paused > 0, 'back-pressure applied');
    assert.equal((await store.get(job.id))?.result_meta?.size, 100 * 1024);

    const small = await store.create({ ...base, id: newJobId(), max_result: 1000 });
    const s2 = resultSink(store, small.id, { status: 200, headers: [] });
    s2.write(Buffer.alloc(600));
    s2.write(Buffer.alloc(600));
    assert.equal(await s2.done, 'too-large');
    assert.equal(s2.write(Buffer.alloc(1)), false, 'writes after the store stopped are ignored');
    assert.equal((await store.get(small.id))?.error?.code, 'result-too-large');

    const broken = await store.create({ ...base, id: newJobId(), max_result: 1000 });
    const s3 = resultSink(store, broken.id, { status: 200, headers: [] });
    s3.write(Buffer.from('x'));
    const boom = new Error('upstream reset');
    s3.abort(boom);
    await assert.rejects(s3.done, (e) => e === boom);
    assert.equal((await store.get(broken.id))?.status, 'running');
  } finally {
    await store.close();
  }
});
