/**
 * The client side and the judge of the request-framing batteries (issue 14): sends raw bytes on one
 * connection (whole, split at given offsets, or one byte per write), reads the responses with a
 * small strict parser, and checks them, together with what the recording upstream got, against what
 * each request meant (request-grammar.ts). Used by the fuzz suite, the corpus replay, the long fuzz
 * script and the nginx differential.
 */
import { once } from 'node:events';
import { connect } from 'node:net';
import type { RecordedRequest, RecordingUpstream } from './recording-upstream.ts';
import type { FuzzRequest, Meant } from './request-grammar.ts';
import { endToEnd } from './request-grammar.ts';

/** The gateway the request batteries run: one catch-all route to the recording upstream. */
export const GATEWAY_YAML = (upstreamUrl: string) => `client: { header_timeout: 3s, body_idle_timeout: 3s }
upstreams: { up: { targets: ["${upstreamUrl}"] } }
routes:
  - { name: all, match: { path: / }, upstream: up }
`;

export interface ClientResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

export interface Exchanged {
  responses: ClientResponse[];
  /** The server closed the connection. */
  closed: boolean;
  /** Bytes after the last whole response (half a response, or garbage). */
  trailing: Buffer;
  /** Neither every response nor a close came within the wait. */
  timedOut: boolean;
}

/** Parses whole responses off `buf`; HEAD responses (by position) have no body. */
function parseResponses(
  buf: Buffer,
  methods: readonly string[],
): { responses: ClientResponse[]; rest: Buffer } {
  const responses: ClientResponse[] = [];
  let rest = buf;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end === -1) break;
    const lines = rest.subarray(0, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.1 (\d{3}) /.exec(lines[0]);
    if (!m) break;
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
    }
    const status = Number(m[1]);
    if (status >= 100 && status < 200) {
      rest = rest.subarray(end + 4);
      continue;
    }
    // A HEAD's answer has no body, except a problem the gateway sent before it knew the method
    // (a request line it could not parse): that one's JSON body follows.
    const head = methods[responses.length] === 'HEAD' && rest[end + 4] !== 0x7b; /* { */
    const length = head ? 0 : Number(headers['content-length'] ?? Number.NaN);
    if (Number.isNaN(length)) break; // the gateway always frames with Content-Length here
    if (rest.length < end + 4 + length) break;
    responses.push({ status, headers, body: rest.subarray(end + 4, end + 4 + length) });
    rest = rest.subarray(end + 4 + length);
  }
  return { responses, rest };
}

/**
 * Sends `bytes` on a new connection, cut at `splits` (offsets; each piece its own write, with a turn
 * of the event loop between) and collects responses until `expected` came (plus a short grace for a
 * surplus one), the server closes, or `waitMs` passes.
 */
export async function exchange(
  port: number,
  bytes: Buffer,
  methods: readonly string[],
  opts: { splits?: readonly number[]; waitMs?: number } = {},
): Promise<Exchanged> {
  const socket = connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  socket.on('error', () => {});
  await once(socket, 'connect');
  let buf = Buffer.alloc(0);
  let closed = false;
  const expected = methods.length;
  const done = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(true), opts.waitMs ?? 1_500);
    let grace: NodeJS.Timeout | undefined;
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (grace === undefined && parseResponses(buf, methods).responses.length >= expected) {
        grace = setTimeout(() => {
          clearTimeout(timer);
          resolve(false);
        }, 15);
      }
    });
    socket.on('close', () => {
      closed = true;
      clearTimeout(timer);
      clearTimeout(grace);
      resolve(false);
    });
  });
  const cuts = [...new Set(opts.splits ?? [])].filter((c) => c > 0 && c < bytes.length).sort((a, b) => a - b);
  let from = 0;
  for (const c of [...cuts, bytes.length]) {
    if (socket.destroyed) break;
    socket.write(bytes.subarray(from, c));
    from = c;
    if (c < bytes.length) await new Promise((r) => setImmediate(r));
  }
  const timedOut = await done;
  socket.destroy();
  const { responses, rest } = parseResponses(buf, methods);
  return { responses, closed, trailing: rest, timedOut };
}

const idOf = (r: RecordedRequest) => r.headers.find(([n]) => n.toLowerCase() === 'x-fuzz-id')?.[1];

/** How one request's upstream record differs from what it meant (empty: it matches). */
export function compareForwarded(meant: Meant, got: RecordedRequest): string[] {
  const out: string[] = [];
  if (got.method !== meant.method) out.push(`method ${got.method}, meant ${meant.method}`);
  if (got.target !== meant.target) out.push(`target ${got.target}, meant ${meant.target}`);
  const host = got.headers.filter(([n]) => n.toLowerCase() === 'host').map(([, v]) => v);
  if (host.length !== 1 || host[0] !== meant.host)
    out.push(`host ${JSON.stringify(host)}, meant ${meant.host}`);
  if (!got.body.equals(meant.body))
    out.push(
      `body ${JSON.stringify(got.body.toString('latin1'))}, meant ${JSON.stringify(meant.body.toString('latin1'))}`,
    );
  const headers = JSON.stringify(endToEnd(got.headers));
  const want = JSON.stringify(meant.headers);
  if (headers !== want) out.push(`headers ${headers}, meant ${want}`);
  return out;
}

/**
 * Judges one connection's exchange: each request answered at most once, in order; a 2xx only for
 * a request that may be forwarded, with exactly one complete, well-framed upstream record equal to
 * what it meant; a 4xx (problem+json) only for one that may be refused, with nothing complete
 * upstream; nothing else (no 5xx, no surplus response, no hang, no stray upstream request).
 */
export function judge(
  requests: readonly FuzzRequest[],
  got: Exchanged,
  upstream: RecordingUpstream,
): string[] {
  const problems: string[] = [];
  const records = upstream.requests;
  for (const r of records) {
    if (r.problems.length > 0) problems.push(`upstream saw a malformed request: ${r.problems.join('; ')}`);
  }
  const ids = new Set(requests.map((r) => r.meant.id));
  for (const r of records) {
    const id = idOf(r);
    if (id === undefined || (!ids.has(id) && !r.incomplete))
      problems.push(`upstream got a request nobody sent here: ${r.method} ${r.target} id=${id}`);
  }
  if (got.timedOut)
    problems.push(`no answer and no close within the wait (${got.responses.length} responses)`);
  if (got.responses.length > requests.length)
    problems.push(`${got.responses.length} responses to ${requests.length} requests`);
  if (got.trailing.length > 0 && !got.timedOut)
    problems.push(
      `bytes after the responses: ${JSON.stringify(got.trailing.toString('latin1').slice(0, 80))}`,
    );
  let closedBefore = false;
  requests.forEach((req, i) => {
    const mine = records.filter((r) => idOf(r) === req.meant.id);
    const complete = mine.filter((r) => !r.incomplete);
    const res = got.responses[i];
    const label = `request ${i} (${req.mutation}, ${req.expect})`;
    if (res === undefined) {
      if (complete.length > 0) problems.push(`${label}: reached the upstream but got no response`);
      else if (!closedBefore && !got.timedOut) problems.push(`${label}: no response (connection closed)`);
      closedBefore = true;
      return;
    }
    // After a response that closes the connection, the requests behind it go unanswered.
    if (res.headers.connection?.toLowerCase() === 'close') closedBefore = true;
    if (res.status >= 200 && res.status < 300) {
      if (req.expect === 'refuse') problems.push(`${label}: forwarded (${res.status}), must be refused`);
      if (complete.length !== 1) problems.push(`${label}: ${complete.length} complete upstream records`);
      else {
        const diff = compareForwarded(req.meant, complete[0]);
        if (diff.length > 0 && req.expect !== 'refuse')
          problems.push(`${label}: forwarded wrong: ${diff.join('; ')}`);
      }
      if (res.body.toString() !== (req.meant.method === 'HEAD' ? '' : 'ok'))
        problems.push(`${label}: response body ${JSON.stringify(res.body.toString())}`);
    } else if (res.status >= 400 && res.status < 500) {
      if (req.expect === 'forward') problems.push(`${label}: refused ${res.status}, must be forwarded`);
      if (complete.length > 0)
        problems.push(`${label}: refused ${res.status} but reached the upstream whole`);
      if (res.headers['content-type'] !== 'application/problem+json')
        problems.push(`${label}: ${res.status} is not problem+json`);
      if (/\bat .*\.ts:\d+/.test(res.body.toString())) problems.push(`${label}: a stack trace in the answer`);
    } else problems.push(`${label}: status ${res.status}`);
  });
  return problems;
}
