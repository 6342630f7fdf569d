/**
 * What every backend must do, as the contract (DESIGN §3, §5) says, checked through the CLI
 * and the programmatic API with the backend chosen the way a user chooses it (config,
 * CARAVAN_BACKEND, --backend). A backend's test file calls `backendConformance(driver)`; the
 * driver says what differs: how the CLI selects the backend, how an app is made to fail,
 * setup and teardown.
 *
 * The graph is test/fixtures/conformance/graph.ts: a chain base <- middle <- top and a
 * fan-in left, right <- join. Task runs use test/fixtures/conformance/tasks.ts: task
 * environments math (and the app uses-math, which depends on it) and strict.
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { RunRecord } from "../../src/backends/contract.ts";
import { ROOT, type CliResult, type Sandbox } from "../helpers.ts";
import { byName, fixture, json, type DeploymentJSON, type StatusJSON } from "../support.ts";

export interface ConformanceDriver {
  /** The backend's name, in the tests' names. */
  name: string;
  /**
   * The sandbox every test runs the CLI in, fresh for each test and torn down after it.
   * Called once, at the top of the suite's `describe` (so it may register hooks there), e.g.
   * `() => useSandbox()`; its `env` selects the backend, or `args`/`env` below do.
   */
  sandbox(): Sandbox;
  /** Arguments for every command that takes a scope (`--backend`, `--context`, `--project`). */
  args?(): string[];
  /** Environment for every command, on top of the sandbox's (`CARAVAN_BACKEND`, `KUBECONFIG`). */
  env?(): NodeJS.ProcessEnv;
  /**
   * Environment for the CLI that deploys the graph so that `app` fails to become ready. The
   * fixture reads `CONFORMANCE_FAIL` (the app: its process exits at start-up) and
   * `CONFORMANCE_FAIL_POD_ANNOTATIONS` (JSON pod annotations, for simulated pods).
   */
  failing(app: string): NodeJS.ProcessEnv;
  /** Skip the suite (say, no cluster to test against). */
  skip?: boolean;
  /** Per test. @default 120_000 */
  timeoutMs?: number;
}

const GRAPH = fixture("conformance/graph.ts");
const DEPLOY_TIMED = fixture("conformance/deploy-timed.ts");
const TASKS = fixture("conformance/tasks.ts");
const TSX = join(ROOT, "node_modules/tsx/dist/cli.mjs");

/** Direct dependencies of each environment of the graph. */
const DEPENDS_ON: Record<string, string[]> = {
  base: [],
  middle: ["base"],
  top: ["middle"],
  left: [],
  right: [],
  join: ["left", "right"],
};
const NAMES = Object.keys(DEPENDS_ON).sort();
const CHAIN = ["base", "middle", "top"];
const FAN_IN = ["left", "right", "join"];

const byId = <T extends { id: string }>(list: T[]): Record<string, T> =>
  Object.fromEntries(list.map((x) => [x.id, x]));

interface Outcome {
  name: string;
  kind: string;
  status: string;
  startedAt?: number;
  finishedAt: number;
}

/** Fails unless every name of `order` comes after all of its dependents that are in it. */
function expectDependentsFirst(order: string[]): void {
  for (const [i, name] of order.entries()) {
    const dependents = Object.keys(DEPENDS_ON).filter((d) => DEPENDS_ON[d]!.includes(name));
    for (const d of dependents.filter((d) => order.includes(d)))
      expect(order.indexOf(d), `${d} goes before ${name}, which it depends on`).toBeLessThan(i);
  }
}

export function backendConformance(driver: ConformanceDriver): void {
  describe.skipIf(driver.skip ?? false)(`backend conformance: ${driver.name}`, () => {
    const sb = driver.sandbox();
    const timeout = driver.timeoutMs ?? 120_000;
    const args = () => driver.args?.() ?? [];
    const env = (extra: NodeJS.ProcessEnv = {}) => ({ ...driver.env?.(), ...extra });
    const cli = (argv: string[], extra?: NodeJS.ProcessEnv) =>
      sb.run([...argv, ...args()], { env: env(extra), timeoutMs: timeout });

    async function deploy(extra?: NodeJS.ProcessEnv) {
      const r = await cli(["deploy", GRAPH, "--json"], extra);
      return { ...r, deployments: json<{ deployments: DeploymentJSON[] }>(r).deployments };
    }
    /** deploy-timed.ts: each environment's outcome with when the engine started and finished it. */
    async function deployTimed(graph = "graph"): Promise<Record<string, Outcome>> {
      const r = await new Promise<CliResult>((resolve) => {
        execFile(
          process.execPath,
          [TSX, DEPLOY_TIMED, "--graph", graph, ...args()],
          { cwd: ROOT, env: { ...sb.env, ...env() }, timeout },
          (err, stdout, stderr) =>
            resolve({
              code: err ? (typeof err.code === "number" ? err.code : 1) : 0,
              stdout,
              stderr,
            }),
        );
      });
      expect(r.code, r.stderr).toBe(0);
      return byName(json<{ outcomes: Outcome[] }>(r).outcomes);
    }
    async function status(): Promise<StatusJSON[]> {
      const r = await cli(["status", "--json"]);
      expect(r.code, r.stderr).toBe(0);
      return json<{ environments: StatusJSON[] }>(r).environments;
    }

    it(
      "starts each environment only after its dependencies are ready, down a chain and into a fan-in",
      async () => {
        const outcomes = await deployTimed();
        expect(Object.keys(outcomes).sort()).toEqual(NAMES);
        for (const [name, deps] of Object.entries(DEPENDS_ON)) {
          const o = outcomes[name]!;
          expect(o.status, name).toBe("ready");
          for (const dep of deps)
            expect(o.startedAt, `${name} started before ${dep} was ready`).toBeGreaterThanOrEqual(
              outcomes[dep]!.finishedAt,
            );
        }
      },
      timeout,
    );

    it(
      "answers deploy --json and status --json in DESIGN §5's shapes; a second deploy changes nothing",
      async () => {
        const first = await deploy();
        expect(first.code, first.stderr).toBe(0);
        for (const d of first.deployments) {
          expect(Object.keys(d).sort(), d.name).toEqual([
            "endpoint",
            "error",
            "internalEndpoint",
            "kind",
            "name",
            "revision",
            "status",
          ]);
          expect(d, d.name).toMatchObject({ kind: "app", status: "ready", error: null });
          expect(d.revision, d.name).toEqual(expect.any(String));
          expect(d.endpoint, d.name).toMatch(/^https?:\/\//);
          expect(d.internalEndpoint, d.name).toMatch(/^https?:\/\//);
        }
        const deployed = byName(first.deployments);
        expect(Object.keys(deployed).sort()).toEqual(NAMES);

        const envs = await status();
        expect(envs.map((e) => e.name).sort()).toEqual(NAMES);
        for (const e of envs) {
          const d = deployed[e.name]!;
          expect(e, e.name).toMatchObject({
            name: d.name,
            kind: "app",
            state: "ready",
            revision: d.revision,
            endpoint: d.endpoint,
            internalEndpoint: d.internalEndpoint,
            restarts: expect.any(Number),
            pids: expect.any(Array),
          });
          expect(e.instances.length, `${e.name} has an instance`).toBeGreaterThanOrEqual(1);
          for (const i of e.instances) {
            expect(i.id, e.name).toEqual(expect.any(String));
            expect(typeof i.ready, e.name).toBe("boolean");
          }
          expect(
            e.instances.some((i) => i.ready),
            `${e.name} has a ready instance`,
          ).toBe(true);
        }

        const again = await deploy();
        expect(again.code, again.stderr).toBe(0);
        for (const d of again.deployments) {
          expect(d, d.name).toMatchObject({
            status: "unchanged",
            revision: deployed[d.name]!.revision,
            endpoint: deployed[d.name]!.endpoint,
            internalEndpoint: deployed[d.name]!.internalEndpoint,
          });
        }
      },
      timeout,
    );

    it(
      "skips the dependents of a failed environment with the reason, finishes the independent branch and exits 1",
      async () => {
        const r = await deploy(driver.failing("base"));
        expect(r.code, r.stderr).toBe(1);
        const by = byName(r.deployments);
        expect(by.base).toMatchObject({ status: "failed", error: expect.any(String) });
        for (const name of ["middle", "top"])
          expect(by[name], name).toMatchObject({
            status: "skipped",
            error: "dependency base failed",
          });
        for (const name of FAN_IN) expect(by[name], name).toMatchObject({ status: "ready" });
        const envs = byName(await status());
        for (const name of FAN_IN) expect(envs[name], name).toMatchObject({ state: "ready" });
        // Skipped environments were never started.
        for (const name of ["middle", "top"])
          expect(envs[name] === undefined || envs[name].state !== "ready", name).toBe(true);
      },
      timeout,
    );

    it(
      "stops dependents first, and refuses to stop a dependency while a dependent runs unless --cascade",
      async () => {
        const first = await deploy();
        expect(first.code, first.stderr).toBe(0);

        const refused = await cli(["stop", "base", "--json"]);
        expect(refused.code).toBe(1);
        const error = json<{ error: { code: string; message: string } }>(refused).error;
        expect(error.code).toBe("DEPENDENTS_EXIST");
        // It names every running dependent, direct or not.
        expect(error.message).toContain("middle");
        expect(error.message).toContain("top");
        expect(byName(await status()).base).toMatchObject({ state: "ready" });

        const stopped = await cli(["stop", "base", "--cascade", "--json"]);
        expect(stopped.code, stopped.stderr).toBe(0);
        const order = json<{ stopped: string[] }>(stopped).stopped;
        expect([...order].sort()).toEqual([...CHAIN].sort());
        expectDependentsFirst(order);
        const envs = byName(await status());
        for (const name of CHAIN) expect(envs[name], name).toMatchObject({ state: "stopped" });
        for (const name of FAN_IN) expect(envs[name], name).toMatchObject({ state: "ready" });
      },
      timeout,
    );

    it(
      "deletes dependents first, refusing while a dependent runs unless --cascade, and leaves nothing in status",
      async () => {
        const first = await deploy();
        expect(first.code, first.stderr).toBe(0);

        const refused = await cli(["delete", "left", "--json"]);
        expect(refused.code).toBe(1);
        expect(json<{ error: { code: string } }>(refused).error.code).toBe("DEPENDENTS_EXIST");
        expect((await status()).map((e) => e.name).sort()).toEqual(NAMES);

        const deleted = await cli(["delete", "base", "left", "right", "--cascade", "--json"]);
        expect(deleted.code, deleted.stderr).toBe(0);
        const order = json<{ deleted: string[] }>(deleted).deleted;
        expect([...order].sort()).toEqual(NAMES);
        expectDependentsFirst(order);
        expect(await status()).toEqual([]);
      },
      timeout,
    );

    it(
      "deploys task environments before the app that depends on one; caravan run returns a task's output or its error; caravan runs lists the runs",
      async () => {
        const outcomes = await deployTimed("tasks");
        expect(Object.keys(outcomes).sort()).toEqual(["math", "strict", "uses-math"]);
        for (const name of ["math", "strict"])
          expect(outcomes[name], name).toMatchObject({ kind: "task", status: "ready" });
        expect(outcomes["uses-math"]).toMatchObject({ kind: "app", status: "ready" });
        expect(
          outcomes["uses-math"]!.startedAt,
          "uses-math started before math was ready",
        ).toBeGreaterThanOrEqual(outcomes.math!.finishedAt);
        const envs = byName(await status());
        for (const name of ["math", "strict"])
          expect(envs[name], name).toMatchObject({ kind: "task", state: "ready" });

        // The fixture's tasks with [21]: math.double returns { n, doubled }; strict.even throws.
        const run = async (task: string) => {
          const r = await cli(["run", TASKS, task, "--args", "[21]", "--json"]);
          return { ...r, ...json<{ run: RunRecord }>(r) };
        };
        const ok = await run("math.double");
        expect(ok.code, ok.stderr).toBe(0);
        expect(ok.run).toMatchObject({
          task: "math.double",
          environment: "math",
          status: "succeeded",
          args: [21],
          output: { n: 21, doubled: 42 },
        });
        const failed = await run("strict.even");
        expect(failed.code).toBe(1);
        expect(failed.run).toMatchObject({
          task: "strict.even",
          environment: "strict",
          status: "failed",
          args: [21],
          error: { name: "RangeError", message: "refusing 21: strict takes no odd numbers" },
        });
        expect(failed.stderr).toContain("refusing 21: strict takes no odd numbers");

        const listed = await cli(["runs", "--json"]);
        expect(listed.code, listed.stderr).toBe(0);
        const runs = byId(json<{ runs: RunRecord[] }>(listed).runs);
        expect(Object.keys(runs).sort()).toEqual([ok.run.id, failed.run.id].sort());
        // A list leaves outputs out (runs show has them).
        expect(runs[ok.run.id]).toMatchObject({ status: "succeeded" });
        expect(runs[ok.run.id]!.output).toBeUndefined();
        expect(runs[failed.run.id]).toMatchObject({
          status: "failed",
          error: { message: failed.run.error!.message },
        });
        const shown = await cli(["runs", "show", ok.run.id, "--json"]);
        expect(shown.code, shown.stderr).toBe(0);
        expect(json<{ run: RunRecord }>(shown).run).toMatchObject({
          id: ok.run.id,
          output: { n: 21, doubled: 42 },
        });
      },
      timeout,
    );
  });
}
