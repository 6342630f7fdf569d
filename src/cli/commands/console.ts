import { spawn } from "node:child_process";
import type { Command } from "commander";
import { openBackend } from "../../api.ts";
import type { CommandContext } from "../main.ts";
import { color, info, printJSON } from "../output.ts";
import { loadScope, scopeOptions, type ScopeFlags } from "../project.ts";

/**
 * `caravan console`: a one-time login link to the web console the control plane serves (the
 * graph with live states, logs, runs, history). On a desktop it opens the browser too.
 */
export function registerConsole(program: Command, _ctx: CommandContext): void {
  scopeOptions(
    program
      .command("console")
      .description(
        "Print a one-time login link (valid 5 minutes) to the web console, and open it on a desktop",
      )
      .option("--no-open", "only print the link")
      .option("--json", "print JSON on stdout: { url }"),
  ).action(async (opts: ScopeFlags & { open: boolean; json?: boolean }) => {
    const config = await loadScope(opts);
    const backend = await openBackend(config);
    let link: string;
    try {
      if (!backend.tokens?.consoleLink) {
        const { unsupported } = await import("../../backends/registry.ts");
        throw unsupported(config.backend, "caravan console", "it serves no web console");
      }
      link = await backend.tokens.consoleLink();
    } finally {
      await backend.close();
    }
    // The console opens on this project/domain (it can switch to others).
    const url = `${link}&${new URLSearchParams({ project: config.project, domain: config.domain })}`;
    if (opts.json) printJSON({ url });
    else {
      info(color.dim("open this link in a browser (it works one time, for 5 minutes):"));
      process.stdout.write(`${url}\n`);
    }
    if (opts.open && onDesktop()) openBrowser(url);
  });
}

/** A desktop session a browser can open in (never in CI or over plain SSH). */
function onDesktop(): boolean {
  if (process.env.CI) return false;
  return (
    process.platform === "darwin" ||
    process.platform === "win32" ||
    Boolean(process.env.DISPLAY || process.env.WAYLAND_DISPLAY)
  );
}

/** Best effort: the link is printed anyway. */
function openBrowser(url: string): void {
  const [cmd, args] =
    process.platform === "darwin"
      ? ["open", [url]]
      : process.platform === "win32"
        ? ["cmd", ["/c", "start", "", url]]
        : ["xdg-open", [url]];
  try {
    const child = spawn(cmd, args as string[], { detached: true, stdio: "ignore" });
    child.on("error", () => {});
    child.unref();
  } catch {
    /* no opener: the printed link is enough */
  }
}
