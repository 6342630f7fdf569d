/**
 * What the control plane's HTTP API answers, as plain data: the types the CLI's backends and
 * the web console (console/src/api.ts) both read, in one place. No imports, so the console's
 * compiler (DOM, no node types) can take them as they are.
 */

export type RunStatus = "queued" | "running" | "succeeded" | "failed";

/** A task run: a record on the control plane from the moment it is asked for. */
export interface RunRecord {
  id: string;
  project: string;
  domain: string;
  /** The task environment it runs in. */
  environment: string;
  /** The task's id, `<environment>.<task>`. */
  task: string;
  /** The environment's revision it ran (the deployed one when it was created). */
  revision: string;
  status: RunStatus;
  args: unknown[];
  /** The task's result (JSON, at most 16 MiB), once succeeded; not in a list of runs. */
  output?: unknown;
  /** Why the last attempt failed: the task's own error name, message and stack. */
  error?: { name: string; message: string; stack?: string };
  attempts: number;
  /** Who asked: `cli`, `api`, or the app that called it. */
  caller?: string;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  durationMs?: number;
  /** What the task printed (the last 64 KiB), in `runs show`. */
  logs?: string;
}

/** One trace, summed up. Times are milliseconds (fractional). */
export interface TraceSummary {
  traceId: string;
  /** The name of its root span (the earliest span with no parent in the trace). */
  root: string;
  /** The services (apps) with spans in it. */
  apps: string[];
  spans: number;
  startMs: number;
  durationMs: number;
  /** "error" when a span's status is an error. */
  status: "ok" | "error";
}

/** A span of a trace, as the CLI and the console show it. */
export interface SpanView {
  spanId: string;
  parentSpanId: string | null;
  name: string;
  kind: "internal" | "server" | "client" | "producer" | "consumer" | "unspecified";
  app: string;
  startMs: number;
  durationMs: number;
  status: "unset" | "ok" | "error";
  statusMessage?: string;
  attributes: Record<string, unknown>;
}

/** A log record written within a trace (an app's OTLP logs with its trace and span ids). */
export interface TraceLogView {
  timeMs: number;
  app: string;
  spanId: string | null;
  /** OTLP severity text, e.g. "INFO" (empty when the sender gave none). */
  severity: string;
  body: string;
  attributes: Record<string, unknown>;
}

/** An OTLP log record of an app, with the trace it was written in (null: none). */
export interface LogRecordView extends TraceLogView {
  traceId: string | null;
}

/** One metric of an app: its newest points, oldest first. A histogram's value is its sum. */
export interface MetricSeries {
  name: string;
  unit: string;
  /** gauge, sum, histogram, exponentialHistogram or summary. */
  type: string;
  points: {
    timeMs: number;
    value: number | null;
    count: number | null;
    attributes: Record<string, unknown>;
  }[];
}

/** `describe`'s answer: an environment's declaration as the console shows it, values left out. */
export interface EnvironmentDescription {
  name: string;
  kind: string;
  desired: "running" | "stopped";
  description?: string;
  dependsOn: string[];
  /** Environments of the scope that depend on this one (a delete takes them down first). */
  dependents: string[];
  secrets: string[];
  inputs: { name: string; kind: string; envVar: string }[];
  scaling?: { min: number; max: number };
  requiresAuth?: boolean;
  serveKind?: string;
  links?: { path: string; title: string }[];
  /** Task ids, `<environment>.<task>`. */
  tasks?: string[];
  revisions: { revision: string; deployedAt: string }[];
}
