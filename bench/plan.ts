/**
 * Planner benchmark: `npx tsx bench/plan.ts` (or `npm run bench:plan`).
 *
 * Builds random DAGs of 1k, 10k and 100k environments with 5 dependencies per environment on
 * average, then times `planDeployment` alone (construction is done beforehand and not timed):
 * a warm-up, then the median of several runs. The sizes are measured round-robin (every round
 * plans each graph) so that load from other processes affects them alike. Per size it prints
 * the time and the time per environment relative to the 1k graph measured in the same process,
 * which stays near 1 when the planner is linear. For context it also times, in the same rounds,
 * the spec hashing the planner does for each environment (`sha256(stableStringify(env.spec()))`)
 * on its own: the same work per environment whatever the graph, so its ratio shows how much
 * per-environment cost grows on this machine from memory effects alone (cache, GC).
 * Results go in bench/RESULTS.md.
 */
import { cpus } from "node:os";
import { performance } from "node:perf_hooks";
import { planDeployment } from "../src/plan/plan.ts";
import { AppEnvironment, TaskEnvironment, type Environment } from "../src/sdk/environment.ts";
import { sha256, stableStringify } from "../src/sdk/stable.ts";

const SIZES = [1_000, 10_000, 100_000];
/** Rounds of measurement; in each, a size is planned this many times. */
const ROUNDS = 9;
const PER_ROUND: Record<number, number> = { 1_000: 9, 10_000: 3, 100_000: 1 };
const WARMUP = 3;
const MEAN_DEGREE = 5;
const SCOPE = { project: "bench", domain: "development" };

/** Deterministic PRNG (mulberry32), so every run plans the same graphs. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Graph {
  envs: Environment[];
  edges: number;
}

/**
 * Environment i depends on k distinct environments among 0..i-1, k uniform in 0..10 (mean 5).
 * Names are a random permutation, so name order (the planner's tie-break) is unrelated to the
 * topological order. One environment in four is an app, the rest task environments.
 */
function buildGraph(n: number, seed: number): Graph {
  const random = rng(seed);
  const ids = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [ids[i], ids[j]] = [ids[j]!, ids[i]!];
  }
  const envs: Environment[] = [];
  let edges = 0;
  for (let i = 0; i < n; i++) {
    const k = Math.min(i, Math.floor(random() * (2 * MEAN_DEGREE + 1)));
    const picked = new Set<number>();
    while (picked.size < k) picked.add(Math.floor(random() * i));
    const dependsOn = [...picked].map((d) => envs[d]!);
    edges += dependsOn.length;
    const name = `env-${ids[i]!.toString(36)}`;
    envs.push(
      i % 4 === 0
        ? new AppEnvironment({ name, dependsOn, command: ["node", "server.js"] })
        : new TaskEnvironment({ name, dependsOn }),
    );
  }
  return { envs, edges };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function planOnce(graph: Graph): number {
  const start = performance.now();
  const plan = planDeployment(graph.envs, SCOPE);
  const ms = performance.now() - start;
  if (plan.order.length !== graph.envs.length) throw new Error("plan lost environments");
  return ms;
}

/** The per-environment hashing `planDeployment` does, alone. */
function hashOnce(graph: Graph): number {
  const start = performance.now();
  let chars = 0;
  for (const env of graph.envs) chars += sha256(stableStringify(env.spec())).length;
  const ms = performance.now() - start;
  if (chars !== 64 * graph.envs.length) throw new Error("unexpected hash length");
  return ms;
}

console.log(`node ${process.version}, ${cpus().length} CPUs, ${cpus()[0]?.model ?? "unknown CPU"}`);
const graphs = SIZES.map((n, i) => {
  const t0 = performance.now();
  const graph = buildGraph(n, 42 + i);
  return { n, graph, buildMs: performance.now() - t0, times: [] as number[], hash: [] as number[] };
});
for (const g of graphs) {
  for (let r = 0; r < WARMUP; r++) {
    planOnce(g.graph);
    hashOnce(g.graph);
  }
}
for (let round = 0; round < ROUNDS; round++) {
  for (const g of graphs) {
    for (let r = 0; r < PER_ROUND[g.n]!; r++) {
      g.times.push(planOnce(g.graph));
      g.hash.push(hashOnce(g.graph));
    }
  }
}
const rows = graphs.map(({ n, graph, buildMs, times, hash }) => {
  const ms = median(times);
  const hashMs = median(hash);
  return {
    n,
    edges: graph.edges,
    buildMs,
    ms,
    runs: times.length,
    perNodeUs: (ms * 1000) / n,
    hashUs: (hashMs * 1000) / n,
  };
});

const base = rows[0]!;
const fmt = (x: number, digits: number) => x.toFixed(digits);
console.log("");
console.log(
  "| environments | edges | construction (ms, not timed) | runs | plan, median (ms) | µs per environment | ratio vs 1k | spec hashing alone, µs per env (ratio) |",
);
console.log("|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const r of rows) {
  console.log(
    `| ${r.n.toLocaleString("en")} | ${r.edges.toLocaleString("en")} | ${fmt(r.buildMs, 0)} | ${r.runs} | ${fmt(r.ms, 1)} | ${fmt(r.perNodeUs, 2)} | ${fmt(r.perNodeUs / base.perNodeUs, 2)} | ${fmt(r.hashUs, 2)} (${fmt(r.hashUs / base.hashUs, 2)}) |`,
  );
}
const tenK = rows.find((r) => r.n === 10_000);
if (tenK) {
  console.log("");
  console.log(
    `10k environments / ${tenK.edges.toLocaleString("en")} edges planned in ${fmt(tenK.ms, 1)} ms, ${fmt(tenK.ms / 10, 0)}% of the 1 s budget: ${tenK.ms < 500 ? "OK" : "TOO SLOW"}`,
  );
}
