/**
 * Issue 18: jobs (JobEnvironment) — one-shot work that must succeed before its dependents
 * start, run again only when its revision changes.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { useSandbox } from "./helpers.ts";
import { deploy, fixture, get, json, status, statuses } from "./support.ts";

const FILE = fixture("jobs/migrate.ts");

describe("jobs", { timeout: 120_000 }, () => {
  const sb = useSandbox();
  let dir = "";
  let marker = "";
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "caravan-jobs-"));
    marker = join(dir, "marker");
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const lines = () => (existsSync(marker) ? readFileSync(marker, "utf8").trim().split("\n") : []);

  it("a migration runs before the app that needs it, once per revision; --force and job rerun run it anyway", async () => {
    const first = await deploy(sb, [FILE], { MARKER: marker });
    expect(first.code, first.stderr).toBe(0);
    expect(statuses(first.deployments)).toMatchObject({
      migrate: "ready",
      seed: "ready",
      api: "ready",
    });
    // The app read the marker when it started: the migration had run, and so had the seed.
    expect((await get(first.by.api!.endpoint!)).body).toBe("migrated v1\n");
    expect(readFileSync(`${marker}.seed`, "utf8")).toBe("seeded\n");

    const again = await deploy(sb, [FILE], { MARKER: marker });
    expect(again.code, again.stderr).toBe(0);
    expect(statuses(again.deployments)).toMatchObject({ migrate: "unchanged", seed: "unchanged" });
    expect(lines()).toEqual(["migrated v1"]);

    // A changed argument is a new revision: it runs again, and the app restarts after it.
    const changed = await deploy(sb, [FILE], { MARKER: marker, MIGRATION_ARG: "v2" });
    expect(changed.code, changed.stderr).toBe(0);
    expect(changed.by.migrate!.status).toBe("ready");
    expect(lines()).toEqual(["migrated v1", "migrated v2"]);
    expect((await get(changed.by.api!.endpoint!)).body).toBe("migrated v1\nmigrated v2\n");

    const rerun = await sb.run(["job", "rerun", "migrate", "--json"]);
    expect(rerun.code, rerun.stderr).toBe(0);
    expect(lines()).toHaveLength(3);
    const forced = await deploy(sb, [FILE, "migrate", "--force"], {
      MARKER: marker,
      MIGRATION_ARG: "v2",
    });
    expect(forced.code, forced.stderr).toBe(0);
    expect(lines()).toHaveLength(4);

    // status lists its runs (newest first) with exit codes; logs has what it printed.
    const st = await status(sb);
    expect(st.migrate).toMatchObject({ kind: "job", state: "ready" });
    const runs = (st.migrate as unknown as { jobRuns: { status: string; exitCode: number }[] })
      .jobRuns;
    expect(runs.length).toBeGreaterThanOrEqual(4);
    expect(runs.every((r) => r.status === "succeeded" && r.exitCode === 0)).toBe(true);
    const table = await sb.run(["status"]);
    expect(table.stdout).toMatch(/migrate\s+job\s+ready.*succeeded \(exit 0/);
    const logs = await sb.run(["logs", "migrate"]);
    expect(logs.stdout).toContain("migrate exited with code 0");
    const wrong = await sb.run(["job", "rerun", "api"]);
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toContain("api is an app, not a job");
  });

  it("a failing job skips its dependents with its log tail; independents finish", async () => {
    const r = await deploy(sb, [FILE], { MARKER: marker, FAIL_MIGRATE: "1" });
    expect(r.code).not.toBe(0);
    expect(statuses(r.deployments)).toMatchObject({
      migrate: "failed",
      seed: "skipped",
      api: "skipped",
      other: "ready",
      db: "ready",
      check: "ready",
    });
    expect(r.by.migrate!.error).toContain("exited with code 3");
    expect(r.by.migrate!.error).toContain("migration 7 failed: column exists");
    const st = await status(sb);
    expect(st.migrate!.state).toBe("failed");
    expect(st.api).toBeUndefined();
  });

  it("a failed attempt is retried (retries); an attempt past timeouts.run is stopped and fails its dependents", async () => {
    const counter = join(dir, "counter");
    const r = await deploy(sb, [fixture("jobs/flaky.ts")], { COUNTER: counter });
    expect(r.code).not.toBe(0);
    expect(statuses(r.deployments)).toEqual({
      flaky: "ready",
      hangs: "failed",
      "after-hangs": "skipped",
    });
    expect(readFileSync(counter, "utf8")).toBe("2");
    expect(r.by.hangs!.error).toContain("ran longer than 1 s (timeouts.run)");
    const st = await status(sb);
    const runs = (st.flaky as unknown as { jobRuns: { attempt: number; status: string }[] })
      .jobRuns;
    expect(runs.map((x) => [x.attempt, x.status])).toEqual([
      [2, "succeeded"],
      [1, "failed"],
    ]);
    // Nothing of the stopped attempt is left running (the sandbox's clean-up checks too).
    expect(st.hangs!.pids).toEqual([]);
  });

  it("a job that depends on an app starts once the app is ready, and reaches it", async () => {
    const r = await deploy(sb, [FILE, "check"], { MARKER: marker });
    expect(r.code, r.stderr).toBe(0);
    expect(statuses(r.deployments)).toEqual({ db: "ready", check: "ready" });
    expect((await sb.run(["logs", "check"])).stdout).toContain("db says db");
    expect(
      json<{ environments: unknown[] }>(await sb.run(["status", "--json"])).environments,
    ).toHaveLength(2);
  });
});
