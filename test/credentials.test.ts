/**
 * Credentials (issue 16): the home's admin token goes only to the control plane this home
 * started and recorded; a control plane named by a project's config gets only the token given
 * for it (CARAVAN_CONTROL_PLANE_TOKEN). A token file removed or replaced under a running
 * control plane is reported at once, and `server stop` still stops it.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { eventually, useSandbox } from "./helpers.ts";
import { deploy, fixture, isRunning } from "./support.ts";

const sb = useSandbox();

/** A stand-in for someone else's control plane: records the Authorization header of every request. */
let remote: Server | undefined;
afterEach(async () => {
  await new Promise((r) => (remote ? remote.close(r) : r(undefined)));
  remote = undefined;
});
async function fakeControlPlane(): Promise<{ url: string; seen: (string | undefined)[] }> {
  const seen: (string | undefined)[] = [];
  remote = createServer((req, res) => {
    seen.push(req.headers.authorization);
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ environments: [] }));
  });
  await new Promise<void>((r) => remote!.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(remote.address() as { port: number }).port}`, seen };
}

describe("a controlPlane in a project's config", () => {
  const project = fixture("credentials");

  it("never receives this home's token; it gets the one given for it, and plan contacts nothing", async () => {
    const { url, seen } = await fakeControlPlane();
    const env = { TEST_CONTROL_PLANE: url };
    // plan needs no control plane: it starts none and asks none.
    const plan = await sb.run(["plan", join(project, "app.ts"), "--json"], { env });
    expect(plan.code, plan.stderr).toBe(0);
    expect(seen).toEqual([]);
    expect(existsSync(join(sb.home, "daemon.json"))).toBe(false);

    // This home has a control plane (and so a token) of its own.
    expect((await sb.run(["server", "start"])).code).toBe(0);
    const admin = readFileSync(join(sb.home, "token"), "utf8").trim();

    const refused = await sb.run(["status"], { cwd: project, env });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`controlPlane ${url}`);
    expect(refused.stderr).toContain("caravan.config.ts");
    expect(refused.stderr).toContain("CARAVAN_CONTROL_PLANE_TOKEN");
    const deployRefused = await sb.run(["deploy", join(project, "app.ts")], { env });
    expect(deployRefused.code).toBe(1);
    expect(seen).toEqual([]);

    const given = await sb.run(["status"], {
      cwd: project,
      env: { ...env, CARAVAN_CONTROL_PLANE_TOKEN: "theirs" },
    });
    expect(given.code, given.stderr).toBe(0);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((h) => h === "Bearer theirs")).toBe(true);
    expect(seen.some((h) => h?.includes(admin))).toBe(false);
  });

  it("naming the control plane this home started uses the home's token", async () => {
    const started = await sb.run(["server", "start", "--json"]);
    const { url } = JSON.parse(started.stdout) as { url: string };
    const r = await sb.run(["status", "--json"], {
      cwd: project,
      env: { TEST_CONTROL_PLANE: url },
    });
    expect(r.code, r.stderr).toBe(0);
  });
});

describe("the token file removed or replaced while the control plane runs", () => {
  it("commands say what happened and how to recover; server stop stops it and its apps", async () => {
    const d = await deploy(sb, [fixture("readiness/tcp.ts")]);
    expect(d.code, d.stderr).toBe(0);
    const info = JSON.parse(readFileSync(join(sb.home, "daemon.json"), "utf8")) as { pid: number };
    const status = JSON.parse((await sb.run(["status", "--json"])).stdout) as {
      environments: { pids: number[] }[];
    };
    const appPids = status.environments.flatMap((e) => e.pids);
    expect(appPids.length).toBe(1);

    rmSync(join(sb.home, "token"));
    const removed = await sb.run(["status"]);
    expect(removed.code).toBe(1);
    expect(removed.stderr).toContain(`(pid ${info.pid}`);
    expect(removed.stderr).toContain("token was removed since it started");
    expect(removed.stderr).toContain("caravan server stop");
    // Nothing replaced it behind the user's back.
    expect(existsSync(join(sb.home, "token"))).toBe(false);

    writeFileSync(join(sb.home, "token"), "f".repeat(64), { mode: 0o600 });
    const replaced = await sb.run(["status"]);
    expect(replaced.code).toBe(1);
    expect(replaced.stderr).toContain("token was replaced since it started");
    const serverStatus = await sb.run(["server", "status"]);
    expect(serverStatus.code).toBe(1);
    expect(serverStatus.stderr).toContain("token was replaced");

    const stop = await sb.run(["server", "stop"]);
    expect(stop.code, stop.stderr).toBe(0);
    expect(stop.stderr).toContain("control plane stopped");
    expect(isRunning(info.pid)).toBe(false);
    await eventually(() => appPids.every((p) => !isRunning(p)));

    // The next command starts a control plane with the current token.
    const after = await sb.run(["status"]);
    expect(after.code, after.stderr).toBe(0);
  });
});
