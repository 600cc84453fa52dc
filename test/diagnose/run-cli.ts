/** Runs the real `sluice` CLI (bin/sluice.js on this Node) as a child process, for the diagnosis tests. */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../bin/sluice.js', import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.SLUICE_DEBUG;
  delete env.NODE_OPTIONS;
  env.NODE_COMPILE_CACHE ??= join(tmpdir(), 'sluice-test-compile-cache');
  return env;
}

/** `sluice ...args` to completion; `stdin` is written to its standard input (else it is closed). */
export async function sluice(args: string[], opts: { stdin?: Buffer | string; timeoutMs?: number } = {}) {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: childEnv(),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin.on('error', () => {});
  child.stdin.end(opts.stdin);
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr } satisfies CliResult;
}
