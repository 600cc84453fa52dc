/**
 * RedisJobStore: the JobStore contract against the real Redis at SLUICE_TEST_REDIS (default
 * redis://127.0.0.1:6379/9), each store under its own key prefix (the run's keys are deleted
 * afterwards, by prefix: the database is never flushed), plus what only Redis has — URLs, an
 * unreachable or dropped server surfacing as `store-unavailable`, two instances sharing one Redis,
 * TTLs, and no keys left behind after a purge. Skipped when no Redis answers.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { newJobId } from '../../src/jobs/ids.ts';
import { isStoreUnavailable, type NewJob } from '../../src/jobs/job-store.ts';
import { openJobStore } from '../../src/jobs/open-job-store.ts';
import { parseRedisStoreUrl, RedisJobStore } from '../../src/jobs/redis-job-store.ts';
import { runJobStoreContract } from './job-store.contract.ts';

const URL_ = process.env.SLUICE_TEST_REDIS ?? 'redis://127.0.0.1:6379/9';
const RUN = `sluicetest:${randomBytes(6).toString('hex')}:`;
let n = 0;
const freshPrefix = () => `${RUN}${n++}:`;

const admin = new Redis(URL_, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false });
admin.on('error', () => {});
let available = false;
try {
  await admin.connect();
  available = (await admin.ping()) === 'PONG';
} catch {
  available = false;
}

async function keysUnder(prefix: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    out.push(...keys);
  } while (cursor !== '0');
  return out;
}

after(async () => {
  if (available) {
    const keys = await keysUnder(RUN);
    for (let i = 0; i < keys.length; i += 500) await admin.del(...keys.slice(i, i + 500));
  }
  admin.disconnect();
});

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

if (!available) {
  test(`RedisJobStore: no Redis at ${URL_}`, {
    skip: 'set SLUICE_TEST_REDIS or start redis-server',
  }, () => {});
} else {
  runJobStoreContract(
    'redis',
    ({ now }) =>
      new RedisJobStore(URL_, { now, heartbeatMs: 0, prefix: freshPrefix(), allowExclusiveRecovery: true }),
    async ({ now, heartbeatMs, instanceLeaseMs }) => {
      const prefix = freshPrefix();
      const open = (i: 0 | 1) =>
        new RedisJobStore(URL_, { now: now[i], heartbeatMs, instanceLeaseMs, prefix });
      return [open(0), open(1)] as const;
    },
  );

  describe('RedisJobStore specifics', () => {
    let prefix: string;
    before(() => {
      prefix = freshPrefix();
    });

    test('store URLs: redis:// and rediss://, password, db and prefix; malformed ones refused', () => {
      assert.deepEqual(parseRedisStoreUrl('redis://127.0.0.1:6379/0'), {
        url: 'redis://127.0.0.1:6379/0',
        prefix: undefined,
      });
      assert.deepEqual(parseRedisStoreUrl('rediss://:s3cr%40t@cache.internal:6380/2?prefix=gw1:'), {
        url: 'rediss://:s3cr%40t@cache.internal:6380/2',
        prefix: 'gw1:',
      });
      assert.equal(parseRedisStoreUrl('redis://localhost').url, 'redis://localhost');
      assert.throws(() => parseRedisStoreUrl('redis://'), /host/);
      assert.throws(() => parseRedisStoreUrl('redis://h:6379/zero'), /not a number/);
      assert.throws(() => parseRedisStoreUrl('redis://h:6379/0?timeout=3'), /unknown option timeout/);
      assert.throws(() => openJobStore('redis://h:6379/x'), /not a number/);
      const s = openJobStore('redis://:pw@127.0.0.1:1/3', { heartbeatMs: 0 });
      assert.ok(s instanceof RedisJobStore);
      assert.equal(s.location, 'redis://:***@127.0.0.1:1/3');
      return s.close();
    });

    test('an unreachable Redis is store-unavailable, quickly, and never creates the job', async (t) => {
      const store = new RedisJobStore('redis://127.0.0.1:1/0', { heartbeatMs: 0, connectWaitMs: 200 });
      t.after(() => store.close());
      const t0 = performance.now();
      await assert.rejects(store.create(auto()), isStoreUnavailable);
      await assert.rejects(store.get(newJobId()), isStoreUnavailable);
      await assert.rejects(store.waitFinal(newJobId(), 1_000), isStoreUnavailable);
      assert.ok(performance.now() - t0 < 2_000, `took ${performance.now() - t0} ms`);
    });

    test('a dropped connection: calls fail store-unavailable or succeed, and the client reconnects', async (t) => {
      const name = `sluicetest-${randomBytes(4).toString('hex')}`;
      const store = new RedisJobStore(URL_, {
        heartbeatMs: 0,
        prefix,
        connectWaitMs: 2_000,
        redis: { connectionName: name },
      });
      t.after(() => store.close());
      const job = await store.create(auto());
      // Only this store's connection is killed (found by its name): the server is shared.
      const ids = String(await admin.client('LIST'))
        .split('\n')
        .filter((l) => l.includes(` name=${name} `))
        .map((l) => /id=(\d+)/.exec(l)?.[1]);
      assert.equal(ids.length, 1);
      await admin.client('KILL', 'ID', ids[0]!);
      const first = await store.get(job.id).then(
        (j) => j?.status,
        (err) => (isStoreUnavailable(err) ? 'unavailable' : err),
      );
      assert.ok(first === 'running' || first === 'unavailable', String(first));
      // Reconnected by itself within connectWaitMs.
      assert.equal((await store.get(job.id))?.status, 'running');
      assert.equal(await store.cancel(job.id), true);
    });

    test('two instances on one Redis: claims never collide; a waiter wakes when the other finishes', async (t) => {
      const p = freshPrefix();
      const a = new RedisJobStore(URL_, { heartbeatMs: 0, prefix: p });
      const b = new RedisJobStore(URL_, { heartbeatMs: 0, prefix: p });
      t.after(() => Promise.all([a.close(), b.close()]));
      const job = await a.create(auto());
      // A gateway starting beside a running one asks for exclusive recovery: refused by default.
      assert.deepEqual(await b.recoverInterrupted({ exclusive: true }), { failed: 0, requeued: 0 });
      const waiting = b.waitFinal(job.id, 5_000);
      setTimeout(
        () => void a.complete(job.id, { status: 200, headers: [] }, Readable.from([Buffer.from('x')])),
        30,
      );
      const t0 = performance.now();
      assert.equal((await waiting)?.status, 'completed');
      assert.ok(performance.now() - t0 < 1_000, 'woken by pub/sub');
      assert.equal(b.waiters, 0);

      const ids = new Set<string>();
      for (let i = 0; i < 20; i++) {
        const q = await a.create({
          ...auto({ mode: 'queue', status: 'queued', idempotent: true }),
          request: { method: 'GET', path: '/', headers: [] },
        });
        ids.add(q.id);
      }
      const claims = await Promise.all(
        Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).claim(`w${i}`, 60_000)),
      );
      const got = claims.filter((c) => c !== undefined).map((c) => c.id);
      assert.equal(got.length, 20);
      assert.deepEqual(new Set(got), ids);
    });

    test('kill -9 of a gateway process: its jobs survive in Redis; another instance settles them when the leases run out', async () => {
      const p = freshPrefix();
      const storeUrl = new URL('../../src/jobs/redis-job-store.ts', import.meta.url).href;
      const script = `
        import { RedisJobStore } from ${JSON.stringify(storeUrl)};
        const s = new RedisJobStore(${JSON.stringify(URL_)}, { heartbeatMs: 0, prefix: ${JSON.stringify(p)} });
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

      let now = Date.now();
      const other = new RedisJobStore(URL_, { now: () => now, heartbeatMs: 0, prefix: p });
      try {
        assert.equal((await other.get('Jauto000000000000000000000'))?.status, 'running');
        // A starting instance asks for exclusive recovery: it must not take the leases for dead yet.
        assert.deepEqual(await other.recoverInterrupted({ exclusive: true }), { failed: 0, requeued: 0 });
        now += 61_000; // past the 30 s instance lease and the 60 s worker leases
        assert.deepEqual(await other.recoverInterrupted(), { failed: 2, requeued: 1 });
        assert.equal((await other.get('Jauto000000000000000000000'))?.error?.code, 'interrupted');
        assert.equal((await other.get('Jsafe000000000000000000000'))?.status, 'queued');
        assert.equal((await other.get('Jpost000000000000000000000'))?.error?.code, 'interrupted');
        assert.equal((await other.claim('w', 1_000))?.id, 'Jsafe000000000000000000000');
      } finally {
        await other.close();
      }
    });

    test('a Redis that became a replica: writes fail store-unavailable (READONLY), and work again once it is a primary', async (t) => {
      // Two redis-servers of this test's own on free ports: the store points at the replica, as a
      // managed endpoint does for a while after a failover.
      const free = async () => {
        const srv = createServer();
        await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
        const { port } = srv.address() as { port: number };
        await new Promise<void>((r) => srv.close(() => r()));
        return port;
      };
      const start = async (port: number, ...extra: string[]) => {
        const child = spawn(
          'redis-server',
          ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extra],
          { stdio: ['ignore', 'pipe', 'ignore'] },
        );
        t.after(async () => {
          if (child.exitCode === null && child.signalCode === null) {
            child.kill('SIGKILL');
            await new Promise((r) => child.once('exit', r));
          }
        });
        let out = '';
        await new Promise<void>((resolve, reject) => {
          child.stdout.on('data', (d: Buffer) => {
            out += d;
            if (out.includes('Ready to accept connections')) resolve();
          });
          child.once('exit', (code) => reject(new Error(`redis-server exited ${code}: ${out}`)));
        });
      };
      const [primary, replica] = [await free(), await free()];
      await start(primary);
      await start(replica, '--replicaof', '127.0.0.1', String(primary));
      const store = new RedisJobStore(`redis://127.0.0.1:${replica}/0`, {
        heartbeatMs: 0,
        connectWaitMs: 2_000,
      });
      t.after(() => store.close());
      await assert.rejects(
        store.create(auto()),
        (err: Error) => isStoreUnavailable(err) && /READONLY/.test(err.message),
      );
      const r = new Redis(`redis://127.0.0.1:${replica}/0`);
      t.after(() => r.disconnect());
      await r.replicaof('NO', 'ONE');
      let created: unknown;
      for (let i = 0; i < 40 && !created; i++) {
        created = await store
          .create(auto())
          .catch(() => new Promise((res) => setTimeout(() => res(undefined), 50)));
      }
      assert.ok(created, 'created on the promoted server');
    });

    test('the heartbeat keeps this instance’s auto jobs alive', async (t) => {
      let now = 1_000_000;
      const store = new RedisJobStore(URL_, {
        now: () => now,
        heartbeatMs: 20,
        instanceLeaseMs: 1_000,
        prefix: freshPrefix(),
      });
      t.after(() => store.close());
      const job = await store.create(auto());
      now += 900;
      await new Promise((r) => setTimeout(r, 80));
      now += 900;
      assert.deepEqual(await store.recoverInterrupted(), { failed: 0, requeued: 0 });
      assert.equal((await store.get(job.id))?.status, 'running');
    });

    test('final jobs get a Redis TTL; a purge leaves no keys behind', async (t) => {
      const p = freshPrefix();
      let now = Date.now();
      const store = new RedisJobStore(URL_, {
        now: () => now,
        heartbeatMs: 0,
        prefix: p,
        ttlGraceMs: 60_000,
      });
      t.after(() => store.close());
      const done = await store.create(auto({ keep_ms: 5_000 }));
      await store.complete(done.id, { status: 200, headers: [] }, Readable.from([Buffer.alloc(600_000, 1)]));
      const failed = await store.create(auto({ keep_ms: 5_000 }));
      await store.fail(failed.id, { code: 'x', status: 500, detail: 'x' });
      const pttl = await admin.pttl(`${p}job:${done.id}`);
      assert.ok(pttl > 60_000 && pttl <= 65_000, `pttl ${pttl}`);
      const res = (await keysUnder(`${p}res:`))[0];
      assert.ok(res && (await admin.pttl(res)) > 60_000);
      assert.equal((await admin.pttl(`${p}job:${failed.id}`)) > 60_000, true);
      now += 5_000;
      assert.equal(await store.purgeExpired(), 2);
      assert.deepEqual(await keysUnder(p), []);
      assert.deepEqual(await store.counts(), {});
    });
  });
}
