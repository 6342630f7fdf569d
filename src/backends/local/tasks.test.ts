/**
 * TaskRunner against a real Store (SQLite in a temporary directory) and fake workers: a fake
 * worker answers `run` messages as the test says (an output, an error, never, or by dying),
 * so retries, timeouts, warm reuse, concurrency and recovery are checked without processes.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isCaravanError } from "../../errors.ts";
import type { PlaneMessage, RuntimeMessage } from "../../runtime/protocol.ts";
import type { RunRecord, RunRequest } from "../contract.ts";
import { Store, type EnvironmentRow } from "./store.ts";
import type { AppProcess, ExitInfo, Launch } from "./supervisor.ts";
import { TaskRunner, type WorkerHost } from "./tasks.ts";

const scope = { project: "p", domain: "d" };

type RunMessage = Extract<PlaneMessage, { type: "run" }>;
/** How a fake worker answers one run. */
type Handler = (m: RunMessage, w: FakeWorker) => void;

let nextPid = 900_000_000; // never a real pid: nothing is ever signalled

class FakeWorker {
  readonly pid = nextPid++;
  readonly startTime = "0";
  readonly exited: Promise<ExitInfo>;
  readonly received: RunMessage[] = [];
  alive = true;
  private resolveExit!: (info: ExitInfo) => void;
  private readonly listeners: ((m: RuntimeMessage) => void)[] = [];

  constructor(private readonly handlers: Record<string, Handler>) {
    this.exited = new Promise((r) => (this.resolveExit = r));
  }
  send(m: PlaneMessage): boolean {
    if (!this.alive) return false;
    if (m.type === "run") {
      this.received.push(m);
      // Answers arrive later, as over IPC.
      setImmediate(() => this.handlers[m.task]!(m, this));
    }
    return true;
  }
  onMessage(listener: (m: RuntimeMessage) => void): void {
    this.listeners.push(listener);
  }
  reply(m: RuntimeMessage): void {
    if (this.alive) for (const l of this.listeners) l(m);
  }
  ok(m: RunMessage, output: unknown): void {
    this.reply({ type: "result", runId: m.runId, ok: true, output });
  }
  fail(m: RunMessage, message: string): void {
    this.reply({
      type: "result",
      runId: m.runId,
      ok: false,
      error: { name: "Error", message, stack: `Error: ${message}\n    at task (jobs.ts:1:1)` },
    });
  }
  die(info: ExitInfo): void {
    if (!this.alive) return;
    this.alive = false;
    this.resolveExit(info);
  }
  async stop(): Promise<void> {
    this.die({ code: null, signal: "SIGTERM" });
    await this.exited;
  }
}

class FakeHost implements WorkerHost {
  readonly spawned: FakeWorker[] = [];
  readonly forgotten = new Set<number>();
  /** When set, new workers become ready only when the test opens this gate. */
  gate?: Promise<void>;
  failStart?: string;

  constructor(readonly handlers: Record<string, Handler>) {}

  spawnWorker(): Launch {
    const w = new FakeWorker(this.handlers);
    this.spawned.push(w);
    const proc = w as unknown as AppProcess;
    const ready = this.failStart
      ? Promise.reject(new Error(this.failStart))
      : (this.gate ?? Promise.resolve()).then(() => proc);
    return { proc, ready };
  }
  forgetWorker(proc: AppProcess): void {
    this.forgotten.add(proc.pid);
  }
}

interface TaskSpec {
  id: string;
  retries?: number;
  timeout?: number;
  concurrency?: number;
}

function taskRow(tasks: TaskSpec[], over: Partial<EnvironmentRow> = {}): EnvironmentRow {
  return {
    ...scope,
    name: "env",
    kind: "task",
    revision: "rev1",
    request: {
      spec: { kind: "task", tasks, dependsOn: [] },
    } as unknown as EnvironmentRow["request"],
    ports: null,
    state: "ready",
    desired: "running",
    restarts: 0,
    error: null,
    updatedAt: new Date().toISOString(),
    ...over,
  } as EnvironmentRow;
}

const req = (task: string, args: unknown[] = [], caller?: string): RunRequest => ({
  scope,
  task,
  args,
  ...(caller ? { caller } : {}),
});

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(cond()).toBe(true);
}

describe("TaskRunner", () => {
  let dir: string;
  let store: Store;
  let host: FakeHost;
  let runner: TaskRunner;
  /** Runs the fake `env.gated` task was asked for and has not answered yet. */
  let held: (() => void)[];

  const handlers: Record<string, Handler> = {
    "env.echo": (m, w) => w.ok(m, { args: m.args, pid: w.pid }),
    "env.boom": (m, w) => w.fail(m, `boom ${JSON.stringify(m.args)}`),
    "env.hang": () => {},
    "env.crash": (_m, w) => w.die({ code: null, signal: "SIGKILL" }),
    "env.gated": (m, w) => held.push(() => w.ok(m, w.pid)),
    "env.chatty": (m, w) => {
      w.reply({ type: "log", runId: m.runId, text: "step 1\n" });
      w.reply({ type: "log", runId: m.runId, text: "step 2\n" });
      w.ok(m, "done");
    },
  };
  // Fails while the counter is below the first argument: flaky attempts are counted per run.
  const attempts = new Map<string, number>();
  handlers["env.flaky"] = (m, w) => {
    const n = (attempts.get(m.runId) ?? 0) + 1;
    attempts.set(m.runId, n);
    if (n <= (m.args[0] as number)) w.fail(m, `attempt ${n} failed`);
    else w.ok(m, { attempt: n });
  };
  // Hangs on its first attempt, answers on the next.
  handlers["env.slowOnce"] = (m, w) => {
    const n = (attempts.get(m.runId) ?? 0) + 1;
    attempts.set(m.runId, n);
    if (n > 1) w.ok(m, { attempt: n, pid: w.pid });
  };

  const TASKS: TaskSpec[] = [
    { id: "env.echo" },
    { id: "env.boom" },
    { id: "env.hang" },
    { id: "env.crash" },
    { id: "env.gated" },
    { id: "env.chatty" },
    { id: "env.flaky", retries: 2 },
    { id: "env.flakier", retries: 1 },
    { id: "env.quick", timeout: 0.05 },
    { id: "env.slowOnce", timeout: 0.05, retries: 1 },
    { id: "env.single", concurrency: 1 },
  ];
  handlers["env.flakier"] = handlers["env.flaky"]!;
  handlers["env.quick"] = handlers["env.hang"]!;
  handlers["env.single"] = handlers["env.gated"]!;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "caravan-tasks-"));
    store = new Store(join(dir, "state.db"));
    host = new FakeHost(handlers);
    runner = new TaskRunner(store, host);
    held = [];
    attempts.clear();
  });
  afterEach(async () => {
    await runner.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function deployed(tasks = TASKS, over: Partial<EnvironmentRow> = {}) {
    const row = taskRow(tasks, over);
    store.upsert(row);
    await runner.register(row);
    return row;
  }

  async function runToEnd(task: string, args: unknown[] = []): Promise<RunRecord> {
    const started = runner.start(req(task, args));
    return runner.wait(started.id, 10_000);
  }

  it("registers an environment once a worker has loaded it", async () => {
    host.gate = new Promise(() => {});
    const row = taskRow(TASKS);
    store.upsert(row);
    let registered = false;
    void runner.register(row).then(() => (registered = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(registered).toBe(false);
    expect(host.spawned).toHaveLength(1);
    expect(runner.has("p/d/env")).toBe(true);
  });

  it("records a run from queued to succeeded, in memory and in the store", async () => {
    await deployed();
    const started = runner.start(req("env.echo", [1, { a: [2] }], "serving-app"));
    // Handed to the idle worker at once.
    expect(started).toMatchObject({
      status: "running",
      task: "env.echo",
      environment: "env",
      revision: "rev1",
      caller: "serving-app",
      args: [1, { a: [2] }],
    });
    expect(started.id).toMatch(/^run-[0-9a-f]{12}$/);
    expect(store.getRun(started.id)).toMatchObject({ status: "running", attempts: 1 });

    const done = await runner.wait(started.id, 10_000);
    expect(done).toMatchObject({
      status: "succeeded",
      attempts: 1,
      output: { args: [1, { a: [2] }], pid: host.spawned[0]!.pid },
    });
    expect(done.startedAt).toBeDefined();
    expect(done.finishedAt).toBeDefined();
    expect(done.durationMs).toBeGreaterThanOrEqual(0);
    expect(store.getRun(started.id)).toEqual(done);
    // A list of runs leaves out outputs and logs (the run itself has them).
    const { output: _output, ...listed } = done;
    expect(store.listRuns(scope)).toEqual([listed]);
  });

  it("keeps the worker warm: consecutive runs go to the worker started at register", async () => {
    await deployed();
    const pids = [];
    for (let i = 0; i < 5; i++)
      pids.push(((await runToEnd("env.echo")).output as { pid: number }).pid);
    expect(host.spawned).toHaveLength(1);
    expect(new Set(pids)).toEqual(new Set([host.spawned[0]!.pid]));
    expect(runner.pids("p/d/env")).toEqual([host.spawned[0]!.pid]);
  });

  it("retries a failing task: succeeds on attempt N+1 with retries N", async () => {
    await deployed();
    const done = await runToEnd("env.flaky", [2]);
    expect(done).toMatchObject({ status: "succeeded", attempts: 3, output: { attempt: 3 } });
    expect(done.error).toBeUndefined();
    expect(store.getRun(done.id)).toMatchObject({ status: "succeeded", attempts: 3 });
  });

  it("with too few retries, fails with the last attempt's error and stack", async () => {
    await deployed();
    const done = await runToEnd("env.flakier", [5]);
    expect(done).toMatchObject({
      status: "failed",
      attempts: 2,
      error: { name: "Error", message: "attempt 2 failed" },
    });
    expect(done.error!.stack).toContain("at task");
    expect(done.output).toBeUndefined();
    // No retries at all by default.
    expect(await runToEnd("env.boom", ["x"])).toMatchObject({
      status: "failed",
      attempts: 1,
      error: { message: 'boom ["x"]' },
    });
  });

  it("times out an attempt, stops that worker and serves the next run with a new one", async () => {
    await deployed();
    const first = host.spawned[0]!;
    const done = await runToEnd("env.quick");
    expect(done).toMatchObject({
      status: "failed",
      attempts: 1,
      error: { name: "TimeoutError", message: "env.quick timed out after 0.05s (attempt 1)" },
    });
    await until(() => !first.alive && host.forgotten.has(first.pid));
    const next = await runToEnd("env.echo");
    expect(next.status).toBe("succeeded");
    expect(host.spawned).toHaveLength(2);
    expect((next.output as { pid: number }).pid).toBe(host.spawned[1]!.pid);
    expect(runner.pids("p/d/env")).toEqual([host.spawned[1]!.pid]);
  });

  it("retries a timed-out attempt on a fresh worker", async () => {
    await deployed();
    const done = await runToEnd("env.slowOnce");
    expect(done).toMatchObject({ status: "succeeded", attempts: 2 });
    expect((done.output as { pid: number }).pid).toBe(host.spawned[1]!.pid);
    expect(host.spawned[0]!.alive).toBe(false);
  });

  it("fails the attempt when its worker dies, and replaces the worker", async () => {
    await deployed();
    const done = await runToEnd("env.crash");
    expect(done).toMatchObject({
      status: "failed",
      error: { name: "WorkerExited", message: "the worker running it was killed by SIGKILL" },
    });
    expect((await runToEnd("env.echo")).status).toBe("succeeded");
    expect(host.spawned).toHaveLength(2);
  });

  it("keeps what a run printed", async () => {
    await deployed();
    const done = await runToEnd("env.chatty");
    expect(done).toMatchObject({ status: "succeeded", output: "done", logs: "step 1\nstep 2\n" });
    expect(store.getRun(done.id)!.logs).toBe("step 1\nstep 2\n");
  });

  it("runs at most `concurrency` attempts of a task at once; other tasks are not held", async () => {
    await deployed();
    const a = runner.start(req("env.single"));
    const b = runner.start(req("env.single"));
    await until(() => held.length === 1);
    // b waits for a although a second worker could take it; another task runs meanwhile.
    expect((await runToEnd("env.echo")).status).toBe("succeeded");
    expect(held).toHaveLength(1);
    expect((await runner.wait(b.id)).status).toBe("queued");
    held.shift()!();
    expect((await runner.wait(a.id, 10_000)).status).toBe("succeeded");
    await until(() => held.length === 1);
    held.shift()!();
    expect((await runner.wait(b.id, 10_000)).status).toBe("succeeded");
  });

  it("starts more workers for runs in parallel, up to a cap", async () => {
    await deployed();
    const ids = Array.from({ length: 12 }, () => runner.start(req("env.gated")).id);
    await until(() => held.length === 8);
    expect(host.spawned).toHaveLength(8);
    while (held.length) held.shift()!();
    await until(() => held.length === 4);
    while (held.length) held.shift()!();
    for (const id of ids) expect((await runner.wait(id, 10_000)).status).toBe("succeeded");
    expect(host.spawned).toHaveLength(8);
  });

  it("rejects runs of what is not deployed, before recording anything", async () => {
    await deployed();
    const error = (task: string) => {
      try {
        runner.start(req(task));
      } catch (e) {
        if (isCaravanError(e)) return { code: e.code, message: e.message };
        throw e;
      }
      throw new Error(`${task} was started`);
    };
    expect(error("ghost-env.train")).toEqual({
      code: "NOT_DEPLOYED",
      message: expect.stringContaining('task environment "ghost-env" is not deployed in p/d'),
    });
    expect(error("train")).toEqual({
      code: "NOT_DEPLOYED",
      message: expect.stringContaining('"train" is not a task id'),
    });
    expect(error("env.nope")).toEqual({
      code: "UNKNOWN_TASK",
      message: expect.stringContaining("its tasks: env.echo, env.boom"),
    });
    store.setDesired(scope, "env", "stopped");
    expect(error("env.echo")).toEqual({
      code: "NOT_DEPLOYED",
      message: expect.stringContaining('task environment "env" is stopped in p/d'),
    });
    expect(store.listRuns(undefined)).toEqual([]);
  });

  it("serves runs on the new revision once registered; the old worker finishes first", async () => {
    await deployed();
    const old = host.spawned[0]!;
    const inFlight = runner.start(req("env.gated"));
    await until(() => held.length === 1);
    await deployed(TASKS, { revision: "rev2" });
    expect(host.spawned).toHaveLength(2);
    expect(old.alive).toBe(true); // busy: not stopped under its run
    held.shift()!();
    expect(await runner.wait(inFlight.id, 10_000)).toMatchObject({
      status: "succeeded",
      revision: "rev1",
      output: old.pid,
    });
    await until(() => !old.alive);
    const next = await runToEnd("env.echo");
    expect(next).toMatchObject({ status: "succeeded", revision: "rev2" });
    expect((next.output as { pid: number }).pid).toBe(host.spawned[1]!.pid);
  });

  it("runs on the old revision while a new one loads, then on the new one", async () => {
    await deployed();
    // A redeploy: rev2's worker loads beside rev1's, which keeps taking runs.
    let open!: () => void;
    host.gate = new Promise<void>((r) => (open = r));
    const row2 = taskRow(TASKS, { revision: "rev2" });
    const registered = runner.register(row2);
    const during = runner.start(req("env.echo", ["during redeploy"]));
    expect(await runner.wait(during.id, 10_000)).toMatchObject({
      status: "succeeded",
      revision: "rev1",
      output: { args: ["during redeploy"], pid: host.spawned[0]!.pid },
    });
    open();
    await registered;
    store.upsert(row2);
    const after = runner.start(req("env.echo", ["after"]));
    expect(await runner.wait(after.id, 10_000)).toMatchObject({
      status: "succeeded",
      revision: "rev2",
      output: { args: ["after"], pid: host.spawned[1]!.pid },
    });
    await until(() => !host.spawned[0]!.alive); // rev1's worker retired
    // A first deploy that has not registered anything yet still refuses.
    store.upsert(taskRow(TASKS, { name: "other", state: "starting" }));
    expect(() => runner.start(req("other.echo"))).toThrow(/"other" is starting in p\/d/);
  });

  it("makes one run of one request id (a request resent after a lost answer)", async () => {
    await deployed();
    const first = runner.start({ ...req("env.echo", ["once"]), requestId: "r-1" });
    const again = runner.start({ ...req("env.echo", ["once"]), requestId: "r-1" });
    expect(again.id).toBe(first.id);
    expect(await runner.wait(first.id, 10_000)).toMatchObject({ status: "succeeded" });
    expect(runner.start({ ...req("env.echo", ["once"]), requestId: "r-1" })).toMatchObject({
      id: first.id,
      status: "succeeded",
    });
    expect(store.listRuns(undefined)).toHaveLength(1);
  });

  it("replaces the workers of the same revision when forced", async () => {
    await deployed();
    await runner.register(taskRow(TASKS), { force: true });
    expect(host.spawned).toHaveLength(2);
    await until(() => !host.spawned[0]!.alive);
    expect(await runToEnd("env.echo")).toMatchObject({
      status: "succeeded",
      output: { pid: host.spawned[1]!.pid },
    });
  });

  it("keeps the old revision taking runs when a new one cannot load", async () => {
    await deployed();
    host.failStart = "the snapshot would not load: SyntaxError";
    await expect(runner.register(taskRow(TASKS, { revision: "rev2" }))).rejects.toThrow(
      /would not load/,
    );
    host.failStart = undefined;
    expect(await runToEnd("env.echo")).toMatchObject({
      status: "succeeded",
      revision: "rev1",
      output: { pid: host.spawned[0]!.pid },
    });
  });

  it("fails queued runs when the environment is stopped", async () => {
    await deployed();
    host.gate = new Promise(() => {}); // the second worker never gets ready
    const busy = runner.start(req("env.hang"));
    const queued = runner.start(req("env.echo"));
    await until(() => host.spawned.length === 2);
    await runner.unregister(scope, "env");
    expect(await runner.wait(queued.id, 10_000)).toMatchObject({
      status: "failed",
      error: { name: "Stopped" },
    });
    expect(await runner.wait(busy.id, 10_000)).toMatchObject({
      status: "failed",
      error: { name: "WorkerExited" },
    });
    expect(host.spawned.every((w) => !w.alive)).toBe(true);
  });

  it("fails what waits when no worker can start, with the reason", async () => {
    await deployed();
    await runToEnd("env.crash"); // the only worker is gone
    host.failStart = "the snapshot would not load: SyntaxError";
    expect(await runToEnd("env.echo")).toMatchObject({
      status: "failed",
      error: { name: "WorkerStartError", message: "the snapshot would not load: SyntaxError" },
    });
  });

  it("marks runs in flight interrupted when it closes, and wakes who waits", async () => {
    await deployed();
    const started = runner.start(req("env.hang"));
    await until(() => host.spawned[0]!.received.length === 1);
    const waiting = runner.wait(started.id, 30_000);
    await runner.close();
    expect(await waiting).toMatchObject({ status: "failed", error: { name: "Interrupted" } });
    expect(store.getRun(started.id)).toMatchObject({
      status: "failed",
      error: { name: "Interrupted" },
    });
    expect(host.spawned[0]!.alive).toBe(false);
  });

  it("after a restart, marks runs the previous control plane left unfinished as failed", async () => {
    await deployed();
    const finished = await runToEnd("env.boom");
    const running = runner.start(req("env.hang"));
    await until(() => store.getRun(running.id)!.status === "running");
    host.gate = new Promise(() => {}); // the next worker never gets ready: its run stays queued
    const queued = runner.start(req("env.echo"));
    expect(store.getRun(queued.id)!.status).toBe("queued");
    // A new control plane on the same store (the old one died with its workers).
    const next = new TaskRunner(store, new FakeHost(handlers));
    next.recover();
    for (const [run, was] of [
      [running, "running"],
      [queued, "queued"],
    ] as const) {
      expect(store.getRun(run.id)).toMatchObject({
        status: "failed",
        error: {
          name: "Interrupted",
          message: `the control plane stopped while ${run.id} was ${was}; run it again`,
        },
      });
      expect(store.getRun(run.id)!.finishedAt).toBeDefined();
      expect(await next.wait(run.id)).toMatchObject({ status: "failed" });
    }
    expect(store.getRun(finished.id)).toEqual(finished);
    await next.close();
  });

  it("refuses arguments past 1 MiB, naming their size and the limit, and records nothing", async () => {
    await deployed();
    const big = "x".repeat(1024 * 1024);
    let error: unknown;
    try {
      runner.start(req("env.echo", [big]));
    } catch (e) {
      error = e;
    }
    expect(isCaravanError(error) && error.code).toBe("VALIDATION");
    expect((error as Error).message).toBe(
      "run env.echo: its arguments are 1.0 MiB as JSON, more than the 1.0 MiB a run takes; pass large data by reference (a file path, a URL, an object key) and read it in the task",
    );
    expect(store.listRuns(undefined)).toEqual([]);
  });

  it("fails a run whose output is past 16 MiB, naming its size and the limit, and keeps no output", async () => {
    handlers["env.huge"] = (m, w) => w.ok(m, "y".repeat(17 * 1024 * 1024));
    await deployed([...TASKS, { id: "env.huge", retries: 2 }]);
    const done = await runToEnd("env.huge");
    expect(done).toMatchObject({
      status: "failed",
      attempts: 1, // not retried: it would return as much again
      error: {
        name: "OutputTooLarge",
        message:
          "the result of env.huge is 17.0 MiB as JSON, more than the 16.0 MiB a run may return; store large results elsewhere (a file, an object store) and return where they are",
      },
    });
    expect(store.getRun(done.id)!.output).toBeUndefined();
  });

  it("cuts a huge error message, keeping its end", async () => {
    handlers["env.shouty"] = (m, w) => w.fail(m, `${"a".repeat(1024 * 1024)}the end`);
    await deployed([...TASKS, { id: "env.shouty" }]);
    const done = await runToEnd("env.shouty");
    expect(done.error!.message.length).toBeLessThan(70 * 1024);
    expect(done.error!.message).toMatch(/^\[\d+ characters cut\]…a+the end$/);
  });

  it("deletes a finished run, refuses one in flight, and prunes by age and count per project/domain", async () => {
    await deployed();
    const runs: RunRecord[] = [];
    for (let i = 0; i < 4; i++) runs.push(await runToEnd("env.echo", [i]));
    const running = runner.start(req("env.hang"));
    expect(() => runner.deleteRun(running.id)).toThrow(
      `run ${running.id} is running: a run in flight cannot be deleted; wait for it to finish (caravan runs show ${running.id})`,
    );
    runner.deleteRun(runs[0]!.id);
    expect(store.getRun(runs[0]!.id)).toBeUndefined();
    expect(() => runner.deleteRun(runs[0]!.id)).toThrow(`no run "${runs[0]!.id}"`);
    // Another scope's runs are left alone by a scoped prune.
    const other = {
      ...runs[1]!,
      id: "run-other",
      project: "q",
      createdAt: new Date(Date.now() - 60_000).toISOString(),
    };
    store.insertRun(other);
    store.updateRun(other);
    expect(runner.pruneRuns(scope, { keep: 1 })).toEqual([runs[2]!.id, runs[1]!.id]);
    expect(store.listRuns(undefined).map((r) => r.id)).toEqual([
      running.id,
      runs[3]!.id,
      "run-other",
    ]);
    expect(runner.pruneRuns(undefined, { olderThanMs: 0 }).sort()).toEqual(
      ["run-other", runs[3]!.id].sort(),
    );
    // The run in flight is never pruned.
    expect(store.listRuns(undefined).map((r) => r.id)).toEqual([running.id]);
  });

  it("applies the retention policy: newest N per project/domain, a max age, a byte budget", async () => {
    const kept = new TaskRunner(store, host, { keep: 3, maxAgeDays: 1, maxBytes: 1024 * 1024 });
    try {
      await deployed();
      const row = store.get(scope, "env")!;
      await kept.register(row);
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        const r = kept.start(req("env.echo", [i]));
        ids.push((await kept.wait(r.id, 10_000)).id);
      }
      // One from two days ago: past the age.
      const old = {
        ...store.getRun(ids[4]!)!,
        id: "run-old",
        createdAt: new Date(Date.now() - 2 * 86_400_000).toISOString(),
      };
      store.insertRun(old);
      kept.reap();
      expect(store.listRuns(undefined).map((r) => r.id)).toEqual([ids[4], ids[3], ids[2]]);
      // Outputs past the byte budget: only the newest one that fits is kept with the ones after.
      const big = kept.start(req("env.echo", ["z".repeat(700 * 1024)]));
      await kept.wait(big.id, 10_000);
      const bigger = kept.start(req("env.echo", ["z".repeat(700 * 1024)]));
      await kept.wait(bigger.id, 10_000);
      kept.reap();
      expect(store.listRuns(undefined).map((r) => r.id)).toEqual([bigger.id]);
    } finally {
      await kept.close();
    }
  });

  it("moves outputs and logs of a database from before they were kept apart", () => {
    const file = join(dir, "old.db");
    const old = new Store(file);
    old.database.exec(
      `INSERT INTO runs (id, project, domain, environment, task, revision, status, args, output, logs, attempts, created_at)
       VALUES ('run-1', 'p', 'd', 'env', 'env.echo', 'rev1', 'succeeded', '[]', '{"a":1}', 'printed', 1, '2024-01-01T00:00:00.000Z')`,
    );
    old.close();
    const next = new Store(file);
    expect(next.getRun("run-1")).toMatchObject({ output: { a: 1 }, logs: "printed" });
    expect(next.listRuns(undefined)[0]).not.toHaveProperty("output");
    const raw = next.database.prepare("SELECT output, logs FROM runs").get();
    expect(raw).toEqual({ output: null, logs: null });
    next.close();
  });

  it("answers wait() for an unknown run with NO_SUCH_RUN", async () => {
    await expect(runner.wait("run-000000000000")).rejects.toMatchObject({ code: "NO_SUCH_RUN" });
  });
});
