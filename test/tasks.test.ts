/**
 * Issue 5, task environments: apps depend on them (and start only once their tasks are
 * registered), call their tasks, and take inputs from their runs. Runs go to warm workers,
 * are retried and timed out as declared, keep the task's error and stack, and are recorded
 * by a control plane that may restart (or die) in between.
 */
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { RunRecord } from "../src/backends/contract.ts";
import { ROOT, eventually, type CliResult, type Sandbox, useSandbox } from "./helpers.ts";
import {
  deploy,
  events,
  eventsFile,
  fixture,
  get,
  isRunning,
  json,
  status,
  timeOf,
} from "./support.ts";

const JOBS = fixture("tasks/jobs.ts");
const MODEL = fixture("tasks/model.ts");
const SCRIPT = fixture("tasks/script.ts");
const TSX = join(ROOT, "node_modules/tsx/dist/cli.mjs");

interface ErrorJSON {
  code: string;
  message: string;
  details: Record<string, unknown>;
}

/** `caravan run <file> <task> <args> --json`: the run record (and the error, when it failed). */
async function runJSON(
  sb: Sandbox,
  file: string,
  task: string,
  args: string[] = [],
): Promise<CliResult & { run: RunRecord; error?: ErrorJSON }> {
  const r = await sb.run(["run", file, task, ...args, "--json"]);
  return { ...r, ...json<{ run: RunRecord; error?: ErrorJSON }>(r) };
}

/** `caravan runs [args] --json`, newest first. */
async function listRuns(sb: Sandbox, args: string[] = []): Promise<RunRecord[]> {
  const r = await sb.run(["runs", ...args, "--json"]);
  expect(r.code, r.stderr).toBe(0);
  return json<{ runs: RunRecord[] }>(r).runs;
}

/** `caravan runs show <id> --json`. */
async function showRun(sb: Sandbox, id: string): Promise<RunRecord> {
  const r = await sb.run(["runs", "show", id, "--json"]);
  expect(r.code, r.stderr).toBe(0);
  return json<{ run: RunRecord }>(r).run;
}

/** POST /run on caller-app: runs a task by id from inside the app. */
async function callFromApp(
  endpoint: string,
  task: string,
  args: unknown[] = [],
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${endpoint}/run`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ task, args }),
    signal: AbortSignal.timeout(30_000),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function serverStatus(sb: Sandbox) {
  const r = await sb.run(["server", "status", "--json"]);
  expect(r.code, r.stderr).toBe(0);
  return json<{ running: boolean; pid: number | null }>(r);
}

/** The pid recorded by the first jobs-env event named `event`. */
function pidOf(sb: Sandbox, event: string): number {
  const found = events(sb).find((e) => e.app === "jobs-env" && e.event === event);
  if (!found) throw new Error(`no "${event}" event: ${JSON.stringify(events(sb))}`);
  return found.pid;
}

function runScript(sb: Sandbox, args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [TSX, SCRIPT, ...args],
      { cwd: ROOT, env: sb.env, timeout: 90_000 },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
      },
    );
  });
}

describe("task runs", () => {
  // Every command of a test loads the fixtures with the same envVars (the same revisions).
  const sb = useSandbox((fresh) => {
    fresh.env.EVENTS_FILE = eventsFile(fresh);
    fresh.env.STATE_DIR = join(fresh.home, "state");
    mkdirSync(fresh.env.STATE_DIR);
  });

  it("starts an app only once the task environment it depends on is registered; its start-up runs a task", async () => {
    // A jobs-env worker takes 1.5 s to load its tasks; caller-app's onReady hook runs
    // jobs-env.echo, which fails (and fails the app's start) if jobs-env is not ready.
    sb.env.LOAD_DELAY_MS = "1500";
    const r = await deploy(sb, [JOBS]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.deployments.map((d) => [d.name, d.kind, d.status])).toEqual([
      ["jobs-env", "task", "ready"],
      ["caller-app", "app", "ready"],
    ]);
    const endpoint = r.by["caller-app"]!.endpoint!;
    expect(await get(`${endpoint}/startup`)).toEqual({
      status: 200,
      body: JSON.stringify({ atStartup: "from onReady" }),
    });

    // The order of what happened, in the processes where it happened.
    const ev = events(sb);
    expect(timeOf(ev, "jobs-env", "loaded")).toBeLessThan(timeOf(ev, "caller-app", "start"));
    expect(timeOf(ev, "caller-app", "start")).toBeLessThan(timeOf(ev, "jobs-env", "echo"));
    expect(timeOf(ev, "jobs-env", "echo")).toBeLessThan(timeOf(ev, "caller-app", "ready"));

    // The run is recorded, with the app as its caller.
    const runs = await listRuns(sb);
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatchObject({
      task: "jobs-env.echo",
      environment: "jobs-env",
      status: "succeeded",
      caller: "caller-app",
      args: ["from onReady"],
      attempts: 1,
      revision: r.by["jobs-env"]!.revision,
    });
    expect(await showRun(sb, runs[0]!.id)).toMatchObject({ output: "from onReady" });
  });

  it("retries a failing task: with retries N it succeeds on attempt N+1, with fewer it fails with the task's message", async () => {
    // flaky (retries: 2) fails its first `failures` attempts.
    const ok = await runJSON(sb, JOBS, "flaky", ["--args", '["ok", 2]']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.run).toMatchObject({
      status: "succeeded",
      attempts: 3,
      output: { key: "ok", attempt: 3 },
      caller: "cli",
    });
    expect(ok.run.error).toBeUndefined();
    expect(await showRun(sb, ok.run.id)).toMatchObject({
      id: ok.run.id,
      status: "succeeded",
      attempts: 3,
      output: { key: "ok", attempt: 3 },
    });

    // Three failures are one too many for retries: 2.
    const failed = await sb.run(["run", JOBS, "flaky", "--args", '["short", 3]']);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(
      /jobs-env\.flaky failed after 3 attempts \(run run-[0-9a-f]+\): flaky short: attempt 3 failed/,
    );
    const [record] = await listRuns(sb, ["--task", "jobs-env.flaky", "--status", "failed"]);
    expect(record).toMatchObject({
      status: "failed",
      attempts: 3,
      args: ["short", 3],
      error: { name: "Error", message: "flaky short: attempt 3 failed" },
    });
    expect(readFileSync(join(sb.env.STATE_DIR!, "short"), "utf8")).toBe("3");
  });

  it("fails an attempt that outlives its timeout with a TimeoutError, and replaces the worker", async () => {
    const slow = await runJSON(sb, JOBS, "sleepy", ["--args", "[60000]"]);
    expect(slow.code).toBe(1);
    expect(slow.run).toMatchObject({
      status: "failed",
      attempts: 1,
      error: { name: "TimeoutError", message: "jobs-env.sleepy timed out after 1s (attempt 1)" },
    });
    expect(slow.error).toMatchObject({
      code: "TASK_FAILED",
      message: expect.stringContaining("TimeoutError: jobs-env.sleepy timed out after 1s"),
    });
    // The worker still running the task is stopped (JS cannot be interrupted in place).
    const killed = pidOf(sb, "sleepy 60000");
    await eventually(() => !isRunning(killed));

    const next = await runJSON(sb, JOBS, "sleepy", ["--args", "[0]"]);
    expect(next.code, next.stderr).toBe(0);
    expect(next.run.status).toBe("succeeded");
    const worker = next.run.output as number;
    expect(worker).not.toBe(killed);
    expect((await status(sb))["jobs-env"]!.pids).toContain(worker);
  });

  it("brings a failing task's message and stack to the caller: the CLI and an app's HTTP handler", async () => {
    const r = await deploy(sb, [JOBS]);
    expect(r.code, r.stderr).toBe(0);

    const plain = await sb.run(["run", JOBS, "boom", "--input", "message=kaput"]);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/jobs-env\.boom failed \(run run-[0-9a-f]+\): kaput/);
    expect(plain.stderr).toMatch(/Error: kaput\n\s+at boom /); // the task's own stack

    const viaJson = await runJSON(sb, JOBS, "boom", ["--input", "message=kaput again"]);
    expect(viaJson.code).toBe(1);
    expect(viaJson.run).toMatchObject({
      status: "failed",
      attempts: 1,
      args: ["kaput again"],
      error: { name: "Error", message: "kaput again" },
    });
    expect(viaJson.run.error!.stack).toMatch(/^Error: kaput again\n\s+at boom /);
    expect(viaJson.run.logs).toContain("about to fail with kaput again");
    expect(viaJson.error).toMatchObject({
      code: "TASK_FAILED",
      details: { runId: viaJson.run.id, task: "jobs-env.boom" },
    });

    // A result JSON cannot carry fails the run in the worker, naming where it is.
    const badResult = await runJSON(sb, JOBS, "badResult");
    expect(badResult.code).toBe(1);
    expect(badResult.run.error).toMatchObject({
      name: "CaravanError",
      message: expect.stringContaining(
        "task jobs-env.badResult: the result.model is a Map (use an array or a plain object)",
      ),
    });

    const fromApp = await callFromApp(r.by["caller-app"]!.endpoint!, "jobs-env.boom", [
      "from the app",
    ]);
    expect(fromApp.status).toBe(500);
    expect(fromApp.body.code).toBe("TASK_FAILED");
    expect(fromApp.body.message).toMatch(
      /jobs-env\.boom failed \(run run-[0-9a-f]+\): from the app/,
    );
    expect(fromApp.body.stack).toMatch(/in the task:\nError: from the app\n\s+at boom /);
  });

  it("keeps runs across control plane restarts; a run in flight when it was killed ends failed, never running", async () => {
    const r = await deploy(sb, [JOBS]);
    expect(r.code, r.stderr).toBe(0);
    const endpoint = r.by["caller-app"]!.endpoint!;
    expect(await callFromApp(endpoint, "jobs-env.echo", ["one"])).toEqual({
      status: 200,
      body: { output: "one" },
    });
    const cli = await runJSON(sb, JOBS, "echo", ["--args", '["two"]']);
    expect(cli.code, cli.stderr).toBe(0);
    const before = await listRuns(sb);
    expect(before.map((x) => [x.caller, x.args])).toEqual([
      ["cli", ["two"]],
      ["caller-app", ["one"]],
      ["caller-app", ["from onReady"]],
    ]);

    // A graceful stop that leaves the apps running: the next command starts a new daemon.
    const stop = await sb.run(["server", "stop", "--keep-apps"]);
    expect(stop.code, stop.stderr).toBe(0);
    expect((await serverStatus(sb)).running).toBe(false);
    expect(await listRuns(sb)).toEqual(before);
    // The adopted app still runs tasks (the new daemon answers at the address it was given).
    expect(await callFromApp(endpoint, "jobs-env.echo", ["three"])).toEqual({
      status: 200,
      body: { output: "three" },
    });

    // A run in flight, then the daemon is SIGKILLed.
    const hanging = sb.start(["run", JOBS, "hang"]);
    let clientErr = "";
    hanging.stderr!.on("data", (d) => (clientErr += d));
    const exited = new Promise<number | null>((res) => hanging.on("exit", (code) => res(code)));
    const [inFlight] = await eventually(async () => {
      const running = await listRuns(sb, ["--status", "running"]);
      return running.length ? running : undefined;
    });
    expect(inFlight).toMatchObject({ task: "jobs-env.hang", status: "running", caller: "cli" });
    const daemon = JSON.parse(readFileSync(join(sb.home, "daemon.json"), "utf8")) as {
      pid: number;
    };
    process.kill(daemon.pid, "SIGKILL");
    await eventually(() => !isRunning(daemon.pid));
    // The waiting client finds the next control plane (it starts one) and is told the run was
    // interrupted, rather than left waiting or starting the run a second time.
    expect(await exited).toBe(1);
    expect(clientErr).toContain(`jobs-env.hang failed (run ${inFlight!.id}): Interrupted`);
    // The worker went with its control plane.
    await eventually(() => !isRunning(pidOf(sb, "hang")));

    // The next command starts a new daemon, which marks the run interrupted.
    const interrupted = await showRun(sb, inFlight!.id);
    expect(interrupted).toMatchObject({
      status: "failed",
      error: {
        name: "Interrupted",
        message: `the control plane stopped while ${inFlight!.id} was running; run it again`,
      },
    });
    expect(interrupted.finishedAt).toBeDefined();
    const after = await listRuns(sb);
    expect(after.filter((x) => x.status === "running" || x.status === "queued")).toEqual([]);
    expect(after.slice(2)).toEqual(before);
    expect(after[1]).toMatchObject({ caller: "caller-app", args: ["three"] });
    expect(await showRun(sb, after[1]!.id)).toMatchObject({ output: "three" });
    expect((await serverStatus(sb)).pid).not.toBe(daemon.pid);
  });

  it("gives an app the output of a run as a RunOutput input; without one, deploy fails before anything starts", async () => {
    // Nothing deployed, no control plane: the deploy fails on the missing run and starts nothing.
    const none = await sb.run(["deploy", MODEL, "model-app"]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain(
      'app "model-app" input "model": task training-env.train has no succeeded run in default/development',
    );
    expect((await serverStatus(sb)).running).toBe(false);

    // The task environment deployed but never run: still refused, and model-app is not there.
    const env = await deploy(sb, [MODEL, "training-env"]);
    expect(env.code, env.stderr).toBe(0);
    const noRun = await sb.run(["deploy", MODEL, "model-app"]);
    expect(noRun.code).toBe(1);
    expect(noRun.stderr).toContain("task training-env.train has no succeeded run");
    expect(Object.keys(await status(sb))).toEqual(["training-env"]);

    const first = await runJSON(sb, MODEL, "train", ["--args", "[2]"]);
    expect(first.code, first.stderr).toBe(0);
    // A failed run is not an output.
    const bad = await runJSON(sb, MODEL, "train", ["--input", "slope=steep"]);
    expect(bad.code).toBe(1);

    const d1 = await deploy(sb, [MODEL, "model-app"]);
    expect(d1.code, d1.stderr).toBe(0);
    const model = d1.by["model-app"]!.endpoint!;
    expect(await get(`${model}/model`)).toEqual({ status: 200, body: '{"slope":2}' });

    // The latest succeeded run wins: a new run changes the input, so the app is redeployed.
    const second = await runJSON(sb, MODEL, "train", ["--args", "[5]"]);
    expect(second.code, second.stderr).toBe(0);
    const d2 = await deploy(sb, [MODEL, "model-app"]);
    expect(d2.code, d2.stderr).toBe(0);
    expect(d2.by["model-app"]!.status).toBe("ready");
    expect(await get(`${model}/model`)).toEqual({ status: 200, body: '{"slope":5}' });

    // RunOutput({ runId }) takes that run's output, not the latest.
    const pinned = await deploy(sb, [MODEL, "pinned-app"], { PINNED_RUN: first.run.id });
    expect(pinned.code, pinned.stderr).toBe(0);
    expect(await get(`${pinned.by["pinned-app"]!.endpoint}/model`)).toEqual({
      status: 200,
      body: '{"slope":2}',
    });
    // ... and refuses a run that failed.
    const pinFailed = await sb.run(["deploy", MODEL, "pinned-app"], {
      env: { PINNED_RUN: bad.run.id },
    });
    expect(pinFailed.code).toBe(1);
    expect(pinFailed.stderr).toContain(`run "${bad.run.id}" of training-env.train failed`);
  });

  it("rejects arguments JSON cannot carry in run() from a script, naming the argument, before anything starts", async () => {
    const r = await runScript(sb, []);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as Record<
      string,
      { ok: boolean; code: string; message: string }
    >;
    expect(out.function).toMatchObject({ ok: false, code: "NOT_SERIALIZABLE" });
    expect(out.function!.message).toContain("run jobs-env.echo: argument 1 (value) is a function");
    expect(out.nested).toMatchObject({ ok: false, code: "NOT_SERIALIZABLE" });
    expect(out.nested!.message).toContain("run jobs-env.configure: argument 1.epochs is a BigInt");
    expect(out.hole).toMatchObject({ ok: false, code: "NOT_SERIALIZABLE" });
    expect(out.hole!.message).toContain("run jobs-env.add: argument 1 (a) is undefined");
    // Nothing was deployed: no control plane was even started.
    expect((await serverStatus(sb)).running).toBe(false);

    // A good run from the same script deploys jobs-env and returns the output.
    const good = await runScript(sb, ["--good", "--restart"]);
    expect(good.code, good.stderr).toBe(0);
    expect(JSON.parse(good.stdout).good).toEqual({ ok: true, output: { points: [[1, 2]] } });
    // The same process runs again after its control plane was replaced.
    expect(JSON.parse(good.stdout).again).toEqual({ ok: true, output: "after a restart" });
    const [again, record] = await listRuns(sb);
    expect(record).toMatchObject({ task: "jobs-env.echo", caller: "api", status: "succeeded" });
    expect(again).toMatchObject({ args: ["after a restart"], status: "succeeded" });
  });

  it("names the environment when a task's environment is not deployed, and lists the file's tasks for an unknown task", async () => {
    const r = await deploy(sb, [JOBS]);
    expect(r.code, r.stderr).toBe(0);
    const endpoint = r.by["caller-app"]!.endpoint!;

    const ghost = await callFromApp(endpoint, "ghost-env.work");
    expect(ghost.status).toBe(500);
    expect(ghost.body.code).toBe("NOT_DEPLOYED");
    expect(ghost.body.message).toContain(
      'cannot run ghost-env.work: task environment "ghost-env" is not deployed in default/development',
    );
    const unknown = await callFromApp(endpoint, "jobs-env.nope");
    expect(unknown.body).toMatchObject({ code: "UNKNOWN_TASK" });
    expect(unknown.body.message).toContain(
      'task environment "jobs-env" has no task "nope" in its deployed revision',
    );

    const cli = await sb.run(["run", JOBS, "nope"]);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toContain(
      'declares no task "nope"; its tasks: jobs-env.echo, jobs-env.add, jobs-env.configure, jobs-env.whoami, jobs-env.flaky, jobs-env.sleepy, jobs-env.boom, jobs-env.badResult, jobs-env.hang',
    );
    // Nothing was recorded for any of them.
    expect(await listRuns(sb)).toHaveLength(1); // caller-app's start-up run
  });

  it("reuses a warm worker: consecutive runs, from the CLI and from an app, run in the same process", async () => {
    const r = await deploy(sb, [JOBS]);
    expect(r.code, r.stderr).toBe(0);
    const [worker] = (await status(sb))["jobs-env"]!.pids;
    expect(worker).toBeDefined();

    const a = await runJSON(sb, JOBS, "whoami");
    const b = await runJSON(sb, JOBS, "whoami");
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    expect([a.run.output, b.run.output]).toEqual([worker, worker]);
    expect(await callFromApp(r.by["caller-app"]!.endpoint!, "jobs-env.whoami")).toEqual({
      status: 200,
      body: { output: worker },
    });
    expect((await status(sb))["jobs-env"]!.pids).toEqual([worker]);
  });

  it("lets an app in another language run tasks over HTTP with the token it is given, in its own scope only", async () => {
    const r = await deploy(sb, [fixture("tasks/polyglot.ts"), "py-caller"]);
    expect(r.code, r.stderr).toBe(0);
    const caller = r.by["py-caller"]!.endpoint!;
    const call = async (query: string) =>
      (await (await fetch(`${caller}/run?${query}`)).json()) as {
        status: number;
        body: { run?: Record<string, unknown>; error?: { code: string; message: string } };
      };
    const ok = await call(`task=jobs-env.add&args=${encodeURIComponent("[1, 2]")}`);
    expect(ok.status).toBe(201);
    expect(ok.body.run).toMatchObject({ task: "jobs-env.add", status: "succeeded", output: 3 });
    // The injected token is good for runs in the app's own project/domain only.
    const other = await call(`task=jobs-env.add&args=${encodeURIComponent("[1]")}&project=other`);
    expect(other.status).toBe(401);
    expect(other.body.error?.message).toMatch(/this token is for runs in default\/development/);
  });

  it("maps --input to parameters by name, and takes --args as a JSON array", async () => {
    const out = async (task: string, args: string[]) => {
      const r = await sb.run(["run", JOBS, task, ...args]);
      expect(r.code, r.stderr).toBe(0);
      return r.stdout.trim();
    };
    expect(await out("add", ["--input", "a=2", "--input", "b=3"])).toBe("5");
    expect(await out("add", ["--input", "b=3", "--input", "a=2"])).toBe("5");
    expect(await out("add", ["--input", "a=2"])).toBe("12"); // b keeps its default
    expect(await out("add", ["--args", "[1, 2]"])).toBe("3");
    expect(await out("add", ["--args", "7"])).toBe("17"); // one value: the first argument
    // One destructured parameter gets every --input as one object.
    expect(
      JSON.parse(await out("configure", ["--input", "lr=0.1", "--input", "epochs=3"])),
    ).toEqual({
      lr: 0.1,
      epochs: 3,
    });
    // A value is JSON when it parses, else the string itself.
    expect(await out("echo", ["--input", "value=hello"])).toBe("hello");
    expect(JSON.parse(await out("echo", ["--input", 'value={"a":[1,"x"]}']))).toEqual({
      a: [1, "x"],
    });

    const [latest] = await listRuns(sb, ["--task", "jobs-env.add", "--limit", "1"]);
    // A list leaves outputs out; the run has its own.
    expect(latest).toMatchObject({ args: [7], caller: "cli" });
    expect(latest).not.toHaveProperty("output");
    expect(await showRun(sb, latest!.id)).toMatchObject({ output: 17 });

    const usage = async (args: string[], message: string) => {
      const r = await sb.run(["run", JOBS, "add", ...args]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain(message);
    };
    await usage(["--input", "c=1"], 'jobs-env.add has no parameter "c"; its parameters: a, b');
    // b without a would send a as null: refused, not run with a surprise.
    await usage(
      ["--input", "b=3"],
      "jobs-env.add: --input gives b but not a, which comes before it",
    );
    await usage(["--args", "[1"], "--args is not JSON");
    await usage(
      ["--args", "[1]", "--input", "a=1"],
      "give the arguments with --args or with --input, not both",
    );
    expect(await listRuns(sb, ["--task", "jobs-env.add"])).toHaveLength(5);
  });
});
