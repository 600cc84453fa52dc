/** Text output of the diagnosis commands: aligned tables, a progress bar and a sparkline. */

/** Left-aligns the first column, right-aligns the others (numbers). */
export function table(rows: string[][], leftColumns = 1): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => (i < leftColumns ? c.padEnd(widths[i]) : c.padStart(widths[i])))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** 1234.5 → "1235 ms", 45.67 → "45.7 ms", 12345 → "12.3 s"; null → "-". */
export function ms(v: number | null | undefined): string {
  if (v === null || v === undefined) return '-';
  if (v >= 10_000) return `${(v / 1000).toFixed(1)} s`;
  if (v >= 100) return `${Math.round(v)} ms`;
  return `${v.toFixed(1)} ms`;
}

const BLOCKS = ' ▁▂▃▄▅▆▇█';

/** One character per value, scaled to the largest. */
export function sparkline(values: readonly number[]): string {
  const max = Math.max(1, ...values);
  return values.map((v) => (v === 0 ? BLOCKS[0] : BLOCKS[Math.max(1, Math.ceil((v / max) * 8))])).join('');
}

/** A progress bar on stderr, only when stderr is a terminal. */
export function progress(label: string): { update(done: number, total: number): void; end(): void } {
  const tty = process.stderr.isTTY === true;
  let last = 0;
  return {
    update(done, total) {
      if (!tty) return;
      const now = Date.now();
      if (done !== total && now - last < 50) return;
      last = now;
      const width = 30;
      const full = Math.round((done / total) * width);
      process.stderr.write(`\r${label} [${'#'.repeat(full)}${' '.repeat(width - full)}] ${done}/${total}`);
    },
    end() {
      if (tty) process.stderr.write('\r\x1b[K');
    },
  };
}
