/**
 * The Grafana dashboard (examples/grafana/sluice.json) against a real gateway: traffic through real
 * sockets (plain requests, a ttfb timeout, a client-budget timeout, retries and an ejection, an async
 * job) makes every series appear, `/metrics` is scraped, and every PromQL expression of the dashboard
 * (panel targets, annotations, template variables) must name only metrics that exist there, with
 * label matchers and `by (…)` labels that exist on them. Also: the JSON is a dashboard Grafana can
 * import (unique panel ids, a title and the templated datasource on every panel, no overlaps).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sleep, startHttpServer, startTestGateway, type TestGateway, type TestServer } from '../helpers.ts';

const DASHBOARD = new URL('../../examples/grafana/sluice.json', import.meta.url);

// ---------------------------------------------------------------------------------------------------------
// A small PromQL scanner: enough to find the metric names and label names an expression uses.

/** Aggregation operators (followed by `by`/`without` or `(`), never metric names. */
const AGGREGATIONS = new Set([
  'sum',
  'min',
  'max',
  'avg',
  'group',
  'stddev',
  'stdvar',
  'count',
  'count_values',
  'bottomk',
  'topk',
  'quantile',
  'limitk',
  'limit_ratio',
]);
/** Keywords that take a parenthesised label list. */
const GROUPING = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);
const KEYWORDS = new Set(['bool', 'and', 'or', 'unless', 'offset', 'atan2', 'inf', 'nan', 'start', 'end']);

interface PromRefs {
  /** Metric name → label names of its matchers (`{route=~"$route"}` → route). */
  metrics: Map<string, Set<string>>;
  /** Label names of `by`, `without`, `on`, `ignoring`, `group_left`, `group_right` clauses. */
  grouping: Set<string>;
}

/** Metric and label names of a PromQL expression (Grafana variables such as `$route` are skipped). */
function promRefs(expr: string): PromRefs {
  const metrics = new Map<string, Set<string>>();
  const grouping = new Set<string>();
  const n = expr.length;
  let i = 0;
  const ws = () => {
    while (i < n && /\s/.test(expr[i])) i++;
  };
  const skipString = () => {
    const quote = expr[i++];
    while (i < n && expr[i] !== quote) i += expr[i] === '\\' ? 2 : 1;
    i++;
  };
  /** `{name op "value", …}` at i: the label names (and a `__name__="x"` metric name). */
  const matchers = (): { labels: Set<string>; name?: string } => {
    const labels = new Set<string>();
    let name: string | undefined;
    i++; // {
    for (;;) {
      ws();
      if (i >= n) throw new Error(`unclosed '{' in ${expr}`);
      if (expr[i] === '}') {
        i++;
        return { labels, name };
      }
      if (expr[i] === ',') {
        i++;
        continue;
      }
      if (expr[i] === '"' || expr[i] === "'" || expr[i] === '`') {
        skipString(); // a quoted label name or `{"metric"}`
        continue;
      }
      const m = /^[a-zA-Z_]\w*/.exec(expr.slice(i));
      if (!m) throw new Error(`bad label matcher at ${i} in ${expr}`);
      i += m[0].length;
      ws();
      const op = /^(=~|!~|!=|=)/.exec(expr.slice(i));
      if (!op) throw new Error(`label ${m[0]} without an operator in ${expr}`);
      i += op[0].length;
      ws();
      const valueStart = i;
      skipString();
      if (m[0] === '__name__') name = expr.slice(valueStart + 1, i - 1);
      else labels.add(m[0]);
    }
  };
  const addMetric = (name: string, labels: Set<string>) => {
    const set = metrics.get(name) ?? new Set<string>();
    for (const l of labels) set.add(l);
    metrics.set(name, set);
  };
  while (i < n) {
    const c = expr[i];
    if (/\s/.test(c)) i++;
    else if (c === '"' || c === "'" || c === '`') skipString();
    else if (c === '#') while (i < n && expr[i] !== '\n') i++;
    else if (c === '[') {
      // a range or subquery: durations and Grafana variables such as $__rate_interval
      const close = expr.indexOf(']', i);
      if (close === -1) throw new Error(`unclosed '[' in ${expr}`);
      i = close + 1;
    } else if (c === '$') {
      // a Grafana variable: $name, ${name}, ${name:fmt}
      i++;
      if (expr[i] === '{') i = expr.indexOf('}', i) + 1;
      else while (i < n && /\w/.test(expr[i])) i++;
    } else if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(expr[i + 1] ?? ''))) {
      // a number or a duration (0.95, 1e3, 0x1f, 5m)
      while (i < n && /[\w.]/.test(expr[i])) i++;
    } else if (c === '{') {
      const { labels, name } = matchers();
      if (name) addMetric(name, labels);
    } else if (/[a-zA-Z_:]/.test(c)) {
      const word = /^[a-zA-Z_:][\w:]*/.exec(expr.slice(i))![0];
      i += word.length;
      ws();
      if (GROUPING.has(word)) {
        if (expr[i] !== '(') continue; // group_left without labels
        const close = expr.indexOf(')', i);
        if (close === -1) throw new Error(`unclosed '(' after ${word} in ${expr}`);
        for (const l of expr.slice(i + 1, close).split(',')) if (l.trim()) grouping.add(l.trim());
        i = close + 1;
      } else if (AGGREGATIONS.has(word) || KEYWORDS.has(word) || expr[i] === '(') {
        // an operator, a keyword or a function call
      } else {
        addMetric(word, expr[i] === '{' ? matchers().labels : new Set());
      }
    } else i++;
  }
  return { metrics, grouping };
}

// ---------------------------------------------------------------------------------------------------------
// The dashboard

interface Target {
  refId?: string;
  expr?: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title?: string;
  datasource?: { type?: string; uid?: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Target[];
  panels?: Panel[];
  collapsed?: boolean;
}
interface Variable {
  name: string;
  type: string;
  query?: string | { query?: string };
}
interface Dashboard {
  schemaVersion: number;
  title: string;
  uid: string;
  __inputs?: { name: string; type: string; pluginId: string }[];
  panels: Panel[];
  templating: { list: Variable[] };
  annotations: { list: { name: string; expr?: string; datasource?: { uid?: string } }[] };
}

/** Every panel, those inside collapsed rows included. */
function allPanels(d: Dashboard): Panel[] {
  return d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

/** Every PromQL expression of the dashboard, with where it comes from. */
function expressions(d: Dashboard): { where: string; expr: string; labels?: string[] }[] {
  const out: { where: string; expr: string; labels?: string[] }[] = [];
  for (const p of allPanels(d))
    for (const t of p.targets ?? [])
      if (t.expr !== undefined) out.push({ where: `panel ${p.id} "${p.title}" ${t.refId}`, expr: t.expr });
  for (const a of d.annotations.list)
    if (a.expr !== undefined) out.push({ where: `annotation "${a.name}"`, expr: a.expr });
  for (const v of d.templating.list) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query?.query ?? '');
    // label_values(selector, label) · label_values(label) · query_result(expr)
    const lv = /^\s*label_values\((.*),\s*(\w+)\s*\)\s*$/s.exec(q);
    const qr = /^\s*query_result\((.*)\)\s*$/s.exec(q);
    if (lv) out.push({ where: `variable $${v.name}`, expr: lv[1], labels: [lv[2]] });
    else if (qr) out.push({ where: `variable $${v.name}`, expr: qr[1] });
    else if (!/^\s*label_values\(\s*\w+\s*\)\s*$/.test(q))
      assert.fail(`variable $${v.name}: unknown query ${q}`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// The scrape

/** Metric name → the label names seen on its samples; the TYPE of each family. */
interface Scrape {
  samples: Map<string, Set<string>>;
  types: Map<string, string>;
}

function parseScrape(text: string): Scrape {
  const samples = new Map<string, Set<string>>();
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1], type[2]);
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? \S+$/.exec(line);
    assert.ok(m, `bad sample line: ${line}`);
    const labels = samples.get(m[1]) ?? new Set<string>();
    for (const l of (m[2] ?? '').matchAll(/(\w+)="(?:[^"\\]|\\.)*"/g)) labels.add(l[1]);
    samples.set(m[1], labels);
  }
  return { samples, types };
}

/** Labels Prometheus adds to every scraped series (the dashboard filters on `instance`). */
const TARGET_LABELS = new Set(['instance', 'job']);

/** What is wrong with an expression against a scrape: metrics or labels that do not exist. */
function problems(
  scrape: Scrape,
  e: { where: string; expr: string; labels?: string[] },
): { missing: string[]; errors: string[] } {
  const refs = promRefs(e.expr);
  const missing: string[] = [];
  const errors: string[] = [];
  if (refs.metrics.size === 0) errors.push(`${e.where}: no metric in ${e.expr}`);
  const used = new Set<string>(TARGET_LABELS);
  for (const [name, labels] of refs.metrics) {
    const have = scrape.samples.get(name);
    if (!have) {
      const hint =
        scrape.types.get(name) === 'histogram' ? ' (a histogram: query its _bucket, _sum or _count)' : '';
      missing.push(`${e.where}: ${name}${hint}`);
      continue;
    }
    for (const l of have) used.add(l);
    for (const l of labels)
      if (!have.has(l) && !TARGET_LABELS.has(l)) errors.push(`${e.where}: ${name} has no label '${l}'`);
  }
  if (missing.length === 0)
    for (const l of [...refs.grouping, ...(e.labels ?? [])])
      if (!used.has(l)) errors.push(`${e.where}: no metric of '${e.expr}' has the label '${l}'`);
  return { missing, errors };
}

// ---------------------------------------------------------------------------------------------------------

describe('Grafana dashboard', () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;
  let a: TestServer;
  let b: TestServer;
  let gw: TestGateway;

  before(async () => {
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (path === '/healthz') res.end('ok');
      else if (path === '/hang')
        return; // never answers: the route's ttfb fires
      else if (path === '/fail') {
        res.statusCode = 503;
        res.end('unavailable');
      } else if (path === '/slow') setTimeout(() => res.end('late'), 300);
      else {
        res.setHeader('server-timing', 'db;dur=3');
        res.end('ok');
      }
    };
    a = await startHttpServer(handler);
    b = await startHttpServer(handler);
    const dir = mkdtempSync(join(tmpdir(), 'sluice-grafana-'));
    gw = await startTestGateway(
      `
store: sqlite:${dir}/jobs.db
alerts:
  min_requests: 1
  rules:
    - { name: headroom, when: p95 > 80% of timeout, for: 1s }
    - { name: down, when: target_down }
upstreams:
  main:
    targets: ["${a.url}"]
    health: { path: /healthz, interval: 200ms, timeout: 150ms }
    circuit: { error_rate: 50%, min_requests: 5, window: 10s, open_for: 500ms }
  pair:
    targets: ["${a.url}", "${b.url}"]
    outlier: { consecutive_failures: 2, base_ejection: 30s }
routes:
  - { name: jobs, match: { path: /slow }, upstream: main, async: { mode: auto, after: 100ms } }
  - { name: hang, match: { path: /hang }, upstream: main, timeouts: { ttfb: 200ms, total: 1s } }
  - { name: fail, match: { path: /fail }, upstream: pair, retry: { attempts: 2, on: [503] } }
  - { name: api, match: { path: / }, upstream: main, timeouts: { total: 2s } }
`,
      { admin: true },
    );
    const get = async (path: string, headers: Record<string, string> = {}) => {
      const res = await fetch(gw.url(path), { headers });
      await res.arrayBuffer();
      return res.status;
    };
    for (let i = 0; i < 5; i++) assert.equal(await get('/fast'), 200);
    assert.equal(await get('/hang'), 504); // sluice_timeouts_total{phase="ttfb"}
    assert.equal(await get('/hang', { 'x-timeout-ms': '50' }), 504); // sluice_client_budget_exceeded_total
    for (let i = 0; i < 6; i++) await get('/fail'); // retries, an ejection
    assert.equal(await get('/slow'), 202); // a job that completes 300 ms later
  });

  after(async () => {
    await gw?.close();
    await a?.close();
    await b?.close();
  });

  const scrape = async () =>
    parseScrape(await (await fetch(`http://127.0.0.1:${gw.sluice.adminPort}/metrics`)).text());

  test('the JSON is an importable dashboard', () => {
    assert.ok(dashboard.schemaVersion >= 36 && dashboard.schemaVersion <= 41, 'schemaVersion ~39');
    assert.ok(dashboard.title && dashboard.uid);
    assert.ok(
      dashboard.__inputs?.some((i) => i.name === 'DS_PROMETHEUS' && i.pluginId === 'prometheus'),
      'a DS_PROMETHEUS input for import',
    );
    const dsVar = dashboard.templating.list.find((v) => v.type === 'datasource');
    assert.ok(dsVar, 'a datasource template variable');
    const dsUid = `\${${dsVar.name}}`;
    assert.ok(
      dashboard.templating.list.some((v) => v.name === 'route' && v.type === 'query'),
      'a $route variable',
    );

    const panels = allPanels(dashboard);
    assert.ok(panels.length > 20);
    const ids = panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, `panel ids are unique: ${ids}`);
    for (const p of panels) {
      assert.ok(Number.isInteger(p.id) && p.id > 0, `panel id ${p.id}`);
      assert.ok(typeof p.title === 'string' && p.title.trim() !== '', `panel ${p.id} has a title`);
      const { x, y, w, h } = p.gridPos;
      assert.ok(x >= 0 && w > 0 && x + w <= 24 && y >= 0 && h > 0, `panel ${p.id} fits the 24-column grid`);
      if (p.type === 'row') continue; // a row only groups panels: it queries nothing
      assert.equal(p.datasource?.uid, dsUid, `panel ${p.id} "${p.title}" uses the templated datasource`);
      assert.ok((p.targets ?? []).length > 0, `panel ${p.id} "${p.title}" has queries`);
      const refIds = (p.targets ?? []).map((t) => t.refId);
      assert.equal(new Set(refIds).size, refIds.length, `panel ${p.id}: unique refIds`);
      for (const t of p.targets ?? []) {
        assert.ok(t.expr?.trim(), `panel ${p.id} ${t.refId} has an expr`);
        assert.equal(t.datasource?.uid, dsUid, `panel ${p.id} ${t.refId} uses the templated datasource`);
      }
    }
    for (const a of dashboard.annotations.list)
      if (a.expr !== undefined) assert.equal(a.datasource?.uid, dsUid, `annotation ${a.name}`);

    // Top-level panels do not overlap (those of a collapsed row are laid out when it opens).
    const top = dashboard.panels;
    for (let i = 0; i < top.length; i++)
      for (let j = i + 1; j < top.length; j++) {
        const [p, q] = [top[i].gridPos, top[j].gridPos];
        const overlap = p.x < q.x + q.w && q.x < p.x + p.w && p.y < q.y + q.h && q.y < p.y + p.h;
        assert.ok(!overlap, `panels ${top[i].id} and ${top[j].id} overlap`);
      }
  });

  test('the scanner finds metric and label names, not functions, keywords or variables', () => {
    const r = promRefs(
      'histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{instance=~"$instance", route=~"$route"}[$__rate_interval])))' +
        ' / on (route) group_left (limit) max without (quantile) (b{x="}{"}) > bool 1e3 or vector(0)' +
        ' + count({__name__="c", y!="z"} offset 5m) and sum(d:recorded[5m:1m]) * $' +
        '{factor}',
    );
    assert.deepEqual(
      [...r.metrics].map(([m, l]) => [m, [...l]]),
      [
        ['a_bucket', ['instance', 'route']],
        ['b', ['x']],
        ['c', ['y']],
        ['d:recorded', []],
      ],
    );
    assert.deepEqual([...r.grouping], ['le', 'route', 'limit', 'quantile']);
  });

  test('every query names metrics and labels that /metrics has', async () => {
    const exprs = expressions(dashboard);
    assert.ok(exprs.length > 40, `${exprs.length} expressions`);
    // Gauges such as sluice_jobs are refreshed every few seconds: scrape until all are there.
    let s = await scrape();
    let missing: string[] = [];
    for (const deadline = Date.now() + 12_000; ; await sleep(250)) {
      s = await scrape();
      missing = exprs.flatMap((e) => problems(s, e).missing);
      if (missing.length === 0 || Date.now() > deadline) break;
    }
    assert.deepEqual(missing, [], 'metrics the dashboard queries but /metrics does not have');
    assert.deepEqual(
      exprs.flatMap((e) => problems(s, e).errors),
      [],
      'labels the dashboard uses that the metrics do not have',
    );

    // Negative controls: a misspelt metric, a bare histogram and a label the metric lacks are caught.
    const bad = (expr: string) => problems(s, { where: 'control', expr });
    assert.deepEqual(bad('sum(rate(sluice_request_total[5m]))').missing, ['control: sluice_request_total']);
    assert.match(
      bad('rate(sluice_request_duration_seconds[5m])').missing[0],
      /a histogram: query its _bucket/,
    );
    assert.deepEqual(bad('sum(sluice_upstream_retries_total{route="x"})').errors, [
      "control: sluice_upstream_retries_total has no label 'route'",
    ]);
    assert.match(bad('sum by (route) (sluice_upstream_retries_total)').errors[0], /has the label 'route'/);
  });

  test('every metric the dashboard queries is one docs/metrics.md lists', () => {
    const doc = readFileSync(new URL('../../docs/metrics.md', import.meta.url), 'utf8');
    const documented = (name: string) => {
      const base = name.replace(/_(bucket|sum|count)$/, '');
      return (
        doc.includes(`\`${name}\``) || doc.includes(`\`${base}\``) || /^sluice_(process|nodejs)_/.test(name) // documented as a family: `sluice_process_*`, `sluice_nodejs_*`
      );
    };
    const names = new Set(expressions(dashboard).flatMap((e) => [...promRefs(e.expr).metrics.keys()]));
    assert.deepEqual(
      [...names].filter((n) => !documented(n)),
      [],
    );
  });
});
