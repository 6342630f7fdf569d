/**
 * DESIGN §3.3–3.4: an app that exits before it is ready fails at once with the tail of its
 * log; everything depending on it is skipped with the reason, independent branches finish,
 * and the command exits 1 with a summary.
 */
import { describe, expect, it } from "vitest";
import { useSandbox } from "./helpers.ts";
import {
  appProcesses,
  deploy,
  events,
  eventsFile,
  fixture,
  get,
  status,
  statuses,
} from "./support.ts";

const MARKER = "BROKEN-MARKER-3141: cannot open the database";

describe("a failing dependency", () => {
  const sb = useSandbox();

  it("skips its dependents with the reason while an independent branch becomes ready (--json)", async () => {
    const r = await deploy(sb, [fixture("failure/graph.ts")], { EVENTS_FILE: eventsFile(sb) });
    expect(r.code).toBe(1);
    expect(statuses(r.deployments)).toEqual({
      broken: "failed",
      independent: "ready",
      "needs-broken": "skipped",
      "needs-needs": "skipped",
    });
    // The failure says how the process ended and shows its log tail.
    expect(r.by.broken!.error).toContain("exited with code 3 before it was ready");
    expect(r.by.broken!.error).toContain(MARKER);
    expect(r.by["needs-broken"]!.error).toBe("dependency broken failed");
    expect(r.by["needs-needs"]!.error).toMatch(/^dependency (broken|needs-broken) failed$/);
    expect(r.by["needs-broken"]!.endpoint).toBeNull();

    // The independent branch finished (it was still starting when broken failed) and serves.
    expect(r.by.independent!.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(await get(`${r.by.independent!.endpoint}/`)).toEqual({
      status: 200,
      body: "independent",
    });

    // Skipped apps never ran their start-up code (their code may have been loaded early, but
    // those processes are gone); the broken one is not left running either.
    const started = new Set(
      events(sb)
        .filter((e) => e.event === "start")
        .map((e) => e.app),
    );
    expect(started.has("needs-broken")).toBe(false);
    expect(started.has("needs-needs")).toBe(false);
    for (const app of ["broken", "needs-broken", "needs-needs"])
      expect(appProcesses(sb, app), app).toEqual([]);
    expect(appProcesses(sb, "independent")).toHaveLength(1);

    const st = await status(sb);
    expect(st.broken!.state).toBe("failed");
    expect(st.broken!.pids).toEqual([]);
    expect(st.independent!.state).toBe("ready");
    expect(st["needs-broken"]).toBeUndefined();
    expect(st["needs-needs"]).toBeUndefined();
  });

  it("prints the failing app's log tail and a summary on stderr (human output)", async () => {
    const r = await sb.run(["deploy", fixture("failure/graph.ts")], {
      env: { EVENTS_FILE: eventsFile(sb) },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("broken failed:");
    expect(r.stderr).toContain(MARKER);
    expect(r.stderr).toMatch(/needs-broken\s+skipped\s+dependency broken failed/);
    expect(r.stderr).toContain("default/development: 1 ready, 0 unchanged, 1 failed, 2 skipped");
    // stdout lists the endpoints of what is up, and nothing else.
    expect(r.stdout.trim()).toMatch(/^independent +http:\/\/127\.0\.0\.1:\d+$/);
  });

  it("reports a runtime app whose start-up code throws, with the error from its log", async () => {
    const r = await deploy(sb, [fixture("failure/boom.ts")]);
    expect(r.code).toBe(1);
    expect(r.by.boom!.status).toBe("failed");
    expect(r.by.boom!.error).toContain("exited with code 1 before it was ready");
    expect(r.by.boom!.error).toContain("STARTUP-BOOM: the config file is missing");
    expect(r.by["after-boom"]).toMatchObject({
      status: "skipped",
      error: "dependency boom failed",
    });
    expect(appProcesses(sb, "boom")).toEqual([]);
  });

  it("fails an app that is not ready within its start timeout, and stops its process", async () => {
    const r = await deploy(sb, [fixture("failure/hang.ts")]);
    expect(r.code).toBe(1);
    expect(r.by.hang!.status).toBe("failed");
    expect(r.by.hang!.error).toContain("hang was not ready within 1s (timeouts.start)");
    expect(r.by.hang!.error).toContain("HANG-MARKER: waiting forever");
    expect(appProcesses(sb, "hang")).toEqual([]);
    expect((await status(sb)).hang).toMatchObject({ state: "failed", pids: [] });
  });
});
