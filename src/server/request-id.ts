/**
 * Request ids: a client's own `X-Request-Id` is kept when it is reasonable (1–128 visible characters
 * from a safe set); otherwise a ULID is made (48-bit time + 80 random bits, Crockford base32), which
 * sorts by time in logs. Random bytes are drawn in batches to keep this off the profile.
 */
import { randomFillSync } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const VALID = /^[A-Za-z0-9._:@/+=-]{1,128}$/;
const POOL = Buffer.allocUnsafe(16 * 256);
let offset = POOL.length;

export function isValidRequestId(id: string | undefined): id is string {
  return id !== undefined && VALID.test(id);
}

export function newRequestId(now = Date.now()): string {
  let out = '';
  let t = now;
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[t % 32] + out;
    t = Math.floor(t / 32);
  }
  if (offset + 16 > POOL.length) {
    randomFillSync(POOL);
    offset = 0;
  }
  for (let i = 0; i < 16; i++) out += ALPHABET[POOL[offset + i] & 31];
  offset += 16;
  return out;
}
