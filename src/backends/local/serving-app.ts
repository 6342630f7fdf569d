/**
 * The control plane's record of one app while its endpoints are open: the revision it serves,
 * its ready replicas, how many it should have, and the history its restarts and scaling go
 * by. A deploy replaces the record and a stop or delete drops it, so no crash count, scaling
 * time or backoff outlives what it was counted for (a fresh revision never inherits its
 * predecessor's restart backoff).
 */
import type { AppProcess } from "./supervisor.ts";
import type { EnvironmentRow } from "./store.ts";
import { BACKOFF_FIRST_MS, BACKOFF_MAX_MS, STABLE_AFTER_MS } from "./crash-backoff.ts";

/** After a failed scale-out the next waits 1 s, doubling, at most 30 s. */
const SCALE_BACKOFF_FIRST_MS = 1_000;

/** One process serving an app, behind the gateway. */
export interface Replica {
  id: string;
  proc: AppProcess;
  /** The port it listens on (the gateway forwards there). */
  port: number;
  since: number;
  /**
   * Where it also listens beyond loopback (see `status`), once looked up: its listener is
   * bound before it is ready and stays as it is, so once per replica is enough.
   */
  exposed?: string[];
}

export class ServingApp {
  /** Its ready replicas, in the order they joined. */
  readonly replicas: Replica[] = [];
  /** How many replicas it should have (the autoscaler moves it within [min, max]). */
  target = 0;
  /** When the number of its replicas was last decided (ms epoch; 0: never). */
  lastScaleAt = 0;
  /** After a failed scale-out, no new one before `until` (ms epoch); `delayMs` was its wait. */
  scaleBackoff?: { until: number; delayMs: number };
  /** The crash restart waiting for its time, if any. */
  restartTimer?: NodeJS.Timeout;
  /** Crash restarts in a row: the next waits 250 ms × 2^crashes. */
  private crashes = 0;

  /** `key` is the environment's (`keyOf`); `row` the revision it serves. */
  constructor(
    readonly key: string,
    readonly row: EnvironmentRow,
  ) {}

  /**
   * The record of `row` once its deploy succeeded, in place of `before`. Only a restart of the
   * same revision (`restart`, `--force`) keeps the crash count: a crash loop it was in goes on.
   */
  static deployed(key: string, row: EnvironmentRow, before?: ServingApp): ServingApp {
    const app = new ServingApp(key, row);
    if (before?.row.revision === row.revision) app.crashes = before.crashes;
    return app;
  }

  /** Takes a replica out of the set; false when it was not in it (retired or replaced). */
  remove(replica: Replica): boolean {
    const i = this.replicas.indexOf(replica);
    if (i < 0) return false;
    this.replicas.splice(i, 1);
    return true;
  }

  /** A replica exited on its own: one that ran long enough ends the crash loop before it. */
  crashed(replica: Replica, now = Date.now()): void {
    if (now - replica.since > STABLE_AFTER_MS) this.crashes = 0;
  }

  /** How long the next crash restart waits, counting it. */
  nextRestartDelay(): number {
    return Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.crashes++);
  }

  cancelRestart(): void {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
  }

  /** A scale-out failed: none is tried again for a while (returned, doubling each time). */
  scaleOutFailed(now = Date.now()): number {
    const before = this.scaleBackoff?.delayMs;
    const delayMs = before ? Math.min(BACKOFF_MAX_MS, before * 2) : SCALE_BACKOFF_FIRST_MS;
    this.scaleBackoff = { until: now + delayMs, delayMs };
    return delayMs;
  }
}
