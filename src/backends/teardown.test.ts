import { describe, expect, test } from "vitest";
import { teardownOrder, type DeployedNode } from "./teardown.ts";

const scope = { project: "p", domain: "d" };
const chain: DeployedNode[] = [
  { name: "base", dependsOn: [], running: true },
  { name: "middle", dependsOn: ["base"], running: true },
  { name: "top", dependsOn: ["middle"], running: true },
];

describe("teardown order", () => {
  test("a running dependent refuses the teardown, naming every one, unless --cascade", () => {
    expect(() => teardownOrder(scope, chain, ["base"], { verb: "stop" })).toThrow(
      "cannot stop base: middle, top depend on it and are running. Stop them too, or pass --cascade",
    );
    expect(teardownOrder(scope, chain, ["base"], { verb: "delete", cascade: true })).toEqual([
      "top",
      "middle",
      "base",
    ]);
  });

  test("a stopped dependent does not hold its dependency back", () => {
    const stopped = chain.map((n) => (n.name === "top" ? { ...n, running: false } : n));
    expect(teardownOrder(scope, stopped, ["middle"], { verb: "stop" })).toEqual(["middle"]);
  });

  test("an environment that is not deployed is named, with what is", () => {
    expect(() =>
      teardownOrder(scope, chain, ["ghost"], { verb: "delete", where: "namespace p-d" }),
    ).toThrow('"ghost" is not deployed in p/d (namespace p-d); deployed: base, middle, top');
  });
});
