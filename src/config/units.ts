/**
 * Durations and sizes with units, as written in sluice.yaml.
 *
 * Durations: `250ms`, `5s`, `2m`, `1h` (fractions allowed: `1.5s`); `0` or `0s` means "disabled" where a
 * field says so. Sizes: `512B`, `512KB`, `10MB`, `1GB` (binary multiples, like nginx: 1KB = 1024 bytes;
 * `KiB`/`MiB`/`GiB` are accepted as synonyms). Bare numbers are rejected so that a unit is never guessed.
 */

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export const DURATION_PATTERN = '^(0|\\d+(\\.\\d+)?(ms|s|m|h))$';
export const SIZE_PATTERN = '^(0|\\d+(\\.\\d+)?(B|KB|MB|GB|KiB|MiB|GiB))$';

/** Parses `"250ms"` → 250. Returns undefined when the text is not a duration. */
export function parseDuration(text: string): number | undefined {
  if (text === '0') return 0;
  const m = DURATION.exec(text.trim());
  if (!m) return undefined;
  return roundUp(Number(m[1]) * DURATION_UNITS[m[2]]);
}

const SIZE = /^(\d+(?:\.\d+)?)(B|KB|MB|GB|KiB|MiB|GiB)$/;
const SIZE_UNITS: Record<string, number> = {
  B: 1,
  KB: 1024,
  KiB: 1024,
  MB: 1024 ** 2,
  MiB: 1024 ** 2,
  GB: 1024 ** 3,
  GiB: 1024 ** 3,
};

/** Parses `"10MB"` → 10485760. Returns undefined when the text is not a size. */
export function parseSize(text: string): number | undefined {
  if (text === '0') return 0;
  const m = SIZE.exec(text.trim());
  if (!m) return undefined;
  return roundUp(Number(m[1]) * SIZE_UNITS[m[2]]);
}

/** Rounds to a whole number, but never turns a positive value into 0 (which would mean "disabled"). */
function roundUp(n: number): number {
  return n > 0 ? Math.max(1, Math.round(n)) : 0;
}

/** Formats milliseconds the way a user would write them: 30000 → "30s", 1500 → "1.5s", 250 → "250ms". */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms >= 1000 && ms % 100 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** Formats bytes: 10485760 → "10MB". */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [
    ['GB', 1024 ** 3],
    ['MB', 1024 ** 2],
    ['KB', 1024],
  ] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}B`;
}

const DURATION_WORDS: Record<string, string> = {
  ms: 'ms',
  msec: 'ms',
  msecs: 'ms',
  millisecond: 'ms',
  milliseconds: 'ms',
  s: 's',
  sec: 's',
  secs: 's',
  second: 's',
  seconds: 's',
  m: 'm',
  min: 'm',
  mins: 'm',
  minute: 'm',
  minutes: 'm',
  h: 'h',
  hr: 'h',
  hrs: 'h',
  hour: 'h',
  hours: 'h',
};
const SIZE_WORDS: Record<string, string> = {
  b: 'B',
  byte: 'B',
  bytes: 'B',
  k: 'KB',
  kb: 'KB',
  kib: 'KiB',
  m: 'MB',
  mb: 'MB',
  mib: 'MiB',
  g: 'GB',
  gb: 'GB',
  gib: 'GiB',
};

function show(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/**
 * Why `value` is not a duration, echoing it with what to write instead:
 * "`2 s` is not a duration: write 2s (units ms, s, m, h)".
 */
export function durationProblem(value: unknown): string {
  const units = '(units ms, s, m, h)';
  if (typeof value !== 'string' && typeof value !== 'number')
    return `expected a duration such as 250ms, 5s, 2m or 1h, got ${value === null ? 'nothing' : Array.isArray(value) ? 'a list' : typeof value === 'object' ? 'a mapping' : `${typeof value} ${JSON.stringify(value)}`}`;
  const text = String(value).trim();
  const head = `\`${show(value)}\` is not a duration`;
  if (text.startsWith('-')) return `${head}: a duration cannot be negative (0s disables) ${units}`;
  if (/^\d+(\.\d+)?$/.test(text)) return `${head}: write ${text}s or ${text}ms ${units}`;
  const m = /^(\d+(?:\.\d+)?)\s*([A-Za-z]+)$/.exec(text);
  const unit = m ? DURATION_WORDS[m[2].toLowerCase()] : undefined;
  if (m && unit) return `${head}: write ${m[1]}${unit} ${units}`;
  return `${head}: write e.g. 250ms, 5s, 2m or 1h ${units}`;
}

/** Why `value` is not a size, echoing it: "`10 MB` is not a size: write 10MB (units B, KB, MB, GB)". */
export function sizeProblem(value: unknown): string {
  const units = '(units B, KB, MB, GB)';
  if (typeof value !== 'string' && typeof value !== 'number')
    return `expected a size such as 512KB or 10MB, got ${value === null ? 'nothing' : Array.isArray(value) ? 'a list' : typeof value === 'object' ? 'a mapping' : `${typeof value} ${JSON.stringify(value)}`}`;
  const text = String(value).trim();
  const head = `\`${show(value)}\` is not a size`;
  if (text.startsWith('-')) return `${head}: a size cannot be negative ${units}`;
  if (/^\d+(\.\d+)?$/.test(text)) return `${head}: write ${text}B, ${text}KB or ${text}MB ${units}`;
  const m = /^(\d+(?:\.\d+)?)\s*([A-Za-z]+)$/.exec(text);
  const unit = m ? SIZE_WORDS[m[2].toLowerCase()] : undefined;
  if (m && unit) return `${head}: write ${m[1]}${unit} ${units}`;
  return `${head}: write e.g. 512KB or 10MB ${units}`;
}
