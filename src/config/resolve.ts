/**
 * Turns the validated file into the effective config the gateway runs: every route carries its own
 * timeouts and limits with precedence route > upstream > defaults > built-in, resolved once at load and
 * frozen, so nothing is looked up per request.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { createSecureContext } from 'node:tls';
import { buildBlockList } from '../access/client-address.ts';
import { type AccessSettings, resolveAccess } from '../access/settings.ts';
import { redisStoreProblem } from '../jobs/redis-job-store.ts';
import { logFormatProblem } from '../observability/log-format.ts';
import { type AlertCondition, parseAlertCondition } from './alert-condition.ts';
import { ConfigError, type ConfigIssue } from './errors.ts';
import type { LintCode } from './lint-codes.ts';
import type { ConfigFile, TimeoutsInput } from './schema.ts';
import { checkHeaders, type EffectiveShape, resolveShape, type ShapeLayer } from './shape-config.ts';

/** Milliseconds per phase; 0 disables that phase's timeout. */
export interface Timeouts {
  readonly connect: number;
  readonly send: number;
  readonly ttfb: number;
  readonly read: number;
  readonly total: number;
}

export const BUILTIN_TIMEOUTS: Timeouts = Object.freeze({
  connect: 5_000,
  send: 30_000,
  ttfb: 30_000,
  read: 60_000,
  total: 29_000,
});

export interface ListenAddress {
  /** undefined: every interface. */
  readonly host: string | undefined;
  readonly port: number;
}

/** A certificate and its key, as files (read again when they change). */
export interface TlsCertFiles {
  readonly cert: string;
  readonly key: string;
}

/** One public listener: plain HTTP, or HTTPS with one or more certificates (chosen by SNI). */
export interface Listener {
  readonly address: ListenAddress;
  readonly tls: readonly TlsCertFiles[] | undefined;
}

export interface EffectiveTarget {
  /** `http://127.0.0.1:9001` — for logs and the admin API only, never for clients. */
  readonly origin: string;
  /** Path prefix of the target URL without trailing slash ('' when none). */
  readonly basePath: string;
  readonly weight: number;
}

type File = ConfigFile;
type FileUpstream = File['upstreams'][string];
type FileRoute = File['routes'][number];

export type BalanceKind = FileUpstream['balance'];
export type HealthConfig = NonNullable<FileUpstream['health']>;
export type OutlierConfig = NonNullable<FileUpstream['outlier']>;
export type CircuitConfig = NonNullable<FileUpstream['circuit']>;
export type RetryConfig = NonNullable<FileRoute['retry']>;
export type AsyncConfig = NonNullable<FileRoute['async']>;

export interface EffectiveUpstream {
  readonly name: string;
  readonly targets: readonly EffectiveTarget[];
  readonly maxConnections: number | undefined;
  readonly balance: BalanceKind;
  readonly health: HealthConfig | undefined;
  readonly outlier: OutlierConfig | undefined;
  readonly circuit: CircuitConfig | undefined;
  readonly maxConcurrent: number | undefined;
  readonly queueTimeout: number;
  /** TLS towards https:// targets: `ca` is the PEM text of the file named in the config. */
  readonly tls?: {
    readonly ca: string | undefined;
    readonly servername: string | undefined;
    readonly insecure: boolean;
  };
}

export interface AlertRule {
  readonly name: string;
  readonly when: string;
  readonly condition: AlertCondition;
  readonly for: number;
  readonly routes: readonly string[] | undefined;
}

export interface EffectiveRoute {
  readonly name: string;
  readonly match: {
    /** Normalised prefix without a trailing slash ('' matches everything). */
    readonly path: string;
    readonly host: string | undefined;
    readonly methods: readonly string[] | undefined;
    readonly headers: Readonly<Record<string, string>> | undefined;
  };
  readonly upstream: string;
  readonly stripPrefix: boolean;
  readonly timeouts: Timeouts;
  /** Where each phase's budget comes from (shown by the admin API). */
  readonly timeoutLayers: Readonly<Record<keyof Timeouts, TimeoutLayer>>;
  readonly maxBody: number;
  readonly retry: RetryConfig | undefined;
  /** undefined when async.mode is off. */
  readonly async: AsyncConfig | undefined;
  /** Lint findings silenced on this route (`lint.ignore`); absent: none. */
  readonly lintIgnore?: readonly LintCode[];
  /** The response cache (SPEC §6), when the route has one. */
  readonly cache?: CacheConfig;
  /** WebSocket and other Upgrade requests are tunnelled (SPEC §3), with this idle timeout (ms, 0 = none). */
  readonly websocket?: { readonly idle: number };
  /** Response compression, when on (the route's `compress`, else `defaults.compress`). */
  readonly compress?: CompressConfig;
  /** Header edits, Host and path rewrite (SPEC §13), when the route has any. */
  readonly shape?: EffectiveShape;
  /** allow/deny, auth and rate_limit (SPEC §13; route, else defaults), credentials read at load. */
  readonly access?: AccessSettings;
}

export interface CacheConfig {
  /** ms; freshness for responses that give none. */
  readonly ttl: number | undefined;
  readonly staleWhileRevalidate: number | undefined;
  readonly staleIfError: number | undefined;
  readonly maxEntry: number;
  readonly varyLimit: number;
}

export interface CompressConfig {
  /** Media types (lower case, without parameters); `text/*` style wildcards allowed. */
  readonly types: readonly string[];
  readonly minSize: number;
  readonly algorithms: readonly ('br' | 'zstd' | 'gzip')[];
}

/** Compressed unless `compress.types` says otherwise; never text/event-stream (SPEC §6). */
export const DEFAULT_COMPRESS_TYPES: readonly string[] = Object.freeze([
  'text/*',
  'application/json',
  'application/*+json',
  'application/javascript',
  'application/x-javascript',
  'application/xml',
  'application/*+xml',
  'image/svg+xml',
]);

function compressFrom(v: ConfigFile['defaults']['compress']): CompressConfig | undefined {
  if (v === undefined || v === false) return undefined;
  if (v === true)
    return Object.freeze({
      types: DEFAULT_COMPRESS_TYPES,
      minSize: 1024,
      algorithms: Object.freeze(['br', 'zstd', 'gzip'] as const),
    });
  return Object.freeze({
    types: Object.freeze((v.types ?? DEFAULT_COMPRESS_TYPES).map((t) => t.toLowerCase())),
    minSize: v.min_size,
    algorithms: Object.freeze([...v.algorithms]),
  });
}

/** The timeouts around Sluice (ms), for the chain lint; `defaults.client_timeout` is chain.client. */
export interface ChainConfig {
  readonly client: number | undefined;
  readonly apigw: boolean;
  readonly lb: number | undefined;
  readonly app: number | undefined;
}

export interface EffectiveConfig {
  /** The first public listener's address (every one is in `listeners`). */
  readonly listen: ListenAddress;
  readonly listeners: readonly Listener[];
  readonly admin: { readonly listen: ListenAddress; readonly token: string | undefined };
  /** stdout, stderr, off or a file path. */
  readonly accessLog: string;
  /** json, combined, or an nginx-style template (SPEC §13). */
  readonly accessLogFormat: string;
  readonly shutdownTimeout: number;
  /** Processes serving the listener (`auto` resolved to the number of cores). */
  readonly workers: number;
  /** Bytes for every route cache together. */
  readonly cacheSize: number;
  /** Reload the config file when it changes. */
  readonly watch: boolean;
  readonly client: ConfigFile['client'];
  readonly upstreams: Readonly<Record<string, EffectiveUpstream>>;
  readonly routes: readonly EffectiveRoute[];
  readonly chain: ChainConfig;
  /** Lint findings silenced everywhere (top-level `lint.ignore`). */
  readonly lintIgnore: readonly LintCode[];
  readonly store: string;
  readonly jobs: File['jobs'];
  readonly alerts: {
    readonly webhook: string | undefined;
    /** Signs webhook bodies (Sluice-Signature) when set. */
    readonly secret: string | undefined;
    readonly window: number;
    /** Requests a window must hold before latency and rate rules judge it. */
    readonly minRequests: number;
    readonly rules: readonly AlertRule[];
  };
  /**
   * The settings as written (after `${ENV}` interpolation, before units and defaults): what a live
   * change (admin API merge patch) applies to, so that it is validated exactly like the file.
   */
  readonly raw?: unknown;
}

/** Why a certificate and key cannot serve TLS (unreadable, not PEM, not a pair), or undefined. */
export function certProblem(pair: TlsCertFiles): string | undefined {
  let cert: string;
  let key: string;
  try {
    cert = readFileSync(pair.cert, 'utf8');
  } catch (err) {
    return `cert ${pair.cert}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : 'cannot read it'}`;
  }
  try {
    key = readFileSync(pair.key, 'utf8');
  } catch (err) {
    return `key ${pair.key}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : 'cannot read it'}`;
  }
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    const why = /mismatch/i.test((err as Error).message)
      ? 'the key does not match the certificate'
      : (err as Error).message;
    return `cert ${pair.cert} with key ${pair.key}: ${why}`;
  }
  return undefined;
}

function formatKey(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

/** Whether a listen host is loopback only (undefined = every interface: not loopback). */
export function isLoopback(host: string | undefined): boolean {
  return host !== undefined && LOOPBACK.test(host);
}

export function parseListen(text: string): ListenAddress {
  const i = text.lastIndexOf(':');
  let host: string | undefined = text.slice(0, i);
  if (host.startsWith('[')) host = host.slice(1, -1);
  return Object.freeze({ host: host === '' ? undefined : host, port: Number(text.slice(i + 1)) });
}

/** The layer a route's phase budget comes from; `live` is an admin API overlay. */
export type TimeoutLayer = 'route' | 'upstream' | 'defaults' | 'live';

function layersOf(upstream: TimeoutsInput | undefined, route: TimeoutsInput | undefined) {
  const out: Record<string, TimeoutLayer> = {};
  for (const k of Object.keys(BUILTIN_TIMEOUTS)) {
    const key = k as keyof TimeoutsInput;
    out[k] = route?.[key] !== undefined ? 'route' : upstream?.[key] !== undefined ? 'upstream' : 'defaults';
  }
  return Object.freeze(out as Record<keyof Timeouts, TimeoutLayer>);
}

function mergeTimeouts(...layers: (TimeoutsInput | undefined)[]): Timeouts {
  const out: Record<string, number> = { ...BUILTIN_TIMEOUTS };
  for (const layer of layers) {
    if (!layer) continue;
    for (const [k, v] of Object.entries(layer)) if (v !== undefined && k !== 'idle') out[k] = v;
  }
  return Object.freeze(out as unknown as Timeouts);
}

export function resolveConfig(
  file: ConfigFile,
  lineOf: (path: PropertyKey[]) => number | undefined = () => undefined,
): EffectiveConfig {
  const issues: ConfigIssue[] = [];
  /** A PEM file named by the config, read now: an unreadable or non-PEM file is a config error. */
  const readPem = (path: string | undefined, upstream: string): string | undefined => {
    if (path === undefined) return undefined;
    const where = ['upstreams', upstream, 'tls', 'ca'];
    try {
      const text = readFileSync(path, 'utf8');
      if (!text.includes('-----BEGIN CERTIFICATE-----')) {
        issues.push({
          path: where.join('.'),
          line: lineOf(where),
          message: `${path} holds no PEM certificate`,
        });
        return undefined;
      }
      return text;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'file not found' : `cannot read it (${code})`;
      issues.push({ path: where.join('.'), line: lineOf(where), message: `${path}: ${why}` });
      return undefined;
    }
  };
  const upstreams: Record<string, EffectiveUpstream> = {};
  for (const [name, u] of Object.entries(file.upstreams)) {
    upstreams[name] = Object.freeze({
      name,
      targets: Object.freeze(
        u.targets.map((t) => {
          const url = new URL(typeof t === 'string' ? t : t.url);
          return Object.freeze({
            origin: url.origin,
            basePath: url.pathname.replace(/\/+$/, ''),
            weight: typeof t === 'string' ? 1 : t.weight,
          });
        }),
      ),
      maxConnections: u.max_connections,
      balance: u.balance,
      health: u.health && Object.freeze({ ...u.health }),
      outlier: u.outlier && Object.freeze({ ...u.outlier }),
      circuit: u.circuit && Object.freeze({ ...u.circuit }),
      maxConcurrent: u.max_concurrent,
      queueTimeout: u.queue_timeout,
      tls:
        u.tls &&
        Object.freeze({
          ca: readPem(u.tls.ca, name),
          servername: u.tls.servername,
          insecure: u.tls.insecure,
        }),
    });
  }

  // Shaping (SPEC §13): header names checked once per layer, merged per route below.
  const defaultsLayer: ShapeLayer = {
    path: ['defaults'],
    headers: file.defaults.headers,
    host: file.defaults.host,
  };
  checkHeaders(defaultsLayer, issues, lineOf);
  const upstreamLayers = new Map<string, ShapeLayer>();
  for (const [name, u] of Object.entries(file.upstreams)) {
    const layer: ShapeLayer = { path: ['upstreams', name], headers: u.headers, host: u.host };
    checkHeaders(layer, issues, lineOf);
    upstreamLayers.set(name, layer);
  }

  const seen = new Set<string>();
  const routes = file.routes.map((r, i) => {
    if (seen.has(r.name)) {
      issues.push({
        path: `routes[${i}].name`,
        line: lineOf(['routes', i, 'name']),
        message: `duplicate route name "${r.name}"`,
      });
    }
    seen.add(r.name);
    const u = file.upstreams[r.upstream];
    if (!u) {
      const known = Object.keys(file.upstreams);
      issues.push({
        path: `routes[${i}].upstream`,
        line: lineOf(['routes', i, 'upstream']),
        message: `no upstream named "${r.upstream}"${known.length ? ` (defined: ${known.join(', ')})` : ''}`,
      });
    }
    const prefix = r.match.path.replace(/\/+$/, '');
    const routeLayer: ShapeLayer = { path: ['routes', i], headers: r.headers, host: r.host };
    checkHeaders(routeLayer, issues, lineOf);
    const shape = resolveShape(
      [
        defaultsLayer,
        ...(upstreamLayers.has(r.upstream) ? [upstreamLayers.get(r.upstream) as ShapeLayer] : []),
        routeLayer,
      ],
      { rewrite: r.rewrite, stripPrefix: r.strip_prefix, path: ['routes', i] },
      issues,
      lineOf,
    );
    return Object.freeze({
      name: r.name,
      match: Object.freeze({
        path: prefix,
        host: r.match.host?.toLowerCase(),
        methods: r.match.methods ? Object.freeze([...r.match.methods]) : undefined,
        headers: r.match.headers
          ? Object.freeze(
              Object.fromEntries(Object.entries(r.match.headers).map(([k, v]) => [k.toLowerCase(), v])),
            )
          : undefined,
      }),
      upstream: r.upstream,
      stripPrefix: r.strip_prefix,
      timeouts: mergeTimeouts(file.defaults.timeouts, u?.timeouts, r.timeouts),
      timeoutLayers: layersOf(u?.timeouts, r.timeouts),
      maxBody: r.max_body ?? u?.max_body ?? file.defaults.max_body,
      retry:
        r.retry && Object.freeze({ ...r.retry, on: Object.freeze([...r.retry.on]) as RetryConfig['on'] }),
      async:
        r.async && r.async.mode !== 'off'
          ? Object.freeze({
              ...r.async,
              callback: r.async.callback && Object.freeze({ ...r.async.callback }),
            })
          : undefined,
      lintIgnore: Object.freeze([...(r.lint?.ignore ?? [])]),
      cache:
        r.cache &&
        Object.freeze({
          ttl: r.cache.ttl,
          staleWhileRevalidate: r.cache.stale_while_revalidate,
          staleIfError: r.cache.stale_if_error,
          maxEntry: r.cache.max_entry,
          varyLimit: r.cache.vary_limit,
        }),
      compress: compressFrom(r.compress ?? file.defaults.compress),
      websocket: r.websocket
        ? Object.freeze({
            idle: r.timeouts?.idle ?? u?.timeouts?.idle ?? file.defaults.timeouts.idle ?? 300_000,
          })
        : undefined,
      shape,
      access: resolveAccess(r, file.defaults, ['routes', i], lineOf, issues),
    } satisfies EffectiveRoute);
  });
  const routeNames = new Set(file.routes.map((r) => r.name));
  const rules = file.alerts.rules.map((rule, i): AlertRule => {
    const condition = parseAlertCondition(rule.when);
    if (typeof condition === 'string') {
      issues.push({
        path: `alerts.rules[${i}].when`,
        line: lineOf(['alerts', 'rules', i, 'when']),
        message: condition,
      });
    }
    for (const [j, r] of (rule.routes ?? []).entries()) {
      if (!routeNames.has(r)) {
        issues.push({
          path: `alerts.rules[${i}].routes[${j}]`,
          line: lineOf(['alerts', 'rules', i, 'routes', j]),
          message: `no route named "${r}"`,
        });
      }
    }
    return Object.freeze({
      name: rule.name,
      when: rule.when,
      condition: condition as AlertCondition,
      for: rule.for,
      routes: rule.routes && Object.freeze([...rule.routes]),
    });
  });
  // What start would refuse, refused here so that `sluice check` refuses it too (with file:line).
  const listeners = (typeof file.listen === 'string' ? [file.listen] : file.listen).map((l, i): Listener => {
    if (typeof l === 'string') return Object.freeze({ address: parseListen(l), tls: undefined });
    const pairs = l.tls === undefined ? undefined : Array.isArray(l.tls) ? l.tls : [l.tls];
    pairs?.forEach((pair, j) => {
      const where =
        typeof file.listen === 'string'
          ? ['listen']
          : ['listen', i, 'tls', ...(Array.isArray(l.tls) ? [j] : [])];
      const problem = certProblem(pair);
      if (problem) issues.push({ path: formatKey(where), line: lineOf(where), message: problem });
    });
    return Object.freeze({
      address: parseListen(l.address),
      tls: pairs && Object.freeze(pairs.map((p) => Object.freeze({ ...p }))),
    });
  });
  file.client.trusted_proxies.forEach((c, i) => {
    try {
      buildBlockList([c]);
    } catch (err) {
      const where = ['client', 'trusted_proxies', i];
      issues.push({ path: formatKey(where), line: lineOf(where), message: (err as Error).message });
    }
  });
  const admin = parseListen(file.admin.listen);
  if (!file.admin.token && !isLoopback(admin.host)) {
    issues.push({
      path: 'admin.listen',
      line: lineOf(['admin', 'listen']),
      message: `${file.admin.listen} is not loopback: set admin.token (e.g. token: "\${SLUICE_ADMIN_TOKEN}"), or listen on 127.0.0.1`,
    });
  }
  const redisProblem = /^rediss?:\/\//.test(file.store) ? redisStoreProblem(file.store) : undefined;
  if (redisProblem) issues.push({ path: 'store', line: lineOf(['store']), message: redisProblem });
  // jobs.lease (SPEC §10): renewed every third of it, so below 1 s renewals would flood the store.
  if (file.jobs.lease < 1_000) {
    issues.push({
      path: 'jobs.lease',
      line: lineOf(['jobs', 'lease']),
      message: `${file.jobs.lease}ms is too short: a lease is at least 1s (it is renewed every third of it)`,
    });
  }
  const clientAlias = file.defaults.client_timeout;
  if (clientAlias !== undefined && file.chain?.client !== undefined && clientAlias !== file.chain.client) {
    issues.push({
      path: 'defaults.client_timeout',
      line: lineOf(['defaults', 'client_timeout']),
      message: 'is an alias of chain.client, which is set to another value: keep only chain.client',
    });
  }
  const accessLog =
    typeof file.access_log === 'string' ? { path: file.access_log, format: 'json' } : file.access_log;
  const formatProblem = logFormatProblem(accessLog.format);
  if (formatProblem) {
    const where = typeof file.access_log === 'string' ? ['access_log'] : ['access_log', 'format'];
    issues.push({ path: where.join('.'), line: lineOf(where), message: formatProblem });
  }
  if (issues.length > 0) throw new ConfigError('', issues);

  return Object.freeze({
    listen: listeners[0].address,
    listeners,
    admin: Object.freeze({ listen: admin, token: file.admin.token || undefined }),
    accessLog: accessLog.path,
    accessLogFormat: accessLog.format,
    shutdownTimeout: file.shutdown_timeout,
    workers: file.workers === 'auto' ? availableParallelism() : file.workers,
    cacheSize: file.cache_size,
    watch: file.watch,
    client: Object.freeze({
      ...file.client,
      trusted_proxies: Object.freeze([...file.client.trusted_proxies]) as string[],
    }),
    upstreams: Object.freeze(upstreams),
    routes: Object.freeze(routes),
    chain: Object.freeze({
      client: file.chain?.client ?? clientAlias,
      apigw: file.chain?.apigw ?? false,
      lb: file.chain?.lb,
      app: file.chain?.app,
    }),
    lintIgnore: Object.freeze([...(file.lint?.ignore ?? [])]),
    store: file.store,
    jobs: Object.freeze({ ...file.jobs }),
    alerts: Object.freeze({
      webhook: file.alerts.webhook,
      secret: file.alerts.secret,
      window: file.alerts.window,
      minRequests: file.alerts.min_requests,
      rules: Object.freeze(rules),
    }),
  });
}
