import { describe, expect, it } from "vitest";
import type { AppProcess } from "./supervisor.ts";
import type { EnvironmentRow } from "./store.ts";
import { ServingApp, type Replica } from "./serving-app.ts";

const row = (revision: string) => ({ revision }) as EnvironmentRow;
const replica = (since: number): Replica => ({
  id: "pid-1",
  proc: {} as AppProcess,
  port: 1,
  since,
});

/** Crashes `app` `n` times in a row (each replica up for a moment) and returns the waits. */
function crashLoop(app: ServingApp, n: number): number[] {
  return Array.from({ length: n }, () => {
    app.crashed(replica(Date.now()));
    return app.nextRestartDelay();
  });
}

describe("ServingApp", () => {
  it("backs off crash restarts from 250 ms, doubling, up to 30 s", () => {
    const app = new ServingApp("p/d/a", row("r1"));
    expect(crashLoop(app, 10)).toEqual([
      250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000,
    ]);
  });

  it("starts a new revision after a crash loop without the old backoff", () => {
    const old = new ServingApp("p/d/a", row("r1"));
    crashLoop(old, 8);
    old.scaleOutFailed();
    old.lastScaleAt = 123;
    const fresh = ServingApp.deployed("p/d/a", row("r2"), old);
    expect(crashLoop(fresh, 2)).toEqual([250, 500]);
    expect(fresh.scaleBackoff).toBeUndefined();
    expect(fresh.lastScaleAt).toBe(0);
  });

  it("keeps the crash loop of a revision restarted as it is (restart, --force)", () => {
    const old = new ServingApp("p/d/a", row("r1"));
    crashLoop(old, 3);
    const again = ServingApp.deployed("p/d/a", row("r1"), old);
    expect(crashLoop(again, 1)).toEqual([2000]);
  });

  it("ends a crash loop when a replica stayed up 30 s", () => {
    const app = new ServingApp("p/d/a", row("r1"));
    crashLoop(app, 4);
    app.crashed(replica(Date.now() - 31_000));
    expect(app.nextRestartDelay()).toBe(250);
  });

  it("backs off scale-outs from 1 s, doubling, up to 30 s", () => {
    const app = new ServingApp("p/d/a", row("r1"));
    const delays = Array.from({ length: 7 }, () => app.scaleOutFailed(0));
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    expect(app.scaleBackoff).toEqual({ until: 30000, delayMs: 30000 });
  });
});
