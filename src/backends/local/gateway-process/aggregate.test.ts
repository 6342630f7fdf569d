import { describe, expect, it } from "vitest";
import { Traffic } from "../../gateway/index.ts";
import { merge, retire, snapshot, type Retired, type WorkerApp } from "./aggregate.ts";

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

  it("keeps the counters of a worker that exited, not its gauges: no total goes backwards", () => {
    const one = new Traffic();
    const two = new Traffic();
    for (let i = 0; i < 30; i++) one.record(200, 5);
    for (let i = 0; i < 10; i++) two.record(i % 2 ? 503 : 404, 50);
    const worker = (t: Traffic, inFlight: number): Record<string, WorkerApp> => ({
      app: { load: load(inFlight, 100), traffic: snapshot(t), inFlight, waiting: 1, replicas: 2 },
    });
    const retired: Retired = new Map();
    const before = merge([worker(one, 2), worker(two, 3)], ["app"], retired);
    // `two` exits; its replacement has counted nothing yet.
    retire(retired, worker(two, 3));
    const live = [worker(one, 2), worker(new Traffic(), 0)];
    const after = merge(live, ["app"], retired);
    expect(after.apps.app!.stats).toEqual(before.apps.app!.stats);
    for (const line of [
      'caravan_gateway_requests_total{app="app",code="2xx"} 30',
      'caravan_gateway_requests_total{app="app",code="4xx"} 5',
      'caravan_gateway_requests_total{app="app",code="5xx"} 5',
    ])
      expect(after.metrics).toContain(line);
    const count = (text: string) =>
      /caravan_gateway_request_duration_seconds_count\{[^}]*\} (\d+)/.exec(text)?.[1];
    expect(count(after.metrics)).toBe("40");
    expect(count(after.metrics)).toBe(count(before.metrics));
    // Gauges are the live workers' only.
    expect(after.metrics).toContain('caravan_gateway_in_flight{app="app"} 2');
    expect(after.apps.app!.load).toEqual(merge(live, ["app"]).apps.app!.load);
  });
});
