import type { Command } from "commander";
import type { TokenAccess } from "../../backends/contract.ts";
import type { CommandContext } from "../main.ts";
import { color, info, printJSON, printTable } from "../output.ts";
import { loadScope, openBackend, scopeOptions, type ScopeFlags } from "../project.ts";

/**
 * Runs `fn` with the configured backend's tokens (the local one starts its control plane);
 * UNSUPPORTED when that backend has none.
 */
async function withTokens<T>(
  flags: ScopeFlags,
  command: string,
  fn: (tokens: TokenAccess) => Promise<T>,
): Promise<T> {
  const config = await loadScope(flags);
  const backend = await openBackend(config);
  try {
    if (!backend.tokens) {
      const { unsupported } = await import("../../backends/registry.ts");
      throw unsupported(
        config.backend,
        `caravan token ${command}`,
        "it has no gateway of its own to check tokens",
      );
    }
    return await fn(backend.tokens);
  } finally {
    await backend.close();
  }
}

export function registerToken(program: Command, _ctx: CommandContext): void {
  const token = program
    .command("token")
    .description(
      "Tokens for apps' public endpoints (apps with requiresAuth, the default): send 'Authorization: Bearer <token>'.",
    );
  // On a cluster, tokens belong to the project/domain's namespace (its gateway checks them).
  scopeOptions(
    token
      .command("create")
      .description("Create a token; its value is printed once, alone on the last line of stdout")
      .option("--name <name>", "a name to recognise it by (default: token-<n>)")
      .option("--json", "print JSON on stdout"),
  ).action(async (opts: ScopeFlags & { name?: string; json?: boolean }) => {
    const created = await withTokens(opts, "create", (t) => t.create(opts.name));
    if (opts.json) return printJSON(created);
    info(`created token "${created.name}" (${created.id}); it is not shown again:`);
    process.stdout.write(`${created.token}\n`);
  });
  scopeOptions(
    token
      .command("list")
      .description("Every token (never its value): id, name, created, last used, revoked")
      .option("--json", "print JSON on stdout"),
  ).action(async (opts: ScopeFlags & { json?: boolean }) => {
    const tokens = await withTokens(opts, "list", (t) => t.list());
    if (opts.json) return printJSON({ tokens });
    if (!tokens.length) return info("no tokens (caravan token create makes one)");
    printTable(
      ["ID", "NAME", "CREATED", "LAST USED", "STATE"],
      tokens.map((t) => [
        t.id,
        t.name,
        t.createdAt,
        t.lastUsedAt ?? "-",
        t.revoked ? "revoked" : "live",
      ]),
    );
  });
  scopeOptions(
    token
      .command("revoke")
      .description("Revoke a token by id or name: requests with it get 401 from then on")
      .argument("<token>", "the token's id or name"),
  ).action(async (id: string, opts: ScopeFlags) => {
    await withTokens(opts, "revoke", (t) => t.revoke(id));
    info(`revoked ${id}`);
  });
  scopeOptions(
    token
      .command("link")
      .description(
        "A one-time link (valid 5 minutes) that opens an app's public endpoint in a browser: it sets a session cookie",
      )
      .argument("<app>", "the app to open"),
  ).action(async (app: string, opts: ScopeFlags) => {
    const scope = await loadScope(opts);
    const url = await withTokens(opts, "link", (t) => t.link(scope, app));
    info(color.dim("open this link once in a browser (it works one time, for 5 minutes):"));
    process.stdout.write(`${url}\n`);
  });
}
