/**
 * The response cache of SPEC §6 on the request path: what the Gateway calls for a request on a route
 * with `cache`, and the ResponseTap the Exchange runs for it.
 *
 *   fresh copy                  → answered here (Cache-Status `hit`), conditional requests get 304
 *   stale within s-w-r          → answered here, one background refresh (`hit; detail=stale-while-revalidate`)
 *   stale                       → forwarded with its validators; a 304 is merged and the copy served
 *   miss, another one in flight → waits for it and streams the same response (`fwd=miss; collapsed`)
 *   miss                        → forwarded; a storable response is kept while it streams to the client
 *   upstream fails, any phase   → a stale copy within stale-if-error answers instead (`hit; detail=stale-if-error`)
 *   unsafe method               → forwarded; a success invalidates the URL, Location and Content-Location
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CacheConfig } from '../config/resolve.ts';
import { cutResponse, type GatewayError, sendProblem, upstreamTimeout } from '../errors.ts';
import { type AccessLogEntry, answeredEntry } from '../observability/access-log.ts';
import { pickEncoding } from '../proxy/compress.ts';
import { VIA } from '../proxy/headers.ts';
import type { RouteRuntime } from '../proxy/route-runtime.ts';
import { shapeResponse } from '../proxy/shape.ts';
import type { ResponseTap } from '../proxy/tap.ts';
import {
  afterNotModified,
  directive,
  type HeaderObject,
  notModified,
  type Policy,
  type RequestView,
  storablePolicy,
  usability,
  usableOnError,
  validatorsOf,
} from './policy.ts';
import { CacheStore, cacheKey, type StoredResponse, varyValue } from './store.ts';

const now = performance.now.bind(performance);
const NAME = 'sluice';
/** How long a key whose response could not be stored skips coalescing, and how many such keys are kept. */
const PASS_MS = 30_000;
const MAX_PASSES = 10_000;
const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
/** Failures a stale copy may stand in for: the upstream's, never the client's. */
const UPSTREAM_FAILURES = new Set([
  'upstream-timeout',
  'upstream-unreachable',
  'upstream-reset',
  'upstream-tls',
  'bad-gateway',
  'no-healthy-upstream',
  'circuit-open',
  'overloaded',
  'budget-exhausted',
]);
/** Stored headers that describe one exchange rather than the resource. */
const NOT_STORED = new Set([
  'server-timing',
  'x-request-id',
  'age',
  'connection',
  'keep-alive',
  'transfer-encoding',
]);
/** Headers a 304 to a client carries (RFC 9110 §15.4.5). */
const NOT_MODIFIED_HEADERS = [
  'cache-control',
  'content-location',
  'date',
  'etag',
  'expires',
  'vary',
  'last-modified',
];

export type CacheResult = 'hit' | 'stale' | 'miss' | 'revalidated' | 'bypass' | 'collapsed';

/** What the cache needs of one request from the Gateway. */
export interface CacheRequest {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly rt: RouteRuntime;
  readonly cfg: CacheConfig;
  readonly requestId: string;
  readonly startedAt: number;
  /** Path and query as received: the cache key and the log's path. */
  readonly logPath: string;
  /** Path and query as forwarded (strip_prefix applied). */
  readonly path: string;
  /** The request headers as forwarded (flat list). */
  readonly headers: readonly string[];
  /** ms; 0 = none. */
  readonly budget: number;
  /**
   * Starts the upstream exchange with `tap`; `validators` replace the client's own conditional
   * headers (a revalidation of a stored copy).
   */
  forward(tap: ResponseTap, validators?: readonly string[]): void;
  /** The access-log line of a request the cache answered itself. */
  log(entry: AccessLogEntry): void;
}

/** Node's request headers: lower-case names, repeats already joined (only Set-Cookie stays a list). */
function requestHeaders(req: IncomingMessage): HeaderObject {
  return req.headers as HeaderObject;
}

/** Whether a response's Cache-Control forbids a shared cache outright: skips the full decision. */
function uncacheable(flat: readonly string[]): boolean {
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i];
    if (k.length !== 13 || k.toLowerCase() !== 'cache-control') continue;
    const v = flat[i + 1].toLowerCase();
    if (v.includes('no-store') || v.includes('private')) return true;
  }
  return false;
}

function gatewayHeaders(requestId: string, startedAt: number): string[] {
  return [
    'via',
    VIA,
    'x-request-id',
    requestId,
    'server-timing',
    `sluice;desc="cache";dur=${Math.round((now() - startedAt) * 10) / 10}`,
  ];
}

/** Writes a stored response to a client: 304 when its conditional request is satisfied. */
function sendStored(
  r: CacheRequest,
  e: StoredResponse,
  reqHeaders: HeaderObject,
  method: string,
  gateway: readonly string[],
  cacheStatus: string,
): { status: number; bytes: number } {
  const res = r.res;
  const age = String(Math.max(0, Math.floor(e.policy.policy.age())));
  if (e.status === 200 && notModified(reqHeaders, e.headers)) {
    const headers: string[] = [];
    for (const k of NOT_MODIFIED_HEADERS) if (e.headers[k] !== undefined) headers.push(k, e.headers[k]);
    headers.push('age', age, ...gateway, 'cache-status', cacheStatus);
    shapeResponse(headers, r.rt, r.req, r.requestId, r.req.socket?.remoteAddress);
    res.writeHead(304, headers);
    res.end();
    return { status: 304, bytes: 0 };
  }
  const headers: string[] = [];
  for (const k in e.headers) if (k !== 'content-length') headers.push(k, e.headers[k]);
  headers.push('content-length', String(e.bodySize), 'age', age, ...gateway, 'cache-status', cacheStatus);
  // The route's response edits (SPEC §13) apply to served copies as to proxied responses: the store
  // keeps the upstream's headers, so per-request values are this request's.
  shapeResponse(headers, r.rt, r.req, r.requestId, r.req.socket?.remoteAddress);
  res.writeHead(e.status, headers);
  if (method === 'HEAD') {
    res.end();
    return { status: e.status, bytes: 0 };
  }
  for (const c of e.chunks) res.write(c);
  res.end();
  return { status: e.status, bytes: e.bodySize };
}

function logEntry(
  r: CacheRequest,
  status: number,
  outcome: 'cache_hit' | 'stale' | 'timeout' | 'upstream_error' | 'client_aborted',
  cacheStatus: string,
  bytesOut: number,
  err?: GatewayError,
): AccessLogEntry {
  const e = answeredEntry(
    {
      method: r.req.method ?? 'GET',
      path: r.logPath,
      requestId: r.requestId,
      startedAt: r.startedAt,
      client: r.req.socket?.remoteAddress,
      route: r.rt.name,
      upstream: r.rt.upstream.name,
      budgetMs: r.budget,
    },
    status,
    outcome,
    err?.code ?? null,
  );
  e.phase = err?.phase ?? null;
  e.bytes_out = bytesOut;
  e.cache = cacheStatus;
  return e;
}

export class ResponseCache {
  store: CacheStore;
  /** Misses being filled, by key: later misses for the key wait for them. */
  readonly #fills = new Map<string, Fill>();
  /**
   * Keys whose last response could not be stored ("hit-for-pass", as Varnish calls it), until when:
   * their misses are not made to wait for one another, since they would only be released to go
   * upstream one after the other. Bounded; the oldest are forgotten first.
   */
  readonly #passes = new Map<string, number>();
  /** Requests by route and result, for sluice_cache_requests_total. */
  readonly results = new Map<string, Map<CacheResult, number>>();

  constructor(capacity: number) {
    this.store = new CacheStore(capacity);
  }

  /** A reload: a new budget starts an empty store; routes without a cache lose their entries. */
  reload(capacity: number, cachedRoutes: ReadonlySet<string>): void {
    if (capacity !== this.store.capacity) {
      const evictions = this.store.counters.evictions;
      this.store = new CacheStore(capacity);
      this.store.counters.evictions = evictions;
    } else this.store.retain(cachedRoutes);
  }

  count(route: string, result: CacheResult): void {
    let m = this.results.get(route);
    if (m === undefined) this.results.set(route, (m = new Map()));
    m.set(result, (m.get(result) ?? 0) + 1);
  }

  /** A request on a route with a cache. */
  handle(r: CacheRequest): void {
    const method = r.req.method ?? 'GET';
    let reqHeaders = requestHeaders(r.req);
    const compress = r.rt.route.compress;
    if (compress !== undefined) {
      // Variants by the coding this route will choose, not by how the client spells Accept-Encoding.
      const ae = reqHeaders['accept-encoding'];
      const chosen = ae === undefined ? undefined : pickEncoding(compress.algorithms, ae);
      reqHeaders = { ...reqHeaders, 'accept-encoding': chosen ?? 'identity' };
    }
    const key = cacheKey(r.rt.name, r.req.headers.host, r.logPath);
    if (method !== 'GET' && method !== 'HEAD') {
      this.count(r.rt.name, 'bypass');
      return r.forward(new CacheTap(this, r, reqHeaders, key, { fwd: 'method', store: false }));
    }
    const cc = reqHeaders['cache-control'];
    if (reqHeaders.range !== undefined || directive(cc, 'no-store') !== undefined) {
      this.count(r.rt.name, 'bypass');
      return r.forward(new CacheTap(this, r, reqHeaders, key, { fwd: 'bypass', store: false }));
    }
    const auth = reqHeaders.authorization !== undefined;
    const known = this.store.has(key);
    let entry = this.store.lookup(key, reqHeaders);
    if (entry !== undefined && auth && !entry.policy.shareable) entry = undefined;
    if (entry !== undefined) {
      const use = usability(entry.policy, reqHeaders);
      if (use === 'fresh') {
        this.count(r.rt.name, 'hit');
        return this.#answer(r, entry, reqHeaders, `${NAME}; hit`, 'cache_hit');
      }
      if (use === 'stale-while-revalidate') {
        this.count(r.rt.name, 'stale');
        this.#answer(r, entry, reqHeaders, `${NAME}; hit; detail=stale-while-revalidate`, 'stale');
        return this.#refresh(r, entry, reqHeaders);
      }
      // Stale: forwarded with its validators; a 304 makes it fresh again.
      const forced = directive(cc, 'no-cache') !== undefined;
      return r.forward(
        new CacheTap(this, r, reqHeaders, key, { fwd: forced ? 'request' : 'stale', store: true, entry }),
        validatorsOf(entry.headers),
      );
    }
    const fwd = known ? 'vary-miss' : 'miss';
    if (method === 'GET' && !auth && !this.#passing(key)) {
      const fill = this.#fills.get(key);
      if (fill?.open) {
        this.count(r.rt.name, 'collapsed');
        return fill.wait(r, reqHeaders);
      }
      const leader = new Fill(this, key);
      this.#fills.set(key, leader);
      this.count(r.rt.name, 'miss');
      return r.forward(new CacheTap(this, r, reqHeaders, key, { fwd, store: true, fill: leader }));
    }
    this.count(r.rt.name, 'miss');
    r.forward(new CacheTap(this, r, reqHeaders, key, { fwd, store: method === 'GET' }));
  }

  /** The response for `key` was not storable: its next misses go upstream without waiting. */
  pass(key: string): void {
    this.#passes.delete(key);
    this.#passes.set(key, Date.now() + PASS_MS);
    if (this.#passes.size > MAX_PASSES) this.#passes.delete(this.#passes.keys().next().value as string);
  }

  /** A storable response came for `key`: misses may wait for one another again. */
  unpass(key: string): void {
    this.#passes.delete(key);
  }

  #passing(key: string): boolean {
    const until = this.#passes.get(key);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    this.#passes.delete(key);
    return false;
  }

  /** The fill of `key` is over (stored, released or failed): new misses go upstream again. */
  endFill(key: string, fill: Fill): void {
    if (this.#fills.get(key) === fill) this.#fills.delete(key);
  }

  /** A stored copy for a request whose upstream failed, when stale-if-error allows it. */
  staleFor(key: string, reqHeaders: HeaderObject): StoredResponse | undefined {
    const e = this.store.lookup(key, reqHeaders);
    if (e === undefined || !usableOnError(e.policy)) return undefined;
    if (reqHeaders.authorization !== undefined && !e.policy.shareable) return undefined;
    return e;
  }

  #answer(
    r: CacheRequest,
    e: StoredResponse,
    reqHeaders: HeaderObject,
    cacheStatus: string,
    outcome: 'cache_hit' | 'stale',
  ): void {
    const sent = sendStored(
      r,
      e,
      reqHeaders,
      r.req.method ?? 'GET',
      gatewayHeaders(r.requestId, r.startedAt),
      cacheStatus,
    );
    r.log(logEntry(r, sent.status, outcome, cacheStatus, sent.bytes));
  }

  /** stale-while-revalidate: one background request refreshes the copy under the route's budget. */
  #refresh(r: CacheRequest, e: StoredResponse, reqHeaders: HeaderObject): void {
    if (e.refreshing) return;
    const target = r.rt.upstream.pick();
    if (target === undefined) return;
    e.refreshing = true;
    const headers: string[] = [];
    for (let i = 0; i < r.headers.length; i += 2) {
      const k = r.headers[i].toLowerCase();
      if (k !== 'if-none-match' && k !== 'if-modified-since') headers.push(r.headers[i], r.headers[i + 1]);
    }
    headers.push(...validatorsOf(e.headers));
    const budget = r.budget > 0 ? r.budget : 30_000;
    headers.push('x-timeout-ms', String(budget));
    const view: RequestView = { method: 'GET', url: r.logPath, headers: reqHeaders };
    const cfg = r.cfg;
    target.pool
      .request({
        path: target.basePath + r.path,
        method: 'GET',
        headers,
        signal: AbortSignal.timeout(budget),
      })
      .then(async (res) => {
        const resHeaders: HeaderObject = {};
        for (const [k, v] of Object.entries(res.headers))
          if (v !== undefined && !NOT_STORED.has(k)) resHeaders[k] = Array.isArray(v) ? v.join(', ') : v;
        if (res.statusCode === 304) {
          await res.body.dump();
          const next = afterNotModified(cfg, e.policy, e.status, view, e.headers, resHeaders);
          if (next) this.store.update(e, next.headers, next.policy);
          return;
        }
        const policy =
          res.statusCode < 500 ? storablePolicy(cfg, view, res.statusCode, resHeaders) : undefined;
        if (policy === undefined) {
          await res.body.dump();
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const c of res.body) {
          size += (c as Buffer).length;
          if (size > cfg.maxEntry) {
            res.body.destroy();
            return;
          }
          chunks.push(c as Buffer);
        }
        this.store.put(
          {
            key: e.key,
            route: e.route,
            path: e.path,
            status: res.statusCode,
            headers: resHeaders,
            policy,
            chunks: [Buffer.concat(chunks, size)],
            bodySize: size,
            vary: varyOf(resHeaders, reqHeaders),
          },
          cfg.varyLimit,
        );
      })
      .catch(() => {
        // A failed refresh leaves the stale copy; the next request past the window revalidates.
      })
      .finally(() => {
        e.refreshing = false;
      });
  }
}

function varyOf(resHeaders: HeaderObject, reqHeaders: HeaderObject): [string, string | undefined][] {
  const vary = resHeaders.vary;
  if (!vary) return [];
  return vary
    .split(',')
    .map((v) => v.trim().toLowerCase())
    .filter(Boolean)
    .map((name) => [name, varyValue(reqHeaders, name)]);
}

interface TapOptions {
  /** Cache-Status `fwd` value when the response is forwarded. */
  readonly fwd: 'method' | 'bypass' | 'miss' | 'vary-miss' | 'stale' | 'request';
  /** Whether a storable response is stored. */
  readonly store: boolean;
  /** The stale copy being revalidated. */
  readonly entry?: StoredResponse;
  /** The fill that concurrent misses wait for. */
  readonly fill?: Fill;
}

/** One forwarded request of a cached route, as the Exchange reports its response. */
class CacheTap implements ResponseTap {
  readonly #cache: ResponseCache;
  readonly #r: CacheRequest;
  readonly #reqHeaders: HeaderObject;
  readonly #key: string;
  readonly #o: TapOptions;
  #storing:
    | { status: number; headers: HeaderObject; policy: Policy; chunks: Buffer[]; size: number }
    | undefined;
  answeredStatus = 0;
  answeredOutcome: 'cache_hit' | 'stale' = 'cache_hit';
  answeredBytes = 0;
  cacheStatus: string | undefined;

  constructor(cache: ResponseCache, r: CacheRequest, reqHeaders: HeaderObject, key: string, o: TapOptions) {
    this.#cache = cache;
    this.#r = r;
    this.#reqHeaders = reqHeaders;
    this.#key = key;
    this.#o = o;
    this.cacheStatus = `${NAME}; fwd=${o.fwd}`;
  }

  get #view(): RequestView {
    return { method: this.#r.req.method ?? 'GET', url: this.#r.logPath, headers: this.#reqHeaders };
  }

  head(status: number, headers: string[], gateway: readonly string[]): boolean {
    const r = this.#r;
    const o = this.#o;
    const cache = this.#cache;
    if (o.fwd === 'method') {
      if (UNSAFE.has(r.req.method ?? '') && status < 400) this.#invalidate(headers);
      headers.push('cache-status', (this.cacheStatus = `${NAME}; fwd=method; fwd-status=${status}`));
      return false;
    }
    const fwdStatus = o.fwd === 'stale' || o.fwd === 'request' ? `; fwd-status=${status}` : '';
    const entry = o.entry;
    if (entry !== undefined && status === 304) {
      const resHeaders = storedHeaders(headers);
      const next = afterNotModified(r.cfg, entry.policy, entry.status, this.#view, entry.headers, resHeaders);
      if (next !== undefined) {
        cache.store.update(entry, next.headers, next.policy);
        cache.count(r.rt.name, 'revalidated');
        return this.#serve(entry, `${NAME}; fwd=${o.fwd}; fwd-status=304`, gateway, 'cache_hit');
      }
    }
    if (status >= 500) {
      const stale = cache.staleFor(this.#key, this.#reqHeaders);
      if (stale !== undefined) {
        o.fill?.fail(undefined, true);
        cache.count(r.rt.name, 'stale');
        return this.#serve(stale, `${NAME}; hit; detail=stale-if-error`, gateway, 'stale');
      }
    }
    let stored = false;
    if (o.store && r.req.method === 'GET' && !uncacheable(headers)) {
      const resHeaders = storedHeaders(headers);
      const length = Number(resHeaders['content-length'] ?? '0');
      const policy =
        length <= r.cfg.maxEntry ? storablePolicy(r.cfg, this.#view, status, resHeaders) : undefined;
      if (policy !== undefined) {
        this.#storing = { status, headers: resHeaders, policy, chunks: [], size: 0 };
        stored = true;
        o.fill?.begin(status, resHeaders, varyOf(resHeaders, this.#reqHeaders), policy);
      }
    }
    if (!stored) {
      if (o.store && r.req.method === 'GET') cache.pass(this.#key);
      o.fill?.release();
    } else cache.unpass(this.#key);
    this.cacheStatus = `${NAME}; fwd=${o.fwd}${fwdStatus}${stored ? '; stored' : ''}`;
    headers.push('cache-status', this.cacheStatus);
    return false;
  }

  data(chunk: Buffer): void {
    const s = this.#storing;
    if (s === undefined) return;
    s.size += chunk.length;
    if (s.size > this.#r.cfg.maxEntry) {
      // Larger than max_entry after all: streams through uncached.
      this.#storing = undefined;
      this.#o.fill?.overflow(chunk);
      return;
    }
    s.chunks.push(chunk);
    this.#o.fill?.push(chunk);
  }

  end(): void {
    const s = this.#storing;
    this.#storing = undefined;
    if (s !== undefined) {
      const r = this.#r;
      this.#cache.store.put(
        {
          key: this.#key,
          route: r.rt.name,
          path: r.logPath,
          status: s.status,
          headers: s.headers,
          policy: s.policy,
          // One exact-size copy: the chunks are views into the socket's larger read buffers, which
          // they would otherwise keep alive (and cache_size would not see).
          chunks: [Buffer.concat(s.chunks, s.size)],
          bodySize: s.size,
          vary: varyOf(s.headers, this.#reqHeaders),
        },
        r.cfg.varyLimit,
      );
    }
    this.#o.fill?.end();
  }

  abort(): void {
    this.#storing = undefined;
    this.#o.fill?.fail();
  }

  rescue(err: GatewayError): boolean {
    const fill = this.#o.fill;
    fill?.fail(err);
    if (!UPSTREAM_FAILURES.has(err.code) || this.#o.fwd === 'method') return false;
    const stale = this.#cache.staleFor(this.#key, this.#reqHeaders);
    if (stale === undefined) return false;
    this.#cache.count(this.#r.rt.name, 'stale');
    return this.#serve(
      stale,
      `${NAME}; hit; detail=stale-if-error`,
      gatewayHeaders(this.#r.requestId, this.#r.startedAt),
      'stale',
    );
  }

  #serve(
    e: StoredResponse,
    cacheStatus: string,
    gateway: readonly string[],
    outcome: 'cache_hit' | 'stale',
  ): true {
    const r = this.#r;
    this.cacheStatus = cacheStatus;
    this.answeredOutcome = outcome;
    const sent = sendStored(r, e, this.#reqHeaders, r.req.method ?? 'GET', gateway, cacheStatus);
    this.answeredStatus = sent.status;
    this.answeredBytes = sent.bytes;
    return true;
  }

  /** RFC 9111 §4.4: a successful unsafe request invalidates its URL and the Location/Content-Location it names. */
  #invalidate(headers: readonly string[]): void {
    const r = this.#r;
    const store = this.#cache.store;
    store.invalidate(this.#key);
    const host = r.req.headers.host;
    for (let i = 0; i < headers.length; i += 2) {
      const k = headers[i].toLowerCase();
      if (k !== 'location' && k !== 'content-location') continue;
      try {
        const u = new URL(headers[i + 1], `http://${host ?? 'localhost'}${r.logPath}`);
        // Only on the same host (RFC 9111 §4.4: never another origin's entries).
        if (u.host.toLowerCase() === (host ?? 'localhost').toLowerCase())
          store.invalidate(cacheKey(r.rt.name, host, u.pathname + u.search));
      } catch {
        // An unparsable Location invalidates nothing more.
      }
    }
  }
}

/** Response headers (flat, as sent) to keep with a stored copy. */
function storedHeaders(flat: readonly string[]): HeaderObject {
  const out: HeaderObject = {};
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i].toLowerCase();
    if (NOT_STORED.has(k)) continue;
    out[k] = k in out ? `${out[k]}, ${flat[i + 1]}` : flat[i + 1];
  }
  return out;
}

interface Waiter {
  readonly r: CacheRequest;
  readonly reqHeaders: HeaderObject;
  timer: NodeJS.Timeout | undefined;
  streaming: boolean;
  bytes: number;
  status: number;
  onClose: () => void;
}

/**
 * Coalescing (SPEC §6): the first miss of a key fills it; concurrent misses wait here and stream the
 * same response as it arrives. A waiter whose own budget ends before the response begins gets its own
 * 504; when the response turns out not to be storable, or the fill fails, each waiter is forwarded on
 * its own (or served stale when stale-if-error allows).
 */
class Fill {
  readonly #cache: ResponseCache;
  readonly #key: string;
  readonly #waiters = new Set<Waiter>();
  #head:
    | { status: number; headers: HeaderObject; vary: [string, string | undefined][]; policy: Policy }
    | undefined;
  readonly #chunks: Buffer[] = [];
  /** New waiters may still join (the response has not overflowed or ended). */
  open = true;

  constructor(cache: ResponseCache, key: string) {
    this.#cache = cache;
    this.#key = key;
  }

  wait(r: CacheRequest, reqHeaders: HeaderObject): void {
    const w: Waiter = {
      r,
      reqHeaders,
      timer: undefined,
      streaming: false,
      bytes: 0,
      status: 0,
      onClose: () => {
        if (!this.#waiters.delete(w)) return;
        clearTimeout(w.timer);
        r.log(
          logEntry(
            r,
            w.streaming ? w.status : 499,
            'client_aborted',
            `${NAME}; fwd=miss; collapsed`,
            w.bytes,
          ),
        );
      },
    };
    this.#waiters.add(w);
    r.res.once('close', w.onClose);
    if (r.budget > 0) {
      const left = r.startedAt + r.budget - now();
      w.timer = setTimeout(() => this.#expire(w), Math.max(0, left));
    }
    if (this.#head !== undefined) this.#start(w);
  }

  /** The leader's response is storable: waiters whose Vary values match stream it. */
  begin(status: number, headers: HeaderObject, vary: [string, string | undefined][], policy: Policy): void {
    this.#head = { status, headers, vary, policy };
    for (const w of [...this.#waiters]) this.#start(w);
  }

  push(chunk: Buffer): void {
    this.#chunks.push(chunk);
    for (const w of this.#waiters) if (w.streaming) this.#write(w, chunk);
  }

  /** Larger than max_entry: no more joiners, nothing retained; the streaming waiters get the rest. */
  overflow(chunk: Buffer): void {
    this.open = false;
    this.#cache.endFill(this.#key, this);
    this.#chunks.length = 0;
    for (const w of this.#waiters) if (w.streaming) this.#write(w, chunk);
  }

  end(): void {
    this.open = false;
    this.#cache.endFill(this.#key, this);
    for (const w of [...this.#waiters]) {
      if (!w.streaming) continue;
      this.#done(w);
      w.r.res.end();
      w.r.log(logEntry(w.r, w.status, 'cache_hit', `${NAME}; fwd=miss; collapsed`, w.bytes));
    }
    // Waiters that did not match the stored variant go on their own.
    this.release();
  }

  /** Not storable: every waiter goes upstream on its own. */
  release(): void {
    this.open = false;
    this.#cache.endFill(this.#key, this);
    for (const w of [...this.#waiters]) {
      if (w.streaming) continue;
      this.#done(w);
      w.r.forward(new CacheTap(this.#cache, w.r, w.reqHeaders, this.#key, { fwd: 'miss', store: true }));
    }
  }

  /** The leader failed: streaming waiters are cut; the others are served stale or go on their own. */
  fail(err?: GatewayError, staleOk = err !== undefined): void {
    if (!this.open && this.#waiters.size === 0) return;
    this.open = false;
    this.#cache.endFill(this.#key, this);
    for (const w of [...this.#waiters]) {
      this.#done(w);
      const r = w.r;
      if (w.streaming) {
        cutResponse(r.res);
        r.log(logEntry(r, w.status, 'upstream_error', `${NAME}; fwd=miss; collapsed`, w.bytes, err));
        continue;
      }
      // A stale copy serves them at once (no stampede on a failing upstream); else each goes on its own.
      if (staleOk && this.#serveStale(w, err)) continue;
      r.forward(new CacheTap(this.#cache, r, w.reqHeaders, this.#key, { fwd: 'miss', store: true }));
    }
  }

  /** A waiter answered from a stale copy within stale-if-error; false when there is none. */
  #serveStale(w: Waiter, err: GatewayError | undefined): boolean {
    const stale = this.#cache.staleFor(this.#key, w.reqHeaders);
    if (stale === undefined) return false;
    const r = w.r;
    this.#cache.count(r.rt.name, 'stale');
    const cacheStatus = `${NAME}; hit; detail=stale-if-error`;
    const gateway = gatewayHeaders(r.requestId, r.startedAt);
    const sent = sendStored(r, stale, w.reqHeaders, r.req.method ?? 'GET', gateway, cacheStatus);
    r.log(logEntry(r, sent.status, 'stale', cacheStatus, sent.bytes, err));
    return true;
  }

  #start(w: Waiter): void {
    const head = this.#head;
    if (head === undefined || w.streaming) return;
    if (!head.vary.every(([name, value]) => varyValue(w.reqHeaders, name) === value)) return;
    w.streaming = true;
    clearTimeout(w.timer);
    const r = w.r;
    const headers: string[] = [];
    for (const k in head.headers) headers.push(k, head.headers[k]);
    headers.push(...gatewayHeaders(r.requestId, r.startedAt), 'cache-status', `${NAME}; fwd=miss; collapsed`);
    shapeResponse(headers, r.rt, r.req, r.requestId, r.req.socket?.remoteAddress);
    w.status = head.status;
    r.res.writeHead(head.status, headers);
    for (const c of this.#chunks) this.#write(w, c);
  }

  #write(w: Waiter, chunk: Buffer): void {
    if (w.r.req.method === 'HEAD') return;
    w.bytes += chunk.length;
    // Bounded by max_entry: the chunks are the stored copy's own, not copies.
    w.r.res.write(chunk);
  }

  #done(w: Waiter): void {
    this.#waiters.delete(w);
    clearTimeout(w.timer);
    w.r.res.off('close', w.onClose);
  }

  /** A waiter's own budget ran out before the response began: its own 504. */
  #expire(w: Waiter): void {
    if (w.streaming || !this.#waiters.has(w)) return;
    this.#done(w);
    const r = w.r;
    const err = upstreamTimeout('total', r.rt.name, r.rt.upstream.name, r.budget);
    if (this.#serveStale(w, err)) return;
    const cacheStatus = `${NAME}; fwd=miss; collapsed`;
    sendProblem(r.res, err, {
      requestId: r.requestId,
      elapsedMs: now() - r.startedAt,
      attempts: 0,
      headers: ['cache-status', cacheStatus],
    });
    r.log(logEntry(r, err.status, 'timeout', cacheStatus, 0, err));
  }
}
