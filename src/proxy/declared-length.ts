/**
 * An HTTP/2 request body checked against its `content-length` on the way to the upstream (RFC 9113
 * §8.1.1: a request whose DATA frames do not add up to its content-length is malformed, and an
 * intermediary must not forward it). The upstream request is framed by that content-length, so the
 * upstream would take the request as complete the moment the declared count of bytes arrived, even
 * when the client's stream then turns out longer (nghttp2 notices only after handing the frame over)
 * or ends in a reset. The last byte is therefore held back until the client's stream has ended with
 * exactly the declared length; a body that runs past it, ends short or breaks off fails instead, and
 * the upstream sees an unfinished request, never a complete wrong one.
 *
 * HTTP/1.1 needs none of this: there the content-length is the framing itself.
 */
import { pipeline, type Readable, Transform } from 'node:stream';

export function declaredLengthBody(body: Readable, declared: number): Readable {
  let seen = 0;
  let held: Buffer | undefined;
  const out = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      if (seen > declared)
        return callback(new Error(`request body longer than its content-length of ${declared} bytes`));
      if (seen === declared && chunk.length > 0) {
        held = chunk.subarray(chunk.length - 1);
        return callback(null, chunk.length > 1 ? chunk.subarray(0, chunk.length - 1) : undefined);
      }
      callback(null, chunk);
    },
    flush(callback) {
      if (seen !== declared)
        return callback(new Error(`request body of ${seen} bytes, its content-length said ${declared}`));
      callback(null, held);
    },
  });
  // A reset client stream ends without 'end': pipeline destroys `out` (premature close) then.
  pipeline(body, out, () => {});
  return out;
}
