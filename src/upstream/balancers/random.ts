/**
 * Weighted random: each candidate is chosen with probability weight / sum of weights (of the candidates
 * other than `exclude`). O(n) per pick, no allocation. Stateless, so it suits many gateway instances
 * sharing upstreams without any coordination.
 */
import type { Balancer, BalancerTarget, RandomSource } from './balancer.ts';

export class RandomBalancer implements Balancer {
  readonly #random: RandomSource;

  constructor(random: RandomSource = Math.random) {
    this.#random = random;
  }

  pick<T extends BalancerTarget>(candidates: readonly T[], exclude?: T): T | undefined {
    const n = candidates.length;
    if (n <= 1) return candidates[0];
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
