import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { startTracing, type Tracer } from "./tracing.ts";

interface ExportedSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: { key: string; value: { stringValue?: string; intValue?: string } }[];
}

const servers: http.Server[] = [];
afterAll(() => servers.forEach((s) => s.close()));

async function listen(handler: http.RequestListener): Promise<number> {
  const server = http.createServer(handler);
  servers.push(server);
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  return (server.address() as AddressInfo).port;
}

// The receiver stand-in: what the tracer exports, with the headers it sent.
const exported: { spans: ExportedSpan[]; headers: http.IncomingHttpHeaders; resource: unknown }[] =
  [];
const sinkPort = await listen((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    const rs = JSON.parse(body).resourceSpans[0];
    exported.push({ spans: rs.scopeSpans[0].spans, headers: req.headers, resource: rs.resource });
    res.end("{}");
  });
});
/** Exported spans, but the sink's own (it is traced too, in this process). */
const spans = () => exported.flatMap((e) => e.spans).filter((s) => s.name !== "POST /v1/traces");

describe("caravan's tracer", () => {
  let tracer: Tracer | undefined;

  it("is off with OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER=none, or no endpoint", () => {
    const endpoint = `http://127.0.0.1:${sinkPort}`;
    expect(
      startTracing({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_SDK_DISABLED: "true" }),
    ).toBeUndefined();
    expect(
      startTracing({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_TRACES_EXPORTER: "none" }),
    ).toBeUndefined();
    expect(startTracing({})).toBeUndefined();
  });

  it("is off, without throwing, when the collector's address is not an http(s) URL", () => {
    for (const endpoint of ["collector", "localhost:4318", "ftp://collector"])
      expect(startTracing({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint })).toBeUndefined();
  });

  it("traces a request across fetch and http.get, parent to child, traceparent sent along", async () => {
    tracer = startTracing({
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${sinkPort}/otlp/`,
      OTEL_EXPORTER_OTLP_HEADERS: "Authorization=Bearer%20run_x",
      OTEL_SERVICE_NAME: "app2",
      OTEL_RESOURCE_ATTRIBUTES: "caravan.project=shop,caravan.domain=dev",
      OTEL_BSP_SCHEDULE_DELAY: "60000",
    })!;
    expect(tracer).toBeDefined();
    const seen: string[] = [];
    const downstream = await listen((req, res) => {
      seen.push(String(req.headers.traceparent));
      res.end("ok");
    });
    const upstream = await listen(async (_req, res) => {
      await (await fetch(`http://127.0.0.1:${downstream}/by-fetch?q=1`)).text();
      await new Promise<void>((ok) =>
        http.get(`http://127.0.0.1:${downstream}/by-http`, (r) => r.resume().on("end", ok)),
      );
      res.end("done");
    });
    const caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const answer = await fetch(`http://127.0.0.1:${upstream}/greeting`, {
      headers: { traceparent: caller },
    });
    expect(await answer.text()).toBe("done");
    await tracer.flush();

    const all = spans();
    const byName = (name: string) => all.find((s) => s.name === name)!;
    const root = byName("GET /greeting");
    // The caller's trace continues; its own header was left as it was.
    expect(root).toMatchObject({
      traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
      parentSpanId: "00f067aa0ba902b7",
      kind: 2,
    });
    const viaFetch = byName(`GET http://127.0.0.1:${downstream}/by-fetch`);
    const viaHttp = all.find((s) => s.kind === 3 && s.name.endsWith("/by-http"))!;
    for (const [client, path] of [
      [viaFetch, "/by-fetch"],
      [viaHttp, "/by-http"],
    ] as const) {
      expect(client).toMatchObject({ traceId: root.traceId, parentSpanId: root.spanId, kind: 3 });
      expect(byName(`GET ${path}`)).toMatchObject({ parentSpanId: client.spanId, kind: 2 });
      expect(seen).toContain(`00-${root.traceId}-${client.spanId}-01`);
    }
    const status = viaFetch.attributes.find((a) => a.key === "http.response.status_code");
    expect(status?.value.intValue).toBe("200");
    // Headers and resource from the standard variables.
    expect(exported.at(-1)!.headers.authorization).toBe("Bearer run_x");
    expect(JSON.stringify(exported.at(-1)!.resource)).toContain('"caravan.project"');
    expect(JSON.stringify(exported.at(-1)!.resource)).toContain('"stringValue":"app2"');
  });

  it("adds no 'error' listener to an app's request: an error it does not handle still throws", () => {
    expect(tracer).toBeDefined(); // started by the test above
    const req = http.request(`http://127.0.0.1:${sinkPort}/`);
    expect(req.getHeader("traceparent")).toBeDefined(); // traced
    expect(req.listenerCount("error")).toBe(0);
    req.on("error", () => {});
    req.destroy();
  });

  it("runs a task's work under the run's span (withParent)", async () => {
    const target = await listen((_req, res) => res.end("ok"));
    await tracer!.withParent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", () =>
      fetch(`http://127.0.0.1:${target}/in-task`).then((r) => r.text()),
    );
    await tracer!.flush();
    expect(spans().find((s) => s.name.endsWith("/in-task") && s.kind === 3)).toMatchObject({
      traceId: "0af7651916cd43dd8448eb211c80319c",
      parentSpanId: "b7ad6b7169203331",
    });
  });
});
