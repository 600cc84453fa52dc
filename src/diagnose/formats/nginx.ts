/**
 * nginx access logs: `combined` (and `common`, without referer and user agent), optionally followed by
 * timing fields. After the combined prefix the parser is lenient, since every site writes its own
 * `log_format`: fields may be bare (`… "curl/8" 1.001 1.000 504`) or `key=value`
 * (`rt=1.001 urt="1.000" us=504`, the nginx blog's format), quoted or not, and lists of several
 * upstreams (`0.500, 1.001` or `0.500 : 1.001`) are summed. Bare numbers are taken in order: the
 * first with a decimal point is `$request_time`, the second `$upstream_response_time` (`-` when
 * there was no upstream); a whole number 100–599 after them is `$upstream_status`. Other fields
 * (a quoted `$http_x_forwarded_for`, `$request_length`, …) are skipped. The latency is
 * `$request_time`, else `$upstream_response_time`.
 *
 * Hot path: byte scans of the line as read (no string is made per line), no regex, no split; the
 * common shapes of the request line and of the tail take fast paths that read each byte once (the
 * path is folded as the request line is read).
 */
import { bytesHash, foldRequestTarget, requestTargetEnd } from '../fold.ts';
import {
  closingQuote,
  indexOfByte,
  type LogParser,
  type LogRecord,
  parseClfTime,
  parseNumber,
} from './record.ts';

/** What the tail of a line held. */
export interface NginxTail {
  requestTime: number;
  upstreamTime: number;
  upstreamStatus: number;
}

const REQUEST = 1;
const UPSTREAM = 2;
const STATUS = 3;
const OTHER = 4;

function keyKind(b: Uint8Array, start: number, end: number): number {
  switch (String.fromCharCode(...b.subarray(start, Math.min(end, start + 24)))) {
    case 'rt':
    case 'request_time':
    case 'req_time':
      return REQUEST;
    case 'urt':
    case 'upstream_response_time':
    case 'upstream_time':
      return UPSTREAM;
    case 'us':
    case 'ups':
    case 'ust':
    case 'upstream_status':
      return STATUS;
    default:
      return OTHER;
  }
}

/** Reused result of parseTail (the parser allocates nothing per line). */
const tail: NginxTail = { requestTime: Number.NaN, upstreamTime: Number.NaN, upstreamStatus: Number.NaN };

/**
 * Reads the timing fields of b[at, end) (what follows the combined prefix). With `all` false it stops
 * as soon as `$request_time` is known (all the latency needs).
 */
export function parseTail(b: Uint8Array, at: number, end: number, all = true): NginxTail {
  tail.requestTime = Number.NaN;
  tail.upstreamTime = Number.NaN;
  tail.upstreamStatus = Number.NaN;
  let i = at;
  let bareTimes = 0;
  let prevField = 0;
  /** The previous token ended with `,` or was `:`: this one adds to the same field. */
  let cont = false;
  while (i < end) {
    let c = b[i];
    if (c === 32 || c === 9) {
      i++;
      continue;
    }
    // A token: [key=]value, the value bare or quoted.
    let kind = 0;
    let vStart = i;
    if (c !== 34) {
      let j = i;
      while (j < end) {
        c = b[j];
        if (c === 61 || c === 32 || c === 34) break;
        j++;
      }
      if (j < end && c === 61) {
        kind = keyKind(b, i, j);
        vStart = j + 1;
      }
    }
    let vEnd: number;
    let quoted = false;
    if (vStart < end && b[vStart] === 34) {
      quoted = true;
      const q = closingQuote(b, vStart + 1, end);
      vEnd = q === -1 ? end : q;
      i = vEnd + 1;
      vStart++;
    } else {
      vEnd = indexOfByte(b, 32, vStart, end);
      if (vEnd === -1) vEnd = end;
      i = vEnd;
    }
    if (!quoted && vEnd - vStart === 1 && b[vStart] === 58) {
      cont = true; // ` : ` between groups of upstreams
      continue;
    }
    const trailingComma = !quoted && vEnd > vStart && b[vEnd - 1] === 44;
    let field = kind !== 0 ? kind : cont ? prevField : 0;
    // The values inside (a quoted value may be a list: "0.500, 1.001").
    let v0 = vStart;
    while (v0 < vEnd) {
      let v1 = v0;
      let dot = false;
      while (v1 < vEnd) {
        const d = b[v1];
        if (d === 44 || d === 32 || d === 58) break;
        if (d === 46) dot = true;
        v1++;
      }
      if (v1 > v0) {
        const v = parseNumber(b, v0, v1);
        if (field === 0) {
          if (!Number.isNaN(v) && dot && v < 1e8) {
            bareTimes++;
            field = bareTimes === 1 ? REQUEST : bareTimes === 2 ? UPSTREAM : OTHER;
          } else if (v1 - v0 === 1 && b[v0] === 45 && bareTimes > 0) {
            bareTimes++; // `-`: an absent upstream time keeps its slot
            field = bareTimes === 2 ? UPSTREAM : OTHER;
          } else if (!Number.isNaN(v) && !dot && bareTimes > 0 && v >= 100 && v <= 599) field = STATUS;
          else field = OTHER;
        }
        if (!Number.isNaN(v) && v >= 0) {
          if (field === REQUEST) tail.requestTime = v;
          else if (field === UPSTREAM)
            tail.upstreamTime = Number.isNaN(tail.upstreamTime) ? v : tail.upstreamTime + v;
          else if (field === STATUS) tail.upstreamStatus = v;
        }
      }
      v0 = v1 + 1;
    }
    if (!all && !Number.isNaN(tail.requestTime)) break;
    prevField = field;
    cont = trailingComma;
  }
  return tail;
}

/** Bytes that end a field of the request line on its fast path: space, `"` and `\\`. */
const REQUEST_STOP = new Uint8Array(256);
REQUEST_STOP[32] = 1;
REQUEST_STOP[34] = 1;
REQUEST_STOP[92] = 1;

/** The bytes of a tail of bare numbers: 1 for digits, space, `-`, `,`, `:`; 2 for `.`. */
const NUMERIC_TAIL = new Uint8Array(256);
for (const c of '0123456789 -,:') NUMERIC_TAIL[c.charCodeAt(0)] = 1;
NUMERIC_TAIL[46] = 2;

/**
 * Fast path of the request line `"METHOD SP /path SP protocol"` whose content starts at q1: when it
 * has exactly two spaces, a target that starts with `/` and no `\\` or `"` before its closing
 * quote (almost every line), sets the method and the target, folds the target as it reads it
 * (foldRequestTarget: rec.folded), and returns the closing quote's index; otherwise -1, and the
 * general path decides (the result is then the same: see the test that runs both).
 */
function simpleRequest(b: Uint8Array, q1: number, end: number, rec: LogRecord): number {
  let i = q1;
  while (i < end && REQUEST_STOP[b[i]] === 0) i++;
  if (i === q1 || i >= end || b[i] !== 32) return -1;
  const sp1 = i;
  const pieces = foldRequestTarget(b, sp1 + 1, end, bytesHash(b, q1, sp1));
  if (pieces < 0) return -1;
  const sp2 = requestTargetEnd();
  i = sp2 + 1;
  while (i < end && REQUEST_STOP[b[i]] === 0) i++;
  if (i === sp2 + 1 || i >= end || b[i] !== 34) return -1;
  rec.methodAt = q1;
  rec.methodEnd = sp1;
  rec.targetAt = sp1 + 1;
  rec.targetEnd = sp2;
  rec.folded = pieces;
  return i;
}

/**
 * Fast path of the tail when it starts with `$request_time` as nginx writes it (` 0.123`, then a
 * space or the end): its value in seconds; NaN otherwise, and parseTail decides.
 */
function leadingRequestTime(b: Uint8Array, at: number, end: number): number {
  if (b[at] !== 32) return Number.NaN;
  let i = at + 1;
  let v = 0;
  const intStart = i;
  for (; i < end; i++) {
    const d = b[i] - 48;
    if (!(d >= 0 && d <= 9)) break;
    v = v * 10 + d;
  }
  if (i === intStart || i - intStart > 7 || i >= end || b[i] !== 46) return Number.NaN;
  i++;
  let scale = 1;
  for (; i < end; i++) {
    const d = b[i] - 48;
    if (!(d >= 0 && d <= 9)) break;
    v = v * 10 + d;
    scale *= 10;
  }
  if (i < end && b[i] !== 32) return Number.NaN;
  return scale > 1 ? v / scale : v;
}

/**
 * Parses one nginx line into `rec`. `fast`: take the fast paths (simpleRequest, leadingRequestTime)
 * where they apply; false only in tests, which check that both ways give the same record.
 */
export function parseNginx(b: Buffer, start: number, end: number, rec: LogRecord, fast: boolean): boolean {
  // `$remote_addr - $remote_user [`: the first ` [`.
  let lb = start;
  for (let i = start + 1; ; i++) {
    if (i >= end) {
      lb = end - 1;
      break;
    }
    if (b[i] === 91 && b[i - 1] === 32) {
      lb = i - 1;
      break;
    }
  }
  // `[10/Oct/2000:13:55:36 -0700] "`: fixed width, unless `$time_iso8601` or the like.
  let rb = lb + 28;
  if (rb + 2 >= end || b[rb] !== 93) {
    rb = indexOfByte(b, 93, lb + 2, Math.min(end, lb + 48));
    if (rb === -1) return false;
  }
  if (rb + 2 >= end || b[rb + 1] !== 32 || b[rb + 2] !== 34) return false;
  rec.buf = b;
  rec.folded = -1;
  rec.timeAt = lb + 2;
  rec.time = Number.NaN;
  const q1 = rb + 3;
  let q2 = fast ? simpleRequest(b, q1, end, rec) : -1;
  if (q2 === -1) {
    q2 = closingQuote(b, q1, end);
    if (q2 === -1) return false;
    // The request line: METHOD SP target SP protocol (`-` or garbage when the client sent no request).
    const sp1 = indexOfByte(b, 32, q1, q2);
    if (sp1 === -1) {
      rec.methodAt = q1;
      rec.methodEnd = q2;
      rec.targetAt = q1;
      rec.targetEnd = q2;
    } else {
      rec.methodAt = q1;
      rec.methodEnd = sp1;
      let sp2 = q2 - 1;
      while (sp2 > sp1 && b[sp2] !== 32) sp2--;
      rec.targetAt = sp1 + 1;
      rec.targetEnd = sp2 > sp1 ? sp2 : q2;
    }
  }
  rec.templated = false;
  // ` 504 ` then the body size.
  const st = q2 + 2;
  if (b[q2 + 1] !== 32 || st + 3 > end) return false;
  const status = (b[st] - 48) * 100 + (b[st + 1] - 48) * 10 + (b[st + 2] - 48);
  if (!(status >= 100 && status <= 999) || b[st] > 57 || b[st + 1] > 57 || b[st + 2] > 57) return false;
  if (st + 3 < end && b[st + 3] !== 32) return false;
  rec.status = status;
  rec.timeoutPhase = null;
  rec.budgetMs = Number.NaN;
  rec.skip = false;
  rec.latencyMs = Number.NaN;
  // A tail of bare numbers after the last quote (`… "curl/8.5.0" 1.001 1.000 504`) is read from the
  // end, without scanning the referer and the user agent.
  let k = end - 1;
  let seen = 0;
  for (; k > q2; k--) {
    const t = NUMERIC_TAIL[b[k]];
    if (t === 0) break;
    seen |= t;
  }
  if (k > q2 && (seen & 2) !== 0 && b[k] === 34) {
    const rt = fast ? leadingRequestTime(b, k + 1, end) : Number.NaN;
    if (rt >= 0) {
      rec.latencyMs = rt * 1000;
      return true;
    }
    const t = parseTail(b, k + 1, end, false);
    if (!Number.isNaN(t.requestTime)) rec.latencyMs = t.requestTime * 1000;
    else if (!Number.isNaN(t.upstreamTime)) rec.latencyMs = t.upstreamTime * 1000;
    return true;
  }
  let at = indexOfByte(b, 32, st + 4, end);
  if (at === -1) return true;
  // Referer and user agent (combined), then the tail.
  if (b[at + 1] === 34) {
    const r = closingQuote(b, at + 2, end);
    if (r === -1) return false;
    at = r + 1;
    if (b[at] === 32 && b[at + 1] === 34) {
      const u = closingQuote(b, at + 2, end);
      if (u === -1) return false;
      at = u + 1;
    }
  }
  if (at >= end) return true;
  const t = parseTail(b, at, end, false);
  if (!Number.isNaN(t.requestTime)) rec.latencyMs = t.requestTime * 1000;
  else if (!Number.isNaN(t.upstreamTime)) rec.latencyMs = t.upstreamTime * 1000;
  return true;
}

export const nginxParser: LogParser = {
  format: 'nginx',
  phases: false,
  parse: (b: Buffer, start: number, end: number, rec: LogRecord): boolean =>
    parseNginx(b, start, end, rec, true),
  time(rec: LogRecord): number {
    const b = rec.buf;
    const at = rec.timeAt;
    if (at < 0) return Number.NaN;
    if (b[at + 2] === 47) return parseClfTime(b, at);
    // `$time_iso8601`: 2026-11-23T10:00:00+00:00
    const close = indexOfByte(b, 93, at, Math.min(b.length, at + 40));
    return close === -1 ? Number.NaN : Date.parse(String.fromCharCode(...b.subarray(at, close)));
  },
};
