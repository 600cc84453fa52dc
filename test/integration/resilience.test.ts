/**
 * Upstream resilience end to end (SPEC §6), with several real upstream servers on loopback:
 * balancing, active health checks, retries that are safe and budgeted, the circuit breaker and the
 * concurrency limit. Each asserts what the client saw and what the upstreams saw.
 */
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { describe, test } from 'node:test';
import { startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import {
  problemOf,
  sleep,
  startHttpServer,
  startRawServer,
  startTestGateway,
  type TestServer,
} from '../helpers.ts';

/** An upstream that counts requests by method and answers with its name. */
async function named(name: string): Promise<TestServer & { hits: Record<string, number> }> {
  const hits: Record<string, number> = {};
  const s = await startHttpServer((req, res) => {
    hits[req.method ?? ''] = (hits[req.method ?? ''] ?? 0) + 1;
    req.resume();
    req.on('end', () => res.end(name));
  });
  return Object.assign(s, { hits });
}

describe('balancing', () => {
  test('round-robin spreads evenly across targets and honours weights', async (t) => {
    const a = await named('a');
    const b = await named('b');
    const c = await named('c');
    const gw = await startTestGateway(`
upstreams:
  even: { targets: ["${a.url}", "${b.url}", "${c.url}"] }
  weighted: { targets: [{ url: "${a.url}", weight: 3 }, { url: "${b.url}", weight: 1 }] }
routes:
  - { name: weighted, match: { path: /w }, upstream: weighted }
  - { name: even, match: { path: / }, upstream: even }
`);
    t.after(async () => {
      await gw.close();
      await Promise.all([a.close(), b.close(), c.close()]);
    });
    const count = async (path: string, n: number) => {
      const seen: Record<string, number> = {};
      for (let i = 0; i < n; i++) {
        const body = await (await fetch(gw.url(path))).text();
        seen[body] = (seen[body] ?? 0) + 1;
      }
      return seen;
    };
    assert.deepEqual(await count('/x', 30), { a: 10, b: 10, c: 10 });
    const w = await count('/w', 40);
    assert.equal(w.a, 30);
    assert.equal(w.b, 10);
  });
});

describe('active health checks', () => {
  test('a target failing its health checks stops getting traffic, and gets it back after recovery', async (t) => {
    const good = await startDemoUpstream({ port: 0 });
    const flaky = await startDemoUpstream({ port: 0 });
    const gw = await startTestGateway(`
upstreams:
  pair:
    targets: ["${good.url}", "${flaky.url}"]
    health: { path: /healthz, interval: 100ms, timeout: 100ms, unhealthy_after: 2, healthy_after: 2 }
routes:
  - { name: pair, match: { path: / }, upstream: pair }
`);
    t.after(async () => {
      await gw.close();
      await good.close();
      await flaky.close();
    });
    const spread = async (n: number) => {
      const before = flaky.stats.requests;
      for (let i = 0; i < n; i++) assert.equal((await fetch(gw.url('/fast'))).status, 200);
      return flaky.stats.requests - before;
    };
    assert.ok((await spread(10)) >= 4, 'both targets serve at first');
    flaky.setHealthy(false);
    // unhealthy_after × interval = 200 ms; allow scheduling slack.
    await sleep(600);
    // Health probes still reach the flaky target (one per 100 ms interval while this loop runs, and a
    // loaded machine makes the loop longer); proxied requests must not.
    const t0 = performance.now();
    const served = await spread(20);
    const probes = Math.ceil((performance.now() - t0) / 100) + 1;
    assert.ok(
      served <= probes,
      `flaky target still got ${served} requests (at most ${probes} probes) while unhealthy`,
    );
    const snap = gw.sluice.gateway.runtime.upstreams.get('pair')?.snapshot();
    assert.equal(snap?.targets[1].healthy, false);
    flaky.setHealthy(true);
    await sleep(600);
    assert.ok((await spread(10)) >= 4, 'the recovered target serves again');
  });

  test('every target unhealthy: 503 no-healthy-upstream with Retry-After', async (t) => {
    const down = await startDemoUpstream({ port: 0 });
    down.setHealthy(false);
    const gw = await startTestGateway(`
upstreams:
  one: { targets: ["${down.url}"], health: { path: /healthz, interval: 50ms, timeout: 100ms, unhealthy_after: 1 } }
routes:
  - { name: one, match: { path: / }, upstream: one }
`);
    t.after(async () => {
      await gw.close();
      await down.close();
    });
    await sleep(300);
    const res = await fetch(gw.url('/fast'));
    assert.equal(res.status, 503);
    assert.ok(Number(res.headers.get('retry-after')) >= 1);
    assert.equal(res.headers.get('proxy-status'), 'sluice; error=destination_unavailable');
    const p = await problemOf(res);
    assert.equal(p.type, 'https://sluice.dev/problems/no-healthy-upstream');
  });
});

describe('retries', () => {
  test('GETs survive a target that resets every connection; POSTs without Idempotency-Key are never sent twice', async (t) => {
    const good = await named('good');
    let resets = 0;
    const bad = await startRawServer((s) => {
      s.once('data', () => {
        resets++;
        s.resetAndDestroy();
      });
    });
    const gw = await startTestGateway(`
upstreams:
  mixed: { targets: ["${good.url}", "${bad.url}"] }
routes:
  - name: mixed
    match: { path: / }
    upstream: mixed
    retry: { attempts: 2, on: [connect, reset], budget: 100%, backoff: 1ms }
`);
    t.after(async () => {
      await gw.close();
      await good.close();
      await bad.close();
    });
    for (let i = 0; i < 40; i++) {
      const res = await fetch(gw.url('/get'));
      assert.equal(res.status, 200, `GET ${i}`);
      assert.equal(await res.text(), 'good');
    }
    assert.ok(resets >= 15, `the resetting target was tried (${resets})`);
    const retried = gw.log.entries.filter((e) => e.retries > 0);
    assert.ok(retried.length >= 15);
    assert.deepEqual(retried[0].tries, ['reset']);
    assert.deepEqual(retried[0].tried_targets, [bad.url]);
    assert.equal(retried[0].target, good.url);

    const resetsBefore = resets;
    let failed = 0;
    for (let i = 0; i < 20; i++) {
      const res = await fetch(gw.url('/post'), { method: 'POST', body: 'x' });
      if (res.status === 502) failed++;
      else assert.equal(res.status, 200);
      await res.arrayBuffer();
    }
    const postsAtBad = resets - resetsBefore;
    assert.equal(good.hits.POST + postsAtBad, 20, 'each POST reached exactly one target once');
    assert.equal(failed, postsAtBad, 'a POST that hit the resetting target failed instead of being resent');

    // With an Idempotency-Key the POST is retried: its small body was kept (retry.buffer).
    const keyed = await fetch(gw.url('/post'), {
      method: 'POST',
      body: 'x',
      headers: { 'idempotency-key': 'k1' },
    });
    assert.equal(keyed.status, 200);
    await keyed.arrayBuffer();
  });

  test('retry.buffer: a kept body is resent byte for byte after a reset; a larger one is not retried', async (t) => {
    const { createHash, randomBytes } = await import('node:crypto');
    // The first target reads the whole body, then resets the connection without answering.
    let readThenReset = 0;
    const bad = await startHttpServer((req) => {
      req.resume();
      req.on('end', () => {
        readThenReset++;
        req.socket.resetAndDestroy();
      });
    });
    const seen: string[] = [];
    const good = await startHttpServer((req, res) => {
      const h = createHash('sha256');
      req.on('data', (c: Buffer) => h.update(c));
      req.on('end', () => {
        const digest = h.digest('hex');
        seen.push(digest);
        res.end(digest);
      });
    });
    const gw = await startTestGateway(`
upstreams:
  pair: { targets: ["${bad.url}", "${good.url}"], balance: round-robin }
routes:
  - name: r
    match: { path: / }
    upstream: pair
    retry: { attempts: 2, on: [reset], backoff: 1ms, buffer: 32KB, budget: 100% }
`);
    t.after(async () => {
      await gw.close();
      await good.close();
      await bad.close();
    });
    const body = randomBytes(20 * 1024);
    const want = createHash('sha256').update(body).digest('hex');
    for (let i = 0; i < 4; i++) {
      const res = await fetch(gw.url('/orders'), {
        method: 'POST',
        body,
        headers: { 'idempotency-key': `order-${i}`, 'content-type': 'application/octet-stream' },
      });
      assert.equal(res.status, 200, `POST ${i}`);
      assert.equal(await res.text(), want, 'the retried body arrived whole');
    }
    assert.ok(readThenReset >= 2, 'the first target read bodies and reset');
    const retried = gw.log.entries.filter((e) => e.retries === 1);
    assert.ok(retried.length >= 2);
    assert.deepEqual(retried[0].tries, ['reset']);
    assert.equal(retried[0].bytes_in, body.length, 'the body is counted once');
    // PUT is idempotent by itself; a chunked body within the buffer is kept too.
    const put = await fetch(gw.url('/orders/1'), {
      method: 'PUT',
      body: new Blob([body]).stream(),
      duplex: 'half',
    } as RequestInit);
    assert.equal(put.status, 200);
    assert.equal(await put.text(), want);

    // Larger than retry.buffer: streamed, not kept, so a reset after it was sent is not retried.
    const big = randomBytes(64 * 1024);
    const statuses: number[] = [];
    for (let i = 0; i < 2; i++) {
      const res = await fetch(gw.url('/orders'), {
        method: 'POST',
        body: big,
        headers: { 'idempotency-key': `big-${i}` },
      });
      statuses.push(res.status);
      await res.arrayBuffer();
    }
    assert.ok(statuses.includes(502), `one of them met the resetting target: ${statuses}`);
  });

  test('the retry budget caps retries during an outage', async (t) => {
    let connections = 0;
    const dead = await startRawServer((s) => {
      connections++;
      s.once('data', () => s.resetAndDestroy());
    });
    const gw = await startTestGateway(`
upstreams:
  dead: { targets: ["${dead.url}"] }
routes:
  - name: dead
    match: { path: / }
    upstream: dead
    retry: { attempts: 3, on: [reset], budget: 20%, backoff: 1ms }
`);
    t.after(async () => {
      await gw.close();
      await dead.close();
    });
    const t0 = performance.now();
    const n = 100;
    for (let i = 0; i < n; i += 10) {
      await Promise.all(Array.from({ length: 10 }, () => fetch(gw.url('/x')).then((r) => r.arrayBuffer())));
    }
    const seconds = Math.ceil((performance.now() - t0) / 1000);
    const retries = connections - n;
    // Without a budget: up to 2 retries per request = 200. With 20% and a floor of 3 per second:
    assert.ok(retries <= 0.2 * n + 3 * (seconds + 1), `${retries} retries for ${n} requests in ${seconds}s`);
    assert.ok(retries >= 3, 'some retries were allowed');
    const logged = gw.log.entries.reduce((sum, e) => sum + e.retries, 0);
    assert.equal(logged, retries);
  });

  test('a ttfb timeout is retried on another target when listed, within the total budget', async (t) => {
    const slow = await startDemoUpstream({ port: 0 });
    const fast = await named('fast');
    const gw = await startTestGateway(`
upstreams:
  two: { targets: ["${slow.url}", "${fast.url}"] }
routes:
  - name: two
    match: { path: / }
    upstream: two
    timeouts: { ttfb: 200ms, total: 2s }
    retry: { attempts: 2, on: [ttfb], budget: 100%, backoff: 1ms }
`);
    t.after(async () => {
      await gw.close();
      await slow.close();
      await fast.close();
    });
    // Round-robin: the first request goes to the slow target (/hang there), then is retried on fast.
    const res = await fetch(gw.url('/hang'));
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'fast');
    const e = gw.log.entries.at(-1);
    assert.equal(e?.attempts, 2);
    assert.deepEqual(e?.tries, ['ttfb-timeout']);
  });
});

describe('circuit breaker', () => {
  test('opens on errors, fails fast without touching the upstream, half-opens and closes', async (t) => {
    let mode = 503;
    let hits = 0;
    const up = await startHttpServer((_req, res: ServerResponse) => {
      hits++;
      res.statusCode = mode;
      res.end(String(mode));
    });
    const gw = await startTestGateway(`
upstreams:
  fragile:
    targets: ["${up.url}"]
    circuit: { error_rate: 50%, min_requests: 5, window: 10s, open_for: 500ms, half_open_requests: 1 }
routes:
  - { name: fragile, match: { path: / }, upstream: fragile }
`);
    t.after(async () => {
      await gw.close();
      await up.close();
    });
    for (let i = 0; i < 5; i++) assert.equal((await fetch(gw.url('/'))).status, 503);
    assert.equal(hits, 5);
    const open = await fetch(gw.url('/'));
    assert.equal(open.status, 503);
    assert.equal(open.headers.get('proxy-status'), 'sluice; error=destination_unavailable');
    assert.ok(Number(open.headers.get('retry-after')) >= 1);
    const p = await problemOf(open);
    assert.equal(p.type, 'https://sluice.dev/problems/circuit-open');
    assert.equal(hits, 5, 'an open circuit does not touch the upstream');
    const e = await gw.entry(p.request_id);
    assert.equal(e.outcome, 'circuit_open');

    mode = 200;
    await sleep(600);
    const probe = await fetch(gw.url('/'));
    assert.equal(probe.status, 200, 'half-open admits a probe');
    assert.equal(hits, 6);
    assert.equal(gw.sluice.gateway.runtime.upstreams.get('fragile')?.circuitState(), 'closed');
    for (let i = 0; i < 5; i++) assert.equal((await fetch(gw.url('/'))).status, 200);
  });
});

describe('concurrency limit', () => {
  test('max_concurrent is never exceeded at the upstream; the excess gets 503 overloaded near queue_timeout', async (t) => {
    let inflight = 0;
    let peak = 0;
    const up = await startHttpServer((_req, res) => {
      inflight++;
      peak = Math.max(peak, inflight);
      setTimeout(() => {
        inflight--;
        res.end('ok');
      }, 600);
    });
    const gw = await startTestGateway(`
upstreams:
  narrow: { targets: ["${up.url}"], max_concurrent: 3, queue_timeout: 300ms }
routes:
  - { name: narrow, match: { path: / }, upstream: narrow }
`);
    t.after(async () => {
      await gw.close();
      await up.close();
    });
    const results = await Promise.all(
      Array.from({ length: 10 }, async () => {
        const t0 = performance.now();
        const res = await fetch(gw.url('/'));
        const ms = performance.now() - t0;
        return { status: res.status, ms, body: await res.text(), retryAfter: res.headers.get('retry-after') };
      }),
    );
    assert.equal(peak, 3, `the upstream saw ${peak} at once`);
    const ok = results.filter((r) => r.status === 200);
    const shed = results.filter((r) => r.status === 503);
    assert.equal(ok.length, 3);
    assert.equal(shed.length, 7);
    for (const r of shed) {
      assert.match(r.body, /overloaded/);
      assert.ok(r.retryAfter !== null);
      assert.ok(r.ms >= 290 && r.ms < 1000, `shed after ${r.ms} ms`);
    }
  });
});

describe('load shedding', () => {
  test('a request whose remaining budget is below the route recent p5 is answered 504 budget-exhausted at once, the upstream untouched', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    const gw = await startTestGateway(`
upstreams:
  demo: { targets: ["${demo.url}"] }
routes:
  - { name: demo, match: { path: / }, upstream: demo }
`);
    t.after(async () => {
      await gw.close();
      await demo.close();
    });
    await Promise.all(
      Array.from({ length: 5 }, () => fetch(gw.url('/slow?ms=300')).then((r) => r.arrayBuffer())),
    );
    await sleep(1_200); // the recent p50 is refreshed every second
    const before = demo.stats.requests;
    const t0 = performance.now();
    const res = await fetch(gw.url('/slow?ms=300'), { headers: { 'x-timeout-ms': '100' } });
    assert.ok(performance.now() - t0 < 90, 'answered at once');
    assert.equal(res.status, 504);
    assert.equal(res.headers.get('proxy-status'), 'sluice; error=http_response_timeout');
    const p = await problemOf(res);
    assert.equal(p.type, 'https://sluice.dev/problems/budget-exhausted');
    assert.match(p.detail, /below the 5th-percentile latency/);
    assert.equal(p.timeout_ms, 100);
    assert.equal(demo.stats.requests, before, 'the upstream was not called');
    const entry = await gw.entry(p.request_id);
    assert.equal(entry.outcome, 'shed');
    assert.equal(entry.budget_source, 'client');
    // With enough budget the same request goes through.
    assert.equal((await fetch(gw.url('/slow?ms=10'), { headers: { 'x-timeout-ms': '5000' } })).status, 200);
  });
});

describe('stale keep-alive connections', () => {
  test('a reused connection the upstream closed is retried once, transparently, for safe requests only', async (t) => {
    // Answers the first request of every connection (keep-alive), then drops the connection when a
    // second request arrives on it — a keep-alive race as seen behind real load balancers.
    const answered = new WeakSet<object>();
    let served = 0;
    let posts = 0;
    const up = await startRawServer((s) => {
      s.on('data', (d: Buffer) => {
        if (d.toString('latin1').startsWith('POST')) posts++;
        if (answered.has(s)) return s.destroy();
        answered.add(s);
        served++;
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=60\r\n\r\nok');
      });
    });
    const gw = await startTestGateway(`
upstreams:
  up: { targets: ["${up.url}"] }
routes:
  - { name: up, match: { path: / }, upstream: up }
`);
    t.after(async () => {
      await gw.close();
      await up.close();
    });
    const first = await fetch(gw.url('/a'));
    assert.equal(await first.text(), 'ok');
    const second = await fetch(gw.url('/b'));
    assert.equal(second.status, 200, 'the stale connection was retried on a new one');
    assert.equal(await second.text(), 'ok');
    const e = await gw.entry(String(second.headers.get('x-request-id')));
    assert.deepEqual(e.tries, ['stale-connection']);
    assert.equal(served, 2);
    // A POST is never sent twice: whichever connection it lands on, the upstream sees it once (a
    // dropped one means a 502 for the client).
    const post = await fetch(gw.url('/c'), { method: 'POST', body: 'x' });
    assert.ok([200, 502].includes(post.status));
    await post.arrayBuffer();
    assert.equal(posts, 1);
  });
});
