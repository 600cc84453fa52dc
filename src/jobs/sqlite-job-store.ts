/**
 * JobStore on the embedded SQLite of Node 24 (`node:sqlite`, synchronous): one gateway instance, or
 * several processes of one machine sharing the file (leases keep them apart). See job-store.ts for
 * the contract; test/contracts/job-store.contract.ts checks it.
 *
 * Durability. The database runs in WAL mode with `synchronous=NORMAL` by default: a transaction is
 * committed — and survives the process being killed (`kill -9`), which is what SPEC §5 promises —
 * as soon as its WAL frames are written to the OS; only a power loss or kernel crash can lose the last
 * few transactions (the database itself is never corrupted). `synchronous=FULL` (store URL
 * `sqlite:PATH?synchronous=full`) also survives power loss, at the price of an fsync per state change
 * *on the event loop* (node:sqlite is synchronous), which stalls every request in the gateway for the
 * duration of the fsync. Either way `create` returns only after its COMMIT, so a `202` is never sent
 * for a job that is not in the database.
 *
 * Results are written in rows of at most 256 KiB (`job_chunks`) under a random writer token; the job
 * row names the token of its result only when it becomes `completed`, in the same transaction, so a
 * reader never sees a partial result and two racing writers (a lost lease) never mix their bytes.
 *
 * Every SQLite failure (disk full, database locked past the busy timeout, unopenable file, I/O error)
 * is rethrown as a JobStoreError (`store-unavailable`).
 */

import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import type { Readable } from 'node:stream';
import { FinalWaiters } from './final-waiters.ts';
import {
  abandonBody,
  type CompleteOutcome,
  isFinal,
  JOB_STATUSES,
  type JobCounts,
  type JobError,
  type JobMode,
  type JobRecord,
  type JobStatus,
  type JobStore,
  JobStoreError,
  type JobStoreOptions,
  letGoOnFailure,
  type NewJob,
  type RecoverOptions,
  type RecoveryReport,
  type ResultHead,
  type ResultMeta,
  resultTooLarge,
  type StoredRequest,
  type StreamedResult,
} from './job-store.ts';

/** Largest row of a stored result body. */
export const CHUNK_BYTES = 256 * 1024;

export interface SqliteJobStoreOptions extends JobStoreOptions {
  /** `normal` (default: survives kill -9) or `full` (also survives power loss; fsync per commit). */
  synchronous?: 'normal' | 'full';
  /**
   * How long a write waits for another process's lock before failing with `store-unavailable`. The
   * wait blocks the event loop (node:sqlite is synchronous), so keep it short. Default 1 s.
   */
  busyTimeoutMs?: number;
  /** Test hook: statements run right after opening (e.g. `PRAGMA max_page_count` to simulate a full disk). */
  initSql?: string;
  /**
   * Other processes using the same file (the workers of one instance), for `onCancelled` and long
   * polls: every cancellation and every transition to a final state committed here is published to
   * them, and the bus that carries messages between the
   * processes hands each one it receives to the receiving store's {@link SqliteJobStore.peerMessage}.
   * Without it, a job cancelled by another process is found by the heartbeat (a third of the lease),
   * and a long poll of a job another process completes by the `waitPollMs` poll.
   */
  peers?: { publish(msg: PeerMessage): void };
}

/** What one process's store tells the others of the same file (see `SqliteJobStoreOptions.peers`). */
export interface PeerMessage {
  /** `cancelled`: abort the call if it is held here; `final`: wake this process's long polls of it. */
  readonly kind: 'cancelled' | 'final';
  readonly id: string;
}

const SCHEMA_VERSION = 2;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS jobs (
  id           TEXT PRIMARY KEY,
  route        TEXT NOT NULL,
  mode         TEXT NOT NULL,
  status       TEXT NOT NULL,
  created_at   INTEGER NOT NULL,
  updated_at   INTEGER NOT NULL,
  attempts     INTEGER NOT NULL,
  owner_hash   TEXT,
  error        TEXT,
  request      TEXT,
  request_body BLOB,
  result_meta  TEXT,
  result_token TEXT,
  expires_at   INTEGER NOT NULL,
  keep_ms      INTEGER NOT NULL,
  max_result   INTEGER NOT NULL,
  run_at       INTEGER NOT NULL,
  lease_owner  TEXT,
  lease_until  INTEGER,
  idempotent   INTEGER NOT NULL,
  callback_url TEXT,
  request_id   TEXT,
  received_at  INTEGER
) STRICT;
-- claim: the oldest due queued job without sorting (ORDER BY run_at, created_at follows the index).
CREATE INDEX IF NOT EXISTS jobs_status_due ON jobs (status, run_at, created_at);
-- purge: final jobs past expires_at, one range per final status.
CREATE INDEX IF NOT EXISTS jobs_status_expiry ON jobs (status, expires_at);
DROP INDEX IF EXISTS jobs_due;
DROP INDEX IF EXISTS jobs_expiry;
CREATE TABLE IF NOT EXISTS job_chunks (
  job_id TEXT NOT NULL,
  token  TEXT NOT NULL,
  seq    INTEGER NOT NULL,
  data   BLOB NOT NULL,
  PRIMARY KEY (job_id, token, seq)
) STRICT;
`;

const FINAL_SQL = `('completed', 'failed', 'cancelled')`;

type Row = Record<string, SQLInputValue>;

function toRecord(r: Row): JobRecord {
  const request = r.request as string | null;
  const body = r.request_body as Uint8Array | null;
  let storedRequest: StoredRequest | undefined;
  if (request !== null) {
    const parsed = JSON.parse(request) as Omit<StoredRequest, 'body'>;
    storedRequest = body
      ? { ...parsed, body: Buffer.from(body.buffer, body.byteOffset, body.byteLength) }
      : parsed;
  }
  const rec: Record<string, unknown> = {
    id: r.id,
    route: r.route,
    mode: r.mode,
    status: r.status,
    created_at: r.created_at,
    updated_at: r.updated_at,
    attempts: r.attempts,
    expires_at: r.expires_at,
    keep_ms: r.keep_ms,
    max_result: r.max_result,
    run_at: r.run_at,
    idempotent: r.idempotent === 1,
  };
  if (r.owner_hash !== null) rec.owner_hash = r.owner_hash;
  if (r.error !== null) rec.error = JSON.parse(r.error as string);
  if (storedRequest) rec.request = storedRequest;
  if (r.result_meta !== null) rec.result_meta = JSON.parse(r.result_meta as string);
  if (r.lease_owner !== null) rec.lease_owner = r.lease_owner;
  if (r.lease_until !== null) rec.lease_until = r.lease_until;
  if (r.callback_url !== null) rec.callback_url = r.callback_url;
  if (r.request_id != null) rec.request_id = r.request_id;
  if (r.received_at != null) rec.received_at = r.received_at;
  return rec as unknown as JobRecord;
}

function storeError(err: unknown, what: string): JobStoreError {
  if (err instanceof JobStoreError) return err;
  const e = err as { message?: string; errstr?: string };
  return new JobStoreError(`job store: ${what} failed: ${e?.message ?? String(err)}`, { cause: err });
}

function interrupted(job: JobRecord, queued: boolean): JobError {
  return {
    code: 'interrupted',
    status: 502,
    detail: queued
      ? `delivery of a queued request on route '${job.route}' was interrupted and is not safe to repeat ` +
        '(method not idempotent and no Idempotency-Key); the upstream may or may not have processed it'
      : `the gateway stopped while the upstream call of route '${job.route}' was in progress; ` +
        'the upstream may or may not have processed the request',
    proxy_error: 'proxy_internal_error',
  };
}

export class SqliteJobStore implements JobStore {
  readonly instanceId: string;
  readonly location: string;
  readonly #db: DatabaseSync;
  readonly #now: () => number;
  readonly #instanceLeaseMs: number;
  readonly #waitPollMs: number;
  readonly #heartbeat: NodeJS.Timeout | undefined;
  readonly #waiters = new FinalWaiters();
  readonly #finalListeners = new Set<(job: JobRecord) => void>();
  readonly #cancelListeners = new Set<(id: string) => void>();
  readonly #peers: SqliteJobStoreOptions['peers'];
  /** Auto/prefer jobs this instance holds (leased to `instanceId`), renewed by the heartbeat. */
  readonly #held = new Set<string>();
  #closed = false;
  readonly #s: Record<string, StatementSync>;

  /** Opens (creating the directory and schema as needed) the database at `path` (`:memory:` allowed). */
  constructor(path: string, options: SqliteJobStoreOptions = {}) {
    this.location = path;
    const clock = options.now ?? Date.now;
    // INTEGER columns are STRICT: whole milliseconds only.
    this.#now = () => Math.floor(clock());
    this.#instanceLeaseMs = Math.round(options.instanceLeaseMs ?? 10_000);
    this.#waitPollMs = options.waitPollMs ?? 1_000;
    this.#peers = options.peers;
    this.instanceId = `i${randomBytes(9).toString('base64url')}`;
    try {
      if (path !== ':memory:' && !path.startsWith('file:')) mkdirSync(dirname(path), { recursive: true });
      this.#db = new DatabaseSync(path, { timeout: options.busyTimeoutMs ?? 1_000 });
    } catch (err) {
      throw storeError(err, `opening ${path}`);
    }
    try {
      const db = this.#db;
      if (path !== ':memory:') db.exec('PRAGMA journal_mode = WAL');
      db.exec(`PRAGMA synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
      // Keep the WAL from growing without bound after large results were checkpointed.
      db.exec('PRAGMA journal_size_limit = 67108864');
      db.exec('PRAGMA foreign_keys = OFF');
      if (options.initSql) db.exec(options.initSql);
      const version = (db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version;
      if (version > SCHEMA_VERSION) {
        throw new Error(`database schema version ${version} is newer than this gateway (${SCHEMA_VERSION})`);
      }
      db.exec('BEGIN IMMEDIATE');
      try {
        db.exec(SCHEMA);
        // Version 1 files lack the columns that tie a job to the request that created it.
        if (version === 1) {
          db.exec('ALTER TABLE jobs ADD COLUMN request_id TEXT');
          db.exec('ALTER TABLE jobs ADD COLUMN received_at INTEGER');
        }
        db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
        db.exec('COMMIT');
      } catch (err) {
        db.exec('ROLLBACK');
        throw err;
      }
      this.#s = this.#prepare();
    } catch (err) {
      try {
        this.#db.close();
      } catch {}
      throw storeError(err, `opening ${path}`);
    }
    const hb = options.heartbeatMs ?? Math.floor(this.#instanceLeaseMs / 3);
    if (hb > 0) {
      this.#heartbeat = setInterval(() => this.#beat(), hb);
      this.#heartbeat.unref();
    }
  }

  #prepare(): Record<string, StatementSync> {
    const db = this.#db;
    const p = (sql: string) => db.prepare(sql);
    return {
      insert: p(
        `INSERT INTO jobs (id, route, mode, status, created_at, updated_at, attempts, owner_hash, request,
           request_body, expires_at, keep_ms, max_result, run_at, lease_owner, lease_until, idempotent, callback_url,
           request_id, received_at)
         VALUES (:id, :route, :mode, :status, :now, :now, :attempts, :owner_hash, :request, :request_body,
           :now + :keep_ms, :keep_ms, :max_result, :now, :lease_owner, :lease_until, :idempotent, :callback_url,
           :request_id, :received_at)
         RETURNING *`,
      ),
      get: p('SELECT * FROM jobs WHERE id = ?'),
      list: p(
        `SELECT id, route, mode, status, created_at, updated_at, attempts, owner_hash, error, NULL AS request,
           NULL AS request_body, result_meta, expires_at, keep_ms, max_result, run_at, lease_owner, lease_until,
           idempotent, callback_url, request_id, received_at
         FROM jobs WHERE (:status IS NULL OR status = :status) AND (:route IS NULL OR route = :route)
         ORDER BY created_at DESC, id DESC LIMIT :limit`,
      ),
      holder: p('SELECT status, lease_owner, route, max_result FROM jobs WHERE id = ?'),
      markRunning: p(
        `UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = :owner,
           lease_until = :now + :lease, updated_at = :now, expires_at = :now + keep_ms
         WHERE id = :id AND status = 'queued' RETURNING *`,
      ),
      complete: p(
        `UPDATE jobs SET status = 'completed', result_meta = :meta, result_token = :token, error = NULL,
           lease_owner = NULL, lease_until = NULL, updated_at = :now, expires_at = :now + keep_ms
         WHERE id = :id AND status = 'running' AND (:owner IS NULL OR lease_owner = :owner) RETURNING *`,
      ),
      fail: p(
        `UPDATE jobs SET status = 'failed', error = :error, lease_owner = NULL, lease_until = NULL,
           updated_at = :now, expires_at = :now + keep_ms
         WHERE id = :id AND status IN ('queued', 'running') AND (:owner IS NULL OR lease_owner = :owner)
         RETURNING *`,
      ),
      cancel: p(
        `UPDATE jobs SET status = 'cancelled', lease_owner = NULL, lease_until = NULL,
           updated_at = :now, expires_at = :now + keep_ms
         WHERE id = :id AND status IN ('queued', 'running') RETURNING *`,
      ),
      dropStaleChunks: p('DELETE FROM job_chunks WHERE job_id = :id AND token IS NOT :keep'),
      dropToken: p('DELETE FROM job_chunks WHERE job_id = ? AND token = ?'),
      insertChunk: p('INSERT INTO job_chunks (job_id, token, seq, data) VALUES (?, ?, ?, ?)'),
      readChunk: p('SELECT data FROM job_chunks WHERE job_id = ? AND token = ? AND seq = ?'),
      claim: p(
        `UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = :owner,
           lease_until = :now + :lease, updated_at = :now
         WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND mode = 'queue' AND run_at <= :now
                     ORDER BY run_at, created_at LIMIT 1)
           AND status = 'queued'
         RETURNING *`,
      ),
      renew: p(
        `UPDATE jobs SET lease_until = :now + :lease
         WHERE id = :id AND status = 'running' AND lease_owner = :owner`,
      ),
      requeue: p(
        `UPDATE jobs SET status = 'queued', run_at = :now + :delay, lease_owner = NULL, lease_until = NULL,
           updated_at = :now, expires_at = :now + keep_ms
         WHERE id = :id AND status = 'running' AND lease_owner = :owner`,
      ),
      orphans: p(
        `SELECT * FROM jobs WHERE status = 'running'
           AND (lease_until IS NULL OR lease_until < :now
                OR (:exclusive = 1 AND (lease_owner IS NULL OR
                    (lease_owner <> :inst AND substr(lease_owner, 1, length(:inst) + 1) <> :inst || ':'))))`,
      ),
      requeueOrphan: p(
        `UPDATE jobs SET status = 'queued', run_at = :now, lease_owner = NULL, lease_until = NULL,
           updated_at = :now, expires_at = :now + keep_ms
         WHERE id = :id AND status = 'running'`,
      ),
      expired: p(`SELECT id FROM jobs WHERE status IN ${FINAL_SQL} AND expires_at <= ? LIMIT 500`),
      deleteJob: p('DELETE FROM jobs WHERE id = ?'),
      deleteChunks: p('DELETE FROM job_chunks WHERE job_id = ?'),
      counts: p('SELECT route, status, count(*) AS n FROM jobs GROUP BY route, status'),
    };
  }

  // ---- plumbing ----------------------------------------------------------------------------------

  #check(): void {
    if (this.#closed) throw new JobStoreError('job store: closed');
  }

  /** Runs synchronous database work, turning every failure into `store-unavailable`. */
  #run<T>(what: string, fn: () => T): T {
    this.#check();
    try {
      return fn();
    } catch (err) {
      throw storeError(err, what);
    }
  }

  /** A write transaction (BEGIN IMMEDIATE: takes the write lock up front, so it cannot deadlock). */
  #tx<T>(what: string, fn: () => T): T {
    return this.#run(what, () => {
      this.#db.exec('BEGIN IMMEDIATE');
      try {
        const out = fn();
        this.#db.exec('COMMIT');
        return out;
      } catch (err) {
        try {
          this.#db.exec('ROLLBACK');
        } catch {}
        throw err;
      }
    });
  }

  #getSync(id: string): JobRecord | undefined {
    const row = this.#s.get.get(id) as Row | undefined;
    return row ? toRecord(row) : undefined;
  }

  /** Wakes waiters and, for final states, the onFinal listeners. Call after the commit only. */
  #changed(job: JobRecord): void {
    const final = isFinal(job.status);
    if (final) {
      this.#held.delete(job.id);
      this.#waiters.wake(job.id, job);
      try {
        this.#peers?.publish({ kind: 'final', id: job.id });
      } catch {
        // The bus's failure: other processes' long polls end by their poll.
      }
      for (const l of this.#finalListeners) {
        try {
          l(job);
        } catch {
          // A listener's failure is its own (callback.ts logs); it must not undo a committed transition.
        }
      }
    }
  }

  /** Renews the held leases, one by one: a refused renewal means the job is no longer ours. */
  #beat(): void {
    if (this.#closed || this.#held.size === 0) return;
    const now = this.#now();
    const lost: string[] = [];
    try {
      this.#tx('heartbeat', () => {
        for (const id of this.#held) {
          const r = this.#s.renew.run({ id, owner: this.instanceId, now, lease: this.#instanceLeaseMs });
          if (r.changes === 0) lost.push(id);
        }
      });
    } catch {
      // Transient (locked, disk full): the lease is long enough to survive missed beats.
      return;
    }
    // Cancelled by another process (or settled by one): the call held here must stop.
    for (const id of lost) if (this.#held.delete(id)) this.#cancelled(id);
  }

  #cancelled(id: string): void {
    this.#held.delete(id);
    for (const l of this.#cancelListeners) {
      try {
        l(id);
      } catch {
        // The listener's own failure: the cancellation is committed whatever it does.
      }
    }
  }

  /**
   * Entry point of the bus between processes sharing this file (`peers`): a message another process's
   * store published. Reports its cancellation to this store's `onCancelled` listeners.
   */
  peerMessage(msg: PeerMessage): void {
    if (this.#closed || typeof msg?.id !== 'string') return;
    if (msg.kind === 'cancelled') this.#cancelled(msg.id);
    else if (msg.kind === 'final' && this.#waiters.has(msg.id)) {
      const job = this.#getSync(msg.id);
      if (job && isFinal(job.status)) this.#waiters.wake(msg.id, job);
    }
  }

  // ---- JobStore ----------------------------------------------------------------------------------

  async create(job: NewJob): Promise<JobRecord> {
    const now = this.#now();
    const running = job.status === 'running';
    const rec = this.#run('create', () => {
      const row = this.#s.insert.get({
        id: job.id,
        route: job.route,
        mode: job.mode satisfies JobMode,
        status: job.status,
        now,
        attempts: running ? 1 : 0,
        owner_hash: job.owner_hash ?? null,
        request: job.request
          ? JSON.stringify({
              method: job.request.method,
              path: job.request.path,
              headers: job.request.headers,
            })
          : null,
        request_body: job.request?.body ?? null,
        keep_ms: Math.round(job.keep_ms),
        max_result: Math.floor(job.max_result),
        lease_owner: running ? this.instanceId : null,
        lease_until: running ? now + this.#instanceLeaseMs : null,
        idempotent: job.idempotent ? 1 : 0,
        callback_url: job.callback_url ?? null,
        request_id: job.request_id ?? null,
        received_at: job.received_at === undefined ? null : Math.floor(job.received_at),
      }) as Row;
      return toRecord(row);
    });
    if (running) this.#held.add(rec.id);
    return rec;
  }

  async get(id: string): Promise<JobRecord | undefined> {
    return this.#run('get', () => this.#getSync(id));
  }

  async markRunning(id: string): Promise<boolean> {
    const row = this.#run(
      'markRunning',
      () =>
        this.#s.markRunning.get({
          id,
          now: this.#now(),
          owner: this.instanceId,
          lease: this.#instanceLeaseMs,
        }) as Row | undefined,
    );
    if (row !== undefined) this.#held.add(id);
    return row !== undefined;
  }

  complete(
    id: string,
    head: ResultHead,
    body: AsyncIterable<Buffer | Uint8Array> | Readable,
    owner?: string,
  ): Promise<CompleteOutcome> {
    return letGoOnFailure(this.#held, id, this.#complete(id, head, body, owner));
  }

  async #complete(
    id: string,
    head: ResultHead,
    body: AsyncIterable<Buffer | Uint8Array> | Readable,
    owner?: string,
  ): Promise<CompleteOutcome> {
    type Holder = { status: string; lease_owner: string | null; route: string; max_result: number };
    const stillOurs = (): Holder | undefined => {
      const j = this.#run('complete', () => this.#s.holder.get(id) as Holder | undefined);
      if (j?.status !== 'running' || (owner !== undefined && j.lease_owner !== owner)) return undefined;
      return j;
    };
    const job = stillOurs();
    if (!job) {
      abandonBody(body);
      return 'refused';
    }
    const token = randomBytes(12).toString('base64url');
    const discard = () => {
      try {
        this.#s.dropToken.run(id, token);
      } catch {
        // Leftovers are deleted with the job's next transition or its purge.
      }
    };
    let seq = 0;
    let size = 0;
    let fill = 0;
    let pending: Buffer | undefined;
    const flush = (): boolean => {
      if (fill === 0) return true;
      const data = fill === CHUNK_BYTES ? pending! : pending!.subarray(0, fill);
      this.#run('complete', () => this.#s.insertChunk.run(id, token, seq++, data));
      fill = 0;
      // Between rows, notice a cancellation (or a lost lease) and stop storing at once.
      return stillOurs() !== undefined;
    };
    try {
      for await (const piece of body as AsyncIterable<Buffer | Uint8Array>) {
        size += piece.byteLength;
        if (size > job.max_result) {
          discard();
          // Leaving the loop destroys the body (the upstream response is abandoned).
          return (await this.fail(id, resultTooLarge(job), owner)) ? 'too-large' : 'refused';
        }
        let off = 0;
        while (off < piece.byteLength) {
          pending ??= Buffer.allocUnsafe(CHUNK_BYTES);
          const n = Math.min(CHUNK_BYTES - fill, piece.byteLength - off);
          pending.set(piece.subarray(off, off + n), fill);
          fill += n;
          off += n;
          if (fill === CHUNK_BYTES && !flush()) {
            discard();
            return 'refused';
          }
        }
      }
    } catch (err) {
      discard();
      throw err;
    }
    const meta: ResultMeta = {
      status: head.status,
      headers: head.headers.map(([k, v]) => [k, v] as const),
      size,
    };
    let done: JobRecord | undefined;
    try {
      done = this.#tx('complete', () => {
        // The last (or only) partial row goes in with the status change: one commit for a small result.
        if (fill > 0) this.#s.insertChunk.run(id, token, seq++, pending!.subarray(0, fill));
        const row = this.#s.complete.get({
          id,
          meta: JSON.stringify(meta),
          token,
          now: this.#now(),
          owner: owner ?? null,
        }) as Row | undefined;
        if (row) this.#s.dropStaleChunks.run({ id, keep: token });
        return row && toRecord(row);
      });
    } catch (err) {
      discard();
      throw err;
    }
    if (!done) {
      discard();
      return 'refused';
    }
    this.#changed(done);
    return 'completed';
  }

  fail(id: string, error: JobError, owner?: string): Promise<boolean> {
    return letGoOnFailure(this.#held, id, this.#fail(id, error, owner));
  }

  async #fail(id: string, error: JobError, owner?: string): Promise<boolean> {
    const rec = this.#tx('fail', () => {
      const row = this.#s.fail.get({
        id,
        error: JSON.stringify(error),
        now: this.#now(),
        owner: owner ?? null,
      }) as Row | undefined;
      if (row) this.#s.dropStaleChunks.run({ id, keep: null });
      return row && toRecord(row);
    });
    if (rec) this.#changed(rec);
    return rec !== undefined;
  }

  async cancel(id: string): Promise<boolean> {
    const rec = this.#tx('cancel', () => {
      const row = this.#s.cancel.get({ id, now: this.#now() }) as Row | undefined;
      if (row) this.#s.dropStaleChunks.run({ id, keep: null });
      return row && toRecord(row);
    });
    if (rec) {
      this.#changed(rec);
      this.#cancelled(id);
      try {
        this.#peers?.publish({ kind: 'cancelled', id });
      } catch {
        // The bus's failure: the other processes' heartbeats still find it.
      }
    }
    return rec !== undefined;
  }

  async readResult(id: string): Promise<StreamedResult | undefined> {
    const row = this.#run('readResult', () => this.#s.get.get(id) as Row | undefined);
    if (row?.status !== 'completed') return undefined;
    const meta = JSON.parse(row.result_meta as string) as ResultMeta;
    const token = row.result_token as string;
    const read = (seq: number) =>
      this.#run(
        'readResult',
        () => this.#s.readChunk.get(id, token, seq) as { data: Uint8Array } | undefined,
      );
    async function* chunks(): AsyncGenerator<Buffer> {
      let left = meta.size;
      for (let seq = 0; left > 0; seq++) {
        const r = read(seq);
        if (!r) throw new JobStoreError(`job store: the result of job ${id} disappeared while being read`);
        left -= r.data.byteLength;
        yield Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength);
      }
    }
    return { meta, body: chunks() };
  }

  async claim(workerId: string, leaseMs: number): Promise<JobRecord | undefined> {
    const row = this.#run(
      'claim',
      () =>
        this.#s.claim.get({ owner: workerId, now: this.#now(), lease: Math.round(leaseMs) }) as
          | Row
          | undefined,
    );
    return row && toRecord(row);
  }

  async renew(id: string, workerId: string, leaseMs: number): Promise<boolean> {
    const r = this.#run('renew', () =>
      this.#s.renew.run({ id, owner: workerId, now: this.#now(), lease: Math.round(leaseMs) }),
    );
    return r.changes > 0;
  }

  async requeue(id: string, workerId: string, delayMs: number): Promise<boolean> {
    const r = this.#run('requeue', () =>
      this.#s.requeue.run({ id, owner: workerId, now: this.#now(), delay: Math.max(0, Math.round(delayMs)) }),
    );
    return r.changes > 0;
  }

  async recoverInterrupted(options: RecoverOptions = {}): Promise<RecoveryReport> {
    const now = this.#now();
    const ended: JobRecord[] = [];
    let requeued = 0;
    this.#tx('recoverInterrupted', () => {
      const rows = this.#s.orphans.all({
        now,
        exclusive: options.exclusive ? 1 : 0,
        inst: this.instanceId,
      }) as Row[];
      for (const row of rows) {
        const job = toRecord(row);
        if (job.mode === 'queue' && job.idempotent) {
          if (this.#s.requeueOrphan.run({ id: job.id, now }).changes > 0) requeued++;
          continue;
        }
        const failed = this.#s.fail.get({
          id: job.id,
          error: JSON.stringify(interrupted(job, job.mode === 'queue')),
          now,
          owner: null,
        }) as Row | undefined;
        if (failed) {
          this.#s.dropStaleChunks.run({ id: job.id, keep: null });
          ended.push(toRecord(failed));
        }
      }
    });
    for (const job of ended) this.#changed(job);
    return { failed: ended.length, requeued };
  }

  async purgeExpired(now = this.#now()): Promise<number> {
    let total = 0;
    for (;;) {
      const n = this.#tx('purgeExpired', () => {
        const ids = this.#s.expired.all(Math.floor(now)) as { id: string }[];
        for (const { id } of ids) {
          this.#s.deleteChunks.run(id);
          this.#s.deleteJob.run(id);
        }
        return ids.length;
      });
      total += n;
      if (n < 500) return total;
      // Large purges in batches, letting requests through in between.
      await new Promise((r) => setImmediate(r));
    }
  }

  async list(filter: { status?: JobStatus; route?: string; limit: number }): Promise<JobRecord[]> {
    const rows = this.#run('list', () =>
      this.#s.list.all({
        status: filter.status ?? null,
        route: filter.route ?? null,
        limit: Math.max(1, Math.min(1000, Math.floor(filter.limit))),
      }),
    ) as Row[];
    return rows.map(toRecord);
  }

  async counts(): Promise<JobCounts> {
    const out: JobCounts = {};
    const rows = this.#run(
      'counts',
      () => this.#s.counts.all() as { route: string; status: JobStatus; n: number }[],
    );
    for (const r of rows) {
      const perRoute = (out[r.route] ??= Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as Record<
        JobStatus,
        number
      >);
      perRoute[r.status] = r.n;
    }
    return out;
  }

  async waitFinal(id: string, timeoutMs: number, signal?: AbortSignal): Promise<JobRecord | undefined> {
    const first = await this.get(id);
    if (!first || isFinal(first.status) || timeoutMs <= 0) return first;
    if (signal?.aborted) return undefined;
    // Changes made by this process wake the waiter at once; the poll catches other processes.
    return this.#waiters.park(id, first, {
      timeoutMs,
      signal,
      poll: { everyMs: this.#waitPollMs, check: () => this.#getSync(id) },
      atDeadline: (last) => (this.#closed ? last : this.#getSync(id)),
    });
  }

  onFinal(listener: (job: JobRecord) => void): () => void {
    this.#finalListeners.add(listener);
    return () => this.#finalListeners.delete(listener);
  }

  onCancelled(listener: (id: string) => void): () => void {
    this.#cancelListeners.add(listener);
    return () => this.#cancelListeners.delete(listener);
  }

  /** Waiters currently parked in `waitFinal` (diagnostics and tests). */
  get waiters(): number {
    return this.#waiters.size;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#waiters.closeAll();
    this.#closed = true;
    this.#finalListeners.clear();
    this.#cancelListeners.clear();
    this.#held.clear();
    try {
      this.#db.close();
    } catch {}
  }
}
