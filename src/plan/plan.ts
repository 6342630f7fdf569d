/**
 * The planner: pure, no I/O. Turns the environments a user asked for into a validated,
 * ordered plan — the closure over `dependsOn`, each environment once, cycles and
 * duplicates rejected, a deterministic topological order and a content hash per
 * environment. Linear in the size of the graph (plus a log factor for name ties).
 */
import { CaravanError, describeValue } from "../errors.ts";
import {
  isAppEnvironment,
  isEnvironment,
  type Environment,
  type EnvironmentKind,
} from "../sdk/environment.ts";
import { VALUE_BRAND } from "../sdk/global.ts";
import type { AppEndpoint } from "../sdk/inputs.ts";
import { formatSite } from "../sdk/site.ts";
import { sha256, stableStringify } from "../sdk/stable.ts";
import { MinHeap } from "./heap.ts";

export interface PlanOptions {
  project: string;
  domain: string;
  /** Apps already deployed in this project/domain: `AppEndpoint`s may name them. */
  deployedApps?: ReadonlySet<string>;
}

export interface PlannedEnvironment {
  name: string;
  kind: EnvironmentKind;
  env: Environment;
  /** Names of direct dependencies, sorted. */
  dependsOn: string[];
  /** Names of direct dependents in the plan, sorted. */
  dependents: string[];
  /** Length of the longest dependency chain below this environment (0: no dependencies). */
  level: number;
  /** Hash of the normalised spec: equal specs, equal hashes. */
  specHash: string;
}

export interface Plan {
  project: string;
  domain: string;
  /** In deployment order. */
  environments: PlannedEnvironment[];
  /** Names in deployment order: dependencies before dependents, ties broken by name. */
  order: string[];
  byName: Map<string, PlannedEnvironment>;
}

export function planDeployment(requested: readonly unknown[], opts: PlanOptions): Plan {
  const envs = collectClosure(requested);
  rejectCycles(envs);
  const order = topologicalOrder(envs);
  const planned = new Map<string, PlannedEnvironment>();
  for (const name of order) {
    const env = envs.get(name)!;
    const deps = uniqueNames(env.dependsOn);
    let level = 0;
    for (const d of deps) level = Math.max(level, planned.get(d)!.level + 1);
    planned.set(name, {
      name,
      kind: env.kind,
      env,
      dependsOn: deps,
      dependents: [],
      level,
      specHash: sha256(stableStringify(env.spec())),
    });
  }
  for (const p of planned.values())
    for (const d of p.dependsOn) planned.get(d)!.dependents.push(p.name);
  for (const p of planned.values()) p.dependents.sort();
  checkAppEndpoints(planned, opts);
  return {
    project: opts.project,
    domain: opts.domain,
    environments: order.map((n) => planned.get(n)!),
    order,
    byName: planned,
  };
}

/** The `plan --json` document of DESIGN §5. */
export function planToJSON(plan: Plan) {
  return {
    project: plan.project,
    domain: plan.domain,
    environments: plan.environments.map((e) => ({
      name: e.name,
      kind: e.kind,
      dependsOn: e.dependsOn,
      level: e.level,
    })),
    order: plan.order,
  };
}

function uniqueNames(envs: readonly Environment[]): string[] {
  return [...new Set(envs.map((e) => e.name))].sort();
}

function collectClosure(requested: readonly unknown[]): Map<string, Environment> {
  const byName = new Map<string, Environment>();
  const stack: Environment[] = [];
  requested.forEach((value, i) => {
    if (!isEnvironment(value)) {
      throw new CaravanError(
        "INVALID_DEPENDENCY",
        `deploy/plan argument ${i + 1} is not an environment: ${describeValue(value)}. Pass AppEnvironment or TaskEnvironment objects`,
        { value: describeValue(value) },
      );
    }
    stack.push(value);
  });
  while (stack.length) {
    const env = stack.pop()!;
    const seen = byName.get(env.name);
    if (seen === env) continue;
    if (seen) {
      throw new CaravanError(
        "DUPLICATE_NAME",
        `two different environments are named "${env.name}": one declared at ${formatSite(seen.declaredAt)}, the other at ${formatSite(env.declaredAt)}. Give each a unique name`,
        { name: env.name, sites: [formatSite(seen.declaredAt), formatSite(env.declaredAt)] },
      );
    }
    byName.set(env.name, env);
    for (const dep of env.dependsOn) {
      if (!isEnvironment(dep)) {
        throw new CaravanError(
          "INVALID_DEPENDENCY",
          `"${env.name}" depends on something that is not an environment: ${describeValue(dep)}`,
          { value: describeValue(dep) },
        );
      }
      stack.push(dep);
    }
  }
  return byName;
}

/** Iterative DFS (no recursion limit at 100k nodes); reports the first cycle as a path. */
function rejectCycles(envs: Map<string, Environment>): void {
  const WHITE = 0;
  const GREY = 1;
  const BLACK = 2;
  const color = new Map<string, number>();
  const names = [...envs.keys()].sort();
  for (const start of names) {
    if ((color.get(start) ?? WHITE) !== WHITE) continue;
    const path: string[] = [start];
    const iters: number[] = [0];
    const onPath = new Map<string, number>([[start, 0]]);
    color.set(start, GREY);
    while (path.length) {
      const top = path[path.length - 1]!;
      const deps = envs.get(top)!.dependsOn;
      const i = iters[iters.length - 1]!;
      if (i >= deps.length) {
        color.set(top, BLACK);
        onPath.delete(top);
        path.pop();
        iters.pop();
        continue;
      }
      iters[iters.length - 1] = i + 1;
      const next = deps[i]!.name;
      const c = color.get(next) ?? WHITE;
      if (c === GREY) {
        const cycle = [...path.slice(onPath.get(next)!), next];
        throw new CaravanError(
          "CYCLE",
          `dependency cycle: ${cycle.join(" -> ")}. Dependencies must form a DAG; remove one of these dependsOn edges`,
          { cycle },
        );
      }
      if (c === WHITE) {
        color.set(next, GREY);
        onPath.set(next, path.length);
        path.push(next);
        iters.push(0);
      }
    }
  }
}

/** Kahn's algorithm with a name-ordered heap: deterministic, dependencies first. */
function topologicalOrder(envs: Map<string, Environment>): string[] {
  const remaining = new Map<string, number>();
  const dependents = new Map<string, string[]>();
  for (const [name, env] of envs) {
    const deps = new Set(env.dependsOn.map((d) => d.name));
    remaining.set(name, deps.size);
    for (const d of deps) {
      let list = dependents.get(d);
      if (!list) dependents.set(d, (list = []));
      list.push(name);
    }
  }
  const ready = new MinHeap<string>();
  for (const [name, n] of remaining) if (n === 0) ready.push(name);
  const order: string[] = [];
  while (ready.size) {
    const name = ready.pop()!;
    order.push(name);
    for (const dependent of dependents.get(name) ?? []) {
      const left = remaining.get(dependent)! - 1;
      remaining.set(dependent, left);
      if (left === 0) ready.push(dependent);
    }
  }
  return order;
}

function checkAppEndpoints(planned: Map<string, PlannedEnvironment>, opts: PlanOptions): void {
  for (const p of planned.values()) {
    if (!isAppEnvironment(p.env)) continue;
    for (const input of p.env.inputs) {
      const value = input.value as unknown as Record<symbol, unknown>;
      if (typeof input.value === "string" || value[VALUE_BRAND] !== "app-endpoint") continue;
      const ep = input.value as AppEndpoint;
      const otherProject = ep.project !== undefined && ep.project !== opts.project;
      const otherDomain = ep.domain !== undefined && ep.domain !== opts.domain;
      if (otherProject || otherDomain) {
        throw new CaravanError(
          "CROSS_SCOPE_DEPENDENCY",
          `app "${p.name}" input "${input.name}" points at app "${ep.appName}" in ${ep.project ?? opts.project}/${ep.domain ?? opts.domain}, but this deploy is ${opts.project}/${opts.domain}: dependencies must be in the same project/domain`,
          { app: p.name, input: input.name },
        );
      }
      const target = planned.get(ep.appName);
      if (target && target.kind !== "app") {
        throw new CaravanError(
          "UNKNOWN_APP_ENDPOINT",
          `app "${p.name}" input "${input.name}" asks for the endpoint of "${ep.appName}", which is a task environment; only apps have endpoints`,
          { app: p.name, input: input.name },
        );
      }
      if (!target && !opts.deployedApps?.has(ep.appName)) {
        throw new CaravanError(
          "UNKNOWN_APP_ENDPOINT",
          `app "${p.name}" input "${input.name}" asks for the endpoint of app "${ep.appName}", which is neither in this plan nor deployed in ${opts.project}/${opts.domain}; add it to dependsOn of "${p.name}" or deploy it first`,
          { app: p.name, input: input.name, appName: ep.appName },
        );
      }
    }
  }
}
