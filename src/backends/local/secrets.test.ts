import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { CaravanError } from "../../errors.ts";
import { TaskEnvironment } from "../../sdk/environment.ts";
import { SecretStore } from "./secrets.ts";

const SCOPE = { project: "p", domain: "d" };
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function store(): SecretStore {
  const dir = mkdtempSync(join(tmpdir(), "caravan-secrets-"));
  dirs.push(dir);
  return new SecretStore(join(dir, "secrets.json"));
}

function errorOf(fn: () => unknown): CaravanError {
  try {
    fn();
  } catch (e) {
    return e as CaravanError;
  }
  throw new Error("expected an error");
}

describe("SecretStore: names", () => {
  it("refuses __proto__ and other names every object has, and never takes them for set", () => {
    const s = store();
    for (const name of ["__proto__", "constructor", "toString", "hasOwnProperty"]) {
      const err = errorOf(() => s.set(SCOPE, name, "v"));
      expect(err.code, name).toBe("USAGE");
      expect(err.message).toContain(`secret name "${name}" is not allowed`);
      expect(s.missing(SCOPE, [name])).toEqual([name]);
    }
    expect(s.list(SCOPE)).toEqual([]);
    expect(errorOf(() => s.resolve(SCOPE, ["constructor"], "app")).code).toBe("MISSING_SECRET");
  });

  it("refuses names that change how a process starts or are caravan's own, naming the rule", () => {
    const s = store();
    for (const name of [
      "PATH",
      "HOME",
      "PORT",
      "HOST",
      "NODE_OPTIONS",
      "NODE_PATH",
      "LD_PRELOAD",
      "LD_LIBRARY_PATH",
      "DYLD_INSERT_LIBRARIES",
      "CARAVAN_API_TOKEN",
      "node_options",
    ]) {
      const err = errorOf(() => s.set(SCOPE, name, "v"));
      expect(err.code, name).toBe("USAGE");
      expect(err.message).toContain(`${name} is reserved for secrets`);
      expect(err.message).toContain("LD_*");
    }
    s.set(SCOPE, "API_KEY", "v");
    s.set(SCOPE, "MY_PATH", "v");
    expect(s.list(SCOPE)).toEqual(["API_KEY", "MY_PATH"]);
  });

  it("an environment may not declare a secret into a reserved variable", () => {
    for (const secrets of [["LD_PRELOAD"], [{ key: "opts", envVar: "NODE_OPTIONS" }]]) {
      const err = errorOf(() => new TaskEnvironment({ name: "s", secrets }));
      expect(err.code).toBe("INVALID_ENV_VAR");
      expect(err.message).toContain("is reserved for secrets");
    }
  });
});
