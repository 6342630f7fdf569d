/**
 * OTLP export requests (in their JSON form: OTLP/JSON as sent, or protobuf decoded by
 * `protobuf.ts`) turned into the rows the telemetry store keeps. Pure.
 */
import type { Scope } from "../../contract.ts";

/** A span as stored (and as the gateway or the control plane record one themselves). */
export interface SpanRecord {
  traceId: string;
  spanId: string;
  parentSpanId: string | null;
  name: string;
  /** OTLP span kind (1 internal, 2 server, 3 client, 4 producer, 5 consumer). */
  kind: number;
  /** `service.name`: the environment's name for what caravan runs. */
  service: string;
  project: string;
  domain: string;
  /** Microseconds since the epoch (nanoseconds exceed a double's exact range). */
  startUs: number;
  endUs: number;
  /** OTLP status code: 0 unset, 1 ok, 2 error. */
  status: number;
  statusMessage?: string;
  attributes: Record<string, unknown>;
}

export interface LogRecordRow {
  timeUs: number;
  traceId: string | null;
  spanId: string | null;
  severityNumber: number;
  severityText: string;
  body: string;
  service: string;
  project: string;
  domain: string;
  attributes: Record<string, unknown>;
}

export interface MetricPointRow {
  timeUs: number;
  name: string;
  unit: string;
  /** gauge, sum, histogram, exponentialHistogram or summary. */
  type: string;
  /** A gauge's or sum's value; a histogram's or summary's sum. */
  value: number | null;
  /** A histogram's or summary's count. */
  count: number | null;
  service: string;
  project: string;
  domain: string;
  attributes: Record<string, unknown>;
}

type Json = Record<string, any>;

/**
 * Who sent it: `scope` when the sender's token names one (it wins over what the resource
 * claims), else the resource's `caravan.project` / `caravan.domain`.
 */
interface Origin {
  service: string;
  project: string;
  domain: string;
}

function originOf(resource: Json | undefined, scope: Scope | undefined): Origin {
  const attrs = attributesOf(resource?.attributes);
  const str = (v: unknown) => (typeof v === "string" ? v : "");
  return {
    service: str(attrs["service.name"]) || "unknown_service",
    project: scope?.project ?? str(attrs["caravan.project"]),
    domain: scope?.domain ?? str(attrs["caravan.domain"]),
  };
}

/** Each resource's items with their origin. */
function* itemsOf(
  request: Json,
  resourceField: string,
  scopeField: string,
  itemField: string,
  scope: Scope | undefined,
): Generator<[Origin, Json]> {
  for (const r of arrayOf(request[resourceField])) {
    const origin = originOf(r.resource, scope);
    for (const s of arrayOf(r[scopeField]))
      for (const item of arrayOf(s[itemField])) yield [origin, item];
  }
}

export function spansOf(request: Json, scope?: Scope): SpanRecord[] {
  const out: SpanRecord[] = [];
  for (const [origin, s] of itemsOf(request, "resourceSpans", "scopeSpans", "spans", scope)) {
    const traceId = idOf(s.traceId, 32);
    const spanId = idOf(s.spanId, 16);
    if (!traceId || !spanId) continue; // the spec: a span without valid ids is dropped
    const startUs = microsOf(s.startTimeUnixNano);
    out.push({
      traceId,
      spanId,
      parentSpanId: idOf(s.parentSpanId, 16),
      name: String(s.name ?? ""),
      kind: Number(s.kind) || 0,
      ...origin,
      startUs,
      endUs: Math.max(startUs, microsOf(s.endTimeUnixNano)),
      status: Number(s.status?.code) || 0,
      ...(s.status?.message ? { statusMessage: String(s.status.message) } : {}),
      attributes: attributesOf(s.attributes),
    });
  }
  return out;
}

export function logRecordsOf(request: Json, scope?: Scope): LogRecordRow[] {
  const out: LogRecordRow[] = [];
  for (const [origin, l] of itemsOf(request, "resourceLogs", "scopeLogs", "logRecords", scope)) {
    const body = valueOf(l.body);
    out.push({
      // The spec: use the observed time when the time is unset.
      timeUs: microsOf(l.timeUnixNano) || microsOf(l.observedTimeUnixNano) || Date.now() * 1000,
      traceId: idOf(l.traceId, 32),
      spanId: idOf(l.spanId, 16),
      severityNumber: Number(l.severityNumber) || 0,
      severityText: String(l.severityText ?? ""),
      body: typeof body === "string" ? body : (JSON.stringify(body) ?? ""),
      ...origin,
      attributes: attributesOf(l.attributes),
    });
  }
  return out;
}

const METRIC_TYPES = ["gauge", "sum", "histogram", "exponentialHistogram", "summary"] as const;

export function metricPointsOf(request: Json, scope?: Scope): MetricPointRow[] {
  const out: MetricPointRow[] = [];
  for (const [origin, m] of itemsOf(request, "resourceMetrics", "scopeMetrics", "metrics", scope)) {
    const type = METRIC_TYPES.find((t) => m[t]);
    if (!type) continue;
    for (const p of arrayOf(m[type].dataPoints)) {
      const numeric = type === "gauge" || type === "sum";
      out.push({
        timeUs: microsOf(p.timeUnixNano),
        name: String(m.name ?? ""),
        unit: String(m.unit ?? ""),
        type,
        value: numeric ? numberOf(p.asDouble ?? p.asInt) : numberOf(p.sum),
        count: numeric ? null : numberOf(p.count),
        ...origin,
        attributes: attributesOf(p.attributes),
      });
    }
  }
  return out;
}

const arrayOf = (v: unknown): Json[] => (Array.isArray(v) ? (v as Json[]) : []);

function numberOf(v: unknown): number | null {
  if (v === undefined || v === null) return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

/** OTLP/JSON ids are hex; anything else (or all zeros: "no parent") is null. */
function idOf(v: unknown, length: number): string | null {
  if (typeof v !== "string" || v.length !== length || !/^[0-9a-fA-F]+$/.test(v)) return null;
  return /^0+$/.test(v) ? null : v.toLowerCase();
}

/** Nanoseconds (a decimal string, or a number from a lenient sender) as microseconds. */
function microsOf(v: unknown): number {
  if (typeof v === "number") return Math.floor(v / 1000);
  if (typeof v !== "string" || !/^\d{1,20}$/.test(v)) return 0;
  return Number(BigInt(v) / 1000n);
}

/** OTLP KeyValue list → a plain object. */
export function attributesOf(list: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const kv of arrayOf(list))
    if (typeof kv.key === "string" && kv.key !== "__proto__") out[kv.key] = valueOf(kv.value);
  return out;
}

function valueOf(v: Json | undefined): unknown {
  if (!v || typeof v !== "object") return null;
  if ("stringValue" in v) return v.stringValue;
  if ("boolValue" in v) return v.boolValue;
  if ("intValue" in v) {
    const n = Number(v.intValue);
    return Number.isSafeInteger(n) ? n : String(v.intValue);
  }
  if ("doubleValue" in v) return v.doubleValue;
  if ("arrayValue" in v) return arrayOf(v.arrayValue?.values).map(valueOf);
  if ("kvlistValue" in v) return attributesOf(v.kvlistValue?.values);
  if ("bytesValue" in v) return v.bytesValue;
  return null;
}
