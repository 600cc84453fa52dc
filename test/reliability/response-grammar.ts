/**
 * The grammar of the fuzzed upstream responses (issue 14): a well-formed HTTP/1.1 response model, the
 * mutations applied to its wire form (status line, Content-Length, Transfer-Encoding, chunk sizes and
 * extensions, control characters in fields, obs-fold, bare LF, 1xx first, bytes after the body,
 * truncation), and the oracle: a strict RFC 9112 reader of the bytes the upstream sent and of the bytes
 * the client got, and the rule deciding which outcomes the client may see.
 *
 * Every string here is latin1: one char per byte.
 */
import fc from 'fast-check';

// ---- the wire form -------------------------------------------------------------------------------

export interface Chunk {
  size: string;
  ext: string;
  data: string;
  /** What follows the data: CRLF when well-formed. */
  end: string;
}

export interface Wire {
  /** Responses sent before the final one (1xx), each a whole head. */
  informational: string[];
  statusLine: string;
  /** Header lines, without their line ending. */
  headers: string[];
  /** The line ending of the head (CRLF when well-formed). */
  eol: string;
  framing: 'length' | 'chunked' | 'close';
  /** The body bytes (length and close framing). */
  body: string;
  chunks: Chunk[];
  /** The last chunk's line (`0`, maybe with extensions), its trailer lines. */
  last: string;
  trailers: string[];
  /** Bytes after the message. */
  extra: string;
}

/**
 * What the upstream does once it wrote its bytes: close the connection, keep it open (answering the
 * requests that come next on it; silent if its own response never ended), or reset it.
 */
export type After = 'end' | 'keep' | 'reset';

/** One fuzz case: the bytes the upstream answers with, and how. */
export interface ResponseCase {
  bytes: string;
  after: After;
  /** Where the bytes are split into separate writes (sorted offsets). */
  splits: number[];
  /** What was done to the well-formed response, for the reader of a failure. */
  notes: string[];
}

export function serialize(w: Wire): string {
  let s = w.informational.join('');
  s += w.statusLine + w.eol;
  for (const h of w.headers) s += h + w.eol;
  s += w.eol;
  if (w.framing === 'chunked') {
    for (const c of w.chunks) s += `${c.size}${c.ext}\r\n${c.data}${c.end}`;
    s += `${w.last}\r\n`;
    for (const t of w.trailers) s += `${t}\r\n`;
    s += '\r\n';
  } else s += w.body;
  return s + w.extra;
}

// ---- the well-formed model -----------------------------------------------------------------------

const STATUSES: [number, string][] = [
  [200, 'OK'],
  [201, 'Created'],
  [204, 'No Content'],
  [206, 'Partial Content'],
  [304, 'Not Modified'],
  [404, 'Not Found'],
  [418, "I'm a teapot"],
  [500, 'Internal Server Error'],
  [503, 'Service Unavailable'],
];

const NAMES = ['X-A', 'x-trace-id', 'Content-Type', 'ETag', 'Cache-Control', 'Set-Cookie', 'Server', 'Link'];
const printable = fc.string({
  unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
});
const fieldValue = printable.map((v) => v.trim()).filter((v) => v.length > 0);
const bytes = (max: number) =>
  fc.oneof(
    fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a).toString('latin1')),
    fc.string({ maxLength: max }),
  );

export const wellFormed: fc.Arbitrary<Wire> = fc
  .record({
    status: fc.constantFrom(...STATUSES),
    headers: fc.array(fc.tuple(fc.constantFrom(...NAMES), fieldValue), { maxLength: 4 }),
    framing: fc.constantFrom<Wire['framing']>('length', 'chunked', 'close'),
    body: bytes(300),
    cuts: fc.array(fc.nat(), { maxLength: 4 }),
    upper: fc.boolean(),
    http10: fc.boolean(),
  })
  .map(({ status, headers, framing, body, cuts, upper, http10 }): Wire => {
    const noBody = status[0] === 204 || status[0] === 304;
    const lines = headers.map(([n, v]) => `${n}: ${v}`);
    const b = noBody ? '' : body;
    const f = noBody && framing === 'close' ? 'length' : framing;
    if (f === 'length' && !noBody) lines.push(`Content-Length: ${b.length}`);
    if (f === 'chunked' && !noBody) lines.push('Transfer-Encoding: chunked');
    const chunks: Chunk[] = [];
    if (f === 'chunked' && !noBody) {
      const points = [...new Set(cuts.map((c) => c % (b.length + 1)))].sort((x, y) => x - y);
      let at = 0;
      for (const p of [...points, b.length]) {
        if (p <= at) continue;
        const size = (p - at).toString(16);
        chunks.push({ size: upper ? size.toUpperCase() : size, ext: '', data: b.slice(at, p), end: '\r\n' });
        at = p;
      }
    }
    return {
      informational: [],
      statusLine: `HTTP/1.${http10 && f !== 'chunked' ? 0 : 1} ${status[0]} ${status[1]}`,
      headers: lines,
      eol: '\r\n',
      framing: noBody ? 'length' : f,
      body: f === 'chunked' ? '' : b,
      chunks,
      last: '0',
      trailers: [],
      extra: '',
    };
  });

// ---- mutations -----------------------------------------------------------------------------------

type Mutation = (w: Wire) => string;

const pick = <T>(xs: readonly T[], i: number): T => xs[i % xs.length];

/** Where a header goes among the existing ones. */
const insertAt = (w: Wire, i: number, line: string) => w.headers.splice(i % (w.headers.length + 1), 0, line);
const isCl = (h: string) => /^content-length\s*:/i.test(h);
const isTe = (h: string) => /^transfer-encoding\s*:/i.test(h);
const bodyLength = (w: Wire) =>
  w.framing === 'chunked' ? w.chunks.reduce((n, c) => n + c.data.length, 0) : w.body.length;

const mutations: fc.Arbitrary<Mutation>[] = [
  // A broken or odd status line.
  fc
    .constantFrom(
      'HTTP/1.1 abc OK',
      'HTTP/1.1 2000 OK',
      'HTTP/1.1 20 OK',
      'HTTP/1.1 099 Low',
      'HTTP/1.1 600 High',
      'HTTP/1.1 200',
      'HTTP/1.1  200 OK',
      'HTTP/1.1 200 O\x00K',
      'HTTP/1.1 200 O\rK',
      'http/1.1 200 OK',
      'HTTP/2.0 200 OK',
      'HTTP/1.2 200 OK',
      'HTTP/1.1 -200 OK',
      'ICY 200 OK',
      ' HTTP/1.1 200 OK',
      '',
    )
    .map((line) => (w) => {
      w.statusLine = line;
      return `status line ${JSON.stringify(line)}`;
    }),
  // Content-Length: duplicated (same or other value), a list, not a number, off by one, CL + TE.
  fc
    .tuple(
      fc.constantFrom('dup-same', 'dup-other', 'list-same', 'list-other', 'bad', 'off', 'add'),
      fc.constantFrom('-1', '+5', '5x', '0x10', '1e3', '', ' ', '99999999999999999999', '٣', '5 5', '05'),
      fc.nat(),
      fc.integer({ min: -3, max: 3 }),
    )
    .map(([kind, bad, at, off]) => (w) => {
      const n = bodyLength(w);
      const i = w.headers.findIndex(isCl);
      const set = (line: string) => (i === -1 ? insertAt(w, at, line) : (w.headers[i] = line));
      switch (kind) {
        case 'dup-same':
          insertAt(w, at, `Content-Length: ${n}`);
          break;
        case 'dup-other':
          insertAt(w, at, `Content-Length: ${n + off === n ? n + 1 : Math.max(0, n + off)}`);
          break;
        case 'list-same':
          set(`Content-Length: ${n}, ${n}`);
          break;
        case 'list-other':
          set(`Content-Length: ${n}, ${n + 1}`);
          break;
        case 'bad':
          set(`Content-Length: ${bad}`);
          break;
        case 'off':
          set(`Content-Length: ${Math.max(0, n + off)}`);
          break;
        case 'add':
          insertAt(w, at, `Content-Length: ${n}`);
          break;
      }
      return `content-length ${kind} ${kind === 'bad' ? JSON.stringify(bad) : off}`;
    }),
  // Transfer-Encoding variants, replacing or added to what the framing says.
  fc
    .tuple(
      fc.constantFrom(
        'chunked',
        'Chunked',
        'CHUNKED',
        'chunked, chunked',
        'gzip, chunked',
        'chunked, gzip',
        'identity',
        'xchunked',
        'chunked;q=1',
        'chunked\t',
        '\tchunked',
        '',
      ),
      fc.boolean(),
      fc.nat(),
    )
    .map(([te, replace, at]) => (w) => {
      const i = w.headers.findIndex(isTe);
      if (replace && i !== -1) w.headers[i] = `Transfer-Encoding: ${te}`;
      else insertAt(w, at, `Transfer-Encoding: ${te}`);
      return `transfer-encoding ${JSON.stringify(te)}${replace ? ' (replaced)' : ''}`;
    }),
  // A field with CR, LF, NUL or another control character, or a bad name.
  fc
    .tuple(
      fc.constantFrom(
        'X-Bad: a\rb',
        'X-Bad: a\nb',
        'X-Bad: a\x00b',
        'X-Bad: a\x7fb',
        'X-Bad: a\x01b',
        'X-Bad: \x1b[31m',
        'X Bad: v',
        'X-Bad : v',
        ': v',
        'X-(Bad): v',
        'X-Bad',
        'X-Bad:\x80\xff obs-text',
        'X-Bad:',
        'X-Bad:\tv\t',
      ),
      fc.nat(),
    )
    .map(([line, at]) => (w) => {
      insertAt(w, at, line);
      return `field ${JSON.stringify(line)}`;
    }),
  // obs-fold: a line continuing the previous field.
  fc.tuple(fc.constantFrom(' folded', '\tfolded', ' '), fc.nat()).map(([line, at]) => (w) => {
    insertAt(w, at + 1, line);
    return `obs-fold ${JSON.stringify(line)}`;
  }),
  // Bare LF (or bare CR) ending the head's lines.
  fc.constantFrom('\n', '\r', '\n\r').map((eol) => (w) => {
    w.eol = eol;
    return `head line ending ${JSON.stringify(eol)}`;
  }),
  // Informational responses first.
  fc
    .array(
      fc.constantFrom(
        'HTTP/1.1 100 Continue\r\n\r\n',
        'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n',
        'HTTP/1.1 102 Processing\r\n\r\n',
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
        'HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\n',
      ),
      { minLength: 1, maxLength: 3 },
    )
    .map((heads) => (w) => {
      w.informational.push(...heads);
      return `informational ${heads.map((h) => h.slice(9, 12)).join(',')}`;
    }),
  // A head larger than any gateway takes (undici's limit is 16 KiB).
  fc.integer({ min: 17, max: 40 }).map((kib) => (w) => {
    w.headers.push(`X-Huge: ${'h'.repeat(kib * 1024)}`);
    return `${kib} KiB field`;
  }),
  // Chunk sizes: not hex, signed, spaced, overflowing, off by one.
  fc
    .tuple(
      fc.constantFrom(
        'zz',
        '',
        '-1',
        ' 5',
        '5 ',
        '0x5',
        '+5',
        'fffffffffffffffff',
        'FFFFFFFF',
        '1_0',
        '+1',
        '-1',
      ),
      fc.nat(),
    )
    .map(([size, at]) => (w) => {
      if (w.chunks.length === 0) {
        w.last = size;
        return `last-chunk size ${JSON.stringify(size)}`;
      }
      const c = pick(w.chunks, at);
      if (size === '+1' || size === '-1') c.size = Math.max(0, c.data.length + Number(size)).toString(16);
      else c.size = size;
      return `chunk size ${JSON.stringify(c.size)}`;
    }),
  // Chunk extensions, well-formed or not.
  fc
    .tuple(
      fc.constantFrom(';a=b', ';a="q ;x"', '; a', ' ;a', ';a=b;c', ';', ';a=\x01', ';a="', ';=b', ';a\r'),
      fc.nat(),
    )
    .map(([ext, at]) => (w) => {
      if (w.chunks.length === 0) w.last = `0${ext}`;
      else pick(w.chunks, at).ext = ext;
      return `chunk extension ${JSON.stringify(ext)}`;
    }),
  // What follows a chunk's data: missing, bare LF, extra bytes.
  fc.tuple(fc.constantFrom('', '\n', '\r', 'x\r\n', '\r\n\r\n'), fc.nat()).map(([end, at]) => (w) => {
    if (w.chunks.length === 0) return 'chunk end (no chunks)';
    pick(w.chunks, at).end = end;
    return `chunk end ${JSON.stringify(end)}`;
  }),
  // Trailers, well-formed or not.
  fc
    .array(fc.constantFrom('X-Checksum: abc', 'X-Bad: a\x00b', 'Content-Length: 9', 'folded', ' folded'), {
      minLength: 1,
      maxLength: 2,
    })
    .map((lines) => (w) => {
      w.trailers.push(...lines);
      return `trailers ${JSON.stringify(lines)}`;
    }),
  // Bytes after the message: garbage, or a whole second response (the classic desync).
  fc
    .constantFrom(
      'x',
      '\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nevil\r\n0\r\n\r\n',
      'garbage that is not http at all',
    )
    .map((extra) => (w) => {
      w.extra = extra;
      return `extra bytes ${JSON.stringify(extra.slice(0, 20))}`;
    }),
];

export const responseCase: fc.Arbitrary<ResponseCase> = fc
  .record({
    wire: wellFormed,
    mutate: fc.array(fc.oneof(...mutations), { maxLength: 3 }),
    truncate: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { freq: 3 }),
    after: fc.constantFrom<After>('end', 'end', 'keep', 'keep', 'reset'),
    splits: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 3 }),
  })
  .map(({ wire, mutate, truncate, after, splits }): ResponseCase => {
    const w = structuredClone(wire);
    const notes = mutate.map((m) => m(w));
    let bytes = serialize(w);
    if (truncate !== null) {
      const k = Math.floor(truncate * bytes.length);
      notes.push(`truncated at ${k} of ${bytes.length}`);
      bytes = bytes.slice(0, k);
    }
    // Cut anywhere, bytes after the message included: a later piece of them arrives on an idle
    // connection, which the gateway must close (docs/reliability.md, late bytes).
    const end = bytes.length;
    const at = [...new Set(splits.map((f) => Math.floor(f * end)))].filter((k) => k > 0 && k < end);
    return { bytes, after, splits: at.sort((x, y) => x - y), notes };
  });

// ---- the strict reader ---------------------------------------------------------------------------

export type Parsed =
  | { kind: 'complete'; status: number; body: string; rest: string; lenient: string[]; headDone: true }
  | { kind: 'incomplete'; status: number | undefined; body: string; headDone: boolean; lenient: string[] }
  | { kind: 'invalid'; why: string; status: number | undefined; body: string; headDone: boolean };

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it looks for
const FIELD_CTL = /[\x00-\x08\x0a-\x1f\x7f]/;
const STATUS_LINE = /^HTTP\/([0-9])\.([0-9]) ([1-9][0-9]{2})(?:( )[\t \x21-\x7e\x80-\xff]*)?$/;
const CHUNK_EXT =
  /^(?:[ \t]*;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:[ \t]*=[ \t]*(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"))?)*$/;
/** Fields that are no list (RFC 9110): the ones of the grammar that Node's HTTP/2 takes once only. */
const SINGLE = new Set(['content-type', 'etag', 'location', 'age', 'date', 'expires', 'last-modified']);
/** The largest head a gateway is expected to take (undici's default maxHeaderSize). */
export const MAX_HEAD = 16 * 1024;

/**
 * Reads one HTTP/1.1 response (after any 1xx) from `s`, strictly (RFC 9112), the way a careful
 * intermediary must: ambiguous framing, bad syntax and control characters are `invalid`; what RFC 9112
 * lets a recipient accept (a repeated identical Content-Length, a missing reason phrase, bytes after
 * the message) is accepted and listed in `lenient`. `closed`: the sender closed after these bytes.
 */
export function readResponse(s: string, closed: boolean): Parsed {
  const lenient: string[] = [];
  let pos = 0;
  let status: number | undefined;
  let headDone = false;
  const invalid = (why: string): Parsed => ({ kind: 'invalid', why, status, body: '', headDone });
  const incomplete = (body = ''): Parsed => ({ kind: 'incomplete', status, body, headDone, lenient });
  /** The next line without its CRLF; null when no whole line is there yet; an Error when malformed. */
  const line = (): string | null | Error => {
    const lf = s.indexOf('\n', pos);
    const l = lf === -1 ? s.slice(pos) : s.slice(pos, lf);
    const cr = l.indexOf('\r');
    // A CR anywhere but right before the LF (or at the end of what came so far) is a bare CR.
    if (cr !== -1 && cr < l.length - 1) return new Error('bare CR');
    if (lf === -1) return null;
    if (cr !== l.length - 1) return new Error('bare LF');
    pos = lf + 1;
    return l.slice(0, -1);
  };
  const fields = (limit: number): string[] | null | Error => {
    const out: string[] = [];
    for (;;) {
      if (pos > limit) return new Error('head too large');
      const l = line();
      if (l === null || l instanceof Error) return l;
      if (l === '') return out;
      if (l[0] === ' ' || l[0] === '\t') return new Error('obs-fold');
      const colon = l.indexOf(':');
      if (colon <= 0 || !TOKEN.test(l.slice(0, colon)))
        return new Error(`bad field name in ${JSON.stringify(l)}`);
      if (FIELD_CTL.test(l.slice(colon + 1))) return new Error('control character in a field value');
      out.push(l);
    }
  };
  let headers: string[];
  for (;;) {
    const start = pos;
    const sl = line();
    if (sl === null) return pos - start > MAX_HEAD ? invalid('head too large') : incomplete();
    if (sl instanceof Error) return invalid(sl.message);
    let m = STATUS_LINE.exec(sl);
    if (m === null) {
      // A reason phrase with control characters: HTTP/1.1 cannot pass it on (502), HTTP/2 has none.
      m = /^HTTP\/([0-9])\.([0-9]) ([1-9][0-9]{2})( )[^\r\n]*$/.exec(sl);
      if (m === null) return invalid(`bad status line ${JSON.stringify(sl)}`);
      lenient.push('control character in the reason phrase');
    }
    status = Number(m[3]);
    if (m[4] === undefined) lenient.push('no reason phrase');
    // RFC 9112 §2.3's grammar takes any digits; an HTTP/1.x reader takes HTTP/1.1 framing from them.
    if (m[1] !== '1' || Number(m[2]) > 1) lenient.push(`version ${m[1]}.${m[2]}`);
    // undici refuses a 100 Continue to a request that did not ask for one (a 502 then is tolerated).
    if (status === 100) lenient.push('unsolicited 100 Continue');
    const f = fields(start + MAX_HEAD);
    if (f === null) return s.length - start > MAX_HEAD ? invalid('head too large') : incomplete();
    if (f instanceof Error) return invalid(f.message);
    headers = f;
    // Node's HTTP/2 refuses a repeated single-value field (RFC 9110 §5.3 forbids sending one): 502 there.
    const names = f.map((h) => h.slice(0, h.indexOf(':')).toLowerCase()).filter((n) => SINGLE.has(n));
    if (new Set(names).size < names.length) lenient.push('repeated single-value field');
    if (status === 101) return invalid('101 to a request that asked for no upgrade');
    if (status >= 200) break;
  }
  headDone = true;
  const values = (name: string) =>
    headers
      .filter((h) => h.slice(0, h.indexOf(':')).toLowerCase() === name)
      .flatMap((h) => h.slice(h.indexOf(':') + 1).split(','))
      .map((v) => v.trim());
  const cl = values('content-length');
  const te = values('transfer-encoding');
  const hasTe = headers.some((h) => h.slice(0, h.indexOf(':')).toLowerCase() === 'transfer-encoding');
  const complete = (body: string): Parsed => ({
    kind: 'complete',
    status: status as number,
    body,
    rest: s.slice(pos),
    lenient,
    headDone: true,
  });
  // RFC 9112 §6.3: a 204 or 304 ends with its head, whatever its fields say.
  if (status === 204 || status === 304) {
    if (hasTe || new Set(cl).size > 1 || !cl.every((v) => /^[0-9]{1,15}$/.test(v)))
      lenient.push(`framing fields on a ${status}`);
    if (cl.length > 1) lenient.push('repeated Content-Length');
    if (pos < s.length) lenient.push('bytes after the message');
    return complete('');
  }
  if (hasTe && cl.length > 0) return invalid('Content-Length with Transfer-Encoding');
  if (hasTe) {
    // OWS around the value is allowed; a gateway may refuse it still (llhttp reads "chunked\t" as no
    // chunked at all).
    if (headers.some((h) => isTe(h) && /[ \t]$/.test(h))) lenient.push('whitespace after Transfer-Encoding');
    if (te.length !== 1 || te[0].toLowerCase() !== 'chunked')
      return invalid(`Transfer-Encoding ${JSON.stringify(te.join(','))}`);
    let body = '';
    for (;;) {
      const l = line();
      if (l === null) return incomplete(body);
      if (l instanceof Error) return { ...invalid(`chunk: ${l.message}`), body };
      const m = /^([0-9A-Fa-f]+)(.*)$/.exec(l);
      if (m === null || m[1].length > 12) return { ...invalid(`chunk size ${JSON.stringify(l)}`), body };
      if (!CHUNK_EXT.test(m[2])) {
        // Extensions are dropped unread (nginx and llhttp too), so one with bad syntax but no control
        // character leaves the framing clear: tolerated.
        // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it looks for
        if (/[\x00-\x08\x0a-\x1f\x7f]/.test(m[2]) || !m[2].trimStart().startsWith(';'))
          return { ...invalid(`chunk extension ${JSON.stringify(m[2])}`), body };
        lenient.push('malformed chunk extension');
      }
      // RFC 9112 §7.1.1 allows whitespace around ';' and '='; llhttp refuses it (a cut, then).
      if (/[ \t]/.test(m[2].replace(/"(?:[^"\\]|\\.)*"/g, '')))
        lenient.push('whitespace in a chunk extension');
      const size = Number.parseInt(m[1], 16);
      if (size === 0) break;
      const data = s.slice(pos, pos + size);
      body += data;
      if (data.length < size) return incomplete(body);
      pos += size;
      if (s.length < pos + 2)
        return s.slice(pos) === '' || s.slice(pos) === '\r'
          ? incomplete(body)
          : { ...invalid('chunk data not followed by CRLF'), body };
      if (s.slice(pos, pos + 2) !== '\r\n') return { ...invalid('chunk data not followed by CRLF'), body };
      pos += 2;
    }
    const t = fields(Number.POSITIVE_INFINITY);
    if (t === null) return incomplete(body);
    if (t instanceof Error) return { ...invalid(`trailer: ${t.message}`), body };
    // RFC 9110 §6.5.1: framing fields cannot be trailers; llhttp refuses them (a cut, then).
    if (t.some((f) => /^(content-length|transfer-encoding)\s*:/i.test(f)))
      lenient.push('framing field in trailers');
    if (pos < s.length) lenient.push('bytes after the message');
    return complete(body);
  }
  if (cl.length > 0) {
    if (!cl.every((v) => /^[0-9]{1,15}$/.test(v)))
      return invalid(`Content-Length ${JSON.stringify(cl.join(','))}`);
    if (new Set(cl.map(Number)).size > 1) return invalid(`conflicting Content-Length ${cl.join(',')}`);
    if (cl.length > 1) lenient.push('repeated Content-Length');
    const n = Number(cl[0]);
    const body = s.slice(pos, pos + n);
    if (body.length < n) return incomplete(body);
    pos += n;
    if (pos < s.length) lenient.push('bytes after the message');
    return complete(body);
  }
  // Neither: the body runs to the close of the connection.
  const body = s.slice(pos);
  pos = s.length;
  return closed ? complete(body) : incomplete(body);
}

// ---- the oracle ----------------------------------------------------------------------------------

/** What the client saw, protocol-neutral. */
export interface Observed {
  /** `problem`: a complete problem+json answer of the gateway's own; `response`: a complete response
   * passed through; `cut`: a response that began and was visibly cut; `malformed`: bytes that are no
   * well-framed HTTP (HTTP/1.1 only); `none`: nothing within the wait. */
  kind: 'problem' | 'response' | 'cut' | 'malformed' | 'none';
  status: number;
  body: string;
  why?: string;
}

/**
 * The property: a response the upstream sent whole and well-formed reaches the client exactly (status
 * and body); anything else gives a 502 problem before the headers or a visibly cut response after
 * them, and never a well-framed response with another body. Returns what was wrong, or undefined.
 */
export function judge(c: ResponseCase, seen: Observed): string | undefined {
  const ref = readResponse(c.bytes, c.after === 'end' || c.after === 'reset');
  const exact = ref.kind === 'complete' && ref.lenient.length === 0 && c.after !== 'reset';
  switch (seen.kind) {
    case 'none':
      return 'no answer from the gateway';
    case 'malformed':
      return `the gateway sent malformed HTTP: ${seen.why}`;
    case 'response':
      if (ref.kind !== 'complete')
        return `a complete ${seen.status} passed through, but the upstream's response is ${ref.kind}${ref.kind === 'invalid' ? ` (${ref.why})` : ''}`;
      if (seen.status !== ref.status) return `status ${seen.status}, upstream sent ${ref.status}`;
      if (seen.body !== ref.body)
        return `body ${JSON.stringify(seen.body.slice(0, 80))}, upstream sent ${JSON.stringify(ref.body.slice(0, 80))}`;
      return undefined;
    case 'problem':
      if (exact) return `a ${seen.status} problem for a well-formed ${ref.status} response`;
      if (seen.status === 502) return undefined;
      // The upstream keeping the connection open, silent, after half a head (or a head llhttp waits on,
      // as after a bare CR): the ttfb timeout answers.
      if (seen.status === 504 && !ref.headDone && c.after === 'keep') return undefined;
      return `a ${seen.status} problem (expected 502)`;
    case 'cut': {
      if (exact) return 'a well-formed response was cut';
      if (!ref.headDone) return 'a response was cut before the upstream sent a whole head (expected 502)';
      // Status 0: the connection closed before the head went out (a head is held until the first
      // body bytes); the client sees no response at all, never a complete one.
      if (seen.status !== 0 && seen.status !== ref.status)
        return `cut ${seen.status}, upstream sent ${ref.status}`;
      if (ref.kind !== 'invalid' && !ref.body.startsWith(seen.body))
        return `cut body ${JSON.stringify(seen.body.slice(0, 80))} is not a prefix of ${JSON.stringify(ref.body.slice(0, 80))}`;
      return undefined;
    }
  }
}
