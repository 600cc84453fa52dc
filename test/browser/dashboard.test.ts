/**
 * The dashboard in a real browser: Debian's Chromium driven by playwright-core, against a real
 * gateway and upstream on loopback. Checks what a user sees: every route with its budget, numbers that
 * move with traffic without a reload, the route page's chart and what-if slider, the sign-in flow
 * (the token never in a URL), no console errors, no request beyond loopback, and both screen sizes.
 *
 * `SLUICE_SCREENSHOTS=docs/images npx node --test test/browser/dashboard.test.ts` also writes the
 * screenshots shown in docs/dashboard.md.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import { startDemoUpstream } from '../../src/demo/demo-upstream.ts';
import { sleep, startTestGateway, type TestGateway } from '../helpers.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SHOTS = process.env.SLUICE_SCREENSHOTS;
const TOKEN = 'dashboard-test-token-0123456789';

function routesYaml(upstream: string, dir: string): string {
  return `
store: sqlite:${join(dir, 'jobs.db')}
upstreams:
  demo: { targets: ["${upstream}"] }
routes:
  - name: reports
    match: { path: /slow }
    upstream: demo
    timeouts: { total: 2s }
    async: { mode: auto, after: 1s }
  - name: checkout
    match: { path: /hang }
    upstream: demo
    timeouts: { ttfb: 300ms, total: 2s }
  - name: api
    match: { path: / }
    upstream: demo
    timeouts: { total: 5s }
    cache: { stale_if_error: 10m }
`;
}

/** A page that records console errors, page errors and every URL it requests. */
async function open(browser: Browser, width: number, height: number) {
  const page = await browser.newPage({ viewport: { width, height } });
  const errors: string[] = [];
  const urls: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('request', (r) => urls.push(r.url()));
  return { page, errors, urls };
}

function assertLoopbackOnly(urls: string[]): void {
  for (const u of urls) {
    if (u.startsWith('data:')) continue;
    assert.equal(new URL(u).hostname, '127.0.0.1', `${u} leaves loopback`);
  }
}

/** No horizontal scrolling of the page itself (wide tables scroll inside their panel). */
async function assertFits(page: Page): Promise<void> {
  const { scroll, inner } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    inner: window.innerWidth,
  }));
  assert.ok(scroll <= inner, `page is ${scroll}px wide in a ${inner}px viewport`);
}

async function traffic(gw: TestGateway): Promise<void> {
  const paths = ['/fast', '/timing', '/slow?ms=200', '/hang', '/status/503', '/timing', '/fast'];
  await Promise.all(
    paths.map(async (p) => {
      const res = await fetch(gw.url(p));
      await res.arrayBuffer();
    }),
  );
}

// Skipped only outside CI: .ci/run installs Chromium, so there a missing browser fails the run.
const skip =
  !existsSync(CHROMIUM) && !process.env.CI && `no Chromium at ${CHROMIUM} (apt-get install chromium)`;

describe('dashboard in Chromium', { skip }, () => {
  let browser: Browser;
  let demo: Awaited<ReturnType<typeof startDemoUpstream>>;
  before(async () => {
    demo = await startDemoUpstream({ port: 0 });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      // The flags a closed network needs: no background connections to Google's hosts.
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    if (SHOTS) mkdirSync(SHOTS, { recursive: true });
  });
  after(async () => {
    await browser?.close();
    await demo?.close();
  });

  test('overview: every route with its budget, numbers that update live, at 1280x800 and 390x844', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-dash-'));
    const gw = await startTestGateway(routesYaml(demo.url, dir), { admin: true });
    t.after(() => gw.close());
    for (let i = 0; i < 3; i++) await traffic(gw);
    const admin = `http://127.0.0.1:${gw.sluice.adminPort}/`;

    for (const [width, height, name] of [
      [1280, 800, 'wide'],
      [390, 844, 'phone'],
    ] as const) {
      const { page, errors, urls } = await open(browser, width, height);
      await page.goto(admin);
      await page.waitForSelector('tr[data-route="api"] [data-field="rps"]');
      const rows = await page.$$eval('tr[data-route]', (trs) =>
        trs.map((tr) => [
          tr.getAttribute('data-route'),
          tr.querySelector('[data-field="budget"]')?.textContent,
        ]),
      );
      assert.deepEqual(rows, [
        ['reports', 'total 2 s · async auto after 1 s'],
        ['checkout', 'total 2 s · ttfb 300 ms'],
        ['api', 'total 5 s'],
      ]);
      // checkout's p95 is against its ttfb (300 ms), where it times out: over budget, in red.
      const bar = await page.$eval('tr[data-route="checkout"] .bar', (el) => el.className);
      assert.match(bar, /hot/);
      const chips = await page.$eval(
        'tr[data-route="checkout"] [data-field="timeouts"]',
        (el) => el.textContent,
      );
      assert.match(chips ?? '', /ttfb \d+/);
      await assertFits(page);
      if (SHOTS) await page.screenshot({ path: join(SHOTS, `dashboard-overview-${name}.png`) });

      if (name === 'wide') {
        // Live: the page is not reloaded, yet the in-flight card and the rates follow the traffic.
        await page.evaluate(() => {
          (window as unknown as { marker: number }).marker = 42;
        });
        await page.waitForSelector('#live.on');
        const before = await page.$eval('[data-field="inflight"]', (el) => el.textContent);
        const slow = Promise.all(
          [1, 2, 3].map(async () => (await fetch(gw.url('/slow?ms=1500'))).arrayBuffer()),
        );
        await page.waitForFunction(
          () => document.querySelector('[data-field="inflight"]')?.textContent === '3',
          null,
          {
            timeout: 5_000,
          },
        );
        await slow;
        await page.waitForFunction(
          () => document.querySelector('[data-field="inflight"]')?.textContent === '0',
        );
        assert.notEqual(before, '3');
        const rpsBefore = await page.$eval('tr[data-route="api"] [data-field="rps"]', (el) => el.textContent);
        for (let i = 0; i < 20; i++) await (await fetch(gw.url('/fast'))).arrayBuffer();
        await page.waitForFunction(
          (old) => document.querySelector('tr[data-route="api"] [data-field="rps"]')?.textContent !== old,
          rpsBefore,
          { timeout: 5_000 },
        );
        assert.equal(await page.evaluate(() => (window as unknown as { marker: number }).marker), 42);
      }
      assert.deepEqual(errors, []);
      assertLoopbackOnly(urls);
      await page.close();
    }
  });

  test('route page: the chart is drawn, the what-if slider changes the figure, the upstream page', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-dash-'));
    const gw = await startTestGateway(routesYaml(demo.url, dir), { admin: true });
    t.after(() => gw.close());
    for (let i = 0; i < 4; i++) await traffic(gw);
    for (const [width, height, name] of [
      [1280, 800, 'wide'],
      [390, 844, 'phone'],
    ] as const) {
      const { page, errors, urls } = await open(browser, width, height);
      await page.goto(`http://127.0.0.1:${gw.sluice.adminPort}/#/routes/api`);
      await page.waitForSelector('.uplot canvas');
      // The chart holds this traffic: hovering its newest slot shows a p95 in the legend.
      const box = await page.locator('.u-over').boundingBox();
      assert.ok(box && box.width > 200);
      await page.mouse.move(box.x + box.width - 1, box.y + box.height / 2);
      await page.waitForFunction(() => {
        const v = document.querySelectorAll('.u-legend .u-series .u-value')[2]?.textContent ?? '';
        return /\d/.test(v);
      });
      // Recent failed requests carry their request ids.
      await page.waitForSelector('table.recent td.mono');
      const ids = await page.$$eval('table.recent tbody tr td:nth-child(2)', (tds) =>
        tds.map((td) => td.textContent),
      );
      assert.ok(ids.length >= 1 && ids.every((id) => /^[0-9A-Z]{20,}$/.test(id ?? '')), String(ids));
      const timing = await page.$eval('[data-field="server-timing"]', (el) => el.textContent);
      assert.match(timing ?? '', /db/);
      // The demo's responses here are not cacheable: all misses, none answered from the cache.
      const cache = await page.$eval('[data-field="cache"]', (el) => el.textContent);
      assert.match(cache ?? '', /0% of \d+ requests answered from the cache since start/);
      assert.match(cache ?? '', /stale-if-error 10 min/);

      // What-if on reports (200 ms requests under a 2 s budget): at 100 ms they would all be cut.
      await page.goto(`http://127.0.0.1:${gw.sluice.adminPort}/#/routes/reports`);
      await page.waitForFunction(() =>
        /would have timed out/.test(
          document.querySelector('[data-field="whatif-figure"]')?.textContent ?? '',
        ),
      );
      const before = await page.$eval('[data-field="whatif-figure"]', (el) => el.textContent);
      await page.$eval('[data-field="whatif-slider"]', (el) => {
        const input = el as HTMLInputElement;
        input.value = '0';
        input.dispatchEvent(new Event('input', { bubbles: true }));
      });
      await page.waitForFunction(
        (old) => document.querySelector('[data-field="whatif-figure"]')?.textContent !== old,
        before,
      );
      const after = await page.$eval('[data-field="whatif-figure"]', (el) => el.textContent);
      assert.match(before ?? '', /^0\.0% of 4 requests would have timed out at 2 s$/);
      assert.match(after ?? '', /^100\.0% of 4 requests would have timed out at 100 ms$/);
      await assertFits(page);
      if (SHOTS)
        await page.screenshot({
          path: join(SHOTS, `dashboard-route-${name}.png`),
          fullPage: name === 'wide',
        });

      await page.click('text=demo >> nth=0');
      await page.waitForSelector('table.targets');
      const health = await page.$eval('table.targets tbody', (el) => el.textContent);
      assert.match(health ?? '', new RegExp(demo.url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
      assert.deepEqual(errors, []);
      assertLoopbackOnly(urls);
      await page.close();
    }
  });

  test('sign-in: the shell needs no token, data does; the token stays out of every URL', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-dash-'));
    const gw = await startTestGateway(routesYaml(demo.url, dir), { admin: true, adminToken: TOKEN });
    t.after(() => gw.close());
    await traffic(gw);
    const admin = `http://127.0.0.1:${gw.sluice.adminPort}`;
    // The static shell is public and holds no data; the API is not.
    const shell = await fetch(`${admin}/`);
    assert.equal(shell.status, 200);
    assert.equal(shell.headers.get('cache-control'), 'no-store');
    assert.match(shell.headers.get('content-security-policy') ?? '', /connect-src 'self'/);
    assert.match(await shell.text(), /<script type="module" src="\/assets\/app.js">/);
    assert.equal((await fetch(`${admin}/assets/uPlot.iife.min.js`)).status, 200);
    assert.equal((await fetch(`${admin}/`, { method: 'POST' })).status, 405);
    assert.equal((await fetch(`${admin}/assets/other.js`)).status, 401, 'only the shell is public');
    assert.equal((await fetch(`${admin}/assets/app.js`)).status, 200);
    assert.equal((await fetch(`${admin}/api/routes`)).status, 401);

    const { page, errors, urls } = await open(browser, 1280, 800);
    await page.goto(`${admin}/`);
    await page.waitForSelector('form.signin');
    await page.fill('#token', 'wrong-token');
    await page.click('form.signin button');
    await page.waitForFunction(() =>
      /refused/.test(document.querySelector('form.signin .error')?.textContent ?? ''),
    );
    await page.fill('#token', TOKEN);
    await page.click('form.signin button');
    await page.waitForSelector('tr[data-route="api"]');
    await page.waitForSelector('#live.on');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('sluice.admin-token')), TOKEN);
    // A reload keeps the session (sessionStorage), a new route page works, sign-out forgets it.
    await page.reload();
    await page.waitForSelector('tr[data-route="api"]');
    await page.goto(`${admin}/#/routes/checkout`);
    await page.waitForSelector('.uplot canvas');
    await page.click('#signout');
    await page.waitForSelector('form.signin');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('sluice.admin-token')), null);
    await sleep(100);
    for (const u of urls)
      assert.ok(!u.includes(TOKEN) && !u.includes('wrong-token'), `${u} carries the token`);
    assert.equal(page.url().includes(TOKEN), false);
    // The only console errors are the browser's own report of the refused wrong token.
    assert.deepEqual(
      errors.filter((e) => !/status of 401/.test(e)),
      [],
    );
    assert.ok(errors.length <= 1, String(errors));
    assertLoopbackOnly(urls);
    await page.close();
  });
});
