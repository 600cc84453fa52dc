/**
 * The response cache through real sockets (SPEC §6): RFC 9111 storing, freshness, Age, Vary,
 * Authorization, revalidation with 304s, conditional requests, invalidation, RFC 5861
 * stale-while-revalidate and stale-if-error for every way an upstream fails, coalescing, the byte
 * budget, max_entry, purge, and RFC 9211 Cache-Status with the log's outcomes.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, test } from 'node:test';
import { send, sleep, startHttpServer, startTestGateway } from '../helpers.ts';

type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void;

/** An upstream whose behaviour each test sets per path, counting requests per path. */
async function upstream() {
  const counts = new Map<string, number>();
  const seen: IncomingMessage[] = [];
  const handlers = new Map<string, Handler>();
  const server = await startHttpServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const n = (counts.get(path) ?? 0) + 1;
    counts.set(path, n);
    seen.push(req);
    const h = handlers.get(path);
    if (h) h(req, res, n);
    else {
      res.writeHead(404);
      res.end();
    }
  });
  return {
    server,
    url: server.url,
    on(path: string, h: Handler) {
      handlers.set(path, h);
    },
    count: (path: string) => counts.get(path) ?? 0,
    last: (path: string) => seen.filter((r) => (r.url ?? '').split('?')[0] === path).at(-1),
  };
}

async function cachedGateway(up: { url: string }, cache = '{}', extra = '', timeouts = '{ total: 5s }') {
  return startTestGateway(
    `
${extra}
upstreams: { app: { targets: ["${up.url}"] } }
routes:
  - name: r
    match: { path: / }
    upstream: app
    timeouts: ${timeouts}
    cache: ${cache}
`,
    { admin: true },
  );
}

async function get(url: string, headers: Record<string, string> = {}, method = 'GET') {
  const res = await fetch(url, { headers, method });
  const body = await res.text();
  return { status: res.status, headers: res.headers, body, cs: res.headers.get('cache-status') };
}

/**
 * A GET with exactly these headers (node:http or node:http2: fetch adds Cache-Control: no-cache to
 * conditional requests, as the Fetch standard asks).
 */
function raw(
  url: string,
  headers: Record<string, string>,
): Promise<{ status: number; cs: string | undefined; body: string }> {
  const u = new URL(url);
  return send(Number(u.port), u.pathname + u.search, { headers }).then((r) => ({
    status: r.status,
    cs: r.headers['cache-status'] as string | undefined,
    body: r.body,
  }));
}

const text = (res: ServerResponse, body: string, headers: Record<string, string> = {}) => {
  res.writeHead(200, { 'content-type': 'text/plain', ...headers });
  res.end(body);
};

describe('response cache', () => {
  test('a fresh response is stored once and served with Age and Cache-Status; HEAD and If-None-Match hit it', async (t) => {
    const up = await upstream();
    t.after(() => up.server.close());
    up.on('/a', (_req, res, n) => text(res, `a${n}`, { 'cache-control': 'max-age=60', etag: '"v1"' }));
    const gw = await cachedGateway(up);
    t.after(() => gw.close());
    const first = await get(gw.url('/a'));
    assert.equal(first.body, 'a1');
    assert.equal(first.cs, 'sluice; fwd=miss; stored');
    const second = await get(gw.url('/a'));
    assert.equal(second.body, 'a1');
    assert.match(second.cs ?? '', /^sluice; hit$/);
    assert.match(second.headers.get('age') ?? '', /^\d+$/);
    assert.equal(second.headers.get('etag'), '"v1"');
    assert.ok(second.headers.get('x-request-id'));
    const head = await get(gw.url('/a'), {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.equal(head.headers.get('content-length'), '2');
    const cond = await raw(gw.url('/a'), { 'if-none-match': 'W/"v1"' });
    assert.equal(cond.status, 304);
    assert.equal(cond.body, '');
    assert.match(cond.cs ?? '', /^sluice; hit/);
    // Cache-Control: no-cache from the client: revalidated upstream first.
    const forced = await raw(gw.url('/a'), { 'cache-control': 'no-cache' });
    assert.equal(forced.cs, 'sluice; fwd=request; fwd-status=200; stored');
    assert.equal(up.count('/a'), 2);
    const log = gw.log.entries.filter((e) => e.path === '/a');
    assert.deepEqual(
      log.map((e) => [e.outcome, e.status]),
      [
        ['ok', 200],
        ['cache_hit', 200],
        ['cache_hit', 200],
        ['cache_hit', 304],
        ['ok', 200],
      ],
    );
    assert.equal(log[1].cache, second.cs);
    const view = (await (await fetch(`http://127.0.0.1:${gw.sluice.adminPort}/api/routes/r`)).json()) as {
      cache: { results: Record<string, number>; max_entry: number };
    };
    assert.equal(view.cache.max_entry, 1024 * 1024);
    assert.equal(view.cache.results.hit, 3);
    assert.equal(view.cache.results.miss, 1);
  });

  test('no-store, private and Set-Cookie are never stored; ttl applies only where the upstream gave no freshness', async (t) => {
    const up = await upstream();
    t.after(() => up.server.close());
    up.on('/ns', (_q, res, n) => text(res, `ns${n}`, { 'cache-control': 'no-store' }));
    up.on('/priv', (_q, res, n) => text(res, `p${n}`, { 'cache-control': 'private, max-age=60' }));
    up.on('/cookie', (_q, res, n) =>
      text(res, `c${n}`, { 'cache-control': 'max-age=60', 'set-cookie': 'id=1' }),
    );
    up.on('/plain', (_q, res, n) => text(res, `plain${n}`));
    up.on('/zero', (_q, res, n) => text(res, `z${n}`, { 'cache-control': 'max-age=0' }));
    const gw = await cachedGateway(up, '{ ttl: 60s }');
    t.after(() => gw.close());
    for (const p of ['/ns', '/priv', '/cookie', '/plain', '/zero']) {
      await get(gw.url(p));
      await get(gw.url(p));
    }
    assert.equal(up.count('/ns'), 2);
    assert.equal(up.count('/priv'), 2);
    assert.equal(up.count('/cookie'), 2);
    assert.equal(up.count('/plain'), 1, 'ttl made it fresh');
    assert.equal(up.count('/zero'), 2, 'max-age=0 is the upstream saying: not fresh');

    // cache: {} stores only what the upstream made cacheable.
    const up2 = await upstream();
    t.after(() => up2.server.close());
    up2.on('/plain', (_q, res, n) => text(res, `plain${n}`));
    const gw2 = await cachedGateway(up2);
    t.after(() => gw2.close());
    await get(gw2.url('/plain'));
    const again = await get(gw2.url('/plain'));
    assert.equal(up2.count('/plain'), 2);
    assert.equal(again.cs, 'sluice; fwd=miss');
  });

  test('a stale copy is revalidated with its validators; a 304 is merged and the copy served', async (t) => {
    const up = await upstream();
    t.after(() => up.server.close());
    up.on('/r', (req, res, n) => {
      if (req.headers['if-none-match'] === '"e1"') {
        res.writeHead(304, { 'cache-control': 'max-age=1', etag: '"e1"', 'x-fresh': String(n) });
        res.end();
      } else text(res, 'body-1', { 'cache-control': 'max-age=1', etag: '"e1"' });
    });
    const gw = await cachedGateway(up);
    t.after(() => gw.close());
    await get(gw.url('/r'));
    await sleep(1_100);
    const r = await raw(gw.url('/r'), { 'if-none-match': '"other"' });
    assert.equal(r.status, 200, "the client's own validator does not match: the whole body");
    assert.equal(r.body, 'body-1');
    assert.equal(r.cs, 'sluice; fwd=stale; fwd-status=304');
    assert.equal(
      (await get(gw.url('/r'))).headers.get('x-fresh'),
      '2',
      'headers of the 304 replace the stored ones',
    );
    assert.equal(up.last('/r')?.headers['if-none-match'], '"e1"');
    assert.equal(up.count('/r'), 2);
  });

  test('Vary keeps variants apart; Authorization never receives a copy stored for anyone', async (t) => {
    const up = await upstream();
    t.after(() => up.server.close());
    up.on('/v', (req, res) =>
      text(res, `lang=${req.headers['accept-language']}`, {
        'cache-control': 'max-age=60',
        vary: 'Accept-Language',
      }),
    );
    up.on('/auth', (req, res) =>
      text(res, `user=${req.headers.authorization ?? 'none'}`, { 'cache-control': 'max-age=60' }),
    );
    up.on('/pub', (req, res) =>
      text(res, `pub=${req.headers.authorization ?? 'none'}`, { 'cache-control': 'public, max-age=60' }),
    );
    const gw = await cachedGateway(up);
    t.after(() => gw.close());
    assert.equal((await get(gw.url('/v'), { 'accept-language': 'en' })).body, 'lang=en');
    assert.equal((await get(gw.url('/v'), { 'accept-language': 'fr' })).body, 'lang=fr');
    const en = await get(gw.url('/v'), { 'accept-language': 'en' });
    assert.equal(en.body, 'lang=en');
    assert.match(en.cs ?? '', /hit/);
    const de = await get(gw.url('/v'), { 'accept-language': 'de' });
    assert.equal(de.body, 'lang=de');
    assert.equal(de.cs, 'sluice; fwd=vary-miss; stored');
    assert.equal(up.count('/v'), 3);

    // Stored from an anonymous request; a request with credentials still goes upstream, and its own
    // response (no public) is never stored.
    await get(gw.url('/auth'));
    const alice = await get(gw.url('/auth'), { authorization: 'Bearer alice' });
    assert.equal(alice.body, 'user=Bearer alice');
    const bob = await get(gw.url('/auth'), { authorization: 'Bearer bob' });
    assert.equal(bob.body, 'user=Bearer bob');
    assert.equal((await get(gw.url('/auth'))).body, 'user=none');
    assert.equal(up.count('/auth'), 3);
    // public: the upstream says anyone may have it.
    await get(gw.url('/pub'), { authorization: 'Bearer alice' });
    assert.equal((await get(gw.url('/pub'), { authorization: 'Bearer bob' })).body, 'pub=Bearer alice');
  });

  test('a successful unsafe request invalidates the URL and its Location', async (t) => {
    const up = await upstream();
    t.after(() => up.server.close());
    let version = 1;
    up.on('/item', (req, res) => {
      if (req.method === 'POST') {
        version++;
        res.writeHead(201, { location: '/item/2' });
        res.end();
        return;
      }
      text(res, `v${version}`, { 'cache-control': 'max-age=60' });
    });
    up.on('/item/2', (_q, res) => text(res, `item2 v${version}`, { 'cache-control': 'max-age=60' }));
    const gw = await cachedGateway(up);
    t.after(() => gw.close());
    await get(gw.url('/item'));
    await get(gw.url('/item/2'));
    const post = await get(gw.url('/item'), {}, 'POST');
    assert.equal(post.status, 201);
    assert.equal(post.cs, 'sluice; fwd=method; fwd-status=201');
    assert.equal((await get(gw.url('/item'))).body, 'v2');
    assert.equal((await get(gw.url('/item/2'))).body, 'item2 v2');
  });

  test('stale-if-error: a stale copy answers when the upstream hangs (at the ttfb deadline), errs, refuses or resets', async (t) => {
    const up = await upstream();
    t.after(() => up.server.close());
    let mode = 'ok';
    let aborted = 0;
    up.on('/s', (req, res) => {
      if (mode === 'ok') return text(res, 'good', { 'cache-control': 'max-age=1' });
      if (mode === 'hang') {
        req.socket.once('close', () => aborted++);
        return;
      }
      if (mode === '500') {
        res.writeHead(500);
        res.end('boom');
        return;
      }
      req.socket.destroy(); // reset
    });
    const gw = await cachedGateway(up, '{ stale_if_error: 10m }', '', '{ ttfb: 300ms, total: 5s }');
    t.after(() => gw.close());
    await get(gw.url('/s'));
    await sleep(1_100);

    mode = 'hang';
    const t0 = performance.now();
    const hung = await get(gw.url('/s'));
    const took = performance.now() - t0;
    assert.equal(hung.status, 200);
    assert.equal(hung.body, 'good');
    assert.equal(hung.cs, 'sluice; hit; detail=stale-if-error');
    assert.ok(took >= 290 && took < 1_500, `served at the ttfb deadline, took ${took} ms`);
    await sleep(100);
    assert.equal(aborted, 1, 'the hanging upstream request was aborted');
    const line = gw.log.entries.at(-1);
    assert.equal(line?.outcome, 'stale');
    assert.equal(line?.phase, 'ttfb');
    assert.equal(line?.error, 'upstream-timeout');

    mode = '500';
    const err = await get(gw.url('/s'));
    assert.equal(err.body, 'good');
    assert.equal(err.cs, 'sluice; hit; detail=stale-if-error');

    mode = 'reset';
    assert.equal((await get(gw.url('/s'))).body, 'good');

    await up.server.close();
    const refused = await get(gw.url('/s'));
    assert.equal(refused.body, 'good');
    assert.equal(gw.log.entries.at(-1)?.error, 'upstream-unreachable');
  });

  test('without stale-if-error (or past it) the error goes out, with Cache-Status', async (t) => {
    const up = await upstream();
    t.after(() => up.server.close());
    let fail = false;
    up.on('/e', (_q, res) => {
      if (fail) {
        res.writeHead(503);
        res.end();
      } else text(res, 'fine', { 'cache-control': 'max-age=1, stale-if-error=1' });
    });
    const gw = await cachedGateway(up);
    t.after(() => gw.close());
    await get(gw.url('/e'));
    fail = true;
    await sleep(1_100);
    assert.equal((await get(gw.url('/e'))).body, 'fine', 'within the response own stale-if-error');
    await sleep(1_000);
    const late = await get(gw.url('/e'));
    assert.equal(late.status, 503);
    assert.equal(late.cs, 'sluice; fwd=stale; fwd-status=503');
  });

  test('stale-while-revalidate: served at once, refreshed by exactly one background request', async (t) => {
    const up = await upstream();
    t.after(() => up.server.close());
    up.on('/w', (_q, res, n) => {
      setTimeout(
        () => text(res, `w${n}`, { 'cache-control': 'max-age=1, stale-while-revalidate=30' }),
        n > 1 ? 1_000 : 0,
      );
    });
    const gw = await cachedGateway(up);
    t.after(() => gw.close());
    await get(gw.url('/w'));
    await sleep(1_100);
    const t0 = performance.now();
    const burst = await Promise.all([1, 2, 3, 4, 5].map(() => get(gw.url('/w'))));
    // The refresh takes 1 s upstream: a burst that waited for it would take at least that long.
    assert.ok(performance.now() - t0 < 800, 'stale copies go out without waiting for the refresh');
    for (const r of burst) {
      assert.equal(r.body, 'w1');
      assert.equal(r.cs, 'sluice; hit; detail=stale-while-revalidate');
    }
    await sleep(1_300);
    assert.equal(up.count('/w'), 2, 'one background request');
    const fresh = await get(gw.url('/w'));
    assert.equal(fresh.body, 'w2');
    assert.match(fresh.cs ?? '', /^sluice; hit$/);
    assert.deepEqual(
      gw.log.entries.filter((e) => e.path === '/w').map((e) => e.outcome),
      ['ok', 'stale', 'stale', 'stale', 'stale', 'stale', 'cache_hit'],
    );
  });

  test('coalescing: 20 concurrent misses make one upstream request; a waiter whose budget ends first gets its own 504', async (t) => {
    const up = await upstream();
    t.after(() => up.server.close());
    up.on('/hot', (_q, res, n) => {
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' });
        res.write('part1-');
        setTimeout(() => res.end(`part2-${n}`), 150);
      }, 1_000);
    });
    const gw = await cachedGateway(up);
    t.after(() => gw.close());
    // The upstream answers after 1 s: an impatient waiter (150 ms) arriving any time before ~850 ms
    // runs out of budget while it waits, however slowly a loaded machine gets it there.
    const leader = get(gw.url('/hot'));
    await sleep(50);
    const impatient = get(gw.url('/hot'), { 'x-timeout-ms': '150' });
    const rest = Promise.all(Array.from({ length: 19 }, () => get(gw.url('/hot'))));
    const short = await impatient;
    assert.equal(short.status, 504);
    assert.equal(short.cs, 'sluice; fwd=miss; collapsed');
    const all = [await leader, ...(await rest)];
    assert.equal(up.count('/hot'), 1);
    for (const r of all) assert.equal(r.body, 'part1-part2-1');
    assert.equal(all.filter((r) => r.cs === 'sluice; fwd=miss; collapsed').length, 19);
    assert.equal(all[0].cs, 'sluice; fwd=miss; stored');
  });

  test('cache_size evicts the least recently used; max_entry streams larger responses through; purge by route and prefix', async (t) => {
    const up = await upstream();
    t.after(() => up.server.close());
    const kb = (n: number) => 'x'.repeat(n * 1024);
    for (const p of ['/b/1', '/b/2', '/b/3', '/b/4'])
      up.on(p, (_q, res) => text(res, kb(20), { 'cache-control': 'max-age=60' }));
    up.on('/big', (_q, res) =>
      text(res, kb(80), { 'cache-control': 'max-age=60', 'content-length': String(80 * 1024) }),
    );
    up.on('/chunked', (_q, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60' });
      for (let i = 0; i < 10; i++) res.write(kb(10));
      res.end();
    });
    const gw = await cachedGateway(up, '{ max_entry: 64KB }', 'cache_size: 64KB');
    t.after(() => gw.close());
    await get(gw.url('/b/1'));
    await get(gw.url('/b/2'));
    await get(gw.url('/b/1')); // /b/1 is now more recently used than /b/2
    await get(gw.url('/b/3'));
    await get(gw.url('/b/4')); // over 64 KB: /b/2 then /b/1 go
    await get(gw.url('/b/2'));
    assert.equal(up.count('/b/2'), 2, 'evicted');
    assert.equal(up.count('/b/4'), 1);
    const big = await get(gw.url('/big'));
    assert.equal(big.body.length, 80 * 1024);
    assert.equal(big.cs, 'sluice; fwd=miss');
    const chunked = await get(gw.url('/chunked'));
    assert.equal(chunked.body.length, 100 * 1024, 'streamed whole although storing stopped');
    await get(gw.url('/chunked'));
    assert.equal(up.count('/chunked'), 2);
    const metrics = await (await fetch(`http://127.0.0.1:${gw.sluice.adminPort}/metrics`)).text();
    assert.match(metrics, /sluice_cache_evictions_total [1-9]/);
    assert.match(metrics, /sluice_cache_requests_total\{route="r",result="hit"\} \d+/);

    // Purge: a prefix of one route.
    await get(gw.url('/b/4'));
    const admin = `http://127.0.0.1:${gw.sluice.adminPort}`;
    const purge = await fetch(`${admin}/api/cache?route=r&path=/b/*`, { method: 'DELETE' });
    assert.equal(purge.status, 200);
    const { purged } = (await purge.json()) as { purged: number };
    assert.ok(purged >= 1);
    await get(gw.url('/b/4'));
    assert.equal(up.count('/b/4'), 2, 'purged');
    assert.equal((await fetch(`${admin}/api/cache?route=nope`, { method: 'DELETE' })).status, 404);
    assert.equal((await fetch(`${admin}/api/cache`)).status, 405);
  });
});
