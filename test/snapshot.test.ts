/**
 * DESIGN §3.8: a deploy snapshots the code. Editing a file afterwards changes nothing (not
 * even when the app is restarted after a crash) until the next deploy, which restarts only
 * the app whose code changed.
 */
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, rmSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { eventually, useSandbox } from "./helpers.ts";
import { appProcesses, deploy, fixture, get, isRunning, pidsOf, status } from "./support.ts";

describe("code snapshots", () => {
  const sb = useSandbox();
  // A copy of the fixture the test can edit. Inside the repo (test/fixtures/snapshot/.tmp/,
  // git-ignored), so that "caravan" and "fastify" resolve as they do for the fixture itself.
  let dir = "";
  beforeEach(() => {
    dir = join(fixture("snapshot/.tmp"), randomBytes(6).toString("hex"));
    mkdirSync(dir, { recursive: true });
    for (const f of ["main.ts", "a.ts", "b.ts"])
      copyFileSync(fixture(`snapshot/${f}`), join(dir, f));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  afterAll(() => {
    try {
      rmdirSync(fixture("snapshot/.tmp")); // only when empty: another run may be using it
    } catch {
      /* not empty, or already gone */
    }
  });

  it("keeps serving the deployed code after an edit and a crash; the next deploy restarts only what changed", async () => {
    const main = join(dir, "main.ts");
    const first = await deploy(sb, [main]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.by["snap-a"]!.status).toBe("ready");
    expect(first.by["snap-b"]!.status).toBe("ready");
    const aUrl = first.by["snap-a"]!.endpoint!;
    const bUrl = first.by["snap-b"]!.endpoint!;
    expect(await get(`${aUrl}/`)).toEqual({ status: 200, body: "a-v1" });
    expect(await get(`${bUrl}/`)).toEqual({ status: 200, body: "b-v1" });
    const before = pidsOf(await status(sb));
    expect(before["snap-a"]).toHaveLength(1);
    expect(before["snap-b"]).toHaveLength(1);

    // Edit a.ts on disk, then crash snap-a: the supervisor restarts it from the snapshot.
    const aFile = join(dir, "a.ts");
    const edited = readFileSync(aFile, "utf8").replace('"a-v1"', '"a-v2"');
    expect(edited).toContain('"a-v2"');
    writeFileSync(aFile, edited);
    const oldA = before["snap-a"]![0]!;
    process.kill(oldA, "SIGKILL");
    const restarted = await eventually(async () => {
      const s = (await status(sb))["snap-a"]!;
      return s.state === "ready" && s.pids.length === 1 && s.pids[0] !== oldA ? s : undefined;
    });
    expect(restarted.restarts).toBeGreaterThanOrEqual(1);
    expect(isRunning(oldA)).toBe(false);
    expect(await get(`${aUrl}/pid`)).toEqual({ status: 200, body: String(restarted.pids[0]) });
    // Still the deployed (old) code, not the edited file.
    expect(await get(`${aUrl}/`)).toEqual({ status: 200, body: "a-v1" });
    expect(restarted.revision).toBe(first.by["snap-a"]!.revision);

    // The next deploy picks the edit up: snap-a restarts with it, snap-b is left alone.
    const second = await deploy(sb, [main]);
    expect(second.code, second.stderr).toBe(0);
    expect(second.by["snap-a"]!.status).toBe("ready");
    expect(second.by["snap-b"]!.status).toBe("unchanged");
    expect(second.by["snap-a"]!.revision).not.toBe(first.by["snap-a"]!.revision);
    expect(second.by["snap-b"]!.revision).toBe(first.by["snap-b"]!.revision);
    expect(second.by["snap-a"]!.endpoint).toBe(aUrl);
    expect(second.by["snap-b"]!.endpoint).toBe(bUrl);
    expect(await get(`${aUrl}/`)).toEqual({ status: 200, body: "a-v2" });
    expect(await get(`${bUrl}/`)).toEqual({ status: 200, body: "b-v1" });
    const after = pidsOf(await status(sb));
    expect(after["snap-b"]).toEqual(before["snap-b"]);
    expect(after["snap-a"]![0]).not.toBe(restarted.pids[0]);
    expect(appProcesses(sb, "snap-a")).toEqual(after["snap-a"]);
    expect(appProcesses(sb, "snap-b")).toEqual(after["snap-b"]);
  });

  it("runs an app declared by a module of its own from that module's bundle: no other app's module is evaluated in its process", async () => {
    const result = await deploy(sb, [fixture("own-bundles/main.ts")]);
    expect(result.code, result.stderr).toBe(0);
    const modules = async (app: string) => {
      const res = await get(`${result.by[app]!.endpoint}/`);
      expect(res.status, res.body).toBe(200);
      return JSON.parse(res.body) as string[];
    };
    expect(await modules("own-a")).toEqual(["a"]);
    expect(await modules("own-b")).toEqual(["b"]);
    // A dependency's module is imported by its dependent's, so it is in the dependent's bundle.
    expect(await modules("own-root")).toEqual(["a", "root"]);
    // Declared by the entry file, or by a factory another module calls: the whole bundle.
    const whole = ["factory", "a", "b", "root", "hooked", "main"];
    expect(await modules("own-here")).toEqual(whole);
    expect(await modules("own-made")).toEqual(whole);
    // Declared by a module of its own, but given a hook by another: that one is needed too.
    expect(await modules("own-hooked")).toEqual([...whole, "main's hook"]);
  });
});
