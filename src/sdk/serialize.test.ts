import { describe, expect, it } from "vitest";
import { isCaravanError } from "../errors.ts";
import { assertJsonValue, parameterNames } from "./serialize.ts";

/** The error assertJsonValue throws, or undefined when the value passes. */
function rejection(value: unknown, label = "argument 1 (points)") {
  try {
    assertJsonValue(value, label, "run training-env.train");
    return undefined;
  } catch (e) {
    if (!isCaravanError(e)) throw e;
    return { code: e.code, message: e.message, path: e.details.path };
  }
}

describe("assertJsonValue", () => {
  it("accepts what JSON carries unchanged", () => {
    for (const value of [
      "text",
      "",
      0,
      -1.5,
      true,
      false,
      null,
      [],
      {},
      [
        [1, 2],
        [3, 4],
      ],
      { nested: { list: [1, "two", null, { deep: true }] } },
      Object.assign(Object.create(null), { bare: 1 }),
    ]) {
      expect(rejection(value), JSON.stringify(value)).toBeUndefined();
    }
  });

  it("accepts undefined where JSON leaves it out (a missing argument, an absent property)", () => {
    expect(rejection(undefined)).toBeUndefined();
    expect(rejection({ a: 1, b: undefined })).toBeUndefined();
  });

  it("rejects undefined inside an array, which JSON would turn into null", () => {
    expect(rejection([1, undefined, 3])).toMatchObject({
      code: "NOT_SERIALIZABLE",
      path: "argument 1 (points)[1]",
    });
    // eslint-disable-next-line no-sparse-arrays
    expect(rejection([1, , 3])?.path).toBe("argument 1 (points)[1]");
  });

  it("accepts the same object twice when it is not a cycle", () => {
    const shared = { x: 1 };
    expect(rejection([shared, shared, { again: shared }])).toBeUndefined();
  });

  it.each([
    ["a function", () => 1, "argument 1 (points)", "a function"],
    ["a BigInt", 10n, "argument 1 (points)", "a BigInt"],
    ["a symbol", Symbol("s"), "argument 1 (points)", "a symbol"],
    ["NaN", NaN, "argument 1 (points)", "NaN (not a finite number)"],
    ["Infinity", -Infinity, "argument 1 (points)", "-Infinity (not a finite number)"],
    ["a Map", new Map([["a", 1]]), "argument 1 (points)", "a Map (use an array or a plain object)"],
    ["a Set", new Set([1]), "argument 1 (points)", "a Set (use an array or a plain object)"],
    ["a Date", new Date(0), "argument 1 (points)", "a Date (pass date.toISOString())"],
    ["a class instance", new (class Model {})(), "argument 1 (points)", "a Model"],
    ["a typed array", new Uint8Array(2), "argument 1 (points)", "a Uint8Array"],
    ["an Error", new Error("x"), "argument 1 (points)", "a Error"],
  ])("rejects %s, naming where it is", (_what, value, path, why) => {
    const r = rejection(value);
    expect(r).toMatchObject({ code: "NOT_SERIALIZABLE", path });
    expect(r!.message).toContain(`run training-env.train: ${path} is ${why}`);
    expect(r!.message).toContain("task inputs and outputs must be JSON");
  });

  it("names the path of a nested value: indexes, properties, odd keys", () => {
    expect(rejection([{ x: 1 }, { x: NaN }])).toMatchObject({
      path: "argument 1 (points)[1].x",
    });
    expect(rejection([{ x: () => 0 }])!.message).toContain(
      "argument 1 (points)[0].x is a function",
    );
    expect(rejection({ "odd key": [new Map()] })).toMatchObject({
      path: 'argument 1 (points)["odd key"][0]',
    });
    expect(rejection({ a: { b: { c: [1, 2, 3n] } } })).toMatchObject({
      path: "argument 1 (points).a.b.c[2]",
    });
  });

  it("rejects a cycle, naming where it closes", () => {
    const a: Record<string, unknown> = { name: "a" };
    a.self = a;
    expect(rejection(a)).toMatchObject({ path: "argument 1 (points).self" });
    expect(rejection(a)!.message).toContain("a reference back to itself (a cycle)");
    const list: unknown[] = [1];
    list.push({ back: list });
    expect(rejection(list)).toMatchObject({ path: "argument 1 (points)[1].back" });
  });

  it("reports the first problem only, with the label it was given", () => {
    expect(rejection({ a: NaN, b: () => 1 }, "the result")).toMatchObject({
      path: "the result.a",
    });
  });
});

describe("parameterNames", () => {
  it("reads plain, async and generator functions", () => {
    expect(
      parameterNames(function train(points: number[], epochs: number) {
        return [points, epochs];
      }),
    ).toEqual(["points", "epochs"]);
    expect(
      parameterNames(async function fit(a: number) {
        return a;
      }),
    ).toEqual(["a"]);
    expect(
      parameterNames(function* gen(x: number, y: number) {
        yield x + y;
      }),
    ).toEqual(["x", "y"]);
    expect(parameterNames(function none() {})).toEqual([]);
  });

  it("reads arrow functions, with and without parentheses, async or not", () => {
    expect(parameterNames((a: number, b: number) => a + b)).toEqual(["a", "b"]);
    expect(parameterNames((x: number) => x)).toEqual(["x"]);
    expect(parameterNames(async (x: number) => x)).toEqual(["x"]);
    expect(parameterNames(async () => 1)).toEqual([]);
    // Sources as they are written (not as the test's own transform prints them).
    expect(parameterNames(new Function("return async epochs => epochs")())).toEqual(["epochs"]);
    expect(parameterNames(new Function("return x => x")())).toEqual(["x"]);
    expect(parameterNames(new Function("return async => async")())).toEqual(["async"]);
  });

  it("reads methods", () => {
    const obj = {
      fit(a: number, b: number) {
        return a + b;
      },
    };
    expect(parameterNames(obj.fit)).toEqual(["a", "b"]);
    class Trainer {
      static run(epochs: number) {
        return epochs;
      }
    }
    expect(parameterNames(Trainer.run)).toEqual(["epochs"]);
  });

  it("reads parameters with default values, whatever the default contains", () => {
    expect(
      parameterNames(function f(a: number, b = 10) {
        return a + b;
      }),
    ).toEqual(["a", "b"]);
    expect(
      parameterNames(function f(opts = { x: [1, 2], y: (q: number) => q * 2 }, last = [3, 4]) {
        return [opts, last];
      }),
    ).toEqual(["opts", "last"]);
    expect(
      parameterNames(function f(a = Math.max(1, 2), b = 0) {
        return a + b;
      }),
    ).toEqual(["a", "b"]);
  });

  it("is not fooled by brackets and commas inside strings and comments", () => {
    // Without blanking literals, these gave ["sep", undefined, "value"], ["a"] and
    // ["a", undefined, "b"]: `--input value=…` would have filled the wrong argument.
    expect(
      parameterNames(function join(sep = ",", value = "") {
        return sep + value;
      }),
    ).toEqual(["sep", "value"]);
    expect(
      parameterNames(function close(a = ")", b = 2) {
        return a + b;
      }),
    ).toEqual(["a", "b"]);
    expect(
      parameterNames(function tpl(a = `x,${1}(`, b = 0) {
        return a + b;
      }),
    ).toEqual(["a", "b"]);
    expect(
      parameterNames(
        new Function("a /* first, (really) */", "b // the ) second", "") as () => void,
      ),
    ).toEqual(["a", "b"]);
    expect(parameterNames(new Function("return (a = 'it\\'s, (x', b) => a + b")())).toEqual([
      "a",
      "b",
    ]);
  });

  it("gives undefined for destructured and rest parameters, at their position", () => {
    expect(
      parameterNames(function f({ lr, epochs }: { lr: number; epochs: number }) {
        return lr * epochs;
      }),
    ).toEqual([undefined]);
    expect(
      parameterNames(function f(a: number, [b]: number[], { c }: { c: number }, ...rest: number[]) {
        return [a, b, c, rest];
      }),
    ).toEqual(["a", undefined, undefined, undefined]);
    expect(parameterNames(({ x }: { x: number }, y: number) => x + y)).toEqual([undefined, "y"]);
  });
});
