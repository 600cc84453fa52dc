import { type LintFinding, lintConfig } from '../../config/lint.ts';
import { closest, loadConfigFile } from '../../config/load.ts';
import type { ChainConfig } from '../../config/resolve.ts';
import { durationProblem, parseDuration } from '../../config/units.ts';
import { parseFlags, UsageError } from '../args.ts';
import { timeoutTable } from './shared.ts';

const HELP = `Usage: sluice check [-c sluice.yaml] [--chain client=60s,apigw,lb=60s,app=25s]

Validates a config file as 'sluice start' would (everything start refuses, check refuses: store,
admin token, access_log path, ...) without opening any port, prints the effective timeouts of every
route (route > upstream > defaults), then lints it: phase timeouts that do not work together (ttfb
above or below total, retries that cannot fit the total, async 'after' not below total, unbounded
routes), routes that can never match (after a catch-all, shadowed, a host with a port), and the
timeout chain around Sluice when told it (chain: in the file, or --chain): each layer must give up
after everything inside it, client > API Gateway (29s) > load balancer > route total > app.

Every finding has a code in brackets; silence one where it is intended with
lint: { ignore: [code] } on its route, or at the top level for the whole file.

Exits 1 with one line per problem (file:line: key: message) when the config is invalid, 1 when the
lint finds an error, 0 otherwise (warnings alone exit 0).

Options:
  -c, --config FILE      config file (default ./sluice.yaml)
  --chain LIST           the timeouts around Sluice, overriding the file's chain: key by key:
                         client=DURATION, lb=DURATION, app=DURATION, apigw (an AWS API Gateway
                         in front, 29s)
  -h, --help             this help`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags('check', argv, {
    config: { type: 'string', short: 'c', default: './sluice.yaml' },
    chain: { type: 'string' },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const chain = values.chain === undefined ? {} : parseChain(values.chain);
  const file = values.config as string;
  const config = loadConfigFile(file);
  const findings = lintConfig(config, chain);
  const errors = findings.filter((f) => f.level === 'error').length;
  const warnings = findings.length - errors;
  const counts = `${config.routes.length} route(s), ${Object.keys(config.upstreams).length} upstream(s)`;
  const verdict =
    errors > 0
      ? `${errors} error(s)${warnings > 0 ? `, ${warnings} warning(s)` : ''}`
      : `ok${warnings > 0 ? ` with ${warnings} warning(s)` : ''}`;
  console.log(`${file}: ${verdict}, ${counts}\n`);
  console.log(timeoutTable(config));
  if (findings.length > 0) console.log(`\n${findings.map(formatFinding).join('\n')}`);
  return errors > 0 ? 1 : 0;
}

export function formatFinding(f: LintFinding): string {
  return `${f.level}[${f.code}]: ${f.message}`;
}

const CHAIN_KEYS = ['client', 'apigw', 'lb', 'app'] as const;

/** `client=60s,lb=60s,app=25s,apigw` → the chain; a bad entry is a usage error naming it. */
export function parseChain(text: string): Partial<ChainConfig> {
  const out: { -readonly [K in keyof ChainConfig]?: ChainConfig[K] } = {};
  for (const entry of text.split(',').map((e) => e.trim())) {
    if (entry === '') continue;
    const eq = entry.indexOf('=');
    const key = eq === -1 ? entry : entry.slice(0, eq);
    const value = eq === -1 ? undefined : entry.slice(eq + 1);
    if (!(CHAIN_KEYS as readonly string[]).includes(key)) {
      const hint = closest(key, CHAIN_KEYS);
      throw new UsageError(
        `check: --chain: unknown layer '${key}'${hint ? ` (did you mean '${hint}'?)` : ''} (layers: client, apigw, lb, app)`,
      );
    }
    if (key === 'apigw') {
      if (value !== undefined && value !== 'true' && value !== 'false')
        throw new UsageError(`check: --chain: apigw takes no value (or true/false), got '${value}'`);
      out.apigw = value !== 'false';
      continue;
    }
    const ms = value === undefined ? undefined : parseDuration(value);
    if (ms === undefined)
      throw new UsageError(
        `check: --chain: ${key}: ${value === undefined ? `needs a duration, e.g. ${key}=60s` : durationProblem(value)}`,
      );
    out[key as 'client' | 'lb' | 'app'] = ms;
  }
  return out;
}
