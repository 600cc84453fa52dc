/**
 * Active health checks (SPEC §6): every `interval`, a GET of `path` on each target (on its origin: the
 * target URL's path prefix is not added). A 2xx or 3xx answer, headers and body, within `timeout` is a
 * success; anything else (another status, refused, reset, timeout) is a failure. `unhealthy_after`
 * failures in a row mark a target unhealthy, `healthy_after` successes in a row healthy again. Targets
 * start healthy, and the first probe runs at `start()`.
 *
 * Probes go through their own undici Agent, one connection per origin and a fresh connection per probe
 * (`reset`), never through the traffic pool: a probe must not wait behind queued traffic, must not
 * reuse a connection the server is about to close on keep-alive timeout (a false failure), and a new
 * connection tests that the target still accepts connections. Probes of one target never overlap: the
 * next starts `interval` after the previous one started, or when it ends if it took longer. Timers are
 * unref'd, so health checks never keep the process alive.
 */
import { Agent, request } from 'undici';
import type { HealthConfig } from '../config/resolve.ts';

/** Least time between the end of one probe of a target and the start of the next. */
const MIN_GAP_MS = 10;

export interface HealthCheckTarget {
  readonly origin: string;
}

export type HealthChangeListener<T> = (target: T, healthy: boolean) => void;

interface ProbeState<T> {
  readonly target: T;
  readonly url: string;
  healthy: boolean;
  /** Consecutive successes (when unhealthy) or failures (when healthy). */
  streak: number;
  timer: NodeJS.Timeout | undefined;
  inflight: AbortController | undefined;
}

export class HealthChecker<T extends HealthCheckTarget> {
  readonly #config: HealthConfig;
  readonly #onChange: HealthChangeListener<T>;
  readonly #states: ProbeState<T>[];
  #agent: Agent | undefined;
  #running = false;
  /** Bumped by every start() and stop(), so a probe of an earlier run never records or reschedules. */
  #run = 0;

  constructor(config: HealthConfig, targets: readonly T[], onChange: HealthChangeListener<T>) {
    this.#config = config;
    this.#onChange = onChange;
    this.#states = targets.map((target) => ({
      target,
      url: target.origin + config.path,
      healthy: true,
      streak: 0,
      timer: undefined,
      inflight: undefined,
    }));
  }

  /** Starts probing every target (first probe now). Idempotent. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#run++;
    const timeout = this.#config.timeout;
    this.#agent = new Agent({
      connections: 1,
      pipelining: 1,
      // Backstops; the probe's own timer aborts first.
      connect: { timeout: timeout > 0 ? timeout + 1_000 : 0 },
      headersTimeout: timeout > 0 ? timeout + 1_000 : 0,
      bodyTimeout: timeout > 0 ? timeout + 1_000 : 0,
    });
    for (const s of this.#states) void this.#probe(s);
  }

  /** Stops every timer and aborts probes in flight. No state change is reported afterwards. */
  stop(): void {
    if (!this.#running) return;
    this.#running = false;
    this.#run++;
    for (const s of this.#states) {
      if (s.timer !== undefined) clearTimeout(s.timer);
      s.timer = undefined;
      s.inflight?.abort();
      s.inflight = undefined;
    }
    this.#agent?.destroy().catch(() => {});
    this.#agent = undefined;
  }

  isHealthy(target: T): boolean {
    return this.#states.find((s) => s.target === target)?.healthy ?? true;
  }

  async #probe(s: ProbeState<T>): Promise<void> {
    s.timer = undefined;
    const agent = this.#agent;
    const run = this.#run;
    if (!this.#running || agent === undefined) return;
    const started = performance.now();
    const ac = new AbortController();
    s.inflight = ac;
    const timeout = this.#config.timeout;
    const timer = timeout > 0 ? setTimeout(() => ac.abort(), timeout) : undefined;
    timer?.unref();
    let ok = false;
    try {
      const res = await request(s.url, {
        method: 'GET',
        dispatcher: agent,
        signal: ac.signal,
        reset: true,
        headers: { 'user-agent': 'sluice-health-check', accept: '*/*' },
      });
      await res.body.dump({ limit: 64 * 1024, signal: ac.signal });
      ok = res.statusCode >= 200 && res.statusCode < 400 && !ac.signal.aborted;
    } catch {
      ok = false;
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      s.inflight = undefined;
    }
    if (run !== this.#run) return; // stopped (and maybe restarted) while the probe ran
    this.#record(s, ok);
    // The floor only guards against `interval: 0s` (which the schema accepts) turning into a busy loop.
    const wait = Math.max(MIN_GAP_MS, this.#config.interval - (performance.now() - started));
    s.timer = setTimeout(() => void this.#probe(s), wait);
    s.timer.unref();
  }

  #record(s: ProbeState<T>, ok: boolean): void {
    if (ok === s.healthy) {
      s.streak = 0;
      return;
    }
    s.streak++;
    const needed = s.healthy ? this.#config.unhealthy_after : this.#config.healthy_after;
    if (s.streak < needed) return;
    s.healthy = ok;
    s.streak = 0;
    this.#onChange(s.target, ok);
  }
}
