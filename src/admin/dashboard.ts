/**
 * The dashboard's static shell (SPEC §8): `/` and `/assets/*` of the admin listener. Plain HTML, CSS
 * and an ES module from `src/admin/dashboard/`, plus uPlot taken from node_modules when the gateway
 * starts (vendored, never copied by hand); no build step, nothing fetched from outside. The shell holds
 * no data, so it needs no token: every data call it makes does. A strict Content-Security-Policy keeps
 * the page's connections on the admin listener itself.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { AdminHandler } from './admin-server.ts';

interface Asset {
  readonly body: Buffer;
  readonly type: string;
}

const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/** The shell's files, read once (the dashboard costs nothing until someone opens it). */
function assets(): Map<string, Asset> {
  const here = new URL('./dashboard/', import.meta.url);
  const own = (name: string, type: string): Asset => ({ body: readFileSync(new URL(name, here)), type });
  const require = createRequire(import.meta.url);
  const uplot = (file: string, type: string): Asset => ({
    body: readFileSync(require.resolve(`uplot/dist/${file}`)),
    type,
  });
  return new Map([
    ['/', own('index.html', 'text/html; charset=utf-8')],
    ['/assets/app.js', own('app.js', 'text/javascript; charset=utf-8')],
    ['/assets/style.css', own('style.css', 'text/css; charset=utf-8')],
    ['/assets/uPlot.iife.min.js', uplot('uPlot.iife.min.js', 'text/javascript; charset=utf-8')],
    ['/assets/uPlot.min.css', uplot('uPlot.min.css', 'text/css; charset=utf-8')],
  ]);
}

/** Path → handler for every file of the shell, to register as public routes. */
export function dashboardRoutes(): Record<string, AdminHandler> {
  const out: Record<string, AdminHandler> = {};
  for (const [path, asset] of assets()) {
    out[path] = (req, res) => {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, {
          allow: 'GET, HEAD',
          'content-type': 'application/problem+json',
          'cache-control': 'no-store',
        });
        res.end(
          JSON.stringify({
            type: 'https://sluice.dev/problems/method-not-allowed',
            title: 'Method not allowed',
            status: 405,
          }),
        );
        return;
      }
      res.writeHead(200, {
        'content-type': asset.type,
        'content-length': asset.body.length,
        'cache-control': 'no-store',
        'content-security-policy': CSP,
        'x-content-type-options': 'nosniff',
        'referrer-policy': 'no-referrer',
      });
      res.end(req.method === 'HEAD' ? undefined : asset.body);
    };
  }
  return out;
}
