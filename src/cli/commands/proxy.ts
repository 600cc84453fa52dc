import { lintTimeouts } from '../../config/lint.ts';
import { ConfigError, formatPath } from '../../config/load.ts';
import { resolveConfig } from '../../config/resolve.ts';
import { configSchema } from '../../config/schema.ts';
import { startSluice } from '../../main.ts';
import { createLogger } from '../../observability/logger.ts';
import { parseFlags, UsageError } from '../args.ts';
import { hostPort, runUntilSignal, timeoutTable } from './shared.ts';

const HELP = `Usage: sluice proxy --to URL [--listen :8080] [--timeout 29s] [--async-after 5s] [--admin ADDR]

A gateway with one catch-all route in front of URL, no config file needed. Every phase timeout
keeps its default; --timeout sets the total budget. With --async-after, a request that has no
response headers by then gets 202 and a job to poll (/_sluice/jobs/…) while the call goes on
(jobs are kept in ./.sluice/sluice.db). No admin listener unless --admin is given.

Options:
  --to URL               upstream base URL (required), e.g. http://127.0.0.1:3000
  --listen ADDR          public listener (default :8080)
  --timeout DURATION     total budget per request (default 29s)
  --async-after DURATION answer 202 + a job when the upstream is slower than this (e.g. 5s)
  --store URL            where jobs live (default sqlite:./.sluice/sluice.db)
  --admin ADDR           also serve health and metrics on ADDR (e.g. 127.0.0.1:8081)
  --access-log DEST      stdout (default), stderr, off or a file
  -h, --help             this help`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags('proxy', argv, {
    to: { type: 'string' },
    listen: { type: 'string', default: ':8080' },
    timeout: { type: 'string', default: '29s' },
    admin: { type: 'string' },
    'async-after': { type: 'string' },
    store: { type: 'string' },
    'access-log': { type: 'string', default: 'stdout' },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (!values.to) throw new UsageError("proxy: --to URL is required (see 'sluice proxy --help')");
  const flagOf: Record<string, string> = {
    listen: '--listen',
    'routes.0.timeouts.total': '--timeout',
    'upstreams.upstream.targets.0': '--to',
    'admin.listen': '--admin',
    'routes.0.async.after': '--async-after',
    store: '--store',
  };
  const route: Record<string, unknown> = {
    name: 'default',
    match: { path: '/' },
    upstream: 'upstream',
    timeouts: { total: values.timeout },
  };
  if (values['async-after'] !== undefined) route.async = { mode: 'auto', after: values['async-after'] };
  const raw = {
    listen: values.listen,
    admin: { listen: values.admin ?? '127.0.0.1:0' },
    access_log: values['access-log'],
    ...(values.store === undefined ? {} : { store: values.store }),
    upstreams: { upstream: { targets: [values.to] } },
    routes: [route],
  };
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const key = issue.path.join('.');
    throw new UsageError(`proxy: ${flagOf[key] ?? formatPath(issue.path)}: ${issue.message}`);
  }
  let config: ReturnType<typeof resolveConfig>;
  try {
    config = resolveConfig(parsed.data);
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(`proxy: ${err.issues[0].message}`);
    throw err;
  }
  const errors = lintTimeouts(config).filter((f) => f.level === 'error');
  if (errors.length > 0) throw new UsageError(`proxy: ${errors[0].message}`);
  const logger = createLogger();
  const sluice = await startSluice(config, {
    logger,
    admin: values.admin !== undefined,
    source: 'sluice proxy',
  });
  process.stderr.write(
    `sluice proxy: http://${hostPort(config.listen.host, sluice.port)} → ${values.to}` +
      (sluice.adminPort !== undefined
        ? `, admin on http://${hostPort(config.admin.listen.host, sluice.adminPort)}`
        : '') +
      `\n\n${timeoutTable(config)}\n\n`,
  );
  // Idle keep-alive sockets must not keep a stopped gateway alive for seconds.
  process.exit(await runUntilSignal(sluice, logger));
}
