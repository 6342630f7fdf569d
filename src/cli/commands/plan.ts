import type { Command } from "commander";
import { runningBackend } from "../../api.ts";
import type { ResolvedConfig } from "../../sdk/config.ts";
import { planDeployment, planToJSON } from "../../plan/plan.ts";
import type { CommandContext } from "../main.ts";
import { color, info, printJSON } from "../output.ts";
import { loadProject, scopeOptions, type ScopeFlags } from "../project.ts";

/** Apps already deployed, if a control plane runs (planning never starts one). */
async function deployedApps(config: ResolvedConfig): Promise<Set<string>> {
  const backend = await runningBackend(config);
  const envs = backend ? await backend.status(config) : [];
  return new Set(envs.filter((e) => e.kind === "app").map((e) => e.name));
}

export function registerPlan(program: Command, _ctx: CommandContext): void {
  scopeOptions(
    program
      .command("plan")
      .description(
        "Load a file, validate its environments and print the deployment plan. Starts nothing.",
      )
      .argument("<file>", "TypeScript file that declares environments")
      .argument(
        "[env...]",
        "environments to plan (with their dependencies); default: all in the file",
      )
      .option("--json", "print the plan as JSON on stdout"),
  ).action(async (file: string, names: string[], opts: ScopeFlags & { json?: boolean }) => {
    const project = await loadProject(file, names, opts);
    const plan = planDeployment(project.selected, {
      ...project.config,
      deployedApps: await deployedApps(project.config),
    });
    if (opts.json) return printJSON(planToJSON(plan));
    const width = Math.max(...plan.order.map((n) => n.length));
    info(
      `Plan for ${color.bold(`${plan.project}/${plan.domain}`)}: ${plan.order.length} environment(s), in order`,
    );
    for (const e of plan.environments) {
      const deps = e.dependsOn.length ? color.dim(` after ${e.dependsOn.join(", ")}`) : "";
      process.stdout.write(
        `  ${color.dim(`level ${e.level}`)}  ${e.name.padEnd(width)}  ${e.kind.padEnd(4)}${deps}\n`,
      );
    }
  });
}
