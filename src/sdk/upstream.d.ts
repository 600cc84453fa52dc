/**
 * sluice/upstream: take part in Sluice's timeout budget from a Node backend (no dependencies).
 * Types for upstream.js; they need no @types/node (requests and responses are described by shape).
 */

/** A node:http IncomingMessage, an Express or Fastify request, or a fetch Request. */
export type RequestLike =
  | { headers: Record<string, string | string[] | undefined> }
  | { headers: { get(name: string): string | null } }
  | { raw: { headers: Record<string, string | string[] | undefined> } };

/** A node:http ServerResponse / Express response, or a Fastify reply (its `raw`). */
export type ResponseLike =
  | { setHeader(name: string, value: string): unknown; readonly headersSent?: boolean }
  | { raw: { setHeader(name: string, value: string): unknown; readonly headersSent?: boolean } };

export interface DeadlineOptions {
  /** Milliseconds kept back to answer before the caller gives up. Default 50. */
  margin?: number;
  /** Budget in ms when the request carries no x-timeout-ms (default: none, the signal never fires). */
  fallback?: number;
}

/**
 * An AbortSignal that fires (reason: a `TimeoutError` DOMException) when the request's x-timeout-ms
 * budget minus the margin has passed, counted from the first call for this request (call it when the
 * request arrives). The same signal on later calls. Without the header and a fallback it never fires.
 */
export function deadline(req: RequestLike, options?: DeadlineOptions): AbortSignal;

/** The budget (ms) the request carries in x-timeout-ms, or undefined. */
export function budgetOf(req: RequestLike): number | undefined;

/** Milliseconds left before the deadline of a request or of a signal from deadline(); Infinity when none. */
export function remaining(from: RequestLike | AbortSignal): number;

/**
 * fetch bounded by `from` (a request: its deadline(); or an AbortSignal), sending what is left of the
 * budget as x-timeout-ms so the next hop knows. Rejects with a TimeoutError when the time is up.
 */
export function fetchWithDeadline(
  input: string | URL | Request,
  init?: RequestInit,
  from?: RequestLike | AbortSignal,
): Promise<Response>;

export interface Timing {
  /** Runs fn and records its duration under name (also when it throws). */
  span<T>(name: string, fn: () => T | Promise<T>, desc?: string): Promise<T>;
  /** Starts a span; call the returned function to end it. */
  start(name: string, desc?: string): () => void;
  /** Records a known duration in ms (summed with earlier ones of the same name). */
  mark(name: string, ms: number, desc?: string): Timing;
  /** The Server-Timing header value: `db;dur=12.3, stripe;desc="payments";dur=30`. */
  header(): string;
  /** name → ms recorded so far. */
  entries(): Record<string, number>;
  /** Adds Server-Timing to a fetch Response (a copy when its headers are immutable). */
  apply(response: Response): Response;
}

/**
 * Server-Timing spans. Given a node:http / Express response or a Fastify reply, the header is set
 * each time a span ends, until the headers are sent; without one, use header() or apply(response).
 */
export function timing(res?: ResponseLike): Timing;
