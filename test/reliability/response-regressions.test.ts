/**
 * Regressions found by the fuzzed upstream responses (issue 14), one test per bug, each on a raw
 * upstream that sends the exact bytes that broke the gateway. The same bytes are kept in
 * test/corpus/responses/ and replayed by response-fuzz.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  getBody,
  H1_ONLY,
  send,
  startRawServer,
  startTestGateway,
  type TestGateway,
  type TestServer,
} from '../helpers.ts';

/** `p`, or a failure after `ms`: a gateway that never answers fails the test at once, not at the suite timeout. */
const within = <T>(ms: number, p: Promise<T>): Promise<T> =>
  Promise.race([
    p,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`no answer in ${ms}ms`)), ms)),
  ]);

/** A raw upstream that answers every request on a connection with `bytes`, then closes it. */
const answering = (bytes: string) =>
  startRawServer((s) => {
    s.once('data', () => s.end(Buffer.from(bytes, 'latin1')));
  });

describe('fuzzed upstream responses: regressions', () => {
  const upstreams: Record<string, TestServer<import('node:net').Server>> = {};
  let gw: TestGateway;
  const BYTES: Record<string, string> = {
    // (resetToClose is served by its own upstream, below.)
    nulReason: 'HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nok',
    gzipChunked:
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\n\x1f\x8b\x08\x00\r\n0\r\n\r\n',
    chunkedTwice:
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n',
    chunkedParam: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;q=1\r\n\r\nok',
    emptyCoding: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\nok',
    notModifiedLength: 'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 1234\r\n\r\n',
    twoEtags: 'HTTP/1.1 200 OK\r\nETag: "a"\r\nETag: "b"\r\nContent-Length: 2\r\n\r\nok',
    noContentLength: 'HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n',
    chunkedTab: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
  };
  before(async () => {
    for (const [name, bytes] of Object.entries(BYTES)) upstreams[name] = await answering(bytes);
    // A body that runs to the close, ended by a reset instead of a close.
    upstreams.resetToClose = await startRawServer((s) => {
      s.once('data', () => {
        s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart of a body');
        setTimeout(() => s.resetAndDestroy(), 20);
      });
    });
    BYTES.resetToClose = '';
    gw = await startTestGateway(`
upstreams:
${Object.keys(BYTES)
  .map((n) => `  ${n}: { targets: ["${upstreams[n].url}"] }`)
  .join('\n')}
routes:
${Object.keys(BYTES)
  .map((n) => `  - { name: ${n}, match: { path: /${n} }, upstream: ${n}, timeouts: { total: 3s } }`)
  .join('\n')}
`);
  });
  after(async () => {
    await gw.close();
    await Promise.all(Object.values(upstreams).map((u) => u.close()));
  });

  test('a NUL in the reason phrase gets a 502 problem, not a hang', H1_ONLY, async () => {
    // Node refused the reason when the response head was written, and kept it: the 502's own head
    // was refused again and the client never got an answer.
    const r = await within(3_000, send(gw.port, '/nulReason'));
    assert.equal(r.status, 502);
    assert.equal(r.headers['content-type'], 'application/problem+json');
    assert.equal(r.headers['proxy-status'], 'sluice; error=http_protocol_error');
    assert.match(JSON.parse(r.body).type, /upstream-unreachable$/);
  });

  for (const [path, what] of [
    ['gzipChunked', 'a coding besides chunked (its bytes went on undecoded, labelled as nothing)'],
    ['chunkedTwice', 'chunked applied twice (two Transfer-Encoding fields)'],
    ['chunkedParam', 'chunked with a parameter'],
    ['emptyCoding', 'an empty Transfer-Encoding'],
    [
      'chunkedTab',
      'a tab after chunked (llhttp then reads the body to the close: the chunk framing as body)',
    ],
  ]) {
    test(`a response with ${what} gets a 502 problem`, H1_ONLY, async () => {
      // undici read each as some framing and the gateway passed on a well-framed 200 with a body the
      // upstream never meant; Transfer-Encoding other than one chunked coding is refused, as nginx does.
      const r = await within(3_000, send(gw.port, `/${path}`));
      assert.equal(r.status, 502, r.body);
      assert.equal(r.headers['proxy-status'], 'sluice; error=http_protocol_error');
    });
  }

  test('a body that runs to the close, ended by a reset, is cut, never completed', async () => {
    // undici takes an ECONNRESET as the end of a response that is not kept alive, so the gateway ended
    // the client's response as complete with whatever the reset had not lost.
    const r = await within(3_000, getBody(gw.url('/resetToClose')));
    assert.equal(r.status, 200);
    assert.equal(r.complete, false);
    assert.ok('part of a body'.startsWith(r.body), r.body);
  });

  test("a 304 with its representation's Content-Length is passed whole, not cut", async () => {
    // undici checked the length against the (absent) body and failed the response: the gateway cut a
    // valid 304 (RFC 9110 §8.6), so a client revalidating through it saw a broken response.
    const r = await within(3_000, getBody(gw.url('/notModifiedLength')));
    assert.equal(r.status, 304);
    assert.equal(r.complete, true);
    assert.equal(r.headers['etag'], '"v1"');
  });

  test('a repeated single-value header (two ETags) never leaves the client without an answer', async () => {
    // HTTP/1.1 passes both lines on. HTTP/2 refuses a second ETag when the head is written, and the
    // refused headers stayed on the response: the 502's own head was refused again, and no answer came.
    const r = await within(3_000, send(gw.port, '/twoEtags'));
    if (r.status === 200) assert.equal(r.body, 'ok');
    else {
      assert.equal(r.status, 502);
      assert.equal(r.headers['content-type'], 'application/problem+json');
      assert.equal(r.headers.etag, undefined);
    }
  });

  test('a 204 that carries a Content-Length reaches the client without it', async () => {
    // It was passed on, and HTTP/2 clients reset a stream whose 204 has a Content-Length: no answer.
    const r = await within(3_000, send(gw.port, '/noContentLength'));
    assert.equal(r.status, 204);
    assert.equal(r.headers['content-length'], undefined);
  });
});
