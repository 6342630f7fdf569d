import type { Command } from "commander";
import type { DaemonControl } from "../../backends/registry.ts";
import type { ResolvedConfig } from "../../sdk/config.ts";
import type { CommandContext } from "../main.ts";
import { info, printJSON } from "../output.ts";
import { loadScope } from "../project.ts";

/** The configured backend's daemon; UNSUPPORTED when it runs none on this machine. */
async function daemonOf(
  flags: { backend?: string },
  command: string,
): Promise<{ daemon: DaemonControl; config: ResolvedConfig }> {
  const config = await loadScope(flags);
  const { backendProvider, unsupported } = await import("../../backends/registry.ts");
  const { daemon } = await backendProvider(config);
  if (!daemon)
    throw unsupported(
      config.backend,
      `caravan server ${command}`,
      "it runs no control plane on this machine",
    );
  return { daemon, config };
}

const BACKEND = [
  "--backend <name>",
  'the backend whose daemon (default: the configured one, else "local")',
] as const;

export function registerServer(program: Command, _ctx: CommandContext): void {
  const server = program
    .command("server")
    .description(
      "The local control plane daemon (deploy starts it when it is not running). State: $CARAVAN_HOME (default ~/.caravan).",
    );
  server
    .command("start")
    .description("Start the control plane in the background (no-op if it runs)")
    .option(...BACKEND)
    .option("--json", "print JSON on stdout")
    .action(async (opts: { backend?: string; json?: boolean }) => {
      const { daemon, config } = await daemonOf(opts, "start");
      const d = await daemon.start(config);
      if (opts.json) return printJSON({ running: true, pid: d.pid, url: d.url });
      info(`${d.started ? "started" : "already running:"} control plane pid ${d.pid} at ${d.url}`);
    });
  server
    .command("stop")
    .description(
      "Stop the control plane and, unless --keep-apps, every app it runs (dependents first)",
    )
    .option("--keep-apps", "leave apps running; the next control plane adopts them")
    .option(...BACKEND)
    .action(async (opts: { keepApps?: boolean; backend?: string }) => {
      const { daemon, config } = await daemonOf(opts, "stop");
      const stopped = await daemon.stop(config, { stopApps: !opts.keepApps });
      info(stopped ? "control plane stopped" : "control plane was not running");
    });
  server
    .command("status")
    .description("Whether the control plane runs, its pid and address")
    .option(...BACKEND)
    .option("--json", "print JSON on stdout")
    .action(async (opts: { backend?: string; json?: boolean }) => {
      const { daemon, config } = await daemonOf(opts, "status");
      const s = await daemon.status(config);
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
    .option(...BACKEND)
    .action(async (opts: { backend?: string }) => {
      const { daemon, config } = await daemonOf(opts, "run");
      await daemon.run(config);
      await new Promise(() => {}); // serve until told to stop
    });
}
