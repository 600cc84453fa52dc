/**
 * GET /api/events through real sockets: the event kinds a live view needs, and a viewer that stops
 * reading is dropped instead of growing the gateway's memory.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { describe, test } from 'node:test';
import { EventHub } from '../../src/admin/events.ts';
import { loadConfigText } from '../../src/config/load.ts';
import { startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import { sleep, startTestGateway } from '../helpers.ts';
import { subscribe } from '../sse.ts';

describe('GET /api/events', () => {
  test('stats every second, sampled requests, job ends, health, config', async (t) => {
    const demo = await startDemoUpstream({ port: 0 });
    t.after(() => demo.close());
    const yaml = `
upstreams:
  demo:
    targets: ["${demo.url}"]
    health: { path: /healthz, interval: 200ms, timeout: 150ms, unhealthy_after: 1, healthy_after: 1 }
routes:
  - { name: api, match: { path: / }, upstream: demo, timeouts: { total: 2s } }
`;
    const gw = await startTestGateway(yaml, { admin: true });
    t.after(() => gw.close());
    const sub = subscribe(`http://127.0.0.1:${gw.sluice.adminPort}/api/events`);
    t.after(() => sub.close());
    const stats = await sub.next('stats', () => true, 3_000);
    assert.equal(sub.status(), 200);
    assert.match(sub.type(), /^text\/event-stream/);
    const metrics = await (await fetch(`http://127.0.0.1:${gw.sluice.adminPort}/metrics`)).text();
    assert.match(metrics, /^sluice_admin_event_viewers 1$/m);
    assert.match(metrics, /^sluice_admin_event_viewers_dropped_total 0$/m);
    assert.deepEqual(
      (stats.routes as { route: string }[]).map((r) => r.route),
      ['api'],
    );
    const res = await fetch(gw.url('/status/503'));
    const rid = res.headers.get('x-request-id');
    await res.arrayBuffer();
    const r = await sub.next('request', (d) => d.request_id === rid);
    assert.equal(r.status, 503);
    assert.equal(r.route, 'api');
    await fetch(`${demo.url}/_demo/health/down`, { method: 'POST' });
    const h = await sub.next('health', (d) => d.healthy === false);
    assert.equal(h.upstream, 'demo');
    await fetch(`${demo.url}/_demo/health/up`, { method: 'POST' });
    gw.sluice.reload(
      loadConfigText(`listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\n${yaml}`, 'x.yaml'),
    );
    assert.equal((await sub.next('config')).result, 'applied');
    gw.sluice.reloadFailed('x.yaml:3: routes: bad');
    assert.equal((await sub.next('config', (d) => d.result === 'refused')).error, 'x.yaml:3: routes: bad');
  });

  test('a viewer that stops reading is dropped; the others keep receiving', async (t) => {
    const hub = new EventHub({ maxBuffered: 64 * 1024, heartbeatMs: 60_000 });
    const server = createServer((req, res) => hub.handle(req, res));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as { port: number }).port;
    t.after(() => {
      hub.close();
      server.closeAllConnections();
      server.close();
    });
    // A viewer that never reads: a raw socket, paused.
    const stuck = connect(port, '127.0.0.1');
    stuck.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    stuck.pause();
    const good = subscribe(`http://127.0.0.1:${port}/`);
    t.after(() => {
      stuck.destroy();
      good.close();
    });
    while (hub.size < 2) await sleep(10);
    const big = 'x'.repeat(4096);
    const rssBefore = process.memoryUsage().rss;
    for (let i = 0; i < 2_000 && hub.dropped === 0; i++) {
      hub.publish('stats', { i, big });
      await sleep(0);
    }
    assert.equal(hub.dropped, 1, 'the stuck viewer was dropped');
    assert.equal(hub.size, 1);
    hub.publish('alert', { last: true });
    await good.next('alert', (d) => d.last === true);
    assert.ok(process.memoryUsage().rss - rssBefore < 64 * 1024 * 1024, 'no unbounded buffering');
  });
});
