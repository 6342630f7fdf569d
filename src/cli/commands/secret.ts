import { readFileSync } from "node:fs";
import type { Command } from "commander";
import type { SecretAccess } from "../../backends/registry.ts";
import type { ResolvedConfig } from "../../sdk/config.ts";
import { CaravanError } from "../../errors.ts";
import type { CommandContext } from "../main.ts";
import { info, printJSON } from "../output.ts";
import { loadScope, scopeOptions, type ScopeFlags } from "../project.ts";

/** The configured backend's secrets; UNSUPPORTED when it has none. */
async function store(config: ResolvedConfig, command: string): Promise<SecretAccess> {
  const { backendProvider, unsupported } = await import("../../backends/registry.ts");
  const provider = await backendProvider(config);
  if (!provider.secrets)
    throw unsupported(config.backend, `caravan secret ${command}`, "it has no secret store");
  return provider.secrets(config);
}

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) {
    throw new CaravanError(
      "USAGE",
      "pipe the secret's value on stdin (caravan secret set NAME < file) or pass --file; values are never taken from the command line",
    );
  }
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  // `echo value | caravan secret set NAME`: the newline echo adds is not part of the value.
  return Buffer.concat(chunks)
    .toString("utf8")
    .replace(/\r?\n$/, "");
}

export function registerSecret(program: Command, ctx: CommandContext): void {
  const secret = program
    .command("secret")
    .description(
      "Manage secrets, injected into apps that declare them (the local backend keeps them under $CARAVAN_HOME, owner-only; the kubernetes backend in the Secret caravan-secrets of the project/domain's namespace).",
    );

  scopeOptions(
    secret
      .command("set")
      .description(
        "Set a secret's value, read from stdin (one trailing newline dropped) or --file (as is); never from the command line.",
      )
      .argument("<name>", "secret name, e.g. API_KEY")
      .option("--file <path>", "read the value from this file")
      .option("--json", "print JSON on stdout"),
  ).action(async (name: string, opts: ScopeFlags & { file?: string; json?: boolean }) => {
    const config = await loadScope(opts);
    const secrets = await store(config, "set");
    const { validateSecretName } = await import("../../backends/secrets.ts");
    validateSecretName(name);
    let value: string;
    if (opts.file !== undefined) {
      try {
        value = readFileSync(opts.file, "utf8");
      } catch (e) {
        throw new CaravanError("USAGE", `cannot read --file ${opts.file}: ${(e as Error).message}`);
      }
    } else value = await readStdin();
    await secrets.set(config, name, value);
    if (opts.json) return printJSON({ set: name, project: config.project, domain: config.domain });
    info(`secret ${name} set in ${config.project}/${config.domain}`);
  });

  scopeOptions(
    secret
      .command("list")
      .description("List secret names (never values) in the project/domain.")
      .option("--json", "print JSON on stdout"),
  ).action(async (opts: ScopeFlags & { json?: boolean }) => {
    const config = await loadScope(opts);
    const names = await (await store(config, "list")).list(config);
    if (opts.json)
      return printJSON({ project: config.project, domain: config.domain, secrets: names });
    if (names.length === 0) info(`no secrets in ${config.project}/${config.domain}`);
    for (const n of names) process.stdout.write(`${n}\n`);
  });

  scopeOptions(
    secret
      .command("delete")
      .description("Delete a secret. Apps already running keep the value they started with.")
      .argument("<name>", "secret name")
      .option("--json", "print JSON on stdout"),
  ).action(async (name: string, opts: ScopeFlags & { json?: boolean }) => {
    const config = await loadScope(opts);
    const deleted = await (await store(config, "delete")).delete(config, name);
    if (!deleted) {
      ctx.exitCode = 1;
      if (opts.json) return printJSON({ deleted: null });
      info(`secret ${name} is not set in ${config.project}/${config.domain}`);
      return;
    }
    if (opts.json) return printJSON({ deleted: name });
    info(`secret ${name} deleted from ${config.project}/${config.domain}`);
  });
  for (const cmd of secret.commands) cmd.exitOverride();
}
