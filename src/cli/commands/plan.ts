import type { Command } from "commander";
import type { Change } from "../../backends/contract.ts";
import type { CommandContext } from "../main.ts";
import { color, info, printJSON } from "../output.ts";
import { scopeOptions, type ScopeFlags } from "../project.ts";
import {
  importedFiles,
  loadWatched,
  recordPlan,
  reuseLastPlan,
  type CommandArgs,
  type PlanJSON,
} from "../unchanged.ts";

export function registerPlan(program: Command, ctx: CommandContext): void {
  scopeOptions(
    program
      .command("plan")
      .description(
        "Load a file, validate its environments and print the deployment plan. Starts nothing. With --backend kubernetes it also says what would change, checked by a server-side dry run.",
      )
      .argument("<file>", "TypeScript file that declares environments")
      .argument(
        "[env...]",
        "environments to plan (with their dependencies); default: all in the file",
      )
      .option("--json", "print the plan as JSON on stdout"),
  ).action(async (file: string, names: string[], opts: ScopeFlags & { json?: boolean }) => {
    const args: CommandArgs = { file, names, flags: opts };
    // Nothing the last plan of these arguments read changed: that plan, without importing
    // the file (see unchanged.ts).
    const reused = await reuseLastPlan(args).catch(() => undefined);
    if (reused) return printPlan(reused, undefined, opts.json);
    // The files the user's code imports, listed (by esbuild) while node imports them.
    const sources = await importedFiles(file).catch(() => ({ listing: undefined }));
    const { project, reads } = await loadWatched(args);
    const [{ previewEnvironments }, { planToJSON }] = await Promise.all([
      import("../../api.ts"),
      import("../../plan/plan.ts"),
    ]);
    // Apps already deployed may be named by AppEndpoints; a backend that can tell says what
    // a deploy would change. Planning never starts a control plane.
    const { plan, changes } = await previewEnvironments(project.selected, project.config);
    const refused = [...(changes?.values() ?? [])].filter((c) => c.error);
    if (refused.length) ctx.exitCode = 1;
    const printed = planToJSON(plan);
    printPlan(printed, changes, opts.json);
    await recordPlan(args, await reads(), { planned: plan, printed }, await sources.listing);
  });
}

/** The plan as `plan` prints it: JSON on stdout, or one line per environment. */
function printPlan(doc: PlanJSON, changes: Map<string, Change> | undefined, json?: boolean): void {
  if (json) {
    return printJSON(
      changes
        ? {
            ...doc,
            environments: doc.environments.map((e) => ({ ...e, change: changes.get(e.name) })),
          }
        : doc,
    );
  }
  const width = Math.max(...doc.order.map((n) => n.length));
  info(
    `Plan for ${color.bold(`${doc.project}/${doc.domain}`)}: ${doc.order.length} environment(s), in order`,
  );
  for (const e of doc.environments) {
    const deps = e.dependsOn.length ? color.dim(` after ${e.dependsOn.join(", ")}`) : "";
    const change = changes?.get(e.name);
    const what = change
      ? `  ${change.action.padEnd(9)} ${color.dim(change.from && change.from !== change.to ? `${change.from} -> ${change.to}` : change.to)}`
      : "";
    process.stdout.write(
      `  ${color.dim(`level ${e.level}`)}  ${e.name.padEnd(width)}  ${e.kind.padEnd(4)}${what}${deps}\n`,
    );
    if (change?.error) process.stdout.write(`    ${color.red(`refused: ${change.error}`)}\n`);
  }
}
