/** What `start` and `proxy` share: effective-timeout table, running until a signal, graceful exit. */
import { createRequire } from 'node:module';
import type { EffectiveConfig } from '../../config/resolve.ts';
import { formatDuration, formatSize } from '../../config/units.ts';
import type { Sluice } from '../../main.ts';
import type { Logger } from '../../observability/logger.ts';

/** The effective timeouts of every route, as a table (printed by `check` and `start`). */
export function timeoutTable(config: EffectiveConfig): string {
  // The path sent upstream, when any route changes it (strip_prefix or rewrite, SPEC §13).
  const paths = config.routes.some((r) => r.stripPrefix || r.shape?.rewrite);
  const rows = [
    [
      'route',
      'match',
      ...(paths ? ['rewrite'] : []),
      'upstream',
      'connect',
      'send',
      'ttfb',
      'read',
      'total',
      'max_body',
      'async',
    ],
  ];
  for (const r of config.routes) {
    const t = r.timeouts;
    const match = describeMatch(r.match);
    rows.push([
      r.name,
      match,
      ...(paths ? [describeRewrite(r)] : []),
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

/** What a route does to the path: `/api → /v2`, `^/v1/(.*)$ → /api/$1`, `strip /api`, or `-`. */
export function describeRewrite(r: EffectiveConfig['routes'][number]): string {
  const rw = r.shape?.rewrite;
  if (rw !== undefined)
    return 'prefix' in rw ? `${r.match.path || '/'} → ${rw.prefix}` : `${rw.regex} → ${rw.to}`;
  return r.stripPrefix ? `strip ${r.match.path || '/'}` : '-';
}

/** A route's match as one cell: `GET,POST api.example.com /api x-tenant=acme`. */
export function describeMatch(m: EffectiveConfig['routes'][number]['match']): string {
  return [
    m.methods?.join(',') ?? '',
    m.host ?? '',
    m.path || '/',
    ...Object.entries(m.headers ?? {}).map(([k, v]) => `${k}=${v}`),
  ]
    .filter(Boolean)
    .join(' ');
}

/** Every public listener as a URL (https:// for TLS ones), with its actual port. */
export function listenUrls(config: EffectiveConfig, sluice: Sluice): string[] {
  return config.listeners.map(
    (l, i) => `${l.tls ? 'https' : 'http'}://${hostPort(l.address.host, sluice.ports[i] ?? l.address.port)}`,
  );
}

/** The one structured "listening" line of the operational log, for log collectors and supervisors. */
export function logListening(
  logger: Logger,
  config: EffectiveConfig,
  sluice: Sluice,
  extra: Record<string, unknown>,
): void {
  logger.info(
    {
      ...extra,
      listen: listenUrls(config, sluice)[0],
      listeners: listenUrls(config, sluice),
      admin:
        sluice.adminPort === undefined
          ? null
          : `http://${hostPort(config.admin.listen.host, sluice.adminPort)}`,
      routes: config.routes.length,
      upstreams: Object.keys(config.upstreams).length,
      pid: process.pid,
      version: VERSION,
    },
    'listening',
  );
}

const VERSION: string = createRequire(import.meta.url)('../../../package.json').version;

export function hostPort(host: string | undefined, port: number): string {
  const h =
    host === undefined || host === '0.0.0.0' || host === '::'
      ? 'localhost'
      : host.includes(':')
        ? `[${host}]`
        : host;
  return `${h}:${port}`;
}

/**
 * Runs until SIGTERM/SIGINT, then drains in-flight requests (bounded) and resolves with exit code 0.
 * `onHangup` handles SIGHUP (a reload); a command without one must handle SIGHUP itself, or Node
 * dies of it.
 */
export function runUntilSignal(sluice: Sluice, logger: Logger, onHangup?: () => void): Promise<number> {
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
    if (onHangup) process.on('SIGHUP', onHangup);
  });
}
