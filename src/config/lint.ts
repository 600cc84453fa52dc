/**
 * The timeout-chain lint (SPEC §1 `sluice check`): settings that are valid one by one but do not work
 * together, per route, after precedence (route > upstream > defaults) is resolved.
 *
 * errors (`sluice check` exits 1):
 *   - ttfb above total: the total budget always ends the wait first, so the ttfb that was asked for
 *     never applies;
 *   - async `after` ≥ total: the 202 would never come before the 504.
 * warnings:
 *   - connect above total;
 *   - retry attempts × per-try budget (× ttfb without per_try) above total: the last tries never get
 *     their budget;
 *   - total above `defaults.client_timeout`: the client or load balancer in front gives up first;
 *   - no total and no send/ttfb/read bound: nothing ends a stuck exchange.
 *
 * A phase timeout left at its built-in default is a backstop, not a choice (ttfb 30s above the 29s
 * total is the shipped default), so connect/ttfb above total are reported only when set to another
 * value.
 */

import { BUILTIN_TIMEOUTS, type EffectiveConfig } from './resolve.ts';
import { formatDuration } from './units.ts';

export interface LintFinding {
  level: 'warning' | 'error';
  route: string;
  message: string;
}

const d = formatDuration;

export function lintTimeouts(config: EffectiveConfig): LintFinding[] {
  const out: LintFinding[] = [];
  const clientTimeout = config.clientTimeout;
  for (const r of config.routes) {
    const t = r.timeouts;
    const add = (level: LintFinding['level'], message: string) =>
      out.push({ level, route: r.name, message: `route '${r.name}' ${message}` });
    const asyncAfter = r.async && r.async.mode !== 'queue' ? r.async.after : undefined;

    if (t.total > 0) {
      if (t.ttfb > t.total && t.ttfb !== BUILTIN_TIMEOUTS.ttfb) {
        add(
          'error',
          `ttfb ${d(t.ttfb)} exceeds total ${d(t.total)}: the total budget ends the wait for response headers first; lower ttfb or raise total`,
        );
      }
      if (t.connect > t.total && t.connect !== BUILTIN_TIMEOUTS.connect) {
        add(
          'warning',
          `connect ${d(t.connect)} exceeds total ${d(t.total)}: the total budget ends a slow connect first`,
        );
      }
      if (r.retry && r.retry.attempts > 1) {
        const perTry = r.retry.per_try ?? t.ttfb;
        const what = r.retry.per_try !== undefined ? 'per_try' : 'ttfb (no per_try set)';
        if (perTry > 0 && r.retry.attempts * perTry > t.total) {
          add(
            'warning',
            `retry: ${r.retry.attempts} attempts × ${what} ${d(perTry)} = ${d(r.retry.attempts * perTry)} exceeds total ${d(t.total)}: the last attempts never get their full budget; set retry.per_try to at most ${d(Math.floor(t.total / r.retry.attempts))}`,
          );
        }
      }
      if (asyncAfter !== undefined && asyncAfter >= t.total) {
        add(
          'error',
          `async after ${d(asyncAfter)} is not below total ${d(t.total)}: the 504 comes before the 202 would; lower async.after or raise total`,
        );
      }
    } else if (t.send === 0 || t.ttfb === 0 || t.read === 0) {
      const open = (['send', 'ttfb', 'read'] as const).filter((p) => t[p] === 0);
      const how = { send: 'stops reading the request body', ttfb: 'never answers', read: 'stalls mid-body' };
      add(
        'warning',
        `has no total budget and no ${open.join('/')} timeout: nothing ends an exchange whose upstream ${open.map((p) => how[p]).join(' or ')}; set total or ${open.join('/')}`,
      );
    }

    if (clientTimeout !== undefined && clientTimeout > 0 && r.async?.mode !== 'queue') {
      // An async route answers 202 after `after`: that is what has to come before the client gives up.
      if (asyncAfter !== undefined) {
        if (asyncAfter >= clientTimeout) {
          add(
            'warning',
            `async after ${d(asyncAfter)} is not below client_timeout ${d(clientTimeout)}: the load balancer will answer 504 before the 202; lower async.after`,
          );
        }
      } else if (t.total === 0) {
        add(
          'warning',
          `has no total budget but client_timeout is ${d(clientTimeout)}: the load balancer will answer 504 first on slow requests; set a total or use async`,
        );
      } else if (t.total > clientTimeout) {
        add(
          'warning',
          `total ${d(t.total)} exceeds client_timeout ${d(clientTimeout)}: the load balancer will answer 504 first; use async`,
        );
      }
    }
  }
  return out;
}
