/**
 * Issue 16, races and state: operations on one graph do not interleave into a state neither
 * asked for; a second file does not silently take over an app of the same name; processes
 * a lost state.db no longer records are found and stopped.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { eventually, useSandbox } from "./helpers.ts";
import {
  appProcesses,
  deploy,
  fixture,
  get,
  isGatewayProcess,
  isRunning,
  json,
  status,
  type DeploymentJSON,
} from "./support.ts";

const GRAPH = fixture("races/graph.ts");
const OWNER_A = fixture("races/owner-a.ts");
const OWNER_B = fixture("races/owner-b.ts");

describe("a delete during a deploy of the same graph", () => {
  const sb = useSandbox();

  it("fails the deploy naming the deleted dependency, and never leaves its dependent running against it", async () => {
    const dir = join(sb.home, "race");
    mkdirSync(dir);
    const env = { RACE_DIR: dir };
    const go = join(dir, "go");
    writeFileSync(go, "");
    const first = await deploy(sb, [GRAPH], env);
    expect(first.code, first.stderr).toBe(0);
    const starts = () => readdirSync(dir).filter((f) => f.startsWith("base-")).length;
    expect(starts()).toBe(1);

    // deploy --force restarts base, which now waits for `go`; top waits for base.
    rmSync(go);
    const forced = sb.run(["deploy", GRAPH, "--force", "--json"], { env });
    await eventually(() => starts() === 2);

    // Meanwhile: delete base and its dependents. top goes at once; base's delete waits for
    // its deploy, which then reports it ready; then the deploy would start top again.
    const deleted = sb.run(["delete", "base", "--cascade"]);
    await eventually(async () => !("top" in (await status(sb))));
    writeFileSync(go, "");

    const [d, del] = await Promise.all([forced, deleted]);
    expect(del.code, del.stderr).toBe(0);
    expect(d.code, d.stderr).toBe(1);
    const by = Object.fromEntries(
      json<{ deployments: DeploymentJSON[] }>(d).deployments.map((x) => [x.name, x]),
    );
    expect(by.top!.status).toBe("failed");
    expect(by.top!.error).toMatch(/its dependency base \((deleted|stopped)\) is no longer running/);
    // base is not reported ready at an endpoint that is gone.
    expect(by.base!.status).toBe("failed");
    expect(by.base!.endpoint).toBeNull();
    expect(by.base!.error).toMatch(/taken down by another command/);
    // Neither is deployed, and nothing of theirs runs.
    expect(await status(sb)).toEqual({});
    // The daemon alone (and the gateway, which stays for the next app).
    await eventually(() => sb.processes().filter((p) => !isGatewayProcess(p)).length === 1);
    expect(existsSync(go)).toBe(true);
  });
});

describe("an app of the same name declared in another file", () => {
  const sb = useSandbox();

  it("is refused, naming the file that owns it, unless the deploy says --replace", async () => {
    const a = await deploy(sb, [OWNER_A]);
    expect(a.code, a.stderr).toBe(0);
    const endpoint = a.by.shared!.endpoint!;
    expect(await get(endpoint)).toEqual({ status: 200, body: "a" });

    const b = await deploy(sb, [OWNER_B]);
    expect(b.code).toBe(1);
    expect(b.by.shared!.status).toBe("failed");
    expect(b.by.shared!.error).toContain(
      `shared in default/development was deployed from ${OWNER_A}`,
    );
    expect(b.by.shared!.error).toContain(`${OWNER_B} declares another shared`);
    expect(b.by.shared!.error).toContain("--replace");
    // Nothing changed: a's shared still serves, and its dependent with it.
    expect(await get(endpoint)).toEqual({ status: 200, body: "a" });
    const s = await status(sb);
    expect(s.shared!.state).toBe("ready");
    expect(s.user!.state).toBe("ready");

    // The same file again is fine.
    const again = await deploy(sb, [OWNER_A]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.by.shared!.status).toBe("unchanged");

    // --replace takes it over; then the first file is the other one.
    const replaced = await deploy(sb, [OWNER_B, "--replace"]);
    expect(replaced.code, replaced.stderr).toBe(0);
    expect(replaced.by.shared!.status).toBe("ready");
    expect(await get(endpoint)).toEqual({ status: 200, body: "b" });
    const back = await deploy(sb, [OWNER_A]);
    expect(back.code).toBe(1);
    expect(back.by.shared!.error).toContain(`was deployed from ${OWNER_B}`);
    expect(back.by.user!.status).toBe("skipped");
  });
});

describe("a control plane that lost its state.db", () => {
  const sb = useSandbox();

  it("stops the processes of its home that no record names, rather than running a duplicate beside them", async () => {
    const first = await deploy(sb, [OWNER_B]);
    expect(first.code, first.stderr).toBe(0);
    const [orphan] = (await status(sb)).shared!.pids;
    expect(orphan).toBeGreaterThan(0);
    const stop = await sb.run(["server", "stop", "--keep-apps"]);
    expect(stop.code, stop.stderr).toBe(0);
    expect(isRunning(orphan!)).toBe(true);
    for (const f of ["state.db", "state.db-wal", "state.db-shm"])
      rmSync(join(sb.home, f), { force: true });

    // The next control plane knows nothing of it: it stops it, says so, and runs one app.
    const again = await deploy(sb, [OWNER_B]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.by.shared!.status).toBe("ready");
    await eventually(() => !isRunning(orphan!));
    const log = readFileSync(join(sb.home, "daemon.log"), "utf8");
    expect(log).toContain(
      `stopping pid ${orphan} (default/development/shared): a process of this home that no record names`,
    );
    const now = (await status(sb)).shared!.pids;
    expect(now).toHaveLength(1);
    expect(appProcesses(sb, "shared")).toEqual(now);
    expect(await get(again.by.shared!.endpoint!)).toEqual({ status: 200, body: "b" });
  });
});
