import type { JobRun } from "../../backends/contract.ts";
import { headline } from "../../errors.ts";
import type { CommandSpec } from "../direct.ts";
import { color, info, printJSON, printTable } from "../output.ts";
import { loadScope, openBackend, SCOPE_OPTIONS, type ScopeFlags } from "../project.ts";

type StatusOptions = ScopeFlags & { all?: boolean; json?: boolean };

export const status: CommandSpec<StatusOptions> = {
  name: "status",
  description:
    "Every deployed environment with its state, revision, restarts, instances (processes, pods) and endpoints.",
  options: [
    ["--all", "every project and domain, not just the current one"],
    ["--json", "print JSON on stdout"],
    ...SCOPE_OPTIONS,
  ],
  async run(opts) {
    // Loaded while the config is read and the backend answers.
    const healthModule = import("../../backends/health.ts");
    const config = await loadScope(opts);
    const backend = await openBackend(config);
    // A cluster client keeps a keep-alive agent: closed once the answer is in.
    const envs = await backend.status(opts.all ? undefined : config).finally(() => backend.close());
    const { dependencyHealth, healthKey } = await healthModule;
    // Degraded: a dependency is not serving (derived the same way for every backend).
    const health = dependencyHealth(envs);
    if (opts.json) {
      return printJSON({
        environments: envs.map((e) => ({
          name: e.name,
          kind: e.kind,
          state: e.state,
          revision: e.revision,
          endpoint: e.endpoint ?? null,
          internalEndpoint: e.internalEndpoint ?? null,
          restarts: e.restarts,
          pids: e.pids,
          instances: e.instances,
          project: e.project,
          domain: e.domain,
          dependsOn: e.dependsOn,
          ...(e.replicas !== undefined ? { replicas: e.replicas } : {}),
          ...(e.desiredReplicas !== undefined ? { desiredReplicas: e.desiredReplicas } : {}),
          ...(e.traffic ? { traffic: e.traffic } : {}),
          ...(e.jobRuns ? { jobRuns: e.jobRuns } : {}),
          ...(health.has(healthKey(e)) ? { health: health.get(healthKey(e)) } : {}),
          ...(e.error ? { error: e.error } : {}),
          ...(e.listensBeyondLoopback ? { listensBeyondLoopback: e.listensBeyondLoopback } : {}),
        })),
      });
    }
    if (envs.length === 0) {
      info(
        `nothing is deployed in ${opts.all ? "any project" : `${config.project}/${config.domain}`} (caravan deploy <file> deploys)`,
      );
      return;
    }
    const rows = envs.map((e) => [
      opts.all ? `${e.project}/${e.domain}/${e.name}` : e.name,
      e.kind,
      health.get(healthKey(e))?.state === "degraded" ? `${e.state} (degraded)` : e.state,
      // Ready of desired where the backend knows both (a Deployment), else those serving.
      e.replicas === undefined
        ? "-"
        : `${e.replicas}${e.desiredReplicas !== undefined ? `/${e.desiredReplicas}` : ""}`,
      e.revision,
      String(e.restarts),
      // A process by its pid, a pod by its name; "(starting)" until it serves.
      e.instances.map((i) => `${i.pid ?? i.id}${i.ready ? "" : " (starting)"}`).join(",") || "-",
      e.kind === "job" ? lastRunOf(e.jobRuns) : (e.endpoint ?? "-"),
    ]);
    const head = [
      "NAME",
      "KIND",
      "STATE",
      "REPLICAS",
      "REVISION",
      "RESTARTS",
      "INSTANCES",
      "ENDPOINT / LAST RUN",
    ];
    printTable(head, rows);
    for (const e of envs) {
      if (e.listensBeyondLoopback)
        info(
          color.yellow(
            `${e.name} listens beyond loopback (${e.listensBeyondLoopback.join(", ")}): its port answers there without the gateway's auth; make it listen on $HOST (127.0.0.1)`,
          ),
        );
      const h = health.get(healthKey(e));
      if (h?.state === "degraded") info(color.yellow(`${e.name}: degraded: ${h.reason}`));
      if (!e.error || e.state === "ready") continue;
      // The reason without the log tail it may carry: `caravan logs` shows the log.
      const reason = headline(e.error);
      info(color.red(`${e.name}: ${reason} (see: caravan logs ${e.name} --tail 20)`));
    }
  },
};

/** A job's last run, for the table: "succeeded (exit 0, 1.2 s)". */
function lastRunOf(runs: JobRun[] | undefined): string {
  const last = runs?.[0];
  if (!last) return "never ran";
  if (last.status === "running") return `running since ${last.startedAt}`;
  const exit = last.exitCode === undefined ? "" : `exit ${last.exitCode ?? "by signal"}, `;
  const took = last.durationMs === undefined ? "" : `${(last.durationMs / 1000).toFixed(1)} s`;
  return `${last.status} (${exit}${took})`;
}
