/**
 * The protocol between the control plane and the runtime inside an app or task-worker
 * process, over the child's IPC channel. Two phases, so code can be loaded while
 * dependencies still start:
 *
 *   runtime -> { type: "loaded", tasks? }  the bundle is imported and the environment found
 *                                           (a task environment lists the tasks it registered)
 *   plane   -> { type: "start" }           every dependency is ready: run start-up hooks, listen
 *   runtime -> { type: "ready" }           the server listens (a server function: its port
 *                                           answers HTTP); a task worker: ready for runs
 *   runtime -> { type: "failed", error }   loading or starting threw (the process then exits 1)
 *
 * A task worker then takes runs, one at a time:
 *
 *   plane   -> { type: "run", runId, task, args, traceparent? }  (the run's span: the parent
 *                                                   of what the task does, when traced)
 *   runtime -> { type: "log", runId, text }        what the task printed (also in the env's log)
 *   runtime -> { type: "result", runId, ok, output | error }
 *
 * Without an IPC channel (started by hand) an app starts right after loading.
 *
 * A warm process (the local control plane's pool, `WARM_ENV` set) first only boots: it imports
 * caravan's runtime and the preload modules, with no user code and no secrets, then waits:
 *
 *   runtime -> { type: "warm", rss }         booted, preloaded; idle (its resident memory)
 *   runtime -> { type: "warm-failed", module, error }  a preload module threw (then it exits)
 *   plane   -> { type: "assign", env, cwd, logFile }   this process is now one app's or task
 *                                             worker's: it takes the environment a cold one
 *                                             would have started with, then runs as above
 */
export type RuntimeMessage =
  | { type: "loaded"; tasks?: string[] }
  | { type: "ready"; port: number }
  | { type: "failed"; error: string }
  | { type: "log"; runId: string; text: string }
  | ({ type: "result"; runId: string } & TaskOutcome)
  | { type: "warm"; rss: number }
  | { type: "warm-failed"; module: string; error: string };

export type PlaneMessage =
  | { type: "start" }
  | { type: "run"; runId: string; task: string; args: unknown[]; traceparent?: string }
  | WarmAssignment;

/**
 * What turns a warm process into a cold one's equal: the whole environment a cold process
 * of the app is spawned with (`RUNTIME_ENV` included), its working directory and the log its
 * stdout and stderr must write to.
 */
export interface WarmAssignment {
  type: "assign";
  env: Record<string, string>;
  cwd: string;
  logFile: string;
}

/**
 * Set (to a JSON array of module paths to import) in a warm process's environment only: the
 * runtime then boots and waits for an assignment instead of reading `RUNTIME_ENV`.
 */
export const WARM_ENV = "CARAVAN_WARM";
/**
 * Room a warm process keeps in its initial environment block (a variable of this many
 * spaces) to rewrite in place with the app's variables once assigned, so that
 * /proc/<pid>/environ shows what a cold process's shows. A larger environment starts cold.
 */
export const WARM_ROOM_ENV = "CARAVAN_WARM_ROOM";
export const WARM_ROOM_BYTES = 64 * 1024;

/** The size of an environment as the kernel lays it out: `NAME=value\0` for each variable. */
export function environBytes(env: Record<string, string>): number {
  let n = 0;
  for (const [k, v] of Object.entries(env)) n += Buffer.byteLength(k) + Buffer.byteLength(v) + 2;
  return n;
}

/** What a task attempt ended with; an error keeps the task's own message and stack. */
export type TaskOutcome = { ok: true; output: unknown } | { ok: false; error: TaskErrorInfo };

/**
 * What a registration (kind "register") ended with: the task ids the environment registered
 * when its code loaded (`more`: how many were left out to fit the termination message), or
 * why it could not (the import failed, the environment or one of its tasks is missing).
 */
export type RegisterOutcome =
  { ok: true; tasks: string[]; more?: number } | { ok: false; error: TaskErrorInfo };

export interface TaskErrorInfo {
  name: string;
  message: string;
  stack?: string;
}

/** Passed to the runtime as JSON in `CARAVAN_RUNTIME`. */
export interface RuntimeConfig {
  /**
   * An app serves; a task worker runs its environment's tasks on request; a run (a cluster's
   * Job) runs one task once, writes its outcome as the termination message and exits; a
   * registration (a cluster's Job, at deploy) loads the code, checks that the environment
   * registers `tasks`, writes a `RegisterOutcome` the same way and exits; a job (a function
   * JobEnvironment) calls its function once and exits 0 when it resolved, 1 when it threw.
   */
  kind: "app" | "task" | "run" | "register" | "job";
  /** kind "run": the task id and its arguments. */
  task?: string;
  args?: unknown[];
  /** kind "register": the task ids the deployed spec declares. */
  tasks?: string[];
  name: string;
  project: string;
  domain: string;
  /** Absolute path of the snapshot's entry module. */
  entry: string;
  /** Where the user's code came from: the process's working directory. */
  sourceRoot: string;
  port: number;
  host: string;
  endpoints: Record<string, string>;
  publicEndpoints: Record<string, string>;
  inputs: Record<string, string>;
}

export const RUNTIME_ENV = "CARAVAN_RUNTIME";
/**
 * Where a run writes its outcome (`TaskOutcome` as JSON; a registration its
 * `RegisterOutcome`): the container's termination
 * message, which the cluster keeps with the pod's status (at most 4 KiB).
 */
export const TERMINATION_LOG = "/dev/termination-log";
export const TERMINATION_LIMIT = 4096;
/**
 * The variables every app and task process gets from the control plane (besides its own
 * env vars, inputs and dependency endpoints); a command app's `${VAR}`s may use them.
 */
export const LAUNCH_VARS = [
  "CARAVAN_APP_NAME",
  "CARAVAN_PROJECT",
  "CARAVAN_DOMAIN",
  "CARAVAN_INPUTS_FILE",
  "CARAVAN_API_URL",
] as const;
export type LaunchVar = (typeof LAUNCH_VARS)[number];

/** How code in an app or task reaches the control plane's run API (see `run()`). */
export const API_URL_ENV = "CARAVAN_API_URL";
export const API_TOKEN_ENV = "CARAVAN_API_TOKEN";

/**
 * Set where nothing watches the process over IPC (a pod): the runtime then answers
 * `GET /ready` on this port, 200 once the app serves and 503 before (the pod's readiness and
 * startup probes). One of the ports reserved for the platform, so it never meets an app's.
 */
export const HEALTH_PORT_ENV = "CARAVAN_HEALTH_PORT";
export const HEALTH_PORT = 8022;
export const HEALTH_PATH = "/ready";
