import { describe, expect, test } from "vitest";
import {
  dependentsIndex,
  inDependencyOrder,
  inReverseDependencyOrder,
  transitiveDependents,
} from "./graph.ts";

const diamond = [
  { name: "root", dependsOn: ["left", "right"] },
  { name: "left", dependsOn: ["base"] },
  { name: "right", dependsOn: ["base"] },
  { name: "base", dependsOn: [] },
  { name: "lonely", dependsOn: [] },
];

describe("dependency order", () => {
  test("dependencies come before dependents, ties by name", () => {
    expect(inDependencyOrder(diamond, ["root", "left", "right", "base", "lonely"])).toEqual([
      "base",
      "left",
      "lonely",
      "right",
      "root",
    ]);
  });

  test("order holds through nodes left out of the selection", () => {
    const chain = [
      { name: "c", dependsOn: ["b"] },
      { name: "b", dependsOn: ["a"] },
      { name: "a", dependsOn: [] },
    ];
    expect(inDependencyOrder(chain, ["c", "a"])).toEqual(["a", "c"]);
    expect(inReverseDependencyOrder(chain, ["a", "c"])).toEqual(["c", "a"]);
  });

  test("reverse order puts every dependent first (teardown)", () => {
    const order = inReverseDependencyOrder(diamond, ["base", "left", "right", "root"]);
    expect(order[0]).toBe("root");
    expect(order.at(-1)).toBe("base");
  });

  test("a name the graph does not know is kept, with no dependencies", () => {
    expect(inDependencyOrder(diamond, ["ghost", "base"])).toEqual(["base", "ghost"]);
  });

  test("a long chain does not overflow the stack", () => {
    const n = 50_000;
    const chain = Array.from({ length: n }, (_, i) => ({
      name: `n${i}`,
      dependsOn: i ? [`n${i - 1}`] : [],
    }));
    const order = inDependencyOrder(
      chain,
      chain.map((c) => c.name),
    );
    expect(order[0]).toBe("n0");
    expect(order.at(-1)).toBe(`n${n - 1}`);
  });
});

describe("transitive dependents", () => {
  test("everything above a node, each once, breadth first", () => {
    expect(transitiveDependents(["base"], dependentsIndex(diamond))).toEqual([
      "left",
      "right",
      "root",
    ]);
    expect(transitiveDependents(["root"], dependentsIndex(diamond))).toEqual([]);
  });
});
