import { type Command, Option } from "commander";
import type { CommandContext } from "../main.ts";
import { color, info, printJSON, wholeNumber } from "../output.ts";
import { progressReporter } from "../progress.ts";
import { scopeOptions, type ScopeFlags } from "../project.ts";
import {
  loadWatched,
  recordDeploy,
  reuseLastDeploy,
  type CommandArgs,
  type DeploymentJSON,
} from "../unchanged.ts";

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
      .option("--no-warm", "start every process cold, and empty the local warm pool")
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
        warm?: boolean;
      },
    ) => {
      const args: CommandArgs = { file, names, flags: opts };
      // Nothing changed since the last deploy of these arguments: its result, confirmed by
      // the backend, without importing the file (see unchanged.ts). Whatever cannot be
      // confirmed (the backend errs, say) takes the full path, which reports it; so do the
      // flags that ask the backend for something (--no-warm empties the local warm pool).
      const reused =
        opts.force || opts.replace || opts.warm === false
          ? undefined
          : await reuseLastDeploy(args).catch(() => undefined);
      const progress = opts.json ? undefined : progressReporter();
      let result: { config: { project: string; domain: string }; deployments: DeploymentJSON[] };
      if (reused) {
        for (const d of reused.deployments) progress?.onEvent(doneEvent(d));
        progress?.done();
        result = reused;
      } else {
        const { project, reads } = await loadWatched(args);
        const { deployEnvironments } = await import("../../api.ts");
        const deployed = await deployEnvironments(project.selected, project.config, {
          entry: project.file,
          force: opts.force ?? false,
          replace: opts.replace ?? false,
          ...(opts.warm === false ? { warm: false } : {}),
          ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
          ...(progress ? { onEvent: progress.onEvent } : {}),
        }).finally(() => progress?.done());
        await recordDeploy(args, await reads(), deployed);
        result = {
          config: project.config,
          deployments: deployed.deployments.map((d) => d.toJSON()),
        };
      }
      const { deployments } = result;
      const failed = deployments.some((d) => d.status === "failed" || d.status === "skipped");
      if (failed) ctx.exitCode = 1;
      if (opts.json) return printJSON({ deployments });
      printSummary(deployments, `${result.config.project}/${result.config.domain}`);
    },
  );
}

/** The progress line of a reused environment, as the engine reports one. */
function doneEvent(d: DeploymentJSON) {
  return {
    type: "done" as const,
    at: 0,
    outcome: {
      name: d.name,
      kind: d.kind,
      status: d.status,
      finishedAt: 0,
      ...(d.revision ? { revision: d.revision } : {}),
      ...(d.endpoint ? { endpoint: d.endpoint } : {}),
      ...(d.internalEndpoint ? { internalEndpoint: d.internalEndpoint } : {}),
    },
  };
}

function printSummary(deployments: DeploymentJSON[], scope: string): void {
  const count = (s: string) => deployments.filter((d) => d.status === s).length;
  for (const d of deployments) {
    if (d.status === "failed") info(`\n${color.red(`${d.name} failed:`)} ${d.error}`);
  }
  const parts = ["ready", "unchanged", "failed", "skipped"].map((s) => `${count(s)} ${s}`);
  info(`\n${scope}: ${parts.join(", ")}`);
  const width = Math.max(...deployments.map((d) => d.name.length));
  for (const d of deployments) {
    if (d.endpoint) process.stdout.write(`${d.name.padEnd(width)}  ${d.endpoint}\n`);
  }
}
