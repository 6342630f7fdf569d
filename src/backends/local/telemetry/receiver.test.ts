import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import protobuf from "protobufjs";
import { afterEach, describe, expect, it, vi } from "vitest";
import { TelemetryReceiver } from "./receiver.ts";
import { TelemetryStore, TELEMETRY_RETENTION } from "./store.ts";

// The OTLP messages (opentelemetry-proto v1, trimmed to the fields used here), encoded by an
// independent implementation: protobufjs.
const OTLP_PROTO = `
syntax = "proto3";
message AnyValue { oneof value { string string_value = 1; bool bool_value = 2; int64 int_value = 3; double double_value = 4; bytes bytes_value = 7; } }
message KeyValue { string key = 1; AnyValue value = 2; }
message Resource { repeated KeyValue attributes = 1; }
message InstrumentationScope { string name = 1; string version = 2; }
message Status { string message = 2; int32 code = 3; }
message Span {
  bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4;
  string name = 5; int32 kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;
  repeated KeyValue attributes = 9; uint32 dropped_attributes_count = 10; Status status = 15; fixed32 flags = 16;
}
message ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; string schema_url = 3; }
message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
message LogRecord { fixed64 time_unix_nano = 1; int32 severity_number = 2; string severity_text = 3; AnyValue body = 5; repeated KeyValue attributes = 6; bytes trace_id = 9; bytes span_id = 10; }
message ScopeLogs { InstrumentationScope scope = 1; repeated LogRecord log_records = 2; }
message ResourceLogs { Resource resource = 1; repeated ScopeLogs scope_logs = 2; }
message ExportLogsServiceRequest { repeated ResourceLogs resource_logs = 1; }
message NumberDataPoint { fixed64 start_time_unix_nano = 2; fixed64 time_unix_nano = 3; double as_double = 4; sfixed64 as_int = 6; repeated KeyValue attributes = 7; }
message HistogramDataPoint { fixed64 time_unix_nano = 3; fixed64 count = 4; double sum = 5; repeated fixed64 bucket_counts = 6; repeated double explicit_bounds = 7; repeated KeyValue attributes = 9; }
message Gauge { repeated NumberDataPoint data_points = 1; }
message Sum { repeated NumberDataPoint data_points = 1; int32 aggregation_temporality = 2; bool is_monotonic = 3; }
message Histogram { repeated HistogramDataPoint data_points = 1; int32 aggregation_temporality = 2; }
message Metric { string name = 1; string description = 2; string unit = 3; Gauge gauge = 5; Sum sum = 7; Histogram histogram = 9; }
message ScopeMetrics { InstrumentationScope scope = 1; repeated Metric metrics = 2; }
message ResourceMetrics { Resource resource = 1; repeated ScopeMetrics scope_metrics = 2; }
message ExportMetricsServiceRequest { repeated ResourceMetrics resource_metrics = 1; }
`;
const root = protobuf.parse(OTLP_PROTO, { keepCase: false }).root;
const encode = (type: string, value: object) => {
  const T = root.lookupType(type);
  return Buffer.from(T.encode(T.fromObject(value)).finish());
};

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const hex = (h: string) => Buffer.from(h, "hex");
const nowNs = () => BigInt(Date.now()) * 1_000_000n;
const resource = (service: string) => ({
  attributes: [
    { key: "service.name", value: { stringValue: service } },
    { key: "caravan.project", value: { stringValue: "shop" } },
    { key: "caravan.domain", value: { stringValue: "dev" } },
  ],
});

let dirs: string[] = [];
afterEach(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});
function storeIn(retention = TELEMETRY_RETENTION) {
  const dir = mkdtempSync(join(tmpdir(), "caravan-telemetry-"));
  dirs.push(dir);
  return new TelemetryStore(join(dir, "telemetry.db"), retention);
}

describe("OTLP receiver", () => {
  it("takes spans as protobuf and as JSON, and joins them into one trace", () => {
    const receiver = new TelemetryReceiver(storeIn());
    const start = nowNs();
    const pb = encode("ExportTraceServiceRequest", {
      resourceSpans: [
        {
          resource: resource("app2"),
          scopeSpans: [
            {
              spans: [
                {
                  traceId: hex(TRACE),
                  spanId: hex("00f067aa0ba902b7"),
                  name: "GET /greeting/World",
                  kind: 2,
                  startTimeUnixNano: start.toString(),
                  endTimeUnixNano: (start + 5_000_000n).toString(),
                  attributes: [
                    { key: "http.response.status_code", value: { intValue: 200 } },
                    { key: "big", value: { intValue: "9007199254740993" } },
                  ],
                  status: { code: 1 },
                },
              ],
            },
          ],
        },
      ],
    });
    expect(receiver.accept("traces", pb)).toEqual({});
    const json = {
      resourceSpans: [
        {
          resource: resource("app1"),
          scopeSpans: [
            {
              spans: [
                {
                  traceId: TRACE,
                  spanId: "b7ad6b7169203331",
                  parentSpanId: "00f067aa0ba902b7",
                  name: "GET /greeting/:name",
                  kind: 2,
                  startTimeUnixNano: String(start + 1_000_000n),
                  endTimeUnixNano: String(start + 3_000_000n),
                  status: { code: 2, message: "boom" },
                },
              ],
            },
          ],
        },
      ],
    };
    receiver.accept("traces", json);

    const [summary] = receiver.listTraces();
    expect(summary).toMatchObject({
      traceId: TRACE,
      root: "GET /greeting/World",
      apps: ["app2", "app1"],
      spans: 2,
      durationMs: 5,
      status: "error",
    });
    const spans = receiver.trace(TRACE);
    expect(spans.map((s) => [s.app, s.parentSpanId, s.kind, s.status])).toEqual([
      ["app2", null, "server", "ok"],
      ["app1", "00f067aa0ba902b7", "server", "error"],
    ]);
    expect(spans[0]!.attributes).toEqual({
      "http.response.status_code": 200,
      big: "9007199254740993",
    });
    expect(receiver.listTraces({ app: "app1" })).toHaveLength(1);
    expect(receiver.listTraces({ app: "nope" })).toHaveLength(0);
    expect(receiver.stats().spans).toEqual({ received: 2, stored: 2, dropped: 0 });
  });

  it("takes log records and metric points as protobuf", () => {
    const store = storeIn();
    const receiver = new TelemetryReceiver(store);
    const t = nowNs().toString();
    receiver.accept(
      "logs",
      encode("ExportLogsServiceRequest", {
        resourceLogs: [
          {
            resource: resource("app1"),
            scopeLogs: [
              {
                logRecords: [
                  {
                    timeUnixNano: t,
                    severityNumber: 9,
                    severityText: "INFO",
                    body: { stringValue: "hello" },
                    traceId: hex(TRACE),
                    spanId: hex("00f067aa0ba902b7"),
                  },
                ],
              },
            ],
          },
        ],
      }),
    );
    receiver.accept(
      "metrics",
      encode("ExportMetricsServiceRequest", {
        resourceMetrics: [
          {
            resource: resource("app1"),
            scopeMetrics: [
              {
                metrics: [
                  {
                    name: "queue.depth",
                    unit: "1",
                    gauge: { dataPoints: [{ timeUnixNano: t, asInt: 7 }] },
                  },
                  {
                    name: "http.server.duration",
                    unit: "ms",
                    histogram: {
                      dataPoints: [
                        {
                          timeUnixNano: t,
                          count: 3,
                          sum: 4.5,
                          bucketCounts: [1, 2],
                          explicitBounds: [1],
                        },
                      ],
                    },
                  },
                ],
              },
            ],
          },
        ],
      }),
    );
    expect(receiver.logsOfTrace(TRACE)).toEqual([
      {
        timeMs: Number(BigInt(t) / 1000n) / 1000,
        app: "app1",
        spanId: "00f067aa0ba902b7",
        severity: "INFO",
        body: "hello",
        attributes: {},
      },
    ]);
    expect(store.counts()).toEqual({ spans: 0, logRecords: 1, metricPoints: 2 });
    expect(receiver.stats().metrics).toEqual({ received: 2, stored: 2, dropped: 0 });
  });

  it("refuses bytes that are not an export request", () => {
    const receiver = new TelemetryReceiver(storeIn());
    expect(() => receiver.accept("traces", Buffer.from([0x0a, 0xff]))).toThrow(
      /not an OTLP traces/,
    );
  });

  it("the sender's token scope wins over the scope its resource claims", () => {
    const receiver = new TelemetryReceiver(storeIn());
    receiver.accept("traces", spansRequest("app1", 1), { project: "other", domain: "prod" });
    expect(receiver.listTraces({ project: "shop" })).toHaveLength(0);
    expect(receiver.listTraces({ project: "other", domain: "prod" })).toHaveLength(1);
  });

  it("keeps the newest spans up to the count, and none older than the age", () => {
    const store = storeIn({ ...TELEMETRY_RETENTION, maxSpans: 5, maxAgeHours: 1 });
    const receiver = new TelemetryReceiver(store);
    for (let i = 0; i < 12; i++) receiver.accept("traces", spansRequest("app1", 1, i));
    receiver.flush();
    expect(store.counts().spans).toBe(5);
    // The newest five are the ones kept.
    expect(receiver.listTraces().map((t) => t.root)).toEqual([
      "span-11",
      "span-10",
      "span-9",
      "span-8",
      "span-7",
    ]);
    // Two hours old: gone with the next batch.
    receiver.accept("traces", spansRequest("app1", 1, 99, Date.now() - 2 * 3_600_000));
    receiver.flush();
    expect(store.counts().spans).toBe(5);
    expect(receiver.listTraces().map((t) => t.root)).not.toContain("span-99");
    // And what was kept ages out too.
    store.retainAll(Date.now() + 2 * 3_600_000);
    expect(store.counts().spans).toBe(0);
  });

  it("a project/domain's own limits hold for it alone, and apply at once", () => {
    const store = storeIn({ ...TELEMETRY_RETENTION, maxSpans: 100 });
    const receiver = new TelemetryReceiver(store);
    const other = { project: "other", domain: "prod" };
    for (let i = 0; i < 6; i++) {
      receiver.accept("traces", spansRequest("app1", 1, i)); // shop/dev, from its resource
      receiver.accept("traces", spansRequest("app1", 1, i), other);
    }
    receiver.setRetention(other, { maxSpans: 2 });
    expect(receiver.listTraces({ project: "other" }).map((t) => t.root)).toEqual([
      "span-5",
      "span-4",
    ]);
    expect(receiver.listTraces({ project: "shop" })).toHaveLength(6);
    receiver.accept("traces", spansRequest("app1", 1, 6), other);
    receiver.flush();
    expect(receiver.listTraces({ project: "other" })).toHaveLength(2);
    // Back to the home's limits: nothing more goes.
    receiver.setRetention(other, undefined);
    expect(store.retentionOf(other).maxSpans).toBe(100);
  });

  it("writes a big queue in chunks, one per flush interval (its writes never crowd the loop)", async () => {
    const store = storeIn();
    const receiver = new TelemetryReceiver(store, { flushEveryMs: 100 });
    receiver.accept("traces", spansRequest("app1", 1200));
    receiver.flush(500);
    expect(store.counts().spans).toBe(500);
    expect(receiver.stats().queued).toBe(700);
    // Not written as soon as the loop is free: with the next interval.
    await new Promise((resolve) => setImmediate(resolve));
    expect(store.counts().spans).toBe(500);
    await vi.waitFor(() => expect(store.counts().spans).toBe(1200));
    expect(receiver.stats()).toMatchObject({ spans: { stored: 1200 }, queued: 0 });
  });

  it("a query writes one chunk of a long queue first, not the whole queue at once", () => {
    const store = storeIn();
    const receiver = new TelemetryReceiver(store, { flushEveryMs: 60_000 });
    receiver.accept("traces", spansRequest("app1", 1200));
    receiver.listTraces();
    expect(store.counts().spans).toBe(500);
    receiver.close();
  });

  it("drops and counts what does not fit the queue instead of waiting", () => {
    const store = storeIn();
    const receiver = new TelemetryReceiver(store, { maxQueued: 10, flushEveryMs: 60_000 });
    expect(receiver.accept("traces", spansRequest("app1", 8))).toEqual({});
    const answer = receiver.accept("traces", spansRequest("app1", 5));
    expect(answer).toMatchObject({ partialSuccess: { rejectedSpans: 3 } });
    expect(receiver.stats()).toMatchObject({
      spans: { received: 13, stored: 0, dropped: 3 },
      queued: 10,
    });
    receiver.flush();
    expect(store.counts().spans).toBe(10);
    expect(receiver.stats()).toMatchObject({ spans: { stored: 10, dropped: 3 }, queued: 0 });
  });
});

/** An OTLP/JSON request with `n` spans of one trace each. */
function spansRequest(service: string, n: number, seq = 0, atMs = Date.now()) {
  const start = BigInt(atMs + seq) * 1_000_000n;
  return {
    resourceSpans: [
      {
        resource: resource(service),
        scopeSpans: [
          {
            spans: Array.from({ length: n }, (_, i) => ({
              traceId: (seq * 1000 + i + 1).toString(16).padStart(32, "0"),
              spanId: (i + 1).toString(16).padStart(16, "0"),
              name: `span-${seq}`,
              kind: 2,
              startTimeUnixNano: String(start),
              endTimeUnixNano: String(start + 1000n),
            })),
          },
        ],
      },
    ],
  };
}
