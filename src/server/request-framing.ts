/**
 * The framing checks Node's HTTP/1.1 parser leaves to the gateway (SPEC §3 "strict framing"; RFC
 * 9112 §2.3, §6.1). llhttp accepts an `HTTP/2.0` (or `HTTP/0.9`) request line on an HTTP/1.1
 * connection, and any Transfer-Encoding list that ends in `chunked`; both are refused here (400,
 * connection closed) before anything else reads the request:
 *
 * - a version other than 1.x on the HTTP/1 parser: the rest of the gateway tells HTTP/2 requests
 *   apart by their version, and such a request has none of an HTTP/2 stream's parts;
 * - a Transfer-Encoding other than exactly `chunked`: Transfer-Encoding is hop-by-hop, so forwarding
 *   the de-chunked body of `gzip, chunked` would hand the upstream compressed bytes it was never told
 *   about (RFC 9112 §6.1 says 501; nginx answers 501 too, Sluice keeps to its catalogue's 400);
 * - Transfer-Encoding on an HTTP/1.0 request, which RFC 9112 §6.1 calls faulty framing.
 *
 * And pipelining (`pipelinedBehind`): Node parses and hands over every request a client pipelined,
 * while the ones before are still being answered. The gateway takes them one at a time, as nginx
 * does: a request waits until the response before it has gone out, and is dropped unanswered when
 * that response closed the connection (a refusal, `Connection: close`), so no request reaches the
 * upstream that the client can never get an answer to (RFC 9112 §9.3, §9.6).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

/** Why the request's framing is refused, or undefined when it is fine (always for HTTP/2 streams). */
export function framingRefusal(req: IncomingMessage): string | undefined {
  if ((req as { stream?: unknown }).stream !== undefined) return undefined; // an HTTP/2 stream
  if (req.httpVersionMajor !== 1) return `HTTP/${req.httpVersion} is not spoken on an HTTP/1.1 connection`;
  const te = req.headers['transfer-encoding'];
  if (te === undefined) return undefined;
  if (req.httpVersionMinor === 0) return 'Transfer-Encoding in an HTTP/1.0 request';
  if (te.trim().toLowerCase() !== 'chunked')
    return `Transfer-Encoding '${te}' is not supported: only a single 'chunked'`;
  return undefined;
}

interface Outgoing {
  _httpMessage?: ServerResponse | null;
}

/**
 * True when `req` was pipelined behind a response still going out on its connection: `resume` runs
 * once that response is done, unless it closed the connection, when `req` is dropped (the client
 * sees the close after the answers it got). False: handle `req` now.
 */
export function pipelinedBehind(req: IncomingMessage, res: ServerResponse, resume: () => void): boolean {
  const socket = req.socket;
  if (socket === null || (req as { stream?: unknown }).stream !== undefined) return false;
  if (socket.destroyed || socket.writableEnded) {
    // The response before it ended the connection already (a refusal answered synchronously).
    req.destroy();
    return true;
  }
  const ahead = (socket as unknown as Outgoing)._httpMessage;
  if (ahead === undefined || ahead === null || ahead === res || ahead.writableFinished) return false;
  ahead.once('close', () => {
    const last = (ahead as unknown as { _last?: boolean })._last === true;
    if (!ahead.writableFinished || last || socket.destroyed || socket.writableEnded) req.destroy();
    else resume();
  });
  return true;
}
