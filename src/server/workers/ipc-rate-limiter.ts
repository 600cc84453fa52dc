/**
 * Rate-limit buckets shared by the processes of one instance (SPEC §13: "buckets are shared by the
 * workers of an instance"), when the store is not Redis: they live in the primary's LocalRateLimiter,
 * and a worker asks it for each request over the IPC channel (one message each way). If no answer
 * comes within ANSWER_MS (the primary is stuck or gone) the request is allowed, as RedisRateLimiter
 * does when Redis does not answer: a limit is protection, not a reason to refuse traffic.
 */
import type { Decision, RateLimiter, RatePolicy } from '../../access/rate-limit.ts';

const ANSWER_MS = 250;
const ALLOW: Decision = { allowed: true, remaining: 0, resetMs: 0, retryAfterMs: 0 };

export interface RateRequest {
  readonly seq: number;
  readonly key: string;
  readonly policy: RatePolicy;
}

export class IpcRateLimiter implements RateLimiter {
  readonly #send: (request: RateRequest) => void;
  readonly #pending = new Map<number, (d: Decision) => void>();
  #seq = 0;
  /** Answers that did not come in time (the request was allowed). */
  unanswered = 0;

  constructor(send: (request: RateRequest) => void) {
    this.#send = send;
  }

  take(bucketKey: string, policy: RatePolicy): Promise<Decision> {
    const seq = ++this.#seq;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#pending.delete(seq);
        this.unanswered++;
        resolve(ALLOW);
      }, ANSWER_MS);
      this.#pending.set(seq, (d) => {
        clearTimeout(timer);
        resolve(d);
      });
      this.#send({ seq, key: bucketKey, policy });
    });
  }

  /** The primary's answer to request `seq`. */
  answer(seq: number, decision: Decision): void {
    const done = this.#pending.get(seq);
    this.#pending.delete(seq);
    done?.(decision);
  }

  async close(): Promise<void> {
    for (const done of this.#pending.values()) done(ALLOW);
    this.#pending.clear();
  }
}
