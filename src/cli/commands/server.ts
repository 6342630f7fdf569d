import type { Command } from "commander";
import type { CommandContext } from "../main.ts";
import { info, printJSON } from "../output.ts";

export function registerServer(program: Command, _ctx: CommandContext): void {
  const server = program
    .command("server")
    .description(
      "The local control plane daemon (deploy starts it when it is not running). State: $CARAVAN_HOME (default ~/.caravan).",
    );
  server
    .command("start")
    .description("Start the control plane in the background (no-op if it runs)")
    .option("--json", "print JSON on stdout")
    .action(async (opts: { json?: boolean }) => {
      const { ensureDaemon } = await import("../../backends/local/daemon.ts");
      const d = await ensureDaemon();
      if (opts.json) return printJSON({ running: true, pid: d.pid, url: d.url });
      info(`${d.started ? "started" : "already running:"} control plane pid ${d.pid} at ${d.url}`);
    });
  server
    .command("stop")
    .description(
      "Stop the control plane and, unless --keep-apps, every app it runs (dependents first)",
    )
    .option("--keep-apps", "leave apps running; the next control plane adopts them")
    .action(async (opts: { keepApps?: boolean }) => {
      const { stopDaemon } = await import("../../backends/local/daemon.ts");
      const stopped = await stopDaemon(undefined, !opts.keepApps);
      info(stopped ? "control plane stopped" : "control plane was not running");
    });
  server
    .command("status")
    .description("Whether the control plane runs, its pid and address")
    .option("--json", "print JSON on stdout")
    .action(async (opts: { json?: boolean }) => {
      const { daemonStatus } = await import("../../backends/local/daemon.ts");
      const s = await daemonStatus();
      if (opts.json) return printJSON(s);
      info(
        s.running
          ? `running: pid ${s.pid} at ${s.url}`
          : "not running (caravan server start, or any deploy, starts it)",
      );
    });
  server
    .command("run", { hidden: true })
    .description("Run the control plane in the foreground (what `start` runs)")
    .action(async () => {
      const { runDaemon } = await import("../../server/daemon.ts");
      await runDaemon();
      await new Promise(() => {}); // serve until told to stop
    });
}
