/**
 * The local control plane keeps apps running: a crashed app is restarted, and a control plane
 * that dies (SIGKILL) loses neither apps nor state: the next one adopts the running processes.
 */
import { readFileSync, rmSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { eventually, type Sandbox, useSandbox } from "./helpers.ts";
import { appProcesses, deploy, fixture, get, isRunning, json, status } from "./support.ts";

const APPS = fixture("supervision/apps.ts");

async function serverStatus(sb: Sandbox) {
  const r = await sb.run(["server", "status", "--json"]);
  expect(r.code, r.stderr).toBe(0);
  return json<{ running: boolean; pid: number | null; url: string | null }>(r);
}

/** Control plane processes (`caravan server run`) of this sandbox. */
function daemonProcesses(sb: Sandbox): number[] {
  return sb.processes().filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes("run");
    } catch {
      return false;
    }
  });
}

describe("supervision", () => {
  const sb = useSandbox();

  it("restarts a crashed app on its endpoint and counts the restart", async () => {
    const r = await deploy(sb, [APPS, "sturdy"]);
    expect(r.code, r.stderr).toBe(0);
    const endpoint = r.by.sturdy!.endpoint!;
    const before = (await status(sb)).sturdy!;
    expect(before).toMatchObject({ state: "ready", restarts: 0 });
    const [pid] = before.pids;
    expect(await get(`${endpoint}/pid`)).toEqual({ status: 200, body: String(pid) });

    process.kill(pid!, "SIGKILL");

    const after = await eventually(async () => {
      const s = (await status(sb)).sturdy!;
      return s.state === "ready" && s.pids.length === 1 && s.pids[0] !== pid ? s : undefined;
    });
    expect(after.restarts).toBe(1);
    expect(after.endpoint).toBe(endpoint);
    expect(await get(`${endpoint}/pid`)).toEqual({ status: 200, body: String(after.pids[0]) });
    expect(appProcesses(sb, "sturdy")).toEqual(after.pids);
  });

  it("stops, with its apps and its gateway, when its home is removed under it", async () => {
    const r = await deploy(sb, [APPS]);
    expect(r.code, r.stderr).toBe(0);
    const before = await status(sb);
    const daemon = await serverStatus(sb);
    const apps = ["sturdy", "leaning"].flatMap((name) => before[name]!.pids);
    expect(apps.length).toBeGreaterThan(0);
    rmSync(sb.home, { recursive: true, force: true });
    // Nothing can reach them any more: the control plane stops them, and itself.
    await eventually(() => sb.processes().length === 0, 30_000);
    for (const pid of [daemon.pid!, ...apps]) expect(isRunning(pid)).toBe(false);
  });

  it("loses no app and no state when the control plane is SIGKILLed; the next one adopts them", async () => {
    const r = await deploy(sb, [APPS]);
    expect(r.code, r.stderr).toBe(0);
    const before = await status(sb);
    const daemon = await serverStatus(sb);
    expect(daemon.running).toBe(true);

    process.kill(daemon.pid!, "SIGKILL");
    await eventually(() => !isRunning(daemon.pid!));

    // The apps keep running with no control plane (their endpoints, on the gateway inside
    // the control plane, come back with the next one).
    for (const name of ["sturdy", "leaning"])
      for (const pid of before[name]!.pids) expect(isRunning(pid), name).toBe(true);

    // The next commands (three at once) start one new control plane, which adopts the same
    // processes.
    const [after] = await Promise.all([status(sb), status(sb), status(sb)]);
    const next = await serverStatus(sb);
    expect(next.running).toBe(true);
    expect(next.pid).not.toBe(daemon.pid);
    expect(daemonProcesses(sb)).toEqual([next.pid]);
    for (const name of ["sturdy", "leaning"]) {
      expect(after![name], name).toMatchObject({
        state: "ready",
        restarts: 0,
        pids: before[name]!.pids,
        revision: before[name]!.revision,
        endpoint: before[name]!.endpoint,
        internalEndpoint: before[name]!.internalEndpoint,
      });
      expect(appProcesses(sb, name), name).toEqual(before[name]!.pids);
    }
    // The same processes answer on the same endpoints.
    expect(await get(`${r.by.sturdy!.endpoint}/pid`)).toEqual({
      status: 200,
      body: String(before.sturdy!.pids[0]),
    });
    expect(await get(`${r.by.leaning!.endpoint}/via`)).toEqual({
      status: 200,
      body: String(before.sturdy!.pids[0]),
    });

    // State is intact: a redeploy finds everything unchanged.
    const again = await deploy(sb, [APPS]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.deployments.map((d) => d.status)).toEqual(["unchanged", "unchanged"]);

    // An adopted app is still supervised: killed, it is restarted.
    process.kill(before.sturdy!.pids[0]!, "SIGKILL");
    const restarted = await eventually(async () => {
      const s = (await status(sb)).sturdy!;
      return s.state === "ready" && s.pids.length === 1 && s.pids[0] !== before.sturdy!.pids[0]
        ? s
        : undefined;
    });
    expect(restarted.restarts).toBe(1);
    expect(await get(`${r.by.sturdy!.endpoint}/pid`)).toEqual({
      status: 200,
      body: String(restarted.pids[0]),
    });
    expect(appProcesses(sb, "sturdy")).toEqual(restarted.pids);
  });

  it("restarts a crashed command app whose wrapper left its server running, on the same port", async () => {
    // `sh -c "node server"`: caravan starts sh; SIGKILL on sh leaves the server behind,
    // holding the port, unless the control plane cleans up the app's process group.
    const r = await deploy(sb, [fixture("supervision/wrapped.ts")]);
    expect(r.code, r.stderr).toBe(0);
    const endpoint = r.by.wrapped!.endpoint!;
    const [shell] = (await status(sb)).wrapped!.pids;
    const [first] = appProcesses(sb, "wrapped").filter((pid) => pid !== shell);
    expect(first).toBeDefined();

    process.kill(shell!, "SIGKILL");

    const after = await eventually(async () => {
      const s = (await status(sb)).wrapped!;
      return s.state === "ready" && s.pids.length === 1 && s.pids[0] !== shell ? s : undefined;
    });
    expect(after.restarts).toBe(1);
    // The old server is gone; a new shell and its server serve the same endpoint.
    expect(isRunning(first!)).toBe(false);
    expect(appProcesses(sb, "wrapped")).toHaveLength(2);
    expect(await get(`${endpoint}/`)).toEqual({ status: 200, body: "wrapped ok" });
    // And it stays up: no crash loop.
    const settled = await status(sb);
    expect(settled.wrapped).toMatchObject({ state: "ready", restarts: 1, pids: after.pids });
  });
});
