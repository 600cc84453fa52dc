/**
 * Alerts (SPEC §7): the rules of `alerts.rules`, evaluated once per second for every route they apply
 * to, over the routes' sliding latency windows. A condition that holds continuously for the rule's
 * `for` fires (one FIRING notification); when it stops holding the alert resolves (one RESOLVED
 * notification). Notifications go to the operational log and, when `alerts.webhook` is set, to a
 * Slack-compatible webhook.
 *
 * Webhook delivery never touches the data plane: evaluation runs on the observability ticker, and
 * notifications go through a bounded queue drained by one sender (5 s per attempt, 3 retries with
 * exponential backoff). A webhook that hangs or fails only delays or drops notifications — the
 * oldest first, with a log line — never a proxied request.
 */
import { Agent, type Dispatcher, request } from 'undici';
import { type Clock, systemClock } from '../clock.ts';
import type { AlertRule, EffectiveConfig, EffectiveRoute } from '../config/resolve.ts';
import { formatDuration } from '../config/units.ts';
import { signBody } from '../signature.ts';
import { type HeadroomLimit, headroomLimit, limitText } from './headroom.ts';
import type { WindowStats } from './latency-window.ts';
import type { Logger } from './logger.ts';

export type AlertState = 'firing' | 'resolved';

/** One notification, as posted to the webhook (Slack reads `text`; the rest is for machines). */
export interface AlertNotification {
  text: string;
  /** The rule's name. */
  alert: string;
  state: AlertState;
  /** The rule's condition as written (`p95 > 80% of timeout`). */
  condition: string;
  /** The route ('' for target_down, which is about an upstream). */
  route: string;
  upstream: string;
  /**
   * The measured value, in the unit of `threshold`: the latency percentile ÷ the limit that fires
   * first (latency rules), the share of requests (rate rules), 1 or 0 (circuit_open), the number of
   * targets down (target_down).
   */
  value: number;
  threshold: number;
  /** The limit latency rules measure against, in ms: ttfb when it is below total, else total (0: none). */
  timeout_ms: number;
  /** Which phase `timeout_ms` is: `ttfb` or `total`. */
  timeout_phase?: 'ttfb' | 'total';
  /** target_down: the targets that are down (failed health check or ejected). */
  targets_down?: string[];
  /** The sliding window the value is measured over. */
  window_s: number;
  /** When the condition started holding (ISO 8601). */
  since: string;
  /** When this notification was made (ISO 8601). */
  at: string;
  /** Latency rules: the measured percentile in ms. */
  latency_ms?: number;
  /** Requests in the window when measured (not for circuit_open). */
  requests?: number;
}

/** An alert that is firing or pending (condition holding, `for` not yet reached). */
export interface ActiveAlert {
  alert: string;
  condition: string;
  route: string;
  upstream: string;
  state: 'pending' | 'firing';
  value: number;
  threshold: number;
  since: string;
  /** Since when it fires (ISO 8601), when firing. */
  firing_since?: string;
}

export interface AlertEngineOptions {
  logger: Logger;
  clock?: Clock;
  /** The route's sliding-window statistics. */
  window: (route: string) => WindowStats | undefined;
  /** Whether the circuit of an upstream is open; absent: circuit_open never fires. */
  circuitOpen?: (upstream: string) => boolean;
  /** Targets of an upstream that are down; absent: target_down never fires. */
  targetsDown?: (upstream: string) => readonly string[];
  /** Webhook delivery settings (tests shorten them). */
  webhook?: Partial<Omit<WebhookOptions, 'url' | 'logger'>>;
  /** Notifications kept for `GET /api/alerts` (default 100). */
  historySize?: number;
}

interface Instance {
  readonly key: string;
  readonly rule: AlertRule;
  /** undefined for target_down, which is evaluated per upstream. */
  route: EffectiveRoute | undefined;
  upstream: string;
  limit: HeadroomLimit | undefined;
  /** Since when (clock ms) the condition holds; undefined when it does not. */
  since: number | undefined;
  firingSince: number | undefined;
  last: Measure | undefined;
}

interface Measure {
  holds: boolean;
  value: number;
  latencyMs?: number;
  requests?: number;
  /** The window is empty: a firing alert resolves on "no requests", never on "0% of 0". */
  empty?: boolean;
  down?: readonly string[];
}

const pct = (x: number) => {
  const p = x * 100;
  return `${p >= 10 || Number.isInteger(p) ? Math.round(p) : Math.round(p * 10) / 10}%`;
};

/** A measured latency for people: 850ms, 7.1s, 95s. */
function latencyText(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)}ms`;
  if (ms < 10_000) return `${Math.round(ms / 100) / 10}s`;
  return `${Math.round(ms / 1_000)}s`;
}

/** An elapsed time, rounded to whole seconds: 10s, 1m20s. */
function elapsedText(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1_000));
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${s % 60 ? `${s % 60}s` : ''}`;
}

export class AlertEngine {
  readonly #options: AlertEngineOptions;
  readonly #clock: Clock;
  /** Wall-clock ms minus clock ms, fixed at start: the clock is monotonic, notifications show dates. */
  readonly #wallOffset: number;
  readonly #logger: Logger;
  readonly #history: AlertNotification[] = [];
  readonly #historySize: number;
  #config: EffectiveConfig;
  #instances = new Map<string, Instance>();
  #webhook: WebhookSender | undefined;
  #circuitOpen: ((upstream: string) => boolean) | undefined;
  /** Receives every notification too (live views); errors it throws are ignored. */
  onNotify: ((n: AlertNotification) => void) | undefined = undefined;
  #targetsDown: ((upstream: string) => readonly string[]) | undefined;

  constructor(config: EffectiveConfig, options: AlertEngineOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#wallOffset = Date.now() - this.#clock.now();
    this.#logger = options.logger;
    this.#historySize = options.historySize ?? 100;
    this.#circuitOpen = options.circuitOpen;
    this.#targetsDown = options.targetsDown;
    this.#config = config;
    this.reload(config);
  }

  /** The webhook sender, when `alerts.webhook` is set. */
  get webhook(): WebhookSender | undefined {
    return this.#webhook;
  }

  setCircuitOpen(fn: ((upstream: string) => boolean) | undefined): void {
    this.#circuitOpen = fn;
  }

  setTargetsDown(fn: ((upstream: string) => readonly string[]) | undefined): void {
    this.#targetsDown = fn;
  }

  /** Applies a new config: alerts of (rule, route) pairs that still exist keep their state. */
  reload(config: EffectiveConfig): void {
    this.#config = config;
    const next = new Map<string, Instance>();
    const add = (rule: AlertRule, key: string, route: EffectiveRoute | undefined, upstream: string) => {
      const limit = route ? headroomLimit(route.timeouts) : undefined;
      const old = this.#instances.get(key);
      if (old && old.rule.when === rule.when && old.rule.for === rule.for) {
        next.set(key, { ...old, rule, route, upstream, limit });
      } else {
        next.set(key, {
          key,
          rule,
          route,
          upstream,
          limit,
          since: undefined,
          firingSince: undefined,
          last: undefined,
        });
      }
    };
    for (const rule of config.alerts.rules) {
      const names = rule.routes ? new Set(rule.routes) : undefined;
      const routes = config.routes.filter((r) => !names || names.has(r.name));
      if (rule.condition.kind === 'target_down') {
        // About an upstream, not a route: one alert per upstream (of the listed routes, or all).
        const ups = names ? new Set(routes.map((r) => r.upstream)) : new Set(Object.keys(config.upstreams));
        for (const u of ups) add(rule, `${rule.name}\0\0${u}`, undefined, u);
      } else for (const route of routes) add(rule, `${rule.name}\0${route.name}`, route, route.upstream);
    }
    for (const [key, old] of this.#instances) {
      if (old.firingSince !== undefined && next.get(key)?.firingSince === undefined) {
        this.#logger.info(
          { alert: old.rule.name, route: old.route?.name ?? '', upstream: old.upstream },
          `alert ${old.rule.name} on ${subject(old)} dropped by a config reload while firing`,
        );
      }
    }
    this.#instances = next;
    const url = config.alerts.webhook;
    const secret = config.alerts.secret;
    if (this.#webhook?.url !== url || this.#webhook?.secret !== secret) {
      void this.#webhook?.close();
      this.#webhook = url
        ? new WebhookSender({ ...this.#options.webhook, url, secret, logger: this.#logger })
        : undefined;
    }
  }

  /** One evaluation round (the facade calls this every second). */
  evaluate(): void {
    const now = this.#clock.now();
    for (const inst of this.#instances.values()) {
      const m = this.#measure(inst);
      // No verdict (too few requests for the rule to judge): the alert neither starts nor resolves.
      if (m === undefined) continue;
      inst.last = m;
      if (m.holds) {
        inst.since ??= now;
        if (inst.firingSince === undefined && now - inst.since >= inst.rule.for) {
          inst.firingSince = now;
          this.#notify(inst, 'firing', m, now);
        }
      } else {
        if (inst.firingSince !== undefined) this.#notify(inst, 'resolved', m, now);
        inst.since = undefined;
        inst.firingSince = undefined;
      }
    }
  }

  /** Firing alerts, then pending ones. */
  active(): ActiveAlert[] {
    const out: ActiveAlert[] = [];
    for (const inst of this.#instances.values()) {
      if (inst.since === undefined || !inst.last) continue;
      out.push({
        alert: inst.rule.name,
        condition: inst.rule.when,
        route: inst.route?.name ?? '',
        upstream: inst.upstream,
        state: inst.firingSince === undefined ? 'pending' : 'firing',
        value: inst.last.value,
        threshold: threshold(inst.rule),
        since: this.#wall(inst.since),
        firing_since: inst.firingSince === undefined ? undefined : this.#wall(inst.firingSince),
      });
    }
    return out.sort((a, b) => (a.state === b.state ? 0 : a.state === 'firing' ? -1 : 1));
  }

  /**
   * Every (rule, route) pair evaluated, and whether it fires (for `sluice_alerts_firing`); target_down
   * alerts have route '' and their upstream.
   */
  *states(): Iterable<{ rule: string; route: string; upstream: string; firing: boolean }> {
    for (const inst of this.#instances.values())
      yield {
        rule: inst.rule.name,
        route: inst.route?.name ?? '',
        upstream: inst.upstream,
        firing: inst.firingSince !== undefined,
      };
  }

  /** Recent notifications, newest first. */
  history(): readonly AlertNotification[] {
    return this.#history.toReversed();
  }

  async close(): Promise<void> {
    await this.#webhook?.close();
  }

  /** A clock reading (monotonic) as a wall-clock ISO time. */
  #wall(t: number): string {
    return new Date(t + this.#wallOffset).toISOString();
  }

  /** The rule's verdict now; undefined when it cannot judge (too few requests, no limit). */
  #measure(inst: Instance): Measure | undefined {
    const c = inst.rule.condition;
    if (c.kind === 'circuit_open') {
      let open = false;
      try {
        open = this.#circuitOpen?.(inst.upstream) ?? false;
      } catch {
        // A failing provider must not stop the other alerts: treat it as closed.
      }
      return { holds: open, value: open ? 1 : 0 };
    }
    if (c.kind === 'target_down') {
      let down: readonly string[] = [];
      try {
        down = this.#targetsDown?.(inst.upstream) ?? [];
      } catch {
        // As above: a failing provider reads as nothing down.
      }
      return { holds: down.length > 0, value: down.length, down };
    }
    const route = inst.route as EffectiveRoute;
    const w = this.#options.window(route.name);
    if (!w) return undefined;
    if (w.count === 0) return { holds: false, value: 0, requests: 0, empty: true };
    if (w.count < this.#config.alerts.minRequests) return undefined;
    if (c.kind === 'latency') {
      if (inst.limit === undefined) return undefined; // no budget, no headroom
      const latencyMs = c.percentile === 50 ? w.p50 : c.percentile === 95 ? w.p95 : w.p99;
      const value = latencyMs / inst.limit.ms;
      return { holds: value > c.threshold, value, latencyMs, requests: w.count };
    }
    const n = c.kind === 'timeout_rate' ? w.timeouts : w.errors;
    const value = n / w.count;
    return { holds: value > c.threshold, value, requests: w.count };
  }

  #notify(inst: Instance, state: AlertState, m: Measure | undefined, now: number): void {
    const { rule, route } = inst;
    const since = inst.since ?? now;
    const value = m?.value ?? 0;
    const n: AlertNotification = {
      text: this.#text(inst, state, m, now),
      alert: rule.name,
      state,
      condition: rule.when,
      route: route?.name ?? '',
      upstream: inst.upstream,
      value: Math.round(value * 10_000) / 10_000,
      threshold: threshold(rule),
      timeout_ms: inst.limit?.ms ?? 0,
      window_s: this.#config.alerts.window / 1000,
      since: this.#wall(since),
      at: this.#wall(now),
    };
    if (m?.latencyMs !== undefined) n.latency_ms = Math.round(m.latencyMs * 10) / 10;
    if (m?.requests !== undefined) n.requests = m.requests;
    if (inst.limit) n.timeout_phase = inst.limit.phase;
    if (m?.down) n.targets_down = [...m.down];
    this.#history.push(n);
    if (this.#history.length > this.#historySize) this.#history.shift();
    const { text, ...fields } = n;
    if (state === 'firing') this.#logger.warn(fields, text);
    else this.#logger.info(fields, text);
    this.#webhook?.send(n);
    try {
      this.onNotify?.(n);
    } catch {
      // A live view must never break alerting.
    }
  }

  #text(inst: Instance, state: AlertState, m: Measure | undefined, now: number): string {
    const { rule } = inst;
    const c = rule.condition;
    const head =
      state === 'firing'
        ? `🔴 FIRING ${rule.name} on ${subject(inst)}`
        : `✅ RESOLVED ${rule.name} on ${subject(inst)}`;
    const tail =
      state === 'firing'
        ? ` for ${elapsedText(now - (inst.since ?? now))}`
        : `, after firing for ${elapsedText(now - (inst.firingSince ?? now))}`;
    const windowText = formatDuration(this.#config.alerts.window);
    if (m?.empty) return `${head}: no requests in the last ${windowText}${tail}`;
    switch (c.kind) {
      case 'latency':
        return (
          `${head}: p${c.percentile} ${latencyText(m?.latencyMs ?? 0)} is ${pct(m?.value ?? 0)} of its ` +
          `${limitText(inst.limit)} timeout (threshold ${pct(c.threshold)})${tail}`
        );
      case 'timeout_rate':
      case 'error_rate':
        return (
          `${head}: ${pct(m?.value ?? 0)} of ${m?.requests ?? 0} requests in the last ${windowText} ` +
          `${c.kind === 'timeout_rate' ? 'timed out' : 'failed'} (threshold ${pct(c.threshold)}, ` +
          `timeout ${limitText(inst.limit)})${tail}`
        );
      case 'circuit_open':
        return `${head}: the circuit of upstream '${inst.upstream}' is ${state === 'firing' ? 'open' : 'closed again'}${tail}`;
      case 'target_down': {
        const down = m?.down ?? [];
        return state === 'firing'
          ? `${head}: ${down.length} target(s) down: ${down.join(', ')}${tail}`
          : `${head}: every target is back${tail}`;
      }
    }
  }
}

/** What an alert is about, for people: `route 'api'` or `upstream 'api'`. */
function subject(inst: Instance): string {
  return inst.route ? `route '${inst.route.name}'` : `upstream '${inst.upstream}'`;
}

function threshold(rule: AlertRule): number {
  const c = rule.condition;
  return c.kind === 'circuit_open' || c.kind === 'target_down' ? 1 : c.threshold;
}

// ---- webhook delivery ------------------------------------------------------------------------------

export interface WebhookOptions {
  url: string;
  /** Signs each body as `Sluice-Signature` (HMAC-SHA256) when set. */
  secret?: string;
  logger: Logger;
  /** Budget of one delivery attempt (connect to the end of the response). Default 5 s. */
  timeoutMs: number;
  /** Further attempts after a failed one. Default 3. */
  retries: number;
  /** Backoff before retry n (0-based): backoffMs × 2ⁿ. Default 1 s. */
  backoffMs: number;
  /** Notifications waiting for delivery; when full the oldest is dropped. Default 100. */
  maxQueue: number;
}

/** Posts notifications one at a time, in order, from a bounded queue; `send` never blocks or throws. */
export class WebhookSender {
  readonly url: string;
  readonly secret: string | undefined;
  readonly #o: WebhookOptions;
  readonly #queue: AlertNotification[] = [];
  readonly #agent: Dispatcher;
  readonly #closing = new AbortController();
  #pumping: Promise<void> | undefined;
  /** Delivered, dropped (queue full) and failed (retries exhausted) notifications. */
  readonly stats = { delivered: 0, dropped: 0, failed: 0 };

  constructor(options: Partial<WebhookOptions> & Pick<WebhookOptions, 'url' | 'logger'>) {
    this.#o = { timeoutMs: 5_000, retries: 3, backoffMs: 1_000, maxQueue: 100, ...options };
    this.url = options.url;
    this.secret = options.secret;
    // Its own connection pool: a hanging webhook holds its sockets, nobody else's.
    this.#agent = new Agent({ connections: 2, connectTimeout: this.#o.timeoutMs });
  }

  /** Notifications queued and not yet delivered (the one being sent included). */
  get pending(): number {
    return this.#queue.length + (this.#pumping ? 1 : 0);
  }

  send(n: AlertNotification): void {
    if (this.#closing.signal.aborted) return;
    if (this.#queue.length >= this.#o.maxQueue) {
      const old = this.#queue.shift();
      this.stats.dropped++;
      this.#o.logger.warn(
        { alert: old?.alert, route: old?.route, state: old?.state, queued: this.#o.maxQueue },
        'alert webhook queue full: dropped the oldest notification',
      );
    }
    this.#queue.push(n);
    this.#kick();
  }

  /** Resolves once every queued notification was delivered or given up (for tests and shutdown). */
  async idle(): Promise<void> {
    while (this.#pumping) await this.#pumping;
  }

  /** Stops delivery: in-flight attempts are aborted, queued notifications dropped. */
  async close(): Promise<void> {
    this.#closing.abort();
    this.#queue.length = 0;
    await this.#pumping?.catch(() => {});
    await this.#agent.destroy().catch(() => {});
  }

  #kick(): void {
    if (this.#pumping || this.#queue.length === 0 || this.#closing.signal.aborted) return;
    this.#pumping = this.#pump().finally(() => {
      this.#pumping = undefined;
      this.#kick();
    });
  }

  async #pump(): Promise<void> {
    for (let n = this.#queue.shift(); n !== undefined; n = this.#queue.shift()) {
      await this.#deliver(n);
      if (this.#closing.signal.aborted) return;
    }
  }

  async #deliver(n: AlertNotification): Promise<void> {
    const body = JSON.stringify(n);
    let last = '';
    for (let attempt = 0; attempt <= this.#o.retries; attempt++) {
      if (attempt > 0 && !(await this.#sleep(this.#o.backoffMs * 2 ** (attempt - 1)))) return;
      try {
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        // Signed at each attempt: the timestamp is part of what is signed (replay protection).
        if (this.secret)
          headers['sluice-signature'] = signBody(this.secret, body, Math.floor(Date.now() / 1000));
        const res = await request(this.url, {
          method: 'POST',
          headers,
          body,
          dispatcher: this.#agent,
          headersTimeout: this.#o.timeoutMs,
          bodyTimeout: this.#o.timeoutMs,
          signal: AbortSignal.any([this.#closing.signal, AbortSignal.timeout(this.#o.timeoutMs)]),
        });
        await res.body.dump();
        if (res.statusCode < 300) {
          this.stats.delivered++;
          return;
        }
        last = `HTTP ${res.statusCode}`;
        // A 4xx other than 429 will not get better by repeating the same payload.
        if (res.statusCode < 500 && res.statusCode !== 429) break;
      } catch (err) {
        if (this.#closing.signal.aborted) return;
        last = (err as Error).message || String(err);
      }
    }
    this.stats.failed++;
    this.#o.logger.warn(
      { alert: n.alert, route: n.route, state: n.state, error: last },
      `alert webhook delivery failed: ${last}`,
    );
  }

  /** Waits `ms`; false when closed meanwhile. */
  #sleep(ms: number): Promise<boolean> {
    const signal = this.#closing.signal;
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve(!signal.aborted);
      };
      const timer = setTimeout(() => {
        signal.removeEventListener('abort', done);
        resolve(true);
      }, ms);
      timer.unref();
      signal.addEventListener('abort', done, { once: true });
    });
  }
}
