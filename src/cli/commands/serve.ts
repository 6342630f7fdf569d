import { type Command, Option } from "commander";
import type { CommandContext } from "../main.ts";
import { color, info, wholeNumber } from "../output.ts";
import { progressReporter } from "../progress.ts";
import { loadProject, scopeOptions, type ScopeFlags } from "../project.ts";

const PALETTE = [color.cyan, color.magenta, color.yellow, color.green, color.blue, color.red];

export function registerServe(program: Command, ctx: CommandContext): void {
  scopeOptions(
    program
      .command("serve")
      .description(
        "Foreground dev mode: deploy with an in-process control plane, stream every app's logs, Ctrl-C stops all (dependents first).",
      )
      .argument("<file>", "TypeScript file that declares environments")
      .argument("[env...]", "environments to serve (with their dependencies); default: all")
      .addOption(
        new Option("--concurrency <n>", "most environments starting at once").argParser(
          wholeNumber("--concurrency", 1),
        ),
      ),
  ).action(async (file: string, names: string[], opts: ScopeFlags & { concurrency?: number }) => {
    const project = await loadProject(file, names, opts);
    const { deployEnvironments } = await import("../../api.ts");
    const { config } = project;
    const { backendProvider, unsupported } = await import("../../backends/registry.ts");
    const provider = await backendProvider(config);
    if (!provider.inProcess)
      throw unsupported(
        config.backend,
        "caravan serve",
        "it cannot run environments inside this process; use caravan deploy",
      );
    // Nothing of a serve session outlives it: its backend's state is its own.
    const session = await provider.inProcess(config, { onStop: () => void stop() });
    const plane = session.backend;
    const abort = new AbortController();
    let stopping: Promise<void> | undefined;
    const stop = () =>
      (stopping ??= (async () => {
        abort.abort();
        info(color.dim("\nstopping (dependents first)..."));
        await session.shutdown();
      })());
    const onSignal = () => void stop().then(() => process.exit(ctx.exitCode));
    // A second Ctrl-C while stopping changes nothing: leaving apps behind would be worse.
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);

    const progress = progressReporter();
    const { plan, deployments } = await deployEnvironments(project.selected, config, {
      entry: project.file,
      backend: plane,
      onEvent: progress.onEvent,
      ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
    }).finally(() => progress.done());
    const failed = deployments.filter((d) => d.status === "failed" || d.status === "skipped");
    // Interrupted while deploying: what was not started because of Ctrl-C is no failure.
    if (failed.length && !abort.signal.aborted) {
      ctx.exitCode = 1;
      for (const d of failed) info(color.red(`${d.name} ${d.status}: ${d.outcome.error}`));
    }
    if (!abort.signal.aborted && deployments.every((d) => failed.includes(d))) {
      // Nothing came up: say so and leave, rather than "serve" nothing until Ctrl-C.
      info(
        color.red(
          `nothing is serving: ${failed.length === 1 ? "its only environment" : `all ${failed.length} environments`} failed or were skipped (above); fix them and run caravan serve again`,
        ),
      );
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      await session.shutdown();
      return;
    }
    for (const d of deployments) if (d.endpoint) info(`${d.name}  ${d.endpoint}`);
    info(color.dim("serving; Ctrl-C stops everything"));
    const width = Math.max(...plan.order.map((n) => n.length));
    await Promise.all(
      plan.environments
        .filter((e) => e.kind === "app")
        .map(async (e, i) => {
          const paint = PALETTE[i % PALETTE.length]!;
          const prefix = paint(`${e.name.padEnd(width)} |`);
          try {
            for await (const line of plane.logs(config, e.name, {
              follow: true,
              signal: abort.signal,
            })) {
              process.stdout.write(`${prefix} ${line}\n`);
            }
          } catch {
            /* not deployed (skipped) */
          }
        }),
    );
    await stopping;
  });
}
