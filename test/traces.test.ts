import { describe, expect, it } from "vitest";
import type { SpanView, TraceSummary } from "../src/backends/contract.ts";
import { eventually, getText, useSandbox, type Sandbox } from "./helpers.ts";
import { deploy, fixture, json } from "./support.ts";

/** Every trace the control plane keeps (all scopes). */
async function traces(sb: Sandbox, ...args: string[]): Promise<TraceSummary[]> {
  const r = await sb.run(["traces", "--all", "--json", ...args]);
  expect(r.code, r.stderr).toBe(0);
  return json<{ traces: TraceSummary[] }>(r).traces;
}

async function spansOf(sb: Sandbox, traceId: string): Promise<SpanView[]> {
  const r = await sb.run(["traces", "show", traceId, "--json"]);
  expect(r.code, r.stderr).toBe(0);
  return json<{ spans: SpanView[] }>(r).spans;
}

describe("traces across the graph", () => {
  const sb = useSandbox();

  it("a request to app2 is one trace with spans from app2 and app1, parent to child", async () => {
    const deployments = (await deploy(sb, ["examples/app-calling-app.ts"])).by;
    const app2 = deployments["app2-calls-app1"]!;
    expect(await getText(`${app2.endpoint}/greeting/World`)).toEqual({
      status: 200,
      body: "Hello, World!",
    });
    // The apps export in batches: the trace is complete once app1's server span is in.
    const trace = await eventually(async () =>
      (await traces(sb, "--app", "app1-is-called-by-app2")).find(
        (t) => t.root === "GET /greeting/World",
      ),
    );
    expect(trace.apps.sort()).toEqual(["app1-is-called-by-app2", "app2-calls-app1"]);
    expect(trace.status).toBe("ok");
    const spans = await eventually(async () => {
      const s = await spansOf(sb, trace.traceId);
      return s.length >= 3 ? s : undefined;
    });
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const server2 = spans.find((s) => s.app === "app2-calls-app1" && s.kind === "server")!;
    const client = spans.find((s) => s.app === "app2-calls-app1" && s.kind === "client")!;
    const server1 = spans.find((s) => s.app === "app1-is-called-by-app2" && s.kind === "server")!;
    expect(server2.parentSpanId).toBeNull();
    expect(byId.get(client.parentSpanId!)).toBe(server2);
    // Across processes: app1's span is the child of app2's outgoing call.
    expect(byId.get(server1.parentSpanId!)).toBe(client);
    expect(server1.name).toBe("GET /greeting/World");
    expect(server1.attributes["http.response.status_code"]).toBe(200);

    // The waterfall: app1's span indented under app2's call.
    const shown = await sb.run(["traces", "show", trace.traceId]);
    expect(shown.code, shown.stderr).toBe(0);
    const lines = shown.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^GET \/greeting\/World\s+app2-calls-app1/);
    expect(lines[1]).toMatch(
      /^ {2}GET http:\/\/127\.0\.0\.1:\d+\/greeting\/World\s+app2-calls-app1/,
    );
    expect(lines[2]).toMatch(/^ {4}GET \/greeting\/World\s+app1-is-called-by-app2/);
  });

  it("a task run started from an app's request is in that request's trace", async () => {
    const deployments = (await deploy(sb, ["examples/task-env-dependency.ts"])).by;
    const res = await fetch(`${deployments["serving-app"]!.endpoint}/train`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ points: [[1, 2]] }),
    });
    expect(res.status).toBe(200);
    const trace = await eventually(async () =>
      (await traces(sb, "--app", "serving-app")).find((t) => t.root === "POST /train"),
    );
    const spans = await eventually(async () => {
      const s = await spansOf(sb, trace.traceId);
      return s.some((x) => x.app === "training-env") && s.some((x) => x.app === "serving-app")
        ? s
        : undefined;
    });
    const run = spans.find((s) => s.name === "run training-env.train")!;
    expect(run).toMatchObject({ app: "training-env", status: "ok" });
    // Its parent: the app's call to the run API, itself under the app's request.
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const call = byId.get(run.parentSpanId!)!;
    expect(call).toMatchObject({ app: "serving-app", kind: "client" });
    expect(call.name).toMatch(/^POST .*\/v1\/runs$/);
    expect(byId.get(call.parentSpanId!)).toMatchObject({ name: "POST /train", kind: "server" });
  });

  it("a command app with no SDK gets the OTEL variables and its export reaches the receiver", async () => {
    const deployments = (await deploy(sb, [fixture("traces/graph.ts"), "py-otel"])).by;
    const app = deployments["py-otel"]!;
    const answer = JSON.parse((await getText(`${app.endpoint}/export`)).body);
    expect(answer.exported).toBe(200);
    expect(answer.otel).toMatchObject({
      OTEL_SERVICE_NAME: "py-otel",
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
    });
    expect(answer.otel.OTEL_EXPORTER_OTLP_ENDPOINT).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/otlp$/);
    expect(answer.otel.OTEL_RESOURCE_ATTRIBUTES).toMatch(
      /caravan\.project=[^,]+,caravan\.domain=[^,]+,caravan\.revision=[0-9a-f]+,caravan\.replica=\d+/,
    );
    const [trace] = await traces(sb, "--app", "py-otel");
    expect(trace).toMatchObject({ root: "py-handler", apps: ["py-otel"], spans: 1 });
  });

  it("the receiver refuses an export without a token", async () => {
    const deployments = (await deploy(sb, [fixture("traces/graph.ts"), "py-otel"])).by;
    const { otel } = JSON.parse((await getText(`${deployments["py-otel"]!.endpoint}/env`)).body);
    const res = await fetch(`${otel.OTEL_EXPORTER_OTLP_ENDPOINT}/v1/traces`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(res.status).toBe(401);
  });

  it("tracing: false: the app sends no spans and no traceparent", async () => {
    const deployments = (await deploy(sb, [fixture("traces/graph.ts"), "untraced"])).by;
    const answer = JSON.parse((await getText(`${deployments.untraced!.endpoint}/call`)).body);
    expect(answer.disabled).toBe("true");
    // Nothing was propagated: the traced app's span starts a trace of its own.
    expect(answer.downstream.traceparent).toBeNull();
    const trace = await eventually(async () =>
      (await traces(sb, "--app", "traced")).find((t) => t.root === "GET /hello"),
    );
    expect(trace.apps).toEqual(["traced"]);
    expect(await traces(sb, "--app", "untraced")).toEqual([]);
  });

  it("caravan.config's telemetry: tracing off for every environment, the project's own limit", async () => {
    const deployments = (await deploy(sb, [fixture("traces-config/graph.ts")])).by;
    const app = deployments["py-otel"]!;
    let answer: { exported: number; otel: Record<string, string> } | undefined;
    // The app exports a span itself on each call (it has no SDK to turn off): four of them.
    for (let i = 0; i < 4; i++) answer = JSON.parse((await getText(`${app.endpoint}/export`)).body);
    expect(answer!.otel.OTEL_SDK_DISABLED).toBe("true");
    expect(answer!.exported).toBe(200);
    // At most 2 spans kept for this project/domain: the two newest.
    const kept = await traces(sb, "--app", "py-otel");
    expect(kept).toHaveLength(2);
  });
});
