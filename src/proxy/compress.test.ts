/**
 * Response compression: Accept-Encoding negotiation and the skip rules (pure), the header edits,
 * encoded bodies decoding byte for byte, and over real loopback HTTP: a dripping response reaching the
 * client chunk by chunk, back-pressure from a client that does not read, and teardown mid-stream.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough, type Transform, Writable } from 'node:stream';
import { describe, test } from 'node:test';
import zlib from 'node:zlib';
import { htmlBody, jsonBody } from '../../bench/micro/compress-corpus.ts';
import { type CompressConfig, DEFAULT_COMPRESS_TYPES } from '../config/resolve.ts';
import {
  addVary,
  compressible,
  compressingWriter,
  createEncoder,
  type Encoding,
  encodeHeaders,
  negotiate,
} from './compress.ts';

const CFG: CompressConfig = {
  types: DEFAULT_COMPRESS_TYPES,
  minSize: 1024,
  algorithms: ['br', 'zstd', 'gzip'],
};
const ALL: Encoding[] = ['br', 'zstd', 'gzip'];
const JSON_2K = ['content-type', 'application/json', 'content-length', '2048'];

const pick = (ae: string | undefined, cfg: CompressConfig = CFG) => negotiate(cfg, ae, 'GET', 200, JSON_2K);

function decompressor(e: Encoding): Transform {
  return e === 'br'
    ? zlib.createBrotliDecompress()
    : e === 'zstd'
      ? zlib.createZstdDecompress()
      : zlib.createGunzip();
}

function decodeSync(e: Encoding, buf: Buffer): Buffer {
  return e === 'br'
    ? zlib.brotliDecompressSync(buf)
    : e === 'zstd'
      ? zlib.zstdDecompressSync(buf)
      : zlib.gunzipSync(buf);
}

describe('Accept-Encoding negotiation (RFC 9110 §12.5.3)', () => {
  test('what browsers and clients send', () => {
    assert.equal(pick('gzip, deflate, br'), 'br');
    assert.equal(pick('gzip, deflate, br, zstd'), 'br');
    assert.equal(pick('gzip, deflate'), 'gzip');
    assert.equal(pick('zstd'), 'zstd');
    assert.equal(pick('deflate'), undefined);
    assert.equal(pick('compress, x-unknown, deflate'), undefined);
  });

  test('no header or an empty one: identity', () => {
    assert.equal(pick(undefined), undefined);
    assert.equal(pick(''), undefined);
    assert.equal(pick('  \t '), undefined);
  });

  test('highest q wins; ties go to the order of cfg.algorithms', () => {
    assert.equal(pick('br;q=0.5, gzip;q=0.8'), 'gzip');
    assert.equal(pick('br;q=0.8, zstd;q=0.9, gzip;q=0.7'), 'zstd');
    assert.equal(pick('gzip;q=0.8, zstd;q=0.8, br;q=0.8'), 'br');
    assert.equal(pick('gzip, zstd;q=1.0'), 'zstd');
    assert.equal(pick('br;q=0.8, zstd;q=0.8'), 'br');
    const gzipFirst: CompressConfig = { ...CFG, algorithms: ['gzip', 'zstd', 'br'] };
    assert.equal(pick('br, zstd, gzip', gzipFirst), 'gzip');
    assert.equal(pick('br, zstd', gzipFirst), 'zstd');
    assert.equal(pick('br;q=1, gzip;q=0.9', gzipFirst), 'br');
  });

  test('only the configured algorithms', () => {
    const gzipOnly: CompressConfig = { ...CFG, algorithms: ['gzip'] };
    assert.equal(pick('br, zstd', gzipOnly), undefined);
    assert.equal(pick('br, gzip;q=0.1', gzipOnly), 'gzip');
    assert.equal(pick('*', gzipOnly), 'gzip');
  });

  test('* matches every algorithm not listed', () => {
    assert.equal(pick('*'), 'br');
    assert.equal(pick('*;q=0.5, gzip'), 'gzip');
    assert.equal(pick('gzip;q=0.5, *'), 'br');
    assert.equal(pick('br;q=0, *'), 'zstd');
    assert.equal(pick('br;q=0, zstd;q=0, *;q=0.1'), 'gzip');
    assert.equal(pick('*;q=0'), undefined);
    assert.equal(pick('gzip, *;q=0'), 'gzip');
  });

  test('q=0 refuses', () => {
    assert.equal(pick('br;q=0, gzip;q=0'), undefined);
    assert.equal(pick('br;q=0.000, zstd;q=0.0, gzip;q=0.'), undefined);
    assert.equal(pick('br;q=0, gzip;q=0.001'), 'gzip');
    assert.equal(pick('gzip;q=0, gzip'), undefined, 'the first entry of a coding counts');
  });

  test('identity', () => {
    assert.equal(pick('identity;q=0'), undefined, 'nothing acceptable: identity is sent anyway');
    assert.equal(pick('identity;q=0, gzip;q=0.5'), 'gzip');
    assert.equal(pick('identity;q=0, *'), 'br');
    assert.equal(pick('identity, gzip;q=0.5'), undefined, 'identity preferred explicitly');
    assert.equal(pick('identity;q=0.5, gzip;q=0.5'), 'gzip', 'a tie goes to the encoding');
    assert.equal(pick('identity'), undefined);
  });

  test('case-insensitive tokens, whitespace, x-gzip', () => {
    assert.equal(pick(' GZip ;  Q=0.7 ,BR ; q=0.6'), 'gzip');
    assert.equal(pick('\tzStd\t;\tq=1'), 'zstd');
    assert.equal(pick('x-gzip'), 'gzip');
    assert.equal(pick('x-gzip, gzip;q=0'), undefined, 'gzip listed itself: x-gzip does not override it');
  });

  test('malformed parts are ignored, the rest counts', () => {
    assert.equal(pick('br;q=2, gzip'), 'gzip');
    assert.equal(pick('br;q=1.5, gzip;q=0.1'), 'gzip');
    assert.equal(pick('br;q=abc, gzip;q=0.1'), 'gzip');
    assert.equal(pick('br;q=0.5000, gzip;q=0.1'), 'gzip', 'more than 3 decimals');
    assert.equal(pick('br;q=-1, gzip;q=0.1'), 'gzip');
    assert.equal(pick('br;q, gzip;q=0.1'), 'gzip');
    assert.equal(pick('b r, gzip;q=0.1'), 'gzip', 'not a token');
    assert.equal(pick('"br", gzip;q=0.1'), 'gzip');
    assert.equal(pick(',, ,gzip,,'), 'gzip');
    assert.equal(pick(';q=1'), undefined);
    assert.equal(pick('br;level=5'), 'br', 'other parameters are ignored');
    assert.equal(pick('br;q=0.5;level=5, gzip;q=0.4'), 'br');
  });
});

describe('compressible: the skip rules', () => {
  const ok = (headers: string[], method = 'GET', status = 200, cfg = CFG) =>
    compressible(cfg, method, status, headers);

  test('the usual case, whatever the status with content', () => {
    assert.equal(ok(JSON_2K), true);
    for (const s of [200, 201, 203, 301, 404, 410, 500, 503]) assert.equal(ok(JSON_2K, 'GET', s), true);
    assert.equal(ok(JSON_2K, 'POST'), true);
  });

  test('HEAD, bodiless statuses and ranges', () => {
    assert.equal(ok(JSON_2K, 'HEAD'), false);
    for (const s of [100, 101, 103, 204, 205, 304, 206])
      assert.equal(ok(JSON_2K, 'GET', s), false, String(s));
    assert.equal(ok([...JSON_2K, 'content-range', 'bytes 0-2047/4096']), false);
  });

  test('already encoded upstream (identity is no encoding)', () => {
    assert.equal(ok([...JSON_2K, 'content-encoding', 'gzip']), false);
    assert.equal(ok([...JSON_2K, 'content-encoding', 'br']), false);
    assert.equal(ok([...JSON_2K, 'content-encoding', 'identity, gzip']), false);
    assert.equal(ok([...JSON_2K, 'content-encoding', 'identity']), true);
    assert.equal(ok([...JSON_2K, 'content-encoding', 'Identity']), true);
    assert.equal(ok([...JSON_2K, 'content-encoding', '']), true);
  });

  test('Cache-Control: no-transform', () => {
    assert.equal(ok([...JSON_2K, 'cache-control', 'public, no-transform, max-age=60']), false);
    assert.equal(ok([...JSON_2K, 'cache-control', 'No-Transform']), false);
    assert.equal(ok([...JSON_2K, 'cache-control', 'max-age=60', 'cache-control', 'no-transform']), false);
    assert.equal(ok([...JSON_2K, 'cache-control', 'public, max-age=60']), true);
    assert.equal(ok([...JSON_2K, 'cache-control', 'no-transformed']), true, 'another directive');
  });

  test('a known Content-Length below min_size', () => {
    const json = (len: string) => ['content-type', 'application/json', 'content-length', len];
    assert.equal(ok(json('1023')), false);
    assert.equal(ok(json('1024')), true);
    assert.equal(ok(['content-type', 'application/json']), true, 'unknown length (chunked)');
    assert.equal(ok(json('0'), 'GET', 200, { ...CFG, minSize: 0 }), false, 'empty body');
    assert.equal(ok(json('10'), 'GET', 200, { ...CFG, minSize: 0 }), true);
    assert.equal(ok(json('12, 12')), true, 'not a known length');
  });

  test('media types: default list, parameters, case, wildcards', () => {
    const typed = (t: string, cfg = CFG) => ok(['content-type', t], 'GET', 200, cfg);
    for (const t of [
      'text/html; charset=utf-8',
      'TEXT/HTML',
      'text/css',
      'text/plain;charset=utf-8',
      'application/json',
      'application/problem+json',
      'application/ld+json; profile="x"',
      'application/javascript',
      'application/xml',
      'application/atom+xml',
      'image/svg+xml',
    ]) {
      assert.equal(typed(t), true, t);
    }
    for (const t of [
      'application/octet-stream',
      'image/png',
      'application/jsonx',
      'video/mp4',
      'application/zip',
    ])
      assert.equal(typed(t), false, t);
    assert.equal(ok(['content-length', '5000']), false, 'no Content-Type');
    const custom: CompressConfig = { ...CFG, types: ['application/x-ndjson', 'application/vnd.*'] };
    assert.equal(typed('application/x-ndjson', custom), true);
    assert.equal(typed('application/vnd.api+json', custom), true);
    assert.equal(typed('application/json', custom), false);
  });

  test('never text/event-stream', () => {
    assert.equal(ok(['content-type', 'text/event-stream']), false);
    assert.equal(ok(['content-type', 'text/event-stream; charset=utf-8']), false);
    const listed: CompressConfig = { ...CFG, types: ['text/event-stream', '*/*'] };
    assert.equal(ok(['content-type', 'text/event-stream'], 'GET', 200, listed), false);
  });

  test('header names in any case', () => {
    assert.equal(ok(['Content-Type', 'text/html', 'Content-Length', '100']), false);
    assert.equal(ok(['Content-Type', 'text/html', 'Cache-Control', 'no-transform']), false);
    assert.equal(ok(['Content-Type', 'text/html', 'Content-Encoding', 'gzip']), false);
  });

  test('negotiate applies the rules before Accept-Encoding', () => {
    assert.equal(negotiate(CFG, 'gzip', 'HEAD', 200, JSON_2K), undefined);
    assert.equal(negotiate(CFG, 'gzip', 'GET', 206, JSON_2K), undefined);
    assert.equal(negotiate(CFG, 'gzip', 'GET', 304, JSON_2K), undefined);
    assert.equal(negotiate(CFG, 'gzip', 'GET', 200, ['content-type', 'image/png']), undefined);
    assert.equal(negotiate(CFG, 'gzip', 'GET', 200, ['content-type', 'text/event-stream']), undefined);
    assert.equal(negotiate(CFG, 'gzip', 'GET', 200, [...JSON_2K, 'content-encoding', 'br']), undefined);
    assert.equal(
      negotiate(CFG, 'gzip', 'GET', 200, [...JSON_2K, 'cache-control', 'no-transform']),
      undefined,
    );
    assert.equal(negotiate(CFG, 'gzip', 'GET', 200, [...JSON_2K, 'content-range', 'bytes 0-1/2']), undefined);
    assert.equal(
      negotiate(CFG, 'gzip', 'GET', 200, ['content-type', 'text/html', 'content-length', '99']),
      undefined,
    );
    assert.equal(negotiate(CFG, 'gzip', 'GET', 200, JSON_2K), 'gzip');
  });
});

describe('header edits', () => {
  test('encodeHeaders: encoding set, length, ranges and digests gone, ETag weakened, Vary added', () => {
    const h = [
      'Content-Type',
      'application/json',
      'Content-Length',
      '2048',
      'ETag',
      '"abc123"',
      'Accept-Ranges',
      'bytes',
      'content-md5',
      'Q2hlY2sgSW50ZWdyaXR5IQ==',
      'Digest',
      'sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=',
      'Repr-Digest',
      'sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:',
      'Content-Digest',
      'sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:',
      'Content-Encoding',
      'identity',
      'Last-Modified',
      'Tue, 01 Dec 2026 10:00:00 GMT',
      'x-request-id',
      'r1',
    ];
    encodeHeaders(h, 'br');
    assert.deepEqual(h, [
      'Content-Type',
      'application/json',
      'ETag',
      'W/"abc123"',
      'Last-Modified',
      'Tue, 01 Dec 2026 10:00:00 GMT',
      'x-request-id',
      'r1',
      'content-encoding',
      'br',
      'vary',
      'Accept-Encoding',
    ]);
  });

  test('a weak ETag stays as it is', () => {
    const h = ['etag', 'W/"v1"', 'content-type', 'text/html'];
    encodeHeaders(h, 'gzip');
    assert.deepEqual(h, [
      'etag',
      'W/"v1"',
      'content-type',
      'text/html',
      'content-encoding',
      'gzip',
      'vary',
      'Accept-Encoding',
    ]);
  });

  test('Vary merged into the first field, never repeated, * left alone', () => {
    const vary = (...values: string[]) => {
      const h: string[] = ['content-type', 'text/html'];
      for (const v of values) h.push('Vary', v);
      addVary(h);
      return h.slice(2);
    };
    assert.deepEqual(vary(), ['vary', 'Accept-Encoding']);
    assert.deepEqual(vary('Origin'), ['Vary', 'Origin, Accept-Encoding']);
    assert.deepEqual(vary('Origin, Cookie', 'Accept-Language'), [
      'Vary',
      'Origin, Cookie, Accept-Encoding',
      'Vary',
      'Accept-Language',
    ]);
    assert.deepEqual(vary('accept-encoding'), ['Vary', 'accept-encoding']);
    assert.deepEqual(vary('Origin', 'Accept-Encoding'), ['Vary', 'Origin', 'Vary', 'Accept-Encoding']);
    assert.deepEqual(vary('Origin,Accept-Encoding '), ['Vary', 'Origin,Accept-Encoding ']);
    assert.deepEqual(vary('*'), ['Vary', '*']);
    assert.deepEqual(vary('Origin', '*'), ['Vary', 'Origin', 'Vary', '*']);
    assert.deepEqual(vary(''), ['Vary', 'Accept-Encoding']);
  });

  test('encodeHeaders twice adds nothing twice', () => {
    const h = ['content-type', 'text/html', 'etag', '"x"'];
    encodeHeaders(h, 'zstd');
    encodeHeaders(h, 'zstd');
    assert.deepEqual(h, [
      'content-type',
      'text/html',
      'etag',
      'W/"x"',
      'vary',
      'Accept-Encoding',
      'content-encoding',
      'zstd',
    ]);
  });
});

/** A few MB of varied text: an HTML page and a JSON page, with some random base64 between. */
const BODY = Buffer.concat([
  htmlBody(2 * 1024 * 1024, 7),
  Buffer.from(randomBytes(64 * 1024).toString('base64')),
  jsonBody(1024 * 1024, 9),
]);

/** Writes `body` in `size`-byte chunks honouring back-pressure, then ends. */
function pump(
  w: { write(c: Buffer): boolean; once(e: 'drain', f: () => void): unknown; end(): void },
  body: Buffer,
  size = 64 * 1024,
): Promise<void> {
  return new Promise((resolve) => {
    let at = 0;
    const go = () => {
      while (at < body.length) {
        const c = body.subarray(at, at + size);
        at += c.length;
        if (!w.write(c)) return void w.once('drain', go);
      }
      w.end();
      resolve();
    };
    go();
  });
}

describe('encoded bodies decode byte for byte', () => {
  for (const e of ALL) {
    test(`${e}: ${(BODY.length / 1024 / 1024).toFixed(1)} MB through createEncoder`, async () => {
      const enc = createEncoder(e, { sizeHint: BODY.length });
      const out: Buffer[] = [];
      enc.on('data', (c: Buffer) => out.push(c));
      const ended = once(enc, 'end');
      await pump(enc, BODY, 16 * 1024 + 7);
      await ended;
      const encoded = Buffer.concat(out);
      assert.ok(encoded.length < BODY.length / 3, `ratio ${(BODY.length / encoded.length).toFixed(2)}`);
      assert.ok(decodeSync(e, encoded).equals(BODY));
    });

    test(`${e}: compressingWriter into a Writable, a wrong size hint, and an empty body`, async () => {
      for (const [body, sizeHint] of [
        [BODY.subarray(0, 300_000), 2000],
        [BODY.subarray(0, 100_000), 10],
        [BODY.subarray(0, 5000), 1 << 30],
        [Buffer.alloc(0), undefined],
      ] as const) {
        const out: Buffer[] = [];
        const sink = new Writable({
          write(c: Buffer, _e, cb) {
            out.push(c);
            cb();
          },
        });
        const w = compressingWriter(sink, e, { sizeHint });
        await pump(w, body);
        await once(sink, 'finish');
        const encoded = Buffer.concat(out);
        assert.equal(w.bytesIn, body.length);
        assert.equal(w.bytesOut, encoded.length);
        assert.ok(decodeSync(e, encoded).equals(body));
      }
    });
  }

  test('gzip output is gzip (not raw deflate or zlib)', () => {
    const enc = createEncoder('gzip');
    const out: Buffer[] = [];
    enc.on('data', (c: Buffer) => out.push(c));
    enc.end(BODY.subarray(0, 10_000));
    return once(enc, 'end').then(() =>
      assert.deepEqual([...Buffer.concat(out).subarray(0, 2)], [0x1f, 0x8b]),
    );
  });
});

describe('flush policy', () => {
  type Flushable = Transform & { flush(kind?: number, cb?: () => void): void };
  /** Counts the encoder's flushes, and those whose output is out. */
  function countFlushes(enc: Flushable): { started: () => number; done: () => number } {
    let started = 0;
    let done = 0;
    const flush = enc.flush.bind(enc);
    enc.flush = (kind?: number) => {
      started++;
      flush(kind, () => done++);
    };
    return { started: () => started, done: () => done };
  }
  const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));
  async function waitFor(what: string, cond: () => boolean): Promise<void> {
    for (const deadline = Date.now() + 5000; !cond(); await tick(5))
      if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
  }

  for (const e of ALL) {
    test(`${e}: one flush per burst, none for the chunks of a fast body, decodable after each pause`, async () => {
      const enc = createEncoder(e) as Flushable;
      const flushes = countFlushes(enc);
      const dec = decompressor(e);
      enc.pipe(dec);
      let decoded = '';
      dec.on('data', (c: Buffer) => (decoded += c.toString('latin1')));
      const text = BODY.subarray(0, 400 * 1024);
      // A fast body: 100 chunks written in one turn.
      for (let i = 0; i < 100; i++) enc.write(text.subarray(i * 4096, (i + 1) * 4096));
      await waitFor('the flush after the burst', () => flushes.done() === 1);
      await waitFor('everything written so far decoded', () => decoded.length === text.length);
      assert.equal(flushes.started(), 1);
      // Drips: each one flushed on its own.
      for (let i = 0; i < 3; i++) {
        enc.write(Buffer.from(`drip ${i}\n`));
        await waitFor(`drip ${i} decoded`, () => decoded.endsWith(`drip ${i}\n`));
        await tick(10);
        assert.equal(flushes.started(), 2 + i);
      }
      enc.end();
      await once(dec, 'end');
      assert.equal(flushes.started(), 4, 'no flush at the end');
      assert.equal(decoded, `${text.toString('latin1')}drip 0\ndrip 1\ndrip 2\n`);
    });
  }
});

// ---- real loopback HTTP -------------------------------------------------------------------------------

interface Served {
  url: string;
  close(): Promise<void>;
}

async function serve(handler: http.RequestListener): Promise<Served> {
  const server = http.createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

/** What a proxy does with a response: negotiate, rewrite the headers, write the body into the writer. */
function start(req: http.IncomingMessage, res: http.ServerResponse, headers: string[]) {
  const encoding = negotiate(CFG, req.headers['accept-encoding'], req.method ?? 'GET', 200, headers);
  assert.ok(encoding);
  encodeHeaders(headers, encoding);
  res.writeHead(200, headers);
  return compressingWriter(res, encoding);
}

describe('over loopback HTTP', () => {
  for (const e of ALL) {
    test(`${e}: a dripping response reaches the client chunk by chunk`, async () => {
      const chunks = [
        Buffer.from(`{"events":[${'{"n":1,"msg":"first part of a slow response"},'.repeat(30)}`),
        Buffer.from(`${'{"n":2,"msg":"second part"},'.repeat(30)}`),
        Buffer.from('{"n":3}]}'),
      ];
      const received: ((n: number) => void)[] = [];
      const decodedUpTo = () => new Promise<number>((r) => received.push(r));
      let firstSeen: Promise<number> | undefined;
      let secondSeen: Promise<number> | undefined;
      const order: string[] = [];
      const s = await serve(async (req, res) => {
        const w = start(req, res, ['content-type', 'application/json', 'etag', '"v7"']);
        firstSeen = decodedUpTo();
        secondSeen = decodedUpTo();
        order.push('server wrote 1');
        w.write(chunks[0]);
        await firstSeen;
        order.push('server wrote 2');
        w.write(chunks[1]);
        await secondSeen;
        order.push('server wrote 3');
        w.write(chunks[2]);
        w.end();
      });
      try {
        const res = await withTimeout(
          new Promise<http.IncomingMessage>((r) => http.get(s.url, { headers: { 'accept-encoding': e } }, r)),
          5000,
          'response head',
        );
        assert.equal(res.headers['content-encoding'], e);
        assert.equal(res.headers.vary, 'Accept-Encoding');
        assert.equal(res.headers.etag, 'W/"v7"');
        assert.equal(res.headers['content-length'], undefined);
        assert.equal(res.headers['transfer-encoding'], 'chunked');
        const dec = decompressor(e);
        res.pipe(dec);
        let got = Buffer.alloc(0);
        let seen = 0;
        dec.on('data', (c: Buffer) => {
          got = Buffer.concat([got, c]);
          const want = [chunks[0].length, chunks[0].length + chunks[1].length];
          while (seen < 2 && got.length >= want[seen]) {
            order.push(`client decoded ${seen + 1}`);
            received[seen](seen + 1);
            seen++;
          }
        });
        await withTimeout(once(dec, 'end'), 5000, 'each chunk decoded before the next one is written');
        assert.ok(got.equals(Buffer.concat(chunks)));
        assert.deepEqual(order, [
          'server wrote 1',
          'client decoded 1',
          'server wrote 2',
          'client decoded 2',
          'server wrote 3',
        ]);
      } finally {
        await s.close();
      }
    });
  }

  test('a client that does not read: write returns false, drain follows, memory stays bounded', async () => {
    // Random base64: it hardly compresses, so the socket's buffers fill after a few MB.
    const data = Buffer.from(randomBytes(24 * 1024 * 1024).toString('base64')).subarray(0, 32 * 1024 * 1024);
    let falses = 0;
    let drains = 0;
    let writer: ReturnType<typeof compressingWriter> | undefined;
    const serverDone = Promise.withResolvers<void>();
    const firstFalse = Promise.withResolvers<void>();
    const s = await serve((req, res) => {
      const w = start(req, res, ['content-type', 'text/plain']);
      writer = w;
      let at = 0;
      const go = () => {
        while (at < data.length) {
          const c = data.subarray(at, at + 64 * 1024);
          at += c.length;
          if (!w.write(c)) {
            if (falses++ === 0) firstFalse.resolve();
            return void w.once('drain', () => {
              drains++;
              go();
            });
          }
        }
        w.end();
        serverDone.resolve();
      };
      go();
    });
    try {
      const res = await new Promise<http.IncomingMessage>((r) =>
        http.get(s.url, { headers: { 'accept-encoding': 'gzip' } }, r),
      );
      res.pause();
      await withTimeout(firstFalse.promise, 10_000, 'write returning false');
      // While the client reads nothing, the writer soon takes nothing more: it waits for a drain.
      const w = writer as ReturnType<typeof compressingWriter>;
      let held = -1;
      for (let i = 0; i < 50 && held !== w.bytesIn; i++) {
        held = w.bytesIn;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(w.bytesIn, held, 'stuck');
      assert.equal(falses, drains + 1, 'waiting for a drain');
      assert.ok(held < 16 * 1024 * 1024, `${held} bytes accepted while the client reads nothing`);
      assert.ok(held < data.length);
      // Now read (slowly at first) and decode everything.
      const dec = zlib.createGunzip();
      res.pipe(dec);
      let got = 0;
      let mismatch = false;
      dec.on('data', (c: Buffer) => {
        if (!data.subarray(got, got + c.length).equals(c)) mismatch = true;
        got += c.length;
      });
      await withTimeout(once(dec, 'end'), 20_000, 'the whole body');
      await serverDone.promise;
      assert.equal(got, data.length);
      assert.equal(mismatch, false);
      assert.ok(falses >= 1 && drains === falses, `${falses} false, ${drains} drain`);
    } finally {
      await s.close();
    }
  });

  test('client gone mid-stream: encoder and response torn down, later calls harmless', async () => {
    const closed = Promise.withResolvers<ReturnType<typeof compressingWriter>>();
    const s = await serve((req, res) => {
      const w = start(req, res, ['content-type', 'text/html']);
      w.write(BODY.subarray(0, 100_000));
      res.on('close', () => setImmediate(() => closed.resolve(w)));
    });
    try {
      const req = http.get(s.url, { headers: { 'accept-encoding': 'br' } });
      const res = await once(req, 'response').then(([r]) => r as http.IncomingMessage);
      res.once('data', () => req.destroy());
      req.on('error', () => {});
      const w = await withTimeout(closed.promise, 5000, 'server side close');
      assert.equal(w.destroyed, true);
      assert.equal(w.write(Buffer.from('more')), false);
      w.end();
      w.destroy();
    } finally {
      await s.close();
    }
  });

  test('cut by the server (a timeout): destroy() ends both, the client sees an aborted body', async () => {
    const s = await serve((req, res) => {
      const w = start(req, res, ['content-type', 'text/html']);
      w.write(BODY.subarray(0, 50_000));
      setTimeout(() => {
        w.destroy(new Error('read timeout'));
        assert.equal(w.destroyed, true);
        assert.equal(res.destroyed, true);
        w.destroy();
        w.end();
      }, 50);
    });
    try {
      const res = await new Promise<http.IncomingMessage>((r) =>
        http.get(s.url, { headers: { 'accept-encoding': 'zstd' } }, r),
      );
      let bytes = 0;
      res.on('data', (c: Buffer) => (bytes += c.length));
      const [err] = await withTimeout(
        once(res, 'error').catch((e) => [e]),
        5000,
        'aborted',
      );
      assert.match(String((err as Error).message ?? err), /aborted/);
      assert.ok(bytes > 0, 'the first flushed bytes arrived');
      assert.equal(res.complete, false);
    } finally {
      await s.close();
    }
  });

  test('destroy on a plain Writable emits no error', async () => {
    const sink = new PassThrough();
    const errors: unknown[] = [];
    sink.on('error', (e) => errors.push(e));
    sink.resume();
    const w = compressingWriter(sink, 'gzip');
    w.write(BODY.subarray(0, 10_000));
    w.destroy(new Error('cut'));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(sink.destroyed, true);
    assert.deepEqual(errors, []);
  });
});
