import { appendFileSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { DeployRequest } from "../contract.ts";
import { ControlPlane } from "./control-plane.ts";
import { homePaths, logFile } from "./home.ts";
import type { LogKeeper } from "./logs.ts";

const scope = { project: "p", domain: "d" };

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 25));
  expect(cond()).toBe(true);
}

describe("ControlPlane.logs --follow", () => {
  let home: string;
  afterEach(() => rmSync(home, { recursive: true, force: true }));

  it("loses no line across a rotation", async () => {
    home = mkdtempSync(join(tmpdir(), "caravan-unit-"));
    const paths = homePaths(home);
    const plane = new ControlPlane(paths);
    plane.store.upsert({
      ...scope,
      name: "app",
      kind: "app",
      revision: "r1",
      request: { spec: { dependsOn: [] } } as unknown as DeployRequest,
      ports: null,
      state: "ready",
      desired: "running",
      restarts: 0,
      error: null,
      updatedAt: new Date().toISOString(),
    });
    const file = logFile(paths, scope.project, scope.domain, "app");
    writeFileSync(file, "first\n");
    const abort = new AbortController();
    const seen: string[] = [];
    const follower = (async () => {
      for await (const line of plane.logs(scope, "app", { follow: true, signal: abort.signal })) {
        seen.push(line.length > 100 ? `<${line.length} bytes>` : line);
      }
    })();
    await until(() => seen.includes("first"));
    // The follower polls every 200 ms: the rotation happens between two of its polls.
    appendFileSync(file, `${"x".repeat(11 * 1024 * 1024)}\nbefore-rotation\n`);
    const keeper = (plane as unknown as { logKeeper: LogKeeper }).logKeeper;
    keeper.watch(file);
    await keeper.check(file);
    expect(keeper.rotation(file).count).toBe(1);
    expect(statSync(file).size).toBe(0);
    appendFileSync(file, "after-rotation\n");
    await until(() => seen.includes("after-rotation"));
    abort.abort();
    await follower;
    await plane.close();
    // The long line is cut (a follower reads at most 4 MiB a poll); no line is lost or repeated.
    expect(seen).toEqual(["first", "<4194287 bytes>", "before-rotation", "after-rotation"]);
  });
});
