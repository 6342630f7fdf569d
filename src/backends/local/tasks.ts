/**
 * Task runs on the local control plane. Each deployed task environment has a pool of worker
 * processes (the caravan runtime in task mode, loading the environment's snapshot); a run is
 * queued, handed to an idle worker of the current revision over IPC, and recorded in the
 * store at every step. Workers stay warm between runs, so a small task costs a message, not
 * a process start. A worker runs one attempt at a time: a timeout kills the worker (JS
 * cannot be interrupted) and never a neighbour's run.
 */
import { randomBytes } from "node:crypto";
import { CaravanError } from "../../errors.ts";
import type { TaskErrorInfo, TaskOutcome } from "../../runtime/protocol.ts";
import type { RunRecord, RunRequest, Scope, TaskSpec as TaskEnvironmentSpec } from "../contract.ts";
import { keyOf, now, type EnvironmentRow, type Store } from "./store.ts";
import {
  MAX_RUN_OUTPUT_BYTES,
  checkRunArgs,
  jsonBytes,
  outputTooLarge,
} from "../../sdk/run-limits.ts";
import type { AppProcess, Launch } from "./supervisor.ts";
import type { SpanRecord } from "./telemetry/otlp.ts";
import {
  SpanKind,
  StatusCode,
  formatTraceparent,
  newSpanId,
  newTraceId,
  parseTraceparent,
} from "../../runtime/trace-context.ts";

/** Most workers one task environment runs at once (runs beyond wait in its queue). */
const MAX_WORKERS = 8;
/** Idle workers beyond the first are stopped after this long. */
const IDLE_MS = 5 * 60_000;
/** A run keeps the last this many bytes of what it printed. */
const LOG_LIMIT = 64 * 1024;
/** A failed run keeps at most this much of its error's message, and of its stack. */
const ERROR_LIMIT = 64 * 1024;

/**
 * Finished runs kept (checked at start-up and every 30 s): per project/domain, the newest
 * `keep`, none older than `maxAgeDays`, and no older ones once the newer ones' outputs and
 * logs add up to `maxBytes`. `caravan runs prune` deletes more, `runs delete` one.
 */
export const RUN_RETENTION = { keep: 1000, maxAgeDays: 30, maxBytes: 1024 * 1024 * 1024 };
export type RunRetention = typeof RUN_RETENTION;

/** A task of a deployed environment: its id, retries, timeout (s per attempt), concurrency. */
type TaskSpec = TaskEnvironmentSpec["tasks"][number];

interface Worker {
  revision: string;
  launch: Launch;
  /** Set once the worker loaded the snapshot and is ready for runs. */
  proc?: AppProcess;
  /** The run it is busy with. */
  runId?: string;
  settle?: (outcome: TaskOutcome) => void;
  lastUsed: number;
  /** Superseded or killed: takes no new run, stops once idle. */
  retired: boolean;
  /** A new revision's worker loading while the old revision still takes the runs. */
  standby?: boolean;
}

interface Attempt {
  run: RunRecord;
  task: TaskSpec;
  settle: (outcome: TaskOutcome) => void;
}

interface Pool {
  key: string;
  row: EnvironmentRow;
  workers: Set<Worker>;
  queue: Attempt[];
  /** Attempts in flight per task id (for `concurrency`). */
  running: Map<string, number>;
}

/**
 * What the runner needs from the control plane: start a worker process, forget one, and
 * (optionally) keep the span of a finished run.
 */
export interface WorkerHost {
  spawnWorker(row: EnvironmentRow): Launch;
  forgetWorker(proc: AppProcess): void;
  recordSpan?(span: SpanRecord): void;
}

/** A run's span: in the trace of the request that asked for it, or a trace of its own. */
interface RunSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string | null;
}

export class TaskRunner {
  private readonly pools = new Map<string, Pool>();
  /** Set by close(): nothing new starts. */
  private closing = false;
  /** Runs not finished yet, with whoever waits for them. */
  private readonly active = new Map<
    string,
    { run: RunRecord; waiters: Set<() => void>; span?: RunSpan }
  >();

  constructor(
    private readonly store: Store,
    private readonly host: WorkerHost,
    private readonly retention: RunRetention = RUN_RETENTION,
  ) {}

  /**
   * Makes `row`'s revision the one new runs use, and resolves once a worker of it has loaded
   * the snapshot (its tasks are registered): the environment is then ready. Workers of an
   * older revision finish what they run and stop.
   */
  async register(row: EnvironmentRow, opts: { force?: boolean } = {}): Promise<void> {
    const current = this.pools.get(keyOf(row, row.name));
    if (!current || (current.row.revision === row.revision && !opts.force)) {
      const pool = this.poolFor(row);
      const warm = [...pool.workers].find((w) => !w.retired && !w.standby);
      await (warm ?? this.spawn(pool)).launch.ready;
      return;
    }
    // A new revision (or a forced restart): a new worker loads beside the old ones, which
    // take runs until it is ready. If it cannot load, nothing changes (the deploy fails).
    const next = this.spawn(current, row, true);
    await next.launch.ready;
    current.row = row;
    next.standby = false;
    for (const w of current.workers) if (w !== next) this.retire(current, w);
    this.pump(current);
  }

  /** The environment's pool at `row`'s revision (created on first use: after a restart, too). */
  private poolFor(row: EnvironmentRow): Pool {
    const key = keyOf(row, row.name);
    let pool = this.pools.get(key);
    if (!pool) {
      pool = { key, row, workers: new Set(), queue: [], running: new Map() };
      this.pools.set(key, pool);
    }
    pool.row = row;
    return pool;
  }

  has(key: string): boolean {
    return this.pools.has(key);
  }

  pids(key: string): number[] {
    const pool = this.pools.get(key);
    return pool ? [...pool.workers].flatMap((w) => (w.proc ? [w.proc.pid] : [])) : [];
  }

  /** Stops every worker of an environment; runs in flight fail, queued ones too. */
  async unregister(scope: Scope, name: string): Promise<void> {
    const pool = this.pools.get(keyOf(scope, name));
    if (!pool) return;
    this.pools.delete(pool.key);
    for (const a of pool.queue.splice(0))
      a.settle(failure("Stopped", `task environment ${name} was stopped before the run started`));
    await Promise.all([...pool.workers].map((w) => this.stopWorker(pool, w)));
  }

  /** Records a run and starts it; validation errors throw before anything is recorded. */
  start(req: RunRequest): RunRecord {
    if (req.requestId) {
      const earlier = this.store.runByRequest(req.requestId);
      if (earlier) return { ...(this.active.get(earlier.id)?.run ?? earlier) };
    }
    const dot = req.task.indexOf(".");
    const envName = dot > 0 ? req.task.slice(0, dot) : "";
    const row = envName ? this.store.get(req.scope, envName) : undefined;
    const where = `${req.scope.project}/${req.scope.domain}`;
    // While a new revision registers, runs wait in the pool for its first worker.
    const serving =
      row?.state === "ready" ||
      (row?.state === "starting" && this.pools.has(keyOf(req.scope, envName)));
    if (!row || row.kind !== "task" || row.desired !== "running" || !serving) {
      const why = !envName
        ? `"${req.task}" is not a task id; task ids look like <environment>.<task>, e.g. training-env.train`
        : !row || row.kind !== "task"
          ? `task environment "${envName}" is not deployed in ${where}; deploy it first (caravan deploy <file> ${envName}), or add it to the calling app's dependsOn`
          : `task environment "${envName}" is ${row.desired === "stopped" ? "stopped" : row.state} in ${where}; deploy it again`;
      throw new CaravanError("NOT_DEPLOYED", `cannot run ${req.task}: ${why}`, {
        task: req.task,
      });
    }
    const tasks = row.request.spec.kind === "task" ? row.request.spec.tasks : [];
    const spec = tasks.find((t) => t.id === req.task);
    if (!spec) {
      throw new CaravanError(
        "UNKNOWN_TASK",
        `task environment "${envName}" has no task "${req.task.slice(dot + 1)}" in its deployed revision ${row.revision}; its tasks: ${tasks.map((t) => t.id).join(", ") || "none"} (deploy it again after adding the task)`,
        { task: req.task, known: tasks.map((t) => t.id) },
      );
    }
    if (!Array.isArray(req.args))
      throw new CaravanError("VALIDATION", `the arguments of ${req.task} must be an array`);
    checkRunArgs(req.task, req.args);
    const run: RunRecord = {
      id: `run-${randomBytes(6).toString("hex")}`,
      project: req.scope.project,
      domain: req.scope.domain,
      environment: envName,
      task: req.task,
      revision: row.revision,
      status: "queued",
      args: req.args,
      attempts: 0,
      ...(req.caller ? { caller: req.caller } : {}),
      createdAt: now(),
    };
    this.store.insertRun(run, req.requestId);
    const parent = parseTraceparent(req.traceparent);
    const traced = this.host.recordSpan && row.request.spec.tracing !== false;
    const span: RunSpan | undefined = traced
      ? {
          traceId: parent?.traceId ?? newTraceId(),
          spanId: newSpanId(),
          parentSpanId: parent?.spanId ?? null,
        }
      : undefined;
    this.active.set(run.id, { run, waiters: new Set(), ...(span ? { span } : {}) });
    const pool = this.pools.get(keyOf(req.scope, envName)) ?? this.poolFor(row);
    this.execute(pool.key, run, spec).catch((e: Error) => {
      // Never expected; a run must not stay "running" (nor take the control plane down).
      if (!this.active.has(run.id)) return;
      run.status = "failed";
      run.error = { name: "InternalError", message: e?.message ?? String(e) };
      this.finish(run);
    });
    return { ...run };
  }

  /** The run, once finished or after `waitMs`, whichever comes first. */
  async wait(id: string, waitMs = 0): Promise<RunRecord> {
    const active = this.active.get(id);
    if (active && waitMs > 0) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          active.waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, waitMs);
        active.waiters.add(done);
      });
    }
    const current = this.active.get(id)?.run ?? this.store.getRun(id);
    if (!current) {
      throw new CaravanError(
        "NO_SUCH_RUN",
        `no run "${id}" (see caravan runs for the runs there are)`,
        {
          runId: id,
        },
      );
    }
    return { ...current };
  }

  /** Runs a previous control plane left unfinished: their workers died with it. */
  recover(): void {
    for (const run of this.store.unfinishedRuns()) this.interrupt(run);
    this.retain();
  }

  /** Deletes a finished run's record; one in flight is refused. */
  deleteRun(id: string): void {
    const active = this.active.get(id)?.run;
    if (active) {
      throw new CaravanError(
        "VALIDATION",
        `run ${id} is ${active.status}: a run in flight cannot be deleted; wait for it to finish (caravan runs show ${id})`,
        { runId: id },
      );
    }
    if (!this.store.deleteRun(id))
      throw new CaravanError(
        "NO_SUCH_RUN",
        `no run "${id}" (see caravan runs for the runs there are)`,
        {
          runId: id,
        },
      );
  }

  /**
   * Deletes finished runs created more than `olderThanMs` ago and/or beyond the newest `keep`
   * of each project/domain (in `scope` only, when given); the ids deleted.
   */
  pruneRuns(scope: Scope | undefined, opts: { olderThanMs?: number; keep?: number }): string[] {
    return this.store.pruneRuns(scope, {
      ...(opts.olderThanMs !== undefined
        ? { before: new Date(Date.now() - opts.olderThanMs).toISOString() }
        : {}),
      ...(opts.keep !== undefined ? { keep: opts.keep } : {}),
    });
  }

  /** Applies the retention policy (RUN_RETENTION). */
  retain(): void {
    const { keep, maxAgeDays, maxBytes } = this.retention;
    this.store.pruneRuns(undefined, {
      before: new Date(Date.now() - maxAgeDays * 86_400_000).toISOString(),
      keep,
      maxBytes,
    });
  }

  /** Stops idle workers beyond one per environment; applies the runs' retention. */
  reap(): void {
    this.retain();
    const cutoff = Date.now() - IDLE_MS;
    for (const pool of this.pools.values()) {
      const idle = [...pool.workers].filter((w) => w.proc && !w.runId && !w.retired);
      for (const w of idle.slice(1)) if (w.lastUsed < cutoff) void this.stopWorker(pool, w);
    }
  }

  /** Marks runs in flight interrupted and stops every worker. */
  async close(): Promise<void> {
    this.closing = true;
    for (const pool of this.pools.values()) pool.queue.splice(0);
    for (const { run } of [...this.active.values()]) this.interrupt(run);
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(
      pools.flatMap((pool) => [...pool.workers].map((w) => this.stopWorker(pool, w))),
    );
  }

  // --- internals ---

  private async execute(key: string, run: RunRecord, task: TaskSpec): Promise<void> {
    const retries = task.retries ?? 0;
    for (let attempt = 1; ; attempt++) {
      const pool = this.pools.get(key);
      const outcome: TaskOutcome = pool
        ? await new Promise<TaskOutcome>((settle) => {
            run.attempts = attempt;
            pool.queue.push({ run, task, settle });
            this.pump(pool);
          })
        : failure("Stopped", `task environment ${run.environment} was stopped`);
      if (!this.active.has(run.id)) return; // interrupted by close()
      if (outcome.ok && jsonBytes(outcome.output) > MAX_RUN_OUTPUT_BYTES) {
        // A worker of an older runtime does not bound it itself: the run keeps no such output.
        run.status = "failed";
        run.error = outputTooLarge(run.task, jsonBytes(outcome.output));
        break;
      }
      if (outcome.ok) {
        run.status = "succeeded";
        run.output = outcome.output;
        delete run.error;
        break;
      }
      run.error = bounded(outcome.error);
      if (attempt > retries || !this.pools.has(key)) {
        run.status = "failed";
        break;
      }
      this.store.event(run, run.environment, "run-retry", `${run.id} attempt ${attempt} failed`);
      this.store.updateRun(run);
    }
    this.finish(run);
  }

  /** Records a run's end (status and error or output already set) and wakes who waits. */
  private finish(run: RunRecord): void {
    run.finishedAt = now();
    run.durationMs = Date.parse(run.finishedAt) - Date.parse(run.startedAt ?? run.createdAt);
    this.store.updateRun(run);
    const active = this.active.get(run.id);
    this.active.delete(run.id);
    if (active?.span) this.host.recordSpan!(runSpanRecord(run, active.span));
    for (const wake of active?.waiters ?? []) wake();
  }

  /** Hands queued attempts to idle workers; starts workers for the rest (up to the cap). */
  private pump(pool: Pool): void {
    if (this.closing) return;
    let unserved = 0;
    for (let i = 0; i < pool.queue.length;) {
      const a = pool.queue[i]!;
      const limit = a.task.concurrency || Infinity;
      if ((pool.running.get(a.task.id) ?? 0) >= limit) {
        i++;
        continue;
      }
      const idle = [...pool.workers].find((w) => w.proc && !w.runId && !w.retired && !w.standby);
      if (!idle) {
        unserved++;
        i++;
        continue;
      }
      pool.queue.splice(i, 1);
      this.dispatch(pool, idle, a);
    }
    const live = [...pool.workers].filter((w) => !w.retired && !w.standby);
    const starting = live.filter((w) => !w.proc).length;
    for (let n = Math.min(unserved - starting, MAX_WORKERS - live.length); n > 0; n--)
      this.spawn(pool);
  }

  private dispatch(pool: Pool, w: Worker, a: Attempt): void {
    const { run, task } = a;
    w.runId = run.id;
    pool.running.set(task.id, (pool.running.get(task.id) ?? 0) + 1);
    run.status = "running";
    run.startedAt ??= now();
    run.revision = w.revision;
    this.store.updateRun(run);
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    const settle = (outcome: TaskOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      w.runId = undefined;
      w.settle = undefined;
      w.lastUsed = Date.now();
      pool.running.set(task.id, (pool.running.get(task.id) ?? 1) - 1);
      a.settle(outcome);
      if (w.retired) void this.stopWorker(pool, w);
      this.pump(pool);
    };
    w.settle = settle;
    if (task.timeout) {
      timer = setTimeout(() => {
        w.retired = true; // the task may still be running in there: never reuse it
        settle(
          failure(
            "TimeoutError",
            `${task.id} timed out after ${task.timeout}s (attempt ${run.attempts})`,
          ),
        );
      }, task.timeout * 1000);
    }
    // With the run's span as the parent of what the task does (its calls, when traced).
    const span = this.active.get(run.id)?.span;
    const message = {
      type: "run" as const,
      runId: run.id,
      task: task.id,
      args: run.args,
      ...(span ? { traceparent: formatTraceparent(span) } : {}),
    };
    if (!w.proc!.send(message)) {
      w.retired = true;
      settle(failure("WorkerExited", `the worker for ${task.id} went away before the run started`));
    }
  }

  private spawn(pool: Pool, row = pool.row, standby = false): Worker {
    let launch: Launch;
    try {
      launch = this.host.spawnWorker(row);
    } catch (e) {
      // E.g. a secret deleted since the deploy: the worker cannot even be launched.
      launch = { proc: undefined, ready: Promise.reject(e as Error) };
    }
    const w: Worker = {
      revision: row.revision,
      launch,
      lastUsed: Date.now(),
      retired: false,
      standby,
    };
    pool.workers.add(w);
    launch.ready.then(
      (proc) => {
        w.proc = proc;
        proc.onMessage((m) => {
          if (m?.type === "result" && m.runId === w.runId) w.settle?.(m);
          else if (m?.type === "log") this.appendLog(m.runId, m.text);
        });
        void proc.exited.then((info) => {
          pool.workers.delete(w);
          this.host.forgetWorker(proc);
          const how = info.signal
            ? `was killed by ${info.signal}`
            : `exited with code ${info.code}`;
          w.settle?.(failure("WorkerExited", `the worker running it ${how}`));
          if (this.pools.get(pool.key) === pool) this.pump(pool);
        });
        if (w.retired) void this.stopWorker(pool, w);
        else this.pump(pool);
      },
      (e: Error) => {
        pool.workers.delete(w);
        // Nobody else can serve what waits: fail it with the reason (the log tail is in it).
        if (![...pool.workers].some((o) => !o.retired)) {
          for (const a of pool.queue.splice(0)) a.settle(failure("WorkerStartError", e.message));
        }
      },
    );
    return w;
  }

  private retire(pool: Pool, w: Worker): void {
    w.retired = true;
    if (!w.runId) void this.stopWorker(pool, w);
  }

  private async stopWorker(pool: Pool, w: Worker): Promise<void> {
    w.retired = true;
    pool.workers.delete(w);
    const proc = w.proc ?? w.launch.proc;
    if (!proc) return;
    await proc.stop(1000);
    this.host.forgetWorker(proc);
  }

  private appendLog(runId: string, text: string): void {
    const run = this.active.get(runId)?.run;
    if (!run) return;
    const logs = (run.logs ?? "") + text;
    run.logs = logs.length > LOG_LIMIT ? logs.slice(-LOG_LIMIT) : logs;
  }

  private interrupt(run: RunRecord): void {
    run.error = {
      name: "Interrupted",
      message: `the control plane stopped while ${run.id} was ${run.status}; run it again`,
    };
    run.status = "failed";
    this.finish(run);
  }
}

/** An error as a run keeps it: a huge message or stack is cut (its end kept). */
function bounded(error: TaskErrorInfo): TaskErrorInfo {
  const cut = (s: string) =>
    s.length > ERROR_LIMIT
      ? `[${s.length - ERROR_LIMIT} characters cut]…${s.slice(-ERROR_LIMIT)}`
      : s;
  return {
    name: cut(String(error?.name ?? "Error")),
    message: cut(String(error?.message ?? "")),
    ...(error?.stack ? { stack: cut(String(error.stack)) } : {}),
  };
}

function failure(name: string, message: string): { ok: false; error: TaskErrorInfo } {
  return { ok: false, error: { name, message } };
}

/** The span of a finished run, under the task environment's name (its `service.name`). */
function runSpanRecord(run: RunRecord, span: RunSpan): SpanRecord {
  const startMs = Date.parse(run.createdAt);
  const endMs = Date.parse(run.finishedAt ?? run.createdAt);
  return {
    ...span,
    name: `run ${run.task}`,
    kind: SpanKind.consumer,
    service: run.environment,
    project: run.project,
    domain: run.domain,
    startUs: startMs * 1000,
    endUs: Math.max(startMs, endMs) * 1000,
    status: run.status === "succeeded" ? StatusCode.ok : StatusCode.error,
    ...(run.error
      ? { statusMessage: `${run.error.name}: ${run.error.message}`.slice(0, 1000) }
      : {}),
    attributes: {
      "caravan.run.id": run.id,
      "caravan.task": run.task,
      "caravan.run.status": run.status,
      "caravan.run.attempts": run.attempts,
      "caravan.revision": run.revision,
    },
  };
}
