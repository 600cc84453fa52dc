/**
 * The differential corpus (issue 14): the same connections sent through nginx and through Sluice to
 * the recording upstream. Four sources:
 *
 * - `smuggling`: the published HTTP request-smuggling payloads (CL.TE, TE.CL, TE.TE obfuscations,
 *   CL.CL, CL.0) as PortSwigger's Web Security Academy and Watchfire's 2005 paper give them;
 * - `garden`: the parser discrepancies the HTTP Garden (Kallus et al., 2024) reported as trophies,
 *   rebuilt as requests (whitespace and NUL in chunk lines and field names, bare CR, obs-fold on
 *   Transfer-Encoding, overflowing chunk sizes, fields in the trailer section…);
 * - `rfc9112`: the request examples of RFC 9112 (request-target forms, chunked, pipelining);
 * - `corpus` and `fuzz`: the regression corpus (test/corpus/requests) and a fixed sample of single
 *   requests from the fuzz grammar (seed below), so every fuzz mutation is compared too.
 */
import fc from 'fast-check';
import { loadCorpus, toRequests } from './corpus.ts';
import { fuzzRequest } from './request-grammar.ts';

export interface DiffCase {
  name: string;
  source: 'smuggling' | 'garden' | 'rfc9112' | 'corpus' | 'fuzz';
  /** The whole connection's bytes. */
  bytes: Buffer;
  /** The methods of the requests in it, in order (HEAD responses have no body). */
  methods: string[];
  /** For fuzz cases: the mutation of each request (what a decision can match on). */
  mutations: string[];
}

const H = 'Host: h\r\n';

/** [name, bytes (latin1), methods] */
const LITERATURE: [DiffCase['source'], string, string, string[]][] = [
  // ---- PortSwigger / Watchfire request smuggling ----
  [
    'smuggling',
    'cl-te',
    `POST / HTTP/1.1\r\n${H}Content-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED`,
    ['POST'],
  ],
  [
    'smuggling',
    'te-cl',
    `POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'smuggling',
    'cl-te-next-request',
    `POST / HTTP/1.1\r\n${H}Content-Length: 35\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nX-Ignore: X`,
    ['POST'],
  ],
  [
    'smuggling',
    'te-te-xchunked',
    `POST / HTTP/1.1\r\n${H}Content-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'smuggling',
    'te-te-space-before-colon',
    `POST / HTTP/1.1\r\n${H}Content-Length: 4\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'smuggling',
    'te-te-chunked-then-x',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'smuggling',
    'te-te-tab',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding:\tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'smuggling',
    'te-te-leading-space-line',
    `POST / HTTP/1.1\r\n${H} Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'smuggling',
    'te-te-lf-in-previous',
    `POST / HTTP/1.1\r\n${H}X: X\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'smuggling',
    'te-te-lf-before-colon',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding\n: chunked\r\n\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'smuggling',
    'te-te-quoted',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'smuggling',
    'te-te-comma-list',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'smuggling',
    'te-te-upper',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'smuggling',
    'cl-cl-differ',
    `POST / HTTP/1.1\r\n${H}Content-Length: 8\r\nContent-Length: 7\r\n\r\n12345678`,
    ['POST'],
  ],
  [
    'smuggling',
    'cl-cl-same',
    `POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc`,
    ['POST'],
  ],
  ['smuggling', 'cl-list', `POST / HTTP/1.1\r\n${H}Content-Length: 3, 3\r\n\r\nabc`, ['POST']],
  ['smuggling', 'cl-plus', `POST / HTTP/1.1\r\n${H}Content-Length: +3\r\n\r\nabc`, ['POST']],
  ['smuggling', 'cl-negative', `POST / HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\n`, ['POST']],
  ['smuggling', 'cl-0-get-body', `GET / HTTP/1.1\r\n${H}Content-Length: 3\r\n\r\nabc`, ['GET']],
  [
    'smuggling',
    'cl-0-pipelined',
    `POST /a HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\nGET /b HTTP/1.1\r\n${H}\r\n`,
    ['POST', 'GET'],
  ],
  [
    'smuggling',
    'te-http10',
    `POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
    ['POST'],
  ],
  // ---- HTTP Garden trophies (as requests) ----
  [
    'garden',
    'chunk-size-trailing-space',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'garden',
    'chunk-size-leading-space',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'garden',
    'chunk-size-0x',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'garden',
    'chunk-size-overflow',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'garden',
    'chunk-size-leading-zeros',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n00000000000000000003\r\nabc\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'garden',
    'chunk-ext-bare-lf',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3;x\nabc\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'garden',
    'chunk-ext-nul',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3;x\0\r\nabc\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'garden',
    'chunk-ext-valid',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3;a=b;c="d e"\r\nabc\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'garden',
    'chunk-data-no-crlf',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n`,
    ['POST'],
  ],
  [
    'garden',
    'chunk-lf-only',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n`,
    ['POST'],
  ],
  [
    'garden',
    'last-chunk-no-final-crlf-then-request',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\nGET /x HTTP/1.1\r\n${H}\r\n`,
    ['POST'],
  ],
  [
    'garden',
    'trailer-content-length',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nContent-Length: 50\r\n\r\n`,
    ['POST'],
  ],
  [
    'garden',
    'trailer-bad-field',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nbad field\r\n\r\n`,
    ['POST'],
  ],
  [
    'garden',
    'te-obs-fold',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding:\r\n chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
    ['POST'],
  ],
  ['garden', 'header-name-trailing-space', `GET / HTTP/1.1\r\n${H}X-A : 1\r\n\r\n`, ['GET']],
  ['garden', 'header-name-nul', `GET / HTTP/1.1\r\n${H}X\0A: 1\r\n\r\n`, ['GET']],
  ['garden', 'header-value-nul', `GET / HTTP/1.1\r\n${H}X-A: a\0b\r\n\r\n`, ['GET']],
  ['garden', 'header-value-bare-cr', `GET / HTTP/1.1\r\n${H}X-A: a\rb\r\n\r\n`, ['GET']],
  ['garden', 'header-value-high-bytes', `GET / HTTP/1.1\r\n${H}X-A: caf\xe9\r\n\r\n`, ['GET']],
  ['garden', 'header-name-high-bytes', `GET / HTTP/1.1\r\n${H}X-\xe9: 1\r\n\r\n`, ['GET']],
  ['garden', 'request-line-bare-cr', `GET / HTTP/1.1\r${H}\r\n`, ['GET']],
  ['garden', 'request-line-tab', `GET\t/\tHTTP/1.1\r\n${H}\r\n`, ['GET']],
  ['garden', 'request-line-double-space', `GET  / HTTP/1.1\r\n${H}\r\n`, ['GET']],
  ['garden', 'version-leading-zero', `GET / HTTP/01.1\r\n${H}\r\n`, ['GET']],
  ['garden', 'version-1-2', `GET / HTTP/1.2\r\n${H}\r\n`, ['GET']],
  ['garden', 'version-2-0', `GET / HTTP/2.0\r\n${H}\r\n`, ['GET']],
  ['garden', 'version-lower', `GET / http/1.1\r\n${H}\r\n`, ['GET']],
  ['garden', 'method-lower', `get / HTTP/1.1\r\n${H}\r\n`, ['GET']],
  ['garden', 'method-custom', `PURGEX / HTTP/1.1\r\n${H}\r\n`, ['PURGEX']],
  ['garden', 'host-twice', `GET / HTTP/1.1\r\n${H}${H}\r\n`, ['GET']],
  ['garden', 'host-twice-differ', `GET / HTTP/1.1\r\n${H}Host: other\r\n\r\n`, ['GET']],
  ['garden', 'host-missing', 'GET / HTTP/1.1\r\n\r\n', ['GET']],
  ['garden', 'host-empty', 'GET / HTTP/1.1\r\nHost:\r\n\r\n', ['GET']],
  ['garden', 'host-with-userinfo', 'GET / HTTP/1.1\r\nHost: user@h\r\n\r\n', ['GET']],
  ['garden', 'absolute-form-other-host', `GET http://other/x HTTP/1.1\r\n${H}\r\n`, ['GET']],
  ['garden', 'target-fragment', `GET /a?x=1#f HTTP/1.1\r\n${H}\r\n`, ['GET']],
  ['garden', 'target-dot-segments', `GET /a/../b/./c HTTP/1.1\r\n${H}\r\n`, ['GET']],
  ['garden', 'target-encoded-dots', `GET /a/%2e%2e/b HTTP/1.1\r\n${H}\r\n`, ['GET']],
  ['garden', 'target-encoded-slash', `GET /a%2Fb HTTP/1.1\r\n${H}\r\n`, ['GET']],
  ['garden', 'target-bad-escape', `GET /a%zz HTTP/1.1\r\n${H}\r\n`, ['GET']],
  ['garden', 'target-backslash', `GET /a\\..\\b HTTP/1.1\r\n${H}\r\n`, ['GET']],
  [
    'garden',
    'expect-100-continue',
    `POST / HTTP/1.1\r\n${H}Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc`,
    ['POST'],
  ],
  [
    'garden',
    'connection-named-header',
    `GET / HTTP/1.1\r\n${H}Connection: X-Secret\r\nX-Secret: 1\r\n\r\n`,
    ['GET'],
  ],
  // ---- RFC 9112 examples ----
  ['rfc9112', 'origin-form', 'GET /where?q=now HTTP/1.1\r\nHost: www.example.org\r\n\r\n', ['GET']],
  [
    'rfc9112',
    'absolute-form',
    'GET http://www.example.org/pub/WWW/TheProject.html HTTP/1.1\r\nHost: www.example.org\r\n\r\n',
    ['GET'],
  ],
  ['rfc9112', 'asterisk-form', 'OPTIONS * HTTP/1.1\r\nHost: www.example.org:8001\r\n\r\n', ['OPTIONS']],
  [
    'rfc9112',
    'authority-form',
    'CONNECT www.example.com:80 HTTP/1.1\r\nHost: www.example.com\r\n\r\n',
    ['CONNECT'],
  ],
  [
    'rfc9112',
    'chunked',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n`,
    ['POST'],
  ],
  [
    'rfc9112',
    'chunked-with-trailer',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n`,
    ['POST'],
  ],
  ['rfc9112', 'http10-no-host', 'GET / HTTP/1.0\r\n\r\n', ['GET']],
  [
    'rfc9112',
    'pipelining',
    `GET /1 HTTP/1.1\r\n${H}\r\nGET /2 HTTP/1.1\r\n${H}\r\nPOST /3 HTTP/1.1\r\n${H}Content-Length: 1\r\n\r\nx`,
    ['GET', 'GET', 'POST'],
  ],
  [
    'rfc9112',
    'pipelining-after-close',
    `GET /1 HTTP/1.1\r\n${H}Connection: close\r\n\r\nGET /2 HTTP/1.1\r\n${H}\r\n`,
    ['GET', 'GET'],
  ],
  ['rfc9112', 'leading-empty-line', `\r\nGET / HTTP/1.1\r\n${H}\r\n`, ['GET']],
  ['rfc9112', 'obs-fold', `GET / HTTP/1.1\r\n${H}X-A: a\r\n b\r\n\r\n`, ['GET']],
];

/** Seed and size of the fuzz sample in the differential. */
export const DIFF_FUZZ_SEED = 14;
export const DIFF_FUZZ_CASES = 200;

export function differentialCorpus(): DiffCase[] {
  const out: DiffCase[] = LITERATURE.map(([source, name, bytes, methods]) => ({
    name,
    source,
    bytes: Buffer.from(bytes, 'latin1'),
    methods,
    mutations: [],
  }));
  for (const c of loadCorpus()) {
    const rs = toRequests(c);
    out.push({
      name: c.name,
      source: 'corpus',
      bytes: Buffer.concat(rs.map((r) => r.bytes)),
      methods: rs.map((r) => r.meant.method),
      mutations: [],
    });
  }
  // Single requests: each carries at most one mutation, so a disagreement has one cause to decide.
  const sample = fc.sample(
    fuzzRequest.map((r) => [r]),
    { seed: DIFF_FUZZ_SEED, numRuns: DIFF_FUZZ_CASES },
  );
  sample.forEach((rs, i) => {
    out.push({
      name: `fuzz-${DIFF_FUZZ_SEED}-${i}`,
      source: 'fuzz',
      bytes: Buffer.concat(rs.map((r) => r.bytes)),
      methods: rs.map((r) => r.meant.method),
      mutations: rs.map((r) => r.mutation),
    });
  });
  return out;
}
