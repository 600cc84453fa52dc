/**
 * The text of upstream response header names and short values, from undici's raw Buffers. An upstream
 * sends the same names, and many of the same values (`Server`, `Content-Type`, `keep-alive`, one `Date`
 * per second), on every response, and `Buffer#toString` plus `toLowerCase` cost more per header than
 * the rest of the filtering (a call into C++ and two string allocations each; measured with
 * bench/macro/instructions.ts). So each is looked up in a small direct-mapped cache keyed by a hash
 * of its bytes and checked byte for byte on a hit; a miss converts and takes the slot. The cache holds
 * at most SLOTS short strings whatever an upstream sends, and a hit can never return a different text:
 * only the comparison decides.
 */

const SLOTS = 1024; // a power of two
/** Longer values (cookies, long ETags, links) are rarely repeated: converted every time. */
const MAX_CACHED = 48;

const texts: string[] = new Array(SLOTS).fill('');
const lowers: string[] = new Array(SLOTS).fill('');
/**
 * Each slot's bytes, kept beside its text so a hit compares typed arrays: comparing with the string's
 * `charCodeAt` cost a generic property load per character in optimised code (callgrind: ~200 calls
 * of V8's LoadIC per proxied response, a third of the header filtering).
 */
const bytes = new Uint8Array(SLOTS * MAX_CACHED);
const lengths = new Int32Array(SLOTS).fill(-1);

/**
 * The slot: a hash of the length and eight sampled bytes (both ends, where names and values differ,
 * and points between), not of every byte: the comparison reads them all anyway, and a collision only
 * costs a miss. Dates differ in their last digits, which are sampled.
 */
function slotOf(buf: Uint8Array, n: number): number {
  if (n === 0) return 0;
  const m = n - 1;
  let h = Math.imul(n ^ buf[0], 0x01000193);
  h = Math.imul(h ^ buf[m], 0x01000193);
  h = Math.imul(h ^ buf[m >> 1], 0x01000193);
  h = Math.imul(h ^ buf[m >> 2], 0x01000193);
  h = Math.imul(h ^ buf[m - (m >> 2)], 0x01000193);
  h = Math.imul(h ^ buf[m > 5 ? m - 5 : 0], 0x01000193);
  h = Math.imul(h ^ buf[m > 4 ? m - 4 : 0], 0x01000193);
  h = Math.imul(h ^ buf[m > 0 ? 1 : 0], 0x01000193);
  return (h ^ (h >>> 15)) & (SLOTS - 1);
}

function sameBytes(slot: number, buf: Uint8Array, n: number): boolean {
  if (lengths[slot] !== n) return false;
  const at = slot * MAX_CACHED;
  for (let i = 0; i < n; i++) if (bytes[at + i] !== buf[i]) return false;
  return true;
}

/** A miss: the slot takes this header's text and bytes (its lower-case form is made when needed). */
function fill(slot: number, buf: Buffer, n: number): string {
  const text = buf.toString('latin1');
  texts[slot] = text;
  lowers[slot] = '';
  bytes.set(buf, slot * MAX_CACHED);
  lengths[slot] = n;
  return text;
}

/** The header's text, as latin1 (what HTTP field bytes are). */
export function headerText(raw: Buffer | string): string {
  if (typeof raw === 'string') return raw;
  const n = raw.length;
  if (n > MAX_CACHED) return raw.toString('latin1');
  const slot = slotOf(raw, n);
  return sameBytes(slot, raw, n) ? texts[slot] : fill(slot, raw, n);
}

/** The header name's text and its lower-case form (for comparisons), as `headerText` does. */
export function headerName(raw: Buffer | string, out: { text: string; lower: string }): void {
  if (typeof raw === 'string' || raw.length > MAX_CACHED) {
    const text = typeof raw === 'string' ? raw : raw.toString('latin1');
    out.text = text;
    out.lower = text.toLowerCase();
    return;
  }
  const n = raw.length;
  const slot = slotOf(raw, n);
  const text = sameBytes(slot, raw, n) ? texts[slot] : fill(slot, raw, n);
  let lower = lowers[slot];
  if (lower === '' && n > 0) lowers[slot] = lower = text.toLowerCase();
  out.text = text;
  out.lower = lower;
}
