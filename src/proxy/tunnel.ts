/**
 * WebSocket and other `Upgrade` requests (SPEC §3): a byte tunnel between the client's socket and a
 * new connection to a target. The `connect` timeout bounds reaching the target, `ttfb` its answer to
 * the handshake; once the upstream agrees (`101`), `timeouts.idle` closes a tunnel silent both ways,
 * and `total` does not apply. Each side's close is passed to the other; one access-log line is written
 * when the tunnel ends, with the bytes that went each way. An upstream that refuses the upgrade
 * answers the client with its own response.
 */
import type { IncomingMessage } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { fromUpstreamFailure, GatewayError, problemBody, proxyStatus, upstreamTimeout } from '../errors.ts';
import { type AccessLogEntry, isoNow } from '../observability/access-log.ts';
import type { Target } from '../upstream/upstream.ts';
import { VIA } from './headers.ts';
import type { RouteRuntime } from './route-runtime.ts';

const now = performance.now.bind(performance);
/** Largest upstream handshake answer read before the tunnel opens. */
const MAX_HEAD = 64 * 1024;

export interface TunnelRequest {
  readonly rt: RouteRuntime;
  readonly req: IncomingMessage;
  readonly client: Duplex;
  /** Bytes the client sent after its request head (the parser's `head`). */
  readonly head: Buffer;
  readonly requestId: string;
  readonly startedAt: number;
  readonly logPath: string;
  /** Path and query as forwarded. */
  readonly path: string;
  /** The forwarding headers (flat; hop-by-hop already removed). */
  readonly headers: readonly string[];
  readonly log: (entry: AccessLogEntry) => void;
}

/** Writes an error as a whole HTTP/1.1 response on a raw socket, then closes it. */
export function answerRaw(socket: Duplex, err: GatewayError, requestId: string, startedAt: number): void {
  if (socket.destroyed) return;
  const body = problemBody(err, { requestId, elapsedMs: now() - startedAt, attempts: 1 });
  const ps = proxyStatus(err);
  socket.end(
    `HTTP/1.1 ${err.status} ${err.title}\r\ncontent-type: application/problem+json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `x-request-id: ${requestId}\r\ncache-control: no-store\r\n${ps ? `proxy-status: ${ps}\r\n` : ''}${extraHeaders(err)}connection: close\r\n\r\n${body}`,
  );
}

/** An error's own headers (WWW-Authenticate, Retry-After, RateLimit…) as raw header lines. */
function extraHeaders(err: GatewayError): string {
  let out = err.retryAfter === undefined ? '' : `retry-after: ${err.retryAfter}\r\n`;
  const h = err.headers;
  if (h) for (let i = 0; i < h.length; i += 2) out += `${h[i]}: ${h[i + 1]}\r\n`;
  return out;
}

/** Tunnels open now, for the sluice_tunnels_open gauge. */
export let openTunnels = 0;

export function tunnel(t: TunnelRequest): void {
  const { rt, req, client } = t;
  openTunnels++;
  const target = rt.upstream.pick();
  let status = 0;
  let outcome: AccessLogEntry['outcome'] = 'ok';
  let phase: AccessLogEntry['phase'] = null;
  let error: string | null = null;
  let bytesIn = t.head.length;
  let bytesOut = 0;
  let connectedAt = 0;
  let headersAt = 0;
  let logged = false;
  const finish = () => {
    if (logged) return;
    logged = true;
    openTunnels--;
    const r = (x: number) => Math.round(x * 100) / 100;
    t.log({
      time: isoNow(),
      request_id: t.requestId,
      method: req.method ?? 'GET',
      path: t.logPath,
      route: rt.name,
      upstream: rt.upstream.name,
      target: target?.origin ?? null,
      status,
      outcome,
      phase,
      error,
      client: req.socket.remoteAddress,
      bytes_in: bytesIn,
      bytes_out: bytesOut,
      attempts: target ? 1 : 0,
      retries: 0,
      dns: null,
      connect: connectedAt > 0 ? r(connectedAt - t.startedAt) : null,
      tls: null,
      ttfb: headersAt > 0 ? r(headersAt - connectedAt) : null,
      total: r(now() - t.startedAt),
      budget_ms: 0,
    });
  };
  const fail = (err: GatewayError, upstreamSocket?: Socket) => {
    upstreamSocket?.destroy();
    outcome = err.outcome;
    phase = err.phase ?? null;
    error = err.code;
    status = err.status;
    answerRaw(client, err, t.requestId, t.startedAt);
    finish();
  };
  if (target === undefined) {
    return fail(
      new GatewayError('no-healthy-upstream', {
        detail: `upstream '${rt.upstream.name}' has no healthy target on route '${rt.name}'`,
        route: rt.name,
        upstream: rt.upstream.name,
        proxyError: 'destination_unavailable',
        retryAfter: 5,
      }),
    );
  }
  const upstream = open(target, rt);
  const to = rt.timeouts;
  let timer: NodeJS.Timeout | undefined;
  const arm = (ms: number, onFire: () => void) => {
    clearTimeout(timer);
    timer = ms > 0 ? setTimeout(onFire, ms) : undefined;
  };
  arm(to.connect, () => fail(upstreamTimeout('connect', rt.name, rt.upstream.name, to.connect), upstream));
  client.on('error', () => {});
  const clientGone = () => {
    if (headersAt === 0 && !logged) {
      outcome = 'client_aborted';
      status = 499;
      clearTimeout(timer);
      upstream.destroy();
      finish();
    }
  };
  client.once('close', clientGone);
  upstream.once('error', (err) => {
    clearTimeout(timer);
    if (headersAt > 0) {
      // After the handshake: the tunnel ends; the client's side is closed too.
      outcome = 'upstream_error';
      error = 'upstream-unreachable';
      client.destroy();
      finish();
      return;
    }
    fail(fromUpstreamFailure(err, connectedAt === 0 ? 'connect' : 'ttfb', rt.name, rt.upstream.name));
  });
  upstream.once(target.origin.startsWith('https:') ? 'secureConnect' : 'connect', () => {
    connectedAt = now();
    arm(to.ttfb, () => fail(upstreamTimeout('ttfb', rt.name, rt.upstream.name, to.ttfb), upstream));
    const url = new URL(target.origin);
    let head = `${req.method} ${target.basePath}${t.path} HTTP/1.1\r\n`;
    for (let i = 0; i < t.headers.length; i += 2) {
      const k = t.headers[i].toLowerCase();
      head += k === 'host' ? `host: ${url.host}\r\n` : `${t.headers[i]}: ${t.headers[i + 1]}\r\n`;
    }
    head += `connection: upgrade\r\nupgrade: ${req.headers.upgrade}\r\n\r\n`;
    upstream.write(head);
    if (t.head.length > 0) upstream.write(t.head);
  });
  // The handshake answer: read up to its blank line, then the tunnel (or the refusal) takes over.
  let buffered = Buffer.alloc(0);
  const onHead = (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    const end = buffered.indexOf('\r\n\r\n');
    if (end === -1) {
      if (buffered.length > MAX_HEAD)
        fail(
          fromUpstreamFailure(
            Object.assign(new Error('head too large'), { code: 'UND_ERR_HEADERS_OVERFLOW' }),
            'ttfb',
            rt.name,
            rt.upstream.name,
          ),
          upstream,
        );
      return;
    }
    upstream.off('data', onHead);
    headersAt = now();
    clearTimeout(timer);
    status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(buffered.subarray(0, 16).toString('latin1'))?.[1] ?? 502);
    // The upstream's answer goes to the client as it is, with the gateway's Via and request id.
    const headText = buffered.subarray(0, end).toString('latin1');
    client.write(`${headText}\r\nvia: ${VIA}\r\nx-request-id: ${t.requestId}\r\n\r\n`);
    const rest = buffered.subarray(end + 4);
    if (rest.length > 0) {
      bytesOut += rest.length;
      client.write(rest);
    }
    client.off('close', clientGone);
    pipe(status === 101);
  };
  upstream.on('data', onHead);

  /**
   * Both ways, with back-pressure; idle closes a silent tunnel; either close ends both. A chunk only
   * stamps the time: the one idle timer is re-armed for the remainder when it fires early, not cleared
   * and set again per chunk (which put two timer-list operations on every message's path).
   */
  const pipe = (upgraded: boolean) => {
    const idle = upgraded ? (rt.route.websocket?.idle ?? 0) : to.read;
    let lastActivity = now();
    const check = () => {
      const quiet = now() - lastActivity;
      if (quiet < idle) {
        timer = setTimeout(check, Math.max(1, Math.ceil(idle - quiet)));
        return;
      }
      outcome = 'timeout';
      error = 'upstream-timeout';
      client.destroy();
      upstream.destroy();
      finish();
    };
    arm(idle, check);
    client.on('data', (c: Buffer) => {
      bytesIn += c.length;
      lastActivity = now();
      if (!upstream.write(c)) {
        client.pause();
        upstream.once('drain', () => client.resume());
      }
    });
    upstream.on('data', (c: Buffer) => {
      bytesOut += c.length;
      lastActivity = now();
      if (!client.write(c)) {
        upstream.pause();
        client.once('drain', () => upstream.resume());
      }
    });
    const end = () => {
      clearTimeout(timer);
      finish();
    };
    client.once('end', () => upstream.end());
    upstream.once('end', () => client.end());
    client.once('close', () => {
      upstream.destroy();
      end();
    });
    upstream.once('close', () => {
      client.destroy();
      end();
    });
    client.resume();
  };
}

/** A new connection to the target, TLS for https:// ones (with the upstream's tls settings). */
function open(target: Target, rt: RouteRuntime): Socket {
  const url = new URL(target.origin);
  const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (url.protocol !== 'https:') return netConnect({ host, port, noDelay: true });
  const tls = rt.upstream.config.tls;
  return tlsConnect({
    host,
    port,
    servername: tls?.servername ?? (/^[\d.:]+$/.test(host) ? undefined : host),
    ca: tls?.ca,
    rejectUnauthorized: !tls?.insecure,
  });
}
