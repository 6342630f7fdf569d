import type { Command } from "commander";
import { openBackend } from "../../api.ts";
import type { HttpBackend } from "../../backends/local/client.ts";
import type { TokenInfo } from "../../backends/local/tokens.ts";
import type { CommandContext } from "../main.ts";
import { color, info, printJSON, printTable } from "../output.ts";
import { loadScope, scopeOptions, type ScopeFlags } from "../project.ts";

/** The control plane's client (the configured one; tokens are a local-backend concern). */
async function controlPlane(): Promise<HttpBackend> {
  return (await openBackend(await loadScope({}))) as HttpBackend;
}

export function registerToken(program: Command, _ctx: CommandContext): void {
  const token = program
    .command("token")
    .description(
      "Tokens for apps' public endpoints (apps with requiresAuth, the default): send 'Authorization: Bearer <token>'.",
    );
  token
    .command("create")
    .description("Create a token; its value is printed once, alone on the last line of stdout")
    .option("--name <name>", "a name to recognise it by (default: token-<n>)")
    .option("--json", "print JSON on stdout")
    .action(async (opts: { name?: string; json?: boolean }) => {
      const plane = await controlPlane();
      const { token: created } = await plane.call<{
        token: { id: string; name: string; token: string };
      }>("POST", "/v1/tokens", opts.name ? { name: opts.name } : {});
      if (opts.json) return printJSON(created);
      info(`created token "${created.name}" (${created.id}); it is not shown again:`);
      process.stdout.write(`${created.token}\n`);
    });
  token
    .command("list")
    .description("Every token (never its value): id, name, created, last used, revoked")
    .option("--json", "print JSON on stdout")
    .action(async (opts: { json?: boolean }) => {
      const plane = await controlPlane();
      const { tokens } = await plane.call<{ tokens: TokenInfo[] }>("GET", "/v1/tokens");
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
  token
    .command("revoke")
    .description("Revoke a token by id or name: requests with it get 401 from then on")
    .argument("<token>", "the token's id or name")
    .action(async (id: string) => {
      const plane = await controlPlane();
      await plane.call("DELETE", `/v1/tokens/${encodeURIComponent(id)}`);
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
    const plane = await controlPlane();
    const { url } = await plane.call<{ url: string }>("POST", "/v1/login-link", {
      scope: { project: scope.project, domain: scope.domain },
      name: app,
    });
    info(color.dim("open this link once in a browser (it works one time, for 5 minutes):"));
    process.stdout.write(`${url}\n`);
  });
}
