/** A Server-Sent Events reader for tests of GET /api/events. */
import { request } from 'node:http';
import { sleep } from './helpers.ts';

/** Reads an SSE stream, collecting `{ event, data }` until stopped. */
export function subscribe(url: string, headers: Record<string, string> = {}) {
  const events: { event: string; data: Record<string, unknown> }[] = [];
  let status = 0;
  let type = '';
  const req = request(url, { headers }, (res) => {
    status = res.statusCode ?? 0;
    type = String(res.headers['content-type']);
    let buf = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      buf += chunk;
      for (let i = buf.indexOf('\n\n'); i !== -1; i = buf.indexOf('\n\n')) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const ev = /^event: (.+)$/m.exec(block)?.[1];
        const data = /^data: (.+)$/m.exec(block)?.[1];
        if (ev && data) events.push({ event: ev, data: JSON.parse(data) });
      }
    });
  });
  req.on('error', () => {});
  req.end();
  return {
    events,
    status: () => status,
    type: () => type,
    async next(kind: string, pred: (d: Record<string, unknown>) => boolean = () => true, ms = 5_000) {
      const end = performance.now() + ms;
      for (;;) {
        const e = events.find((x) => x.event === kind && pred(x.data));
        if (e) return e.data;
        if (performance.now() > end)
          throw new Error(`no ${kind} event in ${ms}ms; got ${events.map((x) => x.event)}`);
        await sleep(20);
      }
    },
    close: () => req.destroy(),
  };
}
