import { Command, Help } from "commander";
import { describe, expect, it } from "vitest";
import { COMMANDS, nameOf } from "./main.ts";
import { buildProgram } from "./program.ts";

const termOf = (cmd: Command) => new Help().subcommandTerm(cmd);

describe("the command table", () => {
  it("lists each command as its module declares it", async () => {
    for (const m of COMMANDS) {
      const program = new Command("caravan");
      (await m.load())(program, { exitCode: 0 });
      expect(program.commands.map(termOf)).toEqual(m.listed.map(([term]) => term));
    }
  });

  it("declares only the command a run names, and lists them all for --help", async () => {
    const ctx = { exitCode: 0 };
    const names = COMMANDS.flatMap((m) => m.listed.map(([term]) => nameOf(term)));
    const status = await buildProgram(ctx, ["status", "--json"]);
    expect(status.commands.map((c) => c.name())).toEqual(["status"]);
    expect(status.commands[0]!.options.map((o) => o.long)).toContain("--json");
    const stop = await buildProgram(ctx, ["help", "delete"]);
    expect(stop.commands.map((c) => c.name())).toEqual(["stop", "delete"]);

    const help = (await buildProgram(ctx, ["--help"])).helpInformation();
    const listed = [...help.matchAll(/^ {2}([a-z]+)\b/gm)].map((m) => m[1]);
    expect(listed).toEqual([...names, "help"]);
    for (const [term, summary] of COMMANDS.flatMap((m) => m.listed)) {
      expect(help).toContain(term);
      expect(help.replace(/\s+/g, " ")).toContain(summary);
    }
  });
});
