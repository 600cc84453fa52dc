import { resolve } from 'node:path';
import { lintConfig } from '../../config/lint.ts';
import { loadConfigFile } from '../../config/load.ts';
import type { EffectiveConfig } from '../../config/resolve.ts';
import { startDemoUpstream } from '../../demo/demo-upstream.ts';
import { startSluice } from '../../main.ts';
import { createLogger, type Logger } from '../../observability/logger.ts';
import { parseFlags, UsageError } from '../args.ts';
import { hostPort, listenUrls, logListening, runUntilSignal, timeoutTable } from './shared.ts';

const HELP = `Usage: sluice start [-c sluice.yaml]

Runs the gateway from a config file. The access log (JSON lines) goes where access_log says
(stdout by default); operational messages go to stderr. SIGTERM/SIGINT drain in-flight requests
(up to shutdown_timeout) and exit 0; SIGHUP, POST /api/reload on the admin listener, and (with watch: true, the default) saving the
file reload it: in-flight requests keep their config; an invalid file is refused, logged with
file:line, and the running config stays.

Options:
  -c, --config FILE      config file (default ./sluice.yaml)
  -h, --help             this help`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags('start', argv, {
    config: { type: 'string', short: 'c', default: './sluice.yaml' },
    // Used by `npm start`: also run the demo upstream, on this port, in the same process.
    'with-demo-upstream': { type: 'string' },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const file = values.config as string;
  // SIGUSR1 reopens the access-log file (logrotate). Node starts its inspector on SIGUSR1 unless a
  // listener is installed (which takes the signal over; --disable-sigusr1 would block it entirely),
  // so the listener goes in first thing.
  let sluice: Awaited<ReturnType<typeof startSluice>> | undefined;
  process.on('SIGUSR1', () => sluice?.reopenLogs());
  const config = loadConfigFile(file);
  const logger = createLogger();
  let demo: Awaited<ReturnType<typeof startDemoUpstream>> | undefined;
  if (values['with-demo-upstream'] !== undefined) {
    const port = Number(values['with-demo-upstream'] || 9000);
    if (!Number.isInteger(port))
      throw new UsageError(`start: --with-demo-upstream needs a port, got '${values['with-demo-upstream']}'`);
    demo = await startDemoUpstream({ port });
  }
  sluice = await startSluice(config, {
    logger,
    configFile: resolve(file),
    onConfigLoaded: (next) => logLint(logger, next),
  });
  logLint(logger, config);
  // Signals are handled before the banner says the gateway listens: a SIGHUP sent as soon as it is
  // printed reloads instead of meeting the start-up handler that ignores it.
  process.removeAllListeners('SIGHUP'); // the start-up one (main.ts): from now on SIGHUP reloads
  const stopped = runUntilSignal(sluice, logger, () => sluice.reloadFromFile('SIGHUP'));
  const urls = listenUrls(config, sluice);
  const base = urls[0];
  process.stderr.write(
    `sluice listening on ${urls.join(', ')}` +
      (sluice.adminPort !== undefined
        ? `, admin on http://${hostPort(config.admin.listen.host, sluice.adminPort)}`
        : '') +
      `\n\n${timeoutTable(config)}\n\n`,
  );
  if (demo) {
    process.stderr.write(
      `demo upstream on ${demo.url}. Try:\n` +
        `  curl -i ${base}/fast\n` +
        `  curl -i '${base}/slow?ms=2000'         # slow but in time: a plain 200\n` +
        `  curl -i '${base}/slow?ms=20000'        # no answer within 5s: 202 + a job; poll its Location\n` +
        `  curl -i ${base}/hang                    # never answers: 504 naming the phase after 29s\n` +
        `  curl -i '${base}/stall?after=100'      # headers, then silence: the body is cut, never "complete"\n` +
        `  curl -i ${base}/timing                  # the upstream's Server-Timing, plus the gateway's\n` +
        (sluice.adminPort !== undefined
          ? `  curl -s http://${hostPort(config.admin.listen.host, sluice.adminPort)}/metrics   # Prometheus metrics (headroom, timeouts by phase)\n`
          : '') +
        '\n',
    );
  }
  logListening(logger, config, sluice, { command: 'start', config: file });
  const code = await stopped;
  await demo?.close();
  // Idle keep-alive sockets and unref'd timers must not keep a stopped gateway alive for seconds.
  process.exit(code);
}

/** The timeout-chain lint of `sluice check`, as log lines (the gateway starts anyway). */
function logLint(logger: Logger, config: EffectiveConfig): void {
  for (const f of lintConfig(config)) {
    const fields = { route: f.route, lint: f.level, code: f.code };
    if (f.level === 'error') logger.error(fields, f.message);
    else logger.warn(fields, f.message);
  }
}
