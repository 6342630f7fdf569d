import { beforeEach, describe, expect, it, vi } from "vitest";
import type { CommandSpec } from "./direct.ts";

// What ran: the command's own function (and with what), or commander's program.
const ran = vi.hoisted(() => ({ direct: [] as unknown[], program: [] as string[][] }));
vi.mock("./commands/status.ts", () => ({
  status: {
    name: "status",
    description: "",
    options: [["--json", ""]],
    run: async (options: unknown) => void ran.direct.push(options),
  } satisfies CommandSpec<unknown>,
}));
vi.mock("./program.ts", () => ({
  runProgram: async (_ctx: unknown, argv: string[]) => (ran.program.push(argv), 0),
}));
const { main } = await import("./main.ts");

describe("main", () => {
  beforeEach(() => {
    ran.direct = [];
    ran.program = [];
  });

  it("runs a command declared as data without commander when its arguments are plain", async () => {
    expect(await main(["status", "--json"])).toBe(0);
    expect(ran).toEqual({ direct: [{ json: true }], program: [] });
  });

  it("leaves help, errors and other commands to commander", async () => {
    for (const argv of [
      ["status", "--help"],
      ["status", "--nope"],
      ["help", "status"],
      ["logs", "x"],
    ])
      await main(argv);
    expect(ran.direct).toEqual([]);
    expect(ran.program).toEqual([
      ["status", "--help"],
      ["status", "--nope"],
      ["help", "status"],
      ["logs", "x"],
    ]);
  });
});
