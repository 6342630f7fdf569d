import type { Command } from "commander";
import type { CommandContext } from "../main.ts";
import { info, printJSON } from "../output.ts";
import { loadScope, openBackend, scopeOptions, type ScopeFlags } from "../project.ts";

export function registerJob(program: Command, _ctx: CommandContext): void {
  const job = program
    .command("job")
    .description(
      "Jobs (JobEnvironment): one-shot work a deploy runs before what depends on it, again only when it changed.",
    );
  scopeOptions(
    job
      .command("rerun")
      .description(
        "Run a deployed job again, though nothing about it changed (its dependents are not restarted)",
      )
      .argument("<name>", "the job")
      .option("--json", "print JSON on stdout"),
  ).action(async (name: string, opts: ScopeFlags & { json?: boolean }) => {
    const config = await loadScope(opts);
    const backend = await openBackend(config);
    try {
      if (!backend.rerunJob) {
        const { unsupported } = await import("../../backends/registry.ts");
        throw unsupported(config.backend, "caravan job rerun");
      }
      info(`running job ${name} again…`);
      const result = await backend.rerunJob(config, name);
      if (opts.json) return printJSON({ name, ...result });
      info(`${name} succeeded (revision ${result.revision}); see caravan logs ${name}`);
    } finally {
      await backend.close();
    }
  });
}
