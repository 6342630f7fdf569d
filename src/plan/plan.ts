/**
 * The planner: pure, no I/O. Turns the environments a user asked for into a validated,
 * ordered plan — the closure over `dependsOn`, each environment once, cycles and
 * duplicates rejected, a deterministic topological order and a content hash per
 * environment. Linear in the size of the graph (plus a log factor for name ties): every
 * environment's name is looked up once per edge while collecting the closure; the passes
 * after that (cycles, order, levels, dependents) run over integer indices in flat arrays.
 */
import { CaravanError, describeValue } from "../errors.ts";
import {
  hasInputs,
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
  /** Those of them declared `wait: false`: this one starts once they start, not once ready. */
  softDependsOn: string[];
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
  const graph = collectClosure(requested);
  const { nodes, names } = graph;
  const n = nodes.length;
  // Ranks in name order (names are unique): the tie-break, and the cycle search's start order.
  const byRank = Array.from({ length: n }, (_, i) => i).sort((a, b) =>
    names[a]! < names[b]! ? -1 : 1,
  );
  const rank = new Int32Array(n);
  byRank.forEach((v, r) => (rank[v] = r));
  const dependents = reverseEdges(graph, byRank);
  const order = topologicalOrder(graph, dependents, byRank, rank);
  if (order.length < n) {
    rejectCycles(graph, byRank);
    throw new CaravanError("INTERNAL", "planner: the order is incomplete but no cycle was found");
  }

  // Each node's dependencies in name order, from the name-ordered reverse lists: no sorting.
  const sortedDeps = new Int32Array(graph.deps.length);
  const fill = Int32Array.from(graph.depStart);
  for (const w of byRank) {
    for (let k = dependents.start[w]!; k < dependents.start[w + 1]!; k++) {
      const u = dependents.list[k]!;
      sortedDeps[fill[u]!++] = w;
    }
  }

  const level = new Int32Array(n);
  const planned = new Map<string, PlannedEnvironment>();
  const environments: PlannedEnvironment[] = [];
  for (const v of order) {
    const env = nodes[v]!;
    const dependsOn: string[] = [];
    let lv = 0;
    for (let k = graph.depStart[v]!, end = k + graph.depCount[v]!; k < end; k++) {
      const w = sortedDeps[k]!;
      dependsOn.push(names[w]!);
      if (level[w]! + 1 > lv) lv = level[w]! + 1;
    }
    level[v] = lv;
    const dependentNames: string[] = [];
    for (let k = dependents.start[v]!; k < dependents.start[v + 1]!; k++) {
      dependentNames.push(names[dependents.list[k]!]!);
    }
    let specHash: string | undefined;
    const p: PlannedEnvironment = {
      name: names[v]!,
      kind: env.kind,
      env,
      dependsOn,
      softDependsOn: dependsOn.filter((d) => env.softDependencies.has(d)),
      dependents: dependentNames,
      level: lv,
      // Hashed when first read (a deploy's revisions): `caravan plan` prints no hash, and
      // hashing was a sixth of a 20,000-environment plan.
      get specHash() {
        return (specHash ??= sha256(stableStringify(env.spec())));
      },
    };
    planned.set(p.name, p);
    environments.push(p);
  }
  checkAppEndpoints(planned, opts);
  return {
    project: opts.project,
    domain: opts.domain,
    environments,
    order: environments.map((e) => e.name),
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

/**
 * The closure as a graph over indices. Node `i`'s distinct direct dependencies are
 * `deps[depStart[i] .. depStart[i] + depCount[i])`, in `dependsOn` order.
 */
interface Graph {
  nodes: Environment[];
  names: string[];
  depStart: number[];
  depCount: number[];
  deps: number[];
}

function collectClosure(requested: readonly unknown[]): Graph {
  requested.forEach((value, i) => {
    if (!isEnvironment(value)) {
      throw new CaravanError(
        "INVALID_DEPENDENCY",
        `deploy/plan argument ${i + 1} is not an environment: ${describeValue(value)}. Pass AppEnvironment or TaskEnvironment objects`,
        { value: describeValue(value) },
      );
    }
  });
  const graph: Graph = { nodes: [], names: [], depStart: [], depCount: [], deps: [] };
  const { nodes, names, depStart, depCount, deps } = graph;
  const index = new Map<string, number>();
  /** `mark[j] === i` while node i's dependencies are read and j is already one of them. */
  const mark: number[] = [];
  const stack: number[] = [];
  const discover = (env: Environment): number => {
    const seen = index.get(env.name);
    if (seen !== undefined) {
      const first = nodes[seen]!;
      if (first === env) return seen;
      throw new CaravanError(
        "DUPLICATE_NAME",
        `two different environments are named "${env.name}": one declared at ${formatSite(first.declaredAt)}, the other at ${formatSite(env.declaredAt)}. Give each a unique name`,
        { name: env.name, sites: [formatSite(first.declaredAt), formatSite(env.declaredAt)] },
      );
    }
    const i = nodes.length;
    index.set(env.name, i);
    nodes.push(env);
    names.push(env.name);
    depStart.push(0);
    depCount.push(0);
    mark.push(-1);
    stack.push(i);
    return i;
  };
  for (const env of requested as Environment[]) discover(env);
  while (stack.length) {
    const i = stack.pop()!;
    const env = nodes[i]!;
    depStart[i] = deps.length;
    for (const dep of env.dependsOn) {
      if (!isEnvironment(dep)) {
        throw new CaravanError(
          "INVALID_DEPENDENCY",
          `"${env.name}" depends on something that is not an environment: ${describeValue(dep)}`,
          { value: describeValue(dep) },
        );
      }
      const j = discover(dep);
      if (mark[j] !== i) {
        mark[j] = i;
        deps.push(j);
      }
    }
    depCount[i] = deps.length - depStart[i]!;
  }
  return graph;
}

/** Direct dependents of each node, `list[start[w] .. start[w + 1])`, in name order. */
function reverseEdges(graph: Graph, byRank: number[]): { start: Int32Array; list: Int32Array } {
  const n = graph.nodes.length;
  const start = new Int32Array(n + 1);
  for (const w of graph.deps) start[w + 1]!++;
  for (let w = 0; w < n; w++) start[w + 1]! += start[w]!;
  const fill = start.slice(0, n);
  const list = new Int32Array(graph.deps.length);
  for (const v of byRank) {
    for (let k = graph.depStart[v]!, end = k + graph.depCount[v]!; k < end; k++) {
      const w = graph.deps[k]!;
      list[fill[w]!++] = v;
    }
  }
  return { start, list };
}

/**
 * Kahn's algorithm with a heap of name ranks: deterministic, dependencies first, and each
 * environment as early as its own dependencies allow. Shorter than the graph if it has a cycle.
 */
function topologicalOrder(
  graph: Graph,
  dependents: { start: Int32Array; list: Int32Array },
  byRank: number[],
  rank: Int32Array,
): number[] {
  const remaining = Int32Array.from(graph.depCount);
  const ready = new MinHeap<number>();
  for (const v of byRank) if (remaining[v] === 0) ready.push(rank[v]!);
  const order: number[] = [];
  while (ready.size) {
    const v = byRank[ready.pop()!]!;
    order.push(v);
    for (let k = dependents.start[v]!; k < dependents.start[v + 1]!; k++) {
      const u = dependents.list[k]!;
      if (--remaining[u]! === 0) ready.push(rank[u]!);
    }
  }
  return order;
}

/**
 * Throws the first cycle found by a depth-first search that starts from each environment in
 * name order and follows `dependsOn` in declaration order, so the same graph always reports
 * the same path. Iterative: no recursion limit at 100k environments.
 */
function rejectCycles(graph: Graph, byRank: number[]): void {
  const WHITE = 0;
  const GREY = 1;
  const BLACK = 2;
  const { names, depStart, depCount, deps } = graph;
  const n = graph.nodes.length;
  const color = new Uint8Array(n);
  const path = new Int32Array(n);
  const next = new Int32Array(n);
  for (const start of byRank) {
    if (color[start] !== WHITE) continue;
    let top = 0;
    path[0] = start;
    next[0] = 0;
    color[start] = GREY;
    while (top >= 0) {
      const v = path[top]!;
      const k = next[top]!;
      if (k >= depCount[v]!) {
        color[v] = BLACK;
        top--;
        continue;
      }
      next[top] = k + 1;
      const w = deps[depStart[v]! + k]!;
      if (color[w] === GREY) {
        let from = top;
        while (path[from] !== w) from--;
        const cycle = [...path.subarray(from, top + 1), w].map((i) => names[i]!);
        throw new CaravanError(
          "CYCLE",
          `dependency cycle: ${cycle.join(" -> ")}. Dependencies must form a DAG; remove one of these dependsOn edges`,
          { cycle },
        );
      }
      if (color[w] === WHITE) {
        color[w] = GREY;
        path[++top] = w;
        next[top] = 0;
      }
    }
  }
}

function checkAppEndpoints(planned: Map<string, PlannedEnvironment>, opts: PlanOptions): void {
  for (const p of planned.values()) {
    if (!hasInputs(p.env)) continue;
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
          `app "${p.name}" input "${input.name}" asks for the endpoint of "${ep.appName}", which is a ${target.kind} environment; only apps have endpoints`,
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
