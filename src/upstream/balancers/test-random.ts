/** A seeded PRNG (mulberry32) so balancer tests are deterministic. Test helper only. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface FakeTarget {
  readonly id: number;
  readonly name: string;
  readonly weight: number;
  inflight: number;
}

export function targets(...weights: number[]): FakeTarget[] {
  return weights.map((weight, id) => ({ id, name: String.fromCharCode(97 + id), weight, inflight: 0 }));
}

export function countPicks(
  pick: (c: readonly FakeTarget[], exclude?: FakeTarget) => FakeTarget | undefined,
  c: readonly FakeTarget[],
  n: number,
  exclude?: FakeTarget,
): number[] {
  const counts = new Array<number>(c.length).fill(0);
  for (let i = 0; i < n; i++) {
    const t = pick(c, exclude);
    if (t === undefined) throw new Error('no pick');
    counts[t.id]++;
  }
  return counts;
}
