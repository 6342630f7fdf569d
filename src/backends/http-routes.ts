/**
 * The control plane's HTTP API, written once: the local daemon registers these routes
 * (`local/server/api.ts`) and the client calls them (`http-client.ts`, `local/daemon.ts`).
 * Every route but `health` needs `Authorization: Bearer <token>`.
 */
import { CaravanError, type ErrorCode } from "../errors.ts";
import type { RunRequest } from "./contract.ts";

export const ROUTES = {
  health: "/v1/health",
  deploy: "/v1/deploy",
  reserve: "/v1/reserve",
  prepare: "/v1/prepare",
  discard: "/v1/discard",
  status: "/v1/status",
  stop: "/v1/stop",
  delete: "/v1/delete",
  logs: "/v1/logs",
  /** POST starts a run (`?wait=ms`), GET lists them. */
  runs: "/v1/runs",
  /** GET one run (`?wait=ms`), DELETE it. */
  run: "/v1/runs/:id",
  /** POST deletes finished runs: `{ project?, domain?, olderThanMs?, keep? }`. */
  runsPrune: "/v1/runs/prune",
  /** POST runs a deployed job again (body: scope). */
  jobRerun: "/v1/jobs/:name/rerun",
  tokens: "/v1/tokens",
  token: "/v1/tokens/:id",
  loginLink: "/v1/login-link",
  /** POST: a one-time login link to the web console (`caravan console`). */
  consoleLink: "/v1/console-link",
  /** POST `{ scope, name }`: start a stopped environment again from its last deploy. */
  start: "/v1/start",
  /** POST `{ scope, name }`: replace an environment's processes with fresh ones. */
  restart: "/v1/restart",
  /** POST `{ scope, name, replicas }`: set a serving app's replicas within its bounds. */
  scale: "/v1/scale",
  /** GET `?project&domain`: an environment's declaration (no values) and its revisions. */
  environment: "/v1/environments/:name",
  /** GET `?project&domain[&after=id][&limit=n]`: events (deploys, crashes, restarts, scaling). */
  events: "/v1/events",
  /**
   * GET `?project&domain`: a server-sent event stream: `status` (the scope's environments,
   * with `health`) on every change and every second, `event` for each new event, `runs` when
   * a task run changed.
   */
  watch: "/v1/watch",
  shutdown: "/v1/shutdown",
  /** Prometheus text. */
  metrics: "/metrics",
  /**
   * GET the newest traces (`?app=&project=&domain=&status=ok|error&minDurationMs=&limit=`),
   * with the receiver's counters.
   */
  traces: "/v1/traces",
  /** GET one trace's spans. */
  trace: "/v1/traces/:id",
  /** GET `?app&project&domain[&limit=n]`: an app's newest OTLP log records, with their trace ids. */
  logRecords: "/v1/log-records",
  /** GET `?app&project&domain[&name=][&limit=n]`: an app's OTLP metrics, newest points each. */
  appMetrics: "/v1/metrics",
} as const;

/**
 * The OTLP/HTTP receiver, on the API's own port under this path: an exporter given
 * `OTEL_EXPORTER_OTLP_ENDPOINT=<api>/otlp` posts to `/otlp/v1/traces`, `/otlp/v1/logs` and
 * `/otlp/v1/metrics` (protobuf or JSON), authenticated by the run token in
 * `OTEL_EXPORTER_OTLP_HEADERS`. Under a prefix, since OTLP's own `/v1/logs` is the API's.
 */
export const OTLP_BASE = "/otlp";
export const OTLP_ROUTES = {
  traces: `${OTLP_BASE}/v1/traces`,
  logs: `${OTLP_BASE}/v1/logs`,
  metrics: `${OTLP_BASE}/v1/metrics`,
} as const;

/** The HTTP status of an error answer, by the error's code (anything else: 422). */
export const HTTP_STATUS_OF: Partial<Record<ErrorCode, number>> = {
  UNAUTHORIZED: 401,
  NOT_DEPLOYED: 404,
  NO_SUCH_RUN: 404,
  NOT_FOUND: 404,
  UNKNOWN_TASK: 404,
  DEPENDENTS_EXIST: 409,
  DEPENDENCY_GONE: 409,
  NAME_TAKEN: 409,
  USAGE: 400,
  VALIDATION: 400,
};

/**
 * A route's path with its `:params` filled in (URI-encoded) and an optional query.
 * @example pathOf(ROUTES.run, { id: "run-1" }, { wait: "100" }) // "/v1/runs/run-1?wait=100"
 */
export function pathOf(
  route: string,
  params: Record<string, string> = {},
  query?: URLSearchParams | Record<string, string>,
): string {
  const path = route.replace(/:(\w+)/g, (_, name: string) => {
    const value = params[name];
    if (value === undefined) throw new Error(`route ${route} needs :${name}`);
    return encodeURIComponent(value);
  });
  const q = query ? new URLSearchParams(query).toString() : "";
  return q ? `${path}?${q}` : path;
}

/** A run request's body, checked: the run API answers USAGE (400) for anything else. */
export function runRequestOf(body: unknown): RunRequest {
  const b = body as Partial<RunRequest> | undefined;
  if (
    !b ||
    typeof b.task !== "string" ||
    !Array.isArray(b.args) ||
    typeof b.scope?.project !== "string" ||
    typeof b.scope?.domain !== "string"
  ) {
    throw new CaravanError(
      "USAGE",
      'a run needs a JSON body {"scope": {"project", "domain"}, "task": "<environment>.<task>", "args": [...]}',
    );
  }
  return b as RunRequest;
}
