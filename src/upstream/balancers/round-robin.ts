/**
 * Smooth weighted round-robin, as in nginx: every pick adds each candidate's weight to its running
 * score, takes the highest score and subtracts the sum of weights from it. Weights 5:1:1 give
 * a a b a c a a (spread out, not a a a a a b c). O(n) per pick, no allocation (scores live in one
 * array indexed by target id, grown when a new id shows up). Equal weights, the common case, take an
 * O(1) plain rotation instead, which is what smooth WRR degenerates to anyway; whether a candidate set
 * has equal weights is worked out once per set (cached by array identity, see Balancer).
 */
import type { Balancer, BalancerTarget } from './balancer.ts';

export class RoundRobinBalancer implements Balancer {
  #score: Float64Array = new Float64Array(8);
  #seen: readonly BalancerTarget[] | undefined;
  #uniform = false;
  #next = 0;

  pick<T extends BalancerTarget>(candidates: readonly T[], exclude?: T): T | undefined {
    const n = candidates.length;
    if (n <= 1) return candidates[0];
    if (candidates !== this.#seen) {
      this.#seen = candidates;
      this.#uniform = candidates.every((c) => c.weight === candidates[0].weight);
    }
    if (this.#uniform) {
      let i = this.#next < n ? this.#next : 0;
      if (candidates[i] === exclude) i = i + 1 < n ? i + 1 : 0;
      this.#next = i + 1;
      return candidates[i];
    }
    let score = this.#score;
    let best: T | undefined;
    let bestScore = Number.NEGATIVE_INFINITY;
    let total = 0;
    for (let i = 0; i < n; i++) {
      const c = candidates[i];
      if (c === exclude) continue;
      if (c.id >= score.length) score = this.#grow(c.id);
      const s = score[c.id] + c.weight;
      score[c.id] = s;
      total += c.weight;
      if (s > bestScore) {
        bestScore = s;
        best = c;
      }
    }
    // Only `exclude` was there: a retry may go back to it.
    if (best === undefined) return candidates[0];
    score[best.id] -= total;
    return best;
  }

  #grow(id: number): Float64Array {
    const next = new Float64Array(Math.max(id + 1, this.#score.length * 2));
    next.set(this.#score);
    this.#score = next;
    return next;
  }
}
