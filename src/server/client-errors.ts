/**
 * Requests Node's HTTP/1.1 parser refuses before there is a request object: malformed or oversized
 * heads, and heads that did not arrive within `client.header_timeout`. Each gets a problem+json answer
 * written straight to the socket, one access-log line, and the connection closed.
 *
 * Header timeouts come in batches: Node checks every connection's deadline on an interval and fails all
 * the expired ones in one go, so a slowloris opening 500 connections a second had 500 408s written in
 * one event-loop turn (about 20 ms on this machine), with every other client waiting. They are answered
 * in slices of SLICE per turn instead, with I/O in between.
 */

import { type ServerResponse, STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { GatewayError, type ProblemExtras, problemBody, proxyStatus } from '../errors.ts';
import { type AccessLogEntry, answeredEntry } from '../observability/access-log.ts';
import { newRequestId } from './request-id.ts';

/** Answers per event-loop turn while a batch of header timeouts is drained. */
const SLICE = 32;
/** How long a refused connection may take to read its answer and close before it is destroyed. */
const LINGER_MS = 1_000;

export class ClientErrors {
  readonly #record: (entry: AccessLogEntry) => void;
  readonly #timedOut: Socket[] = [];
  #draining = false;

  constructor(record: (entry: AccessLogEntry) => void) {
    this.#record = record;
  }

  /** The server's `clientError` listener. */
  handle(err: NodeJS.ErrnoException, socket: Socket): void {
    const code = err.code ?? '';
    if (code === 'ECONNRESET' || code === 'EPIPE' || !socket.writable) {
      socket.destroy();
      return;
    }
    if (code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      // Stop parsing: what the client sends now must not start a request that the 408 would cross.
      socket.pause();
      this.#timedOut.push(socket);
      if (!this.#draining) {
        this.#draining = true;
        setImmediate(this.#drain);
      }
      return;
    }
    this.#refuse(err, socket);
  }

  readonly #drain = (): void => {
    const batch = this.#timedOut.splice(0, SLICE);
    for (const socket of batch) {
      if (socket.destroyed) continue;
      this.#refuse(TIMED_OUT, socket);
    }
    if (this.#timedOut.length > 0) setImmediate(this.#drain);
    else this.#draining = false;
  };

  #refuse(err: NodeJS.ErrnoException, socket: Socket): void {
    const code = err.code ?? '';
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    // Pipelining: a malformed request behind ones still being answered (whose bodies were read
    // whole) waits its turn. Its 400 must not overtake (or cut) their responses: the client would
    // take the 400 for a request that reached the upstream. Each in-flight response ends, the next
    // one takes the socket, then the 400. An error in the body of the request being answered is
    // that request's own: answered at once.
    const active = (socket as unknown as { _httpMessage?: ServerResponse | null })._httpMessage;
    if (active && !active.writableFinished && active.req?.complete) {
      active.once('close', () => {
        if (!active.writableFinished)
          socket.destroy(); // that response was cut: so is the connection
        else setImmediate(() => this.#refuse(err, socket));
      });
      return;
    }
    if (active?.headersSent) {
      socket.destroy();
      return;
    }
    // header_timeout on a connection that never sent a byte (a pool's spare connection, a browser's
    // preconnect): there is no request to answer or log, so it is closed quietly, as nginx does. A
    // 408 here was a log line for a request that never existed, and the answer to the one that
    // crossed it on the wire.
    if (code === 'ERR_HTTP_REQUEST_TIMEOUT' && socket.bytesRead === 0) {
      socket.destroy();
      return;
    }
    let gerr: GatewayError;
    if (code === 'HPE_HEADER_OVERFLOW') {
      gerr = new GatewayError('headers-too-large', { detail: 'the request head is larger than allowed' });
    } else if (code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      gerr = new GatewayError('client-timeout', { detail: 'the request head did not arrive in time' });
    } else {
      gerr = new GatewayError('bad-request', { detail: `malformed request (${code || err.message})` });
    }
    const requestId = newRequestId();
    const extras: ProblemExtras = { requestId, elapsedMs: 0, attempts: 0 };
    const body = problemBody(gerr, extras);
    const ps = proxyStatus(gerr);
    socket.end(
      `HTTP/1.1 ${gerr.status} ${STATUS_CODES[gerr.status]}\r\ncontent-type: application/problem+json\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${requestId}\r\n` +
        (ps ? `proxy-status: ${ps}\r\n` : '') +
        `connection: close\r\n\r\n${body}`,
    );
    setTimeout(() => socket.destroy(), LINGER_MS).unref();
    this.#record(
      answeredEntry(
        { method: '', path: '', requestId, startedAt: performance.now(), client: socket.remoteAddress },
        gerr.status,
        'rejected',
        gerr.code,
      ),
    );
  }
}

const TIMED_OUT: NodeJS.ErrnoException = Object.assign(new Error('request head timed out'), {
  code: 'ERR_HTTP_REQUEST_TIMEOUT',
});
