/**
 * Micro-benchmark of one balancer pick (the per-try cost of load balancing), plain loops timed with
 * performance.now, no dependency. Run: `npx node bench/micro/balancer-pick.bench.ts`.
 * Each case is warmed up, then timed in a few rounds; the best round is reported (least disturbed by
 * other load on the machine). Numbers are only comparable on the same machine.
 */
import type { Balancer, BalancerTarget } from '../../src/upstream/balancers/balancer.ts';
import { LeastRequestBalancer } from '../../src/upstream/balancers/least-request.ts';
import { RandomBalancer } from '../../src/upstream/balancers/random.ts';
import { RoundRobinBalancer } from '../../src/upstream/balancers/round-robin.ts';

const ITERATIONS = 2_000_000;
const ROUNDS = 5;

interface Host extends BalancerTarget {
  inflight: number;
}

function hosts(n: number, weighted: boolean): Host[] {
  return Array.from({ length: n }, (_, id) => ({
    id,
    weight: weighted ? 1 + (id % 4) : 1,
    inflight: id % 3,
  }));
}

let sink = 0;

function measure(name: string, b: Balancer, candidates: Host[], exclude: boolean): void {
  const ex = exclude ? candidates[1] : undefined;
  for (let i = 0; i < 200_000; i++) sink += b.pick(candidates, ex)?.id ?? 0;
  let best = Number.POSITIVE_INFINITY;
  for (let r = 0; r < ROUNDS; r++) {
    const t = performance.now();
    for (let i = 0; i < ITERATIONS; i++) sink += b.pick(candidates, ex)?.id ?? 0;
    best = Math.min(best, performance.now() - t);
  }
  const ns = (best * 1e6) / ITERATIONS;
  console.log(`${name.padEnd(48)} ${ns.toFixed(1).padStart(7)} ns/pick`);
}

const cases: [string, () => Balancer][] = [
  ['round-robin (smooth weighted)', () => new RoundRobinBalancer()],
  ['least-request (P2C)', () => new LeastRequestBalancer()],
  ['random (weighted)', () => new RandomBalancer()],
];

for (const n of [2, 16]) {
  for (const weighted of [false, true]) {
    for (const exclude of [false, true]) {
      console.log(
        `\n${n} hosts, ${weighted ? 'weights 1-4' : 'equal weights'}${exclude ? ', exclude one (a retry)' : ''}`,
      );
      for (const [name, make] of cases) measure(name, make(), hosts(n, weighted), exclude);
    }
  }
}
if (sink === -1) console.log(sink);
