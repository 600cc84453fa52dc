/**
 * sluice/upstream: the backend side of a timeout budget, with no dependencies.
 *
 *   deadline(req)            an AbortSignal that fires when the caller's x-timeout-ms budget (minus a
 *                            margin) runs out, counted from the first call for this request
 *   fetchWithDeadline(…)     fetch that passes what is left of the budget on as x-timeout-ms and
 *                            aborts when it ends
 *   timing(res)              named spans written as a Server-Timing header
 *
 * Works with node:http (IncomingMessage / ServerResponse), Express, Fastify (request / reply) and
 * fetch-style handlers (Request / Response). Plain JavaScript so that Node runs it from node_modules;
 * types in upstream.d.ts.
 */

const HEADER = 'x-timeout-ms';
const DEFAULT_MARGIN_MS = 50;

/** @type {WeakMap<object, { signal: AbortSignal, end: number }>} */
const byRequest = new WeakMap();
/** @type {WeakMap<AbortSignal, number>} */
const ends = new WeakMap();

/** Reads a header from node:http / Express / Fastify requests and fetch Requests. */
function headerOf(req, name) {
  if (req == null) return undefined;
  const h = req.headers ?? req.raw?.headers;
  if (h == null) return undefined;
  if (typeof h.get === 'function') return h.get(name) ?? undefined;
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The budget in ms the request carries, or undefined. */
export function budgetOf(req) {
  const v = headerOf(req, HEADER);
  if (typeof v !== 'string' || !/^\s*\d+\s*$/.test(v)) return undefined;
  return Number(v);
}

const NEVER = new AbortController().signal;

/**
 * @param {object} req
 * @param {{ margin?: number, fallback?: number }} [options]
 * @returns {AbortSignal}
 */
export function deadline(req, options = {}) {
  const key = req?.raw && typeof req.raw === 'object' ? req.raw : req;
  const known = key != null && typeof key === 'object' ? byRequest.get(key) : undefined;
  if (known) return known.signal;
  const margin = options.margin ?? DEFAULT_MARGIN_MS;
  const budget = budgetOf(req) ?? options.fallback;
  let signal = NEVER;
  let end = Number.POSITIVE_INFINITY;
  if (budget !== undefined) {
    const ms = Math.max(0, budget - margin);
    end = performance.now() + ms;
    signal = AbortSignal.timeout(ms);
    ends.set(signal, end);
  }
  if (key != null && typeof key === 'object') byRequest.set(key, { signal, end });
  return signal;
}

/** Milliseconds left before the deadline of a request or a deadline() signal; Infinity when none. */
export function remaining(from) {
  let end;
  let signal;
  if (from instanceof AbortSignal) {
    signal = from;
    end = ends.get(from);
  } else {
    signal = deadline(from);
    const key = from?.raw && typeof from.raw === 'object' ? from.raw : from;
    end = byRequest.get(key)?.end;
  }
  if (end === undefined) return Number.POSITIVE_INFINITY;
  // Timers may fire a fraction of a millisecond early: once the deadline fired, nothing is left.
  return signal.aborted ? 0 : Math.max(0, end - performance.now());
}

/**
 * fetch(input, init) bounded by `from` (a request: its deadline(); or an AbortSignal), sending what is
 * left of the budget as x-timeout-ms. Rejects with a TimeoutError at once when nothing is left.
 */
export async function fetchWithDeadline(input, init = {}, from) {
  const signal = from === undefined ? undefined : from instanceof AbortSignal ? from : deadline(from);
  const left = signal === undefined ? Number.POSITIVE_INFINITY : remaining(signal);
  if (signal?.aborted) throw signal.reason;
  if (left <= 0) throw new DOMException('the deadline has passed', 'TimeoutError');
  const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
  if (Number.isFinite(left)) headers.set(HEADER, String(Math.max(1, Math.floor(left))));
  const signals = [signal, init.signal].filter((s) => s != null);
  return fetch(input, {
    ...init,
    headers,
    signal: signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals),
  });
}

const TOKEN = /[^!#$%&'*+\-.^_`|~0-9A-Za-z]/g;

/**
 * Server-Timing spans. With a node:http / Express ServerResponse (or a Fastify reply) the header is
 * (re)set each time a span ends, as long as the headers have not been sent; without one, header()
 * gives the value and apply(response) adds it to a fetch Response.
 */
export function timing(res) {
  const target = res == null ? undefined : typeof res.setHeader === 'function' ? res : res.raw;
  /** @type {Map<string, { dur: number, desc: string | undefined }>} */
  const entries = new Map();
  const header = () =>
    [...entries]
      .map(([name, e]) => `${name};${e.desc ? `desc="${e.desc}";` : ''}dur=${Math.round(e.dur * 10) / 10}`)
      .join(', ');
  const write = () => {
    if (target && !target.headersSent && typeof target.setHeader === 'function')
      target.setHeader('Server-Timing', header());
  };
  const t = {
    /** Records a duration in ms (summed with earlier ones of the same name). */
    mark(name, ms, desc) {
      const key = String(name).replace(TOKEN, '_') || 'span';
      const e = entries.get(key);
      if (e) e.dur += ms;
      else
        entries.set(key, {
          dur: ms,
          desc: desc === undefined ? undefined : String(desc).replace(/["\\]/g, ''),
        });
      write();
      return t;
    },
    /** Starts a span; call the returned function to end it. */
    start(name, desc) {
      const t0 = performance.now();
      let ended = false;
      return () => {
        if (ended) return;
        ended = true;
        t.mark(name, performance.now() - t0, desc);
      };
    },
    /** Runs fn and records its duration under name, also when it throws or rejects. */
    async span(name, fn, desc) {
      const end = t.start(name, desc);
      try {
        return await fn();
      } finally {
        end();
      }
    },
    header,
    /** name → ms, as recorded so far. */
    entries() {
      return Object.fromEntries([...entries].map(([name, e]) => [name, e.dur]));
    },
    /** A fetch Response with the Server-Timing header added (a copy when its headers are immutable). */
    apply(response) {
      const value = header();
      if (!value) return response;
      try {
        response.headers.append('Server-Timing', value);
        return response;
      } catch {
        const headers = new Headers(response.headers);
        headers.append('Server-Timing', value);
        return new Response(response.body, {
          status: response.status,
          statusText: response.statusText,
          headers,
        });
      }
    },
  };
  return t;
}
