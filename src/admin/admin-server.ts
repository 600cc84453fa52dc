/**
 * The admin listener (default 127.0.0.1:8081): health, readiness, metrics, the admin API and the
 * dashboard. A bearer token is required for everything but /healthz and the dashboard's static shell
 * whenever a token is configured, and the listener refuses to start beyond loopback without one.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isLoopback, type ListenAddress } from '../config/resolve.ts';

export type AdminHandler = (req: IncomingMessage, res: ServerResponse, url: URL) => void | Promise<void>;

export interface AdminOptions {
  listen: ListenAddress;
  token: string | undefined;
  /** Whether the gateway is ready for traffic (listening and not draining). */
  ready: () => boolean;
  /** More to say in /readyz (e.g. the job store's state), without changing its status. */
  readiness?: () => Record<string, unknown>;
}

export { isLoopback };

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export class AdminServer {
  readonly server: Server;
  readonly #routes = new Map<string, AdminHandler>();
  readonly #prefixes: [string, AdminHandler][] = [];
  /** Paths served without a token: /healthz and the dashboard's static shell (it holds no data). */
  readonly #public = new Set<string>(['/healthz']);
  readonly #tokenDigest: Buffer | undefined;
  readonly #options: AdminOptions;

  constructor(options: AdminOptions) {
    this.#options = options;
    // A backstop: config validation refuses this already (so that `sluice check` does too).
    if (!options.token && !isLoopback(options.listen.host)) {
      throw new Error(
        `admin.listen ${options.listen.host ?? '*'}:${options.listen.port} is not loopback: set admin.token (e.g. token: "\${SLUICE_ADMIN_TOKEN}")`,
      );
    }
    this.#tokenDigest = options.token ? digest(options.token) : undefined;
    this.server = createServer((req, res) => void this.#handle(req, res));
    // `auth` lets the dashboard show its sign-in form before a first call is refused.
    this.route('/healthz', (_req, res) =>
      json(res, 200, { status: 'ok', auth: this.#tokenDigest ? 'token' : 'none' }),
    );
    this.route('/readyz', (_req, res) => {
      const more = this.#options.readiness?.() ?? {};
      if (this.#options.ready()) json(res, 200, { status: 'ready', ...more });
      else json(res, 503, { status: 'not ready', ...more });
    });
  }

  /** Registers a handler for an exact path (GET and others alike: the handler checks the method). */
  route(path: string, handler: AdminHandler): void {
    this.#routes.set(path, handler);
  }

  /** Registers a handler for an exact path that needs no token (static files that hold no data). */
  publicRoute(path: string, handler: AdminHandler): void {
    this.#routes.set(path, handler);
    this.#public.add(path);
  }

  /** Registers a handler for every path under `prefix` (which ends with `/`). */
  routePrefix(prefix: string, handler: AdminHandler): void {
    this.#prefixes.push([prefix, handler]);
  }

  #authorized(req: IncomingMessage): boolean {
    if (!this.#tokenDigest) return true;
    const h = req.headers.authorization ?? '';
    if (!h.startsWith('Bearer ')) return false;
    return timingSafeEqual(digest(h.slice(7)), this.#tokenDigest);
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    try {
      if (!this.#public.has(url.pathname) && !this.#authorized(req)) {
        res.setHeader('www-authenticate', 'Bearer');
        return json(
          res,
          401,
          {
            type: 'https://sluice.dev/problems/unauthorized',
            title: 'Unauthorized',
            status: 401,
            detail: 'a valid admin bearer token is required',
          },
          'application/problem+json',
        );
      }
      const handler =
        this.#routes.get(url.pathname) ?? this.#prefixes.find(([p]) => url.pathname.startsWith(p))?.[1];
      if (!handler) {
        return json(
          res,
          404,
          { type: 'https://sluice.dev/problems/not-found', title: 'Not found', status: 404 },
          'application/problem+json',
        );
      }
      await handler(req, res, url);
    } catch {
      if (!res.headersSent)
        json(
          res,
          500,
          { type: 'https://sluice.dev/problems/internal-error', title: 'Internal error', status: 500 },
          'application/problem+json',
        );
      else res.destroy();
    }
  }

  listen(): Promise<{ port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ port: this.#options.listen.port, host: this.#options.listen.host }, () => {
        this.server.off('error', reject);
        resolve({ port: (this.server.address() as { port: number }).port });
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

export function json(res: ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}
