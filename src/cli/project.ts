import { dirname } from "node:path";
import type { Command } from "commander";
import type { Backend } from "../backends/contract.ts";
import type { ResolvedConfig } from "../sdk/config.ts";
import type { Environment } from "../sdk/environment.ts";
import type { OptionSpec } from "./direct.ts";

export interface ScopeFlags {
  project?: string;
  domain?: string;
  backend?: string;
  context?: string;
}

/** --project/--domain and --backend/--context (they override the config file). */
export const SCOPE_OPTIONS: OptionSpec[] = [
  ["--project <name>", 'project (default: from caravan.config.*, else "default")'],
  ["--domain <name>", 'domain (default: from caravan.config.*, else "development")'],
  [
    "--backend <name>",
    'where environments run: "local" or "kubernetes" (default: $CARAVAN_BACKEND, else caravan.config.*, else "local")',
  ],
  ["--context <name>", "kubeconfig context for --backend kubernetes"],
];

/** Adds the scope options (SCOPE_OPTIONS) to a command. */
export function scopeOptions(cmd: Command): Command {
  for (const [flags, description] of SCOPE_OPTIONS) cmd.option(flags, description);
  return cmd;
}

function overridesOf(flags: ScopeFlags) {
  return {
    project: flags.project,
    domain: flags.domain,
    backend: flags.backend,
    context: flags.context,
  };
}

export interface LoadedProject {
  file: string;
  environments: Environment[];
  selected: Environment[];
  config: ResolvedConfig;
}

/** Loads the config (from the file's directory upwards) and the file's environments. */
export async function loadProject(
  file: string,
  names: string[],
  flags: ScopeFlags,
): Promise<LoadedProject> {
  // Loaded when a command runs, not when it is declared (see COMMANDS in main.ts).
  const [{ loadEnvironments, selectEnvironments }, { loadConfig }] = await Promise.all([
    import("../sdk/loader.ts"),
    import("../sdk/config.ts"),
  ]);
  const loaded = await loadEnvironments(file);
  const config = await loadConfig(dirname(loaded.file), overridesOf(flags));
  return { ...loaded, selected: selectEnvironments(loaded.environments, names), config };
}

/** The configured backend, started if need be (as `openBackend` in api.ts, without the SDK). */
export async function openBackend(config: ResolvedConfig): Promise<Backend> {
  const { connectBackend } = await import("../backends/registry.ts");
  return (await connectBackend(config, { start: true }))!;
}

/** The scope of commands that take no file: config from the working directory. */
export async function loadScope(flags: ScopeFlags): Promise<ResolvedConfig> {
  const { loadConfig } = await import("../sdk/config.ts");
  return loadConfig(process.cwd(), overridesOf(flags));
}
