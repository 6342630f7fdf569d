import { rmSync } from "node:fs";
import { join } from "node:path";
import { type Command, Option } from "commander";
import { deployEnvironments } from "../../api.ts";
import { caravanHome, homePaths } from "../../backends/local/home.ts";
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
    // Its own state, apart from the daemon's: nothing of a serve session outlives it.
    // (Content-addressed code and runtime builds are shared with the daemon's home.)
    const paths = {
      ...homePaths(join(caravanHome(), "serve", String(process.pid))),
      runtime: homePaths().runtime,
    };
    const [{ ControlPlane }, { buildApi }, { ensureToken }] = await Promise.all([
      import("../../backends/local/control-plane.ts"),
      import("../../server/api.ts"),
      import("../../backends/local/daemon.ts"),
    ]);
    const plane = new ControlPlane(paths);
    // The run API, so apps served here can run tasks (nothing else uses it).
    const token = ensureToken(paths);
    const api = buildApi(plane, token, () => void stop());
    plane.setApiAccess(await api.listen({ port: 0, host: "127.0.0.1" }), token);
    const abort = new AbortController();
    let stopping: Promise<void> | undefined;
    const stop = () =>
      (stopping ??= (async () => {
        abort.abort();
        info(color.dim("\nstopping (dependents first)..."));
        await api.close();
        await plane.shutdown({ stopApps: true });
        rmSync(paths.home, { recursive: true, force: true });
      })());
    const onSignal = () => void stop().then(() => process.exit(ctx.exitCode));
    // A second Ctrl-C while stopping changes nothing: leaving apps behind would be worse.
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);

    const progress = progressReporter();
    const { plan, deployments } = await deployEnvironments(project.selected, project.config, {
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
            for await (const line of plane.logs(project.config, e.name, {
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
