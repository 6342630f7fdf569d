/**
 * In a pod nothing watches the runtime over IPC: it answers its readiness probe on
 * CARAVAN_HEALTH_PORT instead — 503 while the app's start-up hooks run, 200 once it serves.
 */
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT, eventually, useSandbox, type Sandbox } from "./helpers.ts";
import { fixture, get } from "./support.ts";

const freePort = async () => {
  const { createServer } = await import("node:net");
  return new Promise<number>((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
};

describe("the runtime's health endpoint", () => {
  const sb = useSandbox();

  it("answers 503 until the app serves, then 200", async () => {
    const [appPort, healthPort] = [await freePort(), await freePort()];
    const go = join(sb.home, "go");
    const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "src/runtime/main.ts")], {
      cwd: ROOT,
      env: {
        ...sb.env,
        GO_FILE: go,
        CARAVAN_HEALTH_PORT: String(healthPort),
        CARAVAN_RUNTIME: JSON.stringify({
          kind: "app",
          name: "slow",
          project: "p",
          domain: "d",
          entry: fixture("kubernetes/health-app.ts"),
          sourceRoot: ROOT,
          port: appPort,
          host: "127.0.0.1",
          endpoints: {},
          publicEndpoints: {},
          inputs: {},
        }),
      },
      stdio: "ignore",
    });
    try {
      await eventually(
        async () => (await get(`http://127.0.0.1:${healthPort}/ready`)).status === 503,
      );
      expect((await get(`http://127.0.0.1:${appPort}/`)).status).toBe(0);
      writeFileSync(go, "");
      await eventually(
        async () => (await get(`http://127.0.0.1:${healthPort}/ready`)).status === 200,
      );
      expect(await get(`http://127.0.0.1:${appPort}/`)).toEqual({ status: 200, body: "serving" });
    } finally {
      // Gone before the sandbox checks that nothing of its home runs.
      const exited = new Promise((resolve) => child.once("exit", resolve));
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await exited;
      }
    }
  });
});

/** The runtime run once with `config` (over a task environment's defaults); its exit and stdout. */
function oneShot(sb: Sandbox, config: Record<string, unknown>) {
  return new Promise<{ code: number | null; stdout: string }>((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "src/runtime/main.ts")], {
      cwd: ROOT,
      env: {
        ...sb.env,
        CARAVAN_RUNTIME: JSON.stringify({
          name: "training-env",
          project: "p",
          domain: "d",
          entry: fixture("kubernetes/tasks.ts"),
          sourceRoot: ROOT,
          port: 0,
          host: "127.0.0.1",
          endpoints: {},
          publicEndpoints: {},
          inputs: {},
          ...config,
        }),
      },
      stdio: ["ignore", "pipe", "ignore"],
    });
    let stdout = "";
    child.stdout.on("data", (c) => (stdout += c));
    child.on("exit", (code) => resolve({ code, stdout }));
  });
}

/** The outcome a one-shot mode printed last (what a pod leaves as its termination message). */
const outcomeOf = (stdout: string) => JSON.parse(stdout.trim().split("\n").at(-1)!);

describe("the runtime's one-shot run (a cluster's Job)", () => {
  const sb = useSandbox();
  const runOnce = (task: string) => oneShot(sb, { kind: "run", task, args: [3] });

  it("runs the task once, prints its outcome (what a pod leaves as its termination message) and exits", async () => {
    const ok = await runOnce("training-env.train");
    expect(ok.code).toBe(0);
    expect(outcomeOf(ok.stdout)).toEqual({
      ok: true,
      output: { epochs: 3 },
    });
    const failed = await runOnce("training-env.explode");
    expect(failed.code).toBe(1);
    const outcome = outcomeOf(failed.stdout);
    expect(outcome).toMatchObject({
      ok: false,
      error: { name: "RangeError", message: "bad epochs: 3" },
    });
    expect(outcome.error.stack).toContain("explode");
  });
});

describe("the runtime's registration (a task environment's Job at deploy)", () => {
  const sb = useSandbox();
  const register = (config: Record<string, unknown>) =>
    oneShot(sb, { kind: "register", ...config });

  it("loads the code, finds every task of the spec and says which it registered", async () => {
    const r = await register({ tasks: ["training-env.train", "training-env.explode"] });
    expect(r.code).toBe(0);
    expect(outcomeOf(r.stdout)).toEqual({
      ok: true,
      tasks: ["training-env.train", "training-env.explode"],
    });
  });

  it("fails, naming the task, when the code does not register one the spec declares", async () => {
    const r = await register({ tasks: ["training-env.train", "training-env.evaluate"] });
    expect(r.code).toBe(1);
    const outcome = outcomeOf(r.stdout);
    expect(outcome).toMatchObject({ ok: false, error: { name: "MissingTask" } });
    expect(outcome.error.message).toContain('"training-env.evaluate"');
    expect(outcome.error.message).not.toContain('"training-env.train"');
    expect(outcome.error.stack).toEqual(expect.any(String));
  });

  it("fails with the error and its stack when the environment is not in the bundle", async () => {
    const r = await register({ name: "no-such-env", tasks: [] });
    expect(r.code).toBe(1);
    const outcome = outcomeOf(r.stdout);
    expect(outcome).toMatchObject({ ok: false });
    expect(outcome.error.message).toMatch(/no task environment named "no-such-env"/);
    expect(outcome.error.stack).toEqual(expect.any(String));
  });
});
