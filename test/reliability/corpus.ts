/**
 * The regression corpus of the request batteries (issue 14): `test/corpus/requests/*.json`, one case
 * per file, replayed every run (request-corpus.test.ts). A case is one connection's bytes, cut into
 * its requests, each with the outcome it calls for and, when it may be forwarded, what it means.
 * Bytes are latin1 strings so CR, LF, NUL and high bytes survive JSON exactly.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Expect, FuzzRequest } from './request-grammar.ts';

export const CORPUS_DIR = new URL('../corpus/requests/', import.meta.url).pathname;

export interface CorpusRequest {
  /** The request's bytes as a latin1 string; must carry `X-Fuzz-Id: <id>` when it may be forwarded. */
  bytes: string;
  expect: Expect;
  meant?: {
    id: string;
    method: string;
    target: string;
    host: string;
    headers: [string, string][];
    body: string;
  };
}

export interface CorpusCase {
  name: string;
  /** Where it came from: a fuzz seed and run, a published payload, a found bug. */
  found: string;
  note: string;
  requests: CorpusRequest[];
  /** Offsets where the bytes are cut into separate writes. */
  splits?: number[];
}

export function loadCorpus(dir = CORPUS_DIR): CorpusCase[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as CorpusCase);
}

export function toRequests(c: CorpusCase): FuzzRequest[] {
  return c.requests.map((r, i) => {
    const meant = r.meant ?? {
      id: `${c.name}-${i}`,
      method: 'GET',
      target: '/',
      host: '',
      headers: [],
      body: '',
    };
    return {
      meant: { ...meant, body: Buffer.from(meant.body, 'latin1') },
      bytes: Buffer.from(r.bytes, 'latin1'),
      expect: r.expect,
      mutation: `${c.name}#${i}`,
    };
  });
}

/** Writes a counterexample as a corpus case (the long fuzz run does, for each failure it finds). */
export function saveCase(
  name: string,
  found: string,
  note: string,
  requests: FuzzRequest[],
  splits?: number[],
) {
  const c: CorpusCase = {
    name,
    found,
    note,
    requests: requests.map((r) => ({
      bytes: r.bytes.toString('latin1'),
      expect: r.expect,
      meant: { ...r.meant, body: r.meant.body.toString('latin1') },
    })),
    splits,
  };
  const file = join(CORPUS_DIR, `${name}.json`);
  writeFileSync(file, `${JSON.stringify(c, null, 2)}\n`);
  return file;
}
