/**
 * Dependency health (issue 12): while a dependency is not serving, its dependents are shown
 * degraded with the reason (status --json `health`), and an event is recorded; once it
 * serves again they are healthy again.
 */
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { eventually, useSandbox, type Sandbox } from "./helpers.ts";
import { deploy, fixture, isRunning, json } from "./support.ts";

type Health = { state: string; reason?: string };
type Env = { name: string; state: string; pids: number[]; health?: Health };

describe("dependency health", { timeout: 120_000 }, () => {
  const sb = useSandbox();

  it("a dependent is degraded while its dependency crash-loops, and healthy once it serves again", async () => {
    const flag = join(sb.home, "db-down");
    const env = { DB_DOWN: flag };
    const r = await deploy(sb, [fixture("health/graph.ts"), "api"], env);
    expect(r.code, r.stderr).toBe(0);
    const status = async () => {
      const s = await sb.run(["status", "--json"]);
      return Object.fromEntries(
        json<{ environments: Env[] }>(s).environments.map((e) => [e.name, e]),
      );
    };
    expect((await status()).api!.health).toEqual({ state: "healthy" });

    // db dies and cannot start again while the flag is there.
    writeFileSync(flag, "");
    const [pid] = (await status()).db!.pids;
    process.kill(pid!, "SIGKILL");
    const degraded: Env = await eventually(async () => {
      const api = (await status()).api!;
      return api.health?.state === "degraded" ? api : undefined;
    }, 30_000);
    expect(degraded.state).toBe("ready"); // api itself still runs
    expect(degraded.health!.reason).toMatch(/^dependency db is (restarting|failed|starting)/);
    const table = await sb.run(["status"]);
    expect(table.stdout).toMatch(/api\s+app\s+ready \(degraded\)/);
    expect(table.stderr).toContain("api: degraded: dependency db is");

    const db = new Database(join(sb.home, "state.db"), { readonly: true });
    const healthEvents = () =>
      (
        db
          .prepare(
            "SELECT type, message FROM events WHERE name = 'api' AND type IN ('degraded', 'healthy') ORDER BY id",
          )
          .all() as { type: string; message: string }[]
      ).map((e) => e.type);
    try {
      // One event per transition: not one per restart of db (the reason changes), nor again
      // from a control plane that restarts while api is degraded.
      const daemon = json<{ pid: number }>(await sb.run(["server", "status", "--json"]));
      process.kill(daemon.pid, "SIGKILL");
      await eventually(() => !isRunning(daemon.pid));
      expect((await status()).api!.health?.state).toBe("degraded"); // a new daemon derived it
      expect(healthEvents()).toEqual(["degraded"]);

      rmSync(flag);
      await eventually(async () => (await status()).api!.health?.state === "healthy", 60_000);

      // The control planes recorded both transitions of api, once each, in order.
      await eventually(() => healthEvents().join(",") === "degraded,healthy", 10_000);
    } finally {
      db.close();
    }
  });

  it("a soft dependency (wait: false) that fails skips nothing: its dependent serves, degraded", async () => {
    const r = await deploy(sb, [fixture("health/graph.ts"), "web"]);
    expect(r.code).toBe(1); // cache failed
    expect(r.by.cache!.status).toBe("failed");
    expect(r.by.web!.status).toBe("ready");
    expect(r.by.api!.status).toBe("ready");
    const s = json<{ environments: Env[] }>(await sb.run(["status", "--json"])).environments;
    expect(s.find((e) => e.name === "web")!.health).toEqual({
      state: "degraded",
      reason: "dependency cache is failed: cache exited with code 1 before it was ready",
    });
  });

  it("a replica that fails its liveness check that many times in a row is restarted", async () => {
    const flag = join(sb.home, "sick");
    const r = await deploy(sb, [fixture("health/graph.ts"), "sick"], { SICK: flag });
    expect(r.code, r.stderr).toBe(0);
    const sick = async () =>
      json<{ environments: (Env & { restarts: number })[] }>(
        await sb.run(["status", "--json"]),
      ).environments.find((e) => e.name === "sick")!;
    const before = await sick();
    writeFileSync(flag, "");
    const after = await eventually(async () => {
      const now = await sick();
      return now.restarts > before.restarts && now.pids.length > 0 && now.pids[0] !== before.pids[0]
        ? now
        : undefined;
    }, 30_000);
    rmSync(flag);
    expect(after.state).not.toBe("failed");
    const db = new Database(join(sb.home, "state.db"), { readonly: true });
    try {
      const messages = (
        db
          .prepare("SELECT message FROM events WHERE name = 'sick' AND type = 'liveness-failed'")
          .all() as { message: string }[]
      ).map((e) => e.message);
      expect(messages[0]).toMatch(/GET \/alive failed 2 times in a row; restarting it/);
    } finally {
      db.close();
    }
  });

  it("a new revision inherits no crash backoff from the one it replaces", async () => {
    const down = join(sb.home, "phoenix-down");
    const file = fixture("health/graph.ts");
    expect((await deploy(sb, [file, "phoenix"], { PHOENIX_DOWN: down })).code).toBe(0);
    const phoenix = () => phoenixStatus(sb);
    // Revision 1 crash-loops until its backoff is long.
    await crashLoop(sb, down);
    rmSync(down);
    // Revision 2 starts; when it crashes, its first restart waits the first backoff.
    const second = await deploy(sb, [file, "phoenix"], { PHOENIX_DOWN: down, PHOENIX_REV: "2" });
    expect(second.code, second.stderr).toBe(0);
    writeFileSync(down, "");
    process.kill((await phoenix()).pids[0]!, "SIGKILL");
    expect(await firstRestartAfterDeploy(sb.home)).toBe("in 250 ms");
    rmSync(down);
  });

  it("a stopped app starts again without the crash backoff it had", async () => {
    const down = join(sb.home, "phoenix-down");
    const file = fixture("health/graph.ts");
    const env = { PHOENIX_DOWN: down };
    expect((await deploy(sb, [file, "phoenix"], env)).code).toBe(0);
    const phoenix = () => phoenixStatus(sb);
    await crashLoop(sb, down);
    expect((await sb.run(["stop", "phoenix"])).code).toBe(0);
    rmSync(down);
    // The same revision again: only its record of the crash loop was dropped by the stop.
    const again = await deploy(sb, [file, "phoenix"], env);
    expect(again.code, again.stderr).toBe(0);
    writeFileSync(down, "");
    process.kill((await phoenix()).pids[0]!, "SIGKILL");
    expect(await firstRestartAfterDeploy(sb.home)).toBe("in 250 ms");
    rmSync(down);
  });
});

/** The delay the control plane chose for phoenix's first restart after its last deploy (its events). */
async function firstRestartAfterDeploy(home: string): Promise<string> {
  const db = new Database(join(home, "state.db"), { readonly: true });
  try {
    const delays = () => {
      const events = db
        .prepare("SELECT type, message FROM events WHERE name = 'phoenix' ORDER BY id")
        .all() as { type: string; message: string }[];
      const deployed = events.findLastIndex((e) => e.type === "deploy");
      return events.slice(deployed).filter((e) => e.type === "restart-scheduled");
    };
    const [first] = await eventually(() => (delays().length ? delays() : undefined), 20_000);
    return first!.message;
  } finally {
    db.close();
  }
}

/** phoenix as `status --json` shows it. */
async function phoenixStatus(sb: Sandbox) {
  return json<{ environments: (Env & { error?: string })[] }>(
    await sb.run(["status", "--json"]),
  ).environments.find((e) => e.name === "phoenix")!;
}

/** Kills phoenix with `down` present (its restarts then fail) until its crash backoff is long. */
async function crashLoop(sb: Sandbox, down: string): Promise<void> {
  writeFileSync(down, "");
  process.kill((await phoenixStatus(sb)).pids[0]!, "SIGKILL");
  await eventually(
    async () =>
      /restarting in (4000|8000|16000|30000) ms/.test((await phoenixStatus(sb)).error ?? ""),
    60_000,
  );
}
