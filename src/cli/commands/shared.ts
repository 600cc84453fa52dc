/** What `start` and `proxy` share: effective-timeout table, running until a signal, graceful exit. */
import type { EffectiveConfig } from '../../config/resolve.ts';
import { formatDuration, formatSize } from '../../config/units.ts';
import type { Sluice } from '../../main.ts';
import type { Logger } from '../../observability/logger.ts';

/** The effective timeouts of every route, as a table (printed by `check` and `start`). */
export function timeoutTable(config: EffectiveConfig): string {
  const rows = [
    ['route', 'match', 'upstream', 'connect', 'send', 'ttfb', 'read', 'total', 'max_body', 'async'],
  ];
  for (const r of config.routes) {
    const t = r.timeouts;
    const match = [r.match.methods?.join(',') ?? '', r.match.host ?? '', `${r.match.path || '/'}`]
      .filter(Boolean)
      .join(' ');
    rows.push([
      r.name,
      match,
      r.upstream,
      ...[t.connect, t.send, t.ttfb, t.read, t.total].map((ms) => (ms === 0 ? 'off' : formatDuration(ms))),
      formatSize(r.maxBody),
      r.async
        ? `${r.async.mode}${r.async.mode === 'queue' ? '' : ` after ${formatDuration(r.async.after)}`}`
        : 'off',
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  return rows
    .map((row) =>
      row
        .map((c, i) => c.padEnd(widths[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function hostPort(host: string | undefined, port: number): string {
  const h =
    host === undefined || host === '0.0.0.0' || host === '::'
      ? 'localhost'
      : host.includes(':')
        ? `[${host}]`
        : host;
  return `${h}:${port}`;
}

/** Runs until SIGTERM/SIGINT, then drains in-flight requests (bounded) and resolves with exit code 0. */
export function runUntilSignal(sluice: Sluice, logger: Logger, onReload?: () => void): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        logger.warn({ signal }, 'second signal: exiting now');
        process.exit(1);
      }
      stopping = true;
      logger.info(
        { signal, inflight: sluice.gateway.inflight },
        'shutting down: draining in-flight requests',
      );
      sluice.close().then(
        () => {
          logger.info('stopped');
          resolve(0);
        },
        (err: Error) => {
          logger.error({ err: err.message }, 'error while stopping');
          resolve(1);
        },
      );
    };
    // `on`, not `once`: a second signal must reach `stop` (exit 1 at once) instead of killing the process.
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    if (onReload) process.on('SIGHUP', onReload);
  });
}
