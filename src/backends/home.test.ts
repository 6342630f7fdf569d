import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { clientPaths } from "./home.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const modeOf = (dir: string) => statSync(dir).mode & 0o777;

describe("CARAVAN_HOME", () => {
  it("is created owner-only, and made so when it exists with a wider mode", () => {
    const parent = mkdtempSync(join(tmpdir(), "caravan-home-"));
    dirs.push(parent);
    const fresh = join(parent, "fresh");
    clientPaths(fresh);
    expect(modeOf(fresh)).toBe(0o700);

    const existing = join(parent, "existing");
    mkdirSync(existing);
    chmodSync(existing, 0o755);
    clientPaths(existing);
    expect(modeOf(existing)).toBe(0o700);
  });
});
