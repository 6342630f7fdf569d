import { fileURLToPath } from "node:url";
import Fastify from "fastify";
import { afterEach, describe, expect, it } from "vitest";
import {
  AppEnvironment,
  JobEnvironment,
  TaskEnvironment,
  isAppEnvironment,
  isEnvironment,
  type AppEnvironmentOptions,
} from "./environment.ts";
import { FastifyAppEnvironment } from "./frameworks.ts";
import { ENV_BRAND, shared } from "./global.ts";
import { Image } from "./image.ts";
import { AppEndpoint, Input } from "./inputs.ts";
import { RESERVED_PORTS } from "./validation.ts";
import { errorOf, callerLine } from "../test-helpers.ts";

const THIS_FILE = fileURLToPath(import.meta.url);

/** Options are checked at run time too: a JS user (or a cast) can pass anything. */
function app(opts: Record<string, unknown>): AppEnvironment {
  return new AppEnvironment({ command: ["node", "x.js"], ...opts } as AppEnvironmentOptions);
}

afterEach(() => {
  delete shared().runtime;
  shared().deployedEndpoints.clear();
});

describe("app names", () => {
  it.each(["a", "backend-api", "app1-is-called-by-app2", "9lives", "a".repeat(63)])(
    "accepts the DNS-1123 label %s",
    (name) => {
      expect(app({ name }).name).toBe(name);
    },
  );

  it.each(["Backend", "backend_api", "-api", "api-", "api.v1", "api v1", "ümlaut"])(
    "rejects %s, naming the value and the rule",
    (name) => {
      const err = errorOf(() => app({ name }));
      expect(err.code).toBe("INVALID_NAME");
      expect(err.message).toContain(JSON.stringify(name));
      expect(err.message).toContain("DNS-1123");
      expect(err.message).toContain("AppEnvironment");
    },
  );

  it("rejects a name longer than 63 characters, saying how long it is", () => {
    const err = errorOf(() => app({ name: "a".repeat(64) }));
    expect(err.code).toBe("INVALID_NAME");
    expect(err.message).toContain("64 characters");
    expect(err.message).toContain("limit is 63");
  });

  it.each([undefined, "", 42])("rejects a missing or non-string name (%s)", (name) => {
    const err = errorOf(() => app({ name }));
    expect(err.code).toBe("INVALID_NAME");
    expect(err.message).toContain("non-empty string");
  });

  it("applies the same rule to task environments", () => {
    const err = errorOf(() => new TaskEnvironment({ name: "Training_Env" }));
    expect(err.code).toBe("INVALID_NAME");
    expect(err.message).toContain("TaskEnvironment");
    expect(err.message).toContain('"Training_Env"');
  });
});

describe("ports", () => {
  it("defaults to 8080", () => {
    expect(app({ name: "port-default" }).port).toEqual({ port: 8080 });
  });

  it("accepts a number or { port, name }", () => {
    expect(app({ name: "port-num", port: 3000 }).port).toEqual({ port: 3000 });
    expect(app({ name: "port-obj", port: { port: 1, name: "http" } }).port).toEqual({
      port: 1,
      name: "http",
    });
    expect(app({ name: "port-max", port: 65535 }).port.port).toBe(65535);
  });

  it("knows the platform's reserved ports", () => {
    expect([...RESERVED_PORTS].sort()).toEqual([8012, 8022, 8112, 9090, 9091]);
  });

  it.each([8012, 8022, 8112, 9090, 9091])("rejects reserved port %d", (port) => {
    for (const value of [port, { port }]) {
      const err = errorOf(() => app({ name: "reserved", port: value }));
      expect(err.code).toBe("INVALID_PORT");
      expect(err.message).toContain(`port ${port} is reserved`);
      expect(err.message).toContain('AppEnvironment "reserved"');
    }
  });

  it.each([0, -1, 65536, 80.5, NaN])("rejects %s as out of range", (port) => {
    const err = errorOf(() => app({ name: "bad-port", port }));
    expect(err.code).toBe("INVALID_PORT");
    expect(err.message).toContain("integer from 1 to 65535");
  });

  it.each([
    [[8080], "[8080]"],
    ["8080", '"8080"'],
  ])("rejects a port of the wrong shape (%j)", (port, shown) => {
    const err = errorOf(() => app({ name: "bad-port", port }));
    expect(err.code).toBe("INVALID_PORT");
    expect(err.message).toContain(`port must be a number or { port, name }, got ${shown}`);
  });
});

describe("scaling", () => {
  it("defaults to [0, 1] replicas and 900 s scale-down", () => {
    expect(app({ name: "scale-default" }).scaling).toEqual({
      replicas: [0, 1],
      scaledownAfter: 900,
    });
  });

  it("accepts [min, max], a fixed count, concurrency and scaledownAfter", () => {
    expect(app({ name: "s1", scaling: { replicas: [1, 3] } }).scaling.replicas).toEqual([1, 3]);
    expect(app({ name: "s2", scaling: { replicas: [0, 0 + 1] } }).scaling.replicas).toEqual([0, 1]);
    expect(app({ name: "s3", scaling: { replicas: 2 } }).scaling.replicas).toEqual([2, 2]);
    expect(
      app({ name: "s4", scaling: { replicas: [2, 2], concurrency: 10, scaledownAfter: 0 } })
        .scaling,
    ).toEqual({ replicas: [2, 2], concurrency: 10, scaledownAfter: 0, replicasDeclared: true });
    // Declared replicas are told apart from the default (a cluster refuses a declared min 0).
    expect(app({ name: "s5", scaling: { scaledownAfter: 60 } }).scaling).not.toHaveProperty(
      "replicasDeclared",
    );
  });

  it.each([
    [[2, 1], "min > max"],
    [[-1, 1], "min < 0"],
    [[0, 0], "max < 1"],
    [0, "a fixed count of 0"],
    [[0.5, 2], "fractional min"],
    [[1, 2.5], "fractional max"],
  ])("rejects replicas %j (%s)", (replicas, _rule) => {
    const err = errorOf(() => app({ name: "scaled", scaling: { replicas } }));
    expect(err.code).toBe("INVALID_SCALING");
    expect(err.message).toContain("0 <= min <= max and max >= 1");
    expect(err.message).toContain(JSON.stringify(replicas));
    expect(err.message).toContain('"scaled"');
  });

  it("rejects replicas that are neither a pair nor a number", () => {
    for (const replicas of [[1, 2, 3], "2", [1]]) {
      const err = errorOf(() => app({ name: "scaled", scaling: { replicas } }));
      expect(err.code).toBe("INVALID_SCALING");
      expect(err.message).toContain("must be [min, max] or a number");
    }
  });

  it("rejects bad concurrency, scaledownAfter and a non-object", () => {
    const conc = errorOf(() => app({ name: "c", scaling: { concurrency: 0 } }));
    expect(conc.code).toBe("INVALID_SCALING");
    expect(conc.message).toContain("scaling.concurrency");
    const down = errorOf(() => app({ name: "c", scaling: { scaledownAfter: -5 } }));
    expect(down.code).toBe("INVALID_SCALING");
    expect(down.message).toContain("scaling.scaledownAfter");
    expect(down.message).toContain("-5");
    expect(errorOf(() => app({ name: "c", scaling: [0, 1] })).code).toBe("INVALID_SCALING");
  });
});

describe("timeouts", () => {
  it("accepts request timeouts at both bounds and defaults start to 60 s", () => {
    expect(app({ name: "t0", timeouts: { request: 0 } }).timeouts).toEqual({
      request: 0,
      start: 60,
    });
    expect(app({ name: "t1", timeouts: { request: 3600, start: 5 } }).timeouts).toEqual({
      request: 3600,
      start: 5,
    });
    expect(app({ name: "t2" }).timeouts).toEqual({ start: 60 });
  });

  it.each([-1, 3600.5, 3601, "30", NaN])("rejects request timeout %s", (request) => {
    const err = errorOf(() => app({ name: "timed", timeouts: { request } }));
    expect(err.code).toBe("INVALID_TIMEOUT");
    expect(err.message).toContain("timeouts.request");
    expect(err.message).toContain("between 0 and 3600");
    expect(err.message).toContain('"timed"');
  });

  it.each([0, 3601])("rejects start timeout %s", (start) => {
    const err = errorOf(() => app({ name: "timed", timeouts: { start } }));
    expect(err.code).toBe("INVALID_TIMEOUT");
    expect(err.message).toContain("timeouts.start");
    expect(err.message).toContain(String(start));
  });

  it("rejects timeouts that are not an object", () => {
    expect(errorOf(() => app({ name: "timed", timeouts: 30 })).code).toBe("INVALID_TIMEOUT");
  });
});

describe("environment variables and secrets", () => {
  it("keeps valid envVars", () => {
    expect(app({ name: "ev", envVars: { LOG_LEVEL: "debug", _x1: "" } }).envVars).toEqual({
      LOG_LEVEL: "debug",
      _x1: "",
    });
  });

  it.each(["1ST", "MY-VAR", "MY VAR", "É", ""])("rejects the variable name %j", (key) => {
    const err = errorOf(() => app({ name: "ev", envVars: { [key]: "v" } }));
    expect(err.code).toBe("INVALID_ENV_VAR");
    expect(err.message).toContain(JSON.stringify(key));
    expect(err.message).toContain("must match");
    expect(err.message).toContain('"ev"');
  });

  it("rejects non-string values and a non-object", () => {
    const err = errorOf(() => app({ name: "ev", envVars: { PORT: 8080 } }));
    expect(err.code).toBe("INVALID_ENV_VAR");
    expect(err.message).toContain("envVars.PORT must be a string, got 8080");
    expect(errorOf(() => app({ name: "ev", envVars: ["A=1"] })).code).toBe("INVALID_ENV_VAR");
  });

  it("normalises secrets and checks their variable names", () => {
    const env = new TaskEnvironment({
      name: "with-secrets",
      secrets: ["API_KEY", { key: "db-password", envVar: "DB_PASSWORD" }],
    });
    expect(env.secrets).toEqual([
      { key: "API_KEY", envVar: "API_KEY" },
      { key: "db-password", envVar: "DB_PASSWORD" },
    ]);
    const err = errorOf(() => new TaskEnvironment({ name: "s", secrets: [{ key: "db-pass" }] }));
    expect(err.code).toBe("INVALID_ENV_VAR");
    expect(err.message).toContain('secret "db-pass"');
    const shape = errorOf(() => new TaskEnvironment({ name: "s", secrets: [42 as never] }));
    expect(shape.code).toBe("VALIDATION");
    expect(shape.message).toContain("a secret must be a name or { key, envVar }, got 42");
  });
});

describe("inputs on an app", () => {
  it("keeps inputs in order", () => {
    const a = new Input({ name: "a", value: "1" });
    const b = new Input({ name: "b", value: new AppEndpoint({ appName: "backend" }) });
    expect(app({ name: "with-inputs", inputs: [a, b] }).inputs).toEqual([a, b]);
  });

  it("rejects two inputs with one name", () => {
    const err = errorOf(() =>
      app({
        name: "dup-inputs",
        inputs: [new Input({ name: "url", value: "a" }), new Input({ name: "url", value: "b" })],
      }),
    );
    expect(err.code).toBe("DUPLICATE_INPUT");
    expect(err.message).toContain('"url"');
    expect(err.message).toContain("declared twice");
    expect(err.message).toContain('"dup-inputs"');
  });

  it("rejects entries that are not Inputs", () => {
    const err = errorOf(() => app({ name: "bad-inputs", inputs: [{ name: "x", value: "y" }] }));
    expect(err.code).toBe("INVALID_INPUT");
    expect(err.message).toContain("inputs[0] must be an Input");
    expect(err.message).toContain('{"name":"x","value":"y"}');
  });
});

describe("options", () => {
  it("rejects an unknown option, naming it and the known ones", () => {
    const err = errorOf(() => app({ name: "typo", prot: 8080 }));
    expect(err.code).toBe("VALIDATION");
    expect(err.message).toContain('unknown option "prot"');
    expect(err.message).toContain("port");
    expect(err.message).toContain('AppEnvironment "typo"');
  });

  it("rejects app-only options on a task environment", () => {
    const err = errorOf(
      () => new TaskEnvironment({ name: "task-typo", port: 8080 } as { name: string }),
    );
    expect(err.code).toBe("VALIDATION");
    expect(err.message).toContain('unknown option "port"');
  });

  it("rejects options that are not an object", () => {
    const err = errorOf(() => new AppEnvironment("api" as unknown as AppEnvironmentOptions));
    expect(err.code).toBe("VALIDATION");
    expect(err.message).toContain('expected an options object, got "api"');
  });

  it("has the seed SDK's defaults", () => {
    const env = new AppEnvironment({ name: "defaults" });
    expect(env.kind).toBe("app");
    expect(env.requiresAuth).toBe(true);
    expect(env.args).toEqual([]);
    expect(env.inputs).toEqual([]);
    expect(env.dependsOn).toEqual([]);
    expect(env.serveKind).toBe("command");
    expect(env.command).toBeUndefined();
  });

  it("splits a command string and rejects an empty command", () => {
    expect(app({ name: "cmd", command: "node  server.js --port $PORT" }).command).toEqual([
      "node",
      "server.js",
      "--port",
      "$PORT",
    ]);
    for (const command of [[], "  ", ["node", 1]]) {
      const err = errorOf(() => app({ name: "cmd", command }));
      expect(err.code).toBe("VALIDATION");
      expect(err.message).toContain("command must be a non-empty string or array of strings");
    }
  });

  it("checks args, requiresAuth, readiness and image", () => {
    expect(errorOf(() => app({ name: "o", args: "--x" })).message).toContain(
      'args must be an array of strings, got "--x"',
    );
    expect(errorOf(() => app({ name: "o", requiresAuth: "no" })).message).toContain(
      'requiresAuth must be true or false, got "no"',
    );
    expect(errorOf(() => app({ name: "o", readiness: { path: "healthz" } })).message).toContain(
      'a path starting with "/"',
    );
    expect(app({ name: "o", readiness: { path: "/healthz" } }).readiness).toEqual({
      path: "/healthz",
    });
    expect(app({ name: "o", readiness: { tcp: true } }).readiness).toEqual({ tcp: true });
    expect(
      errorOf(() => app({ name: "o", readiness: { tcp: true, path: "/healthz" } })).message,
    ).toContain("or { tcp: true }");
    const img = errorOf(() => app({ name: "o", image: "node:22" }));
    expect(img.code).toBe("VALIDATION");
    expect(img.message).toContain(
      'image must be an Image (Image.fromDebianBase(...)), got "node:22"',
    );
    const image = Image.fromDebianBase();
    expect(app({ name: "o", image }).image).toBe(image);
  });

  it("normalises resources, and rejects bad ones naming the environment", () => {
    expect(app({ name: "res", resources: { cpu: 1, memory: "512Mi" } }).resources).toEqual({
      milliCpu: 1000,
      memoryBytes: 512 * 1024 * 1024,
    });
    const err = errorOf(() => app({ name: "res", resources: { cpu: "lots" } }));
    expect(err.code).toBe("INVALID_RESOURCES");
    expect(err.message).toContain('AppEnvironment "res"');
    expect(err.message).toContain('"lots"');
  });
});

describe("dependsOn and addDependency", () => {
  it("keeps dependencies, once each, in declaration order", () => {
    const a = new TaskEnvironment({ name: "dep-a" });
    const b = app({ name: "dep-b" });
    const c = app({ name: "dep-c", dependsOn: [a, b, a] });
    expect(c.dependsOn).toEqual([a, b]);
  });

  it("rejects a dependsOn entry that is not an environment, naming the bad value", () => {
    const a = new TaskEnvironment({ name: "dep-a" });
    const err = errorOf(() => app({ name: "needs-backend", dependsOn: [a, "backend"] }));
    expect(err.code).toBe("INVALID_DEPENDENCY");
    expect(err.message).toContain('dependsOn[1] is not an environment: "backend"');
    expect(err.message).toContain('"needs-backend"');
    expect(err.details.value).toBe('"backend"');
  });

  it.each([
    [{ name: "backend" }, '{"name":"backend"}'],
    [undefined, "undefined"],
    [null, "null"],
  ])("names %j in the error", (bad, shown) => {
    const err = errorOf(() => app({ name: "needs", dependsOn: [bad] }));
    expect(err.code).toBe("INVALID_DEPENDENCY");
    expect(err.message).toContain(`is not an environment: ${shown}`);
  });

  it("rejects dependsOn that is not an array", () => {
    const a = new TaskEnvironment({ name: "dep-a" });
    const err = errorOf(() => app({ name: "needs", dependsOn: a }));
    expect(err.code).toBe("INVALID_DEPENDENCY");
    expect(err.message).toContain("dependsOn must be an array of environments");
  });

  it("addDependency adds after construction, deduplicates and chains", () => {
    const a = new TaskEnvironment({ name: "late-a" });
    const b = new TaskEnvironment({ name: "late-b" });
    const top = app({ name: "late-top" });
    expect(top.addDependency(a).addDependency(b, a)).toBe(top);
    expect(top.dependsOn).toEqual([a, b]);
    expect(top.spec().dependsOn).toEqual(["late-a", "late-b"]);
  });

  it("addDependency rejects non-environments and adds nothing then", () => {
    const a = new TaskEnvironment({ name: "late-a" });
    const top = app({ name: "late-top" });
    const err = errorOf(() => top.addDependency(a, 42 as never));
    expect(err.code).toBe("INVALID_DEPENDENCY");
    expect(err.message).toContain("dependsOn[1] is not an environment: 42");
    expect(top.dependsOn).toEqual([]);
  });
});

describe("declaredAt", () => {
  it("records the file and line of the declaration", () => {
    const [env, line] = [new TaskEnvironment({ name: "declared-here" }), callerLine()];
    // Inside a test function that vitest calls: not what evaluating this module declares.
    expect(env.declaredAt).toEqual({ file: THIS_FILE, line, byItsModule: false });
    expect(String(env)).toBe(`TaskEnvironment(declared-here) declared at ${THIS_FILE}:${line}`);
  });

  it("records the declaring line for apps too", () => {
    const [env, line] = [new AppEnvironment({ name: "declared-app" }), callerLine()];
    expect(env.declaredAt?.file).toBe(THIS_FILE);
    expect(env.declaredAt?.line).toBe(line);
  });
});

describe("registry", () => {
  it("registers environments on construction, and not when validation fails", () => {
    const before = shared().environments.length;
    const env = new TaskEnvironment({ name: "registered" });
    expect(shared().environments.length).toBe(before + 1);
    expect(shared().environments.at(-1)).toBe(env);
    errorOf(() => app({ name: "unregistered", port: 9090 }));
    expect(shared().environments.length).toBe(before + 1);
  });
});

describe("brands", () => {
  it("recognises environments of this copy", () => {
    expect(isEnvironment(new TaskEnvironment({ name: "mine" }))).toBe(true);
    expect(isAppEnvironment(app({ name: "mine-app" }))).toBe(true);
    expect(isAppEnvironment(new TaskEnvironment({ name: "mine-task" }))).toBe(false);
  });

  it("recognises an environment from another copy of caravan by its brand", () => {
    const foreign = {
      [Symbol.for("caravan.environment")]: "app",
      name: "foreign",
      dependsOn: [],
      kind: "app",
    };
    expect(Symbol.for("caravan.environment")).toBe(ENV_BRAND);
    expect(isEnvironment(foreign)).toBe(true);
    expect(isAppEnvironment(foreign)).toBe(true);
    const top = app({ name: "uses-foreign", dependsOn: [foreign] });
    expect(top.dependsOn[0]).toBe(foreign);
  });

  it.each([
    { name: "plain", dependsOn: [], kind: "app" },
    { [Symbol.for("caravan.environment")]: "service", name: "x" },
    { [Symbol("caravan.environment")]: "app", name: "x" },
    null,
    "app",
  ])("does not take %s for an environment", (value) => {
    expect(isEnvironment(value)).toBe(false);
  });
});

describe("endpoint", () => {
  it("is unknown for an app that was not deployed (ENDPOINT_UNKNOWN)", () => {
    const env = app({ name: "not-deployed" });
    const err = errorOf(() => env.endpoint);
    expect(err.code).toBe("ENDPOINT_UNKNOWN");
    expect(err.message).toContain('app "not-deployed"');
    expect(err.message).toContain("deploy it first");
  });

  it("inside a running app, tells to add the app to dependsOn when it is not a dependency", () => {
    shared().runtime = {
      name: "caller",
      project: "default",
      domain: "development",
      endpoints: {},
      publicEndpoints: {},
      inputs: {},
      loading: false,
    };
    const err = errorOf(() => app({ name: "not-a-dep" }).endpoint);
    expect(err.code).toBe("ENDPOINT_UNKNOWN");
    expect(err.message).toContain('app "caller" does not depend on it; add it to dependsOn');
  });

  it("is the internal endpoint inside a running app, the public one after deploy()", () => {
    const env = app({ name: "known" });
    shared().deployedEndpoints.set("known", {
      endpoint: "http://public.example/known",
      internalEndpoint: "http://127.0.0.1:4000",
    });
    expect(env.endpoint).toBe("http://public.example/known");
    shared().runtime = {
      name: "caller",
      project: "default",
      domain: "development",
      endpoints: { known: "http://127.0.0.1:5000" },
      publicEndpoints: {},
      inputs: {},
      loading: false,
    };
    expect(env.endpoint).toBe("http://127.0.0.1:5000");
  });
});

describe("TaskEnvironment.task", () => {
  it("registers a callable task identified as <env>.<name>", async () => {
    const env = new TaskEnvironment({ name: "training-env" });
    const train = env.task(function train(epochs: number) {
      return { epochs };
    });
    expect(train.id).toBe("training-env.train");
    expect(train.taskName).toBe("train");
    expect(train.environment).toBe(env);
    expect(env.tasks.get("train")).toBe(train);
    await expect(train(3)).resolves.toEqual({ epochs: 3 });
  });

  it("takes a name and options, which enter the spec", () => {
    const env = new TaskEnvironment({ name: "opt-env" });
    const t = env.task(async () => 1, { name: "fit", retries: 2, timeout: 60 });
    expect(t.id).toBe("opt-env.fit");
    expect(t.options).toEqual({ retries: 2, timeout: 60 });
    expect(env.spec().tasks).toEqual([{ id: "opt-env.fit", retries: 2, timeout: 60 }]);
  });

  it("rejects an anonymous function, a duplicate name, and negative options", () => {
    const env = new TaskEnvironment({ name: "bad-tasks" });
    const anon = errorOf(() => env.task(() => 1));
    expect(anon.code).toBe("VALIDATION");
    expect(anon.message).toContain("name the function or pass { name");
    env.task(async function fit() {});
    const dup = errorOf(() => env.task(async function fit() {}));
    expect(dup.message).toContain('task "fit" is registered twice');
    const neg = errorOf(() => env.task(async function other() {}, { retries: -1 }));
    expect(neg.code).toBe("VALIDATION");
    expect(neg.message).toContain("retries must be a non-negative number, got -1");
    expect(errorOf(() => env.task("fit" as never)).message).toContain("task() needs a function");
  });
});

describe("FastifyAppEnvironment", () => {
  it("serves a Fastify instance on the given port", async () => {
    const server = Fastify();
    server.get("/hello", async () => "hi");
    const env = new FastifyAppEnvironment({ name: "fastify-app", app: server });
    expect(env.serveKind).toBe("fastify");
    expect(env.spec().serveKind).toBe("fastify");
    expect(String(env)).toMatch(/^FastifyAppEnvironment\(fastify-app\)/);
    const handle = await env.serveOn(0, "127.0.0.1");
    try {
      const address = server.server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      const res = await fetch(`http://127.0.0.1:${port}/hello`);
      expect(await res.text()).toBe("hi");
    } finally {
      await handle.close();
    }
  });

  it("rejects something that is not a Fastify instance, naming the environment", () => {
    const err = errorOf(
      () => new FastifyAppEnvironment({ name: "no-app", app: {} as ReturnType<typeof Fastify> }),
    );
    expect(err.code).toBe("VALIDATION");
    expect(err.message).toContain('FastifyAppEnvironment "no-app"');
    expect(err.message).toContain("app must be a Fastify instance");
  });

  it("uses its own class name in validation messages", () => {
    const err = errorOf(
      () => new FastifyAppEnvironment({ name: "fast", app: Fastify(), port: 8012 }),
    );
    expect(err.code).toBe("INVALID_PORT");
    expect(err.message).toContain('FastifyAppEnvironment "fast"');
  });
});

describe("kubernetes settings", () => {
  it("are kept in the spec (they change the revision) and validated", () => {
    const env = new AppEnvironment({
      name: "k8s-settings",
      command: "true",
      kubernetes: {
        podAnnotations: { "example.com/team": "web" },
        nodeSelector: { pool: "general" },
        tolerations: [{ key: "dedicated", operator: "Exists", effect: "NoSchedule" }],
      },
    });
    expect(env.spec().kubernetes).toEqual({
      podAnnotations: { "example.com/team": "web" },
      nodeSelector: { pool: "general" },
      tolerations: [{ key: "dedicated", operator: "Exists", effect: "NoSchedule" }],
    });
    const bad = errorOf(
      () =>
        new AppEnvironment({
          name: "k8s-bad",
          command: "true",
          kubernetes: { podLabels: { "not a key": "x" } },
        }),
    );
    expect(bad.message).toMatch(/podLabels key "not a key" is not a valid Kubernetes key/);
    expect(
      errorOf(() => new TaskEnvironment({ name: "k8s-bad2", kubernetes: { replicas: 3 } as never }))
        .message,
    ).toMatch(/unknown field "replicas"/);
  });
});

describe("jobs", () => {
  const job = (opts: Record<string, unknown>) =>
    new JobEnvironment({ name: "migrate", ...opts } as never);

  it("runs a command or a function, never both or neither, and says which is missing", () => {
    expect(job({ command: "node migrate.mjs" }).spec()).toMatchObject({
      kind: "job",
      runKind: "command",
      command: ["node", "migrate.mjs"],
      retries: 0,
      timeouts: { run: 600 },
    });
    expect(job({ run: async () => {} }).spec()).toMatchObject({ runKind: "function" });
    expect(errorOf(() => job({})).message).toContain("needs something to run");
    expect(errorOf(() => job({ command: "x", run: () => {} })).message).toContain(
      "both a command and a run function",
    );
    expect(errorOf(() => job({ run: () => {}, args: ["a"] })).message).toContain(
      "args are for a command job",
    );
  });

  it("checks retries and timeouts.run, and refuses app-only options", () => {
    expect(errorOf(() => job({ command: "x", retries: -1 })).message).toContain("retries");
    expect(errorOf(() => job({ command: "x", timeouts: { run: 0 } })).message).toContain(
      "timeouts.run",
    );
    expect(errorOf(() => job({ command: "x", timeouts: { start: 5 } })).message).toContain(
      "timeouts must be { run }",
    );
    expect(errorOf(() => job({ command: "x", port: 8080 })).message).toContain(
      'unknown option "port"',
    );
    expect(isEnvironment(job({ command: "x" }))).toBe(true);
    expect(isAppEnvironment(job({ command: "x" }))).toBe(false);
  });
});

describe("liveness", () => {
  it("defaults intervalS and failures, and refuses what cannot be checked", () => {
    expect(app({ name: "live", liveness: { path: "/alive" } }).spec().liveness).toEqual({
      path: "/alive",
      intervalS: 10,
      failures: 3,
    });
    expect(app({ name: "plain" }).spec()).not.toHaveProperty("liveness");
    for (const bad of [{ path: "alive" }, { tcp: true, path: "/x" }, { failures: 0 }, { every: 1 }])
      expect(errorOf(() => app({ name: "bad", liveness: bad })).message).toContain(
        "liveness must be",
      );
  });
});
