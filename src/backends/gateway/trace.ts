/**
 * The gateway's part in a trace: each request it forwards continues the trace its
 * `traceparent` names (or starts one), the app gets a `traceparent` whose parent is the
 * gateway's span, and that span (one per request: route, replica, status, time waiting for a
 * wake-up) goes to the `recordSpan` hook once the response is over. No hook (the cluster
 * gateway), or an app with `tracing: false`: no ids are made, the head is left as it came.
 */
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { SpanKind, StatusCode } from "../../runtime/trace-context.ts";

/** A hop's ids, made while the request head is written (`request-head.ts`). */
export interface HopTrace {
  traceId: string;
  spanId: string;
  /** The client's span, when its `traceparent` was valid. */
  parentSpanId: string | null;
  /** The request target, for the span's name. */
  target: string;
}

/** A span the gateway recorded; the host adds what it knows of the app (service, scope). */
export interface GatewaySpan {
  traceId: string;
  spanId: string;
  parentSpanId: string | null;
  name: string;
  kind: number;
  /** Microseconds since the epoch. */
  startUs: number;
  endUs: number;
  status: number;
  statusMessage?: string;
  attributes: Record<string, unknown>;
}

/** Takes the spans of an app's requests (`app`: the name the gateway opened it with). */
export type RecordSpan = (app: string, span: GatewaySpan) => void;

/** How many requests may be traced (`GatewayHooks.spanBudget` says how it is used). */
export interface SpanBudget {
  take(): boolean;
  give(wasTraced: boolean): void;
}

/** What became of a forwarded request, as the exchange saw it. */
export interface HopOutcome {
  method: string;
  /** The listener it came in on. */
  pub: boolean;
  /** The status the client got (499: it went away first). */
  status: number;
  /** The replica that answered, or the last one tried. */
  replica: string | undefined;
  /** `performance.now()` when the request arrived and when it ended. */
  start: number;
  end: number;
  /** Time queued for a replica (an app woken from zero, a restart); undefined: none. */
  waitedMs: number | undefined;
  /** The gateway's own answer (refused, unreachable, timed out). */
  failure: string | undefined;
}

/** The span of a forwarded request (the host names the app: `service`). */
export function hopSpan(trace: HopTrace, hop: HopOutcome): GatewaySpan {
  const q = trace.target.indexOf("?");
  const path = q < 0 ? trace.target : trace.target.slice(0, q);
  const attributes: Record<string, unknown> = {
    "caravan.endpoint": hop.pub ? "public" : "internal",
    "http.request.method": hop.method,
    "url.path": path,
    "http.response.status_code": hop.status,
  };
  if (hop.replica !== undefined) attributes["caravan.replica"] = hop.replica;
  if (hop.waitedMs !== undefined) attributes["caravan.gateway.wait_ms"] = round(hop.waitedMs);
  const error = hop.status >= 500;
  const origin = performance.timeOrigin;
  return {
    traceId: trace.traceId,
    spanId: trace.spanId,
    parentSpanId: trace.parentSpanId,
    name: `gateway ${hop.method} ${path}`,
    kind: SpanKind.server,
    startUs: Math.round((origin + hop.start) * 1000),
    endUs: Math.round((origin + hop.end) * 1000),
    status: error ? StatusCode.error : StatusCode.unset,
    ...(error ? { statusMessage: hop.failure ?? `the app answered ${hop.status}` } : {}),
    attributes,
  };
}

const round = (ms: number) => Math.round(ms * 100) / 100;

// Ids are sliced from a block of random bytes drawn a few hundred ids at a time, rather than
// a randomBytes call (an allocation and a trip to the CSPRNG) per id on the hot path.
const BLOCK = 4096;
let block = Buffer.alloc(0);
let used = BLOCK;

/** `bytes` random bytes as lowercase hex (8: a span id, 16: a trace id). */
export function randomHex(bytes: number): string {
  if (used + bytes > block.length) {
    block = randomBytes(BLOCK);
    used = 0;
  }
  const hex = block.toString("hex", used, used + bytes);
  used += bytes;
  return hex;
}
