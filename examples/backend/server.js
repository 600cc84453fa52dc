/**
 * The seed's checkout handler, fixed with sluice/upstream.
 *
 * Before: `await stripe.charges.create({ amount: 2000, currency: 'usd' })` with no timeout — when the
 * payment API hangs, the handler waits forever, the gateway answers 504 at its deadline and the
 * charge may still go through afterwards. After:
 *   - deadline(req) turns the x-timeout-ms budget Sluice sends into an AbortSignal that fires a
 *     little before Sluice gives up, so the handler answers first, with a useful error;
 *   - fetchWithDeadline passes what is left of the budget on to the payment API (as x-timeout-ms,
 *     and as the time it aborts after) instead of a guessed 10 s;
 *   - timing(res) writes Server-Timing (db, stripe), which Sluice puts in its access log and metrics:
 *     "the payment API is the bottleneck" without an APM.
 *
 * Run: STRIPE_URL=http://127.0.0.1:9000/slow?ms=8000 node examples/backend/server.js
 * then: sluice proxy --to http://127.0.0.1:3000 --timeout 5s ; curl -i localhost:8080/checkout
 * With the official Stripe SDK, the same budget goes in its per-request option:
 *   stripe.charges.create(params, { timeout: remaining(req) })
 */
import http from 'node:http';
import { pathToFileURL } from 'node:url';
import { deadline, fetchWithDeadline, timing } from 'sluice/upstream';

/** Stands in for the database: a query that takes `ms`. */
const query = (ms, signal) =>
  new Promise((resolve, reject) => {
    const t = setTimeout(() => resolve({ cart: 'c_1', amount: 2000 }), ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        reject(signal.reason);
      },
      { once: true },
    );
  });

/** @param {{ stripeUrl: string, dbMs?: number }} options */
export function createBackend({ stripeUrl, dbMs = 20 }) {
  return http.createServer(async (req, res) => {
    const signal = deadline(req); // first thing: the budget counts from the request's arrival
    const t = timing(res);
    try {
      const cart = await t.span('db', () => query(dbMs, signal));
      const charge = await t.span('stripe', async () => {
        const r = await fetchWithDeadline(
          stripeUrl,
          {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ amount: cart.amount, currency: 'usd' }),
          },
          req,
        );
        return r.json();
      });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ok: true, charge }));
    } catch (err) {
      if (signal.aborted) {
        // Out of time: say so before the gateway does, and say what was slow.
        res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '5' });
        res.end(
          JSON.stringify({
            ok: false,
            error: 'payment provider did not answer in time',
            timings: t.entries(),
          }),
        );
      } else {
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ ok: false, error: String(err?.message ?? err) }));
      }
    }
  });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const port = Number(process.env.PORT ?? 3000);
  const server = createBackend({ stripeUrl: process.env.STRIPE_URL ?? 'http://127.0.0.1:9000/slow?ms=300' });
  server.listen(port, '127.0.0.1', () => console.error(`checkout backend on http://127.0.0.1:${port}`));
  process.on('SIGTERM', () => server.close());
}
