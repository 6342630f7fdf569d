/**
 * Every example in examples/ (one per scenario of the seed) is planned, deployed with the real
 * CLI in an isolated sandbox, and exercised over HTTP with the request that proves its
 * scenario. Running the example as a script (`tsx examples/x.ts`, its `init` + `deploy` block)
 * deploys the same revisions, so it reports them unchanged.
 */
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT, getText, type CliResult, type Sandbox, useSandbox } from "./helpers.ts";

interface DeploymentJSON {
  name: string;
  kind: "app" | "task" | "job";
  status: string;
  revision: string | null;
  endpoint: string | null;
  internalEndpoint: string | null;
  error: string | null;
}

type Deployed = Record<string, DeploymentJSON>;

interface Scenario {
  /** `plan --json` environments, in order: [name, kind, level, dependsOn]. */
  plan: [string, "app" | "task" | "job", number, string[]][];
  /** The requests that prove the scenario works (`sb` for the CLI, in the example's sandbox). */
  exercise(d: Deployed, sb: Sandbox): Promise<void>;
}

async function getJSON(url: string): Promise<{ status: number; body: unknown }> {
  const { status, body } = await getText(url);
  return { status, body: JSON.parse(body) };
}

async function postJSON(url: string, payload: unknown): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(payload),
  });
  return { status: res.status, body: await res.json() };
}

const SCENARIOS: Record<string, Scenario> = {
  "app-calling-app.ts": {
    plan: [
      ["app1-is-called-by-app2", "app", 0, []],
      ["app2-calls-app1", "app", 1, ["app1-is-called-by-app2"]],
    ],
    async exercise(d) {
      const app2 = d["app2-calls-app1"]!.endpoint;
      expect(await getText(`${app2}/greeting/World`)).toEqual({
        status: 200,
        body: "Hello, World!",
      });
      expect(await getText(`${app2}/app1-endpoint`)).toEqual({
        status: 200,
        body: d["app1-is-called-by-app2"]!.internalEndpoint,
      });
    },
  },

  "dependency-chain.ts": {
    plan: [
      ["service-1", "app", 0, []],
      ["service-2", "app", 1, ["service-1"]],
      ["service-3", "app", 2, ["service-2"]],
    ],
    async exercise(d) {
      // service-3 called service-2, which called service-1.
      expect(await getText(`${d["service-3"]!.endpoint}/chain`)).toEqual({
        status: 200,
        body: "service-3 -> service-2 -> service-1",
      });
      expect(await getText(`${d["service-2"]!.endpoint}/chain`)).toEqual({
        status: 200,
        body: "service-2 -> service-1",
      });
    },
  },

  "multiple-dependencies.ts": {
    plan: [
      ["backend", "app", 0, []],
      ["database", "app", 0, []],
      ["api", "app", 1, ["backend", "database"]],
    ],
    async exercise(d) {
      const api = d.api!.endpoint;
      // One answer made of the database's user and the backend's orders.
      expect(await getJSON(`${api}/users/1/profile`)).toEqual({
        status: 200,
        body: { user: { id: "1", name: "Ada" }, orders: ["analytical engine", "punched cards"] },
      });
      expect(await getJSON(`${api}/users/2/profile`)).toEqual({
        status: 200,
        body: { user: { id: "2", name: "Grace" }, orders: ["compiler"] },
      });
      expect((await getText(`${api}/users/9/profile`)).status).toBe(404);
    },
  },

  "app-endpoint-input.ts": {
    plan: [
      ["backend-api", "app", 0, []],
      ["frontend-app", "app", 1, ["backend-api"]],
    ],
    async exercise(d) {
      const frontend = d["frontend-app"]!.endpoint;
      // getInput("backend_url") is backend-api's internal endpoint.
      expect(await getText(`${frontend}/backend-url`)).toEqual({
        status: 200,
        body: d["backend-api"]!.internalEndpoint,
      });
      expect(await getText(`${frontend}/greeting/Bob`)).toEqual({
        status: 200,
        body: "frontend-app relays: Hello from backend-api, Bob!",
      });
    },
  },

  "migration-before-api.ts": {
    plan: [
      ["migrate-users-db", "job", 0, []],
      ["users-api", "app", 1, ["migrate-users-db"]],
    ],
    async exercise(d, sb) {
      expect(d["migrate-users-db"]).toMatchObject({ kind: "job", endpoint: null });
      // The API read the schema the migration left when it started.
      const api = d["users-api"]!.endpoint;
      expect(await getJSON(`${api}/schema`)).toEqual({ status: 200, body: { schemaVersion: 2 } });
      expect(await getJSON(`${api}/users`)).toEqual({
        status: 200,
        body: [{ id: 1, name: "Ada", email: "ada@example.com" }],
      });
      const logs = await sb.run(["logs", "migrate-users-db"]);
      expect(logs.stdout).toContain("migrated");
    },
  },
  "task-env-dependency.ts": {
    plan: [
      ["training-env", "task", 0, []],
      ["serving-app", "app", 1, ["training-env"]],
    ],
    async exercise(d, sb) {
      expect(d["training-env"]).toMatchObject({ kind: "task", endpoint: null });
      const serving = d["serving-app"]!.endpoint;
      // serving-app runs training-env.train (in a training-env worker) by reference...
      expect(
        await postJSON(`${serving}/train`, {
          points: [
            [1, 2],
            [2, 4],
          ],
        }),
      ).toEqual({
        status: 200,
        body: { slope: 2, points: 2 },
      });
      expect(await getJSON(`${serving}/predict?x=3`)).toEqual({
        status: 200,
        body: { x: 3, y: 6 },
      });
      // ... and by id, and serves the model the run returned.
      expect(
        await postJSON(`${serving}/train-by-id`, {
          points: [
            [1, 3],
            [2, 6],
          ],
        }),
      ).toEqual({
        status: 200,
        body: { slope: 3, points: 2 },
      });
      expect(await getJSON(`${serving}/predict?x=3`)).toEqual({
        status: 200,
        body: { x: 3, y: 9 },
      });
      // The task's error reaches the app's handler (after the one retry it declares).
      const failed = await postJSON(`${serving}/train`, { points: [] });
      expect(failed.status).toBe(500);
      expect((failed.body as { message: string }).message).toMatch(
        /^training-env\.train failed after 2 attempts \(run run-[0-9a-f]+\): train needs at least one \[x, y\] point$/,
      );
      expect((await getText(`${serving}/predict`)).status).toBe(400);
      // The task keeps its declared name in the deployed snapshot.
      expect(await getJSON(`${serving}/tasks`)).toEqual({
        status: 200,
        body: { environment: "training-env", tasks: ["training-env.train"] },
      });
      // Every run is recorded, newest first, with the app as its caller.
      const r = await sb.run(["runs", "--json", "--limit", "3"]);
      expect(r.code, r.stderr).toBe(0);
      const { runs } = JSON.parse(r.stdout) as { runs: Record<string, unknown>[] };
      expect(runs).toMatchObject([
        {
          task: "training-env.train",
          caller: "serving-app",
          status: "failed",
          attempts: 2,
          args: [[]],
          error: { message: "train needs at least one [x, y] point" },
        },
        {
          task: "training-env.train",
          caller: "serving-app",
          status: "succeeded",
          args: [
            [
              [1, 3],
              [2, 6],
            ],
          ],
        },
        {
          task: "training-env.train",
          caller: "serving-app",
          status: "succeeded",
          args: [
            [
              [1, 2],
              [2, 4],
            ],
          ],
        },
      ]);
      // A list leaves outputs out; runs show has a run's output.
      const shown = await sb.run(["runs", "show", String(runs[1]!.id), "--json"]);
      expect(JSON.parse(shown.stdout).run.output).toEqual({ slope: 3, points: 2 });
    },
  },

  "express-app.ts": {
    plan: [["express-greeter", "app", 0, []]],
    async exercise(d) {
      const express = d["express-greeter"]!.endpoint;
      expect(await getText(`${express}/greeting/Ada`)).toEqual({
        status: 200,
        body: "Hello from Express, Ada!",
      });
      expect(await getJSON(`${express}/kind`)).toEqual({
        status: 200,
        body: { framework: "express", app: "express-greeter" },
      });
    },
  },

  "hono-app.ts": {
    plan: [
      ["express-greeter", "app", 0, []],
      ["hono-front", "app", 1, ["express-greeter"]],
    ],
    async exercise(d) {
      const hono = d["hono-front"]!.endpoint;
      expect(await getJSON(`${hono}/kind`)).toEqual({
        status: 200,
        body: { framework: "hono", app: "hono-front" },
      });
      // The Hono app calls the Express app through `expressEnv.endpoint`.
      expect(await getText(`${hono}/express-endpoint`)).toEqual({
        status: 200,
        body: d["express-greeter"]!.internalEndpoint,
      });
      expect(await getText(`${hono}/greeting/Bob`)).toEqual({
        status: 200,
        body: "hono relays: Hello from Express, Bob!",
      });
    },
  },

  "python-command-app.ts": {
    plan: [
      ["python-greeter", "app", 0, []],
      ["ts-caller", "app", 1, ["python-greeter"]],
    ],
    async exercise(d) {
      const python = d["python-greeter"]!.endpoint;
      const caller = d["ts-caller"]!.endpoint;
      // The Python app runs in the snapshot of its included file, with its input as GREETING
      // and in $CARAVAN_INPUTS_FILE.
      expect(await getJSON(`${python}/inputs`)).toEqual({
        status: 200,
        body: { env: { GREETING: "Hello" }, file: { greeting: "Hello" }, cwd_files: ["python"] },
      });
      // The TypeScript app reaches it through its AppEndpoint input.
      expect(await getText(`${caller}/python-url`)).toEqual({
        status: 200,
        body: d["python-greeter"]!.internalEndpoint,
      });
      expect(await getText(`${caller}/greeting/Ann`)).toEqual({
        status: 200,
        body: "ts-caller relays: Hello, Ann! (from Python 3)",
      });
    },
  },

  "server-function.ts": {
    plan: [["plain-node-server", "app", 0, []]],
    async exercise(d) {
      // onStartup ran (with the input) before the server function served this request.
      expect(await getJSON(`${d["plain-node-server"]!.endpoint}/hello`)).toEqual({
        status: 200,
        body: { path: "/hello", motd: "Have a nice day", started: true },
      });
    },
  },

  "ab-testing.ts": {
    plan: [
      ["app-a-variant", "app", 0, []],
      ["app-b-variant", "app", 0, []],
      ["root-ab-testing-app", "app", 1, ["app-a-variant", "app-b-variant"]],
    ],
    async exercise(d) {
      const root = d["root-ab-testing-app"]!.endpoint;
      expect(await getJSON(`${root}/?variant=a`)).toMatchObject({
        status: 200,
        body: { servedBy: "app-a-variant", variant: "A" },
      });
      expect(await getJSON(`${root}/?variant=b`)).toMatchObject({
        status: 200,
        body: { servedBy: "app-b-variant", variant: "B" },
      });
      // Users are split between both variants, each user always to the same one.
      const servedBy = new Map<string, string>();
      for (let i = 0; i < 20; i++) {
        const user = `user-${i}`;
        const first = await getJSON(`${root}/?user=${user}`);
        const again = await getJSON(`${root}/?user=${user}`);
        expect(first.status).toBe(200);
        expect(again.body).toEqual(first.body);
        const body = first.body as { servedBy: string; variant: string; user: string };
        expect(body.user).toBe(user);
        expect(body.servedBy).toBe(body.variant === "A" ? "app-a-variant" : "app-b-variant");
        servedBy.set(user, body.servedBy);
      }
      expect(new Set(servedBy.values())).toEqual(new Set(["app-a-variant", "app-b-variant"]));
      expect((await getText(`${root}/?variant=c`)).status).toBe(400);
    },
  },
};

const EXAMPLES = readdirSync(join(ROOT, "examples"))
  .filter((f) => f.endsWith(".ts"))
  .sort();

/** Runs an example as a script (`tsx examples/<file>`), in the sandbox's CARAVAN_HOME. */
function runScript(sb: Sandbox, file: string): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", join("examples", file)],
      { cwd: ROOT, env: sb.env, timeout: 90_000 },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
      },
    );
  });
}

describe("examples", () => {
  it("every example in examples/ has a scenario here", () => {
    expect(EXAMPLES).toEqual(Object.keys(SCENARIOS).sort());
  });

  describe.each(Object.keys(SCENARIOS))("%s", (file) => {
    const scenario = SCENARIOS[file]!;
    const sb = useSandbox();

    it("plans its environments in dependency order, with levels", async () => {
      const r = await sb.run(["plan", `examples/${file}`, "--json"]);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual({
        project: "default",
        domain: "development",
        environments: scenario.plan.map(([name, kind, level, dependsOn]) => ({
          name,
          kind,
          dependsOn,
          level,
        })),
        order: scenario.plan.map(([name]) => name),
      });
    });

    it("deploys and answers the request that proves its scenario", async () => {
      const r = await sb.run(["deploy", `examples/${file}`, "--json"]);
      expect(r.code, r.stderr).toBe(0);
      const { deployments } = JSON.parse(r.stdout) as { deployments: DeploymentJSON[] };
      expect(deployments.map((d) => d.name).sort()).toEqual(
        scenario.plan.map(([name]) => name).sort(),
      );
      const byName: Deployed = Object.fromEntries(deployments.map((d) => [d.name, d]));
      for (const [name, kind] of scenario.plan) {
        expect(byName[name], JSON.stringify(byName[name])).toMatchObject({
          kind,
          status: "ready",
          error: null,
        });
        if (kind === "app") expect(byName[name]!.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      }
      await scenario.exercise(byName, sb);

      // The example's own `init` + `deploy` block deploys the same thing: nothing changes.
      const script = await runScript(sb, file);
      expect(script.code, script.stderr).toBe(0);
      const lines = script.stdout.split("\n").filter((l) => l.startsWith("Deployed: "));
      const [root, rootKind] = scenario.plan.at(-1)!;
      const why = `${script.stdout}\nafter caravan deploy:\n${r.stdout}`;
      expect(lines[0], why).toContain(`Deployed: ${root} (${rootKind}) unchanged`);
      for (const line of lines)
        expect(line, why).toMatch(/^Deployed: \S+ \((app|task|job)\) unchanged/);
      await scenario.exercise(byName, sb);
    });
  });
});
