/**
 * The autoscaler: every few hundred ms it compares each serving app's replicas with what its
 * load needs (the decision is `desiredReplicas`, scaler.ts) and adds or retires one step.
 * It acts on the control plane only through its hooks.
 */
import { headline } from "../../errors.ts";
import type { AppLoad } from "../gateway/index.ts";
import { desiredReplicas } from "./scaler.ts";
import type { Replica, ServingApp } from "./serving-app.ts";

/** How often the autoscaler looks at the gateway's load. */
const SCALE_EVERY_MS = 200;
/** In-flight requests per replica before another is added, when `scaling.concurrency` is unset. */
const DEFAULT_CONCURRENCY = 50;

export interface AutoscalerHooks {
  /** The apps whose endpoints are open, by environment key. */
  serving: ReadonlyMap<string, ServingApp>;
  /** False once the control plane shuts down: nothing is scaled from then on. */
  accepting(): boolean;
  /** An operation on the app is in flight or queued: it is left alone this time. */
  busy(key: string): boolean;
  /** The gateway's load on the app now. */
  load(key: string): AppLoad;
  /** Runs `fn` after every earlier operation on the app. */
  serialized(key: string, fn: () => Promise<void>): Promise<void>;
  /** Starts `n` more replicas of the app and adds them; throws when one fails. */
  addReplicas(app: ServingApp, n: number): Promise<void>;
  /** Takes a replica out: it finishes its requests, then stops. */
  retire(app: ServingApp, replica: Replica): void;
  /** Records an event of the app. */
  event(app: ServingApp, type: string, message: string): void;
}

export class Autoscaler {
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly hooks: AutoscalerHooks) {
    this.timer = setInterval(() => this.tick(), SCALE_EVERY_MS);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
  }

  /** Apps with an operation in flight or a crash restart pending are left alone. */
  private tick(): void {
    const hooks = this.hooks;
    if (!hooks.accepting()) return;
    const now = Date.now();
    for (const [key, app] of hooks.serving) {
      const spec = app.row.request.spec;
      if (spec.kind !== "app" || hooks.busy(key) || app.restartTimer) continue;
      const { scaling } = spec;
      const [min, max] = scaling.replicas;
      const list = [...app.replicas];
      // With nothing running, a waiting request has already woken the app.
      if (list.length === 0) continue;
      const load = hooks.load(key);
      const current = list.length;
      const desired = desiredReplicas({
        min,
        max,
        concurrency: scaling.concurrency ?? DEFAULT_CONCURRENCY,
        scaledownAfterMs: scaling.scaledownAfter * 1000,
        current,
        inFlight: load.inFlight,
        waiting: load.waiting,
        lastActiveAt: load.lastActiveAt,
        lastScaleAt: app.lastScaleAt,
        now,
      });
      if (desired === current) continue;
      // After a failed scale-out, the next waits out its backoff (scaling in does not).
      if (desired > current && (app.scaleBackoff?.until ?? 0) > now) continue;
      app.lastScaleAt = now;
      app.target = desired;
      if (desired > current) {
        hooks.event(app, "scale-out", `${current} -> ${desired} replicas`);
        void hooks.serialized(key, () => this.scaleOut(key, app, desired));
      } else {
        hooks.event(app, "scale-in", `${current} -> ${desired} replicas`);
        // The least busy replica goes; it finishes what it has first.
        const victim = list.sort(
          (a, b) =>
            (load.replicas.find((r) => r.id === a.id)?.inFlight ?? 0) -
            (load.replicas.find((r) => r.id === b.id)?.inFlight ?? 0),
        )[0]!;
        hooks.retire(app, victim);
      }
    }
  }

  private async scaleOut(key: string, app: ServingApp, desired: number): Promise<void> {
    const have = app.replicas.length;
    // Replaced or stopped meanwhile, or already there: nothing to do.
    if (this.hooks.serving.get(key) !== app || have >= desired) return;
    try {
      await this.hooks.addReplicas(app, desired - have);
      app.scaleBackoff = undefined;
    } catch (e) {
      // Back off (1 s doubling to 30 s) and aim at what actually runs.
      const delayMs = app.scaleOutFailed();
      app.target = app.replicas.length;
      this.hooks.event(
        app,
        "scale-out-failed",
        `${headline((e as Error).message)}; next try in ${delayMs} ms`,
      );
    }
  }
}
