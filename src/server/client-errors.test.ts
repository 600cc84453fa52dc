import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { test } from 'node:test';
import type { AccessLogEntry } from '../observability/access-log.ts';
import { ClientErrors } from './client-errors.ts';

const TIMED_OUT = Object.assign(new Error('request timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' });

/** `n` real loopback connections: the server's ends (each having read a partial head) and the clients'. */
async function connections(n: number) {
  const accepted: net.Socket[] = [];
  const server = net.createServer((s) => accepted.push(s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  const clients = await Promise.all(
    Array.from({ length: n }, async () => {
      const c = net.connect(port, '127.0.0.1');
      await once(c, 'connect');
      c.write('GET / HTTP/1.1\r\nHost: x\r\n'); // a head that never ends
      return c;
    }),
  );
  while (accepted.length < n || accepted.some((s) => s.bytesRead === 0))
    await new Promise((r) => setTimeout(r, 5));
  return { server, accepted, clients };
}

const answer = (c: net.Socket) =>
  new Promise<string>((resolve) => {
    let text = '';
    c.on('data', (d) => (text += d));
    c.on('close', () => resolve(text));
  });

test('a batch of header timeouts is answered in slices, with event-loop turns in between', async () => {
  const { server, accepted, clients } = await connections(100);
  const answers = clients.map(answer);
  const lines: AccessLogEntry[] = [];
  const errors = new ClientErrors((e) => lines.push(e));
  // As Node's connection check does: every expired head failed in one synchronous loop.
  for (const s of accepted) errors.handle(TIMED_OUT, s);
  assert.equal(accepted.filter((s) => s.writableEnded).length, 0, 'nothing written in the check itself');
  await new Promise((r) => setImmediate(r));
  const afterOneTurn = accepted.filter((s) => s.writableEnded).length;
  assert.ok(afterOneTurn > 0 && afterOneTurn < 100, `one turn answered ${afterOneTurn} of 100`);
  const texts = await Promise.all(answers);
  for (const t of texts) {
    assert.match(t, /^HTTP\/1\.1 408 Request Timeout\r\n/);
    assert.match(t, /content-type: application\/problem\+json/);
    assert.match(t, /client-timeout/);
  }
  assert.equal(lines.length, 100);
  assert.ok(lines.every((l) => l.status === 408));
  server.close();
});

test('a timed-out connection the client closed before its turn is skipped, not answered or logged', async () => {
  const { server, accepted, clients } = await connections(40);
  const lines: AccessLogEntry[] = [];
  const errors = new ClientErrors((e) => lines.push(e));
  for (const s of accepted) errors.handle(TIMED_OUT, s);
  accepted[39]?.destroy(); // gone before the second slice
  await Promise.all(clients.map(answer));
  assert.equal(lines.length, 39);
  server.close();
});
