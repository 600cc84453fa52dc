/**
 * The one in-memory store of every route cache (SPEC §6 `cache_size`): stored responses keyed by
 * route, host and path with query, each key holding up to `vary_limit` variants (Vary), all entries in
 * one least-recently-used order under one byte budget. Bodies are the chunks as they arrived (no copy).
 */
import { parseAcceptEncoding } from '../proxy/compress.ts';
import type { HeaderObject, Policy } from './policy.ts';

export interface StoredResponse {
  readonly key: string;
  readonly route: string;
  /** Path with query, for purges. */
  readonly path: string;
  readonly status: number;
  headers: HeaderObject;
  policy: Policy;
  readonly chunks: readonly Buffer[];
  readonly bodySize: number;
  /** Request header values of the response's Vary names when it was stored (names lower case). */
  readonly vary: readonly [string, string | undefined][];
  /** Bytes charged against cache_size. */
  readonly cost: number;
  /** A background refresh (stale-while-revalidate) is running. */
  refreshing: boolean;
}

export interface CacheCounters {
  entries: number;
  bytes: number;
  evictions: number;
}

const CODINGS = ['br', 'gzip', 'zstd'] as const;

/**
 * The request's value of a Vary-named header, normalised for comparison. Accept-Encoding becomes the
 * set of codings Sluice can produce that it accepts (`br,gzip`), so that the many spellings of one
 * browser's header share one compressed variant.
 */
export function varyValue(headers: HeaderObject, name: string): string | undefined {
  const v = headers[name];
  if (v === undefined) return undefined;
  if (name === 'accept-encoding') {
    const q = parseAcceptEncoding(v);
    const star = q.get('*') ?? 0;
    return CODINGS.filter((c) => (q.get(c) ?? star) > 0).join(',');
  }
  return v
    .trim()
    .replace(/\s*,\s*/g, ',')
    .toLowerCase();
}

export function cacheKey(route: string, host: string | undefined, path: string): string {
  return `${route}\n${(host ?? '').toLowerCase()}\n${path}`;
}

function costOf(headers: HeaderObject, bodySize: number, key: string): number {
  let n = bodySize + key.length + 256;
  for (const k in headers) n += k.length + headers[k].length + 16;
  return n;
}

export class CacheStore {
  readonly capacity: number;
  /** Every entry, least recently used first. */
  readonly #lru = new Set<StoredResponse>();
  readonly #byKey = new Map<string, StoredResponse[]>();
  readonly counters: CacheCounters = { entries: 0, bytes: 0, evictions: 0 };

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  /** The variants stored under `key` (for Cache-Status: miss vs vary-miss). */
  has(key: string): boolean {
    return this.#byKey.has(key);
  }

  /** The stored variant matching the request's headers, marked recently used. */
  lookup(key: string, reqHeaders: HeaderObject): StoredResponse | undefined {
    const variants = this.#byKey.get(key);
    if (variants === undefined) return undefined;
    for (const e of variants) {
      if (e.vary.every(([name, value]) => varyValue(reqHeaders, name) === value)) {
        this.#lru.delete(e);
        this.#lru.add(e);
        return e;
      }
    }
    return undefined;
  }

  /**
   * Stores a complete response, replacing the variant with the same Vary values; the oldest variant
   * goes beyond `varyLimit`, the least recently used entries beyond the byte budget. Returns false
   * when it is larger than the whole budget.
   */
  put(init: Omit<StoredResponse, 'cost' | 'refreshing'>, varyLimit: number): StoredResponse | undefined {
    const cost = costOf(init.headers, init.bodySize, init.key);
    if (cost > this.capacity) return undefined;
    const entry: StoredResponse = { ...init, cost, refreshing: false };
    const variants = this.#byKey.get(init.key) ?? [];
    const same = variants.find(
      (e) =>
        e.vary.length === entry.vary.length &&
        e.vary.every(([n, v], i) => entry.vary[i][0] === n && entry.vary[i][1] === v),
    );
    if (same) this.#remove(same);
    const list = this.#byKey.get(init.key) ?? [];
    list.push(entry);
    this.#byKey.set(init.key, list);
    this.#lru.add(entry);
    this.counters.entries++;
    this.counters.bytes += cost;
    while (list.length > varyLimit) this.#evict(list[0]);
    for (const e of this.#lru) {
      if (this.counters.bytes <= this.capacity) break;
      this.#evict(e);
    }
    return entry;
  }

  /** Updates an entry's headers and policy in place (a 304 revalidation). */
  update(entry: StoredResponse, headers: HeaderObject, policy: Policy): void {
    if (!this.#lru.has(entry)) return;
    entry.headers = headers;
    entry.policy = policy;
    this.#lru.delete(entry);
    this.#lru.add(entry);
  }

  /** Drops every variant of a key (an unsafe request changed the resource). */
  invalidate(key: string): number {
    const variants = this.#byKey.get(key);
    if (variants === undefined) return 0;
    for (const e of [...variants]) this.#remove(e);
    return variants.length;
  }

  /**
   * Drops entries of `route` (every route when undefined) whose path is `path`, or starts with it when
   * it ends with `*` (every path when undefined). Returns how many.
   */
  purge(route: string | undefined, path: string | undefined): number {
    const prefix = path?.endsWith('*') ? path.slice(0, -1) : undefined;
    let n = 0;
    for (const e of [...this.#lru]) {
      if (route !== undefined && e.route !== route) continue;
      if (path !== undefined && (prefix !== undefined ? !e.path.startsWith(prefix) : e.path !== path))
        continue;
      this.#remove(e);
      n++;
    }
    return n;
  }

  /** Entries a reload left without a cached route. */
  retain(routes: ReadonlySet<string>): void {
    for (const e of [...this.#lru]) if (!routes.has(e.route)) this.#remove(e);
  }

  #evict(e: StoredResponse): void {
    this.#remove(e);
    this.counters.evictions++;
  }

  #remove(e: StoredResponse): void {
    if (!this.#lru.delete(e)) return;
    const list = this.#byKey.get(e.key);
    if (list !== undefined) {
      const i = list.indexOf(e);
      if (i !== -1) list.splice(i, 1);
      if (list.length === 0) this.#byKey.delete(e.key);
    }
    this.counters.entries--;
    this.counters.bytes -= e.cost;
  }
}
