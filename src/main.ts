/**
 * Wiring only: builds a running Sluice (gateway + admin listener + access log) from an effective
 * config, and takes it down again in reverse order.
 */

import { LocalRateLimiter } from './access/rate-limit.ts';
import { rateLimitStoreErrors } from './access/redis-rate-limiter.ts';
import { AdminServer } from './admin/admin-server.ts';
import { adminApi, type ReloadResult } from './admin/api.ts';
import { dashboardRoutes } from './admin/dashboard.ts';
import { EventHub } from './admin/events.ts';
import { ConfigError, type ConfigIssue } from './config/errors.ts';
import { loadConfigFile } from './config/load.ts';
import type { EffectiveConfig } from './config/resolve.ts';
import { type ConfigWatcher, watchConfigFile } from './config/watch.ts';
import type { JobStore } from './jobs/job-store.ts';
import type { PeerMessage } from './jobs/sqlite-job-store.ts';
import type { AccessLogEntry } from './observability/access-log.ts';
import { type AccessLog, createAccessLog } from './observability/access-log.ts';
import { headroomLimit } from './observability/headroom.ts';
import { type Logger, silentLogger } from './observability/logger.ts';
import {
  createObservability,
  isJobEnd,
  type Observability,
  type ObservabilityProviders,
  observabilityRoutes,
} from './observability/observability.ts';
import { openTunnels } from './proxy/tunnel.ts';
import { Gateway } from './server/gateway.ts';
import { WorkerPool } from './server/workers/pool.ts';
import type { WorkerSnapshot } from './server/workers/protocol.ts';
import type { CircuitState } from './upstream/circuit-breaker.ts';

export interface SluiceOptions {
  accessLog?: AccessLog;
  logger?: Logger;
  /** Start the admin listener (default true). */
  admin?: boolean;
  /** Use this job store instead of opening `config.store` (tests). */
  jobStore?: JobStore;
  /** Where the config came from, for `GET /api/config` (a file path; default "inline"). */
  source?: string;
  /**
   * The file the config was loaded from: `POST /api/reload`, `reloadFromFile()` and (with `watch`)
   * changes to it reload from here.
   */
  configFile?: string;
  /** Called with every config applied from the file after the first (e.g. to log its lint). */
  onConfigLoaded?: (config: EffectiveConfig) => void;
}

export interface Sluice {
  readonly gateway: Gateway;
  readonly admin: AdminServer | undefined;
  /** Metrics, latency windows and alerts. */
  readonly observability: Observability;
  /** Actual ports (useful with port 0): the first public listener's, and every one's in config order. */
  readonly port: number;
  readonly ports: readonly number[];
  readonly adminPort: number | undefined;
  /** The other processes of the instance (`workers` > 1), started once the primary listens. */
  readonly workers: WorkerPool | undefined;
  reload(config: EffectiveConfig): void;
  /** A reload was refused (invalid file): counted, and told to live views; the running config stays. */
  reloadFailed(error: string): void;
  /**
   * Reads `configFile` again and applies it if valid (in-flight requests keep their config); logs
   * and tells live views either way. `trigger` says why (SIGHUP, watch, POST /api/reload).
   */
  reloadFromFile(trigger: string): ReloadResult;
  /** Reopens the access-log file by its path (SIGUSR1, for logrotate). */
  reopenLogs(): void;
  close(graceMs?: number): Promise<void>;
}

export async function startSluice(config: EffectiveConfig, options: SluiceOptions = {}): Promise<Sluice> {
  const logger = options.logger ?? silentLogger;
  const accessLog =
    options.accessLog ?? createAccessLog(config.accessLog, config.accessLogFormat, config.workers > 1);
  const inflight = { gateway: undefined as Gateway | undefined };
  // With workers, the instance's gauges are this process's plus each worker's last snapshot.
  let pool: WorkerPool | undefined;
  const fromWorkers = (f: (s: WorkerSnapshot) => number) => {
    let n = 0;
    for (const snap of pool?.snapshots ?? []) n += f(snap);
    return n;
  };
  const observability = createObservability(config, {
    logger,
    gateway: {
      get inflight() {
        return (inflight.gateway?.inflight ?? 0) + fromWorkers((s) => s.inflight);
      },
    },
  });
  // Live views (GET /api/events); publishing is free while nobody watches.
  const events = new EventHub();
  const record = observability.onRequest;
  const onRequest = (e: AccessLogEntry) => {
    record(e);
    if (events.size === 0) return;
    if (isJobEnd(e.outcome))
      events.publish('job', {
        job: e.job,
        route: e.route,
        outcome: e.outcome,
        status: e.status,
        phase: e.phase,
        error: e.error,
        total_ms: e.total,
        request_id: e.request_id,
      });
    else
      events.request(() => ({
        route: e.route,
        method: e.method,
        path: e.path,
        status: e.status,
        outcome: e.outcome,
        phase: e.phase,
        total_ms: e.total,
        request_id: e.request_id,
        job: e.job,
      }));
  };
  // A shared SQLite store's messages from the workers, to this process's store.
  let receivePeer: ((msg: PeerMessage) => void) | undefined;
  // With workers and no Redis, every process takes its rate-limit tokens from this one's buckets.
  const sharedLimiter = config.workers > 1 ? new LocalRateLimiter() : undefined;
  // Requests finished by each process (0: this one), while there are workers.
  const perWorker: number[] = [0];
  const gateway = new Gateway(config, {
    accessLog,
    logger,
    // SLUICE_METRICS=off skips per-request metric recording (to measure its cost; docs/metrics.md).
    onRequest:
      process.env.SLUICE_METRICS === 'off'
        ? undefined
        : config.workers > 1
          ? (e) => {
              if (!isJobEnd(e.outcome)) perWorker[0]++;
              onRequest(e);
            }
          : onRequest,
    onUpstreamEvent: (event) => {
      observability.onUpstreamEvent(event);
      events.publish(event.kind === 'circuit' ? 'circuit' : 'health', event);
    },
    jobStore: options.jobStore,
    reusePort: config.workers > 1,
    rateLimiter: sharedLimiter,
    queueDeliveries: config.workers > 1 ? queueShare(config) : undefined,
    jobPeers:
      config.workers > 1
        ? {
            publish: (msg) => pool?.broadcast({ type: 'job-peer', msg }),
            onMessage: (receive) => {
              receivePeer = receive;
            },
          }
        : undefined,
  });
  observability.alerts.onNotify = (n) => events.publish('alert', n);
  inflight.gateway = gateway;
  const cacheFigures = () => {
    const c = gateway.cache;
    const own = { results: c.results, capacity: c.store.capacity, ...c.store.counters };
    return pool === undefined ? own : withWorkersCache(own, pool.snapshots);
  };
  let draining = false;
  const admin =
    options.admin === false
      ? undefined
      : new AdminServer({
          listen: config.admin.listen,
          token: config.admin.token,
          ready: () => !draining && gateway.server.listening,
          // Plain proxying goes on while the job store is down: readiness stays, the store is named.
          readiness: () => (gateway.jobs ? { job_store: gateway.jobs.storeUp ? 'up' : 'down' } : {}),
        });
  let loadedAt = new Date();
  let resetLive = () => {};
  const source = options.source ?? options.configFile ?? 'inline';
  let watcher: ConfigWatcher | undefined;
  // Follows the file while the running config says `watch: true` (a reload can turn it on or off).
  const syncWatch = (cfg: EffectiveConfig) => {
    const file = options.configFile;
    if (file === undefined || cfg.watch === (watcher !== undefined)) return;
    if (!cfg.watch) {
      watcher?.close();
      watcher = undefined;
      return;
    }
    watcher = watchConfigFile(file, () => reloadFromFile('watch'), {
      onError: (err) => logger.warn({ file, error: err.message }, 'config file watch stopped'),
    });
  };
  const reload = (next: EffectiveConfig, trigger?: string) => {
    syncWatch(next);
    gateway.reload(next);
    pool?.broadcast({ type: 'reload', config: next });
    observability.reload(next);
    loadedAt = new Date();
    resetLive();
    events.publish('config', { result: 'applied', source, trigger, loaded_at: loadedAt.toISOString() });
  };
  const reloadFailed = (error: string, trigger?: string, issues: readonly ConfigIssue[] = []) => {
    observability.reloadFailed();
    events.publish('config', { result: 'refused', source, trigger, error, issues });
  };
  const reloadFromFile = (trigger: string): ReloadResult => {
    const file = options.configFile;
    if (file === undefined) {
      const error = 'this gateway was not started from a config file';
      return { result: 'refused', source, error, issues: [] };
    }
    let next: EffectiveConfig;
    try {
      next = loadConfigFile(file);
    } catch (err) {
      const error = (err as Error).message;
      const issues = err instanceof ConfigError ? err.issues : [];
      reloadFailed(error, trigger, issues);
      logger.error({ file, trigger, error }, 'config reload refused; the running config stays');
      return { result: 'refused', source, error, issues };
    }
    watcher?.seen();
    reload(next, trigger);
    logger.info({ file, trigger }, 'config reloaded');
    options.onConfigLoaded?.(next);
    return { result: 'applied', source, loadedAt };
  };
  if (admin) {
    for (const [path, handler] of Object.entries(observabilityRoutes(observability)))
      admin.route(path, handler);
    const api = adminApi({
      runtime: () => gateway.runtime,
      observability,
      source: () => ({ source, loadedAt }),
      reload: options.configFile === undefined ? undefined : () => reloadFromFile('POST /api/reload'),
      purgeCache: (route, path) => {
        pool?.broadcast({ type: 'purge', route, path });
        return gateway.cache.store.purge(route, path);
      },
      cacheResults: (route) => cacheFigures().results.get(route),
      jobs: () => {
        const jobs = gateway.jobs;
        return jobs ? { store: jobs.store, prefix: jobs.prefix, counts: () => jobs.counts() } : undefined;
      },
      // A live change: new requests get it, requests in flight keep theirs; the next reload from the
      // file replaces it.
      apply: (next, change) => {
        gateway.reload(next);
        pool?.broadcast({ type: 'reload', config: next });
        observability.reload(next);
        logger.info({ change }, 'live config change applied');
        events.publish('config', { result: 'applied', source: change, loaded_at: new Date().toISOString() });
      },
    });
    resetLive = api.resetLive;
    for (const [path, handler] of Object.entries(api.exact)) admin.route(path, handler);
    for (const [prefix, handler] of Object.entries(api.prefixes)) admin.routePrefix(prefix, handler);
    admin.route('/api/events', events.handle);
    for (const [path, handler] of Object.entries(dashboardRoutes())) admin.publicRoute(path, handler);
  }
  let port: number;
  let adminPort: number | undefined;
  try {
    // A listener that cannot bind must not leave the job store, its timers or file watchers running.
    port = (await gateway.listen()).port;
    if (config.workers > 1) {
      // The workers bind the ports this process got (a config's port 0 included), after it settled
      // what a previous run left in the job store.
      pool = new WorkerPool({
        count: config.workers - 1,
        config: () => gateway.config,
        ports: gateway.ports,
        queueDeliveries: queueShare(config),
        logger,
        onJobPeer: (msg) => receivePeer?.(msg),
        rateLimiter: sharedLimiter,
        onEntries: (entries, index) => {
          for (const e of entries) {
            if (!isJobEnd(e.outcome)) perWorker[index] = (perWorker[index] ?? 0) + 1;
            onRequest(e);
          }
        },
      });
      await pool.start();
    }
    adminPort = admin ? (await admin.listen()).port : undefined;
  } catch (err) {
    await pool?.stop(0);
    await gateway.close(0);
    throw err;
  }
  observability.start();
  observability.setProviders({
    viewers: () => ({ connected: events.size, dropped: events.dropped }),
    tunnels: () => openTunnels + fromWorkers((s) => s.tunnels),
    rateLimitStoreErrors: () => rateLimitStoreErrors,
    jobStoreUp: gateway.jobs ? () => (gateway.jobs?.storeUp ? 1 : 0) : undefined,
    cache: cacheFigures,
    workers: pool
      ? () => ({
          processes: 1 + (pool?.running ?? 0),
          restarts: pool?.restarts ?? 0,
          requests: perWorker,
        })
      : undefined,
    jobs: gateway.jobs ? () => (gateway.jobs as NonNullable<typeof gateway.jobs>).counts() : undefined,
    circuits: () => {
      const out: Record<string, CircuitState> = {};
      for (const [name, u] of gateway.runtime.upstreams) {
        const state = u.circuitState();
        if (state !== undefined) out[name] = state;
      }
      return out;
    },
    *targets() {
      for (const [name, u] of gateway.runtime.upstreams) {
        for (const t of u.targets) {
          // Ejected (passive) counts as not healthy for the gauge, like a failed health check.
          yield { upstream: name, target: t.origin + t.basePath, healthy: t.healthy && !t.ejected };
        }
      }
    },
  });
  // Each route's recent p50 and p5, refreshed every second: the 202's Retry-After, and load shedding
  // (a request whose remaining budget is below the p5 would almost surely time out).
  const p50Timer = setInterval(() => {
    for (const rt of gateway.runtime.routes) {
      rt.recent.p50 = observability.window(rt.name)?.p50 ?? 0;
      rt.recent.p5 = observability.percentile(rt.name, 0.05);
    }
    pool?.broadcast({
      type: 'recent',
      routes: gateway.runtime.routes.map((rt) => [rt.name, rt.recent.p50, rt.recent.p5]),
    });
  }, 1_000);
  p50Timer.unref();
  // The `stats` event: every route's figures, once a second, while someone watches.
  const statsTimer = setInterval(() => {
    if (events.size === 0) return;
    const routes = gateway.runtime.routes.map((rt) => {
      const w = observability.window(rt.name);
      const limit = headroomLimit(rt.timeouts);
      return {
        route: rt.name,
        rps: observability.figures(rt.name)?.rps ?? 0,
        p50_ms: w?.p50 ?? 0,
        p95_ms: w?.p95 ?? 0,
        p99_ms: w?.p99 ?? 0,
        headroom: w && limit && w.count > 0 ? w.p95 / limit.ms : null,
      };
    });
    events.publish('stats', { at: new Date().toISOString(), inflight: gateway.inflight, routes });
  }, 1_000);
  statsTimer.unref();
  syncWatch(config);
  return {
    gateway,
    admin,
    observability,
    port,
    ports: gateway.ports,
    adminPort,
    get workers() {
      return pool;
    },
    reload: (next) => reload(next),
    reloadFailed: (error) => reloadFailed(error),
    reloadFromFile,
    reopenLogs: () => {
      accessLog.reopen?.();
      pool?.broadcast({ type: 'reopen-logs' });
      logger.info({ file: config.accessLog }, 'access log reopened (SIGUSR1)');
    },
    async close(graceMs) {
      draining = true;
      watcher?.close();
      watcher = undefined;
      clearInterval(p50Timer);
      clearInterval(statsTimer);
      events.close();
      await Promise.all([gateway.close(graceMs), pool?.stop(graceMs ?? gateway.config.shutdownTimeout)]);
      await observability.stop();
      await admin?.close();
    },
  };
}

/** Queue-mode deliveries per process: the instance's `jobs.workers` shared out over its processes. */
function queueShare(config: EffectiveConfig): number {
  return Math.max(1, Math.ceil(config.jobs.workers / config.workers));
}

type CacheFigures = NonNullable<ReturnType<NonNullable<ObservabilityProviders['cache']>>>;

/** The response cache's figures of the whole instance: every process has its own cache. */
function withWorkersCache(own: CacheFigures, snapshots: readonly WorkerSnapshot[]): CacheFigures {
  const results = new Map<string, Map<string, number>>();
  const add = (route: string, result: string, n: number) => {
    let m = results.get(route);
    if (m === undefined) results.set(route, (m = new Map()));
    m.set(result, (m.get(result) ?? 0) + n);
  };
  for (const [route, m] of own.results) for (const [result, n] of m) add(route, result, n);
  let { entries, bytes, evictions, capacity } = own;
  for (const s of snapshots) {
    for (const [route, m] of s.cache.results) for (const [result, n] of m) add(route, result, n);
    entries += s.cache.entries;
    bytes += s.cache.bytes;
    evictions += s.cache.evictions;
    capacity += own.capacity;
  }
  return { results, entries, bytes, evictions, capacity };
}
