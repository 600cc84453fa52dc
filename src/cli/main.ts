/**
 * The `sluice` command line. Every command has --help; bad input prints one clear line and exits
 * non-zero, never a stack trace (set SLUICE_DEBUG=1 to see one).
 */
import { ConfigError } from '../config/load.ts';
import { UsageError } from './args.ts';

const COMMANDS: Record<
  string,
  { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number | undefined> }> }
> = {
  start: {
    summary: 'run the gateway from a config file (default ./sluice.yaml)',
    load: () => import('./commands/start.ts'),
  },
  proxy: {
    summary: 'one-liner gateway with one catch-all route, no file needed',
    load: () => import('./commands/proxy.ts'),
  },
  check: {
    summary: "validate a config and print every route's effective timeouts",
    load: () => import('./commands/check.ts'),
  },
  probe: {
    summary: 'phase timings, percentiles and headroom of an endpoint (DNS, connect, TLS, TTFB)',
    load: () => import('./commands/probe.ts'),
  },
  logs: {
    summary: '504 and timeout hot spots per endpoint from nginx, Kong, Sluice, ALB or API Gateway logs',
    load: () => import('./commands/logs.ts'),
  },
  'demo-upstream': {
    summary: 'a deliberately unreliable HTTP server for demos and tests',
    load: () => import('./commands/demo-upstream.ts'),
  },
};

const HELP = `sluice — an API gateway that makes "504 Gateway Timeout" a solved problem

Usage: sluice <command> [options]

Commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(15)} ${c.summary}`)
  .join('\n')}

Run 'sluice <command> --help' for a command's options. Docs: docs/ in the repository.`;

/** Commands that run until stopped: a SIGHUP must never kill them, not even while they start. */
const LONG_RUNNING = new Set(['start', 'proxy']);

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (LONG_RUNNING.has(name)) {
    // Until the command replaces it with its own (start: reload; proxy: a log line).
    process.on('SIGHUP', () => process.stderr.write(`sluice ${name}: SIGHUP during start-up ignored\n`));
  }
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(HELP);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-v') {
    const { createRequire } = await import('node:module');
    console.log(createRequire(import.meta.url)('../../package.json').version);
    return 0;
  }
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!command && name.startsWith('-'))
    throw new UsageError(`unknown option '${name}' (usage: sluice <command> [options]; see 'sluice --help')`);
  if (!command)
    throw new UsageError(`unknown command '${name}' (commands: ${Object.keys(COMMANDS).join(', ')})`);
  return (await (await command.load()).run(rest)) ?? 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (process.env.SLUICE_DEBUG) console.error(err);
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exitCode = 1;
    } else if (err instanceof UsageError) {
      console.error(`sluice: ${err.message}`);
      process.exitCode = err.exitCode;
    } else {
      const e = err as NodeJS.ErrnoException;
      const why =
        e.code === 'EADDRINUSE'
          ? `address already in use (${(e as { address?: string }).address}:${(e as { port?: number }).port})`
          : e.code === 'EACCES'
            ? `permission denied (${e.message})`
            : (e?.message ?? String(err));
      console.error(`sluice: ${why}`);
      process.exitCode = 1;
    }
  },
);
