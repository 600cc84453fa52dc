/**
 * The public listeners (SPEC §2 `listen`, §3 TLS): one node:http server per plain listener, one
 * node:https server per TLS listener. A TLS listener holds one or more certificates; the client's SNI
 * picks the one whose names (subjectAltName DNS entries, else the CN) match, exactly or by a `*.`
 * wildcard, and the first otherwise. The files are watched: a changed certificate or key applies to
 * new connections (connections already open keep theirs); a pair that no longer loads is refused and
 * logged, and the running one stays.
 *
 * A TLS listener offers HTTP/2 and HTTP/1.1 by ALPN (SPEC §3). The HTTPS server accepts and
 * handshakes every connection; one that chose `h2` is handed to an HTTP/2 server that never listens
 * itself, the others stay on the HTTPS server, so HTTP/1.1 over TLS keeps every protection of the
 * plain listener (header timeout, limits, Upgrade). Both call the same request handler: Node's HTTP/2
 * compatibility objects behave like IncomingMessage / ServerResponse for everything the gateway uses.
 */
import { X509Certificate } from 'node:crypto';
import { type FSWatcher, readFileSync, watch } from 'node:fs';
import {
  createServer as createHttpServer,
  type RequestListener,
  type Server,
  type ServerOptions,
} from 'node:http';
import { createServer as createHttp2Server, type Http2Server, type ServerHttp2Session } from 'node:http2';
import { createServer as createHttpsServer } from 'node:https';
import { basename, dirname } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Listener, TlsCertFiles } from '../config/resolve.ts';

interface Loaded {
  readonly cert: string;
  readonly key: string;
  readonly context: SecureContext;
  /** Lower-case DNS names, `*.example.com` for wildcards. */
  readonly names: readonly string[];
}

function namesOf(pem: string): string[] {
  const x = new X509Certificate(pem);
  const dns = (x.subjectAltName ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.startsWith('DNS:'))
    .map((s) => s.slice(4).toLowerCase());
  if (dns.length > 0) return dns;
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(x.subject)?.[1];
  return cn ? [cn.toLowerCase()] : [];
}

function loadPair(files: TlsCertFiles): Loaded {
  const cert = readFileSync(files.cert, 'utf8');
  const key = readFileSync(files.key, 'utf8');
  return { cert, key, context: createSecureContext({ cert, key }), names: namesOf(cert) };
}

/** The certificates of one TLS listener, kept current with their files. */
export class TlsCertificates {
  readonly #files: readonly TlsCertFiles[];
  #loaded: Loaded[];
  readonly #watchers: FSWatcher[] = [];
  #timer: NodeJS.Timeout | undefined;

  constructor(files: readonly TlsCertFiles[]) {
    this.#files = files;
    this.#loaded = files.map(loadPair);
  }

  /** The default pair (the first), for the server's own context. */
  get first(): { cert: string; key: string } {
    return this.#loaded[0];
  }

  /** The context for a client's SNI name (undefined: no SNI). */
  select(servername: string | undefined): SecureContext {
    const loaded = this.#loaded;
    if (servername && loaded.length > 1) {
      const name = servername.toLowerCase();
      const dot = name.indexOf('.');
      const wildcard = dot === -1 ? undefined : `*${name.slice(dot)}`;
      for (const l of loaded) if (l.names.includes(name)) return l.context;
      if (wildcard) for (const l of loaded) if (l.names.includes(wildcard)) return l.context;
    }
    return loaded[0].context;
  }

  /** Reads every pair again; on any failure nothing changes and the error is returned. */
  reload(): string | undefined {
    try {
      this.#loaded = this.#files.map(loadPair);
      return undefined;
    } catch (err) {
      return (err as Error).message;
    }
  }

  /** Watches the files' directories (renames included), debounced; calls back after each reload. */
  watch(onReload: (error: string | undefined) => void): void {
    const byDir = new Map<string, Set<string>>();
    for (const f of this.#files)
      for (const path of [f.cert, f.key]) {
        const set = byDir.get(dirname(path)) ?? new Set<string>();
        set.add(basename(path));
        byDir.set(dirname(path), set);
      }
    for (const [dir, names] of byDir) {
      try {
        const w = watch(dir, { persistent: false }, (_event, changed) => {
          if (changed && !names.has(changed) && !changed.startsWith('..')) return;
          clearTimeout(this.#timer);
          this.#timer = setTimeout(() => onReload(this.reload()), 200);
          this.#timer.unref();
        });
        w.on('error', () => w.close());
        this.#watchers.push(w);
      } catch {
        // A directory that cannot be watched: the files are read again on a config reload only.
      }
    }
  }

  close(): void {
    clearTimeout(this.#timer);
    for (const w of this.#watchers) w.close();
  }
}

export interface PublicListener {
  readonly server: Server;
  readonly listener: Listener;
  readonly tls: TlsCertificates | undefined;
  /** TLS listeners: the HTTP/2 server the `h2` connections go to, and its open sessions. */
  readonly h2: Http2Server | undefined;
  readonly sessions: Set<H2Session>;
}

/** An open HTTP/2 connection, for a graceful stop. */
export interface H2Session {
  /**
   * Says goodbye (GOAWAY) once no stream is open: at once when idle, else when its last stream
   * ends. Sending it while streams are in flight is allowed by RFC 9113 but makes undici (Node's
   * fetch) fail those streams, so the drain waits, like an HTTP/1.1 response with Connection: close.
   */
  drain(): void;
  /** Ends it if streams are still open a second from now (the drain ran out of time). */
  destroy(): void;
}

/** What the HTTP/2 side takes from the client limits (SPEC §2 `client`). */
export interface H2Limits {
  /** client.max_header_size: the most header bytes of one request (SETTINGS_MAX_HEADER_LIST_SIZE). */
  readonly maxHeaderSize: number;
  /** client.max_headers (pseudo-headers not counted). */
  readonly maxHeaders: number;
  /** client.keepalive_timeout: an idle session is closed (GOAWAY) after this long. */
  readonly idleMs: number;
}

/** Streams one HTTP/2 connection may have open at once (nginx's http2_max_concurrent_streams). */
const H2_MAX_STREAMS = 128;

/** A server for one listener; TLS ones get their certificates, SNI selection and file watching. */
export function createPublicListener(
  listener: Listener,
  options: ServerOptions,
  handler: RequestListener,
  onTlsReload: (error: string | undefined, listener: Listener) => void,
  h2Limits: H2Limits,
): PublicListener {
  const sessions = new Set<H2Session>();
  if (listener.tls === undefined)
    return { server: createHttpServer(options, handler), listener, tls: undefined, h2: undefined, sessions };
  const certs = new TlsCertificates(listener.tls);
  const server = createHttpsServer(
    {
      ...options,
      ...certs.first,
      SNICallback: (name, cb) => cb(null, certs.select(name)),
      ALPNProtocols: ['h2', 'http/1.1'],
    },
    handler,
  ) as unknown as Server;
  const h2 = createHttp2Server(
    {
      maxHeaderListPairs: h2Limits.maxHeaders + 5, // + the pseudo-headers; checked in handle() too
      settings: { maxConcurrentStreams: H2_MAX_STREAMS, maxHeaderListSize: h2Limits.maxHeaderSize },
    },
    handler as unknown as Parameters<typeof createHttp2Server>[1],
  );
  h2.on('session', (session: ServerHttp2Session) => {
    let open = 0;
    let draining = false;
    const tracked: H2Session = {
      drain() {
        draining = true;
        if (open === 0 && !session.closed) session.close();
      },
      // A stream whose response just ended closes a moment later, and the drained session then
      // sends its GOAWAY and ends by itself: only one still busy after a second is ended here.
      destroy() {
        if (open === 0) return;
        setTimeout(() => {
          if (!session.destroyed) session.destroy();
        }, 1_000).unref();
      },
    };
    sessions.add(tracked);
    session.once('close', () => sessions.delete(tracked));
    session.on('error', () => {});
    session.on('stream', (stream) => {
      open++;
      stream.once('close', () => {
        if (--open === 0 && draining && !session.closed) session.close();
      });
    });
    // Idle like an HTTP/1.1 keep-alive connection: said goodbye to (GOAWAY), streams in flight finish.
    session.setTimeout(h2Limits.idleMs, () => session.close());
  });
  const [http1] = server.listeners('secureConnection') as ((socket: TLSSocket) => void)[];
  server.removeAllListeners('secureConnection');
  server.on('secureConnection', (socket: TLSSocket) => {
    if (socket.alpnProtocol === 'h2') h2.emit('connection', socket);
    else http1.call(server, socket);
  });
  certs.watch((error) => {
    // The default context too, for clients that send no SNI.
    if (error === undefined)
      (server as unknown as { setSecureContext(o: object): void }).setSecureContext(certs.first);
    onTlsReload(error, listener);
  });
  return { server, listener, tls: certs, h2, sessions };
}
