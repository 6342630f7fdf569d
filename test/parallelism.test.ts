/**
 * DESIGN §3.2: independent environments deploy in parallel, bounded by --concurrency.
 * Overlap is shown with the start/ready times the apps record, never with durations.
 */
import { describe, expect, it } from "vitest";
import { type Sandbox, useSandbox } from "./helpers.ts";
import { deploy, events, eventsFile, fixture, statuses, timeOf } from "./support.ts";

function interval(sb: Sandbox, app: string) {
  const ev = events(sb);
  return { start: timeOf(ev, app, "start"), ready: timeOf(ev, app, "ready") };
}

describe("parallel deploys", () => {
  const sb = useSandbox();

  it("starts independent apps at the same time: their start-up intervals overlap", async () => {
    const r = await deploy(sb, [fixture("ordering/parallel.ts")], { EVENTS_FILE: eventsFile(sb) });
    expect(r.code, r.stderr).toBe(0);
    expect(statuses(r.deployments)).toEqual({ left: "ready", right: "ready" });
    const left = interval(sb, "left");
    const right = interval(sb, "right");
    // Each was still starting when the other began.
    expect(right.start).toBeLessThan(left.ready);
    expect(left.start).toBeLessThan(right.ready);
  });

  it("--concurrency 1 deploys them one at a time: the intervals do not overlap", async () => {
    const r = await deploy(sb, [fixture("ordering/parallel.ts"), "--concurrency", "1"], {
      EVENTS_FILE: eventsFile(sb),
      PEER_WAIT_MS: "0",
    });
    expect(r.code, r.stderr).toBe(0);
    expect(statuses(r.deployments)).toEqual({ left: "ready", right: "ready" });
    const [first, second] = [interval(sb, "left"), interval(sb, "right")].sort(
      (a, b) => a.start - b.start,
    );
    expect(first!.ready).toBeLessThan(second!.start);
  });
});
