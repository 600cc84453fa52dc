/** Text helpers shared by `sluice probe` and `sluice logs`: durations, tables, sparklines. */

/** 0.42 → "0.42ms", 42.5 → "42.5ms", 250 → "250ms", 1500 → "1.50s", 29000 → "29.0s", 120000 → "120s". */
export function ms(v: number | null | undefined): string {
  if (v === null || v === undefined || Number.isNaN(v)) return '-';
  if (v < 1) return `${v.toFixed(2)}ms`;
  if (v < 100) return `${(Math.round(v * 10) / 10).toString()}ms`;
  if (v < 1000) return `${Math.round(v)}ms`;
  if (v < 10_000) return `${(v / 1000).toFixed(2)}s`;
  if (v < 100_000) return `${(v / 1000).toFixed(1)}s`;
  return `${Math.round(v / 1000)}s`;
}

/**
 * 12345 → "12,345". Safe integers by hand: the first toLocaleString of a process loads ICU's number
 * formatting (~25 ms of `sluice logs` on a small file).
 */
export function count(n: number): string {
  if (!Number.isSafeInteger(n)) return n.toLocaleString('en-US');
  const digits = String(Math.abs(n));
  let out = digits.slice(0, ((digits.length - 1) % 3) + 1);
  for (let i = out.length; i < digits.length; i += 3) out += `,${digits.slice(i, i + 3)}`;
  return n < 0 ? `-${out}` : out;
}

/** 0.1234 → "12%", 0.004 → "0.4%", 0 → "0%". */
export function percent(share: number | null): string {
  if (share === null) return '-';
  const p = share * 100;
  if (p === 0) return '0%';
  if (p < 1) return `${p.toFixed(1)}%`;
  return `${Math.round(p)}%`;
}

/** Aligned columns: numbers (cells of `right` columns) right-aligned, others left; two spaces between. */
export function table(rows: string[][], right: ReadonlySet<number> = new Set()): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i]?.length ?? 0)));
  return rows
    .map((r) =>
      r
        .map((c, i) => (right.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i])))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

const BARS = '▁▂▃▄▅▆▇█';

/** One character per value: blank for 0, ▁…█ scaled to the largest value. */
export function sparkline(values: readonly number[]): string {
  const max = Math.max(0, ...values);
  if (max === 0) return ' '.repeat(values.length);
  return values
    .map((v) =>
      v <= 0 ? ' ' : BARS[Math.min(BARS.length - 1, Math.floor((v / max) * (BARS.length - 1e-9)))],
    )
    .join('');
}
