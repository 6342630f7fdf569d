/**
 * Kubernetes backend benchmark: `npx tsx bench/kubernetes.ts [--runs N] [--only chain|fanout]` (or
 * `npm run bench:kubernetes`), against the test control plane (scripts/kube-test-cluster up;
 * or KUBECONFIG pointing at another cluster).
 *
 * Two graphs, a chain of 5 apps and a fan-out of 20 apps on one root, each deployed into a
 * fresh namespace by:
 *   - caravan: `deployEnvironments` with the kubernetes backend, in process (plan, snapshot,
 *     upload, server-side apply, rollout watch); its API calls counted by its client;
 *   - the baseline: what a person would script by hand with kubectl, in the same dependency
 *     order: `kubectl apply -f` a Deployment + Service per app, then `kubectl rollout status`
 *     before the next level (the fan-out's leaves are applied in one call and waited on one
 *     after the other); its API calls counted from `kubectl -v=6` request lines.
 * Runs alternate (caravan, script, caravan, ...) so load drifts affect both alike; printed are
 * medians and the ratio caravan / script measured in this run. Results go in bench/RESULTS.md.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { deployEnvironments } from "../src/api.ts";
import { KubernetesBackend } from "../src/backends/kubernetes/backend.ts";
import { loadKubeClient } from "../src/backends/kubernetes/kubeconfig.ts";
import { loadConfig } from "../src/sdk/config.ts";

const runs = Number(process.argv[process.argv.indexOf("--runs") + 1]) || 5;
const only = process.argv.includes("--only")
  ? process.argv[process.argv.indexOf("--only") + 1]
  : "";
const ROOT = join(import.meta.dirname, "..");

function kubeconfig(): string {
  if (process.env.KUBECONFIG) return process.env.KUBECONFIG;
  const out = execFileSync(join(ROOT, "scripts/kube-test-cluster"), ["up"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  return out.trim().split("\n").at(-1)!;
}
process.env.KUBECONFIG = kubeconfig();
const kubectl = (() => {
  const beside = join(dirname(process.env.KUBECONFIG), "kubectl");
  return spawnSync(beside, ["version", "--client"]).status === 0 ? beside : "kubectl";
})();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
let serial = 0;
const freshProject = () => `bench${Date.now().toString(36)}${serial++}`;

/** What the hand-written script applies for one app: the same image, port and probe. */
function manifest(name: string, namespace: string): string {
  const labels = { app: name };
  return JSON.stringify({
    apiVersion: "v1",
    kind: "List",
    items: [
      {
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: { name, namespace },
        spec: {
          replicas: 1,
          selector: { matchLabels: labels },
          strategy: { rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
          template: {
            metadata: { labels },
            spec: {
              containers: [
                {
                  name: "app",
                  image: "node:22-bookworm-slim",
                  ports: [{ containerPort: 8080, name: "http" }],
                  readinessProbe: { tcpSocket: { port: "http" } },
                },
              ],
            },
          },
        },
      },
      {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name, namespace },
        spec: { selector: labels, ports: [{ port: 80, targetPort: "http" }] },
      },
    ],
  });
}

function kubectlRun(args: string[], input?: string): number {
  const r = spawnSync(kubectl, [...args, "-v=6"], { input, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
  return (r.stderr.match(/"Response" verb="/g) ?? []).length;
}

/** The baseline: levels of apps, each level applied then waited on before the next. */
function script(levels: string[][]): { ms: number; calls: number } {
  const namespace = freshProject();
  const t0 = performance.now();
  let calls = kubectlRun(["create", "namespace", namespace]);
  for (const level of levels) {
    const docs = level.map((n) => manifest(n, namespace)).join("\n");
    calls += kubectlRun(["apply", "-f", "-"], docs);
    for (const n of level)
      calls += kubectlRun([
        "rollout",
        "status",
        `deployment/${n}`,
        "-n",
        namespace,
        "--timeout=120s",
      ]);
  }
  const ms = performance.now() - t0;
  spawnSync(kubectl, ["delete", "namespace", namespace, "--wait=false"]);
  return { ms, calls };
}

async function caravan(shape: string): Promise<{ ms: number; calls: number; ok: boolean }> {
  process.env.BENCH_SHAPE = shape;
  const mod = await import(`./fixtures/k8s-graph.ts?shape=${shape}`);
  const project = freshProject();
  const config = await loadConfig(join(ROOT, "bench"), { project, backend: "kubernetes" });
  const t0 = performance.now();
  const backend = new KubernetesBackend(loadKubeClient(), config);
  const { deployments } = await deployEnvironments(mod.environments, config, {
    backend,
    entry: join(ROOT, "bench/fixtures/k8s-graph.ts"),
  });
  const ms = performance.now() - t0;
  await backend.close();
  const ok = deployments.every((d) => d.status === "ready");
  spawnSync(kubectl, ["delete", "namespace", `${project}-development`, "--wait=false"]);
  return { ms, calls: backend.client.calls.total, ok };
}

const shapes: Record<string, string[][]> = {
  chain: Array.from({ length: 5 }, (_, i) => [`chain-${i}`]),
  fanout: [["root"], Array.from({ length: 20 }, (_, i) => `leaf-${i}`)],
};

console.log(
  `kubernetes bench: ${runs} runs per tool and graph, ${cpus().length} CPUs (${cpus()[0]?.model}), Node ${process.version}, kubectl ${kubectl}`,
);
for (const [shape, levels] of Object.entries(shapes)) {
  if (only && shape !== only) continue;
  const c: { ms: number; calls: number }[] = [];
  const s: { ms: number; calls: number }[] = [];
  await caravan(shape); // warm-up: the runtime build, esbuild, the client's first connection
  script(levels);
  for (let i = 0; i < runs; i++) {
    const r = await caravan(shape);
    if (!r.ok) throw new Error(`caravan did not deploy the ${shape}`);
    c.push(r);
    s.push(script(levels));
  }
  const cm = median(c.map((x) => x.ms));
  const sm = median(s.map((x) => x.ms));
  console.log(
    `${shape.padEnd(7)} caravan ${cm.toFixed(0).padStart(6)} ms (${median(c.map((x) => x.calls))} API calls) | kubectl script ${sm.toFixed(0).padStart(6)} ms (${median(s.map((x) => x.calls))} API calls) | ratio caravan/script ${(cm / sm).toFixed(2)}`,
  );
}
