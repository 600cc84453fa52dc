/**
 * `GET /api/events` (SPEC §8): Server-Sent Events for live views. One `event:` per kind: `stats`
 * (every second), `request` (sampled finished requests), `alert`, `health`, `circuit`, `job`,
 * `config`. A comment line every 15 s keeps proxies from closing an idle stream.
 *
 * A viewer that stops reading never grows the gateway's memory: each viewer has a bounded send
 * buffer, and one whose buffer is full is dropped (its connection closed; a browser's EventSource
 * reconnects by itself). Publishing costs nothing while nobody watches.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

export type EventKind = 'stats' | 'request' | 'alert' | 'health' | 'circuit' | 'job' | 'config';

export interface EventHubOptions {
  /** Bytes a viewer may have unsent before it is dropped. Default 1 MiB. */
  maxBuffered?: number;
  /** Heartbeat comment interval. Default 15 s. */
  heartbeatMs?: number;
  /** Most `request` events per second (each viewer gets the same sample). Default 20. */
  requestsPerSecond?: number;
}

export class EventHub {
  readonly #viewers = new Set<ServerResponse>();
  readonly #maxBuffered: number;
  readonly #requestsPerSecond: number;
  readonly #heartbeat: NodeJS.Timeout;
  #second = 0;
  #sentThisSecond = 0;
  /** Viewers dropped for not reading (for tests and the log). */
  dropped = 0;

  constructor(options: EventHubOptions = {}) {
    this.#maxBuffered = options.maxBuffered ?? 1024 * 1024;
    this.#requestsPerSecond = options.requestsPerSecond ?? 20;
    this.#heartbeat = setInterval(() => this.#write(': keep-alive\n\n'), options.heartbeatMs ?? 15_000);
    this.#heartbeat.unref();
  }

  /** Viewers connected now. */
  get size(): number {
    return this.#viewers.size;
  }

  /** The admin handler: opens a stream for this viewer. */
  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write(': sluice events\nretry: 2000\n\n');
    this.#viewers.add(res);
    const gone = () => this.#viewers.delete(res);
    res.once('close', gone);
    req.socket.setNoDelay(true);
  };

  /** Sends one event to every viewer. */
  publish(kind: EventKind, data: unknown): void {
    if (this.#viewers.size === 0) return;
    this.#write(`event: ${kind}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  /** A finished request, sampled to at most `requestsPerSecond` per second. */
  request(data: () => unknown): void {
    if (this.#viewers.size === 0) return;
    const second = Math.floor(performance.now() / 1000);
    if (second !== this.#second) {
      this.#second = second;
      this.#sentThisSecond = 0;
    }
    if (this.#sentThisSecond >= this.#requestsPerSecond) return;
    this.#sentThisSecond++;
    this.publish('request', data());
  }

  #write(text: string): void {
    for (const res of this.#viewers) {
      if (res.writableLength > this.#maxBuffered) {
        // This viewer stopped reading: drop it rather than buffer without bound.
        this.dropped++;
        this.#viewers.delete(res);
        res.destroy();
        continue;
      }
      res.write(text);
    }
  }

  close(): void {
    clearInterval(this.#heartbeat);
    for (const res of this.#viewers) res.end();
    this.#viewers.clear();
  }
}
