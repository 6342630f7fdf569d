/**
 * Running tasks: `run(task, ...args)` and `task(id).run(...args)` create a run on the control
 * plane, which executes it in a worker of the task's environment and keeps the record.
 * From a script, `run(task)` first deploys the task's environment (once per process; an
 * unchanged one is left alone). Inside an app or a task worker, the runtime gives the
 * control plane's address and a token for runs in the app's project/domain, and the deployed
 * revision runs.
 */
import { randomUUID } from "node:crypto";
import type { Backend, RunRecord, Scope } from "./backends/contract.ts";
import { CaravanError } from "./errors.ts";
import { API_TOKEN_ENV, API_URL_ENV } from "./runtime/protocol.ts";
import { loadConfig, type ResolvedConfig } from "./sdk/config.ts";
import type { Task } from "./sdk/environment.ts";
import { shared } from "./sdk/global.ts";
import { assertJsonValue } from "./sdk/serialize.ts";
import { checkRunArgs } from "./sdk/run-limits.ts";

export type { RunRecord } from "./backends/contract.ts";

/** A task named by id (`<environment>.<task>`): for code that does not import its declaration. */
export interface TaskRef<A extends unknown[] = unknown[], R = unknown> {
  readonly id: string;
  run(...args: A): Promise<Awaited<R>>;
}

export interface RunOptions {
  project?: string;
  domain?: string;
  /** Who is asking, recorded with the run. @default "api" (the app's name inside an app) */
  caller?: string;
  /** The configuration to use. @default read from `init()`'s rootDir or the working directory */
  config?: ResolvedConfig;
  /** Called once the run is recorded, with its id (the CLI prints it). */
  onStart?: (run: RunRecord) => void;
}

/** How long one request may hold for a run to finish before the client asks again. */
const WAIT_MS = 25_000;
/** How often a waiting run looks for the control plane again when it is unreachable. */
const RECONNECTS = 3;
/** The pause before the second look, doubled before the third. */
const RECONNECT_PAUSE_MS = 250;

/**
 * Runs a task on the control plane and returns its output. A failure throws `TASK_FAILED`
 * with the task's own message, and its stack in `details.error.stack`.
 * @example const model = await run(train, 3);
 */
export async function run<A extends unknown[], R>(
  task: Task<A, R> | TaskRef<A, R>,
  ...args: A
): Promise<Awaited<R>> {
  const record = await runTask(task, args);
  return record.output as Awaited<R>;
}

/**
 * A handle on a deployed task by id, e.g. from an app that depends on its environment.
 * @example const output = await task("training-env.train").run(3);
 */
export function task<A extends unknown[] = unknown[], R = unknown>(id: string): TaskRef<A, R> {
  if (typeof id !== "string" || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?\.[A-Za-z_][\w-]*$/.test(id)) {
    throw new CaravanError(
      "VALIDATION",
      `task(${JSON.stringify(id)}): a task id is "<environment>.<task>", e.g. "training-env.train"`,
    );
  }
  const ref: TaskRef<A, R> = {
    id,
    run: async (...args: A): Promise<Awaited<R>> =>
      (await runTask(ref as TaskRef, args)).output as Awaited<R>,
  };
  return ref;
}

/** Runs a task and returns the whole record (`caravan run` prints it); throws when it failed. */
export async function runTask(
  target: Task<any[], any> | TaskRef<any[], any>,
  args: unknown[],
  opts: RunOptions = {},
): Promise<RunRecord> {
  const id = target.id;
  const names = "parameters" in target ? target.parameters : [];
  // JSON turns a missing trailing argument into null, which would defeat a default value.
  const sent = [...args];
  while (sent.length && sent.at(-1) === undefined) sent.pop();
  sent.forEach((value, i) => {
    const label = `argument ${i + 1}${names[i] ? ` (${names[i]})` : ""}`;
    // One before a given argument would arrive as null, not as missing.
    if (value === undefined) {
      throw new CaravanError(
        "NOT_SERIALIZABLE",
        `run ${id}: ${label} is undefined while a later argument is given; JSON would pass null (its default would not apply): give it a value`,
        { path: label },
      );
    }
    assertJsonValue(value, label, `run ${id}`);
  });
  checkRunArgs(id, sent);
  const connection = await connect(target, opts);
  const { scope, caller, close } = connection;
  let backend = connection.backend;
  // Resending this request is safe: the control plane makes one run of one request id.
  const request = {
    scope,
    task: id,
    args: sent,
    caller: opts.caller ?? caller,
    requestId: randomUUID(),
  };
  // The control plane this process knew may have gone (restarted, or stopped): find the
  // current one, starting it if need be, and ask again. One dying under the call still looks
  // alive for a moment and its port may still take a connection (then resets it): so looked
  // up again a few times, a moment apart, before giving up.
  const retried = async <T>(call: (b: Backend) => Promise<T>): Promise<T> => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await call(backend);
      } catch (e) {
        const unreachable = (e as CaravanError).code === "SERVER_UNREACHABLE";
        if (!connection.reconnect || !unreachable || attempt === RECONNECTS) throw e;
        if (attempt > 0) await new Promise((r) => setTimeout(r, RECONNECT_PAUSE_MS * attempt));
        backend = await connection.reconnect();
      }
    }
  };
  try {
    let record = await retried((b) => b.startRun!(request, { waitMs: WAIT_MS }));
    opts.onStart?.(record);
    while (record.status === "queued" || record.status === "running") {
      const runId = record.id;
      record = await retried((b) => b.getRun!(runId, { waitMs: WAIT_MS }));
    }
    if (record.status === "failed") throw runFailed(record);
    return record;
  } finally {
    await close();
  }
}

/** The error a failed run throws: the task's message, its stack kept. */
export function runFailed(record: RunRecord): CaravanError {
  const e = record.error ?? { name: "Error", message: "unknown failure" };
  const attempts = record.attempts === 1 ? "" : ` after ${record.attempts} attempts`;
  const error = new CaravanError(
    "TASK_FAILED",
    `${record.task} failed${attempts} (run ${record.id}): ${e.name && e.name !== "Error" ? `${e.name}: ` : ""}${e.message}`,
    { runId: record.id, task: record.task, error: e },
  );
  if (e.stack) error.stack = `${error.name}: ${error.message}\n  in the task:\n${e.stack}`;
  return error;
}

async function connect(
  target: Task<any[], any> | TaskRef<any[], any>,
  opts: RunOptions,
): Promise<{
  backend: Backend;
  scope: Scope;
  caller: string;
  close: () => Promise<void>;
  /** A fresh connection, when the cached one's control plane went away. */
  reconnect?: () => Promise<Backend>;
}> {
  const runtime = shared().runtime;
  const url = process.env[API_URL_ENV];
  const token = process.env[API_TOKEN_ENV];
  const { HttpBackend } = await import("./backends/http-client.ts");
  if (runtime && url && token) {
    // Inside an app or a task worker: the deployed revision, in the app's own scope.
    return {
      backend: new HttpBackend(url, token),
      scope: { project: runtime.project, domain: runtime.domain },
      caller: runtime.name,
      close: async () => {},
    };
  }
  if (runtime) {
    throw new CaravanError(
      "NOT_IN_RUNTIME",
      `cannot run ${target.id}: this process was started without the control plane's run API (${API_URL_ENV} is not set)`,
    );
  }
  const config =
    opts.config ??
    (await loadConfig(shared().config?.rootDir ?? process.cwd(), {
      project: opts.project,
      domain: opts.domain,
    }));
  const { deployEnvironments, openBackend } = await import("./api.ts");
  if ("environment" in target) {
    // A declared task: its environment is deployed first (once per process).
    const env = target.environment;
    const done = (shared().deployedTaskEnvironments ??= new Set());
    const key = `${config.project}/${config.domain}/${env.name}`;
    if (!done.has(key)) {
      const { deployments } = await deployEnvironments([env], config, {});
      const failed = deployments.find((d) => d.status === "failed" || d.status === "skipped");
      if (failed) {
        throw new CaravanError(
          "DEPLOY_FAILED",
          `cannot run ${target.id}: deploying ${failed.envRepr()}`,
          { deployments: deployments.map((d) => d.toJSON()) },
        );
      }
      done.add(key);
    }
  }
  // One connection per process and control plane: a script that runs many tasks does not
  // look the daemon up (and check its health) for every run.
  const connections = (shared().runConnections ??= new Map());
  const key = `${process.env.CARAVAN_HOME ?? ""}|${config.controlPlane ?? ""}`;
  let backend = connections.get(key) as Backend | undefined;
  if (!backend) {
    backend = await openBackend(config);
    connections.set(key, backend);
  }
  return {
    backend,
    scope: { project: config.project, domain: config.domain },
    caller: "api",
    close: async () => {},
    reconnect: async () => {
      connections.delete(key);
      return (await connect(target, opts)).backend;
    },
  };
}
