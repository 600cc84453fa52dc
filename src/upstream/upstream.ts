/**
 * An upstream: named targets, each with a pooled keep-alive connection pool (undici Pool). The gateway
 * enforces every timeout with its own timers; undici's own connect/headers/body timeouts are set only
 * as a backstop, above any budget a route can give.
 */
import { Pool } from 'undici';
import type { EffectiveUpstream } from '../config/resolve.ts';

export interface Target {
  /** For logs and the admin API only, never for clients. */
  readonly origin: string;
  readonly basePath: string;
  readonly pool: Pool;
  /** Requests currently in flight to this target. */
  inflight: number;
}

export interface UpstreamOptions {
  /** Backstop for undici's own connect timeout: the largest connect budget of any route using it. */
  connectBackstopMs: number;
}

export class Upstream {
  readonly name: string;
  readonly targets: readonly Target[];
  #next = 0;

  constructor(config: EffectiveUpstream, options: UpstreamOptions) {
    this.name = config.name;
    this.targets = config.targets.map((t) => ({
      origin: t.origin,
      basePath: t.basePath,
      inflight: 0,
      pool: new Pool(t.origin, {
        connections: config.maxConnections ?? null,
        pipelining: 1,
        keepAliveTimeout: 4_000,
        keepAliveMaxTimeout: 60_000,
        connect: { timeout: options.connectBackstopMs > 0 ? options.connectBackstopMs + 1_000 : 0 },
        // Per-request backstops are given on each dispatch.
        headersTimeout: 0,
        bodyTimeout: 0,
      }),
    }));
  }

  /** Round-robin over targets. */
  pick(): Target {
    const t = this.targets[this.#next];
    this.#next = this.#next + 1 === this.targets.length ? 0 : this.#next + 1;
    return t;
  }

  async close(): Promise<void> {
    await Promise.all(this.targets.map((t) => t.pool.close().catch(() => t.pool.destroy())));
  }

  destroy(): void {
    for (const t of this.targets) t.pool.destroy().catch(() => {});
  }
}
