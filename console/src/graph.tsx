/**
 * The dependency graph, laid out by dagre (layered, dependencies left of their dependents):
 * one node per environment, coloured by state and labelled with it in words.
 */
import dagre from "@dagrejs/dagre";
import { useMemo } from "preact/hooks";
import { shownState, type EnvStatus } from "./api.ts";

const NODE_W = 210;
const NODE_H = 58;

interface Props {
  envs: EnvStatus[];
  selected: string | undefined;
  onSelect: (name: string) => void;
}

export function Graph({ envs, selected, onSelect }: Props) {
  // The layout depends on the names and edges only: a state change keeps every node in place.
  const shape = envs.map((e) => `${e.name}<${(e.dependsOn ?? []).join(",")}`).join(";");
  const layout = useMemo(() => {
    const g = new dagre.graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 28, ranksep: 70, marginx: 12, marginy: 12 });
    g.setDefaultEdgeLabel(() => ({}));
    const names = new Set(envs.map((e) => e.name));
    for (const e of envs) g.setNode(e.name, { width: NODE_W, height: NODE_H });
    for (const e of envs)
      for (const dep of e.dependsOn ?? []) if (names.has(dep)) g.setEdge(dep, e.name);
    dagre.layout(g);
    const graph = g.graph();
    return {
      width: graph.width ?? 0,
      height: graph.height ?? 0,
      nodes: new Map(g.nodes().map((n) => [n, g.node(n)])),
      edges: g.edges().map((e) => ({ from: e.v, to: e.w, points: g.edge(e).points ?? [] })),
    };
  }, [shape]);

  if (!envs.length)
    return (
      <p class="empty">
        Nothing is deployed in this project/domain. <code>npx caravan deploy &lt;file&gt;</code>{" "}
        deploys a graph.
      </p>
    );
  return (
    <svg
      class="graph"
      role="group"
      aria-label="dependency graph"
      viewBox={`0 0 ${layout.width} ${layout.height}`}
      style={{ maxWidth: `${layout.width}px` }}
    >
      <defs>
        <marker
          id="arrow"
          viewBox="0 0 10 10"
          refX="9"
          refY="5"
          markerWidth="7"
          markerHeight="7"
          orient="auto"
        >
          <path d="M0,0 L10,5 L0,10 z" class="edge-head" />
        </marker>
      </defs>
      {layout.edges.map((e) => (
        <path
          key={`${e.from}->${e.to}`}
          class="edge"
          marker-end="url(#arrow)"
          d={e.points
            .map((p: { x: number; y: number }, i: number) => `${i ? "L" : "M"}${p.x},${p.y}`)
            .join(" ")}
        />
      ))}
      {envs.map((env) => {
        const n = layout.nodes.get(env.name);
        if (!n) return null;
        const state = shownState(env);
        const open = () => onSelect(env.name);
        return (
          <g
            key={env.name}
            class={`node state-${state.replace(/ /g, "-")}${selected === env.name ? " selected" : ""}`}
            data-name={env.name}
            data-state={state}
            transform={`translate(${n.x - NODE_W / 2},${n.y - NODE_H / 2})`}
            tabindex={0}
            role="button"
            aria-label={`${env.name}, ${env.kind}, ${state}`}
            onClick={open}
            onKeyDown={(ev) => {
              if (ev.key === "Enter" || ev.key === " ") {
                ev.preventDefault();
                open();
              }
            }}
          >
            <rect width={NODE_W} height={NODE_H} rx="8" />
            <text x="12" y="23" class="node-name">
              {env.name.length > 26 ? `${env.name.slice(0, 25)}…` : env.name}
            </text>
            <text x="12" y="43" class="node-state">
              {env.kind} · {state}
            </text>
            <title>{`${env.name}: ${state}${env.health?.reason ? ` (${env.health.reason})` : ""}`}</title>
          </g>
        );
      })}
    </svg>
  );
}
