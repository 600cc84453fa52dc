/**
 * The seam through which a capability watches, and may take over, one exchange's response (the
 * response cache today): the Exchange calls it at four named points and knows nothing else of it.
 */
import type { GatewayError } from '../errors.ts';

export interface ResponseTap {
  /**
   * The upstream's response head, before it goes to the client. `headers` is the flat list that will
   * be sent (the tap may add to it, e.g. Cache-Status); `gateway` the headers the gateway adds (Via,
   * X-Request-Id, Server-Timing). Returns true when the tap answered the client itself (a 304 merged
   * into a stored response, or a stale copy instead of a 5xx): the upstream body is then discarded.
   */
  head(status: number, headers: string[], gateway: readonly string[]): boolean;
  /** A chunk of the response body on its way to the client. */
  data(chunk: Buffer): void;
  /** The response was complete. */
  end(): void;
  /** The exchange ended without a complete response (error after headers, client gone, a 202). */
  abort(): void;
  /**
   * The exchange failed before any response head reached the client: answers from the cache instead
   * (stale-if-error) and returns true, or returns false for the error response to go out.
   */
  rescue(err: GatewayError): boolean;
  /** Status and access-log outcome when the tap answered (head or rescue returned true). */
  readonly answeredStatus: number;
  readonly answeredOutcome: 'cache_hit' | 'stale';
  /** Body bytes the tap sent when it answered. */
  readonly answeredBytes: number;
  /** The RFC 9211 Cache-Status of this response, for the access log and error responses. */
  readonly cacheStatus: string | undefined;
}
