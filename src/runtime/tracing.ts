/**
 * caravan's tracer for JS apps and task workers: a server span for each incoming HTTP request,
 * a client span for each outgoing `fetch` or `http(s).request` (with W3C `traceparent`
 * injected, so the next app continues the trace), exported in batches as OTLP/JSON to
 * `OTEL_EXPORTER_OTLP_ENDPOINT`. Small and hand-written rather than the OpenTelemetry SDK:
 * it does this one thing, adds no dependency to every app, and costs little per request (see
 * bench/tracing.ts). Off when `OTEL_SDK_DISABLED=true` (`tracing: false`), when
 * `OTEL_TRACES_EXPORTER=none`, or when there is no endpoint. A busy or absent receiver costs
 * the app nothing but spans: the queue is bounded and an export is never waited for.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { randomFillSync } from "node:crypto";
import { subscribe } from "node:diagnostics_channel";
import http from "node:http";
import https from "node:https";
import { syncBuiltinESMExports } from "node:module";
import {
  SpanKind,
  StatusCode,
  TRACEPARENT,
  formatTraceparent,
  parseTraceparent,
  type SpanContext,
} from "./trace-context.ts";

export interface Tracer {
  /** Runs `fn` as a child of `traceparent` (a task run's span), when it is valid. */
  withParent<T>(traceparent: string | undefined, fn: () => T): T;
  /** Sends what is queued now (before the process exits). */
  flush(): Promise<void>;
}

/** The current span's context; `null`: do not trace (the exporter's own requests). */
const current = new AsyncLocalStorage<SpanContext | null>();

/** Spans waiting to be exported, at most; more are dropped (and counted on the next batch). */
const MAX_QUEUE = 2048;
/** A batch is sent when this many are waiting, or after the delay. */
const BATCH = 256;
/** Exports sent or waiting to be at once, at most: a slow receiver makes the app drop, not pile up. */
const MAX_EXPORTS = 2;

interface Span extends SpanContext {
  parentSpanId: string | null;
  name: string;
  kind: number;
  /** Microseconds since the epoch (exact in a double; no BigInt on the request path). */
  start: number;
  end?: number;
  attributes: Record<string, string | number>;
  status: number;
}

/** Starts tracing this process, or returns undefined when it should not trace. */
export function startTracing(env: NodeJS.ProcessEnv = process.env): Tracer | undefined {
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT;
  const url =
    env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || (base && `${base.replace(/\/$/, "")}/v1/traces`);
  if (!url || env.OTEL_SDK_DISABLED?.toLowerCase() === "true") return undefined;
  if ((env.OTEL_TRACES_EXPORTER ?? "otlp").split(",").includes("none")) return undefined;
  const delay = Number(env.OTEL_BSP_SCHEDULE_DELAY) || 1000;
  let target: URL;
  try {
    target = new URL(url);
    if (target.protocol !== "http:" && target.protocol !== "https:") throw new Error("not http");
  } catch {
    // A collector address the app set wrongly must not stop the app: it runs untraced.
    console.error(`[caravan runtime] not tracing: ${url} is not an http(s) URL`);
    return undefined;
  }
  const exporter = new Exporter(
    target,
    {
      ...headersOf(env.OTEL_EXPORTER_OTLP_HEADERS),
      ...headersOf(env.OTEL_EXPORTER_OTLP_TRACES_HEADERS),
    },
    resourceOf(env),
    delay,
  );
  instrumentServers(exporter);
  instrumentHttpClients(exporter);
  instrumentFetch(exporter);
  return {
    withParent: (traceparent, fn) => {
      const parent = parseTraceparent(traceparent);
      return parent ? current.run(parent, fn) : fn();
    },
    flush: () => exporter.flush(),
  };
}

// --- spans ---

/** Random ids from a pooled buffer: one system call per 256 ids, not one per id. */
const pool = Buffer.alloc(4096);
let poolAt = pool.length;
function randomHex(bytes: number): string {
  if (poolAt + bytes > pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  poolAt += bytes;
  return pool.toString("hex", poolAt - bytes, poolAt);
}

/** Microseconds since the epoch, from the monotonic clock. */
const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

function startSpan(name: string, kind: number, parent: SpanContext | undefined): Span {
  return {
    traceId: parent?.traceId ?? randomHex(16),
    spanId: randomHex(8),
    parentSpanId: parent?.spanId ?? null,
    name,
    kind,
    start: nowUs(),
    attributes: {},
    status: StatusCode.unset,
  };
}

function endSpan(exporter: Exporter, span: Span, statusCode?: number, error?: Error): void {
  if (span.end !== undefined) return;
  span.end = nowUs();
  if (statusCode) span.attributes["http.response.status_code"] = statusCode;
  // The semantic conventions: a server span errs on 5xx, a client span on any 4xx/5xx.
  const threshold = span.kind === SpanKind.server ? 500 : 400;
  if (error || (statusCode && statusCode >= threshold)) span.status = StatusCode.error;
  if (error) span.attributes["error.type"] = error.name || "Error";
  exporter.add(span);
}

// --- instrumentation ---

type Emit = (this: unknown, event: string | symbol, ...args: unknown[]) => boolean;

/** Every HTTP(S) server: a server span around each request, continuing the caller's trace. */
function instrumentServers(exporter: Exporter): void {
  for (const proto of [http.Server.prototype, https.Server.prototype] as { emit: Emit }[]) {
    const emit = proto.emit;
    proto.emit = function (this: unknown, event, ...args) {
      if (event !== "request") return emit.call(this, event, ...args);
      const [req, res] = args as [http.IncomingMessage, http.ServerResponse];
      const path = (req.url ?? "/").split("?")[0]!;
      const span = startSpan(
        `${req.method} ${path}`,
        SpanKind.server,
        parseTraceparent(req.headers[TRACEPARENT]),
      );
      span.attributes["http.request.method"] = req.method ?? "";
      span.attributes["url.path"] = path;
      // A response emits "close" when it finished, or when its connection went first.
      res.once("close", () => endSpan(exporter, span, res.statusCode));
      return current.run(span, () => emit.call(this, event, ...args));
    };
  }
}

/** `http.request` / `https.request` (and `get`): a client span, `traceparent` sent along. */
function instrumentHttpClients(exporter: Exporter): void {
  for (const mod of [http, https]) {
    const request = mod.request as (...args: unknown[]) => http.ClientRequest;
    const traced = function (this: unknown, ...args: unknown[]): http.ClientRequest {
      const parent = current.getStore();
      const req = request.apply(this, args);
      if (parent === null || req.hasHeader(TRACEPARENT)) return req;
      const span = startSpan(
        `${req.method} ${req.host}${req.path.split("?")[0]}`,
        SpanKind.client,
        parent,
      );
      span.attributes["http.request.method"] = req.method;
      span.attributes["server.address"] = req.host;
      if (!req.headersSent) req.setHeader(TRACEPARENT, formatTraceparent(span));
      req.once("response", (res: http.IncomingMessage) => {
        const done = () => endSpan(exporter, span, res.statusCode);
        res.once("end", done);
        res.once("close", done);
      });
      // Seen as it is emitted, not by a listener: a request error the app does not handle
      // must still be thrown as without tracing (an 'error' with no listener throws).
      const emit = req.emit;
      req.emit = function (this: http.ClientRequest, event: string | symbol, ...rest: unknown[]) {
        if (event === "error") endSpan(exporter, span, undefined, rest[0] as Error);
        return emit.call(this, event, ...rest);
      } as typeof req.emit;
      req.once("close", () => endSpan(exporter, span));
      return req;
    };
    // `get` is `request` + `end()`, through the traced `request`.
    const get = function (this: unknown, ...args: unknown[]) {
      const req = traced.apply(this, args);
      req.end();
      return req;
    };
    Object.assign(mod, { request: traced, get });
  }
  // `import { request } from "node:http"` sees the traced one too.
  syncBuiltinESMExports();
}

/** `fetch` (undici): through its diagnostics channels, which let a header be added. */
function instrumentFetch(exporter: Exporter): void {
  interface UndiciRequest {
    origin: string;
    method: string;
    path: string;
    headers: string | string[];
    addHeader(name: string, value: string): void;
  }
  // A request that carries a trace already (set by the caller) is left as it is.
  const hasTraceparent = (h: string | string[]) =>
    typeof h === "string"
      ? /(^|\r\n)traceparent:/i.test(h)
      : h.some((v, i) => i % 2 === 0 && String(v).toLowerCase() === TRACEPARENT);
  const spans = new WeakMap<UndiciRequest, Span>();
  subscribe("undici:request:create", (m) => {
    const { request } = m as { request: UndiciRequest };
    const parent = current.getStore();
    if (parent === null || hasTraceparent(request.headers)) return;
    const span = startSpan(
      `${request.method} ${request.origin}${request.path.split("?")[0]}`,
      SpanKind.client,
      parent,
    );
    span.attributes["http.request.method"] = request.method;
    span.attributes["server.address"] = request.origin;
    request.addHeader(TRACEPARENT, formatTraceparent(span));
    spans.set(request, span);
  });
  subscribe("undici:request:headers", (m) => {
    const { request, response } = m as { request: UndiciRequest; response: { statusCode: number } };
    const span = spans.get(request);
    if (span) span.attributes["http.response.status_code"] = response.statusCode;
  });
  subscribe("undici:request:trailers", (m) => {
    const { request } = m as { request: UndiciRequest };
    const span = spans.get(request);
    if (span) endSpan(exporter, span, span.attributes["http.response.status_code"] as number);
  });
  subscribe("undici:request:error", (m) => {
    const { request, error } = m as { request: UndiciRequest; error: Error };
    const span = spans.get(request);
    if (span) endSpan(exporter, span, undefined, error);
  });
}

// --- export ---

class Exporter {
  /** Each span as OTLP/JSON, serialised when it ends: no batch-sized pause in the app. */
  private queue: string[] = [];
  private dropped = 0;
  private exports = 0;
  private timer: NodeJS.Timeout | undefined;
  private sending: Promise<void> = Promise.resolve();
  /** The unpatched `request` (the exporter is made before patching): never traces itself. */
  private readonly request: typeof http.request;
  /** The request body around the spans. */
  private readonly head: string;

  constructor(
    private readonly url: URL,
    private readonly headers: Record<string, string>,
    resource: { key: string; value: { stringValue: string } }[],
    private readonly delayMs: number,
  ) {
    this.request = (url.protocol === "https:" ? https : http).request;
    this.head = `{"resourceSpans":[{"resource":{"attributes":${JSON.stringify(resource)}},"scopeSpans":[{"scope":{"name":"caravan"},"spans":[`;
  }

  add(span: Span): void {
    if (this.queue.length >= MAX_QUEUE) {
      this.dropped++;
      return;
    }
    this.queue.push(otlpSpan(span));
    if (this.queue.length >= BATCH) void this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => void this.flush(), this.delayMs);
      this.timer.unref();
    }
  }

  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.queue.length) return this.sending;
    const spans = this.queue;
    this.queue = [];
    if (this.exports >= MAX_EXPORTS) {
      this.dropped += spans.length;
      return this.sending;
    }
    this.exports++;
    // How many this process dropped so far, as an attribute of the instrumentation scope.
    const dropped = this.dropped
      ? `,"attributes":[{"key":"caravan.spans_dropped","value":{"intValue":"${this.dropped}"}}]`
      : "";
    const body = `${this.head.replace('"name":"caravan"}', `"name":"caravan"${dropped}}`)}${spans.join(",")}]}]}]}`;
    // One export at a time, in order; a failed one is lost.
    this.sending = this.sending
      .then(() => current.run(null, () => this.send(body)))
      .finally(() => this.exports--);
    return this.sending;
  }

  private send(body: string): Promise<void> {
    return new Promise<void>((resolve) => {
      const req = this.request(this.url, {
        method: "POST",
        headers: { ...this.headers, "content-type": "application/json" },
        timeout: 10_000,
      });
      req.once("response", (res) => {
        res.resume();
        res.once("end", resolve);
        res.once("error", () => resolve());
      });
      req.once("timeout", () => req.destroy());
      req.once("error", () => resolve());
      req.end(body);
      // A header the app set that node refuses throws above: that export is lost, like a
      // failed one, and never becomes an unhandled rejection in the app.
    }).catch(() => undefined);
  }
}

/**
 * A span as OTLP/JSON text, written out rather than built as objects and stringified: this
 * runs once per request (ids are hex and times digits; only names and values need escaping).
 */
function otlpSpan(s: Span): string {
  let attributes = "";
  for (const key in s.attributes) {
    const v = s.attributes[key]!;
    const value =
      typeof v === "number" ? `{"intValue":"${v}"}` : `{"stringValue":${JSON.stringify(v)}}`;
    attributes += `${attributes ? "," : ""}{"key":"${key}","value":${value}}`;
  }
  const parent = s.parentSpanId ? `"parentSpanId":"${s.parentSpanId}",` : "";
  return `{"traceId":"${s.traceId}","spanId":"${s.spanId}",${parent}"name":${JSON.stringify(s.name)},"kind":${s.kind},"startTimeUnixNano":"${s.start}000","endTimeUnixNano":"${s.end ?? s.start}000","attributes":[${attributes}],"status":{"code":${s.status}}}`;
}

/** `OTEL_EXPORTER_OTLP_HEADERS`: `k=v,k2=v2`, values percent-encoded. */
function headersOf(value: string | undefined, lowerCase = true): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (value ?? "").split(",")) {
    const at = pair.indexOf("=");
    if (at <= 0) continue;
    try {
      const key = pair.slice(0, at).trim();
      out[lowerCase ? key.toLowerCase() : key] = decodeURIComponent(pair.slice(at + 1).trim());
    } catch {
      // a malformed value: the header is left out, as the SDKs do
    }
  }
  return out;
}

/** The resource: `OTEL_RESOURCE_ATTRIBUTES`, then `OTEL_SERVICE_NAME`, and the process. */
function resourceOf(env: NodeJS.ProcessEnv) {
  const attrs = headersOf(env.OTEL_RESOURCE_ATTRIBUTES, false);
  if (env.OTEL_SERVICE_NAME) attrs["service.name"] = env.OTEL_SERVICE_NAME;
  attrs["service.name"] ??= "unknown_service:node";
  attrs["process.pid"] = String(process.pid);
  attrs["telemetry.sdk.name"] = "caravan";
  return Object.entries(attrs).map(([key, v]) => ({ key, value: { stringValue: v } }));
}
