/**
 * The nginx differential (issue 14): each case of differential-corpus.ts sent on its own connection
 * through nginx and through Sluice (a real `sluice start` process), both in front of the same strict
 * recording upstream; each side's outcome classified (responses by status class, what reached the
 * upstream whole: method, path, body, end-to-end headers) and compared. Every disagreement must match
 * a decision in nginx-decisions.ts; the table goes to docs/reliability.md.
 */
import { createHash } from 'node:crypto';
import { type GatewayProcess, spawnGateway } from '../helpers.ts';
import type { DiffCase } from './differential-corpus.ts';
import { exchange, GATEWAY_YAML } from './framing.ts';
import { type NginxProxy, startNginxProxy } from './nginx.ts';
import type { Decision } from './nginx-decisions.ts';
import { type RecordingUpstream, startRecordingUpstream } from './recording-upstream.ts';
import { endToEnd, expectedPath } from './request-grammar.ts';

export interface Forwarded {
  method: string;
  /** As received; `path` is it normalised (the comparison uses that: Sluice normalises by SPEC §3). */
  target: string;
  path: string;
  body: Buffer;
  headers: [string, string][];
}

export interface Outcome {
  statuses: number[];
  closed: boolean;
  timedOut: boolean;
  /** Requests that reached the upstream whole, in arrival order. */
  forwarded: Forwarded[];
  /** Requests that reached it cut off (a body aborted mid-way). */
  incomplete: number;
  /** Requests the strict upstream found malformed. */
  malformed: string[];
}

const statusClass = (s: number) => (s >= 200 && s < 300 ? '2xx' : s >= 400 && s < 500 ? '4xx' : String(s));

function normalised(target: string): string {
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  return (expectedPath(path) ?? path) + (q === -1 ? '' : target.slice(q));
}

/** What the two sides are compared on: status classes, a hang, and each forwarded request. */
export function key(o: Outcome): string {
  const fwd = o.forwarded.map(
    (f) =>
      `${f.method} ${f.path} ${createHash('sha256').update(f.body).digest('hex').slice(0, 8)} ${JSON.stringify(f.headers)}`,
  );
  return [o.statuses.map(statusClass).join(','), o.timedOut ? 'hang' : '', o.malformed.length, ...fwd].join(
    ' | ',
  );
}

/** A short human description: `400` / `200 → POST / (3 B)` / `200,400 → GET /1`. */
export function describe(o: Outcome): string {
  const st = o.statuses.length === 0 ? (o.timedOut ? 'no answer' : 'closed') : o.statuses.join(',');
  const fwd = o.forwarded.map((f) => `${f.method} ${f.target} (${f.body.length} B)`);
  const extra = [
    o.timedOut && o.statuses.length > 0 ? 'then hangs' : '',
    o.malformed.length ? 'MALFORMED upstream' : '',
  ]
    .filter(Boolean)
    .join(', ');
  return `${st}${fwd.length ? ` → ${fwd.join('; ')}` : ''}${extra ? ` (${extra})` : ''}`;
}

export interface Sides {
  up: RecordingUpstream;
  nginx: NginxProxy;
  sluice: GatewayProcess;
  close(): Promise<void>;
}

export async function startSides(): Promise<Sides> {
  const up = await startRecordingUpstream();
  const nginx = await startNginxProxy(up.port);
  const sluice = await spawnGateway(GATEWAY_YAML(up.url));
  return {
    up,
    nginx,
    sluice,
    async close() {
      await sluice.stop();
      await nginx.stop();
      await up.close();
    },
  };
}

/** One case through one side. */
export async function outcomeOf(up: RecordingUpstream, port: number, c: DiffCase): Promise<Outcome> {
  up.reset();
  const got = await exchange(port, c.bytes, c.methods, { waitMs: 1_000 });
  // A forwarded request is recorded before its answer leaves the upstream; an aborted one may be
  // recorded (incomplete) a moment later, during the next case, where only complete ones count.
  const records = [...up.requests];
  return {
    statuses: got.responses.map((r) => r.status),
    closed: got.closed,
    timedOut: got.timedOut,
    forwarded: records
      .filter((r) => !r.incomplete && r.problems.length === 0)
      .map((r) => ({
        method: r.method,
        target: r.target,
        path: normalised(r.target),
        body: r.body,
        headers: endToEnd(r.headers).filter(([n]) => n !== 'x-fuzz-id'),
      })),
    incomplete: records.filter((r) => r.incomplete).length,
    malformed: records.flatMap((r) => r.problems),
  };
}

export interface Compared {
  c: DiffCase;
  sluice: Outcome;
  nginx: Outcome;
  agree: boolean;
}

export async function compareAll(sides: Sides, cases: readonly DiffCase[]): Promise<Compared[]> {
  const out: Compared[] = [];
  for (const c of cases) {
    const nginx = await outcomeOf(sides.up, sides.nginx.port, c);
    const sluice = await outcomeOf(sides.up, sides.sluice.port, c);
    out.push({ c, sluice, nginx, agree: key(sluice) === key(nginx) });
  }
  return out;
}

export interface Decided extends Compared {
  /** The decisions that explain a disagreement; undefined when the sides agree or nothing explains it. */
  decisions: string[] | undefined;
}

/** The table of docs/reliability.md: per source, and per decision. */
export function table(results: readonly Decided[], decisions: readonly Decision[]): string {
  const sources = [...new Set(results.map((r) => r.c.source))];
  const row = (name: string, rs: readonly Decided[]) => {
    const differ = rs.filter((r) => !r.agree);
    const decided = differ.filter((r) => r.decisions !== undefined);
    return `| ${name} | ${rs.length} | ${rs.length - differ.length} | ${differ.length} | ${decided.length} |`;
  };
  const lines = [
    '| source | cases | agree | differ | decided |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...sources.map((s) =>
      row(
        s,
        results.filter((r) => r.c.source === s),
      ),
    ),
    row('**all**', results),
    '',
    '| decision | cases | Sluice | nginx |',
    '| --- | ---: | --- | --- |',
    ...decisions.map((d) => {
      const n = results.filter((r) => r.decisions?.includes(d.id)).length;
      return `| \`${d.id}\` | ${n} | ${d.sluice} | ${d.nginx} |`;
    }),
  ];
  return lines.join('\n');
}
