/**
 * The process every JS app and task worker runs in: loads the snapshot, finds its environment
 * by name, then either serves it (an app: waits for the go-ahead, reports ready, closes
 * gracefully on SIGTERM) or runs its tasks one at a time on request (a task worker). On a
 * cluster it also runs once: one task (a run's Job) or the check that the environment's tasks
 * register (a task environment's registration Job at deploy).
 * Runs inside user processes: it never imports the control plane.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { pathToFileURL } from "node:url";
import {
  isAppEnvironment,
  isJobEnvironment,
  isTaskEnvironment,
  type AppEnvironment,
  type JobEnvironment,
  type ServerHandle,
  type TaskEnvironment,
} from "../sdk/environment.ts";
import { shared } from "../sdk/global.ts";
import { assertJsonValue } from "../sdk/serialize.ts";
import { MAX_RUN_OUTPUT_BYTES, jsonBytes, outputTooLarge } from "../sdk/run-limits.ts";
import {
  HEALTH_PATH,
  HEALTH_PORT_ENV,
  RUNTIME_ENV,
  TERMINATION_LIMIT,
  TERMINATION_LOG,
  type PlaneMessage,
  type RegisterOutcome,
  type RuntimeConfig,
  type RuntimeMessage,
  type TaskErrorInfo,
  type TaskOutcome,
} from "./protocol.ts";
import { startTracing } from "./tracing.ts";
import { isWarmStart, warmUntilAssigned } from "./warm.ts";

const send = (message: RuntimeMessage) => process.send?.(message);

/**
 * Traces requests, calls and task runs, unless turned off: started before the user's code
 * loads, and in a warm process only once it has the app's environment (which decides it).
 */
let tracer: ReturnType<typeof startTracing> = undefined;

/** Whether the app serves yet, for the health endpoint. */
let serving = false;
/** A one-shot mode (a Job's pod): a failure is also its outcome, in the termination message. */
let oneShot = false;

/** The readiness endpoint a pod's probes ask (only when HEALTH_PORT_ENV is set). */
function startHealthEndpoint(): void {
  const port = Number(process.env[HEALTH_PORT_ENV]);
  if (!port) return;
  const server = createServer((req, res) => {
    const ok = req.url === HEALTH_PATH && serving;
    res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" }).end(ok ? "ready" : "starting");
  });
  server.on("error", (e) => fatal(new Error(`health endpoint on port ${port}: ${e.message}`)));
  server.listen(port, "0.0.0.0");
  server.unref();
}

function fatal(error: unknown): never {
  const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
  console.error(`[caravan runtime] ${text}`);
  send({ type: "failed", error: error instanceof Error ? error.message : String(error) });
  // A Job's pod that cannot load its code still says why, as a run or a registration would.
  if (oneShot) finish({ ok: false, error: errorInfo(error) });
  process.exit(1);
}

async function main(): Promise<void> {
  const raw = process.env[RUNTIME_ENV];
  if (!raw)
    fatal(new Error(`${RUNTIME_ENV} is not set: this program is started by caravan, not by hand`));
  const config = JSON.parse(raw) as RuntimeConfig;
  oneShot = config.kind === "run" || config.kind === "register";
  startHealthEndpoint();

  const state = shared();
  state.runtime = {
    name: config.name,
    project: config.project,
    domain: config.domain,
    endpoints: config.endpoints,
    publicEndpoints: config.publicEndpoints,
    inputs: config.inputs,
    loading: true,
  };
  const go = process.send
    ? new Promise<void>((resolve) => {
        process.on("message", (m: PlaneMessage) => m?.type === "start" && resolve());
      })
    : Promise.resolve();

  try {
    await import(pathToFileURL(config.entry).href);
  } catch (e) {
    fatal(e);
  }
  state.runtime.loading = false;
  const kind = config.kind ?? "app";
  const wanted = kind === "app" ? "app" : kind === "job" ? "job" : "task";
  const env = state.environments.find((e) =>
    wanted === "app"
      ? isAppEnvironment(e) && e.name === config.name
      : wanted === "job"
        ? isJobEnvironment(e) && e.name === config.name
        : isTaskEnvironment(e) && e.name === config.name,
  );
  if (!env)
    fatal(new Error(`the snapshot declares no ${wanted} environment named "${config.name}"`));
  if (kind === "job") return runJob(env as JobEnvironment, config);
  if (kind === "run") return runOnce(env as TaskEnvironment, config);
  if (kind === "register") return register(env as TaskEnvironment, config);
  if (kind === "task") return serveTasks(env as TaskEnvironment, go);
  return serveApp(env as AppEnvironment, config, go);
}

/** A function job: its function once; it succeeded when it resolved (exit 0), else exit 1. */
async function runJob(env: JobEnvironment, config: RuntimeConfig): Promise<void> {
  try {
    await env.runFunction!({ inputs: { ...config.inputs }, endpoints: { ...config.endpoints } });
  } catch (e) {
    console.error(`[caravan runtime] job ${env.name} failed: ${(e as Error)?.stack ?? e}`);
    process.exit(1);
  }
  process.exit(0);
}

async function serveApp(env: AppEnvironment, config: RuntimeConfig, go: Promise<void>) {
  send({ type: "loaded" });
  await go;
  const context = () => ({
    port: config.port,
    host: config.host,
    inputs: { ...shared().runtime!.inputs },
  });
  let handle: ServerHandle;
  try {
    // Start-up hooks run before the app serves its first request.
    for (const hook of env.startupHooks ?? []) await hook(context());
    handle = await env.serveOn(config.port, config.host);
  } catch (e) {
    fatal(e);
  }
  let closing = false;
  const shutdown = async () => {
    if (closing) return;
    closing = true;
    let code = 0;
    try {
      await handle.close();
    } catch (e) {
      console.error(`[caravan runtime] closing the server failed: ${(e as Error)?.message ?? e}`);
      code = 1;
    }
    // Shutdown hooks run once the server is closed (in-flight requests finished).
    for (const hook of env.shutdownHooks ?? []) {
      try {
        await hook(context());
      } catch (e) {
        console.error(`[caravan runtime] an onShutdown hook failed: ${(e as Error)?.stack ?? e}`);
        code = 1;
      }
    }
    await tracer?.flush();
    process.exit(code);
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
  // If the control plane goes away, keep serving: the next one adopts this process.
  process.on("disconnect", () => {});
  serving = true;
  send({ type: "ready", port: config.port });
  process.channel?.unref();
}

/**
 * A task worker: runs are sent one at a time over IPC. What a task prints goes to the
 * environment's log and, tagged with its run id, to the control plane for the run's record.
 */
async function serveTasks(env: TaskEnvironment, go: Promise<void>) {
  send({ type: "loaded", tasks: [...env.tasks.values()].map((t) => t.id) });
  await go;
  const current = new AsyncLocalStorage<string>();
  // A run is tagged with its id (for its logs) and, when traced, runs under its span.
  const inRun = (m: { runId: string; traceparent?: string }, fn: () => Promise<void>) =>
    current.run(m.runId, () => (tracer ? tracer.withParent(m.traceparent, fn) : fn()));
  for (const stream of [process.stdout, process.stderr]) {
    const write = stream.write.bind(stream) as (...a: unknown[]) => boolean;
    stream.write = ((chunk: unknown, ...rest: unknown[]) => {
      const runId = current.getStore();
      if (runId) send({ type: "log", runId, text: String(chunk) });
      return write(chunk, ...rest);
    }) as typeof stream.write;
  }
  process.on("message", (m: PlaneMessage) => {
    if (m?.type !== "run") return;
    const task = [...env.tasks.values()].find((t) => t.id === m.task);
    void inRun(m, async () => {
      try {
        if (!task) throw new Error(`this revision of ${env.name} has no task "${m.task}"`);
        const output = await task(...m.args);
        assertJsonValue(output, "the result", `task ${m.task}`);
        // Bounded here, before it crosses to the control plane (which keeps it).
        const size = jsonBytes(output);
        if (size > MAX_RUN_OUTPUT_BYTES)
          send({ type: "result", runId: m.runId, ok: false, error: outputTooLarge(m.task, size) });
        else send({ type: "result", runId: m.runId, ok: true, output: output ?? null });
      } catch (e) {
        send({ type: "result", runId: m.runId, ok: false, error: errorInfo(e) });
      }
    });
  });
  // A worker belongs to the control plane that started it: without it there is nobody to
  // answer to, and a new control plane starts its own workers.
  process.on("disconnect", () => process.exit(0));
  process.on("SIGTERM", () => process.exit(0));
  send({ type: "ready", port: 0 });
}

/**
 * A run on a cluster (a Job's pod): the task once, its outcome as the termination message
 * (trimmed to fit: an error's stack first, then the message), exit 0 or 1.
 */
async function runOnce(env: TaskEnvironment, config: RuntimeConfig): Promise<void> {
  let outcome: TaskOutcome;
  try {
    const task = [...env.tasks.values()].find((t) => t.id === config.task);
    if (!task) throw new Error(`this revision of ${env.name} has no task "${config.task}"`);
    const output = await task(...(config.args ?? []));
    assertJsonValue(output, "the result", `task ${config.task}`);
    outcome = { ok: true, output: output ?? null };
  } catch (e) {
    outcome = { ok: false, error: errorInfo(e) };
  }
  finish(outcome, (size) => ({
    ok: false,
    error: {
      name: "OutputTooLarge",
      message: `the result of ${config.task} is ${size} bytes as JSON; a run on a cluster returns at most ${TERMINATION_LIMIT}: store large results elsewhere and return where`,
    },
  }));
}

/**
 * A task environment's registration on a cluster (a Job's pod, at deploy): the code loaded
 * and the environment found (main did both), every task the deployed spec declares must be
 * registered by it here too: a task declared only under some condition of the machine that
 * deployed would otherwise be missing from every run.
 */
function register(env: TaskEnvironment, config: RuntimeConfig): never {
  const found = [...env.tasks.values()].map((t) => t.id);
  const missing = (config.tasks ?? []).filter((id) => !found.includes(id));
  if (missing.length) {
    const error = new Error(
      `task environment "${env.name}" registers no task ${missing.map((m) => JSON.stringify(m)).join(", ")} when its code loads here (it registers: ${found.join(", ") || "none"}); a task declared only under a condition (an environment variable of the machine that deployed?) must be declared wherever the code loads`,
    );
    error.name = "MissingTask";
    return finish({ ok: false, error: errorInfo(error) });
  }
  return finish<RegisterOutcome>({ ok: true, tasks: found }, () => ({
    ok: true,
    tasks: [],
    more: found.length,
  }));
}

/**
 * Ends a one-shot mode: the outcome on stdout and as the termination message, trimmed to fit
 * (an error loses its stack, then most of its message; an ok outcome too large is `tooLarge`),
 * exit 0 or 1.
 */
function finish<T extends TaskOutcome | RegisterOutcome>(
  outcome: T,
  tooLarge?: (size: number) => T,
): never {
  let text = JSON.stringify(outcome);
  if (text.length > TERMINATION_LIMIT && !outcome.ok) {
    const { stack: _stack, ...short } = outcome.error;
    text = JSON.stringify({
      ok: false,
      error: { ...short, message: short.message.slice(0, 3000) },
    });
  }
  if (text.length > TERMINATION_LIMIT && outcome.ok && tooLarge) {
    outcome = tooLarge(text.length);
    text = JSON.stringify(outcome);
  }
  console.log(text);
  try {
    writeFileSync(TERMINATION_LOG, text);
  } catch {
    // not in a container: the line above is the outcome
  }
  process.exit(outcome.ok ? 0 : 1);
}

function errorInfo(e: unknown): TaskErrorInfo {
  if (e instanceof Error) {
    return {
      name: e.name,
      message: e.message,
      ...(e.stack ? { stack: e.stack } : {}),
    };
  }
  return { name: "Error", message: typeof e === "string" ? e : (JSON.stringify(e) ?? String(e)) };
}

// A warm process (the local pool's) first waits until it is given to an app.
if (isWarmStart()) {
  try {
    await warmUntilAssigned();
  } catch (e) {
    fatal(e);
  }
}
tracer = startTracing();
await main();
