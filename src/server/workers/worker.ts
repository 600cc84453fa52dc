/**
 * A worker process of an instance with `workers: N` (SPEC §10): a Gateway on the primary's ports
 * (SO_REUSEPORT: the kernel spreads new connections over every process's listening socket), with
 * its own access-log writer, upstream pools and response cache. What must be counted once per
 * instance is not done here: finished requests go to the primary in batches (metrics, windows,
 * alerts, live views), and the primary sends back config changes, purges and recent latency.
 *
 * The worker exits when it is told to (after draining), on SIGTERM/SIGINT (after draining; the
 * primary starts a new one unless the instance is stopping), and when the primary is gone (its IPC
 * channel closes: a worker never outlives its instance).
 */
import type { EffectiveConfig } from '../../config/resolve.ts';
import type { PeerMessage } from '../../jobs/sqlite-job-store.ts';
import { type AccessLogEntry, createAccessLog } from '../../observability/access-log.ts';
import { createLogger } from '../../observability/logger.ts';
import { openTunnels } from '../../proxy/tunnel.ts';
import { Gateway } from '../gateway.ts';
import { IpcRateLimiter } from './ipc-rate-limiter.ts';
import type { ToPrimary, ToWorker, WorkerSnapshot } from './protocol.ts';

/** Entries are sent when this many are waiting, or every BATCH_MS. */
const BATCH_SIZE = 256;
const BATCH_MS = 100;

function send(message: ToPrimary): Promise<void> {
  return new Promise((resolve) => {
    if (!process.connected) return resolve();
    process.send?.(message, undefined, {}, () => resolve());
  });
}

/**
 * The one listener of the IPC channel, attached at once: Node emits messages queued before a listener
 * existed all in one go, so a `reload` or `shutdown` sent right after `init` must be kept, not lost,
 * until the worker is ready to handle them.
 */
function inbox(): {
  init: Promise<Extract<ToWorker, { type: 'init' }>>;
  handle(h: (m: ToWorker) => void): void;
} {
  let handler: ((m: ToWorker) => void) | undefined;
  const early: ToWorker[] = [];
  let resolveInit: (m: Extract<ToWorker, { type: 'init' }>) => void = () => {};
  let rejectInit: (err: Error) => void = () => {};
  const init = new Promise<Extract<ToWorker, { type: 'init' }>>((resolve, reject) => {
    resolveInit = resolve;
    rejectInit = reject;
  });
  process.on('message', (m: ToWorker) => {
    if (m.type === 'init') resolveInit(m);
    else if (handler) handler(m);
    else early.push(m);
  });
  process.once('disconnect', () =>
    rejectInit(new Error('the primary process went away before the worker started')),
  );
  return {
    init,
    handle(h) {
      handler = h;
      for (const m of early.splice(0)) h(m);
    },
  };
}

export async function runWorker(): Promise<void> {
  if (process.send === undefined) throw new Error('a worker must be started by its primary (no IPC channel)');
  // The primary handles SIGHUP (and tells every worker); a terminal's Ctrl-C reaches the whole
  // process group, and the primary's shutdown message does the rest.
  process.on('SIGHUP', () => {});
  // Also the primary's to handle (it tells every worker); a listener keeps Node's inspector off it.
  process.on('SIGUSR1', () => {});
  const messages = inbox();
  const init = await messages.init;
  const logger = createLogger().child({ worker: init.index });
  let config: EffectiveConfig = init.config;
  const accessLog = createAccessLog(config.accessLog, config.accessLogFormat, true);

  let batch: AccessLogEntry[] = [];
  const flush = () => {
    if (batch.length === 0) return Promise.resolve();
    const entries = batch;
    batch = [];
    return send({ type: 'entries', entries });
  };
  const batchTimer = setInterval(() => void flush(), BATCH_MS);
  batchTimer.unref();

  let gateway: Gateway;
  let receivePeer: ((msg: PeerMessage) => void) | undefined;
  // Rate-limit buckets live in the primary (shared by every process of the instance).
  const limiter = new IpcRateLimiter((request) => void send({ type: 'rate', request }));
  try {
    gateway = new Gateway(config, {
      accessLog,
      logger,
      onRequest:
        process.env.SLUICE_METRICS === 'off'
          ? undefined
          : (entry) => {
              if (batch.push(entry) >= BATCH_SIZE) void flush();
            },
      reusePort: true,
      // The primary settled what a previous run left at its start; a worker only recovers jobs
      // whose lease ran out (a worker that died), like any other instance of a shared store.
      exclusiveRecovery: false,
      queueDeliveries: init.queueDeliveries,
      rateLimiter: limiter,
      jobPeers: {
        publish: (msg) => void send({ type: 'job-peer', msg }),
        onMessage: (receive) => {
          receivePeer = receive;
        },
      },
    });
    await gateway.listenOn(init.ports);
  } catch (err) {
    await send({ type: 'failed', error: (err as Error).message });
    process.exit(1);
  }

  const snapshot = (): WorkerSnapshot => {
    const c = gateway.cache;
    return {
      inflight: gateway.inflight,
      tunnels: openTunnels,
      cache: {
        results: [...c.results].map(([route, m]) => [route, [...m]]),
        entries: c.store.counters.entries,
        bytes: c.store.counters.bytes,
        evictions: c.store.counters.evictions,
      },
    };
  };
  const snapshotTimer = setInterval(() => void send({ type: 'snapshot', snapshot: snapshot() }), 1_000);
  snapshotTimer.unref();

  let stopping = false;
  const stop = async (graceMs: number, why: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ why, inflight: gateway.inflight }, 'worker draining');
    clearInterval(snapshotTimer);
    await gateway.close(graceMs);
    clearInterval(batchTimer);
    await flush();
    await send({ type: 'bye' });
    process.exit(0);
  };

  messages.handle((m: ToWorker) => {
    switch (m.type) {
      case 'reload':
        config = m.config;
        gateway.reload(config);
        break;
      case 'job-peer':
        receivePeer?.(m.msg);
        break;
      case 'rate-result':
        limiter.answer(m.seq, m.decision);
        break;
      case 'reopen-logs':
        accessLog.reopen?.();
        break;
      case 'purge':
        gateway.cache.store.purge(m.route, m.path);
        break;
      case 'recent':
        for (const [name, p50, p5] of m.routes) {
          const rt = gateway.runtime.routes.find((r) => r.name === name);
          if (rt) {
            rt.recent.p50 = p50;
            rt.recent.p5 = p5;
          }
        }
        break;
      case 'shutdown':
        void stop(m.graceMs, 'the instance is stopping');
        break;
    }
  });
  process.on('disconnect', () => void stop(config.shutdownTimeout, 'the primary process is gone'));
  // Gone while this worker was starting (its disconnect came before the listener above).
  if (!process.connected) void stop(config.shutdownTimeout, 'the primary process is gone');
  process.on('SIGTERM', () => void stop(config.shutdownTimeout, 'SIGTERM'));
  process.on('SIGINT', () => void stop(config.shutdownTimeout, 'SIGINT'));
  await send({ type: 'ready', pid: process.pid });
}
