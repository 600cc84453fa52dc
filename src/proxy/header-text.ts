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

function slotOf(buf: Uint8Array, n: number): number {
  let h = n;
  for (let i = 0; i < n; i++) h = Math.imul(h ^ buf[i], 0x01000193);
  return (h ^ (h >>> 15)) & (SLOTS - 1);
}

function sameText(s: string, buf: Uint8Array, n: number): boolean {
  if (s.length !== n) return false;
  for (let i = 0; i < n; i++) if (s.charCodeAt(i) !== buf[i]) return false;
  return true;
}

/** The header's text, as latin1 (what HTTP field bytes are). */
export function headerText(raw: Buffer | string): string {
  if (typeof raw === 'string') return raw;
  const n = raw.length;
  if (n > MAX_CACHED) return raw.toString('latin1');
  const slot = slotOf(raw, n);
  const cached = texts[slot];
  if (sameText(cached, raw, n)) return cached;
  const text = raw.toString('latin1');
  texts[slot] = text;
  lowers[slot] = ''; // computed when the text is used as a name
  return text;
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
  let text = texts[slot];
  if (!sameText(text, raw, n)) {
    text = raw.toString('latin1');
    texts[slot] = text;
    lowers[slot] = '';
  }
  let lower = lowers[slot];
  if (lower === '' && n > 0) lowers[slot] = lower = text.toLowerCase();
  out.text = text;
  out.lower = lower;
}
