/**
 * Passive outlier ejection (SPEC §6, Envoy's consecutive-5xx detection): `consecutive_failures` failed
 * tries in a row (connect failure, reset, timeout, 5xx) take a target out of the rotation for
 * `base_ejection × 2^(n-1)`, capped at `max_ejection`, where n counts its recent ejections. A good try
 * resets the consecutive count. n decays by one for every `max_ejection` the target then spends in
 * rotation, so a target that flapped once long ago starts again at `base_ejection`.
 *
 * This module keeps the per-target counts and ejection times (arrays indexed by target id) and decides;
 * the caller (Upstream) knows which targets are available and so whether a target is the last one.
 * Ejections end lazily: `restoreDue()` is called when the clock passes `nextRestoreAt()`.
 */
import type { Clock } from '../clock.ts';
import type { OutlierConfig } from '../config/resolve.ts';

export interface OutlierPolicy {
  /** A try to target `id` succeeded. */
  onSuccess(id: number): void;
  /**
   * A try to target `id` failed. Returns the ejection length in ms when this failure ejects it, else 0.
   * `mayEject` false (it is the last available target) counts the failure but does not eject.
   * Failures of a target already ejected (stragglers that were in flight) are ignored.
   */
  onFailure(id: number, mayEject: boolean): number;
  isEjected(id: number): boolean;
  /** Earliest end of a current ejection, or Infinity. */
  nextRestoreAt(): number;
  /** Ends every ejection due by now, calling `restored(id)` for each. */
  restoreDue(restored: (id: number) => void): void;
}

export interface OutlierTargetState {
  consecutiveFailures: number;
  /** Clock time the ejection ends, 0 when not ejected. */
  ejectedUntil: number;
  /** Recent ejections (after decay), the n of the back-off. */
  ejections: number;
}

export class ConsecutiveFailureOutlier implements OutlierPolicy {
  readonly #config: OutlierConfig;
  readonly #clock: Clock;
  readonly #failures: number[];
  readonly #ejectedUntil: number[];
  readonly #ejections: number[];
  /** When the last ejection of each target ended (for the decay of #ejections). */
  readonly #restoredAt: number[];
  #nextRestoreAt = Number.POSITIVE_INFINITY;

  constructor(config: OutlierConfig, targets: number, clock: Clock) {
    this.#config = config;
    this.#clock = clock;
    this.#failures = new Array<number>(targets).fill(0);
    this.#ejectedUntil = new Array<number>(targets).fill(0);
    this.#ejections = new Array<number>(targets).fill(0);
    this.#restoredAt = new Array<number>(targets).fill(0);
  }

  onSuccess(id: number): void {
    this.#failures[id] = 0;
  }

  onFailure(id: number, mayEject: boolean): number {
    if (this.#ejectedUntil[id] !== 0) return 0;
    const failures = ++this.#failures[id];
    if (failures < this.#config.consecutive_failures || !mayEject) return 0;
    const now = this.#clock.now();
    const { base_ejection: base, max_ejection: max } = this.#config;
    let n = this.#ejections[id];
    if (n > 0 && max > 0) n = Math.max(0, n - Math.floor((now - this.#restoredAt[id]) / max));
    n++;
    this.#ejections[id] = n;
    // 2^(n-1) overflows to Infinity for a large n, and min() caps it.
    const ms = Math.min(base * 2 ** (n - 1), Math.max(base, max));
    this.#failures[id] = 0;
    this.#ejectedUntil[id] = now + ms;
    if (now + ms < this.#nextRestoreAt) this.#nextRestoreAt = now + ms;
    return ms;
  }

  isEjected(id: number): boolean {
    return this.#ejectedUntil[id] !== 0;
  }

  nextRestoreAt(): number {
    return this.#nextRestoreAt;
  }

  restoreDue(restored: (id: number) => void): void {
    const now = this.#clock.now();
    let next = Number.POSITIVE_INFINITY;
    const until = this.#ejectedUntil;
    for (let id = 0; id < until.length; id++) {
      const u = until[id];
      if (u === 0) continue;
      if (u <= now) {
        until[id] = 0;
        this.#failures[id] = 0;
        this.#restoredAt[id] = now;
        restored(id);
      } else if (u < next) next = u;
    }
    this.#nextRestoreAt = next;
  }

  state(id: number): OutlierTargetState {
    return {
      consecutiveFailures: this.#failures[id],
      ejectedUntil: this.#ejectedUntil[id],
      ejections: this.#ejections[id],
    };
  }
}
