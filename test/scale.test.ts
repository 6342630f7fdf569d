/**
 * Issue 16, "Scale on small machines": the local control plane bounds how many apps start at
 * once (a start queue sized from the CPU count; CARAVAN_START_CONCURRENCY sets it here), and
 * an app's start timeout counts from its start, not from its wait in the queue. Concurrency is
 * read from the control plane's counters and from the apps' own start/listen records, never
 * from durations.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { type Sandbox, useSandbox } from "./helpers.ts";
import { deploy, eventsFile, fixture, get, status } from "./support.ts";

interface StartStats {
  limit: number;
  active: number;
  waiting: number;
  peak: number;
  total: number;
}

/** The daemon's start counters (its health answer). */
async function startStats(sb: Sandbox): Promise<StartStats> {
  const { url } = JSON.parse(readFileSync(join(sb.home, "daemon.json"), "utf8")) as {
    url: string;
  };
  const token = readFileSync(join(sb.home, "token"), "utf8").trim();
  const res = await fetch(`${url}/v1/health`, { headers: { authorization: `Bearer ${token}` } });
  return ((await res.json()) as { starts: StartStats }).starts;
}

/**
 * The most apps that were between their process start and their listen at one moment. Each
 * such interval lies inside the app's start slot (taken before the spawn, given back after
 * the readiness probe saw it listen), so this can never exceed the bound.
 */
function mostAtOnce(sb: Sandbox): { apps: Set<string>; most: number } {
  const lines = readFileSync(eventsFile(sb), "utf8").trim().split("\n");
  const records = lines.map(
    (l) => JSON.parse(l) as { name: string; start: number; listen: number },
  );
  // Ends sort before starts at the same instant: touching intervals do not overlap.
  const edges = records
    .flatMap((r) => [
      { at: r.start, d: 1 },
      { at: r.listen, d: -1 },
    ])
    .sort((a, b) => a.at - b.at || a.d - b.d);
  let now = 0;
  let most = 0;
  for (const e of edges) most = Math.max(most, (now += e.d));
  return { apps: new Set(records.map((r) => r.name)), most };
}

describe("bounded starts", () => {
  const sb = useSandbox();

  it("deploys a fan-out of 60 command apps with at most the bound starting at once", async () => {
    const n = 60;
    const bound = 4;
    const r = await deploy(sb, [fixture("scale/fanout.ts")], {
      FANOUT_APPS: String(n),
      EVENTS_FILE: eventsFile(sb),
      CARAVAN_START_CONCURRENCY: String(bound),
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.deployments).toHaveLength(n);
    expect(r.deployments.filter((d) => d.status !== "ready")).toEqual([]);

    // Every one serves, through its endpoint.
    const envs = await status(sb);
    expect(Object.keys(envs)).toHaveLength(n);
    for (const e of Object.values(envs)) {
      expect(e.state).toBe("ready");
      expect(e.pids).toHaveLength(1);
      const answer = await get(e.endpoint!);
      expect(answer).toEqual({ status: 200, body: e.name });
    }

    // The control plane never had more than the bound starting, and did reach it (the queue
    // was used: 59 dependents became deployable at once).
    expect(await startStats(sb)).toEqual({
      limit: bound,
      active: 0,
      waiting: 0,
      peak: bound,
      total: n,
    });
    // The apps' own records agree: never more than the bound between start and listen.
    const { apps, most } = mostAtOnce(sb);
    expect(apps.size).toBe(n);
    expect(most).toBeLessThanOrEqual(bound);
  }, 240_000);

  it("counts an app's start timeout from its start, not from its wait in the queue", async () => {
    // One start at a time, each app listening after 500 ms, timeouts.start 3 s: the last of
    // the 12 waits far longer than 3 s in the queue and must still be ready.
    const n = 12;
    const r = await deploy(sb, [fixture("scale/fanout.ts")], {
      FANOUT_APPS: String(n),
      FANOUT_DELAY_MS: "500",
      FANOUT_START_TIMEOUT: "3",
      EVENTS_FILE: eventsFile(sb),
      CARAVAN_START_CONCURRENCY: "1",
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.deployments.filter((d) => d.status !== "ready")).toEqual([]);
    expect(mostAtOnce(sb).most).toBe(1);
    expect(await startStats(sb)).toMatchObject({ limit: 1, peak: 1, total: n });
  }, 240_000);
});
