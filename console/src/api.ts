/**
 * The console's client of the control plane's HTTP API (the CLI's API; routes in
 * src/backends/http-routes.ts). The browser's session cookie authenticates; a request that
 * changes something also sends `x-caravan-console`, which another site's page cannot send.
 */
// What the API answers: the server's own types (src/backends/wire.ts), never a copy.
export type {
  EnvironmentDescription as EnvDescription,
  MetricSeries,
  RunRecord,
  SpanView,
  TraceSummary,
} from "../../src/backends/wire.ts";
import type { TraceLogView } from "../../src/backends/wire.ts";
/** A log record as the console lists it: in a trace (no trace id) or an app's (with one). */
export type LogRecordView = TraceLogView & { traceId?: string | null };

export interface Scope {
  project: string;
  domain: string;
}

export interface Traffic {
  requests: number;
  errors: number;
  p50Ms: number;
  p99Ms: number;
}

export interface EnvStatus {
  project: string;
  domain: string;
  name: string;
  kind: "app" | "task" | "job";
  state: "starting" | "ready" | "restarting" | "failed" | "stopped";
  revision: string;
  endpoint?: string;
  internalEndpoint?: string;
  restarts: number;
  pids: number[];
  replicas?: number;
  traffic?: Traffic;
  health?: { state: "healthy" | "degraded"; reason?: string };
  dependsOn?: string[];
  error?: string;
  updatedAt: string;
}

export interface EventRecord {
  id: number;
  at: string;
  name: string;
  type: string;
  message: string;
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/**
 * The API's routes under the console's path (`/console/api/v1/…` is `/v1/…`): the session
 * cookie is scoped to `/console/`, so no other server on this host ever receives it.
 */
export const API = "/console/api";

export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(`${API}${path}`, {
    method,
    credentials: "same-origin",
    headers: {
      "x-caravan-console": "1",
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const json = (await res.json().catch(() => ({}))) as { error?: { message?: string } } & T;
  if (!res.ok) throw new ApiError(json.error?.message ?? `answered ${res.status}`, res.status);
  return json;
}

export const query = (q: object) =>
  new URLSearchParams(
    Object.entries(q).flatMap(([k, v]) => (v === undefined ? [] : [[k, String(v)]])),
  ).toString();

/** The state a person reads, in words (colour is never the only signal). */
export function shownState(e: EnvStatus): string {
  if (e.state !== "ready") return e.state;
  if (e.health?.state === "degraded") return "degraded";
  if (e.kind === "app" && e.replicas === 0) return "scaled to zero";
  return "ready";
}

/** Each line of a streamed body, as it arrives (logs with follow). */
export async function* lines(res: Response, signal: AbortSignal): AsyncIterable<string> {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let partial = "";
  try {
    while (!signal.aborted) {
      const { done, value } = await reader.read();
      if (done) break;
      const parts = (partial + decoder.decode(value, { stream: true })).split("\n");
      partial = parts.pop() ?? "";
      yield* parts;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  if (partial) yield partial;
}

export function formatMs(ms: number | undefined): string {
  if (ms === undefined) return "-";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export const formatTime = (iso: string) => new Date(iso).toLocaleString();

/** A colour per app, the same wherever the app is shown (a hash of its name). */
export function colourOf(app: string): string {
  let h = 0;
  for (const c of app) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return `hsl(${h % 360} 65% 48%)`;
}
