/** The terminal output of `sluice logs`: files, the endpoint table, and 504s per minute on a TTY. */
import type { FileResult } from './log-reader.ts';
import { type EndpointDetail, type EndpointSummary, NEAR_CAP, OTHER_ENDPOINTS } from './log-summary.ts';
import { count, ms, percent, sparkline, table } from './text.ts';

/** Endpoints shown in the table (the JSON document lists all). */
export const SHOWN_ENDPOINTS = 25;
/** Endpoints with a sparkline, and its widest span in columns. */
const SPARK_ENDPOINTS = 10;
const SPARK_WIDTH = 60;

const FORMAT_NAMES: Record<string, string> = {
  nginx: 'nginx',
  kong: 'Kong JSON',
  sluice: 'Sluice JSON',
  alb: 'AWS ALB',
  apigw: 'API Gateway JSON',
};

export function fileLines(files: readonly FileResult[]): string[] {
  const out: string[] = [];
  for (const f of files) {
    const name = f.path === '-' ? 'stdin' : f.path;
    const fmt = f.format ? FORMAT_NAMES[f.format] : 'format not recognised (set it with --format)';
    let line = `${name}: ${fmt}, ${count(f.lines)} lines`;
    if (f.unparsed > 0) {
      line += `, ${count(f.unparsed)} unparsed`;
      if (f.firstUnparsed && f.format)
        line += ` (first, line ${f.firstUnparsed.line}: ${JSON.stringify(f.firstUnparsed.text.slice(0, 60))})`;
    }
    out.push(line);
    if (f.warning) out.push(`  warning: ${f.warning}`);
  }
  return out;
}

/** "2026-11-23 10:00:03" (UTC). */
const stamp = (iso: string) => `${iso.slice(0, 10)} ${iso.slice(11, 19)}`;

function when(e: EndpointSummary, d: EndpointDetail): string {
  if (e.first_504 === null || e.last_504 === null) return '-';
  const first = stamp(e.first_504);
  const last =
    e.last_504.slice(0, 10) === e.first_504.slice(0, 10) ? e.last_504.slice(11, 19) : stamp(e.last_504);
  const peak = e.peak_minute ? ` (peak ${e.peak_minute.slice(11, 16)}: ${d.peakCount})` : '';
  return `${first} → ${last}${peak}`;
}

function cap(d: EndpointDetail): string {
  const v = ms(d.capMs);
  return d.capSource === 'given' ? v : `${v} ${d.capSource}`;
}

export function endpointTable(
  endpoints: readonly EndpointSummary[],
  details: readonly EndpointDetail[],
): string {
  const rows = [
    [
      'endpoint',
      'requests',
      '504',
      '502',
      'timeouts',
      'p50',
      'p95',
      'p99',
      'max',
      'near cap',
      'cap',
      '504s (UTC)',
    ],
  ];
  const n = Math.min(endpoints.length, SHOWN_ENDPOINTS);
  for (let i = 0; i < n; i++) {
    const e = endpoints[i];
    const d = details[i];
    const timeouts = e.timeouts
      ? Object.entries(e.timeouts)
          .map(([phase, k]) => `${phase} ${k}`)
          .join(', ') || '0'
      : '-';
    rows.push([
      e.endpoint,
      count(e.requests),
      count(e.status_504),
      count(e.status_502),
      timeouts,
      ms(e.p50_ms),
      ms(e.p95_ms),
      ms(e.p99_ms),
      ms(e.max_ms),
      percent(e.near_cap),
      cap(d),
      when(e, d),
    ]);
  }
  let text = table(rows, new Set([1, 2, 3, 5, 6, 7, 8, 9]));
  if (endpoints.length > n)
    text += `\n… and ${count(endpoints.length - n)} more endpoints (--json lists all)`;
  return text;
}

export function notes(endpoints: readonly EndpointSummary[]): string[] {
  const out = [
    `near cap: share of requests that took ${Math.round(NEAR_CAP * 100)}% of the cap or more; cap: --cap, else the route's budget (Sluice logs), else the latency the 504s cluster at ("inferred"), else 29s ("default").`,
  ];
  if (endpoints.some((e) => e.endpoint === OTHER_ENDPOINTS))
    out.push(
      `${OTHER_ENDPOINTS}: requests to endpoints beyond the first 10,000 distinct ones (ids that did not fold?).`,
    );
  if (endpoints.length > 0 && endpoints[0].status_504 === 0) out.push('No 504s in these logs.');
  return out;
}

/** 504s per minute of the endpoints with the most 504s, on one shared time axis. */
export function sparklines(
  endpoints: readonly EndpointSummary[],
  details: readonly EndpointDetail[],
): string[] {
  const picked: number[] = [];
  for (let i = 0; i < endpoints.length && picked.length < SPARK_ENDPOINTS; i++)
    if (endpoints[i].status_504 > 0 && details[i].minutes.size > 0) picked.push(i);
  if (picked.length === 0) return [];
  let from = Number.POSITIVE_INFINITY;
  let to = Number.NEGATIVE_INFINITY;
  for (const i of picked)
    for (const m of details[i].minutes.keys()) {
      if (m < from) from = m;
      if (m > to) to = m;
    }
  const span = to - from + 1;
  const perColumn = Math.ceil(span / SPARK_WIDTH);
  const columns = Math.ceil(span / perColumn);
  const label = (m: number) => new Date(m * 60_000).toISOString().slice(0, 16).replace('T', ' ');
  const rows: string[][] = [];
  for (const i of picked) {
    const values = new Array<number>(columns).fill(0);
    for (const [m, n] of details[i].minutes) values[Math.floor((m - from) / perColumn)] += n;
    rows.push([endpoints[i].endpoint, `|${sparkline(values)}|`]);
  }
  return [
    `504s per minute, ${label(from)} → ${label(to).slice(11)} UTC (one mark = ${perColumn} min):`,
    table(rows),
  ];
}
