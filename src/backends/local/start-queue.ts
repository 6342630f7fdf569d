/**
 * Bounds how many app processes start at once. Starting is CPU-bound (a node process boots,
 * loads its code, binds), so on a small machine hundreds of starts at once only make each one
 * slow, and an app's start timeout would run out while it waits for the CPU. A start takes a
 * slot before its process is spawned (or, for a prepared process, before it is told to start)
 * and gives it back once the process is ready or has failed; the start timeout counts from
 * the slot, not from the queue.
 */
import { availableParallelism } from "node:os";

/** Starts per CPU core at once: a start also waits on I/O and the readiness probe. */
export const STARTS_PER_CORE = 3;

/** The variable that overrides the bound (a positive integer). */
export const START_LIMIT_ENV = "CARAVAN_START_CONCURRENCY";

/** The default bound: 3 per core, at least 4; `CARAVAN_START_CONCURRENCY` overrides it. */
export function defaultStartLimit(
  env: NodeJS.ProcessEnv = process.env,
  cores = availableParallelism(),
): number {
  const set = Number(env[START_LIMIT_ENV]);
  if (Number.isInteger(set) && set >= 1) return set;
  return Math.max(4, STARTS_PER_CORE * cores);
}

/** Counters of a start queue (the daemon's health answer shows them). */
export interface StartStats {
  /** Most starts at once. */
  limit: number;
  /** Starting now. */
  active: number;
  /** Waiting for a slot now. */
  waiting: number;
  /** Most ever starting at once. */
  peak: number;
  /** Slots ever handed out. */
  total: number;
}

export class StartQueue {
  private active = 0;
  private peak = 0;
  private total = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(readonly limit = defaultStartLimit()) {
    if (!(Number.isInteger(limit) && limit >= 1))
      throw new Error(`a start bound must be a positive integer, got ${limit}`);
  }

  /**
   * Resolves with a release function once a slot is free (first come, first served). The
   * release is idempotent: calling it twice gives back one slot.
   */
  acquire(): Promise<() => void> {
    return new Promise((resolve) => {
      const grant = () => {
        this.active++;
        this.total++;
        this.peak = Math.max(this.peak, this.active);
        let released = false;
        resolve(() => {
          if (released) return;
          released = true;
          this.active--;
          this.waiters.shift()?.();
        });
      };
      if (this.active < this.limit) grant();
      else this.waiters.push(grant);
    });
  }

  /** Runs `fn` in a slot, released when the promise it returns settles. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire();
    try {
      return await fn();
    } finally {
      release();
    }
  }

  stats(): StartStats {
    return {
      limit: this.limit,
      active: this.active,
      waiting: this.waiters.length,
      peak: this.peak,
      total: this.total,
    };
  }
}
