/**
 * Completion webhooks (SPEC §5, route `async.callback`). A request that carried `Callback-Url` on a
 * route with `async.callback` gets the job JSON POSTed to that URL when the job ends (completed, failed
 * or cancelled), if the URL is on the route's allow-list.
 *
 * Signature: `Sluice-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>` (the
 * Stripe scheme: the timestamp is signed too, so a receiver can refuse replays; `verifySignature`).
 *
 * SSRF guard, twice:
 * 1. The URL must match an allow-list entry: same scheme, same host and port, and a path under the
 *    entry's path (whole segments). URLs with credentials (`user@host`) are refused.
 * 2. At connect time, on the address actually connected to (resolved by the sender itself and pinned
 *    for the connection, so DNS cannot answer differently in between): loopback, private (RFC 1918,
 *    CGNAT), link-local, unique-local, multicast and other non-public addresses are refused unless the
 *    allow-list entry names that address itself (`http://10.0.0.5:8080/`) or names `localhost` (for
 *    loopback). A hostname on the allow-list never permits a private address: an allowed name whose DNS
 *    later points inside the network is refused.
 *
 * Delivery is best effort with retries (exponential backoff); a webhook pending when the gateway is
 * killed is not sent after restart. Polling stays the source of truth.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { Agent, buildConnector, request } from 'undici';
import { type Logger, silentLogger } from '../observability/logger.ts';
import { signBody, verifySignature } from '../signature.ts';
import type { JobRecord, JobStore } from './job-store.ts';
import { jobJson } from './job-view.ts';

export interface CallbackPolicy {
  /** URL prefixes a Callback-Url may name (route `async.callback.allow`). */
  readonly allow: readonly string[];
  /** HMAC-SHA256 key (route `async.callback.secret`). */
  readonly secret: string;
}

export type LookupFn = (
  hostname: string,
  options: { all: true },
  callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
) => void;

// ---- allow-list -----------------------------------------------------------------------------------

function parseHttpUrl(text: string): URL | undefined {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    return undefined;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return undefined;
  if (u.username !== '' || u.password !== '') return undefined;
  return u;
}

/** The allow-list entry `url` falls under, or undefined when it may not be called. */
export function matchAllowed(url: string, allow: readonly string[]): { url: URL; entry: URL } | undefined {
  const u = parseHttpUrl(url);
  if (!u) return undefined;
  for (const a of allow) {
    const e = parseHttpUrl(a);
    if (!e || e.protocol !== u.protocol || e.host !== u.host) continue;
    const base = e.pathname.endsWith('/') ? e.pathname : `${e.pathname}/`;
    if (u.pathname === e.pathname || u.pathname.startsWith(base)) return { url: u, entry: e };
  }
  return undefined;
}

/** What becomes of a request's `Callback-Url`. */
export interface CallbackChoice {
  /** The URL to record on the job; undefined: no callback (the job still works). */
  readonly url: string | undefined;
  /** Why a `Callback-Url` that was sent will not be called (logged, and said in `Sluice-Callback`). */
  readonly refused: string | undefined;
}

const NO_CALLBACK: CallbackChoice = Object.freeze({ url: undefined, refused: undefined });

/**
 * The callback of a new job: the request's `Callback-Url` when the route has a callback policy and
 * the URL passes its allow-list; otherwise none, with the reason when one was asked for.
 */
export function callbackFor(
  header: string | readonly string[] | undefined,
  policy: CallbackPolicy | undefined,
): CallbackChoice {
  if (header === undefined) return NO_CALLBACK;
  if (!policy) return { url: undefined, refused: 'this route has no async.callback' };
  const url = (typeof header === 'string' ? header : header[0]).trim();
  return matchAllowed(url, policy.allow)
    ? { url, refused: undefined }
    : { url: undefined, refused: 'the URL is not in async.callback.allow' };
}

/** The callback URL to record on a new job (see {@link callbackFor}). */
export function callbackUrlFor(
  header: string | readonly string[] | undefined,
  policy: CallbackPolicy | undefined,
): string | undefined {
  return callbackFor(header, policy).url;
}

// ---- addresses ------------------------------------------------------------------------------------

const NON_PUBLIC = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.88.99.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  NON_PUBLIC.addSubnet(net, bits, 'ipv4');
}
for (const [net, bits] of [
  ['::', 128],
  ['::1', 128],
  ['64:ff9b::', 96], // NAT64
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const) {
  NON_PUBLIC.addSubnet(net, bits, 'ipv6');
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d` or `::ffff:7f00:1`). */
function embeddedV4(address: string): string | undefined {
  const dotted = /^(?:0{0,4}:){0,5}:?ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (dotted) return dotted[1];
  const hex = /^(?:0{0,4}:){0,5}:?ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(address);
  if (!hex) return undefined;
  const hi = Number.parseInt(hex[1], 16);
  const lo = Number.parseInt(hex[2], 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** Whether `address` (an IP literal) is anything but a public unicast address. */
export function isNonPublicAddress(address: string): boolean {
  const v4 = embeddedV4(address);
  if (v4) return NON_PUBLIC.check(v4, 'ipv4');
  const family = isIP(address);
  if (family === 0) return true;
  return NON_PUBLIC.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

function isLoopback(address: string): boolean {
  const v4 = embeddedV4(address);
  if (v4) return LOOPBACK.check(v4, 'ipv4');
  const family = isIP(address);
  return family !== 0 && LOOPBACK.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

function unbracket(host: string): string {
  return host.startsWith('[') ? host.slice(1, -1) : host;
}

/** Which non-public addresses an allow-list entry names explicitly. */
function explicitPermit(entry: URL): (address: string) => boolean {
  const host = unbracket(entry.hostname).toLowerCase();
  if (host === 'localhost') return isLoopback;
  if (isIP(host) !== 0) return (address) => address.toLowerCase() === host || embeddedV4(address) === host;
  return () => false;
}

export class CallbackAddressError extends Error {
  override name = 'CallbackAddressError';
  readonly code = 'ERR_SLUICE_CALLBACK_ADDRESS';
}

/**
 * An undici connector that resolves the host itself, refuses non-public addresses that `permit` does
 * not allow, and connects to the checked address (TLS keeps the original name for SNI).
 */
export function guardedConnector(
  permit: (address: string) => boolean,
  lookup: LookupFn = dnsLookup as unknown as LookupFn,
  timeoutMs = 10_000,
): buildConnector.connector {
  const base = buildConnector({ timeout: timeoutMs });
  return (opts, callback) => {
    const host = unbracket(opts.hostname);
    const proceed = (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => {
      if (err) return callback(err, null);
      if (addresses.length === 0) return callback(new CallbackAddressError(`${host} has no address`), null);
      const bad = addresses.find((a) => isNonPublicAddress(a.address) && !permit(a.address));
      if (bad) {
        return callback(
          new CallbackAddressError(
            `callback to ${host} refused: it resolves to ${bad.address}, a non-public address the allow-list does not name`,
          ),
          null,
        );
      }
      base(
        {
          ...opts,
          hostname: addresses[0].address,
          servername: opts.servername ?? (isIP(host) === 0 ? host : undefined),
        },
        callback,
      );
    };
    const family = isIP(host);
    if (family !== 0) proceed(null, [{ address: host, family }]);
    else lookup(host, { all: true }, proceed);
  };
}

export { signBody, verifySignature };

// ---- sender ---------------------------------------------------------------------------------------

export interface CallbackSenderOptions {
  /** The route's callback policy, or undefined when it has none (any more). */
  readonly policyFor: (route: string) => CallbackPolicy | undefined;
  /** Job resource prefix, for `result_url` in the body. */
  readonly prefix: string;
  /** Tries per webhook. Default 5. */
  readonly attempts?: number;
  /** First retry delay, doubled each time. Default 1 s. */
  readonly backoffMs?: number;
  /** Per-try budget (connect to response). Default 10 s. */
  readonly timeoutMs?: number;
  /** DNS resolution (tests inject one). Default `dns.lookup`. */
  readonly lookup?: LookupFn;
  readonly logger?: Logger;
}

export type CallbackOutcome = 'sent' | 'refused' | 'failed' | 'none';

export class CallbackSender {
  readonly #o: Required<Omit<CallbackSenderOptions, 'lookup' | 'logger'>> & {
    lookup: LookupFn | undefined;
    logger: Logger;
  };
  readonly #agents = new Map<string, Agent>();
  readonly #pending = new Set<Promise<unknown>>();
  readonly #ac = new AbortController();

  constructor(options: CallbackSenderOptions) {
    this.#o = {
      policyFor: options.policyFor,
      prefix: options.prefix.replace(/\/+$/, ''),
      attempts: options.attempts ?? 5,
      backoffMs: options.backoffMs ?? 1_000,
      timeoutMs: options.timeoutMs ?? 10_000,
      lookup: options.lookup,
      logger: options.logger ?? silentLogger,
    };
  }

  /** Sends a webhook for every job that ends in `store` (from this instance). Returns a detach. */
  attach(store: JobStore): () => void {
    return store.onFinal((job) => {
      if (!job.callback_url || this.#ac.signal.aborted) return;
      const p = this.send(job).finally(() => this.#pending.delete(p));
      this.#pending.add(p);
    });
  }

  /** Webhooks in progress. */
  get pending(): number {
    return this.#pending.size;
  }

  #agentFor(entry: URL): Agent {
    let a = this.#agents.get(entry.href);
    if (!a) {
      a = new Agent({
        connect: guardedConnector(explicitPermit(entry), this.#o.lookup, this.#o.timeoutMs),
        connections: 4,
      });
      this.#agents.set(entry.href, a);
    }
    return a;
  }

  /** POSTs the job JSON to its callback URL, with retries. Never rejects. */
  async send(job: JobRecord): Promise<CallbackOutcome> {
    const target = job.callback_url;
    if (!target) return 'none';
    const policy = this.#o.policyFor(job.route);
    const match = policy && matchAllowed(target, policy.allow);
    if (!policy || !match) {
      this.#o.logger.warn(
        { job: job.id, route: job.route },
        'job callback refused: URL not on the allow-list',
      );
      return 'refused';
    }
    const body = JSON.stringify(jobJson(job, this.#o.prefix));
    const dispatcher = this.#agentFor(match.entry);
    for (let attempt = 1; attempt <= this.#o.attempts; attempt++) {
      if (this.#ac.signal.aborted) return 'failed';
      const t = Math.floor(Date.now() / 1000);
      let retryable = true;
      try {
        const res = await request(match.url, {
          method: 'POST',
          dispatcher,
          body,
          headers: {
            'content-type': 'application/json',
            'user-agent': 'sluice-callback/1',
            'sluice-signature': signBody(policy.secret, body, t),
            'sluice-job-id': job.id,
          },
          headersTimeout: this.#o.timeoutMs,
          bodyTimeout: this.#o.timeoutMs,
          signal: AbortSignal.any([this.#ac.signal, AbortSignal.timeout(this.#o.timeoutMs)]),
        });
        await res.body.dump();
        if (res.statusCode >= 200 && res.statusCode < 300) return 'sent';
        // A receiver that refuses the request as such will refuse it again.
        retryable = res.statusCode >= 500 || res.statusCode === 408 || res.statusCode === 429;
        this.#o.logger.warn(
          { job: job.id, status: res.statusCode, attempt },
          'job callback answered an error',
        );
      } catch (err) {
        if ((err as { code?: string }).code === 'ERR_SLUICE_CALLBACK_ADDRESS') {
          this.#o.logger.warn({ job: job.id, err: (err as Error).message }, 'job callback refused');
          return 'refused';
        }
        this.#o.logger.warn({ job: job.id, attempt, err: (err as Error).message }, 'job callback failed');
      }
      if (!retryable || attempt === this.#o.attempts) break;
      await this.#sleep(this.#o.backoffMs * 2 ** (attempt - 1));
    }
    return 'failed';
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const onAbort = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#ac.signal.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      this.#ac.signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Waits up to `graceMs` for webhooks in progress, then aborts the rest and closes connections. */
  async close(graceMs = 2_000): Promise<void> {
    if (this.#pending.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...this.#pending]),
        new Promise<void>((r) => {
          timer = setTimeout(r, graceMs);
        }),
      ]);
      clearTimeout(timer);
    }
    this.#ac.abort();
    await Promise.allSettled([...this.#pending]);
    await Promise.all([...this.#agents.values()].map((a) => a.close()));
    this.#agents.clear();
  }
}
