import { describe, expect, it } from "vitest";
import { Traffic } from "../../gateway/index.ts";
import { merge, snapshot, type WorkerApp } from "./aggregate.ts";

const load = (inFlight: number, lastActiveAt: number) => ({
  replicas: [
    { id: "a", port: 1, inFlight },
    { id: "b", port: 2, inFlight: 1 },
  ],
  inFlight: inFlight + 1,
  waiting: 1,
  draining: 0,
  lastActiveAt,
});

describe("merge", () => {
  it("adds up the workers' traffic into what one gateway would have counted", () => {
    const one = new Traffic();
    const two = new Traffic();
    const all = new Traffic();
    // Different latencies in each worker: the quantiles of the sum are neither worker's.
    for (let i = 1; i <= 90; i++) for (const t of [one, all]) t.record(200, 1 + (i % 5));
    for (let i = 1; i <= 10; i++) for (const t of [two, all]) t.record(i % 2 ? 503 : 200, 400);
    const worker = (t: Traffic, l: WorkerApp["load"]): Record<string, WorkerApp> => ({
      app: { load: l, traffic: snapshot(t), inFlight: l.inFlight, waiting: 1, replicas: 2 },
    });
    const merged = merge([worker(one, load(2, 100)), worker(two, load(3, 200))], ["app", "gone"]);
    expect(Object.keys(merged.apps)).toEqual(["app"]);
    expect(merged.apps.app!.stats).toEqual(all.stats());
    expect(merged.apps.app!.stats.latency.p99).toBeGreaterThan(one.stats().latency.p99);
    expect(merged.apps.app!.load).toEqual({
      replicas: [
        { id: "a", port: 1, inFlight: 5 },
        { id: "b", port: 2, inFlight: 2 },
      ],
      inFlight: 7,
      waiting: 2,
      draining: 0,
      lastActiveAt: 200,
    });
    expect(merged.metrics).toContain('caravan_gateway_requests_total{app="app",code="2xx"} 95');
    expect(merged.metrics).toContain('caravan_gateway_requests_total{app="app",code="5xx"} 5');
    expect(merged.metrics).toContain('caravan_gateway_in_flight{app="app"} 7');
  });
});
