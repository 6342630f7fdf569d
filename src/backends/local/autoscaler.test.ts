import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { AppLoad } from "../gateway/index.ts";
import { Autoscaler } from "./autoscaler.ts";
import { ServingApp, type Replica } from "./serving-app.ts";
import type { EnvironmentRow } from "./store.ts";
import type { AppProcess } from "./supervisor.ts";

const KEY = "p/d/web";

function servingApp(replicas: number): ServingApp {
  const row = {
    name: "web",
    revision: "r1",
    request: {
      spec: { kind: "app", scaling: { replicas: [1, 4], concurrency: 10, scaledownAfter: 1 } },
    },
  } as unknown as EnvironmentRow;
  const app = new ServingApp(KEY, row);
  for (let i = 0; i < replicas; i++)
    app.replicas.push({ id: `r${i}`, proc: {} as AppProcess, port: 1000 + i, since: 0 });
  app.target = replicas;
  return app;
}

/** An autoscaler over one app whose load is `load`; what it does is recorded. */
function scaler(app: ServingApp, load: AppLoad, addReplicas: (n: number) => Promise<void>) {
  const events: string[] = [];
  const retired: Replica[] = [];
  const autoscaler = new Autoscaler({
    serving: new Map([[KEY, app]]),
    accepting: () => true,
    busy: () => false,
    load: () => load,
    serialized: (_key, fn) => fn(),
    addReplicas: (_app, n) => addReplicas(n),
    retire: (_app, replica) => void retired.push(replica),
    event: (_app, type, message) => void events.push(`${type}: ${message}`),
  });
  return { autoscaler, events, retired };
}

const load = (inFlight: number, replicas: { id: string; inFlight: number }[] = []): AppLoad => ({
  replicas: replicas.map((r) => ({ ...r, port: 0 })),
  inFlight,
  waiting: 0,
  draining: 0,
  lastActiveAt: 0,
});

describe("Autoscaler", () => {
  beforeEach(() => vi.useFakeTimers({ now: 100_000 }));
  afterEach(() => vi.useRealTimers());

  it("scales out to what the load needs; after a failure it waits its backoff, doubling", async () => {
    const app = servingApp(1);
    const asked: number[] = [];
    const { autoscaler, events } = scaler(app, load(25), async (n) => {
      asked.push(n);
      throw new Error("port in use");
    });
    await vi.advanceTimersByTimeAsync(200);
    expect(asked).toEqual([2]);
    expect(events).toEqual([
      "scale-out: 1 -> 3 replicas",
      "scale-out-failed: port in use; next try in 1000 ms",
    ]);
    expect(app.target).toBe(1);
    await vi.advanceTimersByTimeAsync(800); // within the backoff: no new try
    expect(asked).toEqual([2]);
    await vi.advanceTimersByTimeAsync(400);
    expect(asked).toEqual([2, 2]);
    expect(events.at(-1)).toBe("scale-out-failed: port in use; next try in 2000 ms");
    autoscaler.close();
  });

  it("scales in one replica at a time, the least busy first, once the count was stable", async () => {
    const app = servingApp(3);
    const { autoscaler, events, retired } = scaler(
      app,
      load(1, [
        { id: "r0", inFlight: 1 },
        { id: "r1", inFlight: 0 },
        { id: "r2", inFlight: 0 },
      ]),
      async () => {},
    );
    app.lastScaleAt = Date.now();
    await vi.advanceTimersByTimeAsync(800); // scaledownAfter is 1 s
    expect(retired).toEqual([]);
    await vi.advanceTimersByTimeAsync(400);
    expect(retired.map((r) => r.id)).toEqual(["r1"]);
    expect(events).toEqual(["scale-in: 3 -> 2 replicas"]);
    expect(app.target).toBe(2);
    autoscaler.close();
  });

  it("leaves alone an app whose crash restart is pending", async () => {
    const app = servingApp(1);
    app.restartTimer = setTimeout(() => {}, 60_000);
    const asked: number[] = [];
    const { autoscaler } = scaler(app, load(25), async (n) => void asked.push(n));
    await vi.advanceTimersByTimeAsync(1000);
    expect(asked).toEqual([]);
    app.cancelRestart();
    await vi.advanceTimersByTimeAsync(200);
    expect(asked).toEqual([2]);
    autoscaler.close();
  });
});
