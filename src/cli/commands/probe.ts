import { parseDuration } from '../../config/units.ts';
import { hint, NEAR, PHASES, type ProbeResult, probe } from '../../diagnose/probe.ts';
import { ms, progress, table } from '../../diagnose/render.ts';
import { parseFlags, UsageError } from '../args.ts';

const HELP = `Usage: sluice probe URL [-n 20] [-c 1] [--budget 29s] [-X M] [-H h:v]… [-d body] [-k] [--reuse] [--json]

Times an endpoint phase by phase over n runs (each on a fresh connection unless --reuse): DNS, TCP
connect, TLS, TTFB (connection ready → first byte), transfer (first → last byte) and total, then
prints p50/p90/p99/max per phase, the dominant phase, the upstream's own Server-Timing (mean per
name), x-timeout-ms / Proxy-Status / Via when present, and headroom = p99 total ÷ budget with a
verdict: ok (< 80 %), near (≥ 80 %), over (≥ 100 %).

Exit status: 0 when p99 is under the budget, 1 when not, 2 on usage errors or when every run
failed (refused, unresolvable, bad certificate). A run still without its last byte 20 % (at least
1 s) past the budget is abandoned and counts as over the budget.

Options:
  -n N               runs (default 20)
  -c N               runs at a time (default 1)
  --budget D         the budget to compare p99 with (default 29s: AWS API Gateway's cap)
  -X, --method M     request method (default GET, POST with -d)
  -H, --header h:v   request header (repeatable)
  -d, --data BODY    request body (@FILE reads it from a file)
  -k, --insecure     accept a certificate that cannot be verified (like curl -k)
  --reuse            keep one connection alive per concurrent run (later runs: no DNS/connect/TLS)
  --json             print one JSON document instead of the table
  -h, --help         this help`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(
    'probe',
    argv,
    {
      n: { type: 'string', short: 'n', default: '20' },
      c: { type: 'string', short: 'c', default: '1' },
      budget: { type: 'string', default: '29s' },
      method: { type: 'string', short: 'X' },
      header: { type: 'string', short: 'H', multiple: true, default: [] },
      data: { type: 'string', short: 'd' },
      insecure: { type: 'boolean', short: 'k', default: false },
      reuse: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
    true,
  );
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (positionals.length !== 1)
    throw new UsageError(`probe: expected one URL, got ${positionals.length} (see 'sluice probe --help')`);
  let url: URL;
  try {
    url = new URL(positionals[0]);
  } catch {
    throw new UsageError(`probe: not a URL: '${positionals[0]}' (e.g. http://127.0.0.1:8080/health)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new UsageError(`probe: only http:// and https:// URLs, got '${url.protocol}'`);
  const n = Number(values.n);
  const c = Number(values.c);
  if (!Number.isInteger(n) || n < 1)
    throw new UsageError(`probe: -n must be a positive integer, got '${values.n}'`);
  if (!Number.isInteger(c) || c < 1)
    throw new UsageError(`probe: -c must be a positive integer, got '${values.c}'`);
  const budgetMs = parseDuration(values.budget as string);
  if (budgetMs === undefined || budgetMs <= 0)
    throw new UsageError(`probe: --budget must be a duration like 29s or 500ms, got '${values.budget}'`);
  const headers: Record<string, string> = {};
  for (const h of values.header as string[]) {
    const i = h.indexOf(':');
    if (i <= 0) throw new UsageError(`probe: -H expects 'name: value', got '${h}'`);
    headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
  }
  let body = values.data as string | undefined;
  if (body?.startsWith('@')) {
    const { readFileSync } = await import('node:fs');
    try {
      body = readFileSync(body.slice(1), 'utf8');
    } catch (err) {
      throw new UsageError(
        `probe: -d ${body}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
  }
  const method = (
    (values.method as string | undefined) ?? (body === undefined ? 'GET' : 'POST')
  ).toUpperCase();
  if (body !== undefined) headers['content-type'] ??= 'application/x-www-form-urlencoded';

  const bar = progress('probing');
  const result = await probe({
    url,
    n,
    concurrency: c,
    budgetMs,
    method,
    headers,
    body,
    insecure: values.insecure as boolean,
    reuse: values.reuse as boolean,
    runTimeoutMs: budgetMs + Math.max(1000, Math.round(budgetMs * 0.2)),
    onRun: (done, total) => bar.update(done, total),
  });
  bar.end();
  const { report } = result;
  const failedAll = report.runs.every((r, i) => r.error !== null && !result.extras[i].timedOut);
  if (failedAll) {
    console.error(`sluice probe: ${report.runs[0].error}`);
    return 2;
  }
  if (values.json) console.log(JSON.stringify(report, null, 2));
  else console.log(text(result));
  return report.summary.phases.total.p99 !== null && report.summary.phases.total.p99 < budgetMs ? 0 : 1;
}

function text(result: ProbeResult): string {
  const { report, extras } = result;
  const s = report.summary;
  const out: string[] = [];
  const ok = report.runs.filter((r) => r.error === null);
  const statuses = new Map<number, number>();
  for (const r of ok) if (r.status !== null) statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
  const bytes = ok.length ? Math.round(ok.reduce((a, r) => a + r.bytes, 0) / ok.length) : 0;
  out.push(
    `${report.url}  ${s.n} runs, ${s.errors} failed; status ${[...statuses].map(([k, v]) => `${k}×${v}`).join(' ') || '-'}; ${bytes} bytes`,
    '',
  );
  const rows = [['phase', 'p50', 'p90', 'p99', 'max']];
  for (const p of PHASES) {
    const st = s.phases[p];
    rows.push([p === s.dominant ? `${p} *` : p, ms(st.p50), ms(st.p90), ms(st.p99), ms(st.max)]);
  }
  out.push(table(rows));
  const st = Object.entries(s.server_timing);
  if (st.length > 0) {
    out.push('', 'upstream Server-Timing (mean):');
    out.push(table(st.sort((a, b) => b[1] - a[1]).map(([name, v]) => [`  ${name}`, ms(v)])));
  }
  const seen = (key: 'timeoutMs' | 'proxyStatus' | 'via', label: string) => {
    const vals = [...new Set(extras.map((e) => e[key]).filter((v): v is string => v !== undefined))];
    if (vals.length > 0) out.push(`${label}: ${vals.slice(0, 3).join(' | ')}`);
  };
  out.push('');
  seen('timeoutMs', 'x-timeout-ms');
  seen('proxyStatus', 'Proxy-Status');
  seen('via', 'Via');
  const errs = [...new Set(report.runs.map((r) => r.error).filter((e): e is string => e !== null))];
  for (const e of errs.slice(0, 3)) out.push(`error: ${e}`);
  const pct = s.headroom === null ? '-' : `${Math.round(s.headroom * 100)} %`;
  const verdict =
    s.verdict === 'ok'
      ? `ok: p99 ${ms(s.phases.total.p99)} is ${pct} of the ${ms(report.budget_ms)} budget`
      : s.verdict === 'near'
        ? `near: p99 ${ms(s.phases.total.p99)} is ${pct} of the ${ms(report.budget_ms)} budget (≥ ${NEAR * 100} %)`
        : `over: p99 ${ms(s.phases.total.p99)} is ${pct} of the ${ms(report.budget_ms)} budget`;
  out.push(`verdict ${verdict}`, `hint: ${hint(result)}`);
  return out.join('\n');
}
