/**
 * SqliteJobStore: the JobStore contract on `:memory:` and on a real file, plus what only SQLite has —
 * the file and directory it creates, WAL, store failures surfacing as `store-unavailable`, durability
 * across `kill -9`, and two processes' instances sharing one file.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Readable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { newJobId } from '../../src/jobs/ids.ts';
import { isStoreUnavailable, type NewJob } from '../../src/jobs/job-store.ts';
import { openJobStore } from '../../src/jobs/open-job-store.ts';
import { SqliteJobStore } from '../../src/jobs/sqlite-job-store.ts';
import { runJobStoreContract } from './job-store.contract.ts';

const dir = mkdtempSync(join(tmpdir(), 'sluice-jobs-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const freshPath = () => join(dir, `db-${process.pid}-${n++}`, 'sluice.db');

runJobStoreContract('sqlite :memory:', ({ now }) => new SqliteJobStore(':memory:', { now, heartbeatMs: 0 }));
runJobStoreContract(
  'sqlite file',
  ({ now }) => new SqliteJobStore(freshPath(), { now, heartbeatMs: 0, waitPollMs: 50 }),
  async ({ now, heartbeatMs, instanceLeaseMs }) => {
    // Two instances on one file with the `peers` bus between them, as the workers of one instance
    // have it (there a process-to-process channel carries the messages; here a direct call does).
    const path = freshPath();
    const stores: SqliteJobStore[] = [];
    const open = (i: 0 | 1) => {
      const self: SqliteJobStore = new SqliteJobStore(path, {
        now: now[i],
        heartbeatMs,
        instanceLeaseMs,
        waitPollMs: 50,
        peers: {
          publish: (msg) => {
            for (const other of stores) if (other !== self) other.peerMessage(msg);
          },
        },
      });
      stores.push(self);
      return self;
    };
    return [open(0), open(1)] as const;
  },
);

const auto = (over: Partial<NewJob> = {}): NewJob => ({
  id: newJobId(),
  route: 'r',
  mode: 'auto',
  status: 'running',
  keep_ms: 60_000,
  max_result: 10 * 1024 * 1024,
  idempotent: false,
  ...over,
});

describe('SqliteJobStore specifics', () => {
  test('creates the directory and opens in WAL mode', async (t) => {
    const path = join(dir, 'nested', 'deeper', 'sluice.db');
    const store = new SqliteJobStore(path, { heartbeatMs: 0 });
    t.after(() => store.close());
    assert.ok(existsSync(path));
    const db = new DatabaseSync(path);
    t.after(() => db.close());
    assert.deepEqual({ ...db.prepare('PRAGMA journal_mode').get() }, { journal_mode: 'wal' });
  });

  test('openJobStore parses sqlite:PATH and ?synchronous=full; refuses what it cannot open', async (t) => {
    const path = join(dir, 'url', 'a.db');
    const store = openJobStore(`sqlite:${path}?synchronous=full`, { heartbeatMs: 0 });
    t.after(() => store.close());
    await store.create(auto());
    assert.equal((await store.counts()).r?.running, 1);
    assert.throws(() => openJobStore('sqlite:', {}), /sqlite:PATH/);
    assert.throws(() => openJobStore('sqlite:./x.db?synchronous=sometimes', {}), /synchronous/);
    assert.throws(() => openJobStore('redis://127.0.0.1:6379/x', {}), /redis/i);
  });

  test('an unopenable database is store-unavailable', () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, 'not a directory');
    assert.throws(() => new SqliteJobStore(join(file, 'sub', 'x.db')), isStoreUnavailable);
    const garbage = join(dir, 'garbage.db');
    writeFileSync(garbage, Buffer.alloc(8192, 7));
    assert.throws(() => new SqliteJobStore(garbage), isStoreUnavailable);
  });

  test('a database locked by another process is store-unavailable after the busy timeout', async (t) => {
    const path = freshPath();
    const store = new SqliteJobStore(path, { heartbeatMs: 0, busyTimeoutMs: 50 });
    t.after(() => store.close());
    const other = new DatabaseSync(path);
    other.exec('BEGIN EXCLUSIVE');
    t.after(() => other.close());
    const t0 = performance.now();
    await assert.rejects(store.create(auto()), isStoreUnavailable);
    assert.ok(performance.now() - t0 < 1_000);
    other.exec('ROLLBACK');
    await store.create(auto());
  });

  test('a full disk is store-unavailable; the job stays running and can still be failed', async (t) => {
    // Simulated with max_page_count: SQLite answers SQLITE_FULL as it would on a full disk.
    const store = new SqliteJobStore(':memory:', { heartbeatMs: 0, initSql: 'PRAGMA max_page_count = 200' });
    t.after(() => store.close());
    const job = await store.create(auto());
    const big = Readable.from(Array.from({ length: 20 }, () => Buffer.alloc(64 * 1024, 1)));
    await assert.rejects(store.complete(job.id, { status: 200, headers: [] }, big), isStoreUnavailable);
    assert.equal((await store.get(job.id))?.status, 'running');
    assert.equal(
      await store.fail(job.id, { code: 'internal-error', status: 500, detail: 'store full' }),
      true,
    );
    // Nothing staged was left behind: new jobs fit again.
    for (let i = 0; i < 20; i++) await store.create(auto());
  });

  test('a client that stops waiting releases its waiter', async (t) => {
    const store = new SqliteJobStore(':memory:', { heartbeatMs: 0 });
    t.after(() => store.close());
    const job = await store.create(auto());
    const ac = new AbortController();
    const waits = [store.waitFinal(job.id, 10_000, ac.signal), store.waitFinal(job.id, 10_000)];
    await new Promise((r) => setImmediate(r));
    assert.equal(store.waiters, 2);
    ac.abort();
    assert.equal(await waits[0], undefined);
    assert.equal(store.waiters, 1);
    await store.cancel(job.id);
    assert.equal((await waits[1])?.status, 'cancelled');
    assert.equal(store.waiters, 0);
  });

  test('two instances on one file: leases keep them apart; a waiter sees the other process finish', async (t) => {
    const path = freshPath();
    const a = new SqliteJobStore(path, { heartbeatMs: 0, waitPollMs: 20 });
    const b = new SqliteJobStore(path, { heartbeatMs: 0, waitPollMs: 20 });
    t.after(() => Promise.all([a.close(), b.close()]));
    const job = await a.create(auto());
    // b must not take a's live auto job for interrupted, even exclusively... unless told it is alone.
    assert.deepEqual(await b.recoverInterrupted(), { failed: 0, requeued: 0 });
    const waiting = b.waitFinal(job.id, 5_000);
    setTimeout(
      () => void a.complete(job.id, { status: 200, headers: [] }, Readable.from([Buffer.from('x')])),
      30,
    );
    const t0 = performance.now();
    assert.equal((await waiting)?.status, 'completed');
    assert.ok(performance.now() - t0 < 2_000);
  });

  test('without a peers bus, a job cancelled by another process reaches its holder at the next heartbeat', async (t) => {
    const path = freshPath();
    const a = new SqliteJobStore(path, { heartbeatMs: 40, instanceLeaseMs: 60_000 });
    const b = new SqliteJobStore(path, { heartbeatMs: 0 });
    t.after(() => Promise.all([a.close(), b.close()]));
    const seen: string[] = [];
    a.onCancelled((id) => seen.push(id));
    const job = await a.create(auto());
    assert.equal(await b.cancel(job.id), true);
    const t0 = performance.now();
    while (seen.length === 0 && performance.now() - t0 < 3_000) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(seen, [job.id]);
    await new Promise((r) => setTimeout(r, 120));
    assert.deepEqual(seen, [job.id], 'once');
  });

  test('the heartbeat keeps this instance’s auto jobs alive', async (t) => {
    let now = 1_000_000;
    const store = new SqliteJobStore(':memory:', { now: () => now, heartbeatMs: 20, instanceLeaseMs: 1_000 });
    t.after(() => store.close());
    const job = await store.create(auto());
    now += 900;
    await new Promise((r) => setTimeout(r, 80)); // a few beats at the new time
    now += 900; // past the first lease, within the renewed one
    assert.deepEqual(await store.recoverInterrupted(), { failed: 0, requeued: 0 });
    assert.equal((await store.get(job.id))?.status, 'running');
  });

  test('kill -9 after a 202: the job survives and startup recovery ends it interrupted', async () => {
    const path = freshPath();
    const storeUrl = new URL('../../src/jobs/sqlite-job-store.ts', import.meta.url).href;
    const script = `
      import { SqliteJobStore } from ${JSON.stringify(storeUrl)};
      const s = new SqliteJobStore(${JSON.stringify(path)}, { heartbeatMs: 0 });
      const base = { route: 'r', keep_ms: 60000, max_result: 1000, idempotent: false };
      await s.create({ ...base, id: 'Jauto000000000000000000000', mode: 'auto', status: 'running' });
      await s.create({ ...base, id: 'Jsafe000000000000000000000', mode: 'queue', status: 'queued', idempotent: true,
        request: { method: 'GET', path: '/', headers: [] } });
      await s.create({ ...base, id: 'Jpost000000000000000000000', mode: 'queue', status: 'queued',
        request: { method: 'POST', path: '/', headers: [], body: Buffer.from('x') } });
      await s.claim(s.instanceId + ':w0', 60000);
      await s.claim(s.instanceId + ':w1', 60000);
      process.stdout.write('ready\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (c) => (err += c));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (c: Buffer) => c.toString().includes('ready') && resolve());
      child.on('exit', (code) => reject(new Error(`child exited ${code}: ${err}`)));
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));

    const store = new SqliteJobStore(path, { heartbeatMs: 0 });
    try {
      assert.equal((await store.get('Jauto000000000000000000000'))?.status, 'running');
      assert.deepEqual(await store.recoverInterrupted({ exclusive: true }), { failed: 2, requeued: 1 });
      assert.equal((await store.get('Jauto000000000000000000000'))?.error?.code, 'interrupted');
      assert.equal((await store.get('Jsafe000000000000000000000'))?.status, 'queued');
      assert.equal((await store.get('Jpost000000000000000000000'))?.error?.code, 'interrupted');
    } finally {
      await store.close();
    }
  });
});

describe('schema version 2', () => {
  test('a job keeps the id and arrival of the request that created it; a version 1 file is upgraded in place', async () => {
    const path = freshPath();
    // A file as version 1 left it: the jobs table without request_id / received_at.
    const first = new SqliteJobStore(path, { heartbeatMs: 0 });
    await first.close();
    const db = new DatabaseSync(path);
    db.exec('ALTER TABLE jobs DROP COLUMN request_id');
    db.exec('ALTER TABLE jobs DROP COLUMN received_at');
    db.exec('PRAGMA user_version = 1');
    db.close();

    const store = new SqliteJobStore(path, { heartbeatMs: 0 });
    try {
      const id = newJobId();
      await store.create({
        id,
        route: 'r',
        mode: 'auto',
        status: 'running',
        keep_ms: 60_000,
        max_result: 1024,
        idempotent: true,
        request_id: '01JREQUEST0000000000000000',
        received_at: 1_700_000_000_123,
      });
      const job = await store.get(id);
      assert.equal(job?.request_id, '01JREQUEST0000000000000000');
      assert.equal(job?.received_at, 1_700_000_000_123);
    } finally {
      await store.close();
    }
    const check = new DatabaseSync(path);
    assert.equal((check.prepare('PRAGMA user_version').get() as { user_version: number }).user_version, 2);
    check.close();
  });
});
