import { describe, expect, it } from "vitest";
import type { Backend, DeployRequest, DeployResult } from "../backends/contract.ts";
import { CaravanError } from "../errors.ts";
import { planDeployment, type Plan } from "../plan/plan.ts";
import { TaskEnvironment, type Environment } from "../sdk/environment.ts";
import { executePlan, type EngineEvent } from "./engine.ts";

/** A backend whose deploys finish when the test says so: the engine's view of time. */
class ManualBackend implements Partial<Backend> {
  readonly started: string[] = [];
  private waiters = new Map<
    string,
    { resolve: (r: DeployResult) => void; reject: (e: Error) => void }
  >();
  private arrivals: (() => void)[] = [];

  deploy(req: DeployRequest): Promise<DeployResult> {
    this.started.push(req.name);
    this.arrivals.splice(0).forEach((f) => f());
    return new Promise((resolve, reject) => this.waiters.set(req.name, { resolve, reject }));
  }
  /** Resolves once `n` deploys have started. */
  async untilStarted(n: number): Promise<void> {
    while (this.started.length < n) await new Promise<void>((r) => this.arrivals.push(r));
  }
  finish(name: string): void {
    this.waiters.get(name)!.resolve({ status: "ready", revision: `rev-${name}` });
  }
  fail(name: string): void {
    this.waiters.get(name)!.reject(new CaravanError("APP_EXITED", `${name} exited with code 3`));
  }
}

/** Edges by name; a dependency written `~name` is soft (`wait: false`). */
function graph(edges: Record<string, string[]>): Plan {
  const envs = new Map<string, Environment>();
  for (const name of Object.keys(edges)) envs.set(name, new TaskEnvironment({ name }));
  for (const [name, deps] of Object.entries(edges))
    envs
      .get(name)!
      .addDependency(
        ...deps.map((d) =>
          d.startsWith("~") ? { env: envs.get(d.slice(1))!, wait: false } : envs.get(d)!,
        ),
      );
  return planDeployment([...envs.values()], { project: "p", domain: "d" });
}

function run(plan: Plan, backend: ManualBackend, concurrency?: number, events: EngineEvent[] = []) {
  return executePlan(plan, backend as unknown as Backend, {
    ...(concurrency ? { concurrency } : {}),
    request: (env) => ({ name: env.name }) as DeployRequest,
    onEvent: (e) => events.push(e),
  });
}

const flush = () => new Promise((r) => setImmediate(r));

describe("executePlan", () => {
  it("starts an environment as soon as its own dependencies are ready, not when a level is done", async () => {
    // slow (level 0) and fast (level 0); after-fast (level 1) depends only on fast.
    const plan = graph({
      slow: [],
      fast: [],
      "after-fast": ["fast"],
      "after-both": ["slow", "after-fast"],
    });
    const backend = new ManualBackend();
    const done = run(plan, backend);
    await backend.untilStarted(2);
    expect(backend.started.sort()).toEqual(["fast", "slow"]);
    backend.finish("fast");
    await backend.untilStarted(3);
    expect(backend.started).toContain("after-fast"); // while "slow" is still deploying
    await flush();
    expect(backend.started).not.toContain("after-both");
    backend.finish("after-fast");
    await flush();
    expect(backend.started).not.toContain("after-both"); // still waits for slow
    backend.finish("slow");
    await backend.untilStarted(4);
    backend.finish("after-both");
    const outcomes = await done;
    expect(outcomes.map((o) => [o.name, o.status])).toEqual(plan.order.map((n) => [n, "ready"]));
  });

  it("runs independent environments in parallel, bounded by the concurrency limit", async () => {
    const plan = graph({ a: [], b: [], c: [], d: [] });
    const backend = new ManualBackend();
    const done = run(plan, backend, 2);
    await backend.untilStarted(2);
    await flush();
    expect(backend.started).toHaveLength(2);
    backend.finish(backend.started[0]!);
    await backend.untilStarted(3);
    await flush();
    expect(backend.started).toHaveLength(3);
    for (const n of backend.started.slice(1)) backend.finish(n);
    await backend.untilStarted(4);
    backend.finish(backend.started[3]!);
    expect((await done).every((o) => o.status === "ready")).toBe(true);
  });

  it("skips every transitive dependent of a failure with the reason, and finishes independent branches", async () => {
    const plan = graph({ db: [], api: ["db"], web: ["api"], other: [], "uses-other": ["other"] });
    const backend = new ManualBackend();
    const events: EngineEvent[] = [];
    const done = run(plan, backend, undefined, events);
    await backend.untilStarted(2);
    backend.fail("db");
    backend.finish("other");
    await backend.untilStarted(3);
    backend.finish("uses-other");
    const byName = Object.fromEntries((await done).map((o) => [o.name, o]));
    expect(byName.db!.status).toBe("failed");
    expect(byName.db!.error).toContain("exited with code 3");
    expect(byName.api).toMatchObject({ status: "skipped", error: "dependency db failed" });
    expect(byName.web).toMatchObject({ status: "skipped", error: "dependency db failed" });
    expect(byName["uses-other"]!.status).toBe("ready");
    expect(backend.started).not.toContain("api");
    expect(
      events
        .filter((e) => e.type === "waiting")
        .map((e) => (e as { name: string }).name)
        .sort(),
    ).toEqual(["api", "uses-other", "web"]);
  });

  it("rejects a concurrency below 1", async () => {
    await expect(run(graph({ a: [] }), new ManualBackend(), -1)).rejects.toMatchObject({
      code: "USAGE",
    });
  });

  it("starts a soft dependent once its dependency starts, and a failed soft dependency skips nothing", async () => {
    const plan = graph({ cache: [], db: [], web: ["~cache", "db"] });
    const backend = new ManualBackend();
    const done = run(plan, backend);
    await backend.untilStarted(2); // cache and db
    backend.finish("db");
    // web waits for db to be ready, and only for cache to have started.
    await backend.untilStarted(3);
    expect(backend.started.slice(0, 2).sort()).toEqual(["cache", "db"]);
    expect(backend.started[2]).toBe("web");
    backend.fail("cache");
    backend.finish("web");
    const outcomes = Object.fromEntries((await done).map((o) => [o.name, o.status]));
    expect(outcomes).toEqual({ cache: "failed", db: "ready", web: "ready" });
  });

  it("a soft dependency that is skipped lets its soft dependent start anyway", async () => {
    const plan = graph({ base: [], cache: ["base"], web: ["~cache"] });
    const backend = new ManualBackend();
    const done = run(plan, backend);
    await backend.untilStarted(1);
    backend.fail("base"); // cache is skipped: web must not wait for it forever
    await backend.untilStarted(2);
    expect(backend.started).toEqual(["base", "web"]);
    backend.finish("web");
    const outcomes = Object.fromEntries((await done).map((o) => [o.name, o.status]));
    expect(outcomes).toEqual({ base: "failed", cache: "skipped", web: "ready" });
  });

  it("an environment skipped by two failures releases its soft dependents once", async () => {
    // x needs f1 and f2; z needs x softly and g for real: z must wait for g however x ends.
    const plan = graph({ f1: [], f2: [], g: [], x: ["f1", "f2"], z: ["~x", "g"] });
    const backend = new ManualBackend();
    const done = run(plan, backend);
    await backend.untilStarted(3); // f1, f2, g
    backend.fail("f1");
    backend.fail("f2");
    await flush();
    await flush();
    expect(backend.started).not.toContain("z"); // g is not ready yet
    backend.finish("g");
    await backend.untilStarted(4);
    backend.finish("z");
    const outcomes = Object.fromEntries((await done).map((o) => [o.name, o.status]));
    expect(outcomes).toEqual({ f1: "failed", f2: "failed", g: "ready", x: "skipped", z: "ready" });
  });
});
