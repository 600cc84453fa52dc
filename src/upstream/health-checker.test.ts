import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type RequestListener } from 'node:http';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { HealthConfig } from '../config/resolve.ts';
import { HealthChecker } from './health-checker.ts';

const MARGIN = 400; // ms allowed after a deadline on a busy 2-core machine
const config: HealthConfig = {
  path: '/healthz',
  interval: 50,
  timeout: 200,
  unhealthy_after: 3,
  healthy_after: 2,
};

async function server(handler: RequestListener) {
  const s = createServer(handler);
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const origin = `http://127.0.0.1:${(s.address() as { port: number }).port}`;
  after(() => {
    s.closeAllConnections();
    s.close();
  });
  return { server: s, origin };
}

/** A checker whose changes arrive as an async queue. */
function checker(c: HealthConfig, origins: string[]) {
  const targets = origins.map((origin) => ({ origin }));
  const changes: { origin: string; healthy: boolean; at: number }[] = [];
  let wake: (() => void) | undefined;
  const hc = new HealthChecker(c, targets, (t, healthy) => {
    changes.push({ origin: t.origin, healthy, at: performance.now() });
    wake?.();
  });
  after(() => hc.stop());
  const next = async () => {
    while (changes.length === 0) await new Promise<void>((r) => (wake = r));
    return changes.shift() as (typeof changes)[number];
  };
  return { hc, targets, next, changes };
}

test('a failing target is marked unhealthy after unhealthy_after probes and recovers after healthy_after', async () => {
  let status = 200;
  const paths = new Set<string>();
  const { origin } = await server((req, res) => {
    paths.add(req.url ?? '');
    res.writeHead(status).end('x');
  });
  const { hc, targets, next } = checker(config, [origin]);
  hc.start();
  await sleep(120); // a few good probes: nothing reported, targets start healthy
  assert.equal(hc.isHealthy(targets[0]), true);

  status = 503;
  let t = performance.now();
  let change = await next();
  let took = change.at - t;
  assert.equal(change.healthy, false);
  // The first failing probe comes within one interval, then two more one interval apart.
  assert.ok(took >= 2 * 50 - 20 && took < 3 * 50 + MARGIN, `unhealthy after ${took}ms`);
  assert.equal(hc.isHealthy(targets[0]), false);

  status = 302; // 3xx counts as healthy
  t = performance.now();
  change = await next();
  took = change.at - t;
  assert.equal(change.healthy, true);
  assert.ok(took >= 50 - 20 && took < 2 * 50 + MARGIN, `healthy after ${took}ms`);
  assert.deepEqual([...paths], ['/healthz']);
});

test('a probe that gets no answer within timeout fails; a refused connection fails', async () => {
  const { origin: silent } = await server(() => {}); // accepts, never answers
  const { origin: gone, server: s } = await server((_req, res) => res.end());
  s.close();
  s.closeAllConnections();
  await once(s, 'close');
  const c = { ...config, timeout: 80, unhealthy_after: 2 };
  const { hc, next } = checker(c, [silent, gone]);
  const t = performance.now();
  hc.start();
  const changes = [await next(), await next()];
  const bySilent = changes.find((x) => x.origin === silent);
  const byGone = changes.find((x) => x.origin === gone);
  assert.equal(bySilent?.healthy, false);
  assert.equal(byGone?.healthy, false);
  // Two timed-out probes back to back (each longer than the interval): ≥ 2 × timeout.
  const took = (bySilent?.at ?? 0) - t;
  assert.ok(took >= 2 * 80 - 5 && took < 2 * 80 + MARGIN, `silent target unhealthy after ${took}ms`);
});

test('a 404 is a failure; stop() ends probing and reports nothing more', async () => {
  let probes = 0;
  const { origin } = await server((_req, res) => {
    probes++;
    res.writeHead(404).end();
  });
  const { hc, next, changes } = checker({ ...config, unhealthy_after: 1 }, [origin]);
  hc.start();
  assert.equal((await next()).healthy, false);
  hc.stop();
  const seen = probes;
  await sleep(200);
  assert.ok(probes <= seen + 1, `probes after stop: ${probes - seen}`); // at most one already on the wire
  assert.equal(changes.length, 0);
  hc.start(); // restartable; state kept
  await sleep(120);
  assert.ok(probes > seen + 1);
  assert.equal(changes.length, 0);
});
