/**
 * W3C Trace Context (`traceparent`, https://www.w3.org/TR/trace-context/): the header that
 * carries a trace across processes. Pure; shared by the runtime's tracer, the control plane
 * (a task run joins the trace of the request that started it) and the gateway.
 */
import { randomBytes } from "node:crypto";

export const TRACEPARENT = "traceparent";

/** Where a span sits: its trace, and its own id (the parent of spans started under it). */
export interface SpanContext {
  /** 32 lowercase hex digits. */
  traceId: string;
  /** 16 lowercase hex digits. */
  spanId: string;
}

const PATTERN = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The context a `traceparent` header names, or undefined when it is missing or invalid. */
export function parseTraceparent(header: string | string[] | undefined): SpanContext | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  const m = value ? PATTERN.exec(value.trim().toLowerCase()) : null;
  // Version ff is forbidden; all-zero ids are invalid (the spec says: ignore the header).
  if (!m || m[1] === "ff" || /^0+$/.test(m[2]!) || /^0+$/.test(m[3]!)) return undefined;
  return { traceId: m[2]!, spanId: m[3]! };
}

/** The header for a request made within `ctx` (always sampled: caravan keeps every span). */
export function formatTraceparent(ctx: SpanContext): string {
  return `00-${ctx.traceId}-${ctx.spanId}-01`;
}

export const newTraceId = () => randomBytes(16).toString("hex");
export const newSpanId = () => randomBytes(8).toString("hex");

/** OTLP span kinds (the protobuf enum's values, which OTLP/JSON uses too). */
export const SpanKind = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const;
/** OTLP status codes. */
export const StatusCode = { unset: 0, ok: 1, error: 2 } as const;
