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

  it("a request to app2's public endpoint is one trace: the gateway's spans, app2's and app1's, parent to child", async () => {
    const deployments = (await deploy(sb, ["examples/app-calling-app.ts"])).by;
    const app2 = deployments["app2-calls-app1"]!;
    // A client in a trace of its own: the gateway's span is the child of the client's.
    const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
    const clientSpan = "00f067aa0ba902b7";
    const res = await fetch(`${app2.endpoint}/greeting/World`, {
      headers: { traceparent: `00-${clientTrace}-${clientSpan}-01` },
    });
    expect(await res.text()).toBe("Hello, World!");
    // The apps export in batches: the trace is complete once app1's server span is in.
    const spans = await eventually(async () => {
      const s = await spansOf(sb, clientTrace);
      return s.length >= 5 ? s : undefined;
    });
    expect(spans).toHaveLength(5);
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const parentOf = (s: SpanView) => byId.get(s.parentSpanId!);
    const gateway2 = spans.find(
      (s) => s.app === "app2-calls-app1" && s.name.startsWith("gateway"),
    )!;
    const server2 = spans.find(
      (s) => s.app === "app2-calls-app1" && s.name === "GET /greeting/World",
    )!;
    const client = spans.find((s) => s.app === "app2-calls-app1" && s.kind === "client")!;
    const gateway1 = spans.find(
      (s) => s.app === "app1-is-called-by-app2" && s.name.startsWith("gateway"),
    )!;
    const server1 = spans.find(
      (s) => s.app === "app1-is-called-by-app2" && s.name === "GET /greeting/World",
    )!;
    expect(gateway2).toMatchObject({
      name: "gateway GET /greeting/World",
      kind: "server",
      parentSpanId: clientSpan,
      status: "unset",
      attributes: {
        "caravan.endpoint": "public",
        "caravan.replica": expect.any(String),
        "http.response.status_code": 200,
      },
    });
    // app2 answers under the gateway's span; its call to app1 goes through app1's gateway.
    expect(parentOf(server2)).toBe(gateway2);
    expect(parentOf(client)).toBe(server2);
    expect(parentOf(gateway1)).toBe(client);
    expect(gateway1.attributes["caravan.endpoint"]).toBe("internal");
    expect(parentOf(server1)).toBe(gateway1);
    expect(server1.attributes["http.response.status_code"]).toBe(200);

    // Without a client trace, the gateway starts one: its span is the root, as the waterfall shows.
    expect(await getText(`${app2.endpoint}/greeting/Moon`)).toEqual({
      status: 200,
      body: "Hello, Moon!",
    });
    const trace = await eventually(async () =>
      (await traces(sb, "--app", "app1-is-called-by-app2")).find(
        (t) => t.root === "gateway GET /greeting/Moon" && t.spans === 5,
      ),
    );
    expect(trace.apps.sort()).toEqual(["app1-is-called-by-app2", "app2-calls-app1"]);
    expect(trace.status).toBe("ok");
    const shown = await sb.run(["traces", "show", trace.traceId]);
    expect(shown.code, shown.stderr).toBe(0);
    const lines = shown.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(5);
    expect(lines[0]).toMatch(/^gateway GET \/greeting\/Moon\s+app2-calls-app1/);
    expect(lines[1]).toMatch(/^ {2}GET \/greeting\/Moon\s+app2-calls-app1/);
    expect(lines[2]).toMatch(
      /^ {4}GET http:\/\/127\.0\.0\.1:\d+\/greeting\/Moon\s+app2-calls-app1/,
    );
    expect(lines[3]).toMatch(/^ {6}gateway GET \/greeting\/Moon\s+app1-is-called-by-app2/);
    expect(lines[4]).toMatch(/^ {8}GET \/greeting\/Moon\s+app1-is-called-by-app2/);
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
      (await traces(sb, "--app", "serving-app")).find((t) => t.root === "gateway POST /train"),
    );
    const spans = await eventually(async () => {
      const s = await spansOf(sb, trace.traceId);
      // The gateway's span is in at once; the app's own come with its next export.
      return s.some((x) => x.app === "training-env") &&
        s.some((x) => x.app === "serving-app" && x.kind === "client")
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
    // Its own span (a trace of its own: it propagates nothing), and the gateway's of /export.
    const kept = await eventually(async () => {
      const t = await traces(sb, "--app", "py-otel");
      return t.length === 2 ? t : undefined;
    });
    expect(kept.find((t) => t.root === "py-handler")).toMatchObject({
      apps: ["py-otel"],
      spans: 1,
    });
    expect(kept.find((t) => t.root === "gateway GET /export")).toMatchObject({
      apps: ["py-otel"],
      spans: 1,
    });
  });

  it("a command app with no OpenTelemetry at all appears through the gateway's span", async () => {
    const deployments = (await deploy(sb, [fixture("traces/graph.ts"), "py-otel"])).by;
    // /env exports nothing: the gateway's span is all there is of the request.
    const res = await fetch(`${deployments["py-otel"]!.endpoint}/env?q=1`);
    expect(res.status).toBe(200);
    const trace = await eventually(async () =>
      (await traces(sb, "--app", "py-otel")).find((t) => t.root === "gateway GET /env"),
    );
    expect(trace).toMatchObject({ apps: ["py-otel"], spans: 1, status: "ok" });
    const [span] = await spansOf(sb, trace.traceId);
    expect(span).toMatchObject({
      kind: "server",
      parentSpanId: null,
      attributes: {
        "caravan.endpoint": "public",
        "http.request.method": "GET",
        "url.path": "/env",
        "http.response.status_code": 200,
      },
    });
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

  it("tracing: false: neither the app nor its gateway sends a span or a traceparent", async () => {
    const deployments = (await deploy(sb, [fixture("traces/graph.ts"), "untraced"])).by;
    const untraced = deployments.untraced!.endpoint;
    const answer = JSON.parse((await getText(`${untraced}/call`)).body);
    expect(answer.disabled).toBe("true");
    // The untraced app propagated nothing: the trace starts at the traced app's gateway.
    const [, traceId, gatewaySpan] = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(
      answer.downstream.traceparent,
    )!;
    const spans = await eventually(async () => {
      const s = await spansOf(sb, traceId!);
      return s.length >= 2 ? s : undefined;
    });
    expect(spans.map((s) => [s.name, s.app, s.parentSpanId])).toEqual([
      ["gateway GET /hello", "traced", null],
      ["GET /hello", "traced", gatewaySpan],
    ]);
    // The untraced app's gateway sent it no traceparent, and recorded no span.
    expect(JSON.parse((await getText(`${untraced}/traceparent`)).body)).toEqual({
      traceparent: null,
    });
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
