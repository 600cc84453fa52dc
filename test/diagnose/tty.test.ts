/**
 * What the diagnosis commands draw only for a person at a terminal: `sluice logs`' minute-by-minute
 * sparkline of 504s and `sluice probe`'s progress bar. Run under a real pseudo-terminal (util-linux
 * `script`), and piped, where neither may appear (they would garble files and CI logs).
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { startHttpServer } from '../helpers.ts';
import { BIN, childEnv, sluice } from './run-cli.ts';

const hasScript = (() => {
  try {
    execFileSync('script', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

/** Runs `sluice ...args` with stdin, stdout and stderr on a pseudo-terminal; returns what it drew. */
async function onTty(args: string[]): Promise<string> {
  const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  const command = [process.execPath, BIN, ...args].map(quote).join(' ');
  // Asynchronous: the probe's server runs in this process.
  const { stdout } = await promisify(execFile)('script', ['-qec', command, '/dev/null'], {
    env: { ...childEnv(), COLUMNS: '120', LINES: '40' },
    encoding: 'utf8',
    timeout: 30_000,
  });
  return stdout;
}

/** An nginx combined log: /orders/{id} 504s over five minutes, rising then falling, and some 200s. */
function nginxLog(dir: string): string {
  const lines: string[] = [];
  const per = [1, 4, 9, 3, 0, 2];
  per.forEach((n, minute) => {
    const at = `02/Dec/2026:10:0${minute}:15 +0000`;
    for (let i = 0; i < n; i++)
      lines.push(`10.0.0.${i} - - [${at}] "GET /orders/${1000 + i} HTTP/1.1" 504 167 "-" "curl/8.5.0"`);
    for (let i = 0; i < 5; i++)
      lines.push(`10.0.1.${i} - - [${at}] "GET /health HTTP/1.1" 200 2 "-" "kube-probe/1.30"`);
  });
  const file = join(dir, 'access.log');
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

describe('terminal-only output', { skip: !hasScript && 'util-linux script is not installed' }, () => {
  test('sluice logs: a sparkline of 504s per minute on a terminal, none when piped', async () => {
    const file = nginxLog(mkdtempSync(join(tmpdir(), 'sluice-tty-')));
    const drawn = await onTty(['logs', file]);
    assert.match(drawn, /504s per minute, 2026-12-02 10:00 → 10:05 UTC \(one mark = 1 min\):/);
    // One mark per minute, scaled to the peak (9 at 10:02), blank where there were none (10:04).
    const row = /\/orders\/:id\s+\|(.{6})\|/u.exec(drawn);
    assert.ok(row, drawn);
    const marks = [...row[1]];
    assert.equal(marks[2], '█', 'the peak minute is the tallest mark');
    assert.equal(marks[4], ' ', 'a minute without 504s is blank');
    assert.ok(marks[0] < marks[1] && marks[1] < marks[2], `rising: ${row[1]}`);

    const piped = await sluice(['logs', file]);
    assert.equal(piped.code, 0);
    assert.match(piped.stdout, /\/orders\/:id/);
    assert.doesNotMatch(piped.stdout, /504s per minute|[▁▂▃▄▅▆▇█]/);
  });

  test('sluice probe: a progress bar on a terminal, none when piped', async (t) => {
    const server = await startHttpServer((_req, res) => {
      setTimeout(() => res.end('ok'), 20);
    });
    t.after(() => server.server.close());
    const drawn = await onTty(['probe', server.url, '-n', '5']);
    assert.match(drawn, /probing \[#+ *\] \d\/5/);
    assert.match(drawn, /total/);

    const piped = await sluice(['probe', server.url, '-n', '5']);
    assert.equal(piped.code, 0);
    assert.doesNotMatch(piped.stderr + piped.stdout, /probing \[/);
  });
});
