import { resolve } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { getInput, inRuntime } from "./context.ts";
import { shared, type RuntimeContext } from "./global.ts";
import {
  AppEndpoint,
  Dir,
  File,
  Input,
  RunOutput,
  checkInputs,
  inputValueKind,
  isInput,
  type InputValue,
} from "./inputs.ts";
import { defaultEnvVarFor } from "./validation.ts";
import { errorOf } from "../test-helpers.ts";

function runtime(inputs: Record<string, unknown>): RuntimeContext {
  return {
    name: "frontend",
    project: "default",
    domain: "development",
    endpoints: {},
    publicEndpoints: {},
    inputs,
    loading: false,
  };
}

afterEach(() => {
  delete shared().runtime;
});

describe("Input", () => {
  it("derives the environment variable from the name", () => {
    expect(new Input({ name: "backend_url", value: "x" }).envVar).toBe("BACKEND_URL");
    expect(new Input({ name: "model.path-v2", value: "x" }).envVar).toBe("MODEL_PATH_V2");
    expect(defaultEnvVarFor("9lives")).toBe("_9LIVES");
  });

  it("takes an explicit envVar and a mount path", () => {
    const input = new Input({ name: "data", value: new Dir("/data"), envVar: "DATA", mount: "/m" });
    expect(input.envVar).toBe("DATA");
    expect(input.mount).toBe("/m");
    expect(input.toJSON()).toEqual({
      name: "data",
      value: { kind: "dir", path: "/data" },
      envVar: "DATA",
      mount: "/m",
    });
  });

  it.each([
    ["a string", "hello", "string"],
    ["an AppEndpoint", new AppEndpoint({ appName: "backend" }), "app-endpoint"],
    ["a RunOutput", new RunOutput({ taskName: "train" }), "run-output"],
    ["a File", new File("/tmp/model.bin"), "file"],
    ["a Dir", new Dir("/tmp/data"), "dir"],
  ])("accepts %s as a value", (_what, value, kind) => {
    expect(new Input({ name: "v", value: value as InputValue }).value).toBe(value);
    expect(inputValueKind(value)).toBe(kind);
  });

  it.each([
    [42, "42"],
    [undefined, "undefined"],
    [{ url: "http://x" }, '{"url":"http://x"}'],
    [["a"], '["a"]'],
    [true, "true"],
  ])("rejects the value %j, naming it and the allowed types", (value, shown) => {
    const err = errorOf(
      () => new Input({ name: "backend_url", value: value as unknown as InputValue }),
    );
    expect(err.code).toBe("INVALID_INPUT");
    expect(err.message).toContain('Input "backend_url"');
    expect(err.message).toContain("value must be a string, File, Dir, AppEndpoint or RunOutput");
    expect(err.message).toContain(`got ${shown}`);
  });

  it.each(["", "1abc", "has space", 7])("rejects the name %j", (name) => {
    const err = errorOf(() => new Input({ name: name as string, value: "v" }));
    expect(err.code).toBe("INVALID_INPUT");
    expect(err.message).toContain("name must be an identifier");
  });

  it("rejects a bad envVar and mount", () => {
    const env = errorOf(() => new Input({ name: "x", value: "v", envVar: "X-Y" }));
    expect(env.code).toBe("INVALID_ENV_VAR");
    expect(env.message).toContain('Input "x"');
    expect(env.message).toContain('"X-Y"');
    const mount = errorOf(() => new Input({ name: "x", value: "v", mount: "" }));
    expect(mount.code).toBe("INVALID_INPUT");
    expect(mount.message).toContain("mount must be a path");
  });

  it("is recognised by its brand", () => {
    expect(isInput(new Input({ name: "x", value: "v" }))).toBe(true);
    expect(isInput({ name: "x", value: "v" })).toBe(false);
    expect(isInput({ [Symbol.for("caravan.value")]: "input", name: "x", value: "v" })).toBe(true);
  });
});

describe("checkInputs", () => {
  it("returns [] for no inputs and the list otherwise", () => {
    expect(checkInputs(undefined, "app")).toEqual([]);
    const a = new Input({ name: "a", value: "1" });
    expect(checkInputs([a], "app")).toEqual([a]);
  });

  it("rejects duplicate names with DUPLICATE_INPUT", () => {
    const err = errorOf(() =>
      checkInputs(
        [new Input({ name: "a", value: "1" }), new Input({ name: "a", value: "2" })],
        'AppEnvironment "web"',
      ),
    );
    expect(err.code).toBe("DUPLICATE_INPUT");
    expect(err.message).toBe(
      'AppEnvironment "web": input name "a" is declared twice; input names must be unique',
    );
    expect(err.details).toEqual({ input: "a" });
  });

  it("rejects a non-array", () => {
    const err = errorOf(() => checkInputs({ a: "1" }, 'AppEnvironment "web"'));
    expect(err.code).toBe("INVALID_INPUT");
    expect(err.message).toContain('inputs must be an array of Input, got {"a":"1"}');
  });
});

describe("AppEndpoint", () => {
  it("defaults to the internal endpoint", () => {
    const ep = new AppEndpoint({ appName: "backend-api" });
    expect(ep.public).toBe(false);
    expect(ep.toJSON()).toEqual({
      kind: "app-endpoint",
      appName: "backend-api",
      public: false,
      project: undefined,
      domain: undefined,
    });
    expect(new AppEndpoint({ appName: "backend-api", public: true }).public).toBe(true);
  });

  it("checks the app name like an environment name", () => {
    const err = errorOf(() => new AppEndpoint({ appName: "Backend_API" }));
    expect(err.code).toBe("INVALID_NAME");
    expect(err.message).toContain("AppEndpoint.appName");
    expect(err.message).toContain('"Backend_API"');
  });

  it("rejects a missing options object", () => {
    const err = errorOf(() => new AppEndpoint(undefined as never));
    expect(err.code).toBe("INVALID_INPUT");
    expect(err.message).toContain("expected { appName }");
  });
});

describe("RunOutput, File, Dir", () => {
  it("RunOutput takes exactly one of taskName or runId", () => {
    expect(new RunOutput({ runId: "r-1" }).toJSON()).toEqual({
      kind: "run-output",
      taskName: undefined,
      runId: "r-1",
    });
    for (const bad of [{}, { taskName: "t", runId: "r" }]) {
      const err = errorOf(() => new RunOutput(bad));
      expect(err.code).toBe("INVALID_INPUT");
      expect(err.message).toContain("exactly one of taskName or runId");
    }
  });

  it("File and Dir resolve relative paths and reject empty ones", () => {
    expect(new File("model.bin").path).toBe(resolve("model.bin"));
    expect(new Dir("/abs/data").path).toBe("/abs/data");
    expect(errorOf(() => new File("")).code).toBe("INVALID_INPUT");
    expect(errorOf(() => new Dir(3 as never)).message).toContain("expected a path, got 3");
  });
});

describe("getInput", () => {
  it("fails with NOT_IN_RUNTIME outside a running app", () => {
    expect(inRuntime()).toBe(false);
    const err = errorOf(() => getInput("backend_url"));
    expect(err.code).toBe("NOT_IN_RUNTIME");
    expect(err.message).toContain('getInput("backend_url")');
    expect(err.message).toContain("only works inside an app deployed by caravan");
  });

  it("returns the value the runtime provides", () => {
    shared().runtime = runtime({ backend_url: "http://127.0.0.1:4001", count: 3 });
    expect(inRuntime()).toBe(true);
    expect(getInput("backend_url")).toBe("http://127.0.0.1:4001");
    expect(getInput<number>("count")).toBe(3);
  });

  it("names the known inputs when asked for an unknown one", () => {
    shared().runtime = runtime({ a: "1", b: "2" });
    const err = errorOf(() => getInput("c"));
    expect(err.code).toBe("UNKNOWN_INPUT");
    expect(err.message).toContain('app "frontend" has no input "c"; its inputs are: a, b');
    shared().runtime = runtime({});
    expect(errorOf(() => getInput("c")).message).toContain("it declares no inputs");
  });
});

describe("AppEnvironment.input", () => {
  it("reads one of the app's own inputs, and refuses another app's", async () => {
    const { AppEnvironment } = await import("./environment.ts");
    const frontend = new AppEnvironment({
      name: "frontend",
      command: ["node", "server.js"],
      inputs: [new Input({ name: "backend_url", value: "http://127.0.0.1:4001" })],
    });
    const other = new AppEnvironment({ name: "other", command: ["node", "server.js"] });
    shared().runtime = runtime({ backend_url: "http://127.0.0.1:4001" });
    expect(frontend.input("backend_url")).toBe("http://127.0.0.1:4001");
    const err = errorOf(() => other.input("anything" as never));
    expect(err.code).toBe("NOT_IN_RUNTIME");
    expect(err.message).toContain(
      'the inputs of app "other" are only available in its own process',
    );
  });
});
