/**
 * Circuit breaker per upstream on the error rate (SPEC §6). Closed: every request passes and its final
 * result is counted in a sliding window (1-s buckets, O(1) memory whatever the traffic). When at least
 * `min_requests` requests ended in the window and errors / requests exceeds `error_rate`, it opens: every
 * request is refused (`503 circuit-open` with Retry-After) for `open_for`. Then it is half-open: the
 * next `half_open_requests` requests pass as probes and the rest are refused; all probes good → closed
 * (with an empty window), any probe bad → open again for `open_for`.
 *
 * An admission is a token handed back with the result, so that a request admitted while closed but
 * ending after the circuit opened is not taken for a probe, and a probe that never reached the upstream
 * (client gone, shed by the limiter) gives its probe slot back instead of leaving the breaker half-open
 * for ever. Time comes from the injected clock; there are no timers (open → half-open is decided
 * lazily, on the next call).
 */
import type { Clock } from '../clock.ts';
import type { CircuitConfig } from '../config/resolve.ts';
import { SlidingWindow } from './sliding-window.ts';

export type CircuitState = 'closed' | 'open' | 'half-open';

/** A request may go on. `probe` is 0 for a normal request, else the half-open round it probes for. */
export interface CircuitAdmission {
  readonly ok: true;
  readonly probe: number;
}

/** The circuit refuses the request; retrying after `retryAfterMs` may succeed. */
export interface CircuitRejection {
  readonly ok: false;
  readonly code: 'circuit-open';
  readonly retryAfterMs: number;
}

/** The admission of every request while closed (shared, never allocated per request). */
export const ADMITTED: CircuitAdmission = Object.freeze({ ok: true, probe: 0 });

export interface Breaker {
  /** Admits or refuses one request. Every admission must end in exactly one `onResult` or `cancel`. */
  tryAcquire(): CircuitAdmission | CircuitRejection;
  /** The final result of an admitted request: ok, or an error (timeout, connection failure, 5xx). */
  onResult(admission: CircuitAdmission, ok: boolean): void;
  /** The admitted request ended without an upstream result (client gone, shed, no target): not counted. */
  cancel(admission: CircuitAdmission): void;
  state(): CircuitState;
}

export type CircuitChangeListener = (state: CircuitState, previous: CircuitState) => void;

/** Refused requests during half-open are told to come back after this (probes are under way). */
const HALF_OPEN_RETRY_AFTER_MS = 1_000;

export class CircuitBreaker implements Breaker {
  readonly #config: CircuitConfig;
  readonly #clock: Clock;
  readonly #window: SlidingWindow;
  readonly #onChange: CircuitChangeListener;
  #state: CircuitState = 'closed';
  #openUntil = 0;
  /** Half-open round; probe admissions carry it so late results of an older round are ignored. */
  #round = 0;
  #probe: CircuitAdmission = ADMITTED;
  #probesAdmitted = 0;
  #probesOk = 0;

  constructor(config: CircuitConfig, clock: Clock, onChange: CircuitChangeListener = () => {}) {
    this.#config = config;
    this.#clock = clock;
    this.#window = new SlidingWindow(config.window, 1_000, clock);
    this.#onChange = onChange;
  }

  tryAcquire(): CircuitAdmission | CircuitRejection {
    if (this.#state === 'closed') return ADMITTED;
    if (this.#state === 'open') {
      const left = this.#openUntil - this.#clock.now();
      if (left > 0) return { ok: false, code: 'circuit-open', retryAfterMs: Math.ceil(left) };
      this.#halfOpen();
    }
    if (this.#probesAdmitted < this.#config.half_open_requests) {
      this.#probesAdmitted++;
      return this.#probe;
    }
    return {
      ok: false,
      code: 'circuit-open',
      retryAfterMs: Math.min(HALF_OPEN_RETRY_AFTER_MS, this.#config.open_for),
    };
  }

  onResult(admission: CircuitAdmission, ok: boolean): void {
    if (admission.probe === 0) {
      // Admitted while closed. Once open, late results say nothing about the upstream's recovery.
      if (this.#state !== 'closed') return;
      this.#window.add(1, ok ? 0 : 1);
      if (!ok) {
        const requests = this.#window.totalA();
        if (
          requests >= this.#config.min_requests &&
          this.#window.totalB() / requests > this.#config.error_rate
        ) {
          this.#open();
        }
      }
      return;
    }
    if (this.#state !== 'half-open' || admission.probe !== this.#round) return;
    if (!ok) {
      this.#open();
    } else if (++this.#probesOk >= this.#config.half_open_requests) {
      this.#transition('closed');
      this.#window.reset();
    }
  }

  cancel(admission: CircuitAdmission): void {
    if (admission.probe !== 0 && admission.probe === this.#round && this.#state === 'half-open') {
      this.#probesAdmitted--;
    }
  }

  state(): CircuitState {
    if (this.#state === 'open' && this.#clock.now() >= this.#openUntil) this.#halfOpen();
    return this.#state;
  }

  /** For the admin API and metrics. */
  snapshot(): { state: CircuitState; requests: number; errors: number; openForMs: number } {
    const state = this.state();
    return {
      state,
      requests: this.#window.totalA(),
      errors: this.#window.totalB(),
      openForMs: state === 'open' ? Math.max(0, Math.ceil(this.#openUntil - this.#clock.now())) : 0,
    };
  }

  #open(): void {
    this.#openUntil = this.#clock.now() + this.#config.open_for;
    this.#transition('open');
  }

  #halfOpen(): void {
    this.#round++;
    this.#probe = Object.freeze({ ok: true, probe: this.#round });
    this.#probesAdmitted = 0;
    this.#probesOk = 0;
    this.#transition('half-open');
  }

  #transition(next: CircuitState): void {
    const previous = this.#state;
    if (previous === next) return;
    this.#state = next;
    this.#onChange(next, previous);
  }
}
