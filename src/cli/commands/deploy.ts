import { type Command, Option } from "commander";
import type { Deployment } from "../../api.ts";
import type { CommandContext } from "../main.ts";
import { color, info, printJSON, wholeNumber } from "../output.ts";
import { progressReporter } from "../progress.ts";
import { loadProject, scopeOptions, type ScopeFlags } from "../project.ts";

export function registerDeploy(program: Command, ctx: CommandContext): void {
  scopeOptions(
    program
      .command("deploy")
      .description(
        "Deploy environments and their dependencies: each ready before its dependents. Waits until all are ready or failed.",
      )
      .argument("<file>", "TypeScript file that declares environments")
      .argument(
        "[env...]",
        "environments to deploy (with their dependencies); default: all in the file",
      )
      .option("--json", "print the result as JSON on stdout")
      .option("--force", "restart environments even if unchanged")
      .option(
        "--replace",
        "take over environments of the same name deployed from another file (e.g. after moving the project)",
      )
      .addOption(
        new Option(
          "--concurrency <n>",
          "most environments starting at once (default: no limit)",
        ).argParser(wholeNumber("--concurrency", 1)),
      ),
  ).action(
    async (
      file: string,
      names: string[],
      opts: ScopeFlags & {
        json?: boolean;
        force?: boolean;
        replace?: boolean;
        concurrency?: number;
      },
    ) => {
      const project = await loadProject(file, names, opts);
      const { deployEnvironments } = await import("../../api.ts");
      const progress = opts.json ? undefined : progressReporter();
      const { deployments } = await deployEnvironments(project.selected, project.config, {
        entry: project.file,
        force: opts.force ?? false,
        replace: opts.replace ?? false,
        ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
        ...(progress ? { onEvent: progress.onEvent } : {}),
      }).finally(() => progress?.done());
      const failed = deployments.some((d) => d.status === "failed" || d.status === "skipped");
      if (failed) ctx.exitCode = 1;
      if (opts.json) return printJSON({ deployments: deployments.map((d) => d.toJSON()) });
      printSummary(deployments, `${project.config.project}/${project.config.domain}`);
    },
  );
}

function printSummary(deployments: Deployment[], scope: string): void {
  const count = (s: string) => deployments.filter((d) => d.status === s).length;
  for (const d of deployments) {
    if (d.status === "failed") info(`\n${color.red(`${d.name} failed:`)} ${d.outcome.error}`);
  }
  const parts = ["ready", "unchanged", "failed", "skipped"].map((s) => `${count(s)} ${s}`);
  info(`\n${scope}: ${parts.join(", ")}`);
  const width = Math.max(...deployments.map((d) => d.name.length));
  for (const d of deployments) {
    if (d.endpoint) process.stdout.write(`${d.name.padEnd(width)}  ${d.endpoint}\n`);
  }
}
