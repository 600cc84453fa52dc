/**
 * Least request by the power of two choices (Mitzenmacher; Envoy's LEAST_REQUEST): sample two distinct
 * candidates at random and take the one with the lower load, where load is `(inflight + 1) / weight`.
 * The `+ 1` makes weights matter when both are idle (a weight-3 target beats a weight-1 target at zero
 * load) and makes a target with weight w take about w times the in-flight requests of a weight-1 target
 * under load. Sampling two (not scanning all) avoids herding every request onto the single least-loaded
 * target between two updates of `inflight`. O(1) per pick, O(n) when `exclude` is given (to find it).
 */
import type { Balancer, BalancerTarget, RandomSource } from './balancer.ts';

export class LeastRequestBalancer implements Balancer {
  readonly #random: RandomSource;

  constructor(random: RandomSource = Math.random) {
    this.#random = random;
  }

  pick<T extends BalancerTarget>(candidates: readonly T[], exclude?: T): T | undefined {
    const n = candidates.length;
    if (n <= 1) return candidates[0];
    // Sample among the m candidates other than `exclude`: virtual index k maps to k, or k + 1 past it.
    const skip = exclude === undefined ? -1 : candidates.indexOf(exclude);
    const m = skip < 0 ? n : n - 1;
    if (m === 1) return candidates[skip === 0 ? 1 : 0];
    const ia = Math.floor(this.#random() * m);
    let ib = Math.floor(this.#random() * (m - 1));
    if (ib >= ia) ib++; // distinct from ia, still uniform
    const a = candidates[skip >= 0 && ia >= skip ? ia + 1 : ia];
    const b = candidates[skip >= 0 && ib >= skip ? ib + 1 : ib];
    // (a.inflight + 1) / a.weight vs (b.inflight + 1) / b.weight, without division.
    const la = (a.inflight + 1) * b.weight;
    const lb = (b.inflight + 1) * a.weight;
    // On a tie, a (the first of two random draws) is as random as b.
    return lb < la ? b : a;
  }
}
