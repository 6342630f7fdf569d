/**
 * A protobuf decoder for just the OTLP export requests the receiver takes (traces, logs,
 * metrics; opentelemetry-proto v1). It turns the binary form into the OTLP/JSON form (the
 * proto3 JSON mapping: camelCase names, trace and span ids as hex, 64-bit integers as
 * decimal strings, bytes as base64), so one normaliser reads both encodings. Unknown fields
 * are skipped, as protobuf requires. Pure; no dependency (protobufjs would need the .proto
 * files at run time for three messages' worth of fields).
 */

type Scalar =
  | "string"
  | "bytes" // base64, as proto3 JSON
  | "hex" // trace and span ids: OTLP/JSON writes them as hex
  | "uint" // varint enums and 32-bit integers, as a number
  | "int64" // varint, as a decimal string
  | "bool"
  | "fixed64" // unsigned, as a decimal string (times in nanoseconds)
  | "sfixed64"
  | "double"
  | "fixed32";
/** A field: its JSON name, its type (a scalar or a message), and whether it repeats. */
type Field = [name: string, type: Scalar | (() => Schema), repeated?: true];
type Schema = Record<number, Field>;

const KeyValue: Schema = { 1: ["key", "string"], 2: ["value", () => AnyValue] };
const AnyValue: Schema = {
  1: ["stringValue", "string"],
  2: ["boolValue", "bool"],
  3: ["intValue", "int64"],
  4: ["doubleValue", "double"],
  5: ["arrayValue", () => ({ 1: ["values", () => AnyValue, true] })],
  6: ["kvlistValue", () => ({ 1: ["values", () => KeyValue, true] })],
  7: ["bytesValue", "bytes"],
};
const attributes: Field = ["attributes", () => KeyValue, true];
const Resource: Schema = { 1: attributes };
const Scope: Schema = { 1: ["name", "string"], 2: ["version", "string"], 3: attributes };

const Span: Schema = {
  1: ["traceId", "hex"],
  2: ["spanId", "hex"],
  3: ["traceState", "string"],
  4: ["parentSpanId", "hex"],
  5: ["name", "string"],
  6: ["kind", "uint"],
  7: ["startTimeUnixNano", "fixed64"],
  8: ["endTimeUnixNano", "fixed64"],
  9: attributes,
  11: [
    "events",
    () => ({ 1: ["timeUnixNano", "fixed64"], 2: ["name", "string"], 3: attributes }),
    true,
  ],
  13: [
    "links",
    () => ({
      1: ["traceId", "hex"],
      2: ["spanId", "hex"],
      3: ["traceState", "string"],
      4: attributes,
    }),
    true,
  ],
  15: ["status", () => ({ 2: ["message", "string"], 3: ["code", "uint"] })],
};
const LogRecord: Schema = {
  1: ["timeUnixNano", "fixed64"],
  11: ["observedTimeUnixNano", "fixed64"],
  2: ["severityNumber", "uint"],
  3: ["severityText", "string"],
  5: ["body", () => AnyValue],
  6: attributes,
  9: ["traceId", "hex"],
  10: ["spanId", "hex"],
};
const NumberDataPoint: Schema = {
  7: attributes,
  2: ["startTimeUnixNano", "fixed64"],
  3: ["timeUnixNano", "fixed64"],
  4: ["asDouble", "double"],
  6: ["asInt", "sfixed64"],
};
const HistogramDataPoint: Schema = {
  9: attributes,
  2: ["startTimeUnixNano", "fixed64"],
  3: ["timeUnixNano", "fixed64"],
  4: ["count", "fixed64"],
  5: ["sum", "double"],
  11: ["min", "double"],
  12: ["max", "double"],
};
const Metric: Schema = {
  1: ["name", "string"],
  2: ["description", "string"],
  3: ["unit", "string"],
  5: ["gauge", () => ({ 1: ["dataPoints", () => NumberDataPoint, true] })],
  7: [
    "sum",
    () => ({
      1: ["dataPoints", () => NumberDataPoint, true],
      2: ["aggregationTemporality", "uint"],
      3: ["isMonotonic", "bool"],
    }),
  ],
  9: [
    "histogram",
    () => ({
      1: ["dataPoints", () => HistogramDataPoint, true],
      2: ["aggregationTemporality", "uint"],
    }),
  ],
  // Exponential histograms and summaries: their count and sum are what caravan keeps.
  10: ["exponentialHistogram", () => ({ 1: ["dataPoints", () => HistogramDataPoint, true] })],
  11: [
    "summary",
    () => ({
      1: [
        "dataPoints",
        () => ({
          7: attributes,
          2: ["startTimeUnixNano", "fixed64"],
          3: ["timeUnixNano", "fixed64"],
          4: ["count", "fixed64"],
          5: ["sum", "double"],
        }),
        true,
      ],
    }),
  ],
};

/** The three export requests, by signal. */
function exportRequest(resourceField: string, scopeField: string, item: string, schema: Schema) {
  return {
    1: [
      resourceField,
      () => ({
        1: ["resource", () => Resource],
        2: [scopeField, () => ({ 1: ["scope", () => Scope], 2: [item, () => schema, true] }), true],
      }),
      true,
    ],
  } satisfies Schema;
}

export const OTLP_SCHEMAS = {
  traces: exportRequest("resourceSpans", "scopeSpans", "spans", Span),
  logs: exportRequest("resourceLogs", "scopeLogs", "logRecords", LogRecord),
  metrics: exportRequest("resourceMetrics", "scopeMetrics", "metrics", Metric),
};

export type Signal = keyof typeof OTLP_SCHEMAS;

/** Decodes an OTLP export request of `signal`; throws on bytes that are not one. */
export function decodeOtlp(signal: Signal, bytes: Uint8Array): Record<string, unknown> {
  return decodeMessage(bytes, 0, bytes.length, OTLP_SCHEMAS[signal]);
}

function decodeMessage(buf: Uint8Array, start: number, end: number, schema: Schema) {
  const out: Record<string, unknown> = {};
  const pos = { at: start };
  while (pos.at < end) {
    const tag = readLength(buf, pos, end);
    const number = tag >>> 3;
    const wire = tag & 7;
    const field = schema[number];
    if (!field) {
      skip(buf, pos, end, wire);
      continue;
    }
    const [name, type, repeated] = field;
    const values: unknown[] = [];
    if (wire === 2 && typeof type === "string" && PACKABLE.has(type)) {
      // A packed repeated scalar: one length-delimited run of values.
      const len = readLength(buf, pos, end);
      const stop = pos.at + len;
      if (stop > end) throw new Error("truncated packed field");
      while (pos.at < stop) values.push(readScalar(buf, pos, stop, type, WIRE_OF[type]));
    } else if (typeof type === "function") {
      if (wire !== 2) throw new Error(`field ${number} should be a message`);
      const len = readLength(buf, pos, end);
      if (pos.at + len > end) throw new Error("truncated message");
      values.push(decodeMessage(buf, pos.at, pos.at + len, type()));
      pos.at += len;
    } else {
      if (wire !== WIRE_OF[type]) throw new Error(`field ${number} has wire type ${wire}`);
      values.push(readScalar(buf, pos, end, type, wire));
    }
    if (repeated) ((out[name] ??= []) as unknown[]).push(...values);
    else out[name] = values[values.length - 1];
  }
  return out;
}

const WIRE_OF: Record<Scalar, number> = {
  string: 2,
  bytes: 2,
  hex: 2,
  uint: 0,
  int64: 0,
  bool: 0,
  fixed64: 1,
  sfixed64: 1,
  double: 1,
  fixed32: 5,
};
const PACKABLE = new Set<Scalar>([
  "uint",
  "int64",
  "bool",
  "fixed64",
  "sfixed64",
  "double",
  "fixed32",
]);

function readScalar(buf: Uint8Array, pos: { at: number }, end: number, type: Scalar, wire: number) {
  if (wire === 2) {
    const len = readLength(buf, pos, end);
    if (pos.at + len > end) throw new Error("truncated bytes");
    const bytes = Buffer.from(buf.buffer, buf.byteOffset + pos.at, len);
    pos.at += len;
    return type === "string"
      ? bytes.toString("utf8")
      : type === "hex"
        ? bytes.toString("hex")
        : bytes.toString("base64");
  }
  if (wire === 0) {
    const v = readVarint(buf, pos, end);
    return type === "bool"
      ? v !== 0n
      : type === "int64"
        ? BigInt.asIntN(64, v).toString()
        : Number(v);
  }
  const size = wire === 1 ? 8 : 4;
  if (pos.at + size > end) throw new Error("truncated fixed field");
  const view = new DataView(buf.buffer, buf.byteOffset + pos.at, size);
  pos.at += size;
  if (type === "double") return view.getFloat64(0, true);
  if (type === "fixed32") return view.getUint32(0, true);
  return (type === "sfixed64" ? view.getBigInt64(0, true) : view.getBigUint64(0, true)).toString();
}

/** A varint that fits a number (tags, lengths): the common case, without BigInt. */
function readLength(buf: Uint8Array, pos: { at: number }, end: number): number {
  let result = 0;
  for (let shift = 0; shift < 35; shift += 7) {
    if (pos.at >= end) throw new Error("truncated varint");
    const byte = buf[pos.at++]!;
    result += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) return result;
  }
  throw new Error("length too large");
}

function readVarint(buf: Uint8Array, pos: { at: number }, end: number): bigint {
  let result = 0n;
  for (let shift = 0n; shift < 70n; shift += 7n) {
    if (pos.at >= end) throw new Error("truncated varint");
    const byte = buf[pos.at++]!;
    result |= BigInt(byte & 0x7f) << shift;
    if (byte < 0x80) return result;
  }
  throw new Error("varint too long");
}

function skip(buf: Uint8Array, pos: { at: number }, end: number, wire: number): void {
  if (wire === 0) readVarint(buf, pos, end);
  else if (wire === 1) pos.at += 8;
  else if (wire === 5) pos.at += 4;
  else if (wire === 2) pos.at += readLength(buf, pos, end);
  else throw new Error(`unsupported wire type ${wire}`);
  if (pos.at > end) throw new Error("truncated field");
}
