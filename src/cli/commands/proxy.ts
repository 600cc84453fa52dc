import { lintConfig } from '../../config/lint.ts';
import { ConfigError, loadConfigObject } from '../../config/load.ts';
import { BUILTIN_TIMEOUTS } from '../../config/resolve.ts';
import { formatDuration, parseDuration } from '../../config/units.ts';
import { startSluice } from '../../main.ts';
import { createLogger } from '../../observability/logger.ts';
import { parseFlags, UsageError } from '../args.ts';
import { hostPort, logListening, runUntilSignal, timeoutTable } from './shared.ts';

const HELP = `Usage: sluice proxy --to URL [--listen :8080] [--timeout 29s] [--async-after 5s] [--admin ADDR]

A gateway with one catch-all route in front of URL, no config file needed. --timeout is the
budget of a request: it sets total and raises ttfb and read to at least the same value, so that a
slow answer is cut by total at that time, not earlier by the 30s ttfb default (--timeout 0s turns
total off: ttfb 30s and read 60s then bound the wait). With --async-after, a request that has no
response headers by then gets 202 and a job to poll (/_sluice/jobs/…) while the call goes on
(jobs are kept in ./.sluice/sluice.db). No admin listener unless --admin is given. SIGTERM/SIGINT
drain and exit; SIGHUP is ignored (there is no config file to reload).

Options:
  --to URL               upstream base URL (required), e.g. http://127.0.0.1:3000
  --listen ADDR          public listener (default :8080)
  --timeout DURATION     budget per request: total, with ttfb and read raised to it (default 29s)
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
    'routes[0].timeouts.total': '--timeout',
    'upstreams.upstream.targets[0]': '--to',
    'admin.listen': '--admin',
    'routes[0].async.after': '--async-after',
    store: '--store',
    access_log: '--access-log',
  };
  const route: Record<string, unknown> = {
    name: 'default',
    match: { path: '/' },
    upstream: 'upstream',
    timeouts: proxyTimeouts(values.timeout as string),
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
  const config = (() => {
    try {
      return loadConfigObject(raw);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      const lines = err.issues.map(
        (i) => `proxy: ${flagOf[i.path] ?? i.path}${i.path ? ': ' : ''}${i.message}`,
      );
      throw new UsageError(lines.join('\nsluice: '));
    }
  })();
  const errors = lintConfig(config).filter((f) => f.level === 'error');
  if (errors.length > 0) throw new UsageError(`proxy: ${errors[0].message}`);
  const logger = createLogger();
  // A SIGHUP must never kill it (Node's default): from here on it says why it is ignored.
  process.removeAllListeners('SIGHUP');
  process.on('SIGHUP', () =>
    logger.warn({ signal: 'SIGHUP' }, 'SIGHUP ignored: sluice proxy has no config file to reload'),
  );
  // SIGUSR1 reopens an --access-log file (logrotate), as with start; the listener also keeps Node's
  // inspector from starting on it.
  let running: Awaited<ReturnType<typeof startSluice>> | undefined;
  process.on('SIGUSR1', () => running?.reopenLogs());
  const sluice = await startSluice(config, {
    logger,
    admin: values.admin !== undefined,
    source: 'sluice proxy',
  });
  running = sluice;
  process.stderr.write(
    `sluice proxy: http://${hostPort(config.listen.host, sluice.port)} → ${values.to}` +
      (sluice.adminPort !== undefined
        ? `, admin on http://${hostPort(config.admin.listen.host, sluice.adminPort)}`
        : '') +
      `\n\n${timeoutTable(config)}\n\n`,
  );
  logListening(logger, config, sluice, { command: 'proxy', to: values.to });
  // Idle keep-alive sockets must not keep a stopped gateway alive for seconds.
  process.exit(await runUntilSignal(sluice, logger));
}

/**
 * --timeout is what the user means by "the budget of a request": total, with ttfb and read raised to
 * at least the same value so that neither cuts a slow answer before total does.
 */
function proxyTimeouts(timeout: string): Record<string, string> {
  const ms = parseDuration(timeout);
  if (ms === undefined || ms === 0) return { total: timeout };
  const raise = (builtin: number) => formatDuration(Math.max(builtin, ms));
  return { total: timeout, ttfb: raise(BUILTIN_TIMEOUTS.ttfb), read: raise(BUILTIN_TIMEOUTS.read) };
}
