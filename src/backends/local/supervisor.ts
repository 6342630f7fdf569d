/**
 * Starting, watching and stopping app processes. Apps run detached in their own process
 * group with stdout/stderr going straight to their log file, so they outlive the control
 * plane (a new one adopts them) and never block on a pipe nobody reads.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, closeSync, openSync, readSync, statSync, writeSync } from "node:fs";
import { CaravanError } from "../../errors.ts";
import { homeId } from "../home.ts";
import { probeHttp } from "../../sdk/probe.ts";
import type { RuntimeConfig, RuntimeMessage, WarmAssignment } from "../../runtime/protocol.ts";
import { RUNTIME_ENV } from "../../runtime/protocol.ts";
import { isAlive, processStartTime, signalGroup } from "./os.ts";
import { SUPERVISOR_ENV, supervisorId } from "./orphans.ts";

export type LaunchMode =
  | { kind: "runtime"; runtimeMain: string; config: RuntimeConfig }
  | { kind: "command"; argv: string[]; cwd: string; readiness?: { path?: string; tcp?: boolean } };

export interface LaunchSpec {
  name: string;
  port: number;
  logFile: string;
  startTimeoutMs: number;
  env: Record<string, string>;
  mode: LaunchMode;
}

export interface ExitInfo {
  code: number | null;
  signal: string | null;
}

/** A process we started or adopted. */
export class AppProcess {
  readonly exited: Promise<ExitInfo>;
  /** Set once the process is seen gone (synchronously readable, unlike `exited`). */
  hasExited = false;
  private stopping = false;

  constructor(
    readonly pid: number,
    readonly startTime: string,
    exited: Promise<ExitInfo>,
    private readonly child?: ChildProcess,
  ) {
    this.exited = exited;
    void exited.then(() => (this.hasExited = true));
  }

  /** True once `stop()` was called: an exit is then expected, not a crash. */
  get isStopping(): boolean {
    return this.stopping;
  }

  /** SIGTERM to the group, SIGKILL after `graceMs`. Resolves when the process is gone. */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopping = true;
    this.signal("SIGTERM");
    // Both timers keep the event loop alive until the exit is seen: the child handle is
    // unref'd (and an adopted process is only polled), so a control plane shutting down
    // would otherwise exit half-way and leave the apps it had not signalled yet running.
    const timer = setTimeout(() => this.signal("SIGKILL"), graceMs);
    const keepAlive = setInterval(() => {}, 60_000);
    try {
      await this.exited;
    } finally {
      clearTimeout(timer);
      clearInterval(keepAlive);
    }
    // Stray children of a command app that ignored SIGTERM.
    this.signal("SIGKILL");
  }

  /**
   * A child we hold and that is not reaped yet cannot have a recycled pid: it is signalled
   * without the start-time check (which a failed /proc read would otherwise turn into
   * "not ours", leaving a live process unstoppable).
   */
  private signal(sig: NodeJS.Signals): void {
    const held = this.child && this.child.exitCode === null && this.child.signalCode === null;
    signalGroup(this.pid, held ? "" : this.startTime, sig);
  }

  /** False when the message could not be sent (the process is gone or was adopted). */
  send(message: unknown): boolean {
    if (!this.child?.connected) return false;
    this.child.send(message as never);
    return true;
  }

  /** Messages from the runtime over IPC (none for an adopted process or a command app). */
  onMessage(listener: (message: RuntimeMessage) => void): void {
    this.child?.on("message", listener);
  }
}

/** Last `n` lines of a log written since `fromOffset`. */
export function logTail(file: string, fromOffset: number, n = 20): string {
  try {
    const size = statSync(file).size;
    const text = readRange(file, Math.max(fromOffset, size - 64 * 1024), size);
    return text.trimEnd().split("\n").slice(-n).join("\n");
  } catch {
    return "";
  }
}

/** Bytes `start` to `end` of a file, as UTF-8. */
export function readRange(file: string, start: number, end: number): string {
  const fd = openSync(file, "r");
  try {
    const buf = Buffer.alloc(Math.max(0, end - start));
    readSync(fd, buf, 0, buf.length, start);
    return buf.toString("utf8");
  } finally {
    closeSync(fd);
  }
}

function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** A spawned app on its way to ready. */
export interface Launch {
  /** Undefined when the program could not even be spawned (then `ready` rejects). */
  proc: AppProcess | undefined;
  /** Resolves once the app is ready; rejects (after stopping it) when it cannot be. */
  ready: Promise<AppProcess>;
}

/**
 * Spawns an app. It loads at once but starts only when `gate` resolves (the two-phase
 * protocol: a prepared dependent loads while its dependencies start). `ready` rejects at
 * once when the process exits before it is ready (with its log tail), or when it is not
 * ready within the start timeout, counted from the gate (the control plane's gate opens once
 * the app may start and has its start slot: time waiting for either never counts). Given a
 * warm process, a JS app runs in it, and nothing after this point can tell the two apart.
 */
export function spawnApp(
  spec: LaunchSpec,
  gate: Promise<void> = Promise.resolve(),
  /** A warm runtime process from the pool (warm-pool.ts) to run a JS app in, instead of a spawn. */
  warm?: ChildProcess,
): Launch {
  const offset = fileSize(spec.logFile);
  const fd = openSync(spec.logFile, "a");
  // "starting" marks the start phase: a JS app first loads, and starts when the gate opens.
  const startLine = () =>
    `[caravan] ${new Date().toISOString()} starting ${spec.name}${spec.port ? ` on port ${spec.port}` : " (task worker)"}\n`;
  if (spec.mode.kind === "runtime") {
    writeSync(fd, `[caravan] ${new Date().toISOString()} loading ${spec.name}\n`);
    void gate.then(() => appendFileSync(spec.logFile, startLine()));
  } else {
    writeSync(fd, startLine());
  }
  let child: ChildProcess;
  try {
    const env = processEnv(spec);
    if (spec.mode.kind === "runtime") {
      if (warm) {
        // Everything a spawn would have given it, which a warm process applies to itself.
        const assignment: WarmAssignment = {
          type: "assign",
          env,
          cwd: spec.mode.config.sourceRoot,
          logFile: spec.logFile,
        };
        warm.send(assignment);
        child = warm;
      } else {
        child = spawn(process.execPath, runtimeArgv(spec.mode.runtimeMain), {
          stdio: ["ignore", fd, fd, "ipc"],
          detached: true,
          env,
          cwd: spec.mode.config.sourceRoot,
        });
      }
    } else {
      const [cmd, ...args] = spec.mode.argv;
      child = spawn(cmd!, args, {
        stdio: ["ignore", fd, fd],
        detached: true,
        env,
        cwd: spec.mode.cwd,
      });
    }
  } finally {
    closeSync(fd);
  }

  if (child.pid === undefined) {
    const ready = new Promise<never>((_, reject) =>
      child.once("error", (err) =>
        reject(
          new CaravanError(
            "APP_EXITED",
            `${spec.name}: could not start ${describeCommand(spec)}: ${err.message}`,
          ),
        ),
      ),
    );
    ready.catch(() => {});
    return { proc: undefined, ready };
  }
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
    child.once("error", () => resolve({ code: -1, signal: null }));
  });
  const pid = child.pid;
  child.unref();
  const proc = new AppProcess(pid, processStartTime(pid) ?? "", exited, child);

  const failure = (why: string) => {
    const tail = logTail(spec.logFile, offset);
    return new CaravanError(
      "APP_EXITED",
      `${spec.name} ${why}${tail ? `; last lines of its log:\n${indent(tail)}` : " (its log is empty)"}`,
      { app: spec.name, logTail: tail },
    );
  };
  const mode = spec.mode;
  const listening =
    mode.kind === "runtime"
      ? runtimeReady(child, gate)
      : gate.then(() => probeReadiness(spec.port, mode.readiness ?? {}, exited));
  let timer: NodeJS.Timeout | undefined;
  let settled = false;
  const timeout = gate.then(
    () =>
      new Promise<never>((_, reject) => {
        // The gate may open after the launch already failed (a preloaded app died loading).
        if (settled) return;
        timer = setTimeout(() => {
          reject(
            new CaravanError(
              "START_TIMEOUT",
              `${spec.name} was not ready within ${spec.startTimeoutMs / 1000}s (timeouts.start)${mode.kind === "command" ? `: ${probed(spec.port, mode.readiness ?? {})}` : ""}; last lines of its log:\n${indent(logTail(spec.logFile, offset) || "(empty)")}`,
              { app: spec.name },
            ),
          );
        }, spec.startTimeoutMs);
      }),
  );
  const died = exited.then((info) => {
    throw failure(
      `exited ${info.signal ? `on ${info.signal}` : `with code ${info.code}`} before it was ready`,
    );
  });
  const ready = (async () => {
    try {
      await Promise.race([listening, timeout, died]);
      return proc;
    } catch (e) {
      await proc.stop(2000);
      throw e instanceof CaravanError ? e : failure(`failed to start: ${(e as Error).message}`);
    } finally {
      settled = true;
      clearTimeout(timer);
      died.catch(() => {});
      timeout.catch(() => {});
    }
  })();
  ready.catch(() => {}); // observed by whoever awaits it; never an unhandled rejection
  return { proc, ready };
}

/** Adopts a process left by a previous control plane; `exited` is found by polling. */
export function adopt(pid: number, startTime: string, pollMs = 500): AppProcess {
  const exited = new Promise<ExitInfo>((resolve) => {
    const timer = setInterval(() => {
      if (!isAlive(pid, startTime)) {
        clearInterval(timer);
        resolve({ code: null, signal: null });
      }
    }, pollMs);
    timer.unref();
  });
  return new AppProcess(pid, startTime, exited);
}

function runtimeReady(child: ChildProcess, gate: Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    child.on("message", (m: RuntimeMessage) => {
      if (m?.type === "loaded")
        void gate.then(() => child.connected && child.send({ type: "start" }));
      else if (m?.type === "ready") resolve();
      // "failed" is followed by exit(1); the exit is reported with the log tail, which has the stack.
    });
  });
}

/** The whole environment a process of `spec` starts with (a warm one is given it). */
export function processEnv(spec: LaunchSpec): Record<string, string> {
  const env = { ...baseEnv(), ...spec.env } as Record<string, string>;
  if (spec.port) env.PORT = String(spec.port);
  if (spec.mode.kind === "runtime") env[RUNTIME_ENV] = JSON.stringify(spec.mode.config);
  return env;
}

/** Node's arguments for the runtime: a cold start's and a warm process's alike. */
export function runtimeArgv(runtimeMain: string): string[] {
  return ["--enable-source-maps", runtimeMain];
}

/**
 * What an app inherits from the control plane: only the basics. Anything else it needs is
 * declared (envVars, inputs, secrets), so an app behaves the same whoever started the daemon.
 */
export function baseEnv(): NodeJS.ProcessEnv {
  const keep = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SHELL"];
  const env: NodeJS.ProcessEnv = {};
  for (const k of keep) if (process.env[k] !== undefined) env[k] = process.env[k];
  // Not CARAVAN_HOME (the control plane's token is there; an app has its scoped run token):
  // an opaque id of the home, so this home's processes can be told apart from others'.
  env.CARAVAN_HOME_ID = homeId();
  // Which control plane started it: one that outlives it with no record is found (orphans.ts).
  env[SUPERVISOR_ENV] = supervisorId();
  return env;
}

/** What a command app's readiness probe waited for, and what the app must do. */
function probed(port: number, readiness: { path?: string; tcp?: boolean }): string {
  const what = readiness.tcp
    ? "a TCP connection"
    : readiness.path
      ? `a 2xx answer to GET ${readiness.path}`
      : "an HTTP answer";
  return `caravan probed 127.0.0.1:${port} for ${what} and got none; a command app must listen on the port in $PORT (${port} here), on $HOST (127.0.0.1), e.g. args: ["--port", "$PORT"]`;
}

/** A command app's readiness: probed (see sdk/probe.ts) until it answers or exits. */
async function probeReadiness(
  port: number,
  readiness: { path?: string; tcp?: boolean },
  exited: Promise<ExitInfo>,
) {
  let gone = false;
  void exited.then(() => (gone = true));
  await probeHttp(port, { path: readiness.path, tcpOnly: readiness.tcp, stop: () => gone });
}

function describeCommand(spec: LaunchSpec): string {
  return spec.mode.kind === "command"
    ? JSON.stringify(spec.mode.argv.join(" "))
    : "the caravan runtime";
}

export function indent(text: string): string {
  return text
    .split("\n")
    .map((l) => `    ${l}`)
    .join("\n");
}

/** How a one-shot process (a job's attempt) ended. */
export interface RunOutcome {
  code: number | null;
  signal: string | null;
  /** It ran past its time and was stopped. */
  timedOut: boolean;
  /** Its last log lines (what this attempt wrote). */
  tail: string;
}

/**
 * Runs a job's attempt to its end: the command (or the runtime, for a function job) with its
 * output appended to the environment's log, stopped once it runs past `timeoutMs`. `onSpawn`
 * gets the process as soon as it exists (to record it, so a new control plane finds it).
 */
export async function runOnce(
  spec: LaunchSpec,
  timeoutMs: number,
  onSpawn: (proc: AppProcess) => void = () => {},
): Promise<RunOutcome> {
  const offset = fileSize(spec.logFile);
  const fd = openSync(spec.logFile, "a");
  writeSync(fd, `[caravan] ${new Date().toISOString()} running ${spec.name}\n`);
  let child: ChildProcess;
  try {
    const env = processEnv({ ...spec, port: 0 });
    const [cmd, ...args] =
      spec.mode.kind === "runtime"
        ? [process.execPath, ...runtimeArgv(spec.mode.runtimeMain)]
        : spec.mode.argv;
    child = spawn(cmd!, args, {
      stdio: ["ignore", fd, fd],
      detached: true,
      env,
      cwd: spec.mode.kind === "runtime" ? spec.mode.config.sourceRoot : spec.mode.cwd,
    });
  } finally {
    closeSync(fd);
  }
  const exited = new Promise<ExitInfo & { error?: Error }>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
    child.once("error", (error) => resolve({ code: null, signal: null, error }));
  });
  if (child.pid === undefined) {
    const { error } = await exited;
    throw new CaravanError(
      "JOB_FAILED",
      `${spec.name}: could not start ${describeCommand(spec)}: ${error?.message ?? "spawn failed"}`,
    );
  }
  child.unref();
  const proc = new AppProcess(child.pid, processStartTime(child.pid) ?? "", exited, child);
  onSpawn(proc);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    void proc.stop(2000);
  }, timeoutMs);
  const info = await exited;
  clearTimeout(timer);
  const end = info.signal ? `on ${info.signal}` : `with code ${info.code}`;
  appendFileSync(
    spec.logFile,
    `[caravan] ${new Date().toISOString()} ${spec.name} ${timedOut ? "ran out of time and was stopped" : `exited ${end}`}\n`,
  );
  return { code: info.code, signal: info.signal, timedOut, tail: logTail(spec.logFile, offset) };
}
