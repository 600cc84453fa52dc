/**
 * The request regression corpus (issue 14): every case in test/corpus/requests/ (counterexamples of
 * the fuzz that found a bug, and cases that pin a decision) replayed through a real gateway in front
 * of the strict recording upstream, whole and cut one byte per write, and judged like the fuzz
 * (framing.ts): refused with nothing complete upstream, or forwarded exactly as meant.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { H1_ONLY, startTestGateway, type TestGateway } from '../helpers.ts';
import { loadCorpus, toRequests } from './corpus.ts';
import { exchange, GATEWAY_YAML, judge } from './framing.ts';
import { type RecordingUpstream, startRecordingUpstream } from './recording-upstream.ts';

let up: RecordingUpstream;
let gw: TestGateway;

before(async () => {
  up = await startRecordingUpstream();
  gw = await startTestGateway(GATEWAY_YAML(up.url));
});
after(async () => {
  await gw?.close();
  await up?.close();
});

describe('request regression corpus', H1_ONLY, () => {
  for (const c of loadCorpus()) {
    test(`${c.name}: ${c.note.split('. ')[0]}`, async () => {
      const requests = toRequests(c);
      const bytes = Buffer.concat(requests.map((r) => r.bytes));
      const methods = requests.map((r) => r.meant.method);
      for (const splits of [c.splits ?? [], Array.from({ length: bytes.length }, (_, i) => i)]) {
        up.reset();
        const got = await exchange(gw.port, bytes, methods, { splits });
        // Late upstream records of the previous replay (aborted bodies) close before the next one.
        await new Promise((r) => setTimeout(r, 20));
        const problems = judge(requests, got, up);
        assert.deepEqual(problems, [], `${c.name} (${splits.length} cuts): ${problems.join('; ')}`);
      }
    });
  }
});

describe('what the recording upstream shows beyond the corpus judge', H1_ONLY, () => {
  test('an HTTP/1.0 request without Host gets no empty X-Forwarded-Host (found by the request battery)', async () => {
    up.reset();
    const bytes = Buffer.from('GET /old HTTP/1.0\r\nX-Fuzz-Id: h10-0\r\n\r\n', 'latin1');
    const got = await exchange(gw.port, bytes, ['GET']);
    assert.equal(got.responses[0]?.status, 200);
    const [r] = up.requests;
    const xfh = r.headers.filter(([n]) => n.toLowerCase() === 'x-forwarded-host');
    assert.deepEqual(xfh, []);
  });
});
