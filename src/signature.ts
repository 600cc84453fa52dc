/**
 * `Sluice-Signature` on every body Sluice posts to a webhook (job completion callbacks and alert
 * notifications): `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>` (the Stripe scheme:
 * the timestamp is signed too, so a receiver can refuse replays).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/** `Sluice-Signature` value for `body` sent at unix time `t` (seconds). */
export function signBody(secret: string, body: string | Buffer, t: number): string {
  return `t=${t},v1=${mac(secret, body, t)}`;
}

function mac(secret: string, body: string | Buffer, t: number): string {
  return createHmac('sha256', secret).update(`${t}.`).update(body).digest('hex');
}

/**
 * Receiver side: whether `header` is a valid signature of `body` made within `toleranceS` of `nowS`
 * (unix seconds). Several `v1=` values (key rotation) are accepted; any may match.
 */
export function verifySignature(
  secret: string,
  header: string | undefined,
  body: string | Buffer,
  options: { toleranceS?: number; nowS?: number } = {},
): boolean {
  if (!header) return false;
  let t: number | undefined;
  const sigs: string[] = [];
  for (const part of header.split(',')) {
    const [k, v] = part.trim().split('=', 2);
    if (k === 't' && /^\d+$/.test(v ?? '')) t = Number(v);
    else if (k === 'v1' && v) sigs.push(v);
  }
  if (t === undefined || sigs.length === 0) return false;
  const now = options.nowS ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - t) > (options.toleranceS ?? 300)) return false;
  const expected = Buffer.from(mac(secret, body, t));
  return sigs.some((s) => {
    const got = Buffer.from(s);
    return got.length === expected.length && timingSafeEqual(got, expected);
  });
}
