import type { Command } from "commander";
import type { CommandContext } from "../main.ts";
import { info, printJSON } from "../output.ts";
import { loadScope, openBackend, scopeOptions, type ScopeFlags } from "../project.ts";

export function registerStopDelete(program: Command, _ctx: CommandContext): void {
  for (const action of ["stop", "delete"] as const) {
    scopeOptions(
      program
        .command(action)
        .description(
          action === "stop"
            ? "Stop apps (dependents first), keeping their definitions; deploy starts them again."
            : "Stop and forget apps (dependents first): their state, port and endpoint are released.",
        )
        .argument("<app...>", "app names")
        .option("--cascade", "also take down the apps that depend on them")
        .option("--json", "print JSON on stdout"),
    ).action(async (apps: string[], opts: ScopeFlags & { cascade?: boolean; json?: boolean }) => {
      const config = await loadScope(opts);
      const backend = await openBackend(config);
      const done = await backend[action](config, apps, { cascade: opts.cascade ?? false }).finally(
        () => backend.close(),
      );
      if (opts.json) return printJSON({ [action === "stop" ? "stopped" : "deleted"]: done });
      for (const name of done) info(`${action === "stop" ? "stopped" : "deleted"} ${name}`);
    });
  }
}
