/**
 * Commands that need a capability of the local backend (its daemon, an in-process control
 * plane) say so, naming the backend, when another one is selected; and the local daemon
 * starts whichever backend the environment names for other commands.
 */
import { describe, expect, it } from "vitest";
import { useSandbox } from "./helpers.ts";
import { deploy, fixture, json } from "./support.ts";

describe("backend capabilities", () => {
  const sb = useSandbox();

  it.each([
    [["server", "status", "--backend", "kubernetes"], "caravan server status"],
    [["server", "start", "--backend", "kubernetes", "--json"], "caravan server start"],
    [["serve", "examples/app-calling-app.ts", "--backend", "kubernetes"], "caravan serve"],
  ])("%j is UNSUPPORTED with the kubernetes backend, starting nothing", async (args, what) => {
    const r = await sb.run(args);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("[UNSUPPORTED]");
    expect(r.stderr).toContain(`${what} is not available with the kubernetes backend`);
    expect(r.stderr).toContain("--backend local");
    expect(sb.processes()).toEqual([]);
  });

  it("server status --json says what the local daemon does, and the local backend deploys with CARAVAN_BACKEND=kubernetes set", async () => {
    const before = await sb.run(["server", "status", "--json"]);
    expect(json(before)).toEqual({ running: false, pid: null, url: null });
    const r = await deploy(sb, [fixture("endpoints/pair.ts"), "--backend", "local"], {
      CARAVAN_BACKEND: "kubernetes",
    });
    expect(r.code, r.stderr).toBe(0);
    const after = json<{ running: boolean; pid: number }>(
      await sb.run(["server", "status", "--json"]),
    );
    expect(after.running).toBe(true);
    expect(sb.processes()).toContain(after.pid);
  });
});
