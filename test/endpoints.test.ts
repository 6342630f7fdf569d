/**
 * DESIGN §3.6: an AppEndpoint input is the app's internal endpoint by default, its public one
 * with `public: true`. DESIGN §3.9: `delete --cascade` and `server stop` tear a dependency
 * chain down dependents first.
 */
import { describe, expect, it } from "vitest";
import { eventually, useSandbox } from "./helpers.ts";
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
  timeOf,
} from "./support.ts";

const PAIR = fixture("endpoints/pair.ts");
const GRAPH = fixture("commands/graph.ts");

describe("AppEndpoint inputs", () => {
  const sb = useSandbox();

  it("hand over the public endpoint with public: true and the internal one by default", async () => {
    const r = await deploy(sb, [PAIR]);
    expect(r.code, r.stderr).toBe(0);
    const backend = r.by.backend!;
    expect(backend.endpoint).toBeTruthy();
    expect(backend.internalEndpoint).toBeTruthy();
    expect(backend.endpoint).not.toBe(backend.internalEndpoint);

    const res = await get(`${r.by.frontend!.endpoint}/inputs`);
    expect(res.status, res.body).toBe(200);
    expect(JSON.parse(res.body)).toEqual({
      public: backend.endpoint,
      internal: backend.internalEndpoint,
    });
    // Both reach the backend.
    expect(await get(`${backend.endpoint}/`)).toEqual({ status: 200, body: "backend" });
  });
});

describe("teardown order", () => {
  const sb = useSandbox();

  it("delete <dependency> --cascade removes its dependents first", async () => {
    const r = await deploy(sb, [GRAPH], { EVENTS_FILE: eventsFile(sb) });
    expect(r.code, r.stderr).toBe(0);
    const before = pidsOf(await status(sb));

    const deleted = await sb.run(["delete", "db", "--cascade", "--json"]);
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(json<{ deleted: string[] }>(deleted).deleted).toEqual(["web", "api", "db"]);
    const ev = events(sb);
    expect(timeOf(ev, "web", "closed")).toBeLessThan(timeOf(ev, "api", "closed"));
    expect(timeOf(ev, "api", "closed")).toBeLessThan(timeOf(ev, "db", "closed"));
    expect(ev.some((e) => e.app === "lone")).toBe(false);

    const left = await status(sb);
    expect(Object.keys(left)).toEqual(["lone"]);
    expect(left.lone).toMatchObject({ state: "ready", pids: before.lone });
    for (const name of ["db", "api", "web"]) expect(appProcesses(sb, name), name).toEqual([]);
  });

  it("server stop stops every app, dependents first", async () => {
    const r = await deploy(sb, [GRAPH], { EVENTS_FILE: eventsFile(sb) });
    expect(r.code, r.stderr).toBe(0);

    const stopped = await sb.run(["server", "stop"]);
    expect(stopped.code, stopped.stderr).toBe(0);
    const ev = events(sb);
    expect(timeOf(ev, "web", "closed")).toBeLessThan(timeOf(ev, "api", "closed"));
    expect(timeOf(ev, "api", "closed")).toBeLessThan(timeOf(ev, "db", "closed"));
    timeOf(ev, "lone", "closed");
    // Nothing of this home is left: neither the daemon nor an app.
    await eventually(() => sb.processes().length === 0);
  });
});
