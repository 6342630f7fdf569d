/**
 * What the engine needs from a place that runs environments. The local control plane
 * implements it (in-process for `serve`, over HTTP for the daemon); a Kubernetes backend
 * implements the same calls with manifests and rollouts. Everything here is plain JSON so
 * it can cross a process or network boundary.
 */
import type { EnvironmentKind } from "../sdk/environment.ts";
import type { EnvironmentSpec } from "../sdk/spec.ts";
import type { RunRecord, RunStatus, SpanView, TraceLogView, TraceSummary } from "./wire.ts";
// The API's answers, declared once for the backends and the web console.
export type * from "./wire.ts";

export type { AppSpec, EnvironmentSpec, InputSpec, JobSpec, TaskSpec } from "../sdk/spec.ts";

export interface Scope {
  project: string;
  domain: string;
}

/** An immutable, content-addressed snapshot of the user's code. */
export interface CodeRef {
  /** Content hash of the bundle directory. */
  hash: string;
  /** Absolute path of the bundle's entry module (under `$CARAVAN_HOME/bundles/<hash>/`). */
  entry: string;
  /**
   * An app's own bundle: only the module that declares it and what that imports (the code its
   * revision covers), when that module alone declares it. The local backend runs it instead of
   * `entry`, so an app's process evaluates no other app's module; `entry` still has it all.
   */
  ownEntry?: string;
  /** Directory the user's code came from (the working directory of its processes). */
  sourceRoot: string;
  /** The compiled caravan runtime the snapshot's `caravan` imports point at (its main module). */
  runtime: string;
}

export interface Endpoints {
  /** Through the gateway, for people and tools (authenticated when requiresAuth). */
  endpoint: string;
  /** For app-to-app calls. */
  internalEndpoint: string;
}

export interface DeployRequest {
  scope: Scope;
  name: string;
  kind: EnvironmentKind;
  /** The environment's normalised spec (`Environment.spec()`): JSON only. */
  spec: EnvironmentSpec;
  /** Identity of what would run: spec, code and resolved inputs. Equal revision: unchanged. */
  revision: string;
  code: CodeRef;
  /** Input values with `AppEndpoint`s already resolved to URLs, by input name. */
  inputs: Record<string, string>;
  /** Endpoints of the apps this environment may call (its app dependencies), by name. */
  dependencies: Record<string, Endpoints>;
  /** Restart even when the revision is unchanged. */
  force?: boolean;
  /**
   * Absolute path of the file that declares the environment, recorded with it: a deploy of
   * the same name declared in another file is refused (`NAME_TAKEN`) unless `replace`.
   */
  source?: string;
  /** Take over an environment of the same name that another file deployed. */
  replace?: boolean;
  /**
   * The app's file snapshot (`include` and File/Dir inputs), content-addressed; a command app
   * with `include` runs there. Secrets are never part of a request: the backend resolves
   * `spec.secrets` (names) itself when it launches the process.
   */
  files?: { hash: string; dir: string };
  /**
   * What the backend keeps of this project/domain's telemetry (caravan.config's `telemetry`
   * limits; the local control plane's receiver). Not part of the revision: changing it
   * restarts nothing.
   */
  telemetry?: TelemetryLimits;
  /**
   * The warm pool the client asks for (`warmPool` in caravan.config; size 0 with
   * `--no-warm`): a backend with one (the local control plane) sizes it by the latest deploy,
   * and starts this environment cold when the size is 0. Not part of the revision.
   */
  warmPool?: WarmPoolSettings;
}

/** `warmPool` in caravan.config: how many warm runtime processes, preloading what. */
export interface WarmPoolSettings {
  /** Warm processes kept ready (0: none, every start is cold). @default the backend's */
  size?: number;
  /**
   * Packages a warm process imports before it is assigned: learned from recent deploys'
   * imports when absent, exactly these when a list, none when false.
   */
  preload?: string[] | false;
}

export interface DeployResult extends Partial<Endpoints> {
  status: "ready" | "unchanged";
  revision: string;
}

export type EnvironmentState = "starting" | "ready" | "restarting" | "failed" | "stopped";

/** One instance of an environment: a replica or task worker process, a pod. */
export interface InstanceStatus {
  /** Its name while it lives: `pid-1234` for a local process, the pod's name on Kubernetes. */
  id: string;
  /** Serving (an app's replica) or taking runs (a task worker). */
  ready: boolean;
  /** The process id, where the instance is a process on this machine. */
  pid?: number;
  /** Restarts of this instance, where the backend counts them per instance. */
  restarts?: number;
  /** The machine it runs on, where that is not this one (a Kubernetes node). */
  node?: string;
}

export interface EnvironmentStatus extends Partial<Endpoints> {
  project: string;
  domain: string;
  name: string;
  kind: EnvironmentKind;
  state: EnvironmentState;
  revision: string;
  restarts: number;
  /** Process ids of `instances` that are processes on this machine (DESIGN §5 `status --json`). */
  pids: number[];
  instances: InstanceStatus[];
  dependsOn: string[];
  /** Last failure, when state is failed or restarting. */
  error?: string;
  /**
   * Addresses beyond loopback its replicas listen on (`0.0.0.0:23456`): their ports answer
   * there without the gateway's auth. Local processes only.
   */
  listensBeyondLoopback?: string[];
  updatedAt: string;
  /** Replicas serving an app now (0 when scaled to zero). */
  replicas?: number;
  /** Replicas the app should have now, where the backend knows (a Deployment's spec). */
  desiredReplicas?: number;
  /** What the gateway saw since the control plane started: requests, 5xx, latency. */
  traffic?: { requests: number; errors: number; p50Ms: number; p99Ms: number };
  /** A job's runs, newest first (the last few). */
  jobRuns?: JobRun[];
}

/** One run of a job (a JobEnvironment): one attempt, or all of them on a cluster. */
export interface JobRun {
  revision: string;
  /** 1 for the first attempt (local backend; a cluster counts them inside one Job). */
  attempt: number;
  status: "running" | "succeeded" | "failed";
  /** The process's exit code, once it exited (null when a signal ended it). */
  exitCode?: number | null;
  /** Why it failed: the exit, the timeout, or the pod's reason. */
  error?: string;
  startedAt: string;
  finishedAt?: string;
  durationMs?: number;
}

export interface RunRequest {
  scope: Scope;
  /** A task id, `<environment>.<task>`. */
  task: string;
  args: unknown[];
  caller?: string;
  /**
   * The client's idempotency key: a request resent after a lost answer (the control plane
   * restarted mid-request, say) gets the run the first one created instead of a second run.
   */
  requestId?: string;
  /**
   * The W3C `traceparent` of the request that asked for the run (the run API takes it from
   * the header): the run's span joins that trace.
   */
  traceparent?: string;
}

/** Which finished runs `pruneRuns` deletes: older than this, beyond the newest `keep` per project/domain. */
export interface RunPrune {
  olderThanMs?: number;
  keep?: number;
}

export interface RunFilter {
  task?: string;
  status?: RunStatus;
  limit?: number;
}

export interface LogsOptions {
  tail?: number;
  follow?: boolean;
  signal?: AbortSignal;
}

/** An API token for apps' public endpoints, as listed (never its value). */
export interface TokenInfo {
  id: string;
  name: string;
  /** ISO 8601. */
  createdAt: string;
  lastUsedAt?: string;
  revoked: boolean;
}

/** A token just created: its value is in this answer only (the backend keeps a hash). */
export interface NewToken {
  id: string;
  name: string;
  token: string;
}

/**
 * Tokens for apps' public endpoints (`requiresAuth`), a backend capability: API tokens sent
 * as `Authorization: Bearer`, and one-time links that open an app in a browser.
 */
export interface TokenAccess {
  create(name?: string): Promise<NewToken>;
  /** Every API token, oldest first, revoked ones included. */
  list(): Promise<TokenInfo[]>;
  /** Revokes the live token with this id (or else this name); `NOT_FOUND` when there is none. */
  revoke(idOrName: string): Promise<void>;
  /** A one-time URL (valid a few minutes) that opens `app`'s public endpoint in a browser. */
  link(scope: Scope, app: string): Promise<string>;
  /** A one-time URL that logs a browser into the control plane's web console (optional). */
  consoleLink?(): Promise<string>;
}

/** What a deploy of one environment would do (`caravan plan` asks backends that can tell). */
export interface Change {
  /**
   * `create`: not deployed; `update`: a new revision replaces the deployed one; `start`: the
   * same revision, stopped or not serving; `unchanged`: nothing to do.
   */
  action: "create" | "update" | "start" | "unchanged";
  /** The deployed revision, if any. */
  from?: string;
  to: string;
  /** What would be written, e.g. "Deployment shop-dev/web" (checked by a dry run where possible). */
  writes: string[];
  /** Why the backend would refuse it (a dry run's answer), when it would. */
  error?: string;
}

export interface TelemetryLimits {
  maxSpans?: number;
  maxLogRecords?: number;
  maxMetricPoints?: number;
  maxAgeHours?: number;
}

/** Which traces to list: newest first. */
export interface TraceFilter {
  /** Only traces with a span from this app (its `service.name`). */
  app?: string;
  project?: string;
  domain?: string;
  /** Only traces with (`error`) or without (`ok`) a span whose status is an error. */
  status?: "ok" | "error";
  /** Only traces at least this long (first span's start to last span's end). */
  minDurationMs?: number;
  /** @default 50 */
  limit?: number;
}

/** Which OTLP log records to read: one app's, in a scope, newest first. */
export interface LogRecordFilter {
  app: string;
  project?: string;
  domain?: string;
  /** @default 200 */
  limit?: number;
}

/** Which metric points to read: one app's, in a scope, newest first (then by time). */
export interface MetricFilter {
  app: string;
  project?: string;
  domain?: string;
  /** Only this metric (its OTLP name). */
  name?: string;
  /** Points per metric, at most. @default 300 */
  limit?: number;
}

/** What the receiver took, kept and dropped (when busy), by signal, since it started. */
export interface TelemetryStats {
  spans: { received: number; stored: number; dropped: number };
  logs: { received: number; stored: number; dropped: number };
  metrics: { received: number; stored: number; dropped: number };
  /** Items waiting to be written now. */
  queued: number;
}

export interface TraceAccess {
  list(filter?: TraceFilter): Promise<{ traces: TraceSummary[]; telemetry: TelemetryStats }>;
  /** A trace's spans by start time, and the log records written within it; `NOT_FOUND` when it has no span. */
  get(traceId: string): Promise<{ traceId: string; spans: SpanView[]; logs: TraceLogView[] }>;
}

export interface Backend {
  /** Deploys one environment; resolves once it is ready (or unchanged), rejects with a CaravanError. */
  deploy(request: DeployRequest): Promise<DeployResult>;
  /** Everything deployed in `scope`, or in every scope when omitted. */
  status(scope?: Scope): Promise<EnvironmentStatus[]>;
  /** Stops the named environments (dependents first), keeping their definitions. */
  stop(scope: Scope, names: string[], opts?: { cascade?: boolean }): Promise<string[]>;
  /** Stops and forgets the named environments (dependents first). */
  delete(scope: Scope, names: string[], opts?: { cascade?: boolean }): Promise<string[]>;
  /**
   * Two-phase start (optional). `reserve` gives the endpoints of these apps, allocating what
   * they lack, so every request can be built before any dependency is up; `prepare` loads a
   * new revision's code without starting it, so a later `deploy` of the same revision only
   * has to start it; `discard` drops a prepared revision that will not be deployed.
   */
  reserve?(scope: Scope, names: string[]): Promise<Record<string, Endpoints>>;
  prepare?(request: DeployRequest): Promise<void>;
  discard?(scope: Scope, name: string): Promise<void>;
  /**
   * Task runs (optional). `startRun` records a run and starts it, waiting up to `waitMs` for
   * it to finish; `getRun` waits the same way for a run in flight.
   */
  startRun?(request: RunRequest, opts?: { waitMs?: number }): Promise<RunRecord>;
  getRun?(id: string, opts?: { waitMs?: number }): Promise<RunRecord>;
  /** Newest first; a backend may leave out `output` and `logs` (the local one does; `getRun` has them). */
  listRuns?(scope: Scope | undefined, filter?: RunFilter): Promise<RunRecord[]>;
  /**
   * Forgetting runs (optional): `deleteRun` deletes one finished run (`NO_SUCH_RUN`), one in
   * flight is refused; `pruneRuns` deletes the finished runs `opts` selects and returns their ids.
   */
  deleteRun?(id: string): Promise<void>;
  pruneRuns?(scope: Scope | undefined, opts: RunPrune): Promise<string[]>;
  /**
   * Runs a deployed job again, though its revision did not change (optional; `caravan job
   * rerun`): resolves once it succeeded, rejects when it failed.
   */
  rerunJob?(scope: Scope, name: string): Promise<DeployResult>;
  /** Tokens for apps' public endpoints (optional): the backend's gateway checks them. */
  readonly tokens?: TokenAccess;
  /** The traces its apps reported (optional; the local control plane's OTLP receiver). */
  readonly traces?: TraceAccess;
  /**
   * Refuses what this backend cannot honour (optional), before anything is deployed: called
   * with every environment of a plan once it is valid.
   */
  validate?(scope: Scope, specs: EnvironmentSpec[]): void;
  /**
   * What `deploy(request)` would change, without changing anything (optional; the kubernetes
   * backend answers with a server-side dry run of every object it would write).
   */
  preview?(request: DeployRequest): Promise<Change>;
  /** An app's log lines. */
  logs(scope: Scope, name: string, opts?: LogsOptions): AsyncIterable<string>;
  /** Releases connections (not the environments). */
  close(): Promise<void>;
}
