/**
 * The request grammar of the framing fuzz (issue 14): fast-check arbitraries that produce what a
 * client *means* (method, path, Host, end-to-end headers, body) together with its rendering as raw
 * HTTP/1.1 bytes, optionally mutated (CL/TE variants, chunk sizes and extensions, CR/LF/NUL and
 * obs-fold in headers, duplicate and conflicting headers, absolute-form and odd targets), and the
 * outcome each mutation calls for:
 *
 * - `forward`: a valid request; the gateway must forward exactly what was meant.
 * - `refuse`: an invalid or ambiguous one; it must get a 4xx and nothing complete may reach the
 *   upstream.
 * - `either`: RFC 9112 lets a server reject it or interpret it one way; if forwarded, it must be
 *   forwarded as `meant` says.
 *
 * The expected upstream path comes from this file's own normaliser (`expectedPath`), written apart
 * from src/routing/normalize.ts so the oracle does not share the gateway's code.
 */
import fc from 'fast-check';

export type Expect = 'forward' | 'refuse' | 'either';

/** What the client means; `id` is carried in `x-fuzz-id` to match upstream records to requests. */
export interface Meant {
  id: string;
  method: string;
  /** The path (normalised) and query the upstream must receive. */
  target: string;
  host: string;
  /** End-to-end headers as they must reach the upstream, in order (names compared case-insensitively). */
  headers: [string, string][];
  body: Buffer;
}

export interface FuzzRequest {
  meant: Meant;
  bytes: Buffer;
  expect: Expect;
  /** Names of what was done to the rendering, for reports and the corpus. */
  mutation: string;
}

/** Hop-by-hop and gateway-owned names: never forwarded as the client sent them. */
const NOT_FORWARDED = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
  'content-length',
  'host',
  'via',
  'x-request-id',
  'x-timeout-ms',
  'expect',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
]);

/** The headers of an upstream record that a comparison with `meant.headers` looks at. */
export function endToEnd(headers: readonly [string, string][]): [string, string][] {
  return headers
    .filter(([n]) => !NOT_FORWARDED.has(n.toLowerCase()))
    .map(([n, v]) => [n.toLowerCase(), v] as [string, string]);
}

// ---- paths ---------------------------------------------------------------------------------------

const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/**
 * The path SPEC §3 says the upstream receives: percent-encoded unreserved characters decoded, other
 * escapes' hex upper-cased, runs of `/` merged, then dot segments removed (RFC 3986 §5.2.4) with
 * `..` above the root staying at the root. Undefined for an invalid escape.
 */
export function expectedPath(raw: string): string | undefined {
  let decoded = '';
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] !== '%') {
      decoded += raw[i];
      continue;
    }
    const hex = raw.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return undefined;
    const ch = String.fromCharCode(Number.parseInt(hex, 16));
    decoded += UNRESERVED.test(ch) ? ch : `%${hex.toUpperCase()}`;
    i += 2;
  }
  let input = decoded.replace(/\/+/g, '/');
  // RFC 3986 §5.2.4, rule by rule, on a path that starts with '/'.
  let output = '';
  while (input.length > 0) {
    if (input.startsWith('/./')) input = input.slice(2);
    else if (input === '/.') input = '/';
    else if (input.startsWith('/../')) {
      input = input.slice(3);
      output = output.slice(0, Math.max(0, output.lastIndexOf('/')));
    } else if (input === '/..') {
      input = '/';
      output = output.slice(0, Math.max(0, output.lastIndexOf('/')));
    } else {
      const next = input.indexOf('/', 1);
      const seg = next === -1 ? input : input.slice(0, next);
      output += seg;
      input = next === -1 ? '' : input.slice(next);
    }
  }
  return output === '' ? '/' : output;
}

const segment = fc.constantFrom(
  'a',
  'b1',
  'x-y',
  '~u',
  'api',
  '.',
  '..',
  '%2e',
  '%2E%2e',
  '%41',
  '%7e',
  '%2F',
  '%2f',
  '%20',
  '',
  'A.B',
);
const query = fc.option(fc.constantFrom('?x=1', '?a=%2F&b=..', '?', '?q=a+b&q=c', '?%zz'), { nil: '' });

// ---- headers -------------------------------------------------------------------------------------

const headerName = fc.constantFrom(
  'X-A',
  'x-b',
  'Accept',
  'User-Agent',
  'X-Dup',
  'X-Dup',
  'Cookie',
  'X-Long-Name-1',
);
const headerValue = fc.oneof(
  fc.constantFrom('1', 'two words', 'text/html, */*;q=0.8', 'a=b; c=d', '"quoted"', ''),
  fc.stringMatching(/^[!-~]([ !-~]{0,20}[!-~])?$/),
);
const hostName = fc.constantFrom('example.test', 'h:8080', 'api.example.test');

/** Hop-by-hop headers the client may add; none may reach the upstream. */
const hopByHop = fc.constantFrom<[string, string][]>(
  [['Keep-Alive', 'timeout=5']],
  [['TE', 'trailers']],
  [['Proxy-Connection', 'keep-alive']],
  [
    ['Connection', 'X-Named'],
    ['X-Named', 'dropped'],
  ],
  [['Connection', 'keep-alive']],
  [['Trailer', 'X-T']],
);

// ---- the request as meant ------------------------------------------------------------------------

interface Shape {
  method: string;
  segments: string[];
  query: string;
  host: string;
  headers: [string, string][];
  hop: [string, string][];
  body: Uint8Array;
  framing: 'none' | 'length' | 'chunked';
  /** Chunked: where the body is cut into chunks (fractions 0..1). */
  cuts: number[];
  absolute: boolean;
  mutation: string;
  /** A free choice the mutation uses (which variant, where). */
  pick: number;
}

export const MUTATIONS = [
  'none',
  // valid variants: must be forwarded as meant
  'ows',
  'name-case',
  'chunk-ext',
  'chunk-zeros',
  'chunk-upper-hex',
  'te-upper',
  'absolute-same-host',
  // invalid or ambiguous: must be refused
  'cl-te',
  'te-cl',
  'cl-dup-diff',
  'cl-list-diff',
  'cl-sign',
  'cl-hex',
  'te-xchunked',
  'te-chunked-not-last',
  'te-space-before-colon',
  'te-vtab',
  'te-dup-header',
  'value-cr',
  'value-nul',
  'value-lf',
  'obs-fold',
  'name-space',
  'name-bad-char',
  'no-colon',
  'dup-host',
  'no-host',
  'absolute-other-host',
  'chunk-size-bad',
  'chunk-size-overflow',
  'chunk-no-crlf',
  'target-space',
  'target-star',
  'target-bad-escape',
  'version-bad',
  'method-lower',
  // RFC leaves a choice: refused, or forwarded as meant
  'bare-lf',
  'chunk-bare-lf',
  'dup-cl-same',
  'te-dup-chunked',
  'target-fragment',
  'chunk-ext-bws',
] as const;
export type Mutation = (typeof MUTATIONS)[number];

const shape: fc.Arbitrary<Shape> = fc
  .record({
    method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'POST', 'PUT'),
    segments: fc.array(segment, { minLength: 1, maxLength: 5 }),
    query,
    host: hostName,
    headers: fc.array(fc.tuple(headerName, headerValue), { maxLength: 5 }),
    hop: fc.option(hopByHop, { nil: [] as [string, string][] }),
    body: fc.uint8Array({ maxLength: 80 }),
    framing: fc.constantFrom('none', 'length', 'chunked', 'chunked'),
    cuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 4 }),
    absolute: fc.boolean(),
    mutation: fc.oneof(
      { weight: 3, arbitrary: fc.constant('none') },
      { weight: 7, arbitrary: fc.constantFrom(...MUTATIONS) },
    ),
    pick: fc.nat(1000),
  })
  .map((s) => ({
    ...s,
    // A body needs framing; framing 'none' means no body.
    body: s.framing === 'none' ? new Uint8Array() : s.body,
    absolute: s.absolute && s.mutation === 'none',
  }));

let nextId = 0;

/** Renders a shape; the mutation changes the bytes and says what outcome that calls for. */
function render(s: Shape, id: string): FuzzRequest {
  const rawPath = `/${s.segments.join('/')}`;
  const body = Buffer.from(s.body);
  let target = (s.absolute ? `http://${s.host}` : '') + rawPath + s.query;
  let method = s.method;
  let version = 'HTTP/1.1';
  const lines: string[] = [];
  let mutation: string = s.mutation;
  let expect: Expect = 'forward';
  const meantHeaders: [string, string][] = [];
  const host = s.host;
  const pathOk = expectedPath(rawPath);
  if (pathOk === undefined) expect = 'refuse';

  // Headers: Host first (as clients do), the generated ones, the hop-by-hop ones, framing, then the id.
  // Copies: the mutations below edit them, and fast-check shares generated values between runs.
  const headerLines: [string, string][] = [['Host', s.host], ...s.headers, ...s.hop].map(
    ([n, v]) => [n, v] as [string, string],
  );
  for (const [n, v] of [...s.headers, ...s.hop]) {
    const named = s.hop.some(
      ([hn, hv]) => hn.toLowerCase() === 'connection' && hv.toLowerCase() === n.toLowerCase(),
    );
    if (!NOT_FORWARDED.has(n.toLowerCase()) && !named) meantHeaders.push([n.toLowerCase(), v]);
  }
  // Body framing.
  let framing: string[] = [];
  const chunks: Buffer[] = [];
  if (s.framing === 'length') framing = [`Content-Length: ${body.length}`];
  if (s.framing === 'chunked') {
    framing = ['Transfer-Encoding: chunked'];
    const at = [...new Set(s.cuts.map((c) => Math.floor(c * body.length)))].filter(
      (c) => c > 0 && c < body.length,
    );
    at.sort((a, b) => a - b);
    let from = 0;
    for (const c of [...at, body.length]) {
      if (c > from) chunks.push(body.subarray(from, c));
      from = c;
    }
  }
  const chunkSize = (n: number) => n.toString(16);
  let chunkLines = chunks.map((c) => ({ size: chunkSize(c.length), data: c, eol: '\r\n', after: '\r\n' }));
  let last = '0\r\n\r\n';
  let eol = '\r\n';

  const chunked = s.framing === 'chunked';
  const withBody = s.framing !== 'none';
  const p = s.pick;
  const skip = () => {
    mutation = `none(${mutation})`;
  };
  const refuse = () => {
    expect = 'refuse';
  };
  const either = () => {
    if (expect !== 'refuse') expect = 'either';
  };
  switch (s.mutation as Mutation) {
    case 'none':
      break;
    case 'ows': {
      const ws = [' ', '\t', '  ', ' \t'];
      for (const h of headerLines) h[1] = `${ws[p % 4]}${h[1]}${ws[(p >> 2) % 4]}`;
      break;
    }
    case 'name-case':
      for (const h of headerLines) h[0] = p % 2 ? h[0].toUpperCase() : h[0].toLowerCase();
      framing = framing.map((f) => (p % 2 ? f.toUpperCase().replace('CHUNKED', 'chunked') : f.toLowerCase()));
      break;
    case 'chunk-ext':
      if (!chunked || chunks.length === 0) skip();
      else {
        const exts = [';a=b', ';name', ';a="q v"', ';a=b;c=d'];
        chunkLines[p % chunkLines.length].size += exts[p % 4];
        last = `0${exts[(p >> 2) % 4]}\r\n\r\n`;
      }
      break;
    case 'chunk-zeros':
      if (!chunked) skip();
      else {
        chunkLines = chunkLines.map((c) => ({ ...c, size: `000${c.size}` }));
        last = '000\r\n\r\n';
      }
      break;
    case 'chunk-upper-hex':
      if (!chunked) skip();
      else chunkLines = chunkLines.map((c) => ({ ...c, size: c.size.toUpperCase() }));
      break;
    case 'te-upper':
      if (!chunked) skip();
      else
        framing = [
          ['Transfer-Encoding: CHUNKED', 'transfer-encoding: Chunked', 'TRANSFER-ENCODING: chunked'][p % 3],
        ];
      break;
    case 'absolute-same-host':
      target = `http://${s.host}${rawPath}${s.query}`;
      break;
    case 'cl-te':
      if (!chunked) skip();
      else {
        framing = [`Content-Length: ${Math.max(0, body.length - 1 - (p % 3))}`, ...framing];
        refuse();
      }
      break;
    case 'te-cl':
      if (!chunked) skip();
      else {
        framing = [...framing, `Content-Length: ${body.length + 5}`];
        refuse();
      }
      break;
    case 'cl-dup-diff':
      if (s.framing !== 'length') skip();
      else {
        framing = [...framing, `Content-Length: ${body.length + 1 + (p % 7)}`];
        if (p % 2) framing.reverse();
        refuse();
      }
      break;
    case 'cl-list-diff':
      if (s.framing !== 'length') skip();
      else {
        framing = [`Content-Length: ${body.length}, ${body.length + 1}`];
        refuse();
      }
      break;
    case 'cl-sign':
      if (s.framing !== 'length') skip();
      else {
        framing = [`Content-Length: ${['+', '-', ' +'][p % 3]}${body.length}`];
        refuse();
      }
      break;
    case 'cl-hex':
      if (s.framing !== 'length' || body.length < 10) skip();
      else {
        framing = [`Content-Length: 0x${body.length.toString(16)}`];
        refuse();
      }
      break;
    case 'te-xchunked':
      if (!chunked) skip();
      else {
        framing = [
          `Transfer-Encoding: ${['xchunked', 'chunked-x', 'chunk', 'chunkedx', '"chunked"'][p % 5]}`,
        ];
        refuse();
      }
      break;
    case 'te-chunked-not-last':
      if (!chunked) skip();
      else {
        framing = [`Transfer-Encoding: ${['chunked, identity', 'chunked, gzip', 'chunked,x'][p % 3]}`];
        refuse();
      }
      break;
    case 'te-space-before-colon':
      if (!chunked) skip();
      else {
        framing = [
          ['Transfer-Encoding : chunked', 'Transfer-Encoding\t: chunked', ' Transfer-Encoding: chunked'][
            p % 3
          ],
        ];
        refuse();
      }
      break;
    case 'te-vtab':
      if (!chunked) skip();
      else {
        framing = [`Transfer-Encoding:${['\x0b', '\x0c', '\x00'][p % 3]}chunked`];
        refuse();
      }
      break;
    case 'te-dup-header':
      if (!chunked) skip();
      else {
        // chunked, then another coding: chunked is not last, refused. The other coding first:
        // `gzip, chunked` would need decoding the gateway does not do (refused); `identity` is a
        // no-op a server may accept.
        framing = [...framing, `Transfer-Encoding: ${['x', 'identity', 'gzip'][p % 3]}`];
        if (p % 2) framing.reverse();
        if (p % 2 && p % 3 === 1) either();
        else refuse();
      }
      break;
    case 'value-cr':
    case 'value-nul':
    case 'value-lf': {
      const bad = { 'value-cr': '\r', 'value-nul': '\0', 'value-lf': '\n' }[s.mutation as 'value-cr'];
      headerLines.push(['X-Bad', `a${bad}b`]);
      // A lone LF ends the line for a lenient parser: "b" becomes a line without a colon.
      refuse();
      break;
    }
    case 'obs-fold':
      headerLines.push(['X-Fold', 'a\r\n b']);
      // RFC 9112 §5.2: reject, or replace each obs-fold with SP.
      either();
      meantHeaders.push(['x-fold', 'a b']);
      break;
    case 'name-space':
      headerLines.push([['X-Sp ', 'X-Sp\t', 'X Sp'][p % 3], 'v']);
      refuse();
      break;
    case 'name-bad-char':
      headerLines.push([['X(A', 'X@A', 'X"A', 'X\x7fA', 'Xé'][p % 5], 'v']);
      refuse();
      break;
    case 'no-colon':
      lines.push('X-No-Colon');
      refuse();
      break;
    case 'dup-host':
      headerLines.push(['Host', p % 2 ? s.host : 'other.test']);
      refuse();
      break;
    case 'no-host':
      headerLines.shift();
      refuse();
      break;
    case 'absolute-other-host':
      target = `http://other.test${rawPath}${s.query}`;
      refuse();
      break;
    case 'chunk-size-bad':
      if (!chunked || chunks.length === 0) skip();
      else {
        const c = chunkLines[p % chunkLines.length];
        c.size = [`0x${c.size}`, `${c.size} `, `-${c.size}`, `${c.size}g`, ` ${c.size}`, `+${c.size}`][p % 6];
        refuse();
      }
      break;
    case 'chunk-size-overflow':
      if (!chunked || chunks.length === 0) skip();
      else {
        // Twenty leading zeros are still a valid size (RFC 9112 §7.1: 1*HEXDIG); the others overflow.
        if (p % 3 === 2) {
          chunkLines[0].size = `${'0'.repeat(20)}${chunkLines[0].size}`;
          either();
        } else {
          chunkLines[0].size = ['ffffffffffffffffffff', '10000000000000001'][p % 3];
          refuse();
        }
      }
      break;
    case 'chunk-no-crlf':
      if (!chunked || chunks.length === 0) skip();
      else {
        chunkLines[p % chunkLines.length].after = ['', 'X\r\n', '\n\r'][p % 3];
        refuse();
      }
      break;
    case 'target-space':
      target = `${rawPath} x${s.query}`;
      refuse();
      break;
    case 'target-star':
      target = '*';
      if (method === 'OPTIONS') method = 'GET';
      refuse();
      break;
    case 'target-bad-escape':
      target = `${rawPath}%${['zz', '2', 'g0'][p % 3]}${s.query}`;
      refuse();
      break;
    case 'version-bad':
      version = ['HTTP/1.2', 'HTTP/2.0', 'HTTP/1.1 ', 'HTTP/01.1', 'http/1.1', 'HTTP/1'][p % 6];
      // HTTP/1.2 is a valid 1.x version a server may treat as 1.1 (RFC 9110 §2.5).
      if (p % 6 === 0) either();
      else refuse();
      break;
    case 'method-lower':
      method = method.toLowerCase();
      either();
      break;
    case 'bare-lf':
      eol = '\n';
      either();
      break;
    case 'chunk-bare-lf':
      if (!chunked || chunks.length === 0) skip();
      else {
        chunkLines = chunkLines.map((c) => ({ ...c, eol: '\n' }));
        either();
      }
      break;
    case 'dup-cl-same':
      if (s.framing !== 'length') skip();
      else {
        framing = [...framing, ...framing];
        either();
      }
      break;
    case 'te-dup-chunked':
      if (!chunked) skip();
      else {
        framing = p % 2 ? ['Transfer-Encoding: chunked, chunked'] : [...framing, ...framing];
        // Chunked twice is a double encoding: either refused or... never forwarded as single.
        refuse();
      }
      break;
    case 'target-fragment':
      target = `${rawPath}${s.query}#frag`;
      either();
      break;
    case 'chunk-ext-bws':
      if (!chunked || chunks.length === 0) skip();
      else {
        chunkLines[0].size += [' ;a=b', '; a=b', ';a = b', '\t;a'][p % 4];
        either();
      }
      break;
  }
  if (method === 'HEAD' && withBody) {
    // A HEAD with a body is legal but pointless; keep HEAD bodyless so responses stay simple.
    method = 'GET';
  }
  const all = [
    `${method} ${target} ${version}`,
    ...headerLines.map(([n, v]) => `${n}: ${v}`),
    ...lines,
    ...framing,
    `X-Fuzz-Id: ${id}`,
  ];
  const head = all.join(eol) + eol + eol;
  const parts: Buffer[] = [Buffer.from(head, 'latin1')];
  if (s.framing === 'length') parts.push(body);
  if (chunked) {
    for (const c of chunkLines)
      parts.push(Buffer.from(c.size + c.eol, 'latin1'), c.data, Buffer.from(c.after, 'latin1'));
    parts.push(Buffer.from(eol === '\n' ? last.replace(/\r\n/g, '\n') : last, 'latin1'));
  }
  meantHeaders.push(['x-fuzz-id', id]);
  return {
    meant: {
      id,
      method,
      target: (pathOk ?? rawPath) + s.query,
      host,
      headers: meantHeaders,
      body: withBody ? body : Buffer.alloc(0),
    },
    bytes: Buffer.concat(parts),
    expect,
    mutation,
  };
}

/** One request: what it means, its bytes, and what the gateway must do with it. */
export const fuzzRequest: fc.Arbitrary<FuzzRequest> = shape.map((s) => render(s, String(nextId++)));

/** A few requests pipelined on one connection. */
export const pipeline: fc.Arbitrary<FuzzRequest[]> = fc.array(fuzzRequest, { minLength: 2, maxLength: 4 });
