/**
 * `workers` (SPEC §10): Sluice with `workers: 1` against `workers: 2`, and the three ways to spread
 * connections over Node processes (SO_REUSEPORT, node:cluster round-robin, node:cluster shared socket)
 * measured on a minimal server, in interleaved rounds on one machine.
 *
 * Placement on a 2-core machine: `workers: 1` is pinned to core 0; every two-process contender gets
 * cores 0 and 1; the upstream nginx (1 worker) and wrk always run on core 1. So a second process
 * shares its core with the load generator and the upstream: the gain measured here is a floor of
 * what a machine with spare cores gives.
 *
 *   npx node bench/macro/workers.ts [--rounds 3] [--duration 4] [--connections 64]
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  CLK_TCK,
  fmtInt,
  freePort,
  LOAD_CORE,
  log,
  machineInfo,
  makeTmpDir,
  mdTable,
  NODE,
  type Proc,
  pinSelf,
  requireTools,
  SLUICE_MAIN,
  SLUICE_NODE_FLAGS,
  sleep,
  spawnPinned,
  startUpstreamNginx,
  treeTicks,
  waitReady,
  wrk,
} from './lib.ts';

const { values: flags } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '4' },
    connections: { type: 'string', default: '64' },
  },
});
const rounds = Number(flags.rounds);
const duration = Number(flags.duration);
const connections = Number(flags.connections);

requireTools(['nginx', 'wrk', 'taskset']);
pinSelf(LOAD_CORE);
const tmp = makeTmpDir();
const upstream = await startUpstreamNginx(tmp);

interface Contender {
  readonly name: string;
  readonly what: string;
  readonly cores: string;
  start(): Promise<{ proc: Proc; url: string }>;
}

const sluice = (workers: number, cores: string): Contender => ({
  name: `sluice workers: ${workers}`,
  what: 'Sluice proxying to the upstream nginx (/small, 100 B)',
  cores,
  async start() {
    const port = await freePort();
    const file = path.join(tmp, `sluice-${workers}.yaml`);
    writeFileSync(
      file,
      `listen: 127.0.0.1:${port}
admin: { listen: 127.0.0.1:${await freePort()} }
access_log: off
workers: ${workers}
upstreams: { up: { targets: [${upstream.url}] } }
routes: [{ name: all, match: { path: / }, upstream: up }]
`,
    );
    const proc = spawnPinned(
      `sluice-${workers}`,
      null,
      'taskset',
      ['-c', cores, NODE, ...SLUICE_NODE_FLAGS, SLUICE_MAIN, 'start', '-c', file],
      {
        logFile: path.join(tmp, `sluice-${workers}.log`),
      },
    );
    const url = `http://127.0.0.1:${port}/small`;
    await waitReady(url, proc);
    return { proc, url };
  },
});

const bare = (mode: string, procs: number, cores: string): Contender => ({
  name: `${mode} ×${procs}`,
  what: 'a minimal Node server answering 100 B itself',
  cores,
  async start() {
    const port = await freePort();
    const script = path.join(import.meta.dirname, 'contenders', 'multi-process-server.ts');
    const proc = spawnPinned(
      mode,
      null,
      'taskset',
      ['-c', cores, NODE, script, '--mode', mode, '--procs', String(procs), '--port', String(port)],
      {
        logFile: path.join(tmp, `${mode}-${procs}.log`),
      },
    );
    const url = `http://127.0.0.1:${port}/`;
    await waitReady(url, proc);
    await sleep(500); // every process listening
    return { proc, url };
  },
});

const contenders: Contender[] = [
  sluice(1, '0'),
  sluice(2, '0,1'),
  bare('reuseport', 1, '0'),
  bare('reuseport', 2, '0,1'),
  bare('cluster-rr', 2, '0,1'),
  bare('cluster-shared', 2, '0,1'),
];

const results = new Map<string, { rps: number[]; p99: number[]; cpu: number[] }>();
for (let round = 0; round < rounds; round++) {
  for (const c of contenders) {
    const { proc, url } = await c.start();
    await wrk(url, connections, 2, path.join(tmp, 'warm.log'));
    const before = treeTicks(proc.pid);
    const r = await wrk(url, connections, duration, path.join(tmp, 'wrk.log'));
    const ticks = treeTicks(proc.pid) - before;
    await proc.stop();
    const entry = results.get(c.name) ?? { rps: [], p99: [], cpu: [] };
    entry.rps.push(r.rps);
    entry.p99.push(r.p99us);
    entry.cpu.push((ticks * (1e6 / CLK_TCK)) / r.requests);
    results.set(c.name, entry);
    log(`round ${round + 1} ${c.name}: ${fmtInt(r.rps)} req/s, p99 ${(r.p99us / 1000).toFixed(2)} ms`);
  }
}
await upstream.proc.stop();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const one = median(results.get('sluice workers: 1')?.rps ?? [1]);
const oneBare = median(results.get('reuseport ×1')?.rps ?? [1]);
console.log(`\nmachine: ${JSON.stringify(machineInfo())}`);
console.log(
  `wrk -t1 -c${connections} -d${duration}s, ${rounds} interleaved rounds (medians); wrk and the upstream nginx on core ${LOAD_CORE}\n`,
);
console.log(
  mdTable(
    ['contender', 'what', 'cores', 'req/s', 'vs 1 process', 'p99 ms', 'CPU µs/req'],
    contenders.map((c) => {
      const e = results.get(c.name) ?? { rps: [0], p99: [0], cpu: [0] };
      const base = c.name.startsWith('sluice') ? one : oneBare;
      return [
        c.name,
        c.what,
        c.cores,
        fmtInt(median(e.rps)),
        `${(median(e.rps) / base).toFixed(2)}×`,
        (median(e.p99) / 1000).toFixed(2),
        median(e.cpu).toFixed(1),
      ];
    }),
  ),
);
