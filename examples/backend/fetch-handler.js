/**
 * The same fix for a fetch-style handler (Next.js route handlers, Hono, Bun, Deno, workers):
 * deadline() reads x-timeout-ms from the Request, timing().apply() adds Server-Timing to the Response.
 */
import { deadline, fetchWithDeadline, timing } from 'sluice/upstream';

export async function POST(request) {
  const signal = deadline(request);
  const t = timing();
  try {
    const charge = await t.span('stripe', () =>
      fetchWithDeadline(
        'https://api.stripe.com/v1/charges',
        { method: 'POST', body: 'amount=2000&currency=usd' },
        request,
      ).then((r) => r.json()),
    );
    return t.apply(Response.json({ ok: true, charge }));
  } catch (err) {
    const status = signal.aborted ? 503 : 502;
    return t.apply(
      Response.json(
        { ok: false, error: signal.aborted ? 'payment provider did not answer in time' : String(err) },
        { status },
      ),
    );
  }
}
