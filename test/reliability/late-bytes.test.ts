/**
 * Late bytes after a complete response on a kept-alive upstream connection (docs/reliability.md, "Late
 * bytes"): what Sluice does in each case a gateway can tell apart, and the same check on nginx with
 * `keepalive 8` where it is installed.
 *
 * - Late bytes in the same write as the end of the message (one read): the connection is not reused,
 *   and they answer nothing.
 * - Late bytes that arrive while the connection is idle: the gateway closes it, and they answer no
 *   later request, whether it comes on the same client connection or another.
 *
 * Bytes that arrive after the gateway wrote the next request on the connection are that request's
 * answer as far as HTTP/1.1 can tell, through any gateway: not asserted here (the table in the doc,
 * `npx node test/reliability/late-bytes.ts`, shows Sluice and nginx alike). The upstream sends with
 * TCP_NODELAY, so that "written" means "sent"; every wait is on an event, bounded, never a fixed time.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { H1_ONLY } from '../helpers.ts';
import {
  type Front,
  NGINX_SKIP,
  nginxFront,
  placed,
  sluiceFront,
  startLateUpstream,
  trial,
} from './late-bytes.ts';

/** `p`, or a failure after `ms`. */
const within = <T>(ms: number, p: Promise<T>, what: string): Promise<T> =>
  Promise.race([
    p,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)),
  ]);

const TRIALS = 4;

for (const [name, start, skip] of [
  ['Sluice', sluiceFront, false],
  ['nginx (keepalive 8)', nginxFront, NGINX_SKIP],
] as const) {
  describe(`late bytes through ${name}`, { ...H1_ONLY, skip: H1_ONLY.skip || skip }, () => {
    for (const mode of ['same', 'other'] as const) {
      const conn = mode === 'same' ? 'the same client connection' : 'another client connection';
      test(`a second response in the same write as the first never answers request 2 on ${conn}`, async () => {
        const up = await startLateUpstream('same-write');
        const front: Front = await start(up);
        try {
          for (let t = 0; t < TRIALS; t++) {
            const o = await trial(front.port, mode, t, { warm: t === 0 ? 0 : 2 });
            assert.equal(o.body, 'second', `trial ${t}: request 2 got ${o.status} ${o.body}`);
            const p = placed(up.heads, t);
            assert.ok(p.first && p.second, `trial ${t}: both requests reached the upstream`);
            assert.notEqual(p.second.conn, p.first.conn, `trial ${t}: request 1's connection was reused`);
            await within(2_000, up.whenClosed(p.first.conn), `trial ${t}: request 1's connection closed`);
          }
        } finally {
          await front.close();
          await up.close();
        }
      });

      test(`a second response that arrives while the connection is idle closes it, and never answers request 2 on ${conn}`, async () => {
        const up = await startLateUpstream(1);
        const front: Front = await start(up);
        try {
          for (let t = 0; t < TRIALS; t++) {
            // A few exchanges first: the connection is past TCP's quick ACKs, as a pooled one is.
            const o = await trial(front.port, mode, t, {
              warm: 2,
              gap: async () => {
                const first = placed(up.heads, t).first;
                assert.ok(first, `trial ${t}: request 1 reached the upstream`);
                await within(
                  2_000,
                  up.whenClosed(first.conn),
                  `trial ${t}: the gateway closed the connection`,
                );
              },
            });
            assert.equal(o.body, 'second', `trial ${t}: request 2 got ${o.status} ${o.body}`);
            const p = placed(up.heads, t);
            assert.ok(p.first && p.second);
            assert.notEqual(p.second.conn, p.first.conn);
          }
        } finally {
          await front.close();
          await up.close();
        }
      });
    }
  });
}
