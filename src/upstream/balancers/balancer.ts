/**
 * How one target is chosen among the available ones (SPEC §6 load balancing). One small interface,
 * one file per strategy (round-robin.ts, least-request.ts, random.ts), as in Caddy's selection policies.
 */

/** What a balancer reads of a target. `Target` (upstream.ts) satisfies it. */
export interface BalancerTarget {
  /** Stable small integer, unique within the upstream (the index in `Upstream.targets`). */
  readonly id: number;
  /** Relative share of traffic, ≥ 1. */
  readonly weight: number;
  /** Requests in flight to this target right now. */
  readonly inflight: number;
}

export interface Balancer {
  /**
   * Picks one of `candidates` (the healthy, non-ejected targets; the caller filters). `exclude` is the
   * target the previous try of the same request used: it is skipped when another candidate exists, and
   * returned only when it is the sole candidate. Returns undefined only when `candidates` is empty.
   * Implementations do not allocate per pick. They may cache facts about a `candidates` array by
   * identity (e.g. "all weights equal"), so the caller passes a new array whenever the set changes
   * and never mutates one it has passed.
   */
  pick<T extends BalancerTarget>(candidates: readonly T[], exclude?: T): T | undefined;
}

/** A uniform random number in [0, 1), injectable so tests are deterministic. */
export type RandomSource = () => number;
