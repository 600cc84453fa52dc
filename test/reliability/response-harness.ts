/**
 * The rig of the fuzzed upstream responses (issue 14), shared by test/reliability/response-fuzz.test.ts
 * and scripts/fuzz-responses.ts: one in-process gateway, a raw upstream that answers `/fz/…` with the
 * case's bytes (then ends, keeps serving on the connection, or resets it) and `/good/N`
 * with a well-formed response, and a healthy node:http upstream. `run` sends the case's request, reads
 * what the client gets (raw bytes on HTTP/1.1, node:http2 on h2), judges it, then checks that the pool
 * recovered: a request to the healthy upstream and one to the fuzzed upstream, now well-behaved, both
 * get exactly their answer. The fuzzed upstream has one pooled connection, so that the well-behaved
 * request goes over the very connection the case used whenever the gateway kept it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { getBody, H2, send, startHttpServer, startRawServer, startTestGateway } from '../helpers.ts';
import { type After, judge, type Observed, type ResponseCase, readResponse } from './response-grammar.ts';

/**
 * The limits the case's route runs under: short, so that a held connection costs little. The recovery
 * requests get generous ones: they check what comes back, not how fast on a busy machine.
 */
const ROUTE_TIMEOUTS = '{ connect: 1s, ttfb: 150ms, read: 150ms, total: 3s }';
/** How long the client waits for an answer before calling it a hang. */
const CLIENT_WAIT_MS = 4_000;

export interface Harness {
  /** Runs one case: what was wrong (the oracle's verdict, or a failed recovery), or undefined. */
  run(c: ResponseCase): Promise<string | undefined>;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startHarness(): Promise<Harness> {
  let current: ResponseCase | undefined;
  /** Resolves when the upstream has written the whole of the current case (it writes in pieces). */
  let written: Promise<void> = Promise.resolve();
  let wrote: () => void = () => {};
  const fuzzed = await startRawServer((s) =>
    serveConnection(
      s,
      () => current,
      () => wrote(),
    ),
  );
  const healthy = await startHttpServer((_req, res) => res.end('healthy'));
  const gw = await startTestGateway(`
upstreams:
  fuzzed: { targets: ["${fuzzed.url}"], max_connections: 1 }
  healthy: { targets: ["${healthy.url}"] }
routes:
  - { name: fuzz, match: { path: /fz/ }, upstream: fuzzed, timeouts: ${ROUTE_TIMEOUTS} }
  - { name: good, match: { path: /good/ }, upstream: fuzzed, timeouts: { ttfb: 3s, read: 3s, total: 5s } }
  - { name: healthy, match: { path: /healthy }, upstream: healthy }
`);
  let n = 0;
  return {
    async run(c) {
      if (process.env.FUZZ_TRACE) console.error(`case ${n + 1}: ${JSON.stringify(c)}`);
      current = c;
      written = new Promise<void>((resolve) => {
        wrote = resolve;
      });
      const id = ++n;
      const seen = H2 ? await observeH2(gw.url(`/fz/${id}`)) : await observeH1(gw.port, `/fz/${id}`);
      const wrong = judge(c, seen);
      if (wrong !== undefined) return `${wrong} (client saw ${seen.kind} ${seen.status})`;
      const h = await send(gw.port, '/healthy').catch((e: Error) => ({ status: 0, body: e.message }));
      if (h.status !== 200 || h.body !== 'healthy')
        return `pool did not recover: the healthy upstream gave ${h.status} ${JSON.stringify(h.body)}`;
      // "Once it behaves": the last piece of the case has been written, and has had time to arrive
      // (a piece that lands while a next request is in flight is that request's answer).
      await Promise.race([written, sleep(1_000)]);
      await sleep(5);
      const g = await send(gw.port, `/good/${id}`).catch((e: Error) => ({ status: 0, body: e.message }));
      if (g.status !== 200 || g.body !== `good-${id}`)
        return `pool did not recover: the fuzzed upstream, well-behaved again, gave ${g.status} ${JSON.stringify(g.body.slice(0, 400))}`;
      return undefined;
    },
    async close() {
      await gw.close();
      await Promise.all([fuzzed.close(), healthy.close()]);
    },
  };
}

/**
 * One upstream connection: reads request heads (GETs, no bodies) one after the other; `/fz/…` gets the
 * case's bytes, written in pieces at its split points (1 ms apart, each sent at once: TCP_NODELAY), then
 * what `after` says; `/good/N` gets a well-formed `good-N` with keep-alive.
 */
function serveConnection(s: Socket, current: () => ResponseCase | undefined, wrote: () => void): void {
  // Each piece leaves when it is written. With Nagle's algorithm on (node:net's default), a piece written
  // while the last one is unacknowledged waits in the kernel for the ACK, which the gateway delays (about
  // 40 ms) or sends with its next request: late bytes then arrive after the next request went out and
  // answer it, as they would through any gateway (docs/reliability.md, late bytes).
  s.setNoDelay(true);
  let buffered = '';
  let busy = false;
  let done = false;
  const next = async (): Promise<void> => {
    if (busy || done) return;
    const end = buffered.indexOf('\r\n\r\n');
    if (end === -1) return;
    const head = buffered.slice(0, end);
    buffered = buffered.slice(end + 4);
    const path = head.split(' ')[1] ?? '';
    busy = true;
    const c = current();
    if (path.startsWith('/fz/') && c !== undefined) {
      let at = 0;
      for (const k of [...c.splits, c.bytes.length]) {
        if (k > at) s.write(Buffer.from(c.bytes.slice(at, k), 'latin1'));
        at = k;
        if (k < c.bytes.length) await sleep(1);
      }
      wrote();
      const after: After = c.after;
      if (after === 'end') {
        done = true;
        s.end();
      } else if (after === 'reset') {
        done = true;
        s.resetAndDestroy();
      }
    } else {
      const body = path.startsWith('/good/') ? `good-${path.slice(6)}` : 'not found';
      s.write(
        `HTTP/1.1 ${path.startsWith('/good/') ? 200 : 404} OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      );
    }
    busy = false;
    return next();
  };
  s.on('data', (d: Buffer) => {
    buffered += d.toString('latin1');
    void next();
  });
}

const PROBLEM = /\r\ncontent-type: application\/problem\+json\r\n/i;
const OURS = /\r\nproxy-status: sluice;/i;

/** An HTTP/1.1 GET on a connection of its own, read byte by byte with the strict reader. */
async function observeH1(port: number, path: string): Promise<Observed> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  let data = '';
  const result = await new Promise<Observed>((resolve) => {
    const timer = setTimeout(() => resolve(judgeBytes(data, false, true)), CLIENT_WAIT_MS);
    const finish = (closed: boolean) => {
      const seen = judgeBytes(data, closed, false);
      if (seen === undefined) return;
      clearTimeout(timer);
      resolve(seen);
    };
    socket.on('data', (d: Buffer) => {
      data += d.toString('latin1');
      finish(false);
    });
    socket.on('close', () => finish(true));
    socket.write(`GET ${path} HTTP/1.1\r\nHost: fuzz.test\r\n\r\n`);
  });
  socket.destroy();
  return result;
}

/** What the bytes the client got so far amount to; undefined while more may come. */
function judgeBytes(data: string, closed: boolean, timedOut: boolean): Observed;
function judgeBytes(data: string, closed: boolean, timedOut: false): Observed | undefined;
function judgeBytes(data: string, closed: boolean, timedOut: boolean): Observed | undefined {
  const r = readResponse(data, closed);
  const status = r.status ?? 0;
  if (r.kind === 'invalid') return { kind: 'malformed', status, body: '', why: r.why };
  if (r.kind === 'complete') {
    // Framing the gateway itself must get right; a repeated field is the upstream's, passed on.
    const own = r.lenient.filter((l) => l !== 'repeated single-value field');
    if (own.length > 0) return { kind: 'malformed', status, body: r.body, why: own.join(', ') };
    const head = data.slice(0, data.indexOf('\r\n\r\n') + 2);
    return { kind: PROBLEM.test(head) && OURS.test(head) ? 'problem' : 'response', status, body: r.body };
  }
  if (!closed && !timedOut) return undefined;
  // Closed before any byte: the gateway had taken the upstream's head but not yet written it out.
  if (data === '')
    return closed ? { kind: 'cut', status: 0, body: '' } : { kind: 'none', status: 0, body: '', why: 'hang' };
  if (!r.headDone) return { kind: 'malformed', status, body: '', why: 'a response head cut short' };
  // The response began: cut when the connection closed before its end; a hang when it did not.
  return closed ? { kind: 'cut', status, body: r.body } : { kind: 'none', status, body: r.body, why: 'hang' };
}

async function observeH2(url: string): Promise<Observed> {
  const timeout = sleep(CLIENT_WAIT_MS).then(() => undefined);
  const r = await Promise.race([getBody(url).catch(() => undefined), timeout]);
  if (r === undefined) return { kind: 'none', status: 0, body: '' };
  if (!r.complete) return { kind: r.status === 0 ? 'none' : 'cut', status: r.status, body: r.body };
  const ours =
    r.headers['content-type'] === 'application/problem+json' &&
    String(r.headers['proxy-status'] ?? '').startsWith('sluice;');
  return { kind: ours ? 'problem' : 'response', status: r.status, body: r.body };
}

/** A regression case kept in test/corpus/responses/: the bytes and what the upstream does after. */
export interface CorpusCase extends ResponseCase {
  name: string;
  /** What it caught, or why it is kept. */
  why: string;
}

export const CORPUS_DIR = new URL('../corpus/responses/', import.meta.url);

export function loadCorpus(): CorpusCase[] {
  return readdirSync(CORPUS_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => {
      const c = JSON.parse(readFileSync(new URL(f, CORPUS_DIR), 'utf8')) as Partial<CorpusCase>;
      return {
        name: f.replace(/\.json$/, ''),
        why: c.why ?? '',
        bytes: c.bytes ?? '',
        after: c.after ?? 'end',
        splits: c.splits ?? [],
        notes: c.notes ?? [],
      };
    });
}

/** A case in a form a failure report can print and the corpus can keep. */
export function describeCase(c: ResponseCase): string {
  return JSON.stringify({ bytes: c.bytes, after: c.after, splits: c.splits, notes: c.notes }, null, 2);
}
