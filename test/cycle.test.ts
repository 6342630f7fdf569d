/**
 * DESIGN §3.5: a cycle, or an AppEndpoint naming an app that is nowhere, is rejected before
 * anything starts.
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { useSandbox } from "./helpers.ts";
import { fixture, json } from "./support.ts";

describe("a dependency cycle", () => {
  const sb = useSandbox();

  it("is rejected with its path, and nothing is started or written", async () => {
    const r = await sb.run(["deploy", fixture("cycle/cycle.ts")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("[CYCLE]");
    expect(r.stderr).toContain("a -> b -> a");

    const asJson = await sb.run(["deploy", fixture("cycle/cycle.ts"), "--json"]);
    expect(asJson.code).toBe(1);
    expect(json<{ error: { code: string; details: { cycle: string[] } } }>(asJson).error).toEqual(
      expect.objectContaining({ code: "CYCLE", details: { cycle: ["a", "b", "a"] } }),
    );

    // No control plane, no app (not even the independent "c"), no state.
    expect(sb.processes()).toEqual([]);
    for (const file of ["state.db", "daemon.json", "token"])
      expect(existsSync(join(sb.home, file)), file).toBe(false);
    expect(readdirSync(sb.home)).toEqual([]);
  });

  it("rejects an AppEndpoint naming an app neither planned nor deployed, starting nothing", async () => {
    const r = await sb.run(["deploy", fixture("cycle/unknown-endpoint.ts")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("[UNKNOWN_APP_ENDPOINT]");
    expect(r.stderr).toContain('"backend-api"');
    expect(sb.processes()).toEqual([]);
    expect(existsSync(join(sb.home, "state.db"))).toBe(false);
  });
});
