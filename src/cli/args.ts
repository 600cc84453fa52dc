/** Small helpers shared by the CLI commands: strict flag parsing and one-line usage errors. */
import { type ParseArgsConfig, parseArgs } from 'node:util';

/** A mistake in how a command was called: printed as one line, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
  readonly exitCode = 2;
}

export function parseFlags<T extends NonNullable<ParseArgsConfig['options']>>(
  command: string,
  argv: string[],
  options: T,
  allowPositionals = false,
) {
  try {
    return parseArgs({
      args: argv,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals,
    });
  } catch (err) {
    const msg = (err as Error).message.split('\n')[0].replace(/\. To specify a positional.*$/, '');
    throw new UsageError(`${command}: ${msg} (see 'sluice ${command} --help')`);
  }
}
