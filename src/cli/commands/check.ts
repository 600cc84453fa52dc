import { lintTimeouts } from '../../config/lint.ts';
import { loadConfigFile } from '../../config/load.ts';
import { parseFlags } from '../args.ts';
import { timeoutTable } from './shared.ts';

const HELP = `Usage: sluice check [-c sluice.yaml]

Validates a config file and prints the effective timeouts of every route (route > upstream >
defaults), then lints the timeout chain (ttfb or connect above total, retries that cannot fit the
total, async 'after' not below total, totals above defaults.client_timeout, unbounded routes).
Exits 1 with one line per problem (file:line: key: message) when the config is invalid, and 1 when
the lint finds an error (warnings alone exit 0).

Options:
  -c, --config FILE      config file (default ./sluice.yaml)
  -h, --help             this help`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags('check', argv, {
    config: { type: 'string', short: 'c', default: './sluice.yaml' },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const file = values.config as string;
  const config = loadConfigFile(file);
  console.log(
    `${file}: ok, ${config.routes.length} route(s), ${Object.keys(config.upstreams).length} upstream(s)\n`,
  );
  console.log(timeoutTable(config));
  const findings = lintTimeouts(config);
  if (findings.length > 0) console.log(`\n${findings.map((f) => `${f.level}: ${f.message}`).join('\n')}`);
  return findings.some((f) => f.level === 'error') ? 1 : 0;
}
