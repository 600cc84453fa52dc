/**
 * Opens the job store named by the config's `store` (SPEC §2): `sqlite:PATH` (default
 * `sqlite:./.sluice/sluice.db`, relative to `baseDir`), optionally `sqlite:PATH?synchronous=full`.
 * `redis://[[user]:password@]host[:port][/db][?prefix=P]` (or `rediss://`, TLS) opens the shared store of
 * SPEC §10 (several instances on one Redis); the connection is made in the background.
 */
import { isAbsolute, resolve } from 'node:path';
import type { JobStore } from './job-store.ts';
import { RedisJobStore, type RedisJobStoreOptions } from './redis-job-store.ts';
import { SqliteJobStore, type SqliteJobStoreOptions } from './sqlite-job-store.ts';

export interface OpenJobStoreOptions extends SqliteJobStoreOptions, RedisJobStoreOptions {
  /** Directory relative SQLite paths are resolved against. Default: the working directory. */
  baseDir?: string;
}

export function openJobStore(url: string, options: OpenJobStoreOptions = {}): JobStore {
  if (url.startsWith('redis://') || url.startsWith('rediss://')) {
    try {
      return new RedisJobStore(url, options);
    } catch (err) {
      // Never the password in a message.
      throw new Error(`store ${url.replace(/\/\/([^@/]*)@/, '//***@')}: ${(err as Error).message}`);
    }
  }
  if (!url.startsWith('sqlite:'))
    throw new Error(`store ${url}: expected sqlite:PATH or redis://host:port/db`);
  let rest = url.slice('sqlite:'.length);
  let synchronous = options.synchronous;
  const q = rest.indexOf('?');
  if (q !== -1) {
    const params = new URLSearchParams(rest.slice(q + 1));
    rest = rest.slice(0, q);
    for (const [k, v] of params) {
      if (k !== 'synchronous' || (v !== 'normal' && v !== 'full')) {
        throw new Error(`store ${url}: unknown option ${k}=${v} (supported: synchronous=normal|full)`);
      }
      synchronous = v;
    }
  }
  if (rest === '') throw new Error(`store ${url}: expected sqlite:PATH`);
  const path =
    rest === ':memory:' || isAbsolute(rest) ? rest : resolve(options.baseDir ?? process.cwd(), rest);
  return new SqliteJobStore(path, { ...options, synchronous });
}
