/**
 * The day-to-day commands against the local control plane: stop/delete (dependents first,
 * refused while dependents run unless --cascade), logs --tail, status --json, and scopes
 * (the same app name in two domains is two apps).
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
  json,
  pidsOf,
  status,
  statuses,
  timeOf,
  type StatusJSON,
} from "./support.ts";

const GRAPH = fixture("commands/graph.ts");

describe("stop, delete, logs, status", () => {
  const sb = useSandbox();

  it("refuses to stop an app others depend on, naming them; --cascade stops dependents first", async () => {
    const r = await deploy(sb, [GRAPH], { EVENTS_FILE: eventsFile(sb) });
    expect(r.code, r.stderr).toBe(0);
    const before = pidsOf(await status(sb));

    const refused = await sb.run(["stop", "db"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("[DEPENDENTS_EXIST]");
    expect(refused.stderr).toMatch(/cannot stop db: api, web depend on it/);
    expect(refused.stderr).toContain("--cascade");
    // Nothing was stopped.
    expect(pidsOf(await status(sb))).toEqual(before);
    expect(events(sb)).toEqual([]);

    const cascade = await sb.run(["stop", "db", "--cascade"]);
    expect(cascade.code, cascade.stderr).toBe(0);
    expect(cascade.stderr.trim().split("\n")).toEqual(["stopped web", "stopped api", "stopped db"]);
    const ev = events(sb);
    expect(timeOf(ev, "web", "closed")).toBeLessThan(timeOf(ev, "api", "closed"));
    expect(timeOf(ev, "api", "closed")).toBeLessThan(timeOf(ev, "db", "closed"));

    const after = await status(sb);
    for (const name of ["db", "api", "web"]) {
      expect(after[name], name).toMatchObject({ state: "stopped", pids: [] });
      expect(appProcesses(sb, name), name).toEqual([]);
    }
    // The independent app was not touched.
    expect(after.lone).toMatchObject({ state: "ready", pids: before.lone });

    // A deploy starts the stopped apps again, on their endpoints.
    const again = await deploy(sb, [GRAPH], { EVENTS_FILE: eventsFile(sb) });
    expect(again.code, again.stderr).toBe(0);
    expect(statuses(again.deployments)).toEqual({
      db: "ready",
      api: "ready",
      web: "ready",
      lone: "unchanged",
    });
    expect(again.by.web!.endpoint).toBe(r.by.web!.endpoint);
    expect(await get(`${r.by.web!.endpoint}/`)).toEqual({
      status: 200,
      body: "web in development",
    });
  });

  it("shows pids and instances in status --json, the last lines with logs --tail, and forgets deleted apps", async () => {
    const r = await deploy(sb, [GRAPH]);
    expect(r.code, r.stderr).toBe(0);

    const st = await status(sb);
    expect(Object.keys(st).sort()).toEqual(["api", "db", "lone", "web"]);
    for (const [name, s] of Object.entries(st)) {
      expect(s, name).toMatchObject({
        kind: "app",
        state: "ready",
        restarts: 0,
        revision: r.by[name]!.revision,
        endpoint: r.by[name]!.endpoint,
        internalEndpoint: r.by[name]!.internalEndpoint,
      });
      expect(s.pids, name).toHaveLength(1);
      expect(appProcesses(sb, name), name).toEqual(s.pids);
      expect(s.instances, name).toEqual([{ id: `pid-${s.pids[0]}`, ready: true, pid: s.pids[0] }]);
    }

    const tail = await sb.run(["logs", "lone", "--tail", "3"]);
    expect(tail.code, tail.stderr).toBe(0);
    expect(tail.stdout).toBe("lone line 10\nlone line 11\nlone line 12\n");
    const all = await sb.run(["logs", "lone"]);
    const lines = all.stdout.trimEnd().split("\n");
    expect(lines.slice(-12)).toEqual(Array.from({ length: 12 }, (_, i) => `lone line ${i + 1}`));
    // Before them, only caravan's own lines (loading, starting on its port).
    expect(lines.slice(0, -12).every((l) => l.startsWith("[caravan] "))).toBe(true);
    expect(lines).toContainEqual(
      expect.stringMatching(/^\[caravan\] \S+ starting lone on port \d+$/),
    );

    const refused = await sb.run(["delete", "api"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/cannot delete api: web depends on it/);

    const deleted = await sb.run(["delete", "web", "--json"]);
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(json(deleted)).toEqual({ deleted: ["web"] });
    const left = await status(sb);
    expect(Object.keys(left).sort()).toEqual(["api", "db", "lone"]);
    expect(appProcesses(sb, "web")).toEqual([]);
    expect(await get(`${r.by.web!.endpoint}/`)).toMatchObject({ status: 0 });

    const gone = await sb.run(["logs", "web"]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain("[NOT_DEPLOYED]");
  });

  it("keeps the same app name in two domains as two apps with two endpoints", async () => {
    const dev = await deploy(sb, [GRAPH, "lone"]);
    expect(dev.code, dev.stderr).toBe(0);
    const prod = await deploy(sb, [GRAPH, "lone", "--domain", "production"]);
    expect(prod.code, prod.stderr).toBe(0);
    // Not "unchanged": production had no such app yet.
    expect(prod.deployments.map((d) => [d.name, d.status])).toEqual([["lone", "ready"]]);
    expect(prod.by.lone!.endpoint).not.toBe(dev.by.lone!.endpoint);

    expect(await get(`${dev.by.lone!.endpoint}/`)).toEqual({
      status: 200,
      body: "lone in development",
    });
    expect(await get(`${prod.by.lone!.endpoint}/`)).toEqual({
      status: 200,
      body: "lone in production",
    });
    expect(appProcesses(sb, "lone")).toHaveLength(2);

    expect((await status(sb)).lone!.endpoint).toBe(dev.by.lone!.endpoint);
    expect((await status(sb, ["--domain", "production"])).lone!.endpoint).toBe(
      prod.by.lone!.endpoint,
    );
    const everywhere = await sb.run(["status", "--all", "--json"]);
    const envs = json<{ environments: StatusJSON[] }>(everywhere).environments;
    expect(envs.map((e) => [e.domain, e.name, e.endpoint])).toEqual([
      ["development", "lone", dev.by.lone!.endpoint],
      ["production", "lone", prod.by.lone!.endpoint],
    ]);
    const human = await sb.run(["status", "--all"]);
    expect(human.stdout).toContain("default/development/lone");
    expect(human.stdout).toContain("default/production/lone");

    // Stopping one leaves the other running.
    const stopped = await sb.run(["stop", "lone", "--domain", "production"]);
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(await get(`${dev.by.lone!.endpoint}/`)).toMatchObject({ status: 200 });
    expect(appProcesses(sb, "lone")).toEqual((await status(sb)).lone!.pids);
  });
});
