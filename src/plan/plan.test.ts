import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  AppEnvironment,
  TaskEnvironment,
  type AppEnvironmentOptions,
  type Environment,
} from "../sdk/environment.ts";
import { Image } from "../sdk/image.ts";
import { AppEndpoint, Input } from "../sdk/inputs.ts";
import { planDeployment, planToJSON, type Plan, type PlanOptions } from "./plan.ts";
import { errorOf, callerLine } from "../test-helpers.ts";

const THIS_FILE = fileURLToPath(import.meta.url);
const SCOPE: PlanOptions = { project: "shop", domain: "development" };

function app(name: string, opts: Partial<AppEnvironmentOptions> = {}): AppEnvironment {
  return new AppEnvironment({ name, command: ["node", "x.js"], ...opts });
}

function task(name: string, dependsOn: Environment[] = []): TaskEnvironment {
  return new TaskEnvironment({ name, dependsOn });
}

function plan(envs: unknown[], opts: PlanOptions = SCOPE): Plan {
  return planDeployment(envs, opts);
}

/** Every edge of the plan goes from a dependency to something later in the order. */
function expectDependenciesFirst(p: Plan): void {
  const position = new Map(p.order.map((n, i) => [n, i]));
  for (const e of p.environments) {
    for (const d of e.env.dependsOn)
      expect(position.get(d.name)!).toBeLessThan(position.get(e.name)!);
  }
}

describe("closure", () => {
  it("plans a single environment", () => {
    const only = app("only");
    const p = plan([only]);
    expect(p.order).toEqual(["only"]);
    expect(p.environments).toHaveLength(1);
    expect(p.environments[0]).toMatchObject({
      name: "only",
      kind: "app",
      env: only,
      dependsOn: [],
      dependents: [],
      level: 0,
    });
    expect(p.byName.get("only")?.env).toBe(only);
    expect(p.project).toBe("shop");
    expect(p.domain).toBe("development");
  });

  it("follows a chain transitively", () => {
    const c = task("c");
    const b = app("b", { dependsOn: [c] });
    const a = app("a", { dependsOn: [b] });
    const p = plan([a]);
    expect(p.order).toEqual(["c", "b", "a"]);
    expect(p.environments.map((e) => [e.name, e.level])).toEqual([
      ["c", 0],
      ["b", 1],
      ["a", 2],
    ]);
    expect(p.byName.get("c")!.dependents).toEqual(["b"]);
  });

  it("plans only the closure of what was asked", () => {
    const base = task("base");
    const used = app("used", { dependsOn: [base] });
    app("unrelated", { dependsOn: [base] });
    expect(plan([used]).order).toEqual(["base", "used"]);
  });

  it("plans a diamond once per environment", () => {
    const base = task("base");
    const left = app("left", { dependsOn: [base] });
    const right = app("right", { dependsOn: [base] });
    const top = app("top", { dependsOn: [right, left] });
    const p = plan([top]);
    expect(p.order).toEqual(["base", "left", "right", "top"]);
    expect(p.environments.map((e) => e.level)).toEqual([0, 1, 1, 2]);
    expect(p.byName.get("top")!.dependsOn).toEqual(["left", "right"]);
    expect(p.byName.get("base")!.dependents).toEqual(["left", "right"]);
  });

  it("fans out from one dependency to many dependents", () => {
    const db = task("db");
    const names = ["svc-e", "svc-c", "svc-a", "svc-d", "svc-b"];
    const services = names.map((n) => app(n, { dependsOn: [db] }));
    const p = plan(services);
    expect(p.order).toEqual(["db", "svc-a", "svc-b", "svc-c", "svc-d", "svc-e"]);
    expect(p.byName.get("db")!.dependents).toEqual(["svc-a", "svc-b", "svc-c", "svc-d", "svc-e"]);
    expect(p.environments.filter((e) => e.level === 1)).toHaveLength(5);
  });

  it("plans an environment once when it is passed twice and also reached as a dependency", () => {
    const base = task("base");
    const top = app("top", { dependsOn: [base] });
    const p = plan([top, base, top, base]);
    expect(p.order).toEqual(["base", "top"]);
    expect(p.environments).toHaveLength(2);
  });

  it("lists a dependency once even when dependsOn holds it twice", () => {
    // addDependency deduplicates; an environment from another copy of caravan might not.
    const base = task("base");
    const top = app("top", { dependsOn: [base] });
    (top.dependsOn as Environment[]).push(base);
    const p = plan([top]);
    expect(p.order).toEqual(["base", "top"]);
    expect(p.byName.get("top")!.dependsOn).toEqual(["base"]);
    expect(p.byName.get("base")!.dependents).toEqual(["top"]);
  });

  it("accepts apps and task environments mixed, with their kinds", () => {
    const t = task("trainer");
    const a = app("serving", { dependsOn: [t] });
    expect(plan([a]).environments.map((e) => [e.name, e.kind])).toEqual([
      ["trainer", "task"],
      ["serving", "app"],
    ]);
  });
});

describe("order and levels", () => {
  it("breaks ties by name", () => {
    const p = plan([task("charlie"), task("alpha"), task("bravo")]);
    expect(p.order).toEqual(["alpha", "bravo", "charlie"]);
  });

  it("starts an environment as soon as its own dependencies are placed (not by level)", () => {
    // "a" (level 1) sorts before "m" (level 0): once "z" is placed, "a" is the smallest ready name.
    const z = task("z");
    const a = app("a", { dependsOn: [z] });
    const m = task("m");
    const y = task("y");
    expect(plan([a, m, y]).order).toEqual(["m", "y", "z", "a"]);
  });

  it("does not depend on the order of arguments or of dependsOn", () => {
    const build = () => {
      const base = task("base");
      const x = app("x", { dependsOn: [base] });
      const y = app("y", { dependsOn: [base] });
      return { base, x, y, top: app("top", { dependsOn: [y, x] }) };
    };
    const one = build();
    const two = build();
    two.top.dependsOn.reverse();
    expect(plan([one.top, one.base]).order).toEqual(plan([two.y, two.top, two.x]).order);
  });

  it("sets level to the longest chain below, not the shortest", () => {
    const c = task("c");
    const b = app("b", { dependsOn: [c] });
    const a = app("a", { dependsOn: [b, c] });
    const p = plan([a]);
    expect(p.byName.get("a")!.level).toBe(2);
    expect(p.byName.get("a")!.dependsOn).toEqual(["b", "c"]);
  });
});

describe("rejections", () => {
  it("rejects two different environments with one name, naming both declaration sites", () => {
    const [first, line1] = [new TaskEnvironment({ name: "dup" }), callerLine()];
    const [second, line2] = [new TaskEnvironment({ name: "dup" }), callerLine()];
    const top = app("top", { dependsOn: [first, second] });
    const err = errorOf(() => plan([top]));
    expect(err.code).toBe("DUPLICATE_NAME");
    expect(err.message).toContain('two different environments are named "dup"');
    expect(err.message).toContain(`${THIS_FILE}:${line1}`);
    expect(err.message).toContain(`${THIS_FILE}:${line2}`);
    expect(err.message).toContain("unique name");
    expect(new Set(err.details.sites as string[])).toEqual(
      new Set([`${THIS_FILE}:${line1}`, `${THIS_FILE}:${line2}`]),
    );
  });

  it("rejects duplicate names passed directly as arguments", () => {
    const err = errorOf(() => plan([app("same"), task("same")]));
    expect(err.code).toBe("DUPLICATE_NAME");
  });

  it("rejects a cycle made with addDependency, showing the path", () => {
    const a = task("a");
    const b = task("b");
    const c = task("c");
    a.addDependency(b);
    b.addDependency(c);
    c.addDependency(a);
    const err = errorOf(() => plan([a]));
    expect(err.code).toBe("CYCLE");
    expect(err.message).toContain("a -> b -> c -> a");
    expect(err.details.cycle).toEqual(["a", "b", "c", "a"]);
  });

  it("reports the same cycle whichever environment is asked for, every time", () => {
    const a = task("a");
    const b = task("b");
    const c = task("c");
    c.addDependency(a);
    b.addDependency(c);
    a.addDependency(b);
    const messages = [a, b, c, a, b, c].map((e) => errorOf(() => plan([e])).message);
    expect(new Set(messages).size).toBe(1);
    expect(messages[0]).toMatch(/^dependency cycle: a -> b -> c -> a\. /);
  });

  it("rejects a cycle that sits below acyclic parts of the graph", () => {
    const leaf = task("leaf");
    const p = task("p", [leaf]);
    const q = task("q", [p]);
    p.addDependency(q);
    const root = app("root", { dependsOn: [q, leaf] });
    const err = errorOf(() => plan([root]));
    expect(err.code).toBe("CYCLE");
    expect(err.details.cycle).toEqual(["p", "q", "p"]);
  });

  it("rejects a self-dependency as a cycle", () => {
    const a = app("a");
    a.addDependency(a);
    const err = errorOf(() => plan([a]));
    expect(err.code).toBe("CYCLE");
    expect(err.message).toContain("a -> a");
    expect(err.details.cycle).toEqual(["a", "a"]);
  });

  it("rejects an argument that is not an environment, naming it", () => {
    const err = errorOf(() => plan([app("ok"), "backend"]));
    expect(err.code).toBe("INVALID_DEPENDENCY");
    expect(err.message).toContain('argument 2 is not an environment: "backend"');
  });

  it("rejects a dependsOn entry that is not an environment (slipped past the SDK), naming it", () => {
    const top = app("top");
    (top.dependsOn as unknown[]).push({ name: "backend" });
    const err = errorOf(() => plan([top]));
    expect(err.code).toBe("INVALID_DEPENDENCY");
    expect(err.message).toContain('"top" depends on something that is not an environment');
    expect(err.message).toContain('{"name":"backend"}');
  });
});

describe("AppEndpoint inputs", () => {
  function caller(name: string, endpoint: AppEndpoint, dependsOn: Environment[] = []) {
    return app(name, {
      dependsOn,
      inputs: [new Input({ name: "backend_url", value: endpoint })],
    });
  }

  it("rejects an endpoint of an app that is neither planned nor deployed", () => {
    const err = errorOf(() => plan([caller("frontend", new AppEndpoint({ appName: "backend" }))]));
    expect(err.code).toBe("UNKNOWN_APP_ENDPOINT");
    expect(err.message).toContain('app "frontend" input "backend_url"');
    expect(err.message).toContain('app "backend", which is neither in this plan nor deployed');
    expect(err.message).toContain("shop/development");
    expect(err.details).toMatchObject({ appName: "backend" });
  });

  it("accepts an endpoint of an already-deployed app", () => {
    const p = plan([caller("frontend", new AppEndpoint({ appName: "backend" }))], {
      ...SCOPE,
      deployedApps: new Set(["backend"]),
    });
    expect(p.order).toEqual(["frontend"]);
  });

  it("accepts an endpoint of an app in the plan", () => {
    const backend = app("backend");
    const p = plan([caller("frontend", new AppEndpoint({ appName: "backend" }), [backend])]);
    expect(p.order).toEqual(["backend", "frontend"]);
  });

  it("rejects an endpoint of a task environment", () => {
    const t = task("backend");
    const err = errorOf(() =>
      plan([caller("frontend", new AppEndpoint({ appName: "backend" }), [t])]),
    );
    expect(err.code).toBe("UNKNOWN_APP_ENDPOINT");
    expect(err.message).toContain("task environment");
  });

  it.each([
    [{ project: "billing" }, "billing/development"],
    [{ domain: "production" }, "shop/production"],
    [{ project: "billing", domain: "production" }, "billing/production"],
  ])("rejects an endpoint in another project/domain (%j)", (scope, shown) => {
    const backend = app("backend");
    const ep = new AppEndpoint({ appName: "backend", ...scope });
    const err = errorOf(() =>
      plan([caller("frontend", ep, [backend])], { ...SCOPE, deployedApps: new Set(["backend"]) }),
    );
    expect(err.code).toBe("CROSS_SCOPE_DEPENDENCY");
    expect(err.message).toContain("dependencies must be in the same project/domain");
    expect(err.message).toContain(shown);
    expect(err.message).toContain("shop/development");
  });

  it("accepts an endpoint that names the plan's own project and domain", () => {
    const backend = app("backend");
    const ep = new AppEndpoint({ appName: "backend", project: "shop", domain: "development" });
    expect(plan([caller("frontend", ep, [backend])]).order).toEqual(["backend", "frontend"]);
  });
});

describe("specHash", () => {
  const build = (name: string, opts: Partial<AppEnvironmentOptions> = {}) =>
    plan([app(name, opts)]).byName.get(name)!.specHash;

  it("is equal for equal specs declared separately, key order aside", () => {
    const opts = {
      port: 3000,
      envVars: { A: "1", B: "2" },
      resources: { cpu: 1, memory: "512Mi" },
      image: Image.fromDebianBase().withNpmPackages("fastify"),
    };
    const h = build("hashed", opts);
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(build("hashed", opts)).toBe(h);
    expect(
      build("hashed", {
        ...opts,
        envVars: { B: "2", A: "1" },
        resources: { memory: "0.5Gi", cpu: "1000m" },
        image: Image.fromDebianBase().withNpmPackages("fastify"),
      }),
    ).toBe(h);
  });

  it.each<[string, Partial<AppEnvironmentOptions>]>([
    ["port", { port: 3001 }],
    ["envVars", { envVars: { A: "1", B: "3" } }],
    ["resources", { resources: { cpu: 2, memory: "512Mi" } }],
    ["image", { image: Image.fromDebianBase().withNpmPackages("hono") }],
    ["command", { command: ["node", "y.js"] }],
    ["requiresAuth", { requiresAuth: false }],
    ["scaling", { scaling: { replicas: [1, 2] } }],
    ["timeouts", { timeouts: { request: 30 } }],
    ["inputs", { inputs: [new Input({ name: "x", value: "1" })] }],
    ["secrets", { secrets: ["TOKEN"] }],
  ])("changes when %s changes", (_field, change) => {
    const base = {
      port: 3000,
      envVars: { A: "1", B: "2" },
      resources: { cpu: 1, memory: "512Mi" },
      image: Image.fromDebianBase().withNpmPackages("fastify"),
    };
    expect(build("hashed", { ...base, ...change })).not.toBe(build("hashed", base));
  });

  it("changes with the name, the dependencies and a task environment's tasks", () => {
    expect(build("one")).not.toBe(build("two"));
    expect(build("with-dep", { dependsOn: [task("dep")] })).not.toBe(build("with-dep"));
    expect(build("with-dep", { dependsOn: [task("dep")] })).toBe(
      build("with-dep", { dependsOn: [task("dep")] }),
    );
    expect(build("with-dep", { dependsOn: [task("dep")] })).not.toBe(
      build("with-dep", { dependsOn: [task("other-dep")] }),
    );
    const hashOf = (withTask: boolean) => {
      const t = task("tasks");
      if (withTask) t.task(async function train() {});
      return plan([t]).environments[0]!.specHash;
    };
    expect(hashOf(true)).not.toBe(hashOf(false));
    expect(hashOf(true)).toBe(hashOf(true));
  });
});

describe("planToJSON", () => {
  it("has exactly the shape of `plan --json`", () => {
    const base = task("base");
    const api = app("api", { dependsOn: [base] });
    const json = planToJSON(plan([api]));
    expect(json).toStrictEqual({
      project: "shop",
      domain: "development",
      environments: [
        { name: "base", kind: "task", dependsOn: [], level: 0 },
        { name: "api", kind: "app", dependsOn: ["base"], level: 1 },
      ],
      order: ["base", "api"],
    });
    expect(JSON.parse(JSON.stringify(json))).toStrictEqual(json);
  });
});

/** A random graph over distinct names: `edges[i]` lists indices node i depends on. */
interface Graph {
  names: string[];
  edges: number[][];
}

function build(graph: Graph): TaskEnvironment[] {
  const envs = graph.names.map((name) => new TaskEnvironment({ name }));
  graph.edges.forEach((deps, i) => envs[i]!.addDependency(...deps.map((d) => envs[d]!)));
  return envs;
}

const namesArb = (min: number, max: number) =>
  fc.uniqueArray(fc.stringMatching(/^[a-z][a-z0-9]{0,5}$/), { minLength: min, maxLength: max });

/** DAGs: node i only depends on nodes of lower index; names are random so index order is hidden. */
const dagArb = namesArb(1, 25).chain((names) =>
  fc
    .tuple(
      ...names.map((_, i) =>
        i === 0
          ? fc.constant<number[]>([])
          : fc.uniqueArray(fc.nat(i - 1), { maxLength: Math.min(i, 5) }),
      ),
    )
    .map((edges): Graph => ({ names, edges })),
);

/** Any graph plus a planted cycle through `cycle` (a single index: a self-dependency). */
const cyclicArb = namesArb(1, 15).chain((names) =>
  fc
    .record({
      extra: fc.array(fc.tuple(fc.nat(names.length - 1), fc.nat(names.length - 1)), {
        maxLength: 30,
      }),
      cycle: fc.uniqueArray(fc.nat(names.length - 1), { minLength: 1, maxLength: names.length }),
    })
    .map(({ extra, cycle }): Graph => {
      const edges = names.map(() => [] as number[]);
      cycle.forEach((from, k) => edges[from]!.push(cycle[(k + 1) % cycle.length]!));
      for (const [from, to] of extra) edges[from]!.push(to);
      return { names, edges };
    }),
);

describe("properties", () => {
  it("orders every random DAG dependencies-first, each node once, smallest ready name first", () => {
    fc.assert(
      fc.property(dagArb, fc.array(fc.nat(), { minLength: 1, maxLength: 4 }), (graph, picks) => {
        const envs = build(graph);
        const requested = picks.map((p) => envs[p % envs.length]!);
        const p = plan(requested);

        // Exactly the closure, each once.
        const closure = new Set<string>();
        const visit = (e: Environment): void => {
          if (closure.has(e.name)) return;
          closure.add(e.name);
          e.dependsOn.forEach(visit);
        };
        requested.forEach(visit);
        expect(p.order).toHaveLength(closure.size);
        expect(new Set(p.order)).toEqual(closure);
        expect(p.environments.map((e) => e.name)).toEqual(p.order);

        // Every edge respected, levels are longest chains.
        expectDependenciesFirst(p);
        for (const e of p.environments) {
          const below = e.env.dependsOn.map((d) => p.byName.get(d.name)!.level + 1);
          expect(e.level).toBe(Math.max(0, ...below));
        }

        // Deterministic tie-break: each step takes the smallest name whose dependencies are placed.
        const placed = new Set<string>();
        for (const name of p.order) {
          const ready = [...closure].filter(
            (n) => !placed.has(n) && p.byName.get(n)!.dependsOn.every((d) => placed.has(d)),
          );
          expect(name).toBe(ready.sort()[0]);
          placed.add(name);
        }
      }),
      { numRuns: 150 },
    );
  });

  it("reports a real cycle of any random cyclic graph as a closed path", () => {
    fc.assert(
      fc.property(cyclicArb, (graph) => {
        const envs = build(graph);
        const edges = new Set(
          graph.edges.flatMap((deps, i) => deps.map((d) => `${graph.names[i]} ${graph.names[d]}`)),
        );
        const err = errorOf(() => plan(envs));
        expect(err.code).toBe("CYCLE");
        const cycle = err.details.cycle as string[];
        expect(cycle.length).toBeGreaterThanOrEqual(2);
        expect(cycle[0]).toBe(cycle.at(-1));
        expect(new Set(cycle.slice(0, -1)).size).toBe(cycle.length - 1);
        for (let k = 0; k + 1 < cycle.length; k++) {
          expect(edges.has(`${cycle[k]} ${cycle[k + 1]}`)).toBe(true);
        }
        expect(err.message).toContain(cycle.join(" -> "));
        // Same input, same answer.
        expect(errorOf(() => plan([...envs].reverse())).details.cycle).toEqual(cycle);
      }),
      { numRuns: 150 },
    );
  });
});
