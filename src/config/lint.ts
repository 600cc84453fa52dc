/**
 * The lint of `sluice check` (SPEC §1, §11): settings that are valid one by one but do not work
 * together, per route after precedence (route > upstream > defaults), routes that can never match,
 * and the timeout chain around Sluice (client > API Gateway > load balancer > route > app).
 *
 * Every finding has a code (lint-codes.ts) and can be silenced where it is intended: on its route
 * (`lint: { ignore: [code] }`) or for the whole file (top-level `lint: { ignore: [code] }`).
 *
 * errors (`sluice check` exits 1): ttfb set above total, async `after` not below total, and a broken
 * chain (an outer layer giving up before what is inside it: the user gets that layer's bare 504).
 * warnings: connect above total, retries that cannot fit the total, ttfb below total (total is never
 * reached), routes nothing bounds, routes that never match.
 *
 * A phase timeout left at its built-in default is a backstop, not a choice (ttfb 30s above the 29s
 * total is the shipped default), so connect/ttfb above total are reported only when set to another
 * value.
 */

import type { LintCode } from './lint-codes.ts';
import { BUILTIN_TIMEOUTS, type ChainConfig, type EffectiveConfig, type EffectiveRoute } from './resolve.ts';
import { formatDuration } from './units.ts';

export interface LintFinding {
  level: 'warning' | 'error';
  code: LintCode;
  /** The route it is about; undefined for the chain as a whole. */
  route: string | undefined;
  message: string;
}

const d = formatDuration;
/** A value just under `ms`, to suggest: 60s → 59s, 15m → 14m. */
const under = (ms: number) =>
  d(ms >= 120_000 ? ms - 60_000 : ms > 2_000 ? ms - 1_000 : Math.max(1, Math.floor(ms / 2)));
/** A value just over `ms`, to suggest: 60s → 61s, 15m → 16m. */
const over = (ms: number) => d(ms >= 120_000 ? ms + 60_000 : ms + 1_000);

/** AWS API Gateway's integration timeout (REST and HTTP APIs). */
export const APIGW_TIMEOUT = 29_000;

/**
 * Lints an effective config. `chain` (from `--chain`) overrides the file's `chain:` key by key.
 * Silenced findings are left out.
 */
export function lintConfig(config: EffectiveConfig, chain: Partial<ChainConfig> = {}): LintFinding[] {
  const out: LintFinding[] = [];
  const c: ChainConfig = { ...config.chain, ...stripUndefined(chain) };
  for (const [i, r] of config.routes.entries()) {
    const add = (level: LintFinding['level'], code: LintCode, message: string) =>
      out.push({ level, code, route: r.name, message: `route '${r.name}' ${message}` });
    lintTimeouts(r, add);
    lintMatch(r, config.routes.slice(0, i), add);
    lintChain(r, c, add, out);
  }
  const seen = new Set<string>();
  return out.filter((f) => {
    if (config.lintIgnore.includes(f.code)) return false;
    if (f.route !== undefined) {
      const r = config.routes.find((x) => x.name === f.route);
      if (r?.lintIgnore?.includes(f.code)) return false;
    }
    // A chain finding about two layers (not a route) is reported once.
    const key = `${f.code}\n${f.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

type Add = (level: LintFinding['level'], code: LintCode, message: string) => void;

function lintTimeouts(r: EffectiveRoute, add: Add): void {
  const t = r.timeouts;
  const asyncAfter = r.async && r.async.mode !== 'queue' ? r.async.after : undefined;
  if (t.total > 0) {
    if (t.ttfb > t.total && t.ttfb !== BUILTIN_TIMEOUTS.ttfb) {
      add(
        'error',
        'ttfb-above-total',
        `ttfb ${d(t.ttfb)} exceeds total ${d(t.total)}: the total budget ends the wait for response headers first; lower ttfb or raise total`,
      );
    }
    if (t.connect > t.total && t.connect !== BUILTIN_TIMEOUTS.connect) {
      add(
        'warning',
        'connect-above-total',
        `connect ${d(t.connect)} exceeds total ${d(t.total)}: the total budget ends a slow connect first`,
      );
    }
    if (r.retry && r.retry.attempts > 1) {
      const perTry = r.retry.per_try ?? t.ttfb;
      const what = r.retry.per_try !== undefined ? 'per_try' : 'ttfb (no per_try set)';
      if (perTry > 0 && r.retry.attempts * perTry > t.total) {
        add(
          'warning',
          'retry-exceeds-total',
          `retry: ${r.retry.attempts} attempts × ${what} ${d(perTry)} = ${d(r.retry.attempts * perTry)} exceeds total ${d(t.total)}: the last attempts never get their full budget; set retry.per_try to at most ${d(Math.floor(t.total / r.retry.attempts))}`,
        );
      }
    }
    if (asyncAfter !== undefined && asyncAfter >= t.total) {
      add(
        'error',
        'async-after-total',
        `async after ${d(asyncAfter)} is not below total ${d(t.total)}: the 504 comes before the 202 would; lower async.after or raise total`,
      );
    }
    // ttfb firing first makes total unreachable for a response that has not begun: the upstream is
    // told (x-timeout-ms) and cut at ttfb. Not on async routes whose 202 comes before ttfb (the call
    // then runs under async.timeout), nor where ttfb is retried (a per-try budget by design).
    const perTry = r.retry?.per_try;
    const offloadedFirst = r.async !== undefined && (r.async.mode === 'queue' || r.async.after < t.ttfb);
    const ttfbRetried = r.retry !== undefined && r.retry.attempts > 1 && r.retry.on.includes('ttfb');
    if (
      t.ttfb > 0 &&
      t.ttfb < t.total &&
      !(perTry !== undefined && perTry > 0 && perTry <= t.ttfb) &&
      !offloadedFirst &&
      !ttfbRetried
    ) {
      add(
        'warning',
        'ttfb-below-total',
        `ttfb ${d(t.ttfb)} fires before total ${d(t.total)}: the upstream is told x-timeout-ms ${t.ttfb} and a response not begun by then gets 504 phase ttfb, so total is never reached; raise ttfb to ${d(t.total)} or lower total to ${d(t.ttfb)} (on a streaming route meant to be bounded by ttfb and read: lint: { ignore: [ttfb-below-total] })`,
      );
    }
  } else if (t.send === 0 || t.ttfb === 0 || t.read === 0) {
    const open = (['send', 'ttfb', 'read'] as const).filter((p) => t[p] === 0);
    const how = { send: 'stops reading the request body', ttfb: 'never answers', read: 'stalls mid-body' };
    add(
      'warning',
      'unbounded',
      `has no total budget and no ${open.join('/')} timeout: nothing ends an exchange whose upstream ${open.map((p) => how[p]).join(' or ')}; set total or ${open.join('/')}`,
    );
  }
}

// ---- routes that can never match ---------------------------------------------------------------

function lintMatch(r: EffectiveRoute, earlier: readonly EffectiveRoute[], add: Add): void {
  const host = r.match.host;
  const port = host === undefined ? undefined : /^(\[[^\]]*\]|[^:]*):(\d*)$/.exec(host);
  if (port) {
    add(
      'warning',
      'host-with-port',
      `host '${host}' never matches: ports are not part of the match, use '${port[1]}'`,
    );
    return;
  }
  for (const e of earlier) {
    if (!covers(e, r)) continue;
    if (isCatchAll(e)) {
      add(
        'warning',
        'after-catch-all',
        `comes after the catch-all route '${e.name}' (path / with no host, methods or headers) and never matches; move it above '${e.name}'`,
      );
    } else {
      add(
        'warning',
        'shadowed',
        `never matches: route '${e.name}' before it matches every request it would (${describe(e)}); move it above '${e.name}' or narrow '${e.name}'`,
      );
    }
    return;
  }
}

function isCatchAll(r: EffectiveRoute): boolean {
  const m = r.match;
  return m.path === '' && !m.host && !m.methods && !(m.headers && Object.keys(m.headers).length > 0);
}

function describe(r: EffectiveRoute): string {
  const m = r.match;
  return [
    `path ${m.path || '/'}`,
    m.host ? `host ${m.host}` : '',
    m.methods ? `methods ${m.methods.join(',')}` : '',
    ...Object.entries(m.headers ?? {}).map(([k, v]) => `header ${k}=${v}`),
  ]
    .filter(Boolean)
    .join(', ');
}

/** Whether route `a` matches every request route `b` matches (first match wins: `b` is dead). */
function covers(a: EffectiveRoute, b: EffectiveRoute): boolean {
  const am = a.match;
  const bm = b.match;
  if (am.path !== '' && bm.path !== am.path && !bm.path.startsWith(`${am.path}/`)) return false;
  if (am.host !== undefined) {
    if (bm.host === undefined) return false;
    if (am.host !== bm.host) {
      if (!am.host.startsWith('*.')) return false;
      const suffix = am.host.slice(1);
      if (!(bm.host.endsWith(suffix) && bm.host.length > suffix.length)) return false;
    }
  }
  if (am.methods) {
    if (!bm.methods) return false;
    const set = new Set(am.methods);
    if (set.has('GET')) set.add('HEAD');
    if (!bm.methods.every((m) => set.has(m))) return false;
  }
  for (const [k, v] of Object.entries(am.headers ?? {})) if (bm.headers?.[k] !== v) return false;
  return true;
}

// ---- the chain around Sluice -----------------------------------------------------------------

interface Layer {
  /** How the finding names it: `chain.lb 60s`. */
  label: string;
  /** The key to change. */
  key: string;
  ms: number;
  code: LintCode;
}

function lintChain(r: EffectiveRoute, c: ChainConfig, add: Add, out: LintFinding[]): void {
  const layers: Layer[] = [];
  if (c.client !== undefined && c.client > 0)
    layers.push({
      label: `chain.client ${d(c.client)}`,
      key: 'chain.client',
      ms: c.client,
      code: 'chain-client',
    });
  if (c.apigw)
    layers.push({
      label: `API Gateway's ${d(APIGW_TIMEOUT)} integration timeout`,
      key: 'apigw',
      ms: APIGW_TIMEOUT,
      code: 'chain-apigw',
    });
  if (c.lb !== undefined && c.lb > 0)
    layers.push({ label: `chain.lb ${d(c.lb)}`, key: 'chain.lb', ms: c.lb, code: 'chain-lb' });

  // What the layers in front of Sluice wait for on this route: the 202 on an auto/prefer route,
  // nothing on a queue route (202 at once), else the route's total (every retry included).
  const t = r.timeouts;
  const mode = r.async?.mode;
  if (mode !== 'queue' && layers.length > 0) {
    const budget = mode === 'auto' || mode === 'prefer' ? (r.async?.after ?? 0) : t.total;
    const what = mode === 'auto' || mode === 'prefer' ? 'async.after' : 'total';
    const sluiceMs = budget > 0 ? budget : Number.POSITIVE_INFINITY;
    for (const [k, layer] of layers.entries()) {
      // Each layer must give up after everything inside it: after the earliest of them.
      let inner: Layer | undefined;
      let innerMs = sluiceMs;
      for (const l of layers.slice(k + 1))
        if (l.ms < innerMs) {
          inner = l;
          innerMs = l.ms;
        }
      if (layer.ms > innerMs) continue;
      const gives =
        layer.key === 'apigw'
          ? 'API Gateway answers its own 504 ("Endpoint request timed out")'
          : layer.key === 'chain.client'
            ? 'the client gives up'
            : 'the load balancer answers its own 504';
      if (inner) {
        // Two layers in the wrong order, whatever the route: reported once (deduplicated).
        const fix =
          layer.key === 'apigw'
            ? `lower ${inner.key} to under ${d(layer.ms)}`
            : `raise ${layer.key} to over ${d(inner.ms)} (e.g. ${over(inner.ms)})${inner.key === 'apigw' ? '' : ` or lower ${inner.key} to under ${d(layer.ms)}`}`;
        out.push({
          level: 'error',
          code: layer.code,
          route: undefined,
          message: `${layer.label} is not above ${inner.label}: ${gives} before the layer inside it does; ${fix}`,
        });
      } else if (budget === 0) {
        add(
          'error',
          layer.code,
          `has no total: ${layer.label} ends its slow requests first (${gives}); set a total under ${d(layer.ms)} (e.g. ${under(layer.ms)}) or use async with after under ${d(layer.ms)}`,
        );
      } else {
        const fix =
          what === 'total'
            ? `lower total to under ${d(layer.ms)} (e.g. ${under(layer.ms)}) or use async (after under ${d(layer.ms)})`
            : `lower async.after to under ${d(layer.ms)} (e.g. ${under(layer.ms)})`;
        const raise = layer.key === 'apigw' ? '' : `, or raise ${layer.key} to over ${d(budget)}`;
        add(
          'error',
          layer.code,
          `${what} ${d(budget)} is not below ${layer.label}: ${gives} ${what === 'total' ? 'before Sluice names the phase' : 'before the 202'}; ${fix}${raise}`,
        );
      }
    }
  }

  // The app inside: its own timeout must end a try before Sluice's per-try budget does, and the
  // route's total must leave room for the retries after an app timeout.
  if (c.app === undefined || c.app <= 0) return;
  const app = c.app;
  const offloaded = mode !== undefined;
  const limits: [number, string][] = [];
  if (r.retry?.per_try) limits.push([r.retry.per_try, 'retry.per_try']);
  if (offloaded) {
    if (r.async && r.async.timeout > 0) limits.push([r.async.timeout, 'async.timeout']);
  } else {
    if (t.ttfb > 0) limits.push([t.ttfb, 'ttfb']);
    if (t.total > 0) limits.push([t.total, 'total']);
  }
  const [perTry, source] = limits.reduce<[number, string]>(
    (a, b) => (b[0] < a[0] ? b : a),
    [Number.POSITIVE_INFINITY, ''],
  );
  if (app >= perTry) {
    add(
      'error',
      'chain-app',
      `per-try budget ${d(perTry)} (${source}) is not above chain.app ${d(app)}: Sluice answers 504 while the app is still working; lower the app's timeout to under ${d(perTry)} (e.g. ${under(perTry)}) or raise ${source} to over ${d(app)}`,
    );
    return;
  }
  const attempts = r.retry?.attempts ?? 1;
  const budget = offloaded ? (r.async?.timeout ?? 0) : t.total;
  if (attempts > 1 && budget > 0 && attempts * app > budget) {
    const key = offloaded ? 'async.timeout' : 'total';
    add(
      'error',
      'chain-retries',
      `retry.attempts ${attempts} × chain.app ${d(app)} = ${d(attempts * app)} exceeds ${key} ${d(budget)}: after an app timeout there is no time left for the retries; raise ${key} to over ${d(attempts * app)}, lower the app's timeout to under ${d(Math.floor(budget / attempts))}, or lower retry.attempts`,
    );
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
