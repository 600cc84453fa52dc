/**
 * Long polls parked until a job is final (`JobStore.waitFinal`), for both stores: each request waits
 * on its job's id until the store wakes it (a final transition seen by this process, a poll, a
 * message from another instance), its deadline passes or the client goes away.
 */
import { isFinal, type JobRecord } from './job-store.ts';

interface Waiter {
  /** The job as last seen (what a waiter gets when the store closes). */
  last: JobRecord;
  finish(job: JobRecord | undefined): void;
}

export interface ParkOptions {
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** The job at the deadline (read once more; undefined: gone); `last` is the job as last seen. */
  readonly atDeadline: (last: JobRecord) => JobRecord | undefined | Promise<JobRecord | undefined>;
  /** A poll for changes other processes made (SQLite): every `everyMs`, `check` reads the job. */
  readonly poll?: { readonly everyMs: number; readonly check: () => JobRecord | undefined };
}

export class FinalWaiters {
  readonly #byId = new Map<string, Set<Waiter>>();

  /** Parks until `wake(id, …)`, the deadline, or the signal; `first` is the job as read before. */
  park(id: string, first: JobRecord, o: ParkOptions): Promise<JobRecord | undefined> {
    return new Promise((resolve) => {
      let set = this.#byId.get(id);
      if (!set) this.#byId.set(id, (set = new Set()));
      const mine = set;
      let finished = false;
      const poll =
        o.poll &&
        setInterval(() => {
          let j: JobRecord | undefined;
          try {
            j = o.poll?.check();
          } catch {
            return; // transient: try again on the next tick, or give up at the deadline
          }
          if (!j || isFinal(j.status)) waiter.finish(j);
          else waiter.last = j;
        }, o.poll.everyMs);
      const timer = setTimeout(() => {
        Promise.resolve(waiter.last)
          .then(o.atDeadline)
          .then(
            (j) => waiter.finish(j),
            () => waiter.finish(waiter.last),
          );
      }, o.timeoutMs);
      const onAbort = () => waiter.finish(undefined);
      const waiter: Waiter = {
        last: first,
        finish: (job) => {
          if (finished) return;
          finished = true;
          clearInterval(poll);
          clearTimeout(timer);
          o.signal?.removeEventListener('abort', onAbort);
          mine.delete(waiter);
          if (mine.size === 0 && this.#byId.get(id) === mine) this.#byId.delete(id);
          resolve(job);
        },
      };
      mine.add(waiter);
      o.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Ends every wait on `id` with `job` (final, or undefined when the job is gone). */
  wake(id: string, job: JobRecord | undefined): void {
    const set = this.#byId.get(id);
    if (set) for (const w of [...set]) w.finish(job);
  }

  has(id: string): boolean {
    return this.#byId.has(id);
  }

  /** The ids waited on now. */
  ids(): string[] {
    return [...this.#byId.keys()];
  }

  /** Waiters parked now (diagnostics and tests). */
  get size(): number {
    let n = 0;
    for (const s of this.#byId.values()) n += s.size;
    return n;
  }

  /** The store closes: every waiter gets the job as last seen. */
  closeAll(): void {
    for (const set of [...this.#byId.values()]) for (const w of [...set]) w.finish(w.last);
  }
}
