/**
 * What every access-log parser of `sluice logs` extracts from a line. One object is reused for every
 * line of a file (the parse loop allocates nothing per line beyond string slices).
 */

export type LogFormat = 'nginx' | 'kong' | 'sluice' | 'alb' | 'apigw';

export const LOG_FORMATS: readonly LogFormat[] = ['nginx', 'kong', 'sluice', 'alb', 'apigw'];

export interface LogRecord {
  /**
   * The bytes that hold the method and the target: the chunk of log being read (text formats), or a
   * scratch copy (JSON formats). Offsets below index into it.
   */
  buf: Uint8Array;
  methodAt: number;
  methodEnd: number;
  /** The request target as logged (path, maybe a query or an absolute URL), or a route template. */
  targetAt: number;
  targetEnd: number;
  /** The target is already a template (API Gateway's `resourcePath`): not folded. */
  templated: boolean;
  /**
   * -1, or the parser folded the target while reading it (fold.ts foldRequestTarget): how many
   * pieces, which fold.ts still holds (PIECES, foldedHash) when the record is summed.
   */
  folded: number;
  status: number;
  /** Latency in ms as the log states it (request time, total), NaN when the line has none. */
  latencyMs: number;
  /** When the log says the request timed out: in which phase; null otherwise. */
  timeoutPhase: string | null;
  /** The budget the gateway applied (Sluice's `budget_ms`), NaN when unknown. */
  budgetMs: number;
  /** Epoch ms when the parser has it at hand (JSON formats), else NaN: ask the parser's `time()`. */
  time: number;
  /** Offset in `buf` where the parser's `time()` finds the timestamp. */
  timeAt: number;
  /** A line of the format that is not a request (Sluice's job lines): counted as parsed, not summed. */
  skip: boolean;
}

export function newRecord(): LogRecord {
  return {
    buf: EMPTY,
    methodAt: 0,
    methodEnd: 0,
    targetAt: 0,
    targetEnd: 0,
    templated: false,
    folded: -1,
    status: 0,
    latencyMs: Number.NaN,
    timeoutPhase: null,
    budgetMs: Number.NaN,
    time: Number.NaN,
    timeAt: -1,
    skip: false,
  };
}

const EMPTY = new Uint8Array(0);

export interface LogParser {
  readonly format: LogFormat;
  /** Whether the format says in which phase a request timed out (else `timeouts` is null). */
  readonly phases: boolean;
  /** Fills `rec` from the line b[start, end) (no newline); false when it is not of this format. */
  parse(b: Buffer, start: number, end: number, rec: LogRecord): boolean;
  /** The record's time as epoch ms (NaN when it has none); called only for lines that need it (504s). */
  time(rec: LogRecord): number;
}

const MONTHS: Record<string, number> = {
  Jan: 0,
  Feb: 1,
  Mar: 2,
  Apr: 3,
  May: 4,
  Jun: 5,
  Jul: 6,
  Aug: 7,
  Sep: 8,
  Oct: 9,
  Nov: 10,
  Dec: 11,
};

function digits(b: Uint8Array, at: number, n: number): number {
  let v = 0;
  for (let i = at; i < at + n; i++) {
    const d = b[i] - 48;
    if (!(d >= 0 && d <= 9)) return Number.NaN;
    v = v * 10 + d;
  }
  return v;
}

/** Parses Common Log Format time `10/Oct/2000:13:55:36 -0700` at `at` → epoch ms (NaN if malformed). */
export function parseClfTime(b: Uint8Array, at: number): number {
  const day = digits(b, at, 2);
  const month = MONTHS[String.fromCharCode(b[at + 3], b[at + 4], b[at + 5])];
  const year = digits(b, at + 7, 4);
  const h = digits(b, at + 12, 2);
  const m = digits(b, at + 15, 2);
  const sec = digits(b, at + 18, 2);
  if (month === undefined || Number.isNaN(day + year + h + m + sec)) return Number.NaN;
  let offset = 0;
  const sign = b[at + 21];
  if (sign === 43 || sign === 45) {
    const oh = digits(b, at + 22, 2);
    const om = digits(b, at + 24, 2);
    if (!Number.isNaN(oh + om)) offset = (sign === 45 ? -1 : 1) * (oh * 60 + om) * 60_000;
  }
  return Date.UTC(year, month, day, h, m, sec) - offset;
}

/** Number at b[start, end): NaN unless it is digits with at most one `.` (an optional leading `-`). */
export function parseNumber(b: Uint8Array, start: number, end: number): number {
  if (start >= end) return Number.NaN;
  let neg = false;
  let i = start;
  if (b[i] === 45) {
    neg = true;
    i++;
    if (i === end) return Number.NaN;
  }
  let v = 0;
  let scale = 0;
  for (; i < end; i++) {
    const c = b[i];
    if (c === 46) {
      if (scale !== 0) return Number.NaN;
      scale = 1;
    } else {
      const d = c - 48;
      if (!(d >= 0 && d <= 9)) return Number.NaN;
      v = v * 10 + d;
      if (scale !== 0) scale *= 10;
    }
  }
  if (scale > 1) v /= scale;
  return neg ? -v : v;
}

/** Index of the next `c` in b[from, end), or -1. */
export function indexOfByte(b: Uint8Array, c: number, from: number, end: number): number {
  for (let i = from; i < end; i++) if (b[i] === c) return i;
  return -1;
}

/** Index of the `"` closing a quoted field whose content starts at `from` (skips `\"`), or -1. */
export function closingQuote(b: Uint8Array, from: number, end: number): number {
  let backslashes = 0;
  for (let i = from; i < end; i++) {
    const c = b[i];
    if (c === 34 && backslashes % 2 === 0) return i;
    backslashes = c === 92 ? backslashes + 1 : 0;
  }
  return -1;
}
