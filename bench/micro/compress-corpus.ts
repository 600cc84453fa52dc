/**
 * Deterministic, realistic-looking bodies for the compression benchmark and tests: an API's JSON (a
 * page of orders with customers, items, addresses, timestamps, ids) and a server-rendered HTML page
 * (a product listing with nested markup, classes, attributes and prose). Seeded, so every run
 * compresses the same bytes; varied enough that ratios look like real traffic (JSON ≈ 5–8×, HTML ≈
 * 4–8×), not like a repeated string.
 */

/** mulberry32: small seeded PRNG. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = (
  'the of and to in is you that it he was for on are as with his they at be this have from or one had ' +
  'by word but not what all were we when your can said there use an each which she do how their if will ' +
  'up other about out many then them these so some her would make like him into time has look two more ' +
  'write go see number no way could people my than first water been call who oil its now find long down ' +
  'day did get come made may part order shipping delivery customer product warehouse invoice payment ' +
  'account gateway latency request response timeout upstream cluster region service available quantity'
).split(' ');
const FIRST = ['Ada', 'Grace', 'Linus', 'Margaret', 'Ken', 'Barbara', 'Dennis', 'Frances', 'Alan', 'Edsger'];
const LAST = ['Lovelace', 'Hopper', 'Torvalds', 'Hamilton', 'Thompson', 'Liskov', 'Ritchie', 'Allen'];
const CITIES = ['Berlin', 'Lyon', 'Porto', 'Oslo', 'Austin', 'Osaka', 'Leeds', 'Quito', 'Perth', 'Turin'];
const STATUSES = ['pending', 'paid', 'shipped', 'delivered', 'refunded', 'cancelled'];

function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)];
}

function words(r: () => number, n: number): string {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(pick(r, WORDS));
  return out.join(' ');
}

function hex(r: () => number, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += Math.floor(r() * 16).toString(16);
  return s;
}

/** A JSON page of orders, about `bytes` long (a complete, valid document). */
export function jsonBody(bytes: number, seed = 1): Buffer {
  const r = rng(seed);
  const orders: string[] = [];
  let size = 40;
  let t = Date.UTC(2026, 0, 1);
  for (let id = 100_000; size < bytes; id++) {
    t += Math.floor(r() * 90_000);
    const first = pick(r, FIRST);
    const last = pick(r, LAST);
    const items = Array.from({ length: 1 + Math.floor(r() * 4) }, () => ({
      sku: `SKU-${Math.floor(r() * 99999)
        .toString()
        .padStart(5, '0')}`,
      name: words(r, 2 + Math.floor(r() * 3)),
      quantity: 1 + Math.floor(r() * 5),
      unit_price: Math.round(r() * 20000) / 100,
    }));
    const o = JSON.stringify({
      id,
      uuid: `${hex(r, 8)}-${hex(r, 4)}-${hex(r, 4)}-${hex(r, 4)}-${hex(r, 12)}`,
      status: pick(r, STATUSES),
      created_at: new Date(t).toISOString(),
      customer: {
        id: Math.floor(r() * 50_000),
        name: `${first} ${last}`,
        email: `${first.toLowerCase()}.${last.toLowerCase()}${Math.floor(r() * 100)}@example.com`,
        address: { city: pick(r, CITIES), zip: String(10000 + Math.floor(r() * 89999)), country: 'EU' },
      },
      items,
      total: Math.round(items.reduce((s, i) => s + i.quantity * i.unit_price, 0) * 100) / 100,
      paid: r() < 0.7,
      note: r() < 0.3 ? words(r, 5 + Math.floor(r() * 12)) : null,
    });
    orders.push(o);
    size += o.length + 1;
  }
  return Buffer.from(`{"page":1,"per_page":${orders.length},"orders":[${orders.join(',')}]}`);
}

/** A server-rendered product listing page, about `bytes` long. */
export function htmlBody(bytes: number, seed = 2): Buffer {
  const r = rng(seed);
  const parts: string[] = [
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Catalogue</title>\n' +
      '<link rel="stylesheet" href="/static/app.css">\n<script src="/static/app.js" defer></script>\n' +
      '</head>\n<body class="page page--catalogue">\n<header class="site-header"><nav><ul>' +
      CITIES.map((c) => `<li><a href="/stores/${c.toLowerCase()}">${c}</a></li>`).join('') +
      '</ul></nav></header>\n<main id="content">\n',
  ];
  let size = parts[0].length;
  for (let id = 1; size < bytes; id++) {
    const price = (r() * 500).toFixed(2);
    const s =
      `<article class="product card${r() < 0.2 ? ' card--featured' : ''}" data-id="${id}" data-sku="${hex(r, 10)}">\n` +
      `  <a class="product__link" href="/p/${id}-${words(r, 3).replaceAll(' ', '-')}">\n` +
      `    <img class="product__image" src="/img/${hex(r, 16)}.webp" alt="${words(r, 4)}" loading="lazy" width="320" height="240">\n` +
      `    <h2 class="product__title">${words(r, 3 + Math.floor(r() * 4))}</h2>\n  </a>\n` +
      `  <p class="product__description">${words(r, 15 + Math.floor(r() * 40))}.</p>\n` +
      `  <div class="product__meta"><span class="price" itemprop="price">€${price}</span>` +
      `<span class="stock stock--${r() < 0.8 ? 'in' : 'out'}">${Math.floor(r() * 300)} ${pick(r, ['left', 'in stock', 'available'])}</span>` +
      `<span class="rating" title="${(1 + r() * 4).toFixed(1)} of 5">${'★'.repeat(1 + Math.floor(r() * 5))}</span></div>\n` +
      `  <button class="btn btn--primary" type="button" data-action="cart#add" data-product="${id}">Add to cart</button>\n` +
      '</article>\n';
    parts.push(s);
    size += Buffer.byteLength(s);
  }
  parts.push(
    '</main>\n<footer class="site-footer"><p>&copy; 2026 Example Shop</p></footer>\n</body>\n</html>\n',
  );
  return Buffer.from(parts.join(''));
}
