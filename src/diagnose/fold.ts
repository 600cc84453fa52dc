/**
 * Endpoint folding for `sluice logs`: `GET /users/123/orders/9f1c…?page=2` → `GET /users/:id/orders/:id`,
 * so that the hot spots of a log are endpoints, not single URLs. A path segment is folded when it is
 * - a number, or only digits and separators (`2026-11-23`, `1.5`),
 * - a UUID (8-4-4-4-12 hex),
 * - a hex id: 8 or more hex digits with at least one decimal digit (a hash, a Mongo ObjectId),
 * - a ULID (26 Crockford base-32 characters with a digit),
 * - a long token: 16+ characters of base64/base64url with a digit and a letter, which either mixes
 *   upper and lower case or has no `-`/`_` (so `my-post-about-2024` stays a slug);
 * and inside a dotted name, the first part or a part of 8+ characters that is one of those
 * (`/items/123.json` → `/items/:id.json`, `/static/app.3f9a1c2e.js` → `/static/app.:id.js`).
 * The query string and fragment are dropped; an absolute URL (`http://host/path`) keeps its path.
 *
 * This runs once per log line, on the bytes of the log (no string is made for a line whose endpoint
 * was seen before): byte scans and table lookups, no regex.
 */

export const ID = ':id';

const DIGIT = 1;
const LOWER = 2;
const UPPER = 4;
const HEX_LETTER = 8;
const DASH_UNDERSCORE = 16;
const SEP = 32;
const OTHER = 64;
const B64_ONLY = 128;

/** Classifies one byte into the flags above. */
function flagsOf(c: number): number {
  if (c >= 48 && c <= 57) return DIGIT;
  if (c >= 97 && c <= 122) return c <= 102 ? LOWER | HEX_LETTER : LOWER;
  if (c >= 65 && c <= 90) return c <= 70 ? UPPER | HEX_LETTER : UPPER;
  if (c === 45 || c === 95) return DASH_UNDERSCORE;
  if (c === 46 || c === 58 || c === 44) return SEP; // . : ,
  if (c === 61 || c === 43 || c === 126) return B64_ONLY; // = + ~
  return OTHER;
}

const FLAGS = new Uint8Array(256);
for (let c = 0; c < 256; c++) FLAGS[c] = flagsOf(c);

/** Bytes that are not in Crockford's base 32: I L O U (either case), and everything not alphanumeric. */
const NOT_CROCKFORD = new Uint8Array(256).fill(1);
for (let c = 0; c < 256; c++) if ((FLAGS[c] & (DIGIT | LOWER | UPPER)) !== 0) NOT_CROCKFORD[c] = 0;
for (const c of 'ILOUilou') NOT_CROCKFORD[c.charCodeAt(0)] = 1;

// The one table foldPieces reads per byte: FLAGS plus what isIdSegment derives, and the bytes that
// end a segment (`/`, `?`, `#`) or a target in a request line, so the hot loop is a lookup, a test
// and an OR per byte.
const NOT_HEX = 256;
const NOT_CROCK = 512;
const DOT = 1024;
const TERM = 2048;
/** Space, `"` and `\\`: end a target inside a request line (foldRequestTarget). */
const STOP = 4096;
const SCAN = new Uint16Array(256);
for (let c = 0; c < 256; c++)
  SCAN[c] =
    FLAGS[c] |
    ((FLAGS[c] & (DIGIT | HEX_LETTER)) === 0 ? NOT_HEX : 0) |
    (NOT_CROCKFORD[c] ? NOT_CROCK : 0) |
    (c === 46 ? DOT : 0) |
    (c === 47 || c === 63 || c === 35 ? TERM : 0) |
    (c === 32 || c === 34 || c === 92 ? STOP : 0);

/** Whether b[start, end) is an id that folds to `:id`. */
export function isIdSegment(b: Uint8Array, start: number, end: number): boolean {
  if (end <= start) return false;
  let all = 0;
  for (let i = start; i < end; i++) all |= SCAN[b[i]];
  return (all & TERM) === 0 && isIdFlags(b, start, end, all);
}

/** Hex digits, either case. */
const HEX = new Uint8Array(256);
for (let c = 0; c < 256; c++) HEX[c] = (FLAGS[c] & (DIGIT | HEX_LETTER)) !== 0 ? 1 : 0;

/** Whether b[s, s + 36) is a UUID: 8-4-4-4-12 hex digits. */
function isUuid(b: Uint8Array, s: number): boolean {
  if (b[s + 8] !== 45 || b[s + 13] !== 45 || b[s + 18] !== 45 || b[s + 23] !== 45) return false;
  for (let i = s; i < s + 8; i++) if (HEX[b[i]] === 0) return false;
  for (let i = s + 9; i < s + 13; i++) if (HEX[b[i]] === 0) return false;
  for (let i = s + 14; i < s + 18; i++) if (HEX[b[i]] === 0) return false;
  for (let i = s + 19; i < s + 23; i++) if (HEX[b[i]] === 0) return false;
  for (let i = s + 24; i < s + 36; i++) if (HEX[b[i]] === 0) return false;
  return true;
}

/**
 * The folded form of a request target, as pieces: pairs (start, end) of bytes kept as they are,
 * and (-1, -1) for an `:id`, plus the hash of each piece. Filled by foldPieces in one pass over the
 * target (classifying each segment and hashing it at once); read by piecesEqual and piecesBytes.
 */
const MAX_PIECES = 256;
export const PIECES = new Int32Array(MAX_PIECES * 2);
let pieceCount = 0;
/** End of the target consumed into pieces so far. */
let copied = 0;
/** Hash of the pieces so far (see foldPieces), and of the literal run since `copied`. */
let hash = 0;

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
const ID_HASH = 0x2545f491;

/** Combines a piece's hash into the endpoint's. */
const mix = (h: number, piece: number) => Math.imul(h ^ piece, 0x9e3779b1) ^ (h >>> 15);

/** Closes the literal run [copied, upto) as a piece. */
function pushLiteral(upto: number): void {
  if (upto <= copied || pieceCount >= MAX_PIECES - 1) return;
  PIECES[pieceCount * 2] = copied;
  PIECES[pieceCount * 2 + 1] = upto;
  pieceCount++;
  copied = upto;
}

/** Hash of the folded target of the last foldPieces call (with the seed it was given). */
export function foldedHash(): number {
  return hash & 0x3fffffff;
}

/**
 * Splits the target b[from, to) into pieces and hashes them together with `seed` (the method's
 * hash); returns how many pieces (0: the endpoint is `/`). `templated`: the target is a route
 * template already (nothing folds, only the query goes). The hash (foldedHash) depends only on
 * the folded form: the same endpoint always hashes the same, whichever ids it had.
 */
export function foldPieces(b: Uint8Array, from: number, to: number, templated = false, seed = 0): number {
  // Absolute-form targets (`GET http://host/path`, as ALB logs them): keep only the path.
  let start = from;
  if (b[from] !== 47) {
    for (let i = from; i + 2 < to; i++) {
      const c = b[i];
      if (c === 47 || c === 63 || c === 35) break;
      if (c === 58 && b[i + 1] === 47 && b[i + 2] === 47) {
        let slash = i + 3;
        while (slash < to && b[slash] !== 47 && b[slash] !== 63 && b[slash] !== 35) slash++;
        start = slash;
        break;
      }
    }
  }
  return foldFrom(b, start, to, templated, seed, TERM);
}

/** Where the segment loop of the last fold stopped (a `?`, `#`, a STOP byte or the end). */
let stoppedAt = 0;

/**
 * Folds the target of a request line: the plain path (starting with `/`) at b[from…] that ends at
 * the first space before `to`, its query skipped; returns its pieces as foldPieces does, and the
 * space is at requestTargetEnd(). Returns -1, having folded nothing usable, when the target is not
 * that: no `/` first, a `"` or `\\` before the space, no space. It reads each byte of the path once,
 * for parsers that would otherwise scan the target to find its end and then fold it; on the same
 * target, foldPieces(b, from, requestTargetEnd()) gives the same pieces and hash.
 */
export function foldRequestTarget(b: Uint8Array, from: number, to: number, seed: number): number {
  if (b[from] !== 47) return -1;
  const n = foldFrom(b, from, to, false, seed, TERM | STOP);
  let i = stoppedAt;
  while (i < to && (SCAN[b[i]] & STOP) === 0) i++; // the query, if any
  if (i >= to || b[i] !== 32) return -1;
  stoppedAt = i;
  return n;
}

/** The index of the space that ended the target of the last successful foldRequestTarget. */
export function requestTargetEnd(): number {
  return stoppedAt;
}

/** foldPieces from the path's first byte; `stop`: the SCAN bits that end the target. */
function foldFrom(
  b: Uint8Array,
  start: number,
  to: number,
  templated: boolean,
  seed: number,
  stop: number,
): number {
  pieceCount = 0;
  copied = start;
  // Each segment: its flags (for isId) in one tight pass over its bytes; then, unless it is an id,
  // its FNV hash (ids, most of the bytes of a target, are never hashed).
  let h = seed;
  let i = start;
  for (;;) {
    const seg = i;
    let all = 0;
    let c = 47;
    for (; i < to; i++) {
      c = b[i];
      const f = SCAN[c];
      if ((f & stop) !== 0) break;
      all |= f;
    }
    // The segment [seg, i) ends at `/`, `?`, `#` or the end of the target.
    if (i > seg) {
      if (!templated && isIdFlags(b, seg, i, all)) {
        pushLiteral(seg);
        if (pieceCount < MAX_PIECES - 1) {
          PIECES[pieceCount * 2] = -1;
          PIECES[pieceCount * 2 + 1] = -1;
          pieceCount++;
          copied = i;
        }
        h = mix(h, ID_HASH);
      } else if (!templated && (all & DOT) !== 0 && foldDotted(b, seg, i, h)) {
        h = hash; // foldDotted pushed the pieces and mixed their hashes into `hash`
      } else if (i - seg === 3 && b[seg] === 58 && b[seg + 1] === 105 && b[seg + 2] === 100) {
        h = mix(h, ID_HASH); // a literal `:id` (a logged route template) is the same endpoint
      } else h = mix(h, bytesHash(b, seg, i));
    }
    if (i >= to || c !== 47) break;
    h = mix(h, 47);
    i++;
  }
  const end = i < to ? i : to;
  stoppedAt = end;
  if (start >= end) {
    hash = mix(seed, 47);
    return 0;
  }
  hash = h;
  pushLiteral(end);
  return pieceCount;
}

/** The isIdSegment decision from the SCAN flags of the segment's bytes. */
function isIdFlags(b: Uint8Array, start: number, end: number, all: number): boolean {
  if ((all & OTHER) !== 0 || (all & DIGIT) === 0) return false;
  if ((all & (LOWER | UPPER | B64_ONLY)) === 0) return true;
  const len = end - start;
  if (len === 36 && isUuid(b, start)) return true;
  if ((all & NOT_HEX) === 0 && len >= 8) return true;
  if ((all & NOT_CROCK) === 0 && len === 26) return true;
  if (len >= 16 && (all & SEP) === 0) {
    const mixedCase = (all & LOWER) !== 0 && (all & UPPER) !== 0;
    if (mixedCase || (all & DASH_UNDERSCORE) === 0) return true;
  }
  return false;
}

/**
 * A dotted segment that is not an id as a whole: folds its parts that are (the first part, or a part
 * of 8+ characters). Pushes pieces and mixes hashes when something folds; false when nothing does.
 */
function foldDotted(b: Uint8Array, seg: number, end: number, h: number): boolean {
  // Most dotted segments (`page35.html`, `v1.2`): the first part is no id and the others are too short.
  let dot = seg;
  while (dot < end && b[dot] !== 46) dot++;
  if (end - dot < 9 && !isIdSegment(b, seg, dot)) return false;
  hash = h;
  let part = seg;
  let folded = false;
  /** Hash of the literal bytes since the last id part. */
  let lit = FNV_OFFSET;
  let litBytes = 0;
  for (let j = seg; j <= end; j++) {
    if (j !== end && b[j] !== 46) continue;
    if (j > part && (part === seg || j - part >= 8) && isIdSegment(b, part, j)) {
      if (litBytes > 0) hash = mix(hash, lit);
      pushLiteral(part);
      if (pieceCount < MAX_PIECES - 1) {
        PIECES[pieceCount * 2] = -1;
        PIECES[pieceCount * 2 + 1] = -1;
        pieceCount++;
        copied = j;
      }
      hash = mix(hash, ID_HASH);
      lit = FNV_OFFSET;
      litBytes = 0;
      folded = true;
    } else for (let k = part; k < j; k++, litBytes++) lit = Math.imul(lit ^ b[k], FNV_PRIME);
    if (j !== end) {
      lit = Math.imul(lit ^ 46, FNV_PRIME);
      litBytes++;
    }
    part = j + 1;
  }
  if (!folded) return false;
  if (litBytes > 0) hash = mix(hash, lit);
  return true;
}

/** FNV-1a of b[from, to) (the method's bytes, as the seed of foldPieces). */
export function bytesHash(b: Uint8Array, from: number, to: number): number {
  let h = FNV_OFFSET;
  for (let i = from; i < to; i++) h = Math.imul(h ^ b[i], FNV_PRIME);
  return h;
}

/** Whether key[from…] is exactly the folded form in PIECES. */
export function piecesEqual(key: Uint8Array, from: number, b: Uint8Array, n: number): boolean {
  if (n === 0) return key.length === from + 1 && key[from] === 47;
  let k = from;
  for (let p = 0; p < n; p++) {
    const s = PIECES[p * 2];
    if (s === -1) {
      if (key[k] !== 58 || key[k + 1] !== 105 || key[k + 2] !== 100) return false;
      k += 3;
      continue;
    }
    const e = PIECES[p * 2 + 1];
    if (k + (e - s) > key.length) return false;
    for (let i = s; i < e; i++) if (key[k++] !== b[i]) return false;
  }
  return k === key.length;
}

/** The folded form in PIECES as bytes. */
export function piecesBytes(b: Uint8Array, n: number): Buffer {
  if (n === 0) return Buffer.from('/');
  const parts: Uint8Array[] = [];
  const id = Buffer.from(ID);
  for (let p = 0; p < n; p++)
    parts.push(PIECES[p * 2] === -1 ? id : b.subarray(PIECES[p * 2], PIECES[p * 2 + 1]));
  return Buffer.concat(parts);
}

/** The folded form of a request target: `/users/123/orders?page=2` → `/users/:id/orders`. */
export function foldPath(target: string, templated = false): string {
  const b = Buffer.from(target);
  return piecesBytes(b, foldPieces(b, 0, b.length, templated)).toString();
}
