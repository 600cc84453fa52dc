/**
 * Weighted random: each candidate is chosen with probability weight / sum of weights (of the candidates
 * other than `exclude`). O(n) per pick, no allocation; O(1) when all weights are equal (worked out once
 * per candidate set, cached by array identity). Needs no shared state, so it suits many gateway
 * instances in front of the same upstreams.
 */
import type { Balancer, BalancerTarget, RandomSource } from './balancer.ts';

export class RandomBalancer implements Balancer {
  readonly #random: RandomSource;
  #seen: readonly BalancerTarget[] | undefined;
  #uniform = false;

  constructor(random: RandomSource = Math.random) {
    this.#random = random;
  }

  pick<T extends BalancerTarget>(candidates: readonly T[], exclude?: T): T | undefined {
    const n = candidates.length;
    if (n <= 1) return candidates[0];
    if (candidates !== this.#seen) {
      this.#seen = candidates;
      this.#uniform = candidates.every((c) => c.weight === candidates[0].weight);
    }
    if (this.#uniform) {
      // Uniform over the candidates other than `exclude`: O(1) unless there is one to find.
      const skip = exclude === undefined ? -1 : candidates.indexOf(exclude);
      if (skip < 0) return candidates[Math.floor(this.#random() * n)];
      const k = Math.floor(this.#random() * (n - 1));
      return candidates[k >= skip ? k + 1 : k];
    }
    let total = 0;
    for (let i = 0; i < n; i++) {
      const c = candidates[i];
      if (c !== exclude) total += c.weight;
    }
    if (total === 0) return candidates[0]; // only `exclude` was there
    let r = this.#random() * total;
    let last: T | undefined;
    for (let i = 0; i < n; i++) {
      const c = candidates[i];
      if (c === exclude) continue;
      r -= c.weight;
      if (r < 0) return c;
      last = c;
    }
    return last; // floating-point rounding at the very top of the range
  }
}
