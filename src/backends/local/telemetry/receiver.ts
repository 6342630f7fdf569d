/**
 * The control plane's OTLP/HTTP receiver: what apps export (spans, log records, metric
 * points, as protobuf or JSON) goes into a bounded queue, and is written to the telemetry
 * store in batches off the request path. A sender never waits for SQLite: when the queue is
 * full, what does not fit is dropped and counted (the answer's `partialSuccess` says how
 * many), so a busy receiver costs an app nothing but the lost data.
 *
 * `recordSpan` is how caravan's own components (the control plane's task runs, the gateway)
 * add spans without going through HTTP.
 */
import { CaravanError } from "../../../errors.ts";
import type {
  LogRecordFilter,
  LogRecordView,
  MetricFilter,
  MetricSeries,
  Scope,
  SpanView,
  TelemetryStats,
  TraceFilter,
  TraceLogView,
  TraceSummary,
} from "../../contract.ts";
import {
  logRecordsOf,
  metricPointsOf,
  spansOf,
  type LogRecordRow,
  type MetricPointRow,
  type SpanRecord,
} from "./otlp.ts";
import { decodeOtlp, type Signal } from "./protobuf.ts";
import { TelemetryStore, type TelemetryRetention } from "./store.ts";

export interface ReceiverOptions {
  /** Items (spans + log records + metric points) waiting to be written, at most. @default 20000 */
  maxQueued?: number;
  /** How often the queue is written. @default 200 */
  flushEveryMs?: number;
}

/** The OTLP/JSON answer to an export (an empty object, or how much was rejected). */
export type ExportAnswer = Record<string, unknown>;

/**
 * Items written at once by the timer (about 5 ms of the event loop; see bench/RESULTS.md),
 * one chunk per `flushEveryMs`.
 */
const FLUSH_CHUNK = 500;

const REJECTED: Record<Signal, string> = {
  traces: "rejectedSpans",
  logs: "rejectedLogRecords",
  metrics: "rejectedDataPoints",
};

export class TelemetryReceiver {
  private queue = {
    spans: [] as SpanRecord[],
    logs: [] as LogRecordRow[],
    metrics: [] as MetricPointRow[],
  };
  private queued = 0;
  private readonly counters: Omit<TelemetryStats, "queued"> = {
    spans: { received: 0, stored: 0, dropped: 0 },
    logs: { received: 0, stored: 0, dropped: 0 },
    metrics: { received: 0, stored: 0, dropped: 0 },
  };
  private timer: NodeJS.Timeout | undefined;
  private readonly maxQueued: number;
  private readonly flushEveryMs: number;
  private closed = false;
  /** When the age limit was last applied to every table. */
  private retainedAt = 0;

  constructor(
    private readonly store: TelemetryStore,
    opts: ReceiverOptions = {},
  ) {
    this.maxQueued = opts.maxQueued ?? 20_000;
    this.flushEveryMs = opts.flushEveryMs ?? 200;
  }

  /**
   * Takes one OTLP export request. `body`: the raw bytes (protobuf) or the parsed JSON;
   * `scope`: the sender's, when its token names one (it wins over its resource attributes).
   * Throws `USAGE` for a body that is not an export request.
   */
  accept(signal: Signal, body: Buffer | unknown, scope?: Scope): ExportAnswer {
    let request: Record<string, unknown>;
    try {
      request = Buffer.isBuffer(body)
        ? decodeOtlp(signal, body)
        : (body as Record<string, unknown>) && typeof body === "object"
          ? (body as Record<string, unknown>)
          : {};
    } catch (e) {
      throw new CaravanError(
        "USAGE",
        `not an OTLP ${signal} export request: ${(e as Error).message}`,
      );
    }
    const dropped =
      signal === "traces"
        ? this.enqueue("spans", spansOf(request, scope))
        : signal === "logs"
          ? this.enqueue("logs", logRecordsOf(request, scope))
          : this.enqueue("metrics", metricPointsOf(request, scope));
    return dropped
      ? {
          partialSuccess: {
            [REJECTED[signal]]: dropped,
            errorMessage: "the receiver is busy: dropped",
          },
        }
      : {};
  }

  /** Adds a span recorded by caravan itself (a task run, a gateway hop); dropped when full. */
  recordSpan(span: SpanRecord): void {
    this.enqueue("spans", [span]);
  }

  /**
   * A project/domain's own limits (from its caravan.config's `telemetry`; `undefined`: the
   * home's), applied at once to what is kept.
   */
  setRetention(scope: Scope, settings: Partial<TelemetryRetention> | undefined): void {
    this.flush(FLUSH_CHUNK);
    this.store.setRetention(scope, settings);
    for (const table of ["spans", "log_records", "metric_points"] as const)
      this.store.retain(table, scope);
  }

  stats(): TelemetryStats {
    return structuredClone({ ...this.counters, queued: this.queued });
  }

  listTraces(filter?: TraceFilter): TraceSummary[] {
    this.flush(FLUSH_CHUNK);
    return this.store.listTraces(filter);
  }

  /** A trace's spans; `NOT_FOUND` when none is kept. */
  trace(traceId: string): SpanView[] {
    this.flush(FLUSH_CHUNK);
    const spans = this.store.trace(traceId);
    if (!spans)
      throw new CaravanError(
        "NOT_FOUND",
        `no trace ${traceId} is kept (caravan traces lists them; old ones go after a while)`,
      );
    return spans;
  }

  /** An app's newest OTLP log records (flushed first, as `trace`). */
  logRecords(filter: LogRecordFilter): LogRecordView[] {
    this.flush(FLUSH_CHUNK);
    return this.store.logRecords(filter);
  }

  /** An app's metrics with their newest points (flushed first, as `trace`). */
  metrics(filter: MetricFilter): MetricSeries[] {
    this.flush(FLUSH_CHUNK);
    return this.store.metrics(filter);
  }

  /** The log records written within a trace (flushed first, as `trace`). */
  logsOfTrace(traceId: string): TraceLogView[] {
    this.flush(FLUSH_CHUNK);
    return this.store.logsOfTrace(traceId);
  }

  /**
   * Writes what is queued now (a chunk of it before a query: a query sees what was received,
   * unless a flood is waiting, which it must not write on the event loop all at once). `chunk`:
   * at most this many items now, the rest after the event loop had its turn, so a big queue
   * never holds up the requests the control plane (and its gateway) serves.
   */
  flush(chunk = Infinity): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.queued === 0 || this.closed) return;
    const spans = this.queue.spans.splice(0, chunk);
    const logs = this.queue.logs.splice(0, chunk - spans.length);
    const metrics = this.queue.metrics.splice(0, chunk - spans.length - logs.length);
    const batch = { spans, logs, metrics };
    const written = batch.spans.length + batch.logs.length + batch.metrics.length;
    this.queued -= written;
    // The rest with the next tick of the timer, not at once: writing is what costs (~14 µs an
    // item), and it runs on the event loop the gateway shares, so a flood of spans is written
    // at FLUSH_CHUNK per flushEveryMs at most (2,500 a second) and the queue's bound drops the
    // excess, rather than the gateway's requests waiting behind SQLite.
    if (this.queued > 0) {
      this.timer = setTimeout(() => this.flush(chunk), chunk === Infinity ? 0 : this.flushEveryMs);
      this.timer.unref();
    }
    try {
      this.store.write(batch);
    } catch (e) {
      // A full disk, say: telemetry is lost and counted, the control plane goes on.
      console.error(`[caravan telemetry] a batch was not written: ${(e as Error).message}`);
      for (const kind of ["spans", "logs", "metrics"] as const)
        this.counters[kind].dropped += batch[kind].length;
      return;
    }
    for (const kind of ["spans", "logs", "metrics"] as const)
      this.counters[kind].stored += batch[kind].length;
    // The age limit on every table, now and then (a batch applies it to its own tables).
    if (Date.now() - this.retainedAt > 60_000) {
      this.retainedAt = Date.now();
      this.store.retainAll();
    }
  }

  close(): void {
    this.flush();
    this.closed = true;
  }

  /** Queues what fits; returns how many were dropped. */
  private enqueue<K extends keyof TelemetryReceiver["queue"]>(
    kind: K,
    items: TelemetryReceiver["queue"][K],
  ): number {
    const counter = this.counters[kind];
    counter.received += items.length;
    const room = this.closed ? 0 : Math.max(0, this.maxQueued - this.queued);
    const taken = items.length <= room ? items : items.slice(0, room);
    (this.queue[kind] as unknown[]).push(...taken);
    this.queued += taken.length;
    counter.dropped += items.length - taken.length;
    if (taken.length && !this.timer) {
      this.timer = setTimeout(() => this.flush(FLUSH_CHUNK), this.flushEveryMs);
      this.timer.unref();
    }
    return items.length - taken.length;
  }
}

export { TelemetryStore };
