import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { status } from "./commands/status.ts";
import { parseArgsOptions, parseDirect, registerSpec, type CommandSpec } from "./direct.ts";

/** What commander gives the command's action for `args` (the reference a direct run matches). */
async function commanderOptions<O>(spec: CommandSpec<O>, args: string[]): Promise<O> {
  let got: O | undefined;
  const program = new Command("caravan").exitOverride();
  registerSpec(
    program,
    { ...spec, run: async (options: O) => void (got = options) },
    { exitCode: 0 },
  );
  await program.parseAsync([spec.name, ...args], { from: "user" });
  return got!;
}

describe("commands declared as data", () => {
  it("run directly with the options commander would give them", async () => {
    for (const args of [
      [],
      ["--json"],
      ["--all", "--json"],
      ["--project", "shop", "--domain=staging"],
      ["--backend", "kubernetes", "--context", "kind-a", "--json"],
      ["--project", "a", "--project", "b"],
      ["--"],
    ]) {
      const direct = parseDirect(status, args);
      expect(direct, args.join(" ")).toBeDefined();
      expect(direct, args.join(" ")).toEqual(await commanderOptions(status, args));
    }
  });

  it("leave help, errors and anything unusual to commander", () => {
    for (const args of [
      ["--help"],
      ["-h"],
      ["--nope"],
      ["extra"],
      ["--", "extra"],
      ["--project"],
      ["--project", "--json"],
      ["--json=yes"],
    ])
      expect(parseDirect(status, args), args.join(" ")).toBeUndefined();
  });

  it("takes only options that parse the same way in both", () => {
    expect(parseArgsOptions([["-p, --project-name <name>", ""]])).toEqual({
      "project-name": { type: "string", short: "p" },
    });
    for (const flags of ["--tail [n]", "--no-warm", "--env <names...>", "project"])
      expect(() => parseArgsOptions([[flags, ""]]), flags).toThrow(/--name or --name <value>/);
  });
});
