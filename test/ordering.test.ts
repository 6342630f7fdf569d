/**
 * DESIGN §3.2–3.3: an environment starts only once every dependency is ready (a command app
 * when its port answers, a runtime app when it says it listens), and as soon as its own
 * dependencies are ready — not when a whole level is done.
 */
import { describe, expect, it } from "vitest";
import { useSandbox } from "./helpers.ts";
import { deploy, events, eventsFile, fixture, get, timeOf } from "./support.ts";

describe("order and readiness", () => {
  const sb = useSandbox();

  it("starts a dependent only after its slow dependency is ready, down a chain", async () => {
    // mid and top call their dependency while starting and fail if it is not ready yet.
    const r = await deploy(sb, [fixture("ordering/chain.ts")], { EVENTS_FILE: eventsFile(sb) });
    expect(r.code, r.stderr).toBe(0);
    expect(r.deployments.map((d) => [d.name, d.status])).toEqual([
      ["slow-cmd", "ready"],
      ["mid", "ready"],
      ["top", "ready"],
    ]);
    expect(await get(`${r.by.top!.endpoint}/`)).toEqual({
      status: 200,
      body: "top<-mid<-slow-cmd ok",
    });

    const ev = events(sb);
    // Each app's start-up code ran only after its dependency had become ready (its code may
    // have been loaded earlier, while the dependency was starting).
    expect(timeOf(ev, "slow-cmd", "ready")).toBeLessThan(timeOf(ev, "mid", "start"));
    expect(timeOf(ev, "mid", "ready")).toBeLessThan(timeOf(ev, "top", "start"));
    // The dependency really was slow: it started well before it was ready.
    expect(timeOf(ev, "slow-cmd", "start")).toBeLessThan(timeOf(ev, "slow-cmd", "ready"));
  });

  it("starts an environment as soon as its own dependencies are ready, not level by level", async () => {
    // `slow` (level 0) holds its start-up until `after-fast` (level 1, after `fast`) has
    // started; a level-by-level engine would start after-fast only once slow gave up (15 s).
    const r = await deploy(sb, [fixture("ordering/eager.ts")], { EVENTS_FILE: eventsFile(sb) });
    expect(r.code, r.stderr).toBe(0);
    expect(r.by["after-fast"]!.status).toBe("ready");
    expect(r.by.slow!.status).toBe("ready");

    const ev = events(sb);
    expect(timeOf(ev, "fast", "start")).toBeLessThan(timeOf(ev, "after-fast", "start"));
    expect(timeOf(ev, "after-fast", "start")).toBeLessThan(timeOf(ev, "slow", "ready"));
  });
});
