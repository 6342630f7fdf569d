import { type Command, Option } from "commander";
import { wholeNumber } from "../output.ts";
import type { CommandContext } from "../main.ts";
import { loadScope, openBackend, scopeOptions, type ScopeFlags } from "../project.ts";

export function registerLogs(program: Command, _ctx: CommandContext): void {
  scopeOptions(
    program
      .command("logs")
      .description("Show an app's logs (stdout and stderr, with caravan's start/stop lines).")
      .argument("<app>", "app name")
      .option("-f, --follow", "keep printing new lines until Ctrl-C")
      .addOption(
        new Option("-n, --tail <n>", "only the last n lines").argParser(wholeNumber("--tail", 0)),
      ),
  ).action(async (app: string, opts: ScopeFlags & { follow?: boolean; tail?: number }) => {
    const config = await loadScope(opts);
    const backend = await openBackend(config);
    const abort = new AbortController();
    const onSignal = () => abort.abort();
    process.once("SIGINT", onSignal);
    try {
      for await (const line of backend.logs(config, app, {
        follow: opts.follow ?? false,
        signal: abort.signal,
        ...(opts.tail !== undefined ? { tail: opts.tail } : {}),
      })) {
        process.stdout.write(line + "\n");
      }
    } finally {
      process.off("SIGINT", onSignal);
      await backend.close();
    }
  });
}
