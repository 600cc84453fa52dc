// Sluice dashboard (SPEC §8). No build step: this module runs as served. Data comes from the admin API
// of the listener that served it (/api/…, the Content-Security-Policy allows nothing else), live from
// /api/events. Where a token is required it is kept in sessionStorage and sent as a bearer header;
// it never travels in a URL. Every value from the API is inserted as text, never as HTML.

const TOKEN_KEY = 'sluice.admin-token';
const POLL_MS = 5_000;
const main = document.getElementById('main');
const liveBadge = document.getElementById('live');
const crumbs = document.getElementById('crumbs');
const notice = document.getElementById('notice');
const signoutButton = document.getElementById('signout');

let token = sessionStorage.getItem(TOKEN_KEY);
let authMode = 'none';
/** The view on screen: { name, onStats?, onEvent?, refresh?, dispose? }. */
let view;
/** The latest `stats` event, per route. */
const liveStats = new Map();
let lastStats;

class Unauthorized extends Error {}

// ---------------------------------------------------------------------------------------------------
// Small helpers

/** Builds an element: h('td', { class: 'num' }, 'text', child…). Strings become text nodes. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function ms(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  if (v === 0) return '0';
  if (v < 1) return `${v.toFixed(2)} ms`;
  if (v < 1000) return `${Math.round(v)} ms`;
  if (v < 60_000) return `${+(v / 1000).toFixed(v < 10_000 ? 2 : 1)} s`;
  return `${+(v / 60_000).toFixed(1)} min`;
}

function budget(v) {
  return v > 0 ? ms(v) : 'off';
}

function pct(share, digits = 1) {
  return `${(share * 100).toFixed(digits)}%`;
}

function rps(v) {
  return v >= 100 ? Math.round(v).toString() : v.toFixed(v >= 10 ? 1 : 2);
}

/** ok under half the budget, warn to 80 %, hot beyond (the default headroom alert is p95 > 80 %). */
function level(headroom) {
  if (headroom === null || headroom === undefined) return '';
  return headroom >= 0.8 ? 'hot' : headroom >= 0.5 ? 'warn' : 'ok';
}

function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

function enc(name) {
  return encodeURIComponent(name);
}

function showNotice(text, bad = false) {
  notice.textContent = text;
  notice.className = bad ? 'notice bad' : 'notice';
  notice.hidden = false;
  clearTimeout(showNotice.timer);
  showNotice.timer = setTimeout(() => {
    notice.hidden = true;
  }, 8_000);
}

// ---------------------------------------------------------------------------------------------------
// The admin API

async function api(path) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(path, { headers, cache: 'no-store' });
  if (res.status === 401) throw new Unauthorized();
  const body = await res.json();
  if (!res.ok) throw new Error(body.detail || body.title || `HTTP ${res.status}`);
  return body;
}

/** Server-Sent Events over fetch (EventSource cannot send an Authorization header). */
function connectEvents() {
  let stopped = false;
  let controller;
  let backoff = 1_000;
  const run = async () => {
    while (!stopped) {
      controller = new AbortController();
      try {
        const headers = { accept: 'text/event-stream' };
        if (token) headers.authorization = `Bearer ${token}`;
        const res = await fetch('/api/events', { headers, cache: 'no-store', signal: controller.signal });
        if (res.status === 401) {
          stopped = true;
          signIn();
          return;
        }
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        liveBadge.textContent = 'live';
        liveBadge.classList.add('on');
        backoff = 1_000;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          for (let i = buf.indexOf('\n\n'); i !== -1; i = buf.indexOf('\n\n')) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let event = 'message';
            let data = '';
            for (const line of block.split('\n')) {
              if (line.startsWith('event: ')) event = line.slice(7);
              else if (line.startsWith('data: ')) data += line.slice(6);
            }
            if (data) dispatch(event, JSON.parse(data));
          }
        }
      } catch {
        // Reconnect below, unless stopped.
      }
      if (stopped) return;
      liveBadge.textContent = 'reconnecting…';
      liveBadge.classList.remove('on');
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 10_000);
    }
  };
  run();
  return () => {
    stopped = true;
    controller?.abort();
  };
}

function dispatch(event, data) {
  if (event === 'stats') {
    lastStats = data;
    liveStats.clear();
    for (const r of data.routes) liveStats.set(r.route, r);
    view?.onStats?.(data);
    return;
  }
  if (event === 'config') {
    if (data.result === 'applied')
      showNotice(`Config applied (${data.trigger || 'reload'}) from ${data.source}`);
    else showNotice(`Config refused; the running config stays. ${data.error}`, true);
    view?.refresh?.();
    return;
  }
  view?.onEvent?.(event, data);
}

// ---------------------------------------------------------------------------------------------------
// Pieces shared by the views

function crumb(...parts) {
  crumbs.replaceChildren(
    ...parts.flatMap((p, i) => [
      i > 0 ? ' / ' : '',
      typeof p === 'string' ? p : h('a', { href: p.href }, p.text),
    ]),
  );
}

/** p95 as a bar against the limit that fires first; `el` is reused across updates. */
function budgetBar(el, p95, headroom, limit) {
  const bar = el.querySelector('.bar') ?? el.appendChild(h('div', { class: 'bar' }, h('span')));
  const label = el.querySelector('.barlabel') ?? el.appendChild(h('div', { class: 'barlabel' }));
  const share = limit ? Math.min(1, headroom ?? p95 / limit.ms) : 0;
  bar.className = `bar ${level(headroom)}`;
  bar.firstChild.style.width = `${(share * 100).toFixed(1)}%`;
  bar.title = limit ? `p95 ${ms(p95)} of ${ms(limit.ms)} (${limit.phase})` : 'no budget';
  setText(label, limit ? `${ms(p95)} of ${ms(limit.ms)} ${limit.phase}` : `${ms(p95)} · no budget`);
}

function phaseChips(timeouts) {
  const chips = Object.entries(timeouts ?? {})
    .filter(([, n]) => n > 0)
    .map(([phase, n]) =>
      h('span', { class: 'chip hot', title: `${n} timed out in ${phase}` }, `${phase} ${n}`),
    );
  return chips.length ? chips : [h('span', { class: 'muted' }, '–')];
}

function jobsText(jobs, empty = '–') {
  if (!jobs) return empty;
  const parts = ['queued', 'running', 'completed', 'failed']
    .filter((s) => jobs[s] > 0)
    .map((s) => `${jobs[s]} ${s}`);
  return parts.length ? parts.join(' · ') : empty;
}

function alertList(active) {
  const firing = active.filter((a) => a.state === 'firing');
  if (firing.length === 0) return undefined;
  return h(
    'section',
    { class: 'panel alerts', 'aria-label': 'alerts firing' },
    h('h2', {}, `${firing.length} alert${firing.length > 1 ? 's' : ''} firing`),
    h(
      'ul',
      {},
      firing.map((a) =>
        h(
          'li',
          {},
          h('strong', {}, a.alert),
          ' ',
          a.route ? h('a', { href: `#/routes/${enc(a.route)}` }, a.route) : a.upstream,
          ` — ${a.condition}: ${a.value.toFixed(2)} against ${a.threshold}, since ${new Date(a.firing_since ?? a.since).toLocaleTimeString()}`,
        ),
      ),
    ),
  );
}

function circuitChip(state) {
  const cls = state === 'open' ? 'hot' : state === 'half-open' ? 'warn' : 'ok';
  return h('span', { class: `chip ${cls}`, 'data-field': 'circuit' }, state);
}

function targetsTable(targets) {
  return h(
    'div',
    { class: 'scroll' },
    h(
      'table',
      { class: 'targets' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', {}, 'Target'),
          h('th', {}, 'Health'),
          h('th', { class: 'num' }, 'Weight'),
          h('th', { class: 'num' }, 'In flight'),
        ),
      ),
      h(
        'tbody',
        {},
        targets.map((t) =>
          h(
            'tr',
            {},
            h('td', { class: 'mono' }, t.url),
            h(
              'td',
              {},
              h(
                'span',
                { class: `chip ${t.health === 'unhealthy' ? 'hot' : t.health === 'healthy' ? 'ok' : ''}` },
                t.health,
              ),
              t.ejected ? h('span', { class: 'chip warn' }, `ejected ${ms(t.ejected_for_ms)}`) : null,
            ),
            h('td', { class: 'num' }, t.weight),
            h('td', { class: 'num' }, t.inflight),
          ),
        ),
      ),
    ),
  );
}

/** The cache panel of a route: its settings and what it answered since start. */
function cacheSummary(cache) {
  if (!cache) return [h('p', { class: 'muted' }, 'This route has no response cache (cache: off).')];
  const n = (k) => cache.results[k] ?? 0;
  const answered = n('hit') + n('stale') + n('revalidated') + n('collapsed');
  const all = answered + n('miss') + n('bypass');
  const windows = [
    cache.stale_while_revalidate_ms ? `stale-while-revalidate ${ms(cache.stale_while_revalidate_ms)}` : '',
    cache.stale_if_error_ms ? `stale-if-error ${ms(cache.stale_if_error_ms)}` : '',
    cache.ttl_ms ? `ttl ${ms(cache.ttl_ms)}` : '',
  ].filter(Boolean);
  return [
    h(
      'p',
      {},
      all
        ? `${pct(answered / all, 0)} of ${all} requests answered from the cache since start`
        : 'No requests yet.',
    ),
    h(
      'div',
      {},
      ['hit', 'stale', 'revalidated', 'collapsed', 'miss', 'bypass'].map((k) =>
        h('span', { class: `chip ${k === 'stale' && n(k) ? 'warn' : ''}`, title: k }, `${k} ${n(k)}`),
      ),
    ),
    h(
      'p',
      { class: 'muted' },
      windows.length ? windows.join(' · ') : 'Only what the upstream makes cacheable; no stale windows.',
    ),
  ];
}

/** A page's first load; an unknown name or another error shows why instead of an empty page. */
async function startOrExplain(name, refresh) {
  try {
    await refresh();
  } catch (err) {
    if (err instanceof Unauthorized) throw err;
    main.replaceChildren(
      h(
        'section',
        { class: 'panel' },
        h('h1', {}, name),
        h('p', {}, err.message),
        h('a', { href: '#/' }, 'Back to the overview'),
      ),
    );
    view = undefined;
  }
}

// ---------------------------------------------------------------------------------------------------
// Overview: every route against its budget, every upstream

function overview() {
  crumb('Overview');
  const rows = new Map();
  const alertsSlot = h('div');
  const summary = h('div', { class: 'cards' });
  const card = (k, field) => {
    const v = h('div', { class: 'v', 'data-field': field }, '–');
    summary.append(h('div', { class: 'card' }, h('div', { class: 'k' }, k), v));
    return v;
  };
  const cRoutes = card('Routes', 'routes');
  const cRps = card('Requests/s', 'rps');
  const cInflight = card('In flight', 'inflight');
  const cAlerts = card('Alerts firing', 'alerts');
  const tbody = h('tbody');
  const upBody = h('tbody');
  main.replaceChildren(
    alertsSlot,
    summary,
    h(
      'section',
      { class: 'panel' },
      h('h2', {}, 'Routes'),
      h(
        'table',
        { class: 'routes' },
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            [
              'Route',
              'Upstream',
              'Budget',
              'Req/s',
              'p95 against budget',
              'Headroom',
              '504s by phase',
              'Jobs',
              'Alerts',
            ].map((t) => h('th', { class: t === 'Req/s' ? 'num' : undefined }, t)),
          ),
        ),
        tbody,
      ),
    ),
    h(
      'section',
      { class: 'panel' },
      h('h2', {}, 'Upstreams'),
      h(
        'div',
        { class: 'scroll' },
        h(
          'table',
          { class: 'upstreams' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              ['Upstream', 'Balance', 'Circuit', 'Targets healthy', 'In flight'].map((t) => h('th', {}, t)),
            ),
          ),
          upBody,
        ),
      ),
    ),
  );

  let routes = [];
  let alerts = { active: [] };
  const firingFor = (name) => alerts.active.filter((a) => a.state === 'firing' && a.route === name).length;

  const rowOf = (r) => {
    let row = rows.get(r.name);
    if (!row) {
      const cells = {
        rps: h('td', { class: 'num', 'data-field': 'rps', 'data-label': 'Req/s' }),
        p95: h('td', { 'data-field': 'p95', 'data-label': 'p95' }),
        headroom: h('td', { 'data-field': 'headroom', 'data-label': 'Headroom' }),
        timeouts: h('td', { 'data-field': 'timeouts', 'data-label': '504s' }),
        jobs: h('td', { 'data-field': 'jobs', 'data-label': 'Jobs' }),
        alerts: h('td', { 'data-field': 'alerts', 'data-label': 'Alerts' }),
        budget: h('td', { 'data-field': 'budget', 'data-label': 'Budget' }),
      };
      const tr = h(
        'tr',
        { 'data-route': r.name },
        h(
          'td',
          { class: 'name' },
          h('a', { href: `#/routes/${enc(r.name)}` }, r.name),
          h(
            'div',
            { class: 'muted mono' },
            [r.match.methods?.join(',') ?? '', r.match.host ?? '', r.match.path].filter(Boolean).join(' '),
          ),
        ),
        h('td', { 'data-label': 'Upstream' }, h('a', { href: `#/upstreams/${enc(r.upstream)}` }, r.upstream)),
        cells.budget,
        cells.rps,
        cells.p95,
        cells.headroom,
        cells.timeouts,
        cells.jobs,
        cells.alerts,
      );
      row = { tr, cells, route: r };
      rows.set(r.name, row);
    }
    row.route = r;
    return row;
  };

  const paintLive = (row) => {
    const r = row.route;
    const s = liveStats.get(r.name);
    const figures = s ?? { rps: r.stats.rps, p95_ms: r.stats.p95_ms, headroom: r.stats.headroom };
    setText(row.cells.rps, rps(figures.rps));
    budgetBar(row.cells.p95, figures.p95_ms, figures.headroom, r.stats.headroom_limit);
    const hr = figures.headroom;
    row.cells.headroom.replaceChildren(
      h('span', { class: `headroom ${level(hr)}` }, hr === null || hr === undefined ? '–' : pct(hr, 0)),
    );
  };

  const paint = () => {
    tbody.replaceChildren(
      ...routes.map((r) => {
        const row = rowOf(r);
        const t = r.timeouts;
        const parts = [`total ${budget(t.total)}`];
        if (r.stats.headroom_limit?.phase === 'ttfb') parts.push(`ttfb ${budget(t.ttfb)}`);
        if (r.async.mode !== 'off') parts.push(`async ${r.async.mode} after ${ms(r.async.after_ms)}`);
        setText(row.cells.budget, parts.join(' · '));
        row.cells.timeouts.replaceChildren(...phaseChips(r.stats.timeouts));
        setText(row.cells.jobs, jobsText(r.jobs));
        const n = firingFor(r.name);
        row.cells.alerts.replaceChildren(
          n ? h('span', { class: 'chip hot' }, `${n} firing`) : h('span', { class: 'muted' }, '–'),
        );
        paintLive(row);
        return row.tr;
      }),
    );
    setText(cRoutes, String(routes.length));
    const totalRps = routes.reduce((sum, r) => sum + (liveStats.get(r.name)?.rps ?? r.stats.rps), 0);
    setText(cRps, rps(totalRps));
    setText(cInflight, lastStats ? String(lastStats.inflight) : '–');
    const firing = alerts.active.filter((a) => a.state === 'firing').length;
    setText(cAlerts, String(firing));
    alertsSlot.replaceChildren(alertList(alerts.active) ?? '');
  };

  const paintUpstreams = (ups) => {
    upBody.replaceChildren(
      ...ups.map((u) => {
        const healthy = u.targets.filter((t) => t.health !== 'unhealthy' && !t.ejected).length;
        return h(
          'tr',
          { 'data-upstream': u.name },
          h('td', {}, h('a', { href: `#/upstreams/${enc(u.name)}` }, u.name)),
          h('td', {}, u.balance),
          h('td', {}, circuitChip(u.circuit)),
          h(
            'td',
            {},
            h(
              'span',
              { class: `chip ${healthy < u.targets.length ? (healthy === 0 ? 'hot' : 'warn') : 'ok'}` },
              `${healthy} / ${u.targets.length}`,
            ),
          ),
          h('td', {}, u.inflight),
        );
      }),
    );
  };

  const refresh = async () => {
    const [r, a] = await Promise.all([api('/api/routes'), api('/api/alerts')]);
    routes = r.routes;
    alerts = a;
    paint();
  };
  const refreshUpstreams = async () => paintUpstreams((await api('/api/upstreams')).upstreams);

  return {
    name: 'overview',
    async start() {
      await Promise.all([refresh(), refreshUpstreams()]);
    },
    poll: refresh,
    refresh: () => Promise.all([refresh(), refreshUpstreams()]),
    onStats(data) {
      for (const row of rows.values()) paintLive(row);
      setText(cInflight, String(data.inflight));
      setText(cRps, rps(data.routes.reduce((sum, r) => sum + r.rps, 0)));
    },
    onEvent(event) {
      if (event === 'alert') refresh().catch(() => {});
      if (event === 'health' || event === 'circuit') refreshUpstreams().catch(() => {});
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// One route: its budget, its latency against it over 15 minutes, where the time went, what-if

function routePage(name) {
  crumb({ href: '#/', text: 'Overview' }, 'Routes', name);
  const el = {
    title: h('h1', {}, name),
    sub: h('div', { class: 'muted' }),
    cards: h('div', { class: 'cards' }),
    layers: h('tbody'),
    chart: h('div', { class: 'chart', 'data-field': 'chart' }),
    chartNote: h('p', { class: 'muted' }),
    timeouts: h('div', { 'data-field': 'timeouts' }),
    statuses: h('div', { 'data-field': 'statuses' }),
    timing: h('div', { 'data-field': 'server-timing' }),
    upstream: h('div'),
    recent: h('tbody'),
    jobs: h('div'),
    cache: h('div', { 'data-field': 'cache' }),
    whatif: h('div', { class: 'whatif' }),
  };
  const card = (k, field) => {
    const v = h('div', { class: 'v', 'data-field': field }, '–');
    el.cards.append(h('div', { class: 'card' }, h('div', { class: 'k' }, k), v));
    return v;
  };
  const c = {
    rps: card('Requests/s', 'rps'),
    p50: card('p50', 'p50'),
    p95: card('p95', 'p95'),
    p99: card('p99', 'p99'),
    headroom: card('Headroom', 'headroom'),
  };
  main.replaceChildren(
    h('section', { class: 'panel' }, el.title, el.sub),
    el.cards,
    h(
      'section',
      { class: 'panel' },
      h('h2', {}, 'Latency against the budget, last 15 minutes'),
      el.chart,
      el.chartNote,
    ),
    h(
      'div',
      { class: 'grid' },
      h('section', { class: 'panel' }, h('h2', {}, 'What if the budget were…'), el.whatif),
      h(
        'section',
        { class: 'panel' },
        h('h2', {}, 'Budget by phase'),
        h(
          'table',
          {},
          h(
            'thead',
            {},
            h('tr', {}, h('th', {}, 'Phase'), h('th', { class: 'num' }, 'Budget'), h('th', {}, 'Set by')),
          ),
          el.layers,
        ),
      ),
      h(
        'section',
        { class: 'panel' },
        h('h2', {}, 'Timeouts by phase'),
        el.timeouts,
        h('h2', { class: 'spaced' }, 'Statuses'),
        el.statuses,
      ),
      h(
        'section',
        { class: 'panel' },
        h('h2', {}, 'Where the upstream spent its time (Server-Timing, mean)'),
        el.timing,
      ),
      h('section', { class: 'panel' }, h('h2', {}, 'Upstream'), el.upstream),
      h('section', { class: 'panel' }, h('h2', {}, 'Jobs'), el.jobs),
      h('section', { class: 'panel' }, h('h2', {}, 'Response cache'), el.cache),
    ),
    h(
      'section',
      { class: 'panel' },
      h('h2', {}, 'Recent slow or failed requests'),
      h(
        'div',
        { class: 'scroll' },
        h(
          'table',
          { class: 'recent' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              ['Time', 'Request id', 'Request', 'Status', 'Outcome', 'Total / budget', 'Target'].map((t) =>
                h('th', {}, t),
              ),
            ),
          ),
          el.recent,
        ),
      ),
    ),
  );

  let route;
  let plot;
  let resize;

  const paintCards = () => {
    if (!route) return;
    const s = liveStats.get(name) ?? {
      rps: route.stats.rps,
      p50_ms: route.stats.p50_ms,
      p95_ms: route.stats.p95_ms,
      p99_ms: route.stats.p99_ms,
      headroom: route.stats.headroom,
    };
    setText(c.rps, rps(s.rps));
    setText(c.p50, ms(s.p50_ms));
    setText(c.p95, ms(s.p95_ms));
    setText(c.p99, ms(s.p99_ms));
    setText(c.headroom, s.headroom === null || s.headroom === undefined ? '–' : pct(s.headroom, 0));
    c.headroom.className = `v headroom ${level(s.headroom)}`;
  };

  const paintRoute = () => {
    const r = route;
    const m = r.match;
    el.sub.replaceChildren(
      h(
        'span',
        { class: 'mono' },
        [m.methods?.join(',') ?? 'any method', m.host ?? '', m.path].filter(Boolean).join(' '),
      ),
      ' → ',
      h('a', { href: `#/upstreams/${enc(r.upstream)}` }, r.upstream),
      r.async.mode !== 'off'
        ? ` · async ${r.async.mode} after ${ms(r.async.after_ms)}, jobs up to ${ms(r.async.timeout_ms)}`
        : '',
      r.stats.headroom_limit
        ? ` · headroom against ${r.stats.headroom_limit.phase} ${ms(r.stats.headroom_limit.ms)}`
        : '',
    );
    el.layers.replaceChildren(
      ...['connect', 'send', 'ttfb', 'read', 'total'].map((p) =>
        h(
          'tr',
          {},
          h('td', {}, p),
          h('td', { class: 'num' }, budget(r.timeouts[p])),
          h(
            'td',
            {},
            h('span', { class: `chip ${r.timeout_layers[p] === 'live' ? 'warn' : ''}` }, r.timeout_layers[p]),
          ),
        ),
      ),
    );
    const w = r.stats.window_s;
    el.timeouts.replaceChildren(
      ...phaseChips(r.stats.timeouts),
      h('div', { class: 'muted' }, `last ${w} s · ${r.stats.requests} requests, ${r.stats.errors} failed`),
    );
    const statuses = Object.entries(r.stats.statuses);
    el.statuses.replaceChildren(
      ...(statuses.length
        ? statuses.map(([code, n]) =>
            h(
              'span',
              { class: `chip ${code >= '500' ? 'hot' : code >= '400' ? 'warn' : ''}` },
              `${code} × ${n}`,
            ),
          )
        : [h('span', { class: 'muted' }, 'no requests in the window')]),
    );
    const timing = Object.entries(r.stats.server_timing).sort((a, b) => b[1] - a[1]);
    const max = Math.max(1, ...timing.map(([, v]) => v));
    el.timing.replaceChildren(
      ...(timing.length
        ? timing.map(([k, v]) =>
            h(
              'div',
              { class: 'hbar' },
              h('span', { class: 'mono' }, k),
              h('div', { class: 'track' }, h('span')),
              h('span', {}, ms(v)),
            ),
          )
        : [
            h(
              'p',
              { class: 'muted' },
              'The upstream sends no Server-Timing header. Add one (sluice/upstream does it in two lines) to see where its time goes.',
            ),
          ]),
    );
    el.timing.querySelectorAll('.track > span').forEach((s, i) => {
      s.style.width = `${((timing[i][1] / max) * 100).toFixed(1)}%`;
    });
    el.cache.replaceChildren(...cacheSummary(r.cache));
    el.jobs.replaceChildren(
      r.async.mode === 'off'
        ? h('p', { class: 'muted' }, 'This route does not offload slow requests (async: off).')
        : h('p', {}, jobsText(r.jobs, 'No jobs for this route in the store yet.')),
    );
    paintCards();
  };

  const paintRecent = (list) => {
    el.recent.replaceChildren(
      ...(list.length
        ? list
            .slice(0, 25)
            .map((q) =>
              h(
                'tr',
                {},
                h('td', {}, new Date(q.time).toLocaleTimeString()),
                h('td', { class: 'mono' }, q.request_id),
                h('td', { class: 'mono' }, `${q.method} ${q.path}`),
                h('td', {}, h('span', { class: `chip ${q.status >= 500 ? 'hot' : ''}` }, q.status)),
                h('td', {}, q.phase ? `${q.outcome} (${q.phase})` : q.outcome),
                h('td', {}, `${ms(q.total_ms)} / ${budget(q.budget_ms)}`),
                h('td', { class: 'mono' }, q.target ?? '–'),
              ),
            )
        : [h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'Nothing slow or failed recently.'))]),
    );
  };

  const paintJobs = (jobs) => {
    if (route?.async.mode === 'off' || jobs.length === 0) return;
    el.jobs.replaceChildren(
      h('p', {}, jobsText(route.jobs)),
      h(
        'div',
        { class: 'scroll' },
        h(
          'table',
          {},
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              ['Job', 'Status', 'Created', 'Attempts'].map((t) => h('th', {}, t)),
            ),
          ),
          h(
            'tbody',
            {},
            jobs.map((j) =>
              h(
                'tr',
                {},
                h('td', { class: 'mono' }, j.id),
                h(
                  'td',
                  {},
                  h(
                    'span',
                    {
                      class: `chip ${j.status === 'failed' ? 'hot' : j.status === 'completed' ? 'ok' : 'warn'}`,
                    },
                    j.status,
                  ),
                ),
                h('td', {}, new Date(j.created_at).toLocaleTimeString()),
                h('td', {}, j.attempts),
              ),
            ),
          ),
        ),
      ),
    );
  };

  const paintChart = (tl) => {
    const xs = tl.points.map((p) => Date.parse(p.at) / 1000);
    const val = (k) => tl.points.map((p) => (p.requests > 0 && p[k] > 0 ? p[k] : null));
    const data = [xs, val('p50_ms'), val('p95_ms'), val('p99_ms')];
    const series = [
      {},
      { label: 'p50', stroke: '#1f9d55', width: 2, value: (_u, v) => ms(v) },
      { label: 'p95', stroke: '#d98e04', width: 2, value: (_u, v) => ms(v) },
      { label: 'p99', stroke: '#d33a2c', width: 2, value: (_u, v) => ms(v) },
    ];
    // The budgets as flat lines: total, ttfb when it fires first, and the async hold.
    const line = (label, v, stroke, dash) => {
      data.push(xs.map(() => v));
      series.push({ label, stroke, dash, width: 1.5, points: { show: false }, value: (_u, x) => ms(x) });
    };
    if (tl.budget.total_ms > 0) line('total budget', tl.budget.total_ms, '#5f6b7a', [6, 4]);
    if (tl.budget.limit?.phase === 'ttfb') line('ttfb budget', tl.budget.ttfb_ms, '#8a5cf6', [6, 4]);
    if (tl.budget.async_after_ms) line('async after', tl.budget.async_after_ms, '#2563eb', [2, 4]);
    const total = tl.points.reduce((n, p) => n + p.requests, 0);
    const timeouts = tl.points.reduce((n, p) => n + p.timeouts, 0);
    setText(
      el.chartNote,
      `${total} requests in 15 minutes (${tl.slot_s} s slots), ${timeouts} timed out. Timed-out requests count at their budget. Log scale.`,
    );
    const width = Math.max(280, el.chart.clientWidth || 600);
    if (plot && plot.series.length === series.length) {
      plot.setData(data);
      return;
    }
    plot?.destroy();
    if (typeof uPlot !== 'function') {
      setText(el.chartNote, 'The chart library did not load.');
      return;
    }
    plot = new uPlot(
      {
        width,
        height: 260,
        series,
        scales: { y: { distr: 3 } },
        axes: [{}, { values: (_u, vals) => vals.map((v) => ms(v)), size: 70 }],
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
      },
      data,
      el.chart,
    );
    resize = () => plot?.setSize({ width: Math.max(280, el.chart.clientWidth), height: 260 });
    window.addEventListener('resize', resize);
  };

  // What-if: a slider over budgets (log scale from 100 ms to twice today's total or 60 s).
  const slider = h('input', {
    type: 'range',
    min: 0,
    max: 1000,
    step: 1,
    'aria-label': 'proposed total budget',
    'data-field': 'whatif-slider',
  });
  const sliderLabel = h('label', {}, 'Total budget: ', h('strong', { 'data-field': 'whatif-budget' }, '–'));
  const figure = h('p', { class: 'figure', 'data-field': 'whatif-figure' }, '–');
  const current = h('p', { class: 'muted', 'data-field': 'whatif-current' });
  el.whatif.append(sliderLabel, slider, figure, current);
  let lo = 100;
  let hi = 60_000;
  const toMs = (pos) => Math.round(lo * (hi / lo) ** (pos / 1000));
  const toPos = (v) => Math.round((Math.log(v / lo) / Math.log(hi / lo)) * 1000);
  let whatIfTimer;
  const askWhatIf = async () => {
    const total = toMs(Number(slider.value));
    setText(sliderLabel.lastChild, ms(total));
    const q = new URLSearchParams({ total: `${total}ms` });
    const w = await api(`/api/routes/${enc(name)}/what-if?${q}`);
    if (w.requests === 0) {
      setText(figure, 'No requests in the last 15 minutes to judge by.');
      setText(current, '');
      return;
    }
    setText(
      figure,
      `${pct(w.proposed.timeout_share)} of ${w.requests} requests would have timed out at ${ms(total)}`,
    );
    setText(
      current,
      `Today, with ${budget(w.current.total_ms)}: ${pct(w.current.timeout_share)} timed out (last 15 minutes, from this route's latency histogram).`,
    );
  };
  slider.addEventListener('input', () => {
    setText(sliderLabel.lastChild, ms(toMs(Number(slider.value))));
    clearTimeout(whatIfTimer);
    whatIfTimer = setTimeout(() => askWhatIf().catch(() => {}), 120);
  });

  let sliderReady = false;
  const refresh = async () => {
    const [r, tl, recent] = await Promise.all([
      api(`/api/routes/${enc(name)}`),
      api(`/api/routes/${enc(name)}/timeline`),
      api(`/api/routes/${enc(name)}/requests`),
    ]);
    route = r;
    paintRoute();
    paintChart(tl);
    paintRecent(recent.requests);
    if (r.async.mode !== 'off')
      api(`/api/jobs?route=${enc(name)}&limit=10`).then(
        (j) => paintJobs(j.jobs),
        () => {},
      );
    if (!sliderReady) {
      sliderReady = true;
      const today = r.timeouts.total > 0 ? r.timeouts.total : 30_000;
      hi = Math.max(60_000, today * 2);
      lo = Math.min(100, today / 10);
      slider.value = String(toPos(today));
      await askWhatIf();
    }
    const u = await api(`/api/upstreams/${enc(r.upstream)}`);
    el.upstream.replaceChildren(
      h(
        'p',
        {},
        h('a', { href: `#/upstreams/${enc(u.name)}` }, u.name),
        ` · ${u.balance} · circuit `,
        circuitChip(u.circuit),
        ` · ${u.inflight} in flight`,
      ),
      targetsTable(u.targets),
    );
  };

  let recentTimer;
  return {
    name: 'route',
    start: () => startOrExplain(name, refresh),
    poll: refresh,
    refresh,
    onStats: paintCards,
    onEvent(event, data) {
      // A failed request of this route: show it soon (at most every second).
      if (
        event === 'request' &&
        data.route === name &&
        (data.status >= 500 || data.outcome === 'timeout') &&
        !recentTimer
      ) {
        recentTimer = setTimeout(() => {
          recentTimer = undefined;
          api(`/api/routes/${enc(name)}/requests`).then(
            (r) => paintRecent(r.requests),
            () => {},
          );
        }, 1_000);
      }
      if (event === 'job' && data.route === name) refresh().catch(() => {});
    },
    dispose() {
      clearTimeout(recentTimer);
      clearTimeout(whatIfTimer);
      if (resize) window.removeEventListener('resize', resize);
      plot?.destroy();
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// One upstream: balance, circuit, every target's health, the routes it serves

function upstreamPage(name) {
  crumb({ href: '#/', text: 'Overview' }, 'Upstreams', name);
  const head = h('section', { class: 'panel' }, h('h1', {}, name));
  const info = h('div');
  const targets = h('section', { class: 'panel' }, h('h2', {}, 'Targets'));
  const routesPanel = h('section', { class: 'panel' }, h('h2', {}, 'Routes served'));
  main.replaceChildren(head, info, targets, routesPanel);
  const refresh = async () => {
    const [u, r] = await Promise.all([api(`/api/upstreams/${enc(name)}`), api('/api/routes')]);
    head.replaceChildren(
      h('h1', {}, name),
      h(
        'p',
        { class: 'muted' },
        `${u.balance} balancing · circuit `,
        circuitChip(u.circuit),
        ` · ${u.inflight} in flight`,
        u.limit ? ` · limit ${JSON.stringify(u.limit)}` : '',
      ),
    );
    info.replaceChildren(
      u.circuit_window
        ? h(
            'section',
            { class: 'panel' },
            h('h2', {}, 'Circuit breaker'),
            h(
              'p',
              {},
              `${u.circuit_window.errors} errors in ${u.circuit_window.requests} requests`,
              u.circuit === 'open' ? ` · open for ${ms(u.circuit_window.open_for_ms)} more` : '',
            ),
          )
        : '',
    );
    targets.replaceChildren(h('h2', {}, 'Targets'), targetsTable(u.targets));
    const mine = r.routes.filter((x) => x.upstream === name);
    routesPanel.replaceChildren(
      h('h2', {}, 'Routes served'),
      mine.length
        ? h(
            'ul',
            {},
            mine.map((x) =>
              h(
                'li',
                {},
                h('a', { href: `#/routes/${enc(x.name)}` }, x.name),
                ` · p95 ${ms(x.stats.p95_ms)} of ${budget(x.timeouts.total)}`,
              ),
            ),
          )
        : h('p', { class: 'muted' }, 'No route sends requests here.'),
    );
  };
  return {
    name: 'upstream',
    start: () => startOrExplain(name, refresh),
    poll: refresh,
    refresh,
    onEvent(event, data) {
      if ((event === 'health' || event === 'circuit') && data.upstream === name) refresh().catch(() => {});
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Sign-in, routing, start

function signIn(message = '') {
  stopEvents?.();
  stopEvents = undefined;
  view?.dispose?.();
  view = undefined;
  crumb('Sign in');
  liveBadge.textContent = 'signed out';
  liveBadge.classList.remove('on');
  signoutButton.hidden = true;
  const input = h('input', {
    type: 'password',
    name: 'token',
    id: 'token',
    autocomplete: 'current-password',
    required: true,
  });
  const error = h('p', { class: 'error', role: 'alert' }, message);
  // method=post: even without this script, a token would travel in a body, never in a URL.
  const form = h(
    'form',
    { class: 'signin panel', method: 'post', action: '/' },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'This admin listener requires its token (admin.token in sluice.yaml).'),
    h('label', { for: 'token' }, 'Admin token'),
    input,
    error,
    h('button', { class: 'primary', type: 'submit' }, 'Sign in'),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    token = input.value;
    try {
      await api('/api/routes');
    } catch (err) {
      token = null;
      error.textContent = err instanceof Unauthorized ? 'That token was refused.' : err.message;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    input.value = '';
    boot();
  });
  main.replaceChildren(form);
  input.focus();
}

let stopEvents;
let pollTimer;

async function render() {
  view?.dispose?.();
  clearInterval(pollTimer);
  const hash = decodeURIComponent(location.hash.slice(1) || '/');
  const m = /^\/(routes|upstreams)\/(.+)$/.exec(hash);
  view = m ? (m[1] === 'routes' ? routePage(m[2]) : upstreamPage(m[2])) : overview();
  const current = view;
  try {
    await view.start();
  } catch (err) {
    if (err instanceof Unauthorized) return signIn(token ? 'The token was refused; sign in again.' : '');
    main.replaceChildren(
      h('section', { class: 'panel' }, h('p', {}, `The admin API could not be read: ${err.message}`)),
    );
    return;
  }
  pollTimer = setInterval(() => {
    if (view === current)
      current
        .poll()
        .catch((err) => err instanceof Unauthorized && signIn('The token was refused; sign in again.'));
  }, POLL_MS);
}

function boot() {
  signoutButton.hidden = authMode !== 'token';
  stopEvents?.();
  stopEvents = connectEvents();
  render();
}

signoutButton.addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  clearInterval(pollTimer);
  signIn();
});
window.addEventListener('hashchange', () => {
  if (authMode === 'token' && !token) return;
  render();
});

// /healthz needs no token and says whether one is required: sign in first instead of being refused.
fetch('/healthz', { cache: 'no-store' })
  .then((r) => r.json())
  .then((health) => {
    authMode = health.auth ?? 'none';
    if (authMode === 'token' && !token) signIn();
    else boot();
  })
  .catch(() => boot());
