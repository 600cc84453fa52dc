/**
 * Request ids: a client's own `X-Request-Id` is kept when it is reasonable (1–128 visible characters
 * from a safe set); otherwise a ULID is made (48-bit time + 80 random bits, Crockford base32), which
 * sorts by time in logs. Random bytes are drawn in batches to keep this off the profile.
 */
import { randomFillSync } from 'node:crypto';

const ALPHABET = Buffer.from('0123456789ABCDEFGHJKMNPQRSTVWXYZ', 'latin1');
const VALID = /^[A-Za-z0-9._:@/+=-]{1,128}$/;
const POOL = Buffer.allocUnsafe(16 * 256);
let offset = POOL.length;
/**
 * The id is written here as bytes and read out as one flat string: 26 string concatenations made a
 * rope that every later use (the header, the log line) had to flatten. The time part is rewritten
 * only when the millisecond changes.
 */
const ID = Buffer.alloc(26);
let idMs = -1;

export function isValidRequestId(id: string | undefined): id is string {
  return id !== undefined && VALID.test(id);
}

export function newRequestId(now = Date.now()): string {
  if (now !== idMs) {
    idMs = now;
    let t = now;
    for (let i = 9; i >= 0; i--) {
      ID[i] = ALPHABET[t % 32];
      t = Math.floor(t / 32);
    }
  }
  if (offset + 16 > POOL.length) {
    randomFillSync(POOL);
    offset = 0;
  }
  for (let i = 0; i < 16; i++) ID[10 + i] = ALPHABET[POOL[offset + i] & 31];
  offset += 16;
  return ID.toString('latin1', 0, 26);
}
