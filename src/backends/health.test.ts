import { describe, expect, test } from "vitest";
import { dependencyHealth, type HealthInput } from "./health.ts";

const env = (name: string, state: HealthInput["state"], dependsOn: string[] = [], error?: string) =>
  ({
    project: "p",
    domain: "d",
    name,
    state,
    dependsOn,
    ...(error ? { error } : {}),
  }) as HealthInput;

describe("dependency health", () => {
  test("an environment is degraded while a dependency is not ready, naming it and why", () => {
    const h = dependencyHealth([
      env("db", "restarting", [], "db exited with code 1 before it was ready\n  last lines..."),
      env("api", "ready", ["db"]),
      env("web", "ready", ["api"]),
      env("lone", "ready"),
    ]);
    expect(h.get("p/d/api")).toEqual({
      state: "degraded",
      reason: "dependency db is restarting: db exited with code 1 before it was ready",
    });
    // Only direct dependencies count: api still serves web.
    expect(h.get("p/d/web")).toEqual({ state: "healthy" });
    expect(h.get("p/d/lone")).toEqual({ state: "healthy" });
  });

  test("a missing dependency degrades; stopped and failed environments have no health", () => {
    const h = dependencyHealth([env("api", "ready", ["gone"]), env("old", "stopped", ["gone"])]);
    expect(h.get("p/d/api")).toEqual({
      state: "degraded",
      reason: "dependency gone is not deployed",
    });
    expect(h.has("p/d/old")).toBe(false);
  });
});
