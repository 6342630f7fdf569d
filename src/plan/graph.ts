/**
 * The traversals of a dependency graph, in one place: the engine (skipping dependents of a
 * failure) and every backend (teardown, dependents first) walk the graph through these, so
 * "dependencies first" and "dependents first" mean the same thing everywhere. Pure, no I/O;
 * deterministic (ties broken by name).
 */

/** What the traversals need of a node: its name and the names it depends on. */
export interface GraphNode {
  readonly name: string;
  readonly dependsOn: readonly string[];
}

/**
 * `names` in dependency order: an environment after every one of its dependencies that is
 * also in `names` (transitively, through nodes outside `names` too). Ties go by name.
 */
export function inDependencyOrder(nodes: Iterable<GraphNode>, names: Iterable<string>): string[] {
  const byName = new Map<string, GraphNode>();
  for (const n of nodes) byName.set(n.name, n);
  const wanted = new Set(names);
  const order: string[] = [];
  const state = new Map<string, "visiting" | "done">();
  // Iterative post-order DFS over dependencies: dependencies are emitted before dependents.
  for (const start of [...wanted].sort()) {
    if (state.has(start)) continue;
    const stack: { name: string; deps: string[]; next: number }[] = [];
    const push = (name: string) => {
      state.set(name, "visiting");
      stack.push({ name, deps: [...(byName.get(name)?.dependsOn ?? [])].sort(), next: 0 });
    };
    push(start);
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      if (top.next < top.deps.length) {
        const dep = top.deps[top.next++]!;
        if (!state.has(dep)) push(dep);
        continue;
      }
      stack.pop();
      state.set(top.name, "done");
      if (wanted.has(top.name)) order.push(top.name);
    }
  }
  return order;
}

/** `names` with every dependent before its dependencies: the order of a teardown. */
export function inReverseDependencyOrder(
  nodes: Iterable<GraphNode>,
  names: Iterable<string>,
): string[] {
  return inDependencyOrder(nodes, names).reverse();
}

/**
 * Every node that depends on one of `names`, directly or transitively (not `names`
 * themselves), in the order they are reached (breadth first, by name within a step).
 * `dependentsOf` gives a node's direct dependents; see `dependentsIndex`.
 */
export function transitiveDependents(
  names: Iterable<string>,
  dependentsOf: (name: string) => readonly string[],
): string[] {
  const start = new Set(names);
  const seen = new Set(start);
  const out: string[] = [];
  let frontier = [...start].sort();
  while (frontier.length) {
    const next: string[] = [];
    for (const name of frontier) {
      for (const d of [...dependentsOf(name)].sort()) {
        if (seen.has(d)) continue;
        seen.add(d);
        out.push(d);
        next.push(d);
      }
    }
    frontier = next;
  }
  return out;
}

/** Direct dependents of every node, from the nodes' `dependsOn`. */
export function dependentsIndex(nodes: Iterable<GraphNode>): (name: string) => readonly string[] {
  const index = new Map<string, string[]>();
  for (const n of nodes) {
    for (const d of n.dependsOn) {
      const list = index.get(d);
      if (list) list.push(n.name);
      else index.set(d, [n.name]);
    }
  }
  return (name) => index.get(name) ?? [];
}
