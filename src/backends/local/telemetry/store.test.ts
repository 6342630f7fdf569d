/** The store's read queries the console uses: trace filters, an app's log records and metrics. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { LogRecordRow, MetricPointRow, SpanRecord } from "./otlp.ts";
import { TelemetryStore } from "./store.ts";

let dirs: string[] = [];
afterEach(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});
function store() {
  const dir = mkdtempSync(join(tmpdir(), "caravan-telemetry-"));
  dirs.push(dir);
  return new TelemetryStore(join(dir, "telemetry.db"));
}

const T0 = Date.now() * 1000;
const scope = { project: "shop", domain: "dev" };
const span = (
  traceId: string,
  spanId: string,
  service: string,
  startMs: number,
  durationMs: number,
  status = 0,
): SpanRecord => ({
  traceId,
  spanId,
  parentSpanId: null,
  name: `GET /${spanId}`,
  kind: 2,
  service,
  ...scope,
  startUs: T0 + startMs * 1000,
  endUs: T0 + (startMs + durationMs) * 1000,
  status,
  attributes: {},
});
const log = (service: string, atMs: number, traceId: string | null): LogRecordRow => ({
  timeUs: T0 + atMs * 1000,
  traceId,
  spanId: null,
  severityNumber: 9,
  severityText: "INFO",
  body: `line at ${atMs}`,
  service,
  ...scope,
  attributes: {},
});
const point = (service: string, name: string, atMs: number, value: number): MetricPointRow => ({
  timeUs: T0 + atMs * 1000,
  name,
  unit: "1",
  type: "gauge",
  value,
  count: null,
  service,
  ...scope,
  attributes: {},
});

describe("telemetry store reads", () => {
  it("filters traces by status and minimum duration, summed over all their spans", () => {
    const s = store();
    s.write({
      spans: [
        // a: 5 ms, ok, app1 only. b: 50 ms, app2's span failed, app1 in it. c: 20 ms, app2.
        span("a".repeat(32), "a1", "app1", 0, 5),
        span("b".repeat(32), "b1", "app1", 10, 50),
        span("b".repeat(32), "b2", "app2", 20, 10, 2),
        span("c".repeat(32), "c1", "app2", 30, 20),
      ],
      logs: [],
      metrics: [],
    });
    const ids = (filter: Parameters<TelemetryStore["listTraces"]>[0]) =>
      s.listTraces({ ...scope, ...filter }).map((t) => t.traceId[0]);
    expect(ids({})).toEqual(["c", "b", "a"]);
    expect(ids({ status: "error" })).toEqual(["b"]);
    expect(ids({ status: "ok" })).toEqual(["c", "a"]);
    expect(ids({ minDurationMs: 20 })).toEqual(["c", "b"]);
    // The app's span is ok, its trace is not: the trace's status counts, over all its spans.
    expect(ids({ app: "app1", status: "error" })).toEqual(["b"]);
    expect(s.listTraces({ ...scope, app: "app1", status: "error" })[0]).toMatchObject({
      apps: ["app1", "app2"],
      durationMs: 50,
    });
    expect(ids({ app: "app1", minDurationMs: 6 })).toEqual(["b"]);
    expect(ids({ project: "other" })).toEqual([]);
  });

  it("an app's log records, newest first, with their trace ids", () => {
    const s = store();
    s.write({
      spans: [],
      logs: [log("app1", 1, "a".repeat(32)), log("app1", 2, null), log("app2", 3, null)],
      metrics: [],
    });
    const logs = s.logRecords({ app: "app1", ...scope });
    expect(logs.map((l) => [l.body, l.traceId])).toEqual([
      ["line at 2", null],
      ["line at 1", "a".repeat(32)],
    ]);
    expect(s.logRecords({ app: "app1", ...scope, limit: 1 })).toHaveLength(1);
    expect(s.logRecords({ app: "app1", project: "other", domain: "dev" })).toEqual([]);
  });

  it("an app's metrics by name, each with its newest points oldest first", () => {
    const s = store();
    s.write({
      spans: [],
      logs: [],
      metrics: [
        point("app1", "queue.depth", 1, 3),
        point("app1", "queue.depth", 2, 5),
        point("app1", "queue.depth", 3, 4),
        point("app1", "jobs.done", 1, 9),
        point("app2", "queue.depth", 1, 100),
      ],
    });
    const metrics = s.metrics({ app: "app1", ...scope, limit: 2 });
    expect(metrics.map((m) => m.name)).toEqual(["jobs.done", "queue.depth"]);
    expect(metrics[1]).toMatchObject({ unit: "1", type: "gauge" });
    expect(metrics[1]!.points.map((p) => p.value)).toEqual([5, 4]);
    expect(s.metrics({ app: "app1", ...scope, name: "jobs.done" }).map((m) => m.name)).toEqual([
      "jobs.done",
    ]);
    expect(s.metrics({ app: "app3", ...scope })).toEqual([]);
  });
});
